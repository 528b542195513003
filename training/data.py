"""Image datasets for the MIMO training toolkit, read from their standard on-disk formats.

Every loader returns the same thing: uint8 images [N, C, H, W] and int64 labels [N], so the
trainer never needs to know where the pixels came from. Nothing is downloaded and nothing is
cached: a user points --data-dir at the files they already fetched from the usual mirrors; the
readers of those files are in training/dataset_files.py.

Torch-free on purpose (numpy + PIL; scikit-learn only for the embedded `digits` set), so the
data can be inspected and tested without the training stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.dataset_files import read_cifar, read_digits, read_imagefolder, read_mnist

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "test")
COLORS = ("L", "RGB")
DEFAULT_IMAGE_SIZE = 32


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
        arrays = read_imagefolder(data_dir, split, image_size or DEFAULT_IMAGE_SIZE, color or "RGB")
        return ImageDataset(*arrays, name)
    if name == "digits":
        arrays = read_digits(split)
    elif name == "mnist":
        arrays = read_mnist(data_dir, split)
    else:
        arrays = read_cifar(data_dir, split, name)
    ds = ImageDataset(*arrays, name)
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
