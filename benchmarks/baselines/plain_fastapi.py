"""The simplest alternative a user would write: FastAPI, Pillow decode, tile M times, one
`session.run` per request, softmax and mean in numpy. No batching, no limits, no metrics.

    MODEL=models/mnist/1/model.onnx uvicorn benchmarks.baselines.plain_fastapi:app --port 8100
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from PIL import Image

session = ort.InferenceSession(
    os.environ.get("MODEL", "models/mnist/1/model.onnx"), providers=["CPUExecutionProvider"]
)
_, M, C, H, W = session.get_inputs()[0].shape
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict:
    image = Image.open(io.BytesIO(await request.body())).convert("L" if C == 1 else "RGB")
    pixels = np.asarray(image.resize((W, H)), np.float32) / 255.0  # [H, W] or [H, W, 3]
    x = (pixels[None] if C == 1 else pixels.transpose(2, 0, 1))[None]  # [1, C, H, W]
    tiled = np.repeat(x[:, None], M, axis=1)  # [1, M, 1, H, W]
    logits = session.run(None, {"images": tiled})[0][0]  # [M, K]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    mean = p.mean(0)
    return {"label": int(mean.argmax()), "probability": float(mean.max())}
