#!/usr/bin/env bash
# Here, before a session's GPU calls: the grid's payload in .gpu-grid/part1 ... partN (run.sh
# grid's input): the pinned wheels of benchmarks/gpu/grid-requirements.txt (~100 MB before xz)
# and MNIST's four files (from $MNIST_DIR, 11 MB). ~2 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
mnist=${MNIST_DIR:-../shared/data/mnist}
"$python" -m benchmarks.gpu.payload pack --out .gpu-grid \
  --requirements benchmarks/gpu/grid-requirements.txt \
  --extra "$mnist"/train-images-idx3-ubyte.gz "$mnist"/train-labels-idx1-ubyte.gz \
  "$mnist"/t10k-images-idx3-ubyte.gz "$mnist"/t10k-labels-idx1-ubyte.gz
