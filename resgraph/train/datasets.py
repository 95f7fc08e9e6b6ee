"""Reading datasets from disk (never from the network) into memory or a list of files.

`--data` names a source: `digits` (scikit-learn's 1,797 real 8x8 digit images, the
default), `synthetic[:N]`, `cifar10:DIR` (the python batches) or `imagefolder:DIR`
(train/ and val/ with one folder per class). A missing, truncated or malformed file is
a TrainError naming that file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resgraph.errors import Location
from resgraph.train import TrainError

SOURCES = ("digits", "synthetic[:N]", "cifar10:DIR", "imagefolder:DIR")
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
DIGITS_TEST = 360  # a fixed 20% of the 1,797 digits, the same for every seed
SYNTHETIC_TEST = 512


@dataclass(frozen=True)
class Split:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: slice) -> Split:
        """A contiguous part of the split."""
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class InMemory:
    """A dataset small enough to hold in memory: train and test splits."""

    train: Split
    test: Split
    classes: int


@dataclass(frozen=True)
class Folder:
    """An image-folder dataset: (file, label) lists, read lazily while training."""

    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    classes: int


Dataset = InMemory | Folder


def load_source(text: str, input_shape: tuple[int, int, int], classes: int) -> Dataset:
    """Read the dataset a `--data` string names; `classes` sizes synthetic labels."""
    kind, _, arg = text.partition(":")
    where = Location(f"--data {text}")
    if kind == "digits" and not arg:
        return digits()
    if kind == "synthetic":
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise TrainError("synthetic:N needs a positive number of training images", where)
        return synthetic(input_shape, classes, int(arg or 2048))
    if kind in ("cifar10", "imagefolder") and arg:
        folder = Path(arg)
        if not folder.is_dir():
            raise TrainError("no such folder", Location(str(folder)))
        return cifar10(folder) if kind == "cifar10" else image_folder(folder)
    raise TrainError(f"unknown data source; expected one of {', '.join(SOURCES)}", where)


def digits() -> InMemory:
    """scikit-learn's bundled 8x8 digits as 0-255 grey images, with a fixed test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    data = Split(images[order], labels[order])
    return InMemory(data.take(slice(DIGITS_TEST, None)), data.take(slice(None, DIGITS_TEST)), 10)


def synthetic(input_shape: tuple[int, int, int], classes: int, size: int) -> InMemory:
    """Random images and labels of the spec's shape: for measuring throughput, not learning."""
    rng = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, *input_shape), generator=rng, dtype=torch.uint8)
        return Split(images, torch.randint(0, classes, (n,), generator=rng))

    return InMemory(split(size), split(SYNTHETIC_TEST), classes)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a batch file must not run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


def _unpickle(path: Path) -> dict[bytes, Any]:
    where = Location(str(path))
    try:
        with path.open("rb") as handle:
            data = _ArraysOnly(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise TrainError("missing CIFAR-10 batch file", where) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, OSError) as exc:
        if isinstance(exc, EOFError) or "truncated" in str(exc):
            raise TrainError("truncated CIFAR-10 batch file", where) from None
        raise TrainError(f"not a CIFAR-10 python batch ({exc})", where) from None
    if not isinstance(data, dict):
        raise TrainError("not a CIFAR-10 python batch (expected a dict)", where)
    return data


def _cifar_batch(path: Path, classes: int) -> Split:
    batch = _unpickle(path)
    where = Location(str(path))
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        raise TrainError("b'data' must be a uint8 array of shape (N, 3072)", where)
    if not isinstance(labels, list) or len(labels) != len(data):
        raise TrainError(f"b'labels' must be a list of {len(data)} labels", where)
    label_array = np.asarray(labels)
    if (
        label_array.dtype.kind not in "iu"
        or label_array.min(initial=0) < 0
        or label_array.max(initial=0) >= classes
    ):
        raise TrainError(f"b'labels' must be integers in [0, {classes})", where)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(images, torch.from_numpy(label_array.astype(np.int64)))


def cifar10(folder: Path) -> InMemory:
    """The CIFAR-10 python batches: data_batch_1..5 for training, test_batch for testing."""
    meta = _unpickle(folder / "batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not names:
        raise TrainError(
            "batches.meta has no b'label_names' list", Location(str(folder / "batches.meta"))
        )
    parts = [_cifar_batch(folder / name, len(names)) for name in CIFAR_TRAIN]
    train = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    return InMemory(train, _cifar_batch(folder / "test_batch", len(names)), len(names))


def _class_files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    if not folder.is_dir():
        raise TrainError(
            "missing folder (an image folder has train/ and val/)", Location(str(folder))
        )
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise TrainError(f"class folder {unknown[0]!r} is not in train/", Location(str(folder)))
    files = []
    for label, name in enumerate(classes):
        if name not in found:
            continue  # a class the held-out split does not sample
        images = [
            (path, label)
            for path in sorted((folder / name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not images:
            raise TrainError(
                "empty class folder: no images (.jpg, .png, ...)", Location(str(folder / name))
            )
        files += images
    if not files:
        raise TrainError("no images (.jpg, .png, ...) in the class folders", Location(str(folder)))
    return files


def image_folder(root: Path) -> Folder:
    """train/CLASS/*.jpg and val/CLASS/*.jpg; classes are train/'s folders in sorted order."""
    train = root / "train"
    if not train.is_dir():
        raise TrainError(
            "missing folder (an image folder has train/ and val/)", Location(str(train))
        )
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not classes:
        raise TrainError("no class folders", Location(str(train)))
    return Folder(_class_files(train, classes), _class_files(root / "val", classes), len(classes))
