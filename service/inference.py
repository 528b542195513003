"""The forward pass: a batch of images tiled into the model's M input slots (ensemble mode) or
packed M to a row (packed mode), one `session.run`.

ONNX Runtime releases the GIL while it runs, so the batcher calls this from its inference
thread and the event loop keeps taking requests meanwhile.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def tile(images: np.ndarray, ensemble_size: int) -> np.ndarray:
    """float32 [N, C, H, W] -> [N, M, C, H, W]: every image in every slot."""
    shape = (len(images), ensemble_size, *images.shape[1:])
    return np.ascontiguousarray(np.broadcast_to(images[:, None], shape))


def pack(images: np.ndarray, ensemble_size: int) -> np.ndarray:
    """[N, C, H, W] -> rows [ceil(N / M), M, C, H, W].

    Image i goes to row i // M, slot i % M. A last row that is not full is completed with
    images of the batch again (in distribution for the heads; their answers are dropped).
    """
    n, m = len(images), ensemble_size
    rows = -(-n // m)
    order = np.arange(rows * m) % n
    packed = images[order].reshape(rows, m, *images.shape[1:])
    return np.ascontiguousarray(packed)


def forward(session: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """[N, M, C, H, W] -> logits [N, M, K]."""
    return session.run(["logits"], {"images": inputs})[0]
