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


INT64_MAX = 2**63 - 1  # beyond it numpy, torch and ONNX overflow


def _integer(text: str) -> int:
    """An integer written in decimal; anything else is a usage error."""
    try:
        return int(text)
    except ValueError:  # also '1e20', '²' and 5,000-digit strings
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(f"expected an integer, not {shown!r}") from None


def integer(text: str, low: int = 0, high: int = INT64_MAX) -> int:
    """An integer written in decimal, from `low` to `high`; anything else is a usage error."""
    value = _integer(text)
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {low} or more, not {value}")
    if value > high:
        raise argparse.ArgumentTypeError(f"expected at most {high:,}, not {value:,}")
    return value


def non_negative(text: str) -> int:
    """An integer >= 0."""
    return integer(text, 0)


def positive(text: str) -> int:
    """An integer >= 1."""
    return integer(text, 1)


def opset(text: str) -> int:
    """An ONNX opset this resgraph emits and the installed onnx knows."""
    value = integer(text, 1)
    try:
        import onnx

        from resgraph.backends.onnx_export import MIN_OPSET
    except ModuleNotFoundError:  # compile says which package --target onnx needs
        return value
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= value <= newest:
        raise argparse.ArgumentTypeError(f"choose {MIN_OPSET} to {newest}, not {value}")
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
