#!/usr/bin/env bash
# On the lent GPU machine, one call per part of the payload, back to back (the machine keeps
# /tmp only while it stays warm; docs/benchmarks.md, "On a GPU"):
#   bash benchmarks/gpu/run.sh receive          # each call carrying .gpu/part1 ... part(N-1)
#   bash benchmarks/gpu/run.sh bench [ARGS]     # the call carrying .gpu/partN: install, measure
# ARGS go to bench_gpu.py; the results land in $OUT (the device tool's folder) or ./gpu-results.
# The capacity grid (benchmarks/gpu/grid.py) the same way, from .gpu-grid/ (prepare_grid.sh):
#   bash benchmarks/gpu/run.sh grid-receive     # each call carrying .gpu-grid/part1 ... (N-1)
#   bash benchmarks/gpu/run.sh grid [ARGS]      # the call carrying .gpu-grid/partN
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=${MIMO_GPU_STAGE:-/tmp/mimo-gpu}
shopt -s nullglob
what=${1:?say receive, bench, grid-receive or grid}
shift
case "$what" in
  grid*) stage=${MIMO_GPU_STAGE:-/tmp/mimo-grid}; parts=(.gpu-grid/part*) ;;
  *) parts=(.gpu/part*) ;;
esac
case "$what" in
  receive)
    python3 -m benchmarks.gpu.payload receive "${parts[@]}" --stage "$stage"
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader || true
    ;;
  bench)
    python3 -m benchmarks.gpu.payload install "${parts[@]}" --stage "$stage" --target "$stage/site"
    export PYTHONPATH="$stage/site" PATH="$stage/files:$PATH" PYTHONUNBUFFERED=1
    exec python3 -m benchmarks.gpu.bench_gpu --out "${OUT:-gpu-results}" \
      --digits "$stage/files/digits.npz" "$@"
    ;;
  grid-receive)
    python3 -m benchmarks.gpu.payload receive "${parts[@]}" --stage "$stage"
    ;;
  grid)
    python3 -m benchmarks.gpu.payload install "${parts[@]}" --stage "$stage" --target "$stage/site"
    export PYTHONPATH="$stage/site" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
    exec python3 -m benchmarks.gpu.grid --data-dir "$stage/files" --out "${OUT:-grid-results}" "$@"
    ;;
  *) echo "run.sh: say receive, bench, grid-receive or grid, not $what" >&2; exit 2 ;;
esac
