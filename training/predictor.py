"""ONNX Runtime over one or more exported graphs, heads pooled: how training evaluates models.

Images go in as float32 [N, C, H, W] in [0, 1] (`as_float` converts the datasets' uint8).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort


@dataclass
class OnnxPredictor:
    """One or more ONNX graphs (contract signature); their heads are pooled: [N, sum M, K]."""

    sessions: list[ort.InferenceSession]
    ensemble_sizes: list[int]

    @classmethod
    def from_bytes(cls, graphs: Sequence[bytes | str], threads: int = 0) -> OnnxPredictor:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions = [
            ort.InferenceSession(g, options, providers=["CPUExecutionProvider"]) for g in graphs
        ]
        sizes = [int(s.get_inputs()[0].shape[1]) for s in sessions]
        return cls(sessions, sizes)

    @property
    def forward_passes(self) -> int:
        return len(self.sessions)

    def __call__(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """float32 [N, C, H, W] in [0, 1] -> logits [N, sum of M, K], each image tiled."""
        out = []
        for start in range(0, len(images), batch_size):
            x = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            heads = [
                s.run(["logits"], {"images": np.repeat(x[:, None], m, axis=1)})[0]
                for s, m in zip(self.sessions, self.ensemble_sizes, strict=True)
            ]
            out.append(np.concatenate(heads, axis=1))
        return np.concatenate(out)

    def seconds_per_image(self, shape: tuple[int, ...], batch: int, repeats: int = 20) -> float:
        """Median wall time of one call at a batch size, divided by the batch size."""
        x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
        self(x, batch)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self(x, batch)
            times.append(time.perf_counter() - t)
        return float(np.median(times)) / batch


def as_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0
