"""The forward pass: a batch of images tiled into the model's M input slots, one `session.run`.

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


def forward(session: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """[N, M, C, H, W] -> logits [N, M, K]."""
    return session.run(["logits"], {"images": inputs})[0]
