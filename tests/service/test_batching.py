"""Dynamic batching: the pure collection policy, then the batcher with real numpy inference."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import BatchObserver, DynamicBatcher, Pending, collect_batch
from service.errors import Timeout, TooManyRequests, Unavailable

# --- collect_batch ----------------------------------------------------------------------------


def pending(loop: asyncio.AbstractEventLoop, value: float, deadline: float = 100.0) -> Pending:
    return Pending(np.full((1, 2, 2), value, np.float32), loop.create_future(), deadline)


def values(items: list[Pending]) -> list[float]:
    return [float(i.image[0, 0, 0]) for i in items]


@pytest.fixture
def loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_collect_keeps_order_and_respects_max_batch(loop: asyncio.AbstractEventLoop) -> None:
    queue = deque(pending(loop, v) for v in range(7))
    batch, dropped = collect_batch(queue, 3, now=0.0)
    assert values(batch) == [0, 1, 2] and dropped == []
    assert values(list(queue)) == [3, 4, 5, 6]
    batch, _ = collect_batch(queue, 3, now=0.0)
    assert values(batch) == [3, 4, 5]
    batch, _ = collect_batch(queue, 3, now=0.0)
    assert values(batch) == [6] and not queue
    assert collect_batch(queue, 3, now=0.0) == ([], [])


def test_collect_sets_aside_expired_and_cancelled(loop: asyncio.AbstractEventLoop) -> None:
    items = [pending(loop, v) for v in range(8)]
    items[0].deadline = 5.0  # expired at now=10
    items[2].future.cancel()  # the client went away
    items[3].deadline = 10.0  # a deadline equal to now counts as expired
    items[5].future.set_result(np.zeros(1))  # already answered
    queue = deque(items)
    batch, dropped = collect_batch(queue, 3, now=10.0)
    # The dropped ones do not take a place in the batch: three live images still leave.
    assert values(batch) == [1, 4, 6]
    assert values(dropped) == [0, 2, 3, 5]
    assert values(list(queue)) == [7]


def test_collect_only_dead_items(loop: asyncio.AbstractEventLoop) -> None:
    queue = deque(pending(loop, v, deadline=1.0) for v in range(3))
    batch, dropped = collect_batch(queue, 2, now=2.0)
    assert batch == [] and values(dropped) == [0, 1, 2] and not queue


# --- DynamicBatcher ---------------------------------------------------------------------------


class SumModel:
    """Real numpy inference: one row per image, the sum of its pixels; records every batch.

    `gate` (when set) holds inference until released, to keep images queued on purpose.
    An image containing NaN makes the whole call fail, as a broken input would in a model."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[float]] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if np.isnan(images).any():
            raise ValueError("NaN in the input")
        sums = images.reshape(len(images), -1).sum(axis=1)
        self.batches.append([float(s) for s in sums])
        return np.stack([sums, -sums], axis=1)  # [N, 2]: row i belongs to image i


def image(value: float) -> np.ndarray:
    return np.full((1, 2, 2), value, np.float32)  # its sum is 4 * value


def run(test: Callable[[ThreadPoolExecutor], object]) -> object:
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        return asyncio.run(test(executor))
    finally:
        executor.shutdown(wait=True)


def test_concurrent_callers_get_their_own_rows_in_small_batches() -> None:
    model = SumModel()
    sizes: list[int] = []

    async def main(executor: ThreadPoolExecutor) -> None:
        observer = BatchObserver(on_batch=lambda size, seconds: sizes.append(size))
        batcher = DynamicBatcher(model, executor, 4, 0.05, 100, observer)
        results = await asyncio.gather(*(batcher.submit([image(i)], 5.0) for i in range(10)))
        for i, rows in enumerate(results):
            assert len(rows) == 1
            np.testing.assert_allclose(rows[0], [4 * i, -4 * i])
        await batcher.close()

    run(main)
    assert all(len(b) <= 4 for b in model.batches)
    assert sorted(s for b in model.batches for s in b) == [4 * i for i in range(10)]
    assert max(len(b) for b in model.batches) == 4  # they were batched, not run one by one
    assert sizes == [len(b) for b in model.batches]


def test_a_request_with_several_images_gets_them_in_order() -> None:
    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(SumModel(), executor, 3, 0.01, 100)
        rows = await batcher.submit([image(v) for v in (5, 1, 7, 2, 9)], 5.0)
        assert [float(r[0]) for r in rows] == [20, 4, 28, 8, 36]
        await batcher.close()

    run(main)


def test_single_request_waits_at_most_the_delay() -> None:
    async def main(executor: ThreadPoolExecutor) -> list[float]:
        batcher = DynamicBatcher(SumModel(), executor, 8, 0.15, 100)
        elapsed = []
        for _ in range(2):
            started = time.monotonic()
            await batcher.submit([image(1)], 5.0)
            elapsed.append(time.monotonic() - started)
        await batcher.close()
        return elapsed

    for seconds in run(main):
        assert 0.13 <= seconds < 0.15 + 0.25  # it waits for company, but not longer


def test_a_full_batch_leaves_without_waiting_for_the_delay() -> None:
    async def main(executor: ThreadPoolExecutor) -> float:
        batcher = DynamicBatcher(SumModel(), executor, 4, 10.0, 100)
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit([image(i)], 20.0) for i in range(4)))
        elapsed = time.monotonic() - started
        await batcher.close()
        return elapsed

    assert run(main) < 1.0


def test_queue_full_is_refused_at_once_with_retry_after() -> None:
    gate = threading.Event()
    model = SumModel(gate)

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(model, executor, 1, 0.0, 2)
        first = asyncio.ensure_future(batcher.submit([image(1)], 10.0))
        while not model.started.is_set():  # the first image is in the forward pass ...
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(batcher.submit([image(v)], 10.0)) for v in (2, 3)]
        await asyncio.sleep(0.02)  # ... and two wait in the queue: it is full
        started = time.monotonic()
        with pytest.raises(TooManyRequests) as info:
            await batcher.submit([image(4)], 10.0)
        assert time.monotonic() - started < 0.05
        assert info.value.status_code == 429
        assert info.value.headers["Retry-After"] == "1"
        # Two images at once do not fit in one free place either.
        gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    run(main)
    assert sorted(s for b in model.batches for s in b) == [4, 8, 12]


def test_timeout_answers_504_and_the_image_is_never_run() -> None:
    gate = threading.Event()
    model = SumModel(gate)

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(model, executor, 1, 0.0, 10)
        first = asyncio.ensure_future(batcher.submit([image(1)], 10.0))
        while not model.started.is_set():
            await asyncio.sleep(0.005)
        started = time.monotonic()
        with pytest.raises(Timeout) as info:
            await batcher.submit([image(100)], 0.1)  # waits behind the blocked forward pass
        assert 0.09 <= time.monotonic() - started < 0.5
        assert info.value.status_code == 504
        gate.set()
        await first
        assert (await batcher.submit([image(2)], 5.0))[0][0] == 8
        await batcher.close()

    run(main)
    assert [s for b in model.batches for s in b] == [4, 8]  # 400 (the timed-out one) never ran


def test_a_failing_image_fails_only_its_caller() -> None:
    model = SumModel()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(model, executor, 4, 0.5, 100)
        inputs = [image(1), image(2), image(np.nan), image(3)]
        results = await asyncio.gather(
            *(batcher.submit([x], 5.0) for x in inputs), return_exceptions=True
        )
        assert isinstance(results[2], ValueError) and "NaN" in str(results[2])
        assert [float(r[0][0]) for i, r in enumerate(results) if i != 2] == [4, 8, 12]
        # The batcher keeps serving afterwards.
        assert (await batcher.submit([image(5)], 5.0))[0][0] == 20
        await batcher.close()

    run(main)
    # The four went as one batch, which failed; then each ran alone.
    assert model.batches == [[4.0], [8.0], [12.0], [20.0]]


def test_close_answers_everything_queued_then_refuses() -> None:
    gate = threading.Event()
    model = SumModel(gate)

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(model, executor, 2, 0.0, 100)
        tasks = [asyncio.ensure_future(batcher.submit([image(i)], 10.0)) for i in range(7)]
        while not model.started.is_set():
            await asyncio.sleep(0.005)
        assert len(batcher.queue) >= 5  # most are still queued when the close begins
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.02)
        with pytest.raises(Unavailable) as info:
            await batcher.submit([image(9)], 1.0)
        assert info.value.status_code == 503
        gate.set()
        await closing
        results = await asyncio.wait_for(asyncio.gather(*tasks), 0.5)  # answered, none failed
        assert [float(r[0][0]) for r in results] == [4 * i for i in range(7)]

    run(main)
    assert all(len(b) <= 2 for b in model.batches)


def test_a_batch_that_breaks_outside_inference_does_not_stop_the_loop() -> None:
    calls = []

    def wrong_rows(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        # The first call answers one row too few: pairing rows with callers fails after infer.
        rows = images.reshape(len(images), -1).sum(axis=1, keepdims=True)
        return rows[:-1] if len(calls) == 1 else rows

    async def scenario(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(wrong_rows, executor, 4, 0.05, 16)
        image = np.ones((1, 2, 2), np.float32)
        first = await asyncio.gather(
            batcher.submit([image], 2.0), batcher.submit([image], 2.0), return_exceptions=True
        )
        # zip(strict=True) answers the first caller before it finds the missing row.
        assert isinstance(first[1], ValueError), first
        again = await batcher.submit([image * 2], 2.0)
        assert float(again[0][0]) == 8.0
        await batcher.close()

    run(scenario)


class ThreadRecorder(SumModel):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return super().__call__(images)


@pytest.mark.parametrize(("inline_below_s", "expected"), [(1.0, "loop"), (0.0, "pool")])
def test_lone_images_of_fast_models_run_on_the_event_loop(
    inline_below_s: float, expected: str
) -> None:
    """Once a model's batches are known to be fast, a lone image skips the thread hop; with
    the setting at 0 (or for a slow model) every batch runs in the inference thread."""
    model = ThreadRecorder()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(model, executor, 4, 0.0, 100, inline_below_s=inline_below_s)
        for i in range(3):
            rows = await batcher.submit([image(i)], 5.0)
            np.testing.assert_allclose(rows[0], [4 * i, -4 * i])
        await batcher.close()

    run(main)
    loop_thread = threading.main_thread().name
    # The first batch has no timing yet: always the inference thread.
    assert model.threads[0] != loop_thread
    later = {"loop" if t == loop_thread else "pool" for t in model.threads[1:]}
    assert later == {expected}


@pytest.mark.parametrize(("inline_batches", "expected"), [(True, "loop"), (False, "pool")])
def test_batches_of_fast_models_run_on_the_loop_with_a_core_per_worker(
    inline_batches: bool, expected: str
) -> None:
    """With `inline_batches` (each worker has one core: Layout.core_per_worker) a batch of a
    fast model runs on the event loop too, not only a lone image; every caller still gets its
    own row, in one forward pass. A slow model keeps the inference thread either way."""
    model = ThreadRecorder()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(
            model, executor, 8, 0.0, 100, inline_below_s=1.0, inline_batches=inline_batches
        )
        await batcher.submit([image(9)], 5.0)  # the first batch times the model
        results = await asyncio.gather(*(batcher.submit([image(i)], 5.0) for i in range(5)))
        for i, rows in enumerate(results):
            np.testing.assert_allclose(rows[0], [4 * i, -4 * i])
        batcher.inline_below_s = 0.0  # (as if the model were slow)
        await asyncio.gather(*(batcher.submit([image(i)], 5.0) for i in range(3)))
        await batcher.close()

    run(main)
    loop_thread = threading.main_thread().name
    assert [len(b) for b in model.batches[1:]] == [5, 3]
    assert ("loop" if model.threads[1] == loop_thread else "pool") == expected
    assert model.threads[2] != loop_thread


def test_a_batch_that_would_hold_the_loop_long_goes_to_the_inference_thread() -> None:
    """Even with `inline_batches`, a batch expected to take longer than LOOP_HOLD_S runs in the
    inference thread (health checks and new requests would wait for it)."""
    from service.batching import LOOP_HOLD_S

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = DynamicBatcher(
            SumModel(), executor, 64, 0.0, 100, inline_below_s=1.0, inline_batches=True
        )
        batcher._recent_s = LOOP_HOLD_S / 10  # (as measured: per image)
        assert batcher._on_loop(1) and batcher._on_loop(9)
        assert not batcher._on_loop(10)
        await batcher.close()

    run(main)


class LoopWatcher(SumModel):
    """Records, for each batch, whether the batcher's own task was the one that ran it."""

    def __init__(self) -> None:
        super().__init__()
        self.by_batcher: list[bool] = []
        self.batcher: DynamicBatcher | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # the inference thread has no loop
            task = None
        self.by_batcher.append(task is not None and task is getattr(self.batcher, "_task", None))
        return super().__call__(images)


def warmed(
    model: LoopWatcher, executor: ThreadPoolExecutor, delay_s: float = 0.0
) -> DynamicBatcher:
    batcher = DynamicBatcher(model, executor, 8, delay_s, 100, inline_below_s=1.0)
    model.batcher = batcher
    return batcher


def test_a_lone_image_on_an_idle_batcher_runs_in_its_own_request() -> None:
    """Nothing queued, nothing computing: the image runs in the request's own task, not two
    turns of the loop later in the batcher's, with the same answer and metrics."""
    model = LoopWatcher()
    sizes: list[int] = []

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = warmed(model, executor)
        batcher.observer = BatchObserver(on_batch=lambda size, seconds: sizes.append(size))
        await batcher.submit([image(9)], 5.0)  # the first batch times the model
        for i in range(3):
            rows = await batcher.submit([image(i)], 5.0)
            np.testing.assert_allclose(rows[0], [4 * i, -4 * i])
        await batcher.close()

    run(main)
    assert model.by_batcher[1:] == [False, False, False]
    assert sizes == [1, 1, 1, 1]


def test_images_that_arrive_together_still_batch() -> None:
    """Requests started in the same turn of the loop all see each other deciding: none runs
    alone, they leave as one batch."""
    model = LoopWatcher()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = warmed(model, executor)
        await batcher.submit([image(9)], 5.0)
        results = await asyncio.gather(*(batcher.submit([image(i)], 5.0) for i in range(6)))
        for i, rows in enumerate(results):
            np.testing.assert_allclose(rows[0], [4 * i, -4 * i])
        await batcher.close()

    run(main)
    assert [len(b) for b in model.batches[1:]] == [6]


def test_a_lone_image_that_breaks_the_model_fails_only_its_request() -> None:
    model = LoopWatcher()
    waits: list[list[float]] = []

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = warmed(model, executor)
        await batcher.submit([image(9)], 5.0)
        batcher.observer = BatchObserver(on_queue_waits=waits.append)
        with pytest.raises(ValueError, match="NaN"):
            await batcher.submit([image(float("nan"))], 5.0)
        rows = await batcher.submit([image(2)], 5.0)
        np.testing.assert_allclose(rows[0], [8, -8])
        await asyncio.sleep(0)  # (a lone image's observations come one turn after its answer)
        await batcher.close()

    run(main)
    assert waits == [[0.0], [0.0]]  # the failed image's wait counts too, as in a batch


def test_a_queue_delay_keeps_lone_images_in_the_batcher() -> None:
    """MIMO_MAX_QUEUE_DELAY_MS > 0 asks for fuller batches: a lone image waits for company."""
    model = LoopWatcher()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = warmed(model, executor, delay_s=0.005)
        for i in range(3):
            await batcher.submit([image(i)], 5.0)
        await batcher.close()

    run(main)
    assert model.by_batcher[1:] == [True, True]


def test_a_request_cancelled_while_deciding_leaves_no_trace() -> None:
    model = LoopWatcher()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = warmed(model, executor)
        await batcher.submit([image(9)], 5.0)
        gone = asyncio.ensure_future(batcher.submit([image(1)], 5.0))
        await asyncio.sleep(0)  # it is deciding
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher._deciding == 0 and not batcher.queue
        rows = await batcher.submit([image(2)], 5.0)  # alone again
        np.testing.assert_allclose(rows[0], [8, -8])
        await batcher.close()

    run(main)
    assert model.by_batcher[1:] == [False]  # the cancelled image never ran


def test_the_queue_limit_holds_for_images_that_decided_together() -> None:
    """Four lone images arrive together on an idle batcher whose queue holds two: after their
    turn of the loop two queue and two are refused (429), as without the direct path."""
    model = LoopWatcher()

    async def main(executor: ThreadPoolExecutor) -> list[object]:
        batcher = DynamicBatcher(model, executor, 8, 0.0, 2, inline_below_s=1.0)
        model.batcher = batcher
        await batcher.submit([image(9)], 5.0)
        out = await asyncio.gather(
            *(batcher.submit([image(i)], 5.0) for i in range(4)), return_exceptions=True
        )
        await batcher.close()
        return out

    out = run(main)
    assert [type(o).__name__ for o in out] == ["list", "list", "TooManyRequests", "TooManyRequests"]


def test_an_unloading_begun_while_deciding_still_answers_the_image() -> None:
    """A reload retires the old model's batcher while a request of it looks whether it is
    alone: the image is queued and answered by close(), never refused (nothing in flight is
    lost across a reload)."""
    model = LoopWatcher()

    async def main(executor: ThreadPoolExecutor) -> None:
        batcher = warmed(model, executor)
        await batcher.submit([image(9)], 5.0)
        deciding = asyncio.ensure_future(batcher.submit([image(3)], 5.0))
        await asyncio.sleep(0)  # it is deciding
        assert batcher._deciding == 1
        await batcher.close()
        np.testing.assert_allclose((await deciding)[0], [12, -12])

    run(main)
