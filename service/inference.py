"""The forward pass: a batch of images tiled into the model's M input slots (ensemble mode) or
packed M to a row (packed mode), one `session.run`.

ONNX Runtime releases the GIL while it runs, so the batcher calls this from its inference
thread and the event loop keeps taking requests meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnxruntime as ort


def row_counts(max_rows: int) -> tuple[int, ...]:
    """The batch sizes an accelerator's sessions run at: the powers of two below `max_rows`,
    and `max_rows`. A dynamic batcher makes every size up to its limit, and ONNX Runtime's CUDA
    provider plans a session's convolutions again at each change of its input shape (30-45 ms
    a pass on an H200, docs/benchmarks.md "On a GPU"): a session per size, warmed at load,
    plans nothing afterwards, and a GPU runs a batch padded up to the next size in about the
    same time."""
    sizes = [1 << k for k in range(max(max_rows - 1, 0).bit_length()) if 1 << k < max_rows]
    return (*sizes, max_rows)


def rows_for(n: int, counts: Iterable[int] | None) -> int:
    """The rows a pass of `n` rows runs at: the first of `counts` that holds them (n itself
    without counts, or past the last)."""
    if counts:
        for count in counts:
            if count >= n:
                return count
    return n


def tile(images: np.ndarray, ensemble_size: int, rows: int = 0) -> np.ndarray:
    """float32 [N, C, H, W] -> [max(N, rows), M, C, H, W]: every image in every slot, and
    rows of zeros after them up to `rows` (their answers are dropped)."""
    n = len(images)
    shape = (max(n, rows), ensemble_size, *images.shape[1:])
    if shape[0] == n:
        return np.ascontiguousarray(np.broadcast_to(images[:, None], shape))
    out = np.zeros(shape, np.float32)
    out[:n] = images[:, None]
    return out


def pack(images: np.ndarray, ensemble_size: int, rows: int = 0) -> np.ndarray:
    """[N, C, H, W] -> rows [max(ceil(N / M), rows), M, C, H, W].

    Image i goes to row i // M, slot i % M. A last row that is not full, and the rows after it
    up to `rows`, are completed with images of the batch again (in distribution for the heads;
    their answers are dropped).
    """
    n, m = len(images), ensemble_size
    rows = max(-(-n // m), rows)
    order = np.arange(rows * m) % n
    packed = images[order].reshape(rows, m, *images.shape[1:])
    return np.ascontiguousarray(packed)


def forward(session: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """[N, M, C, H, W] -> logits [N, M, K]."""
    return session.run(["logits"], {"images": inputs})[0]
