#!/usr/bin/env bash
# On the lent GPU machine, one call per part of the payload, back to back (the machine keeps
# /tmp only while it stays warm; docs/benchmarks.md, "On a GPU"):
#   bash benchmarks/gpu/run.sh receive          # each call carrying .gpu/part1 ... part(N-1)
#   bash benchmarks/gpu/run.sh bench [ARGS]     # the call carrying .gpu/partN: install, measure
# ARGS go to bench_gpu.py; the results land in $OUT (the device tool's folder) or ./gpu-results.
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=${MIMO_GPU_STAGE:-/tmp/mimo-gpu}
shopt -s nullglob
parts=(.gpu/part*)
what=${1:?say receive or bench}
shift
case "$what" in
  receive)
    python3 benchmarks/gpu/payload.py receive "${parts[@]}" --stage "$stage"
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader || true
    ;;
  bench)
    python3 benchmarks/gpu/payload.py install "${parts[@]}" --stage "$stage" --target "$stage/site"
    export PYTHONPATH="$stage/site" PATH="$stage/files:$PATH" PYTHONUNBUFFERED=1
    exec python3 benchmarks/gpu/bench_gpu.py --out "${OUT:-gpu-results}" \
      --digits "$stage/files/digits.npz" "$@"
    ;;
  *) echo "run.sh: say receive or bench, not $what" >&2; exit 2 ;;
esac
