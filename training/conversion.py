"""The torch -> ONNX conversion of a MIMO network: the bare graph that export and evaluate share.

Contract metadata (training/metadata.py), parity checks (training/export_checks.py) and
writing the file (training/export.py) are the export's business.
"""

from __future__ import annotations

import io
import warnings

import torch

from training.models import MimoNetwork

OPSET = 17


def to_onnx_bytes(model: MimoNetwork) -> bytes:
    """The bare graph: input `images` [batch, M, C, H, W], output `logits` [batch, M, K]."""
    model = model.eval()
    c, h, w = model.input_shape
    dummy = torch.rand(2, model.ensemble_size, c, h, w)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()
