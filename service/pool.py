"""One dynamic batcher per served model version, created on first use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service import metrics
from service.batching import BatchObserver, DynamicBatcher
from service.cores import CoresBoard
from service.inference import forward, pack, tile
from service.postprocess import Answers, Row, score, score_packed
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings


def batch_function(
    model: ServedModel, packed: bool, cores: CoresBoard | None = None
) -> Callable[[np.ndarray], Answers]:
    """What the batcher runs in the inference thread for each batch [N, C, H, W]: tile (or
    pack), one forward pass (timed alone: mimo_inference_duration_seconds), postprocess.

    A lone image runs on the model's lone session (every core) unless another worker is
    computing (`cores`). Run on the event loop (a lone image, service/batching.py), it records
    its metrics on the loop's next turn, after the request it answers has written its answer.
    """
    inference = metrics.INFERENCE_DURATION.labels(*model.series)
    infer_stage = metrics.STAGE_SECONDS.labels(*model.series, "infer")
    output_stage = metrics.STAGE_SECONDS.labels(*model.series, "output")
    last = metrics.LAST_INFERENCE.labels(*model.series)
    m = model.contract.ensemble_size
    cores = cores or CoresBoard(None)

    def record(answers: Answers, seconds: float, output_seconds: float) -> None:
        inference.observe(seconds)
        # (per image, as Triton's statistics count a batch's time for each request in it)
        infer_stage.inc(seconds * len(answers))
        output_stage.inc(output_seconds * len(answers))
        last.set(time.time())
        answers.record(model.contract.labels, model.series)

    def run(images: np.ndarray) -> Answers:
        started = time.perf_counter()
        with cores.busy() as others_busy:
            rows = model.rows_for(-(-len(images) // m) if packed else len(images))
            session = model.session_for(rows, lone=len(images) == 1 and not others_busy)
            logits = forward(session, pack(images, m, rows) if packed else tile(images, m, rows))
        ran = time.perf_counter()
        if packed:
            answers: Answers = score_packed(model.contract, logits, len(images))
        else:
            answers = score(model.contract, logits[: len(images)])
        answers.prepare()
        timings = (ran - started, time.perf_counter() - ran)
        try:
            asyncio.get_running_loop().call_soon(record, answers, *timings)
        except RuntimeError:  # (no loop in this thread: the inference thread)
            record(answers, *timings)
        return answers

    return run


class BatcherPool:
    def __init__(
        self, registry: ModelRegistry, settings: Settings, core_per_worker: bool = False
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.core_per_worker = core_per_worker  # (service/layout.py)
        # One inference at a time per process: ONNX Runtime already uses every core it is given.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.cores = CoresBoard(settings.cores_board)
        # (model, packed) -> its queue: ensemble and packed requests batch apart, and take
        # turns on the one inference thread.
        self._batchers: dict[tuple[ServedModel, bool], DynamicBatcher] = {}
        self._published: set[ServedModel] = set()
        self.publish()

    def publish(self) -> None:
        """mimo_model_info and mimo_queue_capacity of each served version, 0 once retired; a new
        version's prediction series, at zero."""
        served = set(self.registry.models())
        for model in served - self._published:
            metrics.start_series(model.name, str(model.version), model.contract.labels)
        for model in served | self._published:
            metrics.MODEL_INFO.labels(
                model.name, str(model.version), str(model.contract.ensemble_size), model.provider
            ).set(1 if model in served else 0)
            metrics.QUEUE_CAPACITY.labels(model.name, str(model.version)).set(
                self.settings.max_queue_size if model in served else 0
            )
        self._published = served

    def observer_for(self, model: ServedModel) -> BatchObserver:
        batch_size = metrics.BATCH_SIZE.labels(*model.series)
        queue_duration = metrics.QUEUE_DURATION.labels(*model.series)
        depth = metrics.QUEUE_DEPTH.labels(*model.series)

        def on_queue_depth(_: int) -> None:  # the model's queues together, both modes
            depth.set(sum(len(b.queue) for (m, _), b in self._batchers.items() if m is model))

        def on_queue_waits(waits: list[float]) -> None:
            for wait in waits:
                queue_duration.observe(wait)

        return BatchObserver(
            on_batch=lambda size, seconds: batch_size.observe(size),
            on_queue_waits=on_queue_waits,
            on_queue_depth=on_queue_depth,
        )

    def get(self, model: ServedModel, packed: bool = False) -> DynamicBatcher:
        batcher = self._batchers.get((model, packed))
        if batcher is None:
            batcher = DynamicBatcher(
                batch_function(model, packed, self.cores),
                self.executor,
                # a packed forward pass holds M images per row
                self.settings.max_batch_size * (model.contract.ensemble_size if packed else 1),
                self.settings.max_queue_delay_ms / 1000.0,
                self.settings.max_queue_size,
                self.observer_for(model),
                self.settings.inline_below_ms / 1000.0,
                # (a GPU's pass leaves the CPU free: the loop goes on meanwhile)
                inline_batches=model.provider == "cpu" and self.core_per_worker,
            )
            self._batchers[model, packed] = batcher
        return batcher

    async def infer(
        self,
        model: ServedModel,
        images: list[np.ndarray],
        started: float | None = None,
        packed: bool = False,
    ) -> list[Row]:
        """Each image's scored row, through the model's batching queue (its packed queue with
        `packed`).

        `started` (time.monotonic() when the request arrived) makes the timeout cover the
        time already spent reading and decoding it.
        """
        budget = self.settings.request_timeout_s
        if started is not None:
            arrived = time.monotonic() - started  # reading, decoding and checking it
            budget -= arrived
            metrics.child(metrics.STAGE_SECONDS, *model.series, "input").inc(arrived * len(images))
        batcher = self.get(model, packed)
        rows = await batcher.submit(images, budget)
        if not batcher.queue and model not in self.registry.models():
            # This request picked the model just before a reload swapped it out: nothing else
            # queues on this batcher, so stop it rather than keep the old session alive.
            if self._batchers.get((model, packed)) is batcher:
                del self._batchers[model, packed]
            await batcher.close()
        return rows

    async def retire_stale(self) -> None:
        """Drain and stop the batchers of models the registry no longer serves (after a swap)."""
        self.publish()
        served = set(self.registry.models())
        stale = [key for key in self._batchers if key[0] not in served]
        await asyncio.gather(*(self._batchers.pop(key).close() for key in stale))

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        self._batchers.clear()
        self.executor.shutdown(wait=True)
        self.cores.close()
