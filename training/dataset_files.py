"""Readers of the datasets' standard files on disk: MNIST's IDX files, the CIFAR python
pickles, an ImageFolder tree, and scikit-learn's embedded digits.

Each reader returns uint8 images [N, C, H, W], int64 labels [N] and the K class names in label
order; `training.data.load_dataset` wraps them into an ImageDataset. A file that is missing or
malformed raises DatasetError with its path, so a user sees which file to fix.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# uint8 images [N, C, H, W], int64 labels [N], class names in label order
Arrays = tuple[np.ndarray, np.ndarray, list[str]]

_DIGIT_CLASSES = [str(d) for d in range(10)]

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_LAYOUT = (
    "expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] "
    "(the standard IDX files, gzipped or not)"
)
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


@dataclass(frozen=True)
class _CifarFormat:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: str
    names_key: str

    @property
    def layout(self) -> str:
        files = ", ".join([*self.train_files, self.test_file, self.meta_file])
        return (
            f"expected {self.folder}/ (or that folder itself) holding the standard python "
            f"pickles {files}"
        )


_CIFAR = {
    "cifar10": _CifarFormat(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        labels_key="labels",
        names_key="label_names",
    ),
    "cifar100": _CifarFormat(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        labels_key="fine_labels",
        names_key="fine_label_names",
    ),
}

_IMAGEFOLDER_LAYOUT = (
    "expected <data_dir>/train/<class_name>/<image> and <data_dir>/test/<class_name>/<image> "
    f"with images ending in {', '.join(IMAGE_EXTENSIONS)}"
)


class DatasetError(ValueError):
    """The files for a dataset are missing or malformed; the message names the path."""


def read_digits(split: str) -> Arrays:
    # Imported here so the rest of the module works without scikit-learn installed.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.data * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return images[idx], labels[idx], list(_DIGIT_CLASSES)


def read_mnist(data_dir: str | Path | None, split: str) -> Arrays:
    root = _require_dir(data_dir, "MNIST", _MNIST_LAYOUT)
    images_name, labels_name = _MNIST_FILES[split]
    images_path, images = _read_idx(root, images_name, _IDX_IMAGES_MAGIC)
    labels_path, labels = _read_idx(root, labels_name, _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(
            f"MNIST count mismatch: {images_path} has {len(images)} images but "
            f"{labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(_DIGIT_CLASSES):
        raise DatasetError(f"{labels_path}: label {labels.max()} is not a digit 0..9")
    return images[:, None], labels.astype(np.int64), list(_DIGIT_CLASSES)


def _read_idx(root: Path, stem: str, magic: int) -> tuple[Path, np.ndarray]:
    """Parse an IDX file of unsigned bytes: big-endian magic, one uint32 per dim, then data."""
    path = next((p for p in (root / stem, root / f"{stem}.gz") if p.is_file()), None)
    if path is None:
        raise DatasetError(f"MNIST not found in {root} (missing {stem}[.gz]): {_MNIST_LAYOUT}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e

    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: bad IDX magic 0x{found:08x}, expected 0x{magic:08x}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {what}: {len(data)} bytes, expected {expected} for dims {dims}"
        )
    # Copy so the arrays are writable (frombuffer over bytes is read-only).
    return path, np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def read_cifar(data_dir: str | Path | None, split: str, name: str) -> Arrays:
    fmt = _CIFAR[name]
    root = _require_dir(data_dir, fmt.title, fmt.layout)
    folder = next((d for d in (root / fmt.folder, root) if (d / fmt.meta_file).is_file()), None)
    if folder is None:
        raise DatasetError(f"{fmt.title} not found in {root}: {fmt.layout}")
    meta_path = folder / fmt.meta_file
    classes = [_as_str(n) for n in _get(_unpickle(meta_path), fmt.names_key, meta_path)]

    images, labels = [], []
    for file in fmt.train_files if split == "train" else (fmt.test_file,):
        path = folder / file
        if not path.is_file():
            raise DatasetError(f"{fmt.title} not found in {folder} (missing {file}): {fmt.layout}")
        batch = _unpickle(path)
        data = np.asarray(_get(batch, "data", path))
        batch_labels = np.asarray(_get(batch, fmt.labels_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(
                f"{path}: data must be uint8 [N, 3072], got {data.dtype} {data.shape}"
            )
        if batch_labels.shape != (len(data),):
            raise DatasetError(
                f"{path}: {len(data)} images but labels of shape {batch_labels.shape}"
            )
        if batch_labels.size and not 0 <= batch_labels.min() <= batch_labels.max() < len(classes):
            raise DatasetError(f"{path}: labels outside 0..{len(classes) - 1}")
        # Each row is the red plane, then green, then blue, each 32x32 row-major.
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels), classes


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file must not run code."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # how protocol 2 spells bytes
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            # encoding="bytes": the official files were pickled by Python 2.
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict, key: str, path: Path) -> Any:
    # The official pickles have bytes keys; accept str keys from Python 3 re-exports too.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DatasetError(f"{path}: missing key {key!r}")


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_imagefolder(
    data_dir: str | Path | None, split: str, image_size: int, color: str
) -> Arrays:
    root = _require_dir(data_dir, "ImageFolder", _IMAGEFOLDER_LAYOUT)
    # Classes come from train even when loading test, so label k means the same in both.
    train_classes = _class_dirs(root / "train")
    split_classes = train_classes if split == "train" else _class_dirs(root / split)
    unknown = sorted(set(split_classes) - set(train_classes))
    if unknown:
        raise DatasetError(
            f"{root / split} has classes not in {root / 'train'}: {', '.join(unknown)}"
        )
    classes = sorted(train_classes)
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        if cls not in split_classes:
            continue
        found = sorted(
            p
            for p in split_classes[cls].iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(f"ImageFolder found no images in {root / split}: {_IMAGEFOLDER_LAYOUT}")

    channels = 1 if color == "L" else 3
    images = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        images[i] = _read_image(path, image_size, color).reshape(image_size, image_size, channels)
    return (
        np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        np.asarray(labels, dtype=np.int64),
        classes,
    )


def _class_dirs(split_dir: Path) -> dict[str, Path]:
    if not split_dir.is_dir():
        raise DatasetError(f"ImageFolder split not found: {split_dir}: {_IMAGEFOLDER_LAYOUT}")
    return {d.name: d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")}


def _read_image(path: Path, image_size: int, color: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert(color).resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from e


def _require_dir(data_dir: str | Path | None, title: str, layout: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"{title} needs a data directory (--data-dir): {layout}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{title} not found in {root} (no such directory): {layout}")
    return root
