"""Reading datasets from disk (never from the network) into memory or a list of files.

`--data` names a source: `digits` (scikit-learn's 1,797 real 8x8 digit images, the
default), `synthetic[:N]`, `cifar10:DIR` (the python batches) or `imagefolder:DIR`
(train/ and val/ with one folder per class). A missing, truncated or malformed file is
a TrainError naming that file.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from resgraph.argtypes import MAX_SIDE
from resgraph.errors import Location
from resgraph.train import TrainError, read_bounded, user_path

SOURCES = ("digits", "synthetic[:N]", "cifar10:DIR", "imagefolder:DIR")
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
DIGITS_TEST = 360  # a fixed 20% of the 1,797 digits, the same for every seed
SYNTHETIC_TEST = 512
# A real CIFAR-10 batch is 31 MB (10,000 images); a file over this is refused unread.
MAX_CIFAR_BATCH_BYTES = 256 << 20
# The most pixels (width x height) an image may have, as stored and after the resize the
# trainer applies: ImageNet's largest (about 30 MP) fit, and one decoded RGB image of this
# size takes 150 MB in each loader process.
MAX_IMAGE_PIXELS = 50_000_000
# In-memory data (digits, synthetic, CIFAR-10) fitted to the input, as uint8: CIFAR-10 at
# 32x32 takes 184 MB, the digits at 224x224 270 MB.
MAX_IN_MEMORY_BYTES = 4 << 30
MAX_CLASSES = 100_000  # sizes the head: a CIFAR batches.meta or an image folder's classes
UNREADABLE = "cannot read this image (missing, truncated or not an image)"


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


def load_source(
    text: str, input_shape: tuple[int, int, int], classes: int, option: str = "--data"
) -> Dataset:
    """Read the dataset a `--data` string names; `classes` sizes synthetic labels.

    In-memory data is refused before it is made if, fitted to the input, it would take more
    than MAX_IN_MEMORY_BYTES. `option` names the flag in errors (`--calibrate` takes the
    same sources).
    """
    kind, _, arg = text.partition(":")
    where = Location(f"{option} {text[:300]}")
    _check_input(input_shape)
    if kind == "digits" and not arg:
        data = digits()
    elif kind == "synthetic":
        if arg and not (arg.isascii() and arg.isdigit() and len(arg) <= 12 and int(arg) > 0):
            raise TrainError("synthetic:N needs a positive number of training images", where)
        size = int(arg or 2048)
        _check_in_memory(size + SYNTHETIC_TEST, input_shape, where)
        return synthetic(input_shape, classes, size)
    elif kind in ("cifar10", "imagefolder") and arg:
        folder = user_path(arg, f"{option} {kind}:DIR")
        if not folder.is_dir():
            raise TrainError("no such folder", Location(str(folder)))
        if kind == "imagefolder":
            return image_folder(folder)
        data = cifar10(folder)
    else:
        raise TrainError(f"unknown data source; expected one of {', '.join(SOURCES)}", where)
    _check_in_memory(len(data.train) + len(data.test), input_shape, where)
    return data


def check_channels(data: Dataset, channels: int, source: str, where: Location) -> None:
    """Refuse a spec whose input channels the data's images cannot be turned into; `source`
    names the data in the message (`--data digits`)."""
    have = data.train.images.shape[1] if isinstance(data, InMemory) else 3  # folders: RGB or L
    if channels in (1, have) or have == 1:
        return
    raise TrainError(
        f"input.channels is {channels}, but {source} has {have}-channel images, which "
        f"become 1 or {have} channels only",
        where,
    )


def _check_input(shape: tuple[int, int, int]) -> None:
    """Refuse an input size beyond what the trainer resizes images to."""
    _, height, width = shape
    if max(height, width) > MAX_SIDE:
        raise TrainError(
            f"the input is {height}x{width}; the trainer takes sides up to {MAX_SIDE}",
            Location("spec input"),
        )


def _check_in_memory(count: int, shape: tuple[int, int, int], where: Location) -> None:
    """Refuse in-memory data that, fitted to the input shape, would be over the bound."""
    need = count * math.prod(shape)
    if need > MAX_IN_MEMORY_BYTES:
        channels, height, width = shape
        raise TrainError(
            f"{count:,} images of {channels}x{height}x{width} take {need:,} bytes; in-memory "
            f"data is limited to {MAX_IN_MEMORY_BYTES:,} (use fewer images or a smaller input)",
            where,
        )


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


class _NdarrayClass:
    """What `numpy.ndarray` unpickles to: a marker for `_Array`, not a constructor."""


class _Dtype:
    """A numpy dtype by name from a small list of plain numeric types; its state is ignored."""

    NAMES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"})

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        if name not in self.NAMES:
            raise pickle.UnpicklingError(f"an array of dtype {str(name)[:20]!r}")
        self.dtype = np.dtype(name)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or state[1:2] not in (("|",), ("<",), ("=",)):
            raise pickle.UnpicklingError("a dtype that is not plain little-endian data")


class _Array:
    """Stands in for numpy's `_reconstruct(ndarray, shape, dtype)`, which allocates the shape
    it is given: this allocates nothing until BUILD brings data whose size fits the shape."""

    def __init__(self, cls: Any, shape: Any, code: Any) -> None:
        if cls is not _NdarrayClass:
            raise pickle.UnpicklingError("an array of a class other than numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array with a malformed state")
        _, shape, dtype, fortran, data = state
        if not (
            isinstance(shape, tuple)
            and all(isinstance(n, int) and n >= 0 for n in shape)
            and isinstance(dtype, _Dtype)
            and isinstance(data, bytes)
        ):
            raise pickle.UnpicklingError("an array with a malformed state")
        declared = math.prod(shape) * dtype.dtype.itemsize
        if declared != len(data):
            raise pickle.UnpicklingError(
                f"an array declares shape {shape} ({declared:,} bytes) but holds {len(data):,}"
            )
        order = "F" if fortran else "C"
        self.array = np.frombuffer(data, dtype.dtype).reshape(shape, order=order)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a batch file must not run code, and an
    array gets memory only for bytes the file holds."""

    ALLOWED: ClassVar[dict[tuple[str, str], type]] = {
        ("numpy.core.multiarray", "_reconstruct"): _Array,
        ("numpy._core.multiarray", "_reconstruct"): _Array,
        ("numpy", "ndarray"): _NdarrayClass,
        ("numpy", "dtype"): _Dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name]
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


def _unpickle(path: Path) -> dict[bytes, Any]:
    where = Location(str(path))
    raw = read_bounded(path, MAX_CIFAR_BATCH_BYTES, "CIFAR-10 batch file")
    try:
        data = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except (EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, EOFError) or "truncated" in str(exc):
            raise TrainError("truncated CIFAR-10 batch file", where) from None
        raise TrainError(f"not a CIFAR-10 python batch ({exc})", where) from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError) as exc:
        raise TrainError(f"not a CIFAR-10 python batch ({type(exc).__name__})", where) from None
    if not isinstance(data, dict):
        raise TrainError("not a CIFAR-10 python batch (expected a dict)", where)
    return {k: v.array if isinstance(v, _Array) else v for k, v in data.items()}


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
    if not all(type(label) is int and 0 <= label < classes for label in labels):
        raise TrainError(f"b'labels' must be integers in [0, {classes})", where)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(images, torch.tensor(labels, dtype=torch.int64))


def cifar10(folder: Path) -> InMemory:
    """The CIFAR-10 python batches: data_batch_1..5 for training, test_batch for testing."""
    meta = _unpickle(folder / "batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not names:
        raise TrainError(
            "batches.meta has no b'label_names' list", Location(str(folder / "batches.meta"))
        )
    if len(names) > MAX_CLASSES:
        raise TrainError(
            f"b'label_names' lists {len(names):,} classes; at most {MAX_CLASSES:,} are taken",
            Location(str(folder / "batches.meta")),
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


def _too_large(width: int, height: int, shorter: int) -> str | None:
    """Why a width x height image resized to a shorter side of `shorter` is over the bound."""
    if width * height > MAX_IMAGE_PIXELS:
        return f"{width}x{height} image; the trainer decodes at most {MAX_IMAGE_PIXELS:,} pixels"
    scale = shorter / max(1, min(width, height))
    resized = max(shorter, round(width * scale)) * max(shorter, round(height * scale))
    if resized > MAX_IMAGE_PIXELS:
        return (
            f"{width}x{height} image resized to a shorter side of {shorter} has {resized:,} "
            f"pixels; the trainer takes at most {MAX_IMAGE_PIXELS:,}"
        )
    return None


def image_problem(path: Path, shorter: int) -> str:
    """Why `open_image` refused a file, read again from its header: for the one-line error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as opened:
                width, height = opened.size
    except Image.DecompressionBombError as exc:  # PIL's own, larger bound, from the header
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,}-pixel" if found else "huge"
        return f"{size} image; the trainer decodes at most {MAX_IMAGE_PIXELS:,} pixels"
    except (OSError, ValueError, SyntaxError):
        return UNREADABLE
    return _too_large(width, height, shorter) or UNREADABLE


def open_image(path: Path, mode: str, shorter: int) -> Image.Image | None:
    """The image decoded as `mode`, or None if it is unreadable or, judged by its header
    before decoding, over MAX_IMAGE_PIXELS as stored or once resized to `shorter`.

    PIL's warnings (palette transparency, its own bomb warning) are not shown: the size
    bound here is stricter, and the rest concern PIL's conversions, not the user.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as opened:
                if min(opened.size) < 1 or _too_large(*opened.size, shorter):
                    return None
                return opened.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


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
    if len(classes) > MAX_CLASSES:
        raise TrainError(
            f"{len(classes):,} class folders; at most {MAX_CLASSES:,} are taken",
            Location(str(train)),
        )
    return Folder(_class_files(train, classes), _class_files(root / "val", classes), len(classes))
