"""Calibration images for int8 quantization, prepared exactly as the trained network saw them.

`--calibrate` takes the sources `train --data` takes (`datasets.load_source` parses both).
Images come from the source's training split, never its test split, so an int8 model is
scored on images its calibration did not see. Each image is the evaluator's centre view
(`evaluate.views_for`), minus the training run's per-pixel mean: the checkpoint's own
`pixel_mean` when the weights are a resgraph checkpoint, else the mean of the calibration
images themselves. A checkpoint inside a run folder also brings its recipe's test size.
"""

from __future__ import annotations

import sys
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from resgraph.errors import Location
from resgraph.pipeline import Compiled
from resgraph.train import TrainError, augment
from resgraph.train.checkpoint import check_pixel_mean
from resgraph.train.datasets import (
    Folder,
    InMemory,
    Split,
    check_channels,
    image_problem,
    load_source,
)
from resgraph.train.evaluate import ViewSet, views_for
from resgraph.train.loaders import worker_count
from resgraph.train.run import CONFIG, read_config

OPTION = "--calibrate"
READ_BATCH = 64  # images decoded per loader batch
READ_WORKERS = 4  # loader processes for image folders (at most one per core)


@dataclass(frozen=True)
class Calibration:
    """Calibration images as uint8 (N, C, H, W) and the mean the network subtracts."""

    images: torch.Tensor
    mean: torch.Tensor

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Normalised float32 batches of exactly `size` images (the last one filled up from the
        first images, for graphs with a static batch), behind a progress bar on a terminal."""
        count = len(self.images)
        bar = tqdm(
            total=count,
            desc="calibrating",
            unit="img",
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
        )
        for begin in range(0, count, size):
            index = torch.arange(begin, begin + size) % count
            yield augment.normalize(self.images[index], self.mean).numpy()
            bar.update(min(size, count - begin))
        bar.close()


def _checkpoint_mean(weights: Path | None, shape: tuple[int, int, int]) -> torch.Tensor | None:
    """A resgraph checkpoint's `pixel_mean`, checked; None for a plain state_dict (or a file
    that cannot be read: loading the weights reports that in its own words)."""
    if weights is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(
                weights, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(weights)
            )
    except Exception:  # torch raises many kinds; load_weights names the problem
        return None
    if not isinstance(state, dict) or "pixel_mean" not in state:
        return None
    mean = state["pixel_mean"]
    if isinstance(mean, torch.Tensor) and mean.dim() == 3 and tuple(mean.shape) != shape:
        trained = "x".join(map(str, mean.shape))
        raise TrainError(
            f"these weights were trained on {trained} input, the spec's is "
            f"{'x'.join(map(str, shape))}; compile with the run's --set values",
            Location(str(weights)),
        )
    check_pixel_mean(mean, shape, Location(str(weights)))
    return mean.float()


def _test_size(weights: Path | None) -> int | None:
    """The recipe's test size of the run whose folder holds the weights, if any."""
    if weights is None or not (weights.parent / CONFIG).is_file():
        return None
    return read_config(weights.parent)["recipe"].get("test_size")


def _chosen(count: int, wanted: int) -> list[int]:
    """Which training images calibrate: a fixed shuffle (folders are sorted by class)."""
    order = torch.randperm(count, generator=augment.generator("calibrate", 0))
    return order[:wanted].tolist()


def read_calibration(
    source: str, compiled: Compiled, images: int, weights: Path | None = None
) -> Calibration:
    """Up to `images` training images of `source`, as the evaluator feeds the network."""
    spec = compiled.spec
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    where = Location(f"{OPTION} {source[:300]}")
    data = load_source(source, shape, compiled.plan.classes, OPTION)
    check_channels(data, shape[0], f"{OPTION} {source}", where)
    chosen = _chosen(len(data.train), images)
    if not chosen:
        raise TrainError("no training images to calibrate with", where)
    items: Folder | Split
    if isinstance(data, InMemory):
        picked = data.train.images[chosen]
        items = Split(augment.fit(picked, *shape), data.train.labels[chosen])
    else:  # ViewSet reads a folder's `test` list: here, the chosen training files
        items = Folder([], [data.train[i] for i in chosen], data.classes)
    test_size = max(_test_size(weights) or 0, *shape[1:])
    views = ViewSet(
        items,
        "L" if shape[0] == 1 else "RGB",
        views_for("center", shape[1:], test_size, ()),
        test_size,
    )
    loader = torch.utils.data.DataLoader(
        views,
        batch_size=READ_BATCH,
        num_workers=0 if isinstance(items, Split) else worker_count(READ_WORKERS),
        collate_fn=list,
    )
    read = []
    for batch in loader:
        for view, label, index in batch:
            if label < 0:
                path = items.test[index][0]  # type: ignore[union-attr]
                raise TrainError(image_problem(path, test_size), Location(str(path)))
            read.append(view)
    uint8 = torch.cat(read)
    mean = _checkpoint_mean(weights, shape)
    if mean is None:
        mean = uint8.double().mean(0).div(255).float()
    return Calibration(uint8, mean)
