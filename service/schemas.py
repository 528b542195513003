"""The JSON answers of the service (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.contract import FLAG_MEASURES
from service.parameters import Mode

# the contract's flag measures as a type, so that OpenAPI lists them
FlagMeasure = Literal[FLAG_MEASURES]  # type: ignore[valid-type]


class ClassProbability(BaseModel):
    label: str
    index: int
    probability: float


class MemberPrediction(ClassProbability):
    kl_to_mean: float = Field(description="KL(p_m || p) in nats; their mean is the MI")


class Uncertainty(BaseModel):
    predictive_entropy: float = Field(description="H[p] of the mean prediction, nats (total)")
    expected_entropy: float = Field(description="mean of the heads' entropies, nats (aleatoric)")
    mutual_information: float = Field(description="H[p] - mean H[p_m], nats (epistemic)")
    disagreement: float = Field(description="fraction of head pairs whose top classes differ")
    variance: float = Field(description="mean over classes of the heads' probability variance")


class Prediction(BaseModel):
    filename: str | None = None
    label: str
    index: int
    probability: float
    top_k: list[ClassProbability]
    uncertainty: Uncertainty | None = Field(
        description="the heads' disagreement; null in packed mode (one head answered)"
    )
    uncertain: bool | None = Field(
        description="the model's flag measure (`uncertain_measure`) above its threshold; null "
        "in packed mode"
    )
    threshold: float = Field(description="the model's threshold on its flag measure")
    members: list[MemberPrediction] | None = Field(
        None, description="each head's answer (`members=true`, ensemble mode)"
    )
    head: int | None = Field(
        None, description="packed mode only: the head (input slot) that answered this image"
    )
    member_probabilities: list[list[float]] | None = Field(
        None,
        description="each head's probabilities over all classes, [M][K] in label order; "
        "only with `member_probabilities=true` (absent otherwise)",
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    ensemble_size: int
    mode: Mode = Field(
        description="ensemble: each image in all M slots, the mean of the M heads and their "
        "disagreement; packed: M images share a forward pass, each answered by its own head"
    )
    uncertain_measure: FlagMeasure = Field(
        description="the measure whose threshold raises `uncertain`: mutual_information (the "
        "heads disagree), predictive_entropy (the mean prediction is spread) or "
        "expected_entropy; the model file says which"
    )
    predictions: list[Prediction]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "mnist",
                    "version": 1,
                    "ensemble_size": 3,
                    "mode": "ensemble",
                    "uncertain_measure": "mutual_information",
                    "predictions": [
                        {
                            "filename": "seven.png",
                            "label": "7",
                            "index": 7,
                            "probability": 0.998,
                            "top_k": [
                                {"label": "7", "index": 7, "probability": 0.998},
                                {"label": "2", "index": 2, "probability": 0.001},
                            ],
                            "uncertainty": {
                                "predictive_entropy": 0.015,
                                "expected_entropy": 0.014,
                                "mutual_information": 0.0004,
                                "disagreement": 0.0,
                                "variance": 0.00001,
                            },
                            "uncertain": False,
                            "threshold": 0.02,
                            "members": [
                                {
                                    "label": "7",
                                    "index": 7,
                                    "probability": 0.999,
                                    "kl_to_mean": 0.0002,
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    }


class ModelDescription(BaseModel):
    name: str
    version: int
    ensemble_size: int
    labels: list[str]
    input_shape: list[int] = Field(description="[C, H, W] of one image")
    preprocess: dict
    temperature: float
    thresholds: dict[str, float]
    uncertain_measure: FlagMeasure = Field(
        description="the measure whose threshold raises `uncertain`"
    )
    provider: str = Field(description="execution provider in use: cpu, cuda or tensorrt")
    default: bool = Field(description="answers /predict when no model is named")


class ModelsResponse(BaseModel):
    models: list[ModelDescription]
    unavailable: dict[str, str] = Field(description="model versions refused at load, and why")


class ErrorResponse(BaseModel):
    error: str
