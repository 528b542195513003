"""Benchmarks of the service, run from the repository root as `python -m benchmarks.NAME`.

Never installed: pyproject.toml's package discovery takes `service*` and `training*` only, so
the wheel holds neither this package nor its baselines.
"""
