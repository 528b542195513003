"""The GPU path on a lent machine: `bash benchmarks/gpu/run.sh` runs these modules there as
`python3 -m benchmarks.gpu.NAME` from the repository root, the project not installed.

Nothing is imported here: `payload` runs before the wheels the service needs are installed.
"""
