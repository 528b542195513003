"""Lower precisions of an exported graph: int8 (static quantization) and fp16.

Both keep the model contract: the input `images` stays float32 [batch, M, C, H, W] and the
output `logits` float32 [batch, M, K]; only what happens in between changes.

- int8: ONNX Runtime's static quantization (`onnxruntime.quantization.quantize_static`),
  calibrated on images of the checkpoint's own training split (never the validation split the
  thresholds come from, never test data), tiled into the M slots exactly as serving does (one
  image in all M slots), plus the same images shuffled across the slots (M different images:
  how the network was trained, and how the contract allows it to be fed), plus, for a model
  trained with the outlier loss, its share of the synthetic outliers it was trained on (tiled,
  as training fed them). Without them the activations of noise-like inputs fall outside the
  calibrated ranges, are clipped, and the heads stop disagreeing on exactly the inputs they were
  trained to flag (MNIST: uniform noise flagged `uncertain` 100% -> 11%). Weights are int8,
  activations uint8; graph input and output keep float32 (a QuantizeLinear after the input, a
  DequantizeLinear before the output).
- fp16: weights and compute in float16, float32 at the boundaries (a Cast after the input and
  before the output). ONNX Runtime's CPU provider has no float16 Conv or Gemm on x86: it inserts
  Casts around them and folds the weights back to float32 at load, so on a CPU an fp16 file
  computes in float32 (with weights rounded to float16) at fp32 speed; it is for GPUs.

bf16 is not offered: ONNX Runtime's CPU provider has no bfloat16 kernel for Conv, Gemm, MatMul
or Relu (a bf16 graph does not load), see docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

PRECISIONS = ("fp32", "int8", "fp16")
QUANT_FORMATS = ("qdq", "qoperator")


@dataclass(frozen=True)
class Int8Settings:
    """How a graph is quantized; the defaults are the fastest accurate choice measured on a
    2-core AMD EPYC (Zen 3, AVX2 without VNNI), see docs/benchmarks.md."""

    # qdq (QuantizeLinear/DequantizeLinear pairs) | qoperator (QLinearConv, ...): ONNX Runtime
    # fuses QDQ into the same integer kernels on the CPU (no measurable difference), and QDQ is
    # what the GPU providers (TensorRT) take.
    quant_format: str = "qdq"
    per_channel: bool = True  # one scale per output channel of each weight: closest to fp32
    # 7-bit weights: AVX2 without VNNI multiplies u8 x s8 pairs into saturating int16
    # (vpmaddubsw); one bit less keeps the sums exact. No measurable cost in speed.
    reduce_range: bool = True
    calibration_images: int = 512  # training images (each used tiled and in mixed slots)
    mixed_slots: bool = True  # also calibrate on M different images in the slots
    # synthetic outliers of the training families, tiled; None: the training's outlier share
    # of `calibration_images` if the model was trained with the outlier loss, else none
    outlier_images: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.quant_format not in QUANT_FORMATS:
            raise ValueError(
                f"quantization format must be one of {QUANT_FORMATS}, got {self.quant_format!r}"
            )
        if self.calibration_images < 1:
            raise ValueError(f"calibration images must be positive, got {self.calibration_images}")
        if self.outlier_images is not None and self.outlier_images < 0:
            raise ValueError(f"outlier images must be 0 or more, got {self.outlier_images}")

    def describe(self) -> dict[str, Any]:
        """What the model's metadata says of its quantization."""
        return {
            **asdict(self),
            "method": "static",
            "calibration": "minmax",
            "activations": "uint8",
            "weights": "int8",
        }


def calibration_inputs(
    images: np.ndarray,
    ensemble_size: int,
    count: int,
    mixed: bool,
    seed: int = 0,
    outliers: np.ndarray | None = None,
) -> np.ndarray:
    """`count` of the uint8 [N, C, H, W] images as float32 [n, M, C, H, W] model inputs.

    The images are drawn at random (fixed by `seed`) and tiled into all M slots; with `mixed`,
    the same images follow, each slot m holding image i + m (mod n): M different images; then
    the float32 [n, C, H, W] `outliers` in [0, 1], tiled.
    """
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(images), size=min(count, len(images)), replace=False)
    x = images[np.sort(picked)].astype(np.float32) / 255.0
    batches = [np.repeat(x[:, None], ensemble_size, axis=1)]
    if mixed and ensemble_size > 1:
        index = np.arange(len(x))
        batches.append(np.stack([x[np.roll(index, -m)] for m in range(ensemble_size)], axis=1))
    if outliers is not None and len(outliers):
        batches.append(np.repeat(outliers.astype(np.float32)[:, None], ensemble_size, axis=1))
    return np.concatenate(batches)


def training_outliers(count: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """`count` synthetic outliers of the families the outlier loss trains on, float32."""
    from training.ood import TRAINING_FAMILIES, make_ood

    share = [count // len(TRAINING_FAMILIES)] * len(TRAINING_FAMILIES)
    share[0] += count - sum(share)
    parts = [
        make_ood(family, n, shape, seed=seed + i)
        for i, (family, n) in enumerate(zip(TRAINING_FAMILIES, share, strict=True))
    ]
    return np.concatenate(parts).astype(np.float32)


def _reader(inputs: np.ndarray, batch_size: int = 64) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = (
                inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    return Reader()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantization tools print protobufs and advice on stdout and the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_int8(graph: bytes, inputs: np.ndarray, settings: Int8Settings) -> bytes:
    """The float32 graph statically quantized to int8, calibrated on `inputs` [n, M, C, H, W].

    First ONNX Runtime's pre-processing (shape inference and graph optimisation, which the
    quantizer needs to place its nodes well), then min-max calibration and quantization.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory(prefix="mimo-int8-") as tmp, _quiet():
        source, prepared, quantized = (Path(tmp) / n for n in ("fp32", "pre", "int8"))
        source.write_bytes(graph)
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            _reader(inputs),
            quant_format=QuantFormat.QDQ
            if settings.quant_format == "qdq"
            else QuantFormat.QOperator,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return quantized.read_bytes()


def to_fp16(graph: bytes) -> bytes:
    """Weights and compute in float16; input and output stay float32 (Casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(graph), keep_io_types=True)
    _sort_nodes(model.graph)  # the converter appends its input Casts after their consumers
    return model.SerializeToString()


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder the nodes so that each comes after the producers of its inputs (stable)."""
    known = {t.name for t in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [all(i in known for i in n.input) for n in pending]
        if not any(ready):
            raise ValueError(f"the graph has a cycle or a missing input near {pending[0].name!r}")
        for node, is_ready in zip(pending, ready, strict=True):
            if is_ready:
                known.update(node.output)
                ordered.append(node)
        pending = [n for n, is_ready in zip(pending, ready, strict=True) if not is_ready]
    del graph.node[:]
    graph.node.extend(ordered)
