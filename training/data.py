"""Image datasets for the MIMO training toolkit, read from their standard on-disk formats.

Every loader returns the same thing: uint8 images [N, C, H, W] and int64 labels [N], so the
trainer never needs to know where the pixels came from. Nothing is downloaded and nothing is
cached: a user points --data-dir at the files they already fetched from the usual mirrors.

Torch-free on purpose (numpy + PIL; scikit-learn only for the embedded `digits` set), so the
data can be inspected and tested without the training stack.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "test")
COLORS = ("L", "RGB")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEFAULT_IMAGE_SIZE = 32

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
    name: str
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
        name="cifar10",
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        labels_key="labels",
        names_key="label_names",
    ),
    "cifar100": _CifarFormat(
        name="cifar100",
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


# eq=False: the generated __eq__ would compare arrays elementwise and fail on `if a == b`.
@dataclass(frozen=True, eq=False)
class ImageDataset:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]
    classes: list[str]  # K class names, in label order
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must be int64 [{len(self.images)}], "
                f"got {self.labels.dtype} {self.labels.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return len(self.labels)


def load_dataset(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    color: str | None = None,
) -> ImageDataset:
    """Load one split of a dataset as uint8 [N, C, H, W] images and int64 labels.

    `image_size` and `color` choose the output format of `imagefolder`; the other datasets
    have a fixed format and only accept values that agree with it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if color is not None and color not in COLORS:
        raise ValueError(f"color must be one of {', '.join(COLORS)}, got {color!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")

    if name == "imagefolder":
        root = _require_dir(data_dir, "ImageFolder", _IMAGEFOLDER_LAYOUT)
        return _load_imagefolder(root, split, image_size or DEFAULT_IMAGE_SIZE, color or "RGB")
    if name == "digits":
        ds = _load_digits(split)
    elif name == "mnist":
        ds = _load_mnist(_require_dir(data_dir, "MNIST", _MNIST_LAYOUT), split)
    else:
        fmt = _CIFAR[name]
        ds = _load_cifar(_require_dir(data_dir, fmt.title, fmt.layout), split, fmt)
    _check_fixed_format(ds, image_size, color)
    return ds


def split_validation(ds: ImageDataset, n_val: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Hold out `n_val` examples as (train, val), stratified by label and fixed by `seed`.

    Shuffle, stable-sort by label, then take `n_val` evenly spaced positions: every class
    gets its proportional share (to within one example) and the pick inside a class is random.
    Both parts keep the original order of `ds`.
    """
    n = len(ds)
    if not 0 <= n_val < n:
        raise ValueError(f"n_val must be in [0, {n}) for a dataset of {n} examples, got {n_val}")
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(ds.labels[order], kind="stable")]
    positions = np.floor((np.arange(n_val) + 0.5) * (n / max(n_val, 1))).astype(np.int64)
    is_val = np.zeros(n, dtype=bool)
    is_val[order[positions]] = True
    return _subset(ds, np.flatnonzero(~is_val)), _subset(ds, np.flatnonzero(is_val))


def preprocess_spec(name: str, shape: tuple[int, int, int], color: str | None = None) -> dict:
    """How the service turns an uploaded image into a model input, as JSON-able data.

    `shape` is the dataset's (C, H, W); `resize` is [width, height] (PIL's order). Images are
    never inverted: models are trained on the datasets' own polarity (MNIST is light-on-dark).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    channels, height, width = shape
    native = {1: "L", 3: "RGB"}.get(channels)
    if native is None:
        raise ValueError(f"expected 1 or 3 channels, got shape {shape}")
    if color is not None and color != native:
        raise ValueError(f"color {color!r} disagrees with {channels}-channel shape {shape}")
    return {"color": native, "resize": [width, height], "resample": "bilinear", "invert": False}


def _subset(ds: ImageDataset, indices: np.ndarray) -> ImageDataset:
    return dataclasses.replace(ds, images=ds.images[indices], labels=ds.labels[indices])


def _require_dir(data_dir: str | Path | None, title: str, layout: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"{title} needs a data directory (--data-dir): {layout}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{title} not found in {root} (no such directory): {layout}")
    return root


def _check_fixed_format(ds: ImageDataset, image_size: int | None, color: str | None) -> None:
    # Silently ignoring a requested size or color would train on something the user didn't ask for.
    channels, height, width = ds.shape
    if image_size is not None and image_size != height:
        raise ValueError(
            f"{ds.name} images are {height}x{width}; image_size={image_size} only applies "
            f"to imagefolder"
        )
    if color is not None and color != ("L" if channels == 1 else "RGB"):
        raise ValueError(f"{ds.name} images have {channels} channel(s); color={color!r} disagrees")


def _load_digits(split: str) -> ImageDataset:
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
    return ImageDataset(images[idx], labels[idx], list(_DIGIT_CLASSES), "digits")


def _load_mnist(root: Path, split: str) -> ImageDataset:
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
    return ImageDataset(images[:, None], labels.astype(np.int64), list(_DIGIT_CLASSES), "mnist")


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


def _load_cifar(root: Path, split: str, fmt: _CifarFormat) -> ImageDataset:
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
    return ImageDataset(np.concatenate(images), np.concatenate(labels), classes, fmt.name)


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


def _load_imagefolder(root: Path, split: str, image_size: int, color: str) -> ImageDataset:
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
    return ImageDataset(
        np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        np.asarray(labels, dtype=np.int64),
        classes,
        "imagefolder",
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
