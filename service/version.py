"""The service's version: the installed distribution's, as pyproject.toml declares it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("mimo-serve")
except PackageNotFoundError:  # run from a checkout that was never installed (a GPU machine)
    VERSION = "0+unknown"
