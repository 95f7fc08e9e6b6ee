"""Numbers users give, range-checked in one place: argparse types and the bounds they share.

A bad number on the command line is a usage error (exit 2); the same bounds are used by the
models that check numbers in files (a recipe, a run's config.yaml), so a value refused on the
command line is refused there too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

MAX_SEED = 2**63 - 1  # what torch.manual_seed and the data-order generators accept
MAX_SIDE = 4096  # an image side the trainer resizes to: input, test size, scales
MAX_BATCH = 65_536  # images in one batch
MAX_WORKERS = 256  # data loader processes
MAX_EPOCHS = 1_000_000
MAX_ITERATIONS = 10**9
MAX_LR = 1e6  # far above any useful rate (a test makes a run diverge with 1e4)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text[:40]!r}") from None


def non_negative(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {value}")
    return value


def positive(text: str) -> int:
    """An integer >= 1."""
    value = non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not {value}")
    return value


def in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an integer from `low` to `high`."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            shown = (
                str(value)
                if len(str(value)) <= 20
                else f"{str(value)[:12]}... ({len(str(value))} digits)"
            )
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high:,}, not {shown}"
            )
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def sizes(text: str) -> tuple[int, ...]:
    """A comma-separated list of image sides (`--scales 224,256,384`), each 1 to MAX_SIDE."""
    side = in_range(1, MAX_SIDE)
    parts = text.split(",")
    if not text.strip() or len(parts) > 64:
        raise argparse.ArgumentTypeError(
            f"expected up to 64 sizes like 224,256,384, not {text[:40]!r}"
        )
    return tuple(side(part) for part in parts)
