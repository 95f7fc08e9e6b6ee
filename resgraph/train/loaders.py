"""Batches for training and evaluation, in an order fixed by (seed, epoch).

A step's images and augmentation depend only on the seed, the epoch and the step, so a run
resumed at step k of an epoch sees exactly what an uninterrupted run would. Under
DistributedDataParallel each rank takes its slice of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image

from resgraph.errors import Location
from resgraph.train import TrainError, augment
from resgraph.train.datasets import Dataset, Folder, InMemory, Split, image_problem, open_image
from resgraph.train.recipe import Recipe

Tensor = torch.Tensor
Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Placement:
    """Where batches go: the input shape, this rank among `world`, and the device."""

    shape: tuple[int, int, int]
    rank: int
    world: int
    device: torch.device


class Batches(Protocol):
    """What the training loop needs from data."""

    steps_per_epoch: int
    mean: Tensor
    eval_splits: tuple[str, ...]

    def train(self, epoch: int, start: int) -> Iterator[Batch]: ...

    def evaluate(self, split: str) -> Iterator[Batch]: ...


def worker_count(asked: int) -> int:
    """Loader processes: as asked, but at most one per core this process may run on (more
    only contend, and DataLoader warns about them at length)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(asked, cores or 1)


def _check_lighting(recipe: Recipe, channels: int) -> None:
    if recipe.augment.lighting and channels != 3:
        raise TrainError(
            f"augment.lighting uses ImageNet's RGB colour statistics; this spec has "
            f"{channels}-channel input (set augment.lighting=0)",
            Location("recipe augment.lighting"),
        )


def _lit(images: Tensor, recipe: Recipe, *key: object) -> Tensor:
    """Normalised images with the recipe's PCA lighting noise, drawn from a generator per step."""
    return augment.lighting(images, recipe.augment.lighting, augment.generator("lighting", *key))


def _per_rank(recipe: Recipe, where: Placement, size: int) -> tuple[int, int]:
    """Images per rank per step and steps per epoch, refusing sizes that cannot work."""
    if recipe.batch_size % where.world:
        raise TrainError(
            f"batch_size {recipe.batch_size} does not split over {where.world} processes",
            Location("recipe batch_size"),
        )
    steps = size // recipe.batch_size
    if steps == 0:
        raise TrainError(
            f"batch_size {recipe.batch_size} is larger than the {size} training images",
            Location("recipe batch_size"),
        )
    return recipe.batch_size // where.world, steps


def _mean(images: Tensor) -> Tensor:
    """Per-pixel mean in [0, 1] of uint8 images, summed a chunk at a time (no float copy)."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for begin in range(0, len(images), 1024):
        total += images[begin : begin + 1024].sum(0, dtype=torch.float64)
    return (total / len(images) / 255).float()


class InMemoryBatches:
    """Batches from tensors held on the device, augmented there in one shot per batch."""

    def __init__(self, data: InMemory, recipe: Recipe, seed: int, where: Placement) -> None:
        channels, height, width = where.shape
        _check_lighting(recipe, channels)
        if recipe.augment.pad > max(height, width):
            raise TrainError(
                f"augment.pad {recipe.augment.pad} is more than the {height}x{width} input; "
                "crops would be mostly padding",
                Location("recipe augment.pad"),
            )
        train = Split(augment.fit(data.train.images, channels, height, width), data.train.labels)
        test = Split(augment.fit(data.test.images, channels, height, width), data.test.labels)
        self.splits = {"test": test}
        if recipe.val_split:
            if recipe.val_split >= len(train):
                raise TrainError(
                    f"val_split {recipe.val_split} leaves no training images",
                    Location("recipe val_split"),
                )
            self.splits["val"] = train.take(slice(len(train) - recipe.val_split, None))
            train = train.take(slice(None, len(train) - recipe.val_split))
        self.eval_splits = tuple(sorted(self.splits))
        self.recipe, self.seed, self.where = recipe, seed, where
        self.per_rank, self.steps_per_epoch = _per_rank(recipe, where, len(train))
        self.images = train.images.to(where.device)
        self.labels = train.labels.to(where.device)
        self.mean = _mean(self.images)

    def train(self, epoch: int, start: int) -> Iterator[Batch]:
        """This rank's batches of one epoch from step `start` on."""
        order = torch.randperm(
            len(self.labels), generator=augment.generator("order", self.seed, epoch)
        )
        rank = self.where.rank
        first = rank * self.per_rank
        for step in range(start, self.steps_per_epoch):
            begin = step * self.recipe.batch_size + first
            index = order[begin : begin + self.per_rank].to(self.where.device)
            rng = augment.generator("augment", self.seed, epoch, step, rank)
            images = augment.crop_flip(
                self.images[index], self.recipe.augment.pad, self.recipe.augment.flip, rng
            )
            images = _lit(
                augment.normalize(images, self.mean), self.recipe, self.seed, epoch, step, rank
            )
            yield images, self.labels[index]

    def evaluate(self, split: str) -> Iterator[Batch]:
        """This rank's share of a held-out split, unaugmented."""
        data = self.splits[split]
        size = self.recipe.eval_batch_size
        for begin in range(self.where.rank * size, len(data), self.where.world * size):
            part = data.take(slice(begin, begin + size))
            yield (
                augment.normalize(part.images.to(self.where.device), self.mean),
                part.labels.to(self.where.device),
            )


class FolderImages(torch.utils.data.Dataset):
    """Images read with PIL on demand; a key is (index, epoch), and -1 marks an unreadable file."""

    def __init__(
        self,
        files: list[tuple],
        recipe: Recipe,
        seed: int,
        shape: tuple[int, int, int],
        training: bool,
    ) -> None:
        self.files, self.recipe, self.seed, self.training = files, recipe, seed, training
        self.mode = "L" if shape[0] == 1 else "RGB"
        self.size = shape[1:]
        self.test_size = recipe.test_size or max(self.size)
        scale = recipe.augment.scale
        widest = self.test_size if scale is None or not training else scale[1]
        self.shorter = max(widest, *self.size)  # the largest shorter side images get

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, int]:
        index, epoch = key
        path, label = self.files[index]
        image = open_image(path, self.mode, self.shorter)
        if image is None:  # a blank stands in; the main process names the file
            blank = Image.new(self.mode, (self.size[1], self.size[0]))
            return self._transform(blank, augment.generator("blank")), -1, index
        return (
            self._transform(image, augment.generator("image", self.seed, epoch, index)),
            label,
            index,
        )

    def _transform(self, image: Image.Image, rng: torch.Generator) -> Tensor:
        height, width = self.size
        if not self.training:
            image = augment.resize_shorter(image, self.test_size)
            if self.recipe.test_crops == 10:
                return augment.ten_crops(augment.to_tensor(image), height, width)
            return augment.to_tensor(augment.center_crop(image, height, width))
        scale = self.recipe.augment.scale
        shorter = (
            self.test_size
            if scale is None
            else int(torch.randint(scale[0], scale[1] + 1, (1,), generator=rng))
        )
        image = augment.resize_shorter(image, max(shorter, height, width))
        return augment.to_tensor(
            augment.random_crop(image, height, width, self.recipe.augment.flip, rng)
        )


class FolderBatches:
    """Batches decoded by DataLoader workers from an image folder."""

    def __init__(self, data: Folder, recipe: Recipe, seed: int, where: Placement) -> None:
        _check_lighting(recipe, where.shape[0])
        self.recipe, self.seed, self.where = recipe, seed, where
        self.per_rank, self.steps_per_epoch = _per_rank(recipe, where, len(data.train))
        self.train_set = FolderImages(data.train, recipe, seed, where.shape, training=True)
        self.test_set = FolderImages(data.test, recipe, seed, where.shape, training=False)
        self.eval_splits = ("test",)
        self.mean = self._pixel_mean()

    def _load(self, dataset: FolderImages, keys: list[list[tuple[int, int]]]) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=keys,
            num_workers=worker_count(self.recipe.workers),
            pin_memory=self.where.device.type == "cuda",
        )
        for images, labels, indices in loader:
            bad = (labels < 0).nonzero()
            if len(bad):
                path = dataset.files[int(indices[bad[0, 0]])][0]
                raise TrainError(image_problem(path, dataset.shorter), Location(str(path)))
            yield images.to(self.where.device, non_blocking=True), labels.to(self.where.device)

    def _pixel_mean(self) -> Tensor:
        """Per-pixel mean of up to `mean_images` training images, centre-cropped as for testing."""
        order = torch.randperm(len(self.train_set), generator=augment.generator("mean", 0))
        chosen = order[: self.recipe.mean_images].tolist()
        probe = FolderImages(
            self.train_set.files,
            self.recipe.model_copy(update={"test_crops": 1}),
            self.seed,
            self.where.shape,
            training=False,
        )
        size = self.recipe.eval_batch_size
        keys = [[(i, 0) for i in chosen[b : b + size]] for b in range(0, len(chosen), size)]
        total = torch.zeros(self.where.shape, dtype=torch.float64, device=self.where.device)
        for images, _ in self._load(probe, keys):
            total += images.double().sum(0)
        return (total / len(chosen) / 255).float()

    def train(self, epoch: int, start: int) -> Iterator[Batch]:
        """This rank's batches of one epoch from step `start` on."""
        order = torch.randperm(
            len(self.train_set), generator=augment.generator("order", self.seed, epoch)
        )
        first = self.where.rank * self.per_rank
        keys = [
            [(int(i), epoch) for i in order[begin + first : begin + first + self.per_rank]]
            for begin in range(
                start * self.recipe.batch_size,
                self.steps_per_epoch * self.recipe.batch_size,
                self.recipe.batch_size,
            )
        ]
        for step, (images, labels) in enumerate(self._load(self.train_set, keys), start):
            images = augment.normalize(images, self.mean)
            yield _lit(images, self.recipe, self.seed, epoch, step, self.where.rank), labels

    def evaluate(self, split: str) -> Iterator[Batch]:
        """This rank's share of the val/ images; with 10 crops a batch is (N, 10, C, H, W)."""
        size = self.recipe.eval_batch_size
        keys = [
            [(i, 0) for i in range(b, min(b + size, len(self.test_set)))]
            for b in range(self.where.rank * size, len(self.test_set), self.where.world * size)
        ]
        for images, labels in self._load(self.test_set, keys):
            yield augment.normalize(images, self.mean), labels


def make_batches(data: Dataset, recipe: Recipe, seed: int, where: Placement) -> Batches:
    """The batch source for a dataset."""
    if isinstance(data, InMemory):
        return InMemoryBatches(data, recipe, seed, where)
    return FolderBatches(data, recipe, seed, where)
