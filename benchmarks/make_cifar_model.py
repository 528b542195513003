"""A CIFAR-size MIMO model for the serving benchmarks, where the model and not the server is
the cost: WRN-16-4 (or ResNet-18), M=3, 3x32x32, 10 classes, untrained weights (speed only),
exported with training's exporter and the contract's metadata, ready for the service.

    python -m benchmarks.make_cifar_model --out /tmp/cifar-models      # -> cifar/1/model.onnx
    python -m benchmarks.bench_serving --model /tmp/cifar-models/cifar/1/model.onnx \\
        --image /tmp/cifar-models/cat.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from benchmarks.bench_compute import NETWORKS, make_network
from service.contract import ModelContract
from training.conversion import to_onnx_bytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model repository to write")
    parser.add_argument("--network", choices=["wrn-16-4", "resnet18"], default="wrn-16-4")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--name", default="cifar", help="the model's name in the repository")
    args = parser.parse_args(argv)
    spec = NETWORKS[args.network]
    model = make_network(spec, args.ensemble_size, seed=0)
    graph = onnx.load_from_string(to_onnx_bytes(model))
    c, h, w = spec.input_shape
    contract = ModelContract(
        ensemble_size=args.ensemble_size,
        input_shape=(c, h, w),
        labels=tuple(f"class{i}" for i in range(spec.num_classes)),
        preprocess={"color": "RGB", "resize": [w, h], "resample": "bilinear", "invert": False},
        temperature=1.0,
        thresholds={"mutual_information": 0.1, "predictive_entropy": 1.0},
        training={"arch": args.network, "untrained": True, "purpose": "serving benchmark"},
        evaluation={},
    )
    for key, value in contract.metadata().items():
        graph.metadata_props.add(key=key, value=value)
    target = args.out / args.name / "1" / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, target)
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(args.out / "cat.png")
    print(target)


if __name__ == "__main__":
    main()
