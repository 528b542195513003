"""Fixtures of the service tests (the digits model repository is tests/conftest.py's)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def repository_copy(model_repository: Path, tmp_path: Path) -> Path:
    """A private copy of the repository, for tests that add, break or remove versions."""
    repo = tmp_path / "models"
    shutil.copytree(model_repository, repo)
    return repo


@pytest.fixture(scope="session")
def digit_pngs() -> list[tuple[bytes, int]]:
    """The first 20 test-split sklearn digits as real 8x8 grayscale PNG files, with labels."""
    from training.data import load_dataset

    test = load_dataset("digits", "test")
    out = []
    for pixels, label in zip(test.images[:20], test.labels[:20], strict=True):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels[0]), "L").save(buffer, "PNG")
        out.append((buffer.getvalue(), int(label)))
    return out
