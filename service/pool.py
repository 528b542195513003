"""One dynamic batcher per served model version, created on first use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service import metrics
from service.batching import BatchObserver, DynamicBatcher
from service.inference import forward, tile
from service.postprocess import Row, Scored, score
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings


def observer_for(model: ServedModel) -> BatchObserver:
    batch_size = metrics.BATCH_SIZE.labels(*model.labels)
    return BatchObserver(
        on_batch=lambda size, seconds: batch_size.observe(size),
        on_queue_wait=metrics.QUEUE_DURATION.labels(*model.labels).observe,
        on_queue_depth=metrics.QUEUE_DEPTH.labels(*model.labels).set,
    )


def batch_function(model: ServedModel) -> Callable[[np.ndarray], Scored]:
    """What the batcher runs in the inference thread for each batch [N, C, H, W]: tile, one
    forward pass (timed alone: mimo_inference_duration_seconds), then the postprocessing."""
    inference = metrics.INFERENCE_DURATION.labels(*model.labels)
    m = model.contract.ensemble_size

    def run(images: np.ndarray) -> Scored:
        started = time.perf_counter()
        logits = forward(model.session, tile(images, m))
        inference.observe(time.perf_counter() - started)
        return score(model.contract, logits, model.labels).prepare()

    return run


class BatcherPool:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        # One inference at a time per process: ONNX Runtime already uses every core it is given.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._batchers: dict[ServedModel, DynamicBatcher] = {}
        self._published: set[ServedModel] = set()
        self.publish()

    def publish(self) -> None:
        """mimo_model_info and mimo_queue_capacity of each served version; 0 once retired."""
        served = set(self.registry.models())
        for model in served | self._published:
            metrics.MODEL_INFO.labels(
                model.name, str(model.version), str(model.contract.ensemble_size), model.provider
            ).set(1 if model in served else 0)
            metrics.QUEUE_CAPACITY.labels(model.name, str(model.version)).set(
                self.settings.max_queue_size if model in served else 0
            )
        self._published = served

    def get(self, model: ServedModel) -> DynamicBatcher:
        batcher = self._batchers.get(model)
        if batcher is None:
            batcher = DynamicBatcher(
                batch_function(model),
                self.executor,
                self.settings.max_batch_size,
                self.settings.max_queue_delay_ms / 1000.0,
                self.settings.max_queue_size,
                observer_for(model),
            )
            self._batchers[model] = batcher
        return batcher

    async def infer(
        self, model: ServedModel, images: list[np.ndarray], started: float | None = None
    ) -> list[Row]:
        """Each image's scored row, through the model's batching queue.

        `started` (time.monotonic() when the request arrived) makes the timeout cover the
        time already spent reading and decoding it.
        """
        budget = self.settings.request_timeout_s
        if started is not None:
            budget -= time.monotonic() - started
        batcher = self.get(model)
        rows = await batcher.submit(images, budget)
        if not batcher.queue and model not in self.registry.models():
            # This request picked the model just before a reload swapped it out: nothing else
            # queues on this batcher, so stop it rather than keep the old session alive.
            if self._batchers.get(model) is batcher:
                del self._batchers[model]
            await batcher.close()
        return rows

    async def retire_stale(self) -> None:
        """Drain and stop the batchers of models the registry no longer serves (after a swap)."""
        self.publish()
        served = set(self.registry.models())
        stale = [m for m in self._batchers if m not in served]
        await asyncio.gather(*(self._batchers.pop(m).close() for m in stale))

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        self._batchers.clear()
        self.executor.shutdown(wait=True)
