"""Trainer overhead: images/s of `resgraph train`'s loop vs a minimal hand-written loop.

Both train the same generated module (ResNet-20, 32x32) from the same initial weights on
the same in-memory uint8 images, normalising each batch the same way; the trainer runs
without augmentation so that only its own machinery differs. Each side first runs
`--steps` untimed steps (the trainer: one epoch); the trainer's images/s is its own
metrics, which leave out evaluations. Pairs are interleaved, and each side's best is
compared: other processes on the machine only ever slow a measurement down.

    PYTHONPATH=. python bench/bench_train.py [--quick] [--steps 10] [--epochs 4] [--pairs 3]
        [--batch 128]

`--quick` runs one pair of 5 steps per epoch and 2 epochs (1 timed). Exit status 1 if the
target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from resgraph.backends.pytorch import build_module
from resgraph.pipeline import compile_spec
from resgraph.train import augment, metrics
from resgraph.train.datasets import synthetic
from resgraph.train.distributed import Context
from resgraph.train.loaders import InMemoryBatches, Placement
from resgraph.train.loop import Trainer
from resgraph.train.recipe import load_recipe
from resgraph.train.schedule import LrSchedule

SPEC = Path(__file__).resolve().parent.parent / "specs" / "cifar_resnet20.yaml"
SHAPE = (3, 32, 32)


def fresh_module() -> torch.nn.Module:
    """The generated ResNet-20 with the same initial weights every time."""
    torch.manual_seed(0)
    return build_module(compile_spec(SPEC), num_classes=10)


def hand_written(
    images: torch.Tensor, labels: torch.Tensor, batch: int, warmup: int, steps: int
) -> float:
    """The least a training loop can do; returns images/s over the timed steps."""
    model = fresh_module().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    mean = images.float().mean(0) / 255
    per_epoch = len(labels) // batch
    rng = torch.Generator().manual_seed(0)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        if step % per_epoch == 0:
            order = torch.randperm(len(labels), generator=rng)
        index = order[step % per_epoch * batch :][:batch]
        x = images[index].float() / 255 - mean
        loss = torch.nn.functional.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def trainer(images: int, batch: int, epochs: int) -> float:
    """resgraph's Trainer on the same data; images/s of every epoch after the first (warm-up)."""
    recipe = load_recipe(
        "quick",
        [
            f"batch_size={batch}",
            "augment.pad=0",
            f"epochs={epochs}",
            "schedule.kind=constant",
            "weight_decay=0.0001",
        ],
    )
    ctx = Context(0, 1, torch.device("cpu"))
    batches = InMemoryBatches(
        synthetic(SHAPE, 10, images), recipe, 0, Placement(SHAPE, 0, 1, ctx.device)
    )
    total = epochs * batches.steps_per_epoch
    with tempfile.TemporaryDirectory() as run:
        loop = Trainer(
            fresh_module(),
            batches,
            recipe,
            total,
            LrSchedule(recipe, total, warm_up=False),
            ctx,
            Path(run),
        )
        loop.fit()
        records = metrics.read(Path(run))
    return statistics.mean(r["images_per_s"] for r in records[1:])


def main(argv: list[str] | None = None) -> int:
    """Time both loops in interleaved pairs; return 1 if the target is missed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short pair, for a smoke run")
    parser.add_argument("--steps", type=int, help="steps per epoch and warm-up (10; quick: 5)")
    parser.add_argument("--epochs", type=int, help="timed epochs + 1 warm-up epoch (4; quick: 2)")
    parser.add_argument("--pairs", type=int, help="interleaved pairs (3; quick: 1)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    args.steps = args.steps or (5 if args.quick else 10)
    args.epochs = args.epochs or (2 if args.quick else 4)
    args.pairs = args.pairs or (1 if args.quick else 3)
    size = args.steps * args.batch
    data = synthetic(SHAPE, 10, size).train
    images = augment.fit(data.images, *SHAPE)
    ours, theirs = [], []
    for _ in range(args.pairs):
        timed = (args.epochs - 1) * args.steps
        theirs.append(hand_written(images, data.labels, args.batch, args.steps, timed))
        ours.append(trainer(size, args.batch, args.epochs))
    print(
        f"threads: {torch.get_num_threads()}, batch {args.batch}, "
        f"{(args.epochs - 1) * args.steps} timed steps after {args.steps}, {args.pairs} pairs"
    )
    print(
        "pairs (hand-written, trainer): "
        + ", ".join(f"({a:.0f}, {b:.0f})" for a, b in zip(theirs, ours, strict=True))
    )
    print(f"hand-written loop images/s (best pair): {max(theirs):.1f}")
    print(f"trainer images/s (best pair): {max(ours):.1f}")
    pair_ratios = [b / a for a, b in zip(theirs, ours, strict=True)]
    print(
        f"per-pair ratios: {', '.join(f'{r:.3f}' for r in pair_ratios)} "
        f"(median {statistics.median(pair_ratios):.3f}; noisier than best vs best)"
    )
    ratio = max(ours) / max(theirs)
    ok = ratio >= 0.95
    print(
        f"trainer/hand-written images/s ratio: {ratio:.3f} (target >= 0.95) "
        f"{'ok' if ok else 'MISSED'}"
    )
    return int(not ok)


if __name__ == "__main__":
    raise SystemExit(main())
