"""Dataset loading, on real MNIST where present and on small files the tests write themselves."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import struct
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import DATASETS, ImageDataset, load_dataset, preprocess_spec, split_validation
from training.dataset_files import DatasetError

ROOT = Path(__file__).resolve().parents[2]
# As tests/test_default_model.py: $MNIST_DIR (the Makefile sets it), else the shared data folder.
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_MISSING = f"no MNIST files at {MNIST_DIR} (set MNIST_DIR)"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=MNIST_MISSING)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """The IDX format: 0x0000 0x08 (ubyte) ndim, one big-endian uint32 per dim, then the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_mnist(root: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)


@pytest.fixture(scope="module")
def digits_train() -> ImageDataset:
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def mnist_test() -> ImageDataset:
    if not MNIST_DIR.is_dir():
        pytest.skip(MNIST_MISSING)
    return load_dataset("mnist", "test", MNIST_DIR)


# --- digits -------------------------------------------------------------------------------


def test_digits_format(digits_train: ImageDataset) -> None:
    test = load_dataset("digits", "test", data_dir="/ignored")
    assert len(digits_train) + len(test) == 1797
    assert len(test) == 360
    for ds in (digits_train, test):
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
        assert ds.images.shape[1:] == ds.shape == (1, 8, 8)
        assert ds.classes == [str(d) for d in range(10)]
        assert set(np.unique(ds.labels)) == set(range(10))
    assert digits_train.images.min() == 0 and digits_train.images.max() == 255
    # Scaled from 0..16, so only the 17 values round(k * 255 / 16) can occur.
    allowed = {round(k * 255 / 16) for k in range(17)}
    assert set(np.unique(digits_train.images).tolist()) <= allowed


def test_digits_split_is_deterministic_and_stratified(digits_train: ImageDataset) -> None:
    again = load_dataset("digits", "train")
    np.testing.assert_array_equal(again.images, digits_train.images)
    np.testing.assert_array_equal(again.labels, digits_train.labels)
    test_counts = np.bincount(load_dataset("digits", "test").labels)
    assert test_counts.min() >= 35 and test_counts.max() <= 37


# --- MNIST --------------------------------------------------------------------------------


@needs_mnist
def test_real_mnist_train() -> None:
    train = load_dataset("mnist", "train", str(MNIST_DIR))
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    # The README's md5 of the uncompressed file covers the 16-byte header too.
    header = struct.pack(">4I", 0x803, 60000, 28, 28)
    digest = hashlib.md5(header + train.images.tobytes()).hexdigest()
    assert digest == "6bbc9ace898e44ae57da46a324031adb"
    assert train.images.flags.writeable


def test_real_mnist_test(mnist_test: ImageDataset) -> None:
    assert mnist_test.images.shape == (10000, 1, 28, 28)
    assert mnist_test.labels.dtype == np.int64
    assert np.bincount(mnist_test.labels).tolist() == MNIST_TEST_COUNTS
    assert mnist_test.classes == [str(d) for d in range(10)]
    assert mnist_test.name == "mnist"


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_subset_plain_and_gzipped(mnist_test: ImageDataset, tmp_path: Path, gz: bool) -> None:
    images, labels = mnist_test.images[:50, 0], mnist_test.labels[:50]
    write_mnist(tmp_path, "test", images, labels, gz)
    ds = load_dataset("mnist", "test", tmp_path)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def synthetic_mnist(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


def test_mnist_reads_only_the_requested_split(tmp_path: Path) -> None:
    images, labels = synthetic_mnist()
    write_mnist(tmp_path, "train", images, labels, gz=False)
    ds = load_dataset("mnist", "train", tmp_path)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", "test", tmp_path)


def test_mnist_bad_magic_names_the_file(tmp_path: Path) -> None:
    images, labels = synthetic_mnist()
    write_mnist(tmp_path, "train", images, labels, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, labels.reshape(-1, 1, 1))  # a 3-dim file where labels belong
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.*magic"):
        load_dataset("mnist", "train", tmp_path)


def test_mnist_truncated_names_the_file(tmp_path: Path) -> None:
    images, labels = synthetic_mnist()
    write_mnist(tmp_path, "train", images, labels, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", "train", tmp_path)
    path.write_bytes(path.read_bytes()[:10])  # not even a whole header
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", "train", tmp_path)


def test_mnist_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    images, labels = synthetic_mnist()
    write_mnist(tmp_path, "train", images, labels, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError, match=re.escape("train-images-idx3-ubyte.gz")):
        load_dataset("mnist", "train", tmp_path)


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    images, labels = synthetic_mnist()
    write_mnist(tmp_path, "train", images, labels[:-1], gz=False)
    with pytest.raises(DatasetError, match=r"12 images.*11 labels"):
        load_dataset("mnist", "train", tmp_path)


# --- CIFAR --------------------------------------------------------------------------------

PIXEL = (7, 3, 5, (10, 20, 30))  # image index, y, x, RGB
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"] + [f"c{i}" for i in range(5, 10)]


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """[n, 3072] rows: red plane, green plane, blue plane, each 32x32 row-major."""
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    index, y, x, rgb = PIXEL
    if index < n:
        for c, value in enumerate(rgb):
            rows[index, c * 1024 + y * 32 + x] = value
    return rows


def dump(path: Path, obj: object) -> None:
    # Protocol 2 with bytes keys, as Python 2's cPickle wrote the official files.
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES]})
    batches = {}
    # Two full-ish batches, three small ones (the loader insists on all five), a test batch.
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = 20 if i < 2 or name == "test_batch" else 4
        rows = cifar_rows(n, seed=i)
        dump(folder / name, {
            b"batch_label": name.encode(),
            b"labels": [(i + k) % 10 for k in range(n)],
            b"data": rows,
            b"filenames": [f"{name}_{k}.png".encode() for k in range(n)],
        })  # fmt: skip
        batches[name] = rows
    return batches


def test_cifar10_layout_and_pixels(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    train = load_dataset("cifar10", "train", tmp_path)
    assert train.images.shape == (20 + 20 + 3 * 4, 3, 32, 32)
    assert train.classes == CIFAR10_NAMES and train.name == "cifar10"
    index, y, x, rgb = PIXEL
    assert train.images[index, :, y, x].tolist() == list(rgb)
    # Batch order is kept: the second batch starts at row 20.
    np.testing.assert_array_equal(train.images[20].reshape(-1), batches["data_batch_2"][0])
    assert train.labels[:3].tolist() == [0, 1, 2] and train.labels.dtype == np.int64

    # data_dir may also be the cifar-10-batches-py folder itself.
    test = load_dataset("cifar10", "test", tmp_path / "cifar-10-batches-py")
    assert test.images.shape == (20, 3, 32, 32)
    assert test.images[index, :, y, x].tolist() == list(rgb)
    assert test.labels.tolist() == [(5 + k) % 10 for k in range(20)]


def test_cifar100_layout_and_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i:02d}" for i in range(100)]
    dump(folder / "meta", {
        b"fine_label_names": [n.encode() for n in names],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    })  # fmt: skip
    for split, n in (("train", 30), ("test", 10)):
        labels = [(7 * k) % 100 for k in range(n)]
        dump(folder / split, {
            b"filenames": [f"{k}.png".encode() for k in range(n)],
            b"batch_label": split.encode(),
            b"fine_labels": labels,
            b"coarse_labels": [label // 5 for label in labels],
            b"data": cifar_rows(n, seed=n),
        })  # fmt: skip
    train = load_dataset("cifar100", "train", tmp_path)
    test = load_dataset("cifar100", "test", tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (10, 3, 32, 32)
    assert train.classes == names and len(train.classes) == 100
    assert train.labels.tolist() == [(7 * k) % 100 for k in range(30)]
    index, y, x, rgb = PIXEL
    assert train.images[index, :, y, x].tolist() == list(rgb)


def test_cifar_missing_batch_and_foreign_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", "train", tmp_path)
    # A pickle that needs anything beyond containers and numpy arrays is refused, not run.
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": date(2020, 1, 1)}))
    with pytest.raises(DatasetError, match=r"test_batch.*refusing"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar_accepts_current_protocol(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    rows = cifar_rows(5, seed=9)
    labels = [1, 2, 3, 4, 5]
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": rows, b"labels": labels}, protocol=pickle.HIGHEST_PROTOCOL)
    )
    test = load_dataset("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(test.images.reshape(5, -1), rows)
    assert test.labels.tolist() == labels


# --- ImageFolder --------------------------------------------------------------------------


def write_imagefolder(root: Path) -> None:
    """train/cat: RGB PNGs (half red, half blue); train/dog: grayscale JPEGs; test: dog only."""
    halves = np.zeros((20, 40, 3), dtype=np.uint8)
    halves[:, :20] = (255, 0, 0)
    halves[:, 20:] = (0, 0, 255)
    for split, counts in (("train", {"cat": 2, "dog": 3}), ("test", {"dog": 1})):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for k in range(n):
                if cls == "cat":
                    Image.fromarray(halves, "RGB").save(root / split / cls / f"{k}.png")
                else:
                    gray = Image.fromarray(np.full((16, 16), 200, np.uint8), "L")
                    gray.save(root / split / cls / f"{k}.JPG", quality=95)
    (root / "train" / "cat" / "notes.txt").write_text("not an image, and ignored")


def test_imagefolder_rgb(tmp_path: Path) -> None:
    write_imagefolder(tmp_path)
    train = load_dataset("imagefolder", "train", tmp_path, image_size=8)
    assert train.images.shape == (5, 3, 8, 8) and train.shape == (3, 8, 8)
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 1, 1, 1]
    cat = train.images[0].astype(int)
    assert cat[:, 4, 0].tolist() == [255, 0, 0]  # left edge stays red
    assert cat[:, 4, 7].tolist() == [0, 0, 255]  # right edge stays blue
    dog = train.images[2].astype(int)
    assert np.abs(dog - 200).max() <= 2  # gray expands to equal channels; JPEG is lossy


def test_imagefolder_grayscale_default_size_and_test_labels(tmp_path: Path) -> None:
    write_imagefolder(tmp_path)
    train = load_dataset("imagefolder", "train", tmp_path, color="L")
    assert train.images.shape == (5, 1, 32, 32)
    # ITU-R 601-2 luma of pure red and pure blue.
    assert train.images[0, 0, 16, 0] == round(0.299 * 255)
    assert train.images[0, 0, 16, 31] == round(0.114 * 255)
    # test has only "dog", which keeps its train label 1.
    test = load_dataset("imagefolder", "test", tmp_path, color="L")
    assert test.classes == ["cat", "dog"] and test.labels.tolist() == [1]


def test_imagefolder_errors(tmp_path: Path) -> None:
    write_imagefolder(tmp_path)
    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(DatasetError, match="bird"):
        load_dataset("imagefolder", "test", tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=re.escape("broken.png")):
        load_dataset("imagefolder", "train", tmp_path)


# --- missing data and bad arguments -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("mnist", "train-images-idx3-ubyte[.gz]"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("imagefolder", "<class_name>"),
    ],
)
def test_missing_data_names_path_and_layout(tmp_path: Path, name: str, layout: str) -> None:
    for data_dir in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(DatasetError) as info:
            load_dataset(name, "train", data_dir)
        assert str(data_dir) in str(info.value) and layout in str(info.value)
    with pytest.raises(DatasetError, match="data"):
        load_dataset(name, "train")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="digits, mnist, cifar10, cifar100, imagefolder"):
        load_dataset("svhn", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="color"):
        load_dataset("imagefolder", "train", ".", color="CMYK")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", "train", image_size=28)


# --- validation split and preprocessing ---------------------------------------------------


def test_split_validation(digits_train: ImageDataset) -> None:
    train, val = split_validation(digits_train, 200, seed=3)
    again_train, again_val = split_validation(digits_train, 200, seed=3)
    other_train, _ = split_validation(digits_train, 200, seed=4)
    assert len(val) == 200 and len(train) == len(digits_train) - 200
    np.testing.assert_array_equal(train.images, again_train.images)
    np.testing.assert_array_equal(val.labels, again_val.labels)
    assert not np.array_equal(train.images, other_train.images)

    # Stratified: each class gets its share of the 200, to within one.
    expected = np.bincount(digits_train.labels) * 200 / len(digits_train)
    assert np.abs(np.bincount(val.labels, minlength=10) - expected).max() < 1
    assert val.classes == digits_train.classes and val.name == digits_train.name


def test_split_validation_indices_are_disjoint() -> None:
    # Pixels encode the original index, so overlap would show as shared values.
    n = 103
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    labels = (np.arange(n) % 3 == 0).astype(np.int64)
    ds = ImageDataset(images, labels, ["a", "b"], "toy")
    train, val = split_validation(ds, 10, seed=0)
    ids_train, ids_val = train.images.ravel().tolist(), val.images.ravel().tolist()
    assert not set(ids_train) & set(ids_val)
    assert sorted(ids_train + ids_val) == list(range(n))
    assert ids_train == sorted(ids_train)  # original order kept
    empty_train, empty_val = split_validation(ds, 0, seed=0)
    assert len(empty_train) == n and len(empty_val) == 0
    with pytest.raises(ValueError, match="n_val"):
        split_validation(ds, n, seed=0)


def test_preprocess_spec() -> None:
    assert preprocess_spec("mnist", (1, 28, 28)) == {
        "color": "L",
        "resize": [28, 28],
        "resample": "bilinear",
        "invert": False,
    }
    assert preprocess_spec("digits", (1, 8, 8))["resize"] == [8, 8]
    assert preprocess_spec("cifar10", (3, 32, 32), "RGB")["color"] == "RGB"
    assert preprocess_spec("imagefolder", (1, 64, 64), "L")["resize"] == [64, 64]
    with pytest.raises(ValueError, match="disagrees"):
        preprocess_spec("imagefolder", (3, 64, 64), "L")
    assert set(DATASETS) == {"digits", "mnist", "cifar10", "cifar100", "imagefolder"}
