"""LitServe with its dynamic batching, the same model and the same work as the plain app:
decode, tile M times, one `session.run` per batch, softmax and mean.

    python -m benchmarks.baselines.litserve_app --port 8102 [--model models/mnist/1/model.onnx]
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run
# time to see that it takes the raw body.
import argparse
import io
from typing import Annotated

import litserve as ls
import numpy as np
import onnxruntime as ort
from fastapi import Body
from PIL import Image


class MimoAPI(ls.LitAPI):
    def __init__(self, model: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.model = model

    def setup(self, device: str) -> None:
        self.session = ort.InferenceSession(self.model, providers=["CPUExecutionProvider"])
        _, self.m, self.c, self.h, self.w = self.session.get_inputs()[0].shape

    # A raw image body: LitServe reads it when the parameter declares the media type.
    def decode_request(self, request: Annotated[bytes, Body(media_type="image/png")]) -> np.ndarray:
        image = Image.open(io.BytesIO(request)).convert("L" if self.c == 1 else "RGB")
        pixels = np.asarray(image.resize((self.w, self.h)), np.float32) / 255.0
        return pixels[None] if self.c == 1 else pixels.transpose(2, 0, 1)  # [C, H, W]

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)  # [N, C, H, W]

    def predict(self, x: np.ndarray) -> np.ndarray:
        tiled = np.repeat(x[:, None], self.m, axis=1)  # [N, M, 1, H, W]
        logits = self.session.run(None, {"images": tiled})[0]  # [N, M, K]
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)).mean(1)  # [N, K]

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict:
        return {"label": int(output.argmax()), "probability": float(output.max())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--model", default="models/mnist/1/model.onnx")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args()
    api = MimoAPI(
        args.model,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        api_path="/predict",
    )
    server = ls.LitServer(api, accelerator="cpu")
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False, log_level="warning")
