"""The ceiling of one uvicorn worker: a FastAPI endpoint that reads the body and answers a
constant. Nothing a model server does can be faster than this.

    uvicorn benchmarks.baselines.trivial:app --port 8101
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict:
    await request.body()
    return {"label": 7}
