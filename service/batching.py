"""Dynamic batching: images queue per model and leave as one batch per forward pass.

`collect_batch` is the whole policy and a pure function: it takes queued images in arrival
order up to the batch limit and sets aside those whose request already timed out or went away.
`DynamicBatcher` runs it in a loop: it waits for a first image, then up to the queue delay for
a fuller batch, and runs inference in a worker thread so the event loop keeps taking requests
(or, for a fast model in a worker with one core of its own, on the loop: `_on_loop`).
A lone image that finds the batcher idle (nothing queued, computing or arriving with it) runs
in its own request at once, as the batcher would have run it, minus two turns of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import Timeout, TooManyRequests, Unavailable

# The longest a batch may hold the event loop (health checks, /metrics and new requests wait
# meanwhile): 32 images of the default model take ~15 ms.
LOOP_HOLD_S = 0.05

_TIMEOUT = (
    "no answer within the request timeout (MIMO_REQUEST_TIMEOUT_S); the server is overloaded: "
    "retry later or send fewer images"
)


@dataclass(eq=False)
class Pending:
    """One image waiting for its share of a forward pass."""

    image: np.ndarray  # float32 [C, H, W]
    future: asyncio.Future[Any]  # its row of the batch's result
    deadline: float  # time.monotonic() after which nobody waits for the answer
    enqueued: float = field(default_factory=time.monotonic)


def collect_batch(
    queue: deque[Pending], max_batch: int, now: float
) -> tuple[list[Pending], list[Pending]]:
    """Pop up to `max_batch` live images in arrival order; expired or cancelled ones apart."""
    batch: list[Pending] = []
    dropped: list[Pending] = []
    while queue and len(batch) < max_batch:
        item = queue.popleft()
        if item.future.done() or item.deadline <= now:
            dropped.append(item)
        else:
            batch.append(item)
    return batch, dropped


@dataclass
class BatchObserver:
    """Hooks for metrics; the batcher itself knows nothing of Prometheus."""

    on_batch: Callable[[int, float], None] = lambda size, seconds: None
    on_queue_waits: Callable[[list[float]], None] = lambda seconds: None  # a batch's images
    on_queue_depth: Callable[[int], None] = lambda depth: None


class DynamicBatcher:
    def __init__(
        self,
        infer: Callable[[np.ndarray], Sequence[Any]],
        executor: Executor,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        observer: BatchObserver | None = None,
        inline_below_s: float = 0.0,
        inline_batches: bool = False,
    ) -> None:
        self.infer = infer
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.observer = observer or BatchObserver()
        # A model whose batches have taken less than this per image (moving average) is fast:
        # its lone images run on the event loop, and with `inline_batches` all its batches
        # (see _on_loop).
        self.inline_below_s = inline_below_s
        self.inline_batches = inline_batches
        self._recent_s = float("inf")  # moving average of a batch's time, once there is one
        self._computing = False  # a batch is in the inference thread
        self._deciding = 0  # lone images looking whether they are alone (see submit)
        self.queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, images: list[np.ndarray], timeout_s: float) -> list[Any]:
        """Each image's row of its batch's result, in order; 429 at once when the queue is full.

        `timeout_s` is what is left of the request's time budget.
        """
        if timeout_s <= 0:
            raise Timeout(_TIMEOUT)
        if self._closing:
            raise Unavailable("the model is being unloaded; retry", {"Retry-After": "1"})
        self._refuse_if_full(len(images))
        if len(images) == 1 and self._may_run_alone():
            # Requests that came in together have all been started before this one resumes
            # from one turn of the loop: if none of them queued or is deciding too, this image
            # is alone and runs now, as the batcher would run it (on the loop), but without the
            # batcher's two turns of the loop. Otherwise it queues and they batch.
            self._deciding += 1
            try:
                await asyncio.sleep(0)
            finally:
                self._deciding -= 1
            if self._deciding == 0 and self._may_run_alone():
                return [self._run_alone(images[0])]
            # Others may have queued meanwhile. An unloading begun meanwhile is no reason to
            # refuse: close() answers what is queued, and its batcher's last turn comes after
            # this one (the loop runs callbacks in order).
            self._refuse_if_full(1)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        items = [Pending(img, loop.create_future(), deadline) for img in images]
        self.queue.extend(items)
        self.observer.on_queue_depth(len(self.queue))
        self._wakeup.set()
        # One timer cancels the images' futures at the deadline: cheaper per request than
        # asyncio.wait_for (a task, a waiter and a gather), which this path ran 2,000 times a
        # second. Cancelled futures are what the collector skips.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            for item in items:
                item.future.cancel()

        timer = loop.call_later(timeout_s, expire)
        try:
            if len(items) == 1:
                return [await items[0].future]
            return list(await asyncio.gather(*(i.future for i in items)))
        except asyncio.CancelledError:
            if expired:
                raise Timeout(_TIMEOUT) from None
            raise  # the request itself was cancelled (the client left)
        finally:
            timer.cancel()
            for item in items:  # the collector skips what nobody waits for any more
                item.future.cancel()

    def _refuse_if_full(self, adding: int) -> None:
        if len(self.queue) + adding > self.max_queue:
            raise TooManyRequests(
                f"queue full ({len(self.queue)} images waiting, limit {self.max_queue}); "
                "retry after a second",
                {"Retry-After": "1"},
            )

    def _may_run_alone(self) -> bool:
        """Nothing queued or computing, no queue delay asked for, and a model fast enough for
        a lone image to run on the loop (see _on_loop)."""
        return (
            not self.queue
            and not self._computing
            and self.max_delay_s == 0
            and self._on_loop(1)
            and not self._closing
        )

    def _run_alone(self, image: np.ndarray) -> Any:
        # Its observations wait for the loop's next turn: its answer is written first. (No
        # wait in the queue, and counted whatever the pass does, as a batch's images are.)
        loop = asyncio.get_running_loop()
        loop.call_soon(self.observer.on_queue_waits, [0.0])
        started = time.perf_counter()
        # An image that breaks the model fails its own caller, at once (no second try in the
        # inference thread, as _answer's isolation of a batch's culprit does: same outcome).
        row = self.infer(image[None])[0]
        loop.call_soon(self._record, 1, time.perf_counter() - started)
        return row

    async def _next_batch(self) -> list[Pending]:
        while not self.queue:
            self._wakeup.clear()
            if self._closing:
                return []
            await self._wakeup.wait()
        # A first image is here: wait for a fuller batch, at most the queue delay after it.
        window_end = self.queue[0].enqueued + self.max_delay_s
        while len(self.queue) < self.max_batch:
            remaining = window_end - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        now = time.monotonic()
        batch, dropped = collect_batch(self.queue, self.max_batch, now)
        self.observer.on_queue_depth(len(self.queue))
        for item in dropped:
            if not item.future.done():
                item.future.set_exception(Timeout("timed out in the queue"))
        self.observer.on_queue_waits([now - item.enqueued for item in batch])
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                if self._closing:
                    return
                continue
            try:
                await self._answer(batch)
            except Exception as exc:  # never let one batch stop the loop: later ones would hang
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _answer(self, batch: list[Pending]) -> None:
        images = np.stack([item.image for item in batch])
        started = time.perf_counter()
        try:
            if self._on_loop(len(batch)):
                results = self.infer(images)
            else:
                self._computing = True
                try:
                    results = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self.infer, images
                    )
                finally:
                    self._computing = False
        except Exception:  # isolate the image that broke the batch
            await self._one_by_one(batch)
            return
        self._record(len(batch), time.perf_counter() - started)
        for item, row in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(row)

    def _on_loop(self, size: int) -> bool:
        """Run a batch of `size` on the event loop? A lone image of a fast model (passes under
        `inline_below_s` per image) does: the hop to the inference thread and back costs more
        than its pass. With `inline_batches` (a worker with one core of its own, where the
        inference thread only takes turns with the loop), every batch of a fast model does:
        no thread switch, futex or eventfd per batch. (Not only the small ones: under load the
        batches grow, and those are the ones that count.) Unless the batch would hold the loop
        past LOOP_HOLD_S: there the hop costs nothing next to the pass."""
        if size > 1 and not (self.inline_batches and self._recent_s * size < LOOP_HOLD_S):
            return False
        return self._recent_s < self.inline_below_s

    def _record(self, size: int, seconds: float) -> None:
        # (per image, so that big batches do not keep lone ones off the loop)
        per_image = seconds / size
        self._recent_s = (
            per_image
            if self._recent_s == float("inf")
            else (0.9 * self._recent_s + 0.1 * per_image)
        )
        self.observer.on_batch(size, seconds)

    async def _one_by_one(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            self._computing = True
            try:
                row = (await loop.run_in_executor(self.executor, self.infer, item.image[None]))[0]
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                if not item.future.done():
                    item.future.set_result(row)
            finally:
                self._computing = False

    async def close(self) -> None:
        """Stop taking images, answer every queued one, then end."""
        self._closing = True
        self._wakeup.set()
        await self._task
