"""The model contract (format 1): what a `model.onnx` must declare to be served.

Training writes it (training/export.py), the service reads it. The reader takes what ONNX
Runtime reports of a loaded session, so the service needs neither torch nor onnx.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

FORMAT = "1"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")  # a model's folder name in the repository
VERSION_PATTERN = re.compile(r"[1-9][0-9]*")  # a version folder: a positive integer
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
REQUIRED_KEYS = (
    "mimo.format",
    "mimo.ensemble_size",
    "mimo.input_shape",
    "mimo.labels",
    "mimo.preprocess",
    "mimo.temperature",
    "mimo.thresholds",
    "mimo.training",
    "mimo.evaluation",
)
# Optional keys: a file without them is read as a float32 model.
PRECISION_KEY = "mimo.precision"  # "fp32" (default), "int8", "fp16": the arithmetic inside
QUANTIZATION_KEY = "mimo.quantization"  # JSON: how an int8 model was quantized
# The measure whose threshold raises `uncertain` (training/flag.py chooses it by evidence);
# a file without it flags by mutual information, as format 1 always did.
UNCERTAIN_MEASURE_KEY = "mimo.uncertain_measure"
DEFAULT_UNCERTAIN_MEASURE = "mutual_information"
# The measures a flag may use: those that rank images (service/uncertainty.py's MEASURES).
FLAG_MEASURES = ("mutual_information", "predictive_entropy", "expected_entropy")
# How model cards and reports name each (the page words its verdict in service/static/app.js).
MEASURE_WORDS = {
    "mutual_information": "mutual information (the heads' disagreement)",
    "predictive_entropy": "predictive entropy (of the heads' mean)",
    "expected_entropy": "expected entropy (the heads' own doubt)",
}
PRECISION_PATTERN = re.compile(r"[a-z0-9]{1,16}")
COLORS = ("L", "RGB")
RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos")


class ContractError(ValueError):
    """A model file that does not keep the contract; the message names the file."""


class TensorInfo(Protocol):
    """What ONNX Runtime's NodeArg offers: name, shape (ints or symbolic names), type."""

    name: str
    shape: Sequence[Any]
    type: str


@dataclass(frozen=True)
class ModelContract:
    ensemble_size: int  # M
    input_shape: tuple[int, int, int]  # C, H, W
    labels: tuple[str, ...]  # K class names in logit order
    preprocess: dict[str, Any]
    temperature: float
    thresholds: dict[str, float]
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    # The arithmetic inside the graph; its input and output are float32 whatever it is.
    precision: str = "fp32"
    quantization: dict[str, Any] = field(default_factory=dict)
    uncertain_measure: str = DEFAULT_UNCERTAIN_MEASURE

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def threshold(self) -> float:
        """The `uncertain` flag's threshold, on `uncertain_measure`."""
        return self.thresholds[self.uncertain_measure]

    def metadata(self) -> dict[str, str]:
        """The `metadata_props` that declare this contract in a model file."""
        optional = {}
        if self.precision != "fp32":
            optional[PRECISION_KEY] = self.precision
        if self.quantization:
            optional[QUANTIZATION_KEY] = json.dumps(self.quantization)
        if self.uncertain_measure != DEFAULT_UNCERTAIN_MEASURE:
            optional[UNCERTAIN_MEASURE_KEY] = self.uncertain_measure
        return {
            "mimo.format": FORMAT,
            "mimo.ensemble_size": str(self.ensemble_size),
            "mimo.input_shape": json.dumps(list(self.input_shape)),
            "mimo.labels": json.dumps(list(self.labels)),
            "mimo.preprocess": json.dumps(self.preprocess),
            "mimo.temperature": repr(float(self.temperature)),
            "mimo.thresholds": json.dumps(self.thresholds),
            "mimo.training": json.dumps(self.training),
            "mimo.evaluation": json.dumps(self.evaluation),
            **optional,
        }


def _json(metadata: Mapping[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise ContractError(f"{source}: metadata {key!r} is not valid JSON ({exc})") from None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_contract(
    metadata: Mapping[str, str],
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    source: str,
) -> ModelContract:
    """Validate a model's metadata and graph signature against the contract."""
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ContractError(
            f"{source}: missing metadata {', '.join(missing)} "
            "(export models with `python -m training export`)"
        )
    if metadata["mimo.format"] != FORMAT:
        raise ContractError(
            f"{source}: mimo.format is {metadata['mimo.format']!r}, this reader knows {FORMAT!r}"
        )
    try:
        m = int(metadata["mimo.ensemble_size"])
        temperature = float(metadata["mimo.temperature"])
    except ValueError as exc:
        raise ContractError(f"{source}: bad ensemble size or temperature ({exc})") from None
    if m < 1:
        raise ContractError(f"{source}: mimo.ensemble_size must be >= 1, got {m}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ContractError(f"{source}: mimo.temperature must be > 0, got {temperature}")

    shape = _json(metadata, "mimo.input_shape", source)
    if not (isinstance(shape, list) and len(shape) == 3 and all(map(_positive_int, shape))):
        raise ContractError(f"{source}: mimo.input_shape must be [C, H, W], got {shape!r}")
    labels = _json(metadata, "mimo.labels", source)
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise ContractError(f"{source}: mimo.labels must be a non-empty list of strings")
    preprocess = _json(metadata, "mimo.preprocess", source)
    if not isinstance(preprocess, dict):
        raise ContractError(f"{source}: mimo.preprocess must be a JSON object")
    color = preprocess.get("color")
    if color not in COLORS or (color == "L") != (shape[0] == 1):
        raise ContractError(
            f"{source}: mimo.preprocess color {color!r} does not fit {shape[0]} input channels"
        )
    if preprocess.get("resize") != [shape[2], shape[1]]:
        raise ContractError(
            f"{source}: mimo.preprocess resize {preprocess.get('resize')} must be the input's "
            f"[width, height] = {[shape[2], shape[1]]}"
        )
    if preprocess.get("resample", "bilinear") not in RESAMPLE:
        raise ContractError(f"{source}: mimo.preprocess resample must be one of {RESAMPLE}")
    thresholds = _json(metadata, "mimo.thresholds", source)
    if not (
        isinstance(thresholds, dict)
        and "mutual_information" in thresholds
        and all(isinstance(v, int | float) for v in thresholds.values())
    ):
        raise ContractError(
            f"{source}: mimo.thresholds must map measure names to numbers, "
            "including mutual_information"
        )
    training = _json(metadata, "mimo.training", source)
    evaluation = _json(metadata, "mimo.evaluation", source)
    precision = metadata.get(PRECISION_KEY, "fp32")
    if not PRECISION_PATTERN.fullmatch(precision):
        raise ContractError(
            f"{source}: {PRECISION_KEY} must be a short name such as fp32, int8 or fp16, "
            f"got {precision[:40]!r}"
        )
    quantization = _json(metadata, QUANTIZATION_KEY, source) if QUANTIZATION_KEY in metadata else {}
    measure = metadata.get(UNCERTAIN_MEASURE_KEY, DEFAULT_UNCERTAIN_MEASURE)
    if measure not in FLAG_MEASURES or measure not in thresholds:
        raise ContractError(
            f"{source}: {UNCERTAIN_MEASURE_KEY} must be one of {', '.join(FLAG_MEASURES)} with "
            f"a threshold in mimo.thresholds, got {measure[:40]!r}"
        )

    k = len(labels)
    _check_tensor(inputs, INPUT_NAME, [m, *shape], "[batch, M, C, H, W]", source)
    _check_tensor(outputs, OUTPUT_NAME, [m, k], "[batch, M, K]", source)
    return ModelContract(
        ensemble_size=m,
        input_shape=(shape[0], shape[1], shape[2]),
        labels=tuple(labels),
        preprocess=preprocess,
        temperature=temperature,
        thresholds={str(key): float(v) for key, v in thresholds.items()},
        training=training if isinstance(training, dict) else {},
        evaluation=evaluation if isinstance(evaluation, dict) else {},
        precision=precision,
        quantization=quantization if isinstance(quantization, dict) else {},
        uncertain_measure=measure,
    )


def _check_tensor(
    tensors: Sequence[TensorInfo], name: str, fixed: list[int], layout: str, source: str
) -> None:
    """One float32 tensor called `name`, dynamic first axis, the other axes `fixed`."""
    found = [t for t in tensors if t.name == name]
    if len(tensors) != 1 or not found:
        names = [t.name for t in tensors]
        raise ContractError(f"{source}: expected one tensor {name!r} {layout}, found {names}")
    tensor = found[0]
    if tensor.type != "tensor(float)":
        raise ContractError(f"{source}: {name!r} must be float32, is {tensor.type}")
    dims = list(tensor.shape)
    if len(dims) != len(fixed) + 1 or _positive_int(dims[0]) or dims[1:] != fixed:
        raise ContractError(
            f"{source}: {name!r} has shape {dims}, the metadata says {layout} = "
            f"[batch, {', '.join(map(str, fixed))}] with a dynamic batch axis"
        )


class SessionLike(Protocol):
    """The part of onnxruntime.InferenceSession the reader needs."""

    def get_modelmeta(self) -> Any: ...
    def get_inputs(self) -> Sequence[TensorInfo]: ...
    def get_outputs(self) -> Sequence[TensorInfo]: ...


def contract_of(session: SessionLike, source: str) -> ModelContract:
    """The contract of a loaded ONNX Runtime session (raises ContractError naming `source`)."""
    return parse_contract(
        session.get_modelmeta().custom_metadata_map,
        session.get_inputs(),
        session.get_outputs(),
        source,
    )
