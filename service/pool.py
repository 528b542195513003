"""One dynamic batcher per served model version, created on first use."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service import metrics
from service.batching import BatchObserver, DynamicBatcher
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings


def observer_for(model: ServedModel) -> BatchObserver:
    labels = (model.name, str(model.version))
    batch_size = metrics.BATCH_SIZE.labels(*labels)
    inference = metrics.INFERENCE_DURATION.labels(*labels)

    def on_batch(size: int, seconds: float) -> None:
        batch_size.observe(size)
        inference.observe(seconds)

    return BatchObserver(
        on_batch=on_batch,
        on_queue_wait=metrics.QUEUE_DURATION.labels(*labels).observe,
        on_queue_depth=metrics.QUEUE_DEPTH.labels(*labels).set,
    )


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
                model.infer,
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
    ) -> np.ndarray:
        """logits [N, M, K] for a request's images, through the model's batching queue.

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
        return np.stack(rows)

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
