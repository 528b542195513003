"""Scored rows -> what goes back on the wire: /predict's JSON, or the OIP output tensors.

Shared by every protocol: REST /predict and the Open Inference Protocol over REST and gRPC
all answer from the rows the batcher handed back (service/postprocess.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.parameters import PredictParameters
from service.postprocess import Answers, Packed, Row, Scored
from service.registry import ServedModel


def prediction(
    model: ServedModel,
    row: Row,
    filename: str | None,
    top_k: int,
    members: bool,
    member_probabilities: bool,
) -> dict[str, Any]:
    """One image's entry of /predict's `predictions` (the schema is service.schemas.Prediction).

    A packed row has one head's answer: `head` says which, and there is no ensemble
    uncertainty (`uncertainty`, `uncertain` and `members` are null).
    """
    batch, i = row.batch, row.index
    names = model.contract.labels
    p = batch.probabilities[i]
    order = batch.ranking[i][:top_k]
    best = order[0]
    answer: dict[str, Any] = {
        "filename": filename,
        "label": names[best],
        "index": best,
        "probability": p[best],
        "top_k": [{"label": names[j], "index": j, "probability": p[j]} for j in order],
        "uncertainty": None,
        "uncertain": None,
        "threshold": model.contract.threshold,
        "members": None,
    }
    if isinstance(batch, Packed):
        answer["head"] = int(batch.heads[i])
        return answer
    answer["uncertainty"] = batch.measures[i]
    answer["uncertain"] = batch.flags[i]
    if members:
        tops, probs, kls = batch.members
        answer["members"] = [
            {"label": names[j], "index": j, "probability": q, "kl_to_mean": kl}
            for j, q, kl in zip(tops[i], probs[i], kls[i], strict=True)
        ]
    if member_probabilities:
        answer["member_probabilities"] = batch.uncertainty.member_probabilities[i].tolist()
    return answer


def predict_answer(
    model: ServedModel, rows: list[Row], filenames: list[str | None], params: PredictParameters
) -> bytes:
    """The JSON body of /predict (service.schemas.PredictResponse), without a model pass."""
    body = {
        "model": model.name,
        "version": model.version,
        "ensemble_size": model.contract.ensemble_size,
        "mode": params.mode,
        "uncertain_measure": model.contract.uncertain_measure,
        "predictions": [
            prediction(model, row, name, params.top_k, params.members, params.member_probabilities)
            for row, name in zip(rows, filenames, strict=True)
        ],
    }
    return orjson.dumps(body)  # (the answer is built per request: the fastest encoder)


# output `head` of an image the mean of all M heads answered (ensemble mode)
ENSEMBLE_HEAD = -1


def _column(batch: Answers, name: str) -> np.ndarray:
    if name == "probabilities":  # the ensemble mean, or the answering head's (packed)
        return batch.answered
    if isinstance(batch, Packed):
        if name == "head":
            return batch.heads
    elif isinstance(batch, Scored):
        if name == "uncertain":
            return batch.uncertain
        if name == "head":  # every head answers an ensemble row
            return np.full(len(batch), ENSEMBLE_HEAD, np.int32)
        return getattr(batch.uncertainty, name)
    raise ValueError(f"a {type(batch).__name__} batch has no output {name!r}")


def gather(rows: list[Row], name: str) -> np.ndarray:
    """Output `name` of the request's images, stacked; a slice when they are one run of one
    batch (the usual case: a request's images queue together)."""
    first = rows[0]
    if all(r.batch is first.batch for r in rows):
        start = first.index
        if [r.index for r in rows] == list(range(start, start + len(rows))):
            return _column(first.batch, name)[start : start + len(rows)]
    return np.stack([_column(r.batch, name)[r.index] for r in rows])


DTYPES = {"uncertain": np.dtype(np.bool_), "head": np.dtype("<i4")}  # others: FP32


def oip_tensors(rows: list[Row], names: list[str]) -> dict[str, np.ndarray]:
    """The OIP output tensors `names` (service.oip_model.output_specs), in that order: FP32,
    BOOL for `uncertain` and INT32 for `head` (-1, ENSEMBLE_HEAD, for ensemble rows)."""
    tensors = {}
    for name in names:
        array = gather(rows, name)
        tensors[name] = array.astype(DTYPES.get(name, np.float32), copy=False)
    return tensors
