#!/usr/bin/env bash
# Here, before a session's GPU calls: the payload in .gpu/part1 ... partN (run.sh's input).
# ~5 min: downloads the pinned wheels (~250 MB, benchmarks/gpu/requirements.txt) and compresses
# them with hey (Debian package) and 100 real MNIST test digits (from $MNIST_DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
mnist=${MNIST_DIR:-../shared/data/mnist}
extra=$(mktemp -d)
trap 'rm -rf "$extra"' EXIT
cp "$(command -v hey)" "$extra/hey"
"$python" - "$mnist" "$extra/digits.npz" <<'PY'
import sys
from pathlib import Path

import numpy as np

from training.data import load_dataset

test = load_dataset("mnist", "test", Path(sys.argv[1]))
np.savez(sys.argv[2], images=test.images[:100, 0], labels=test.labels[:100])
PY
"$python" -m benchmarks.gpu.payload pack --out .gpu --extra "$extra/hey" "$extra/digits.npz"
