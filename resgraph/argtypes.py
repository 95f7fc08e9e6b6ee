"""argparse types shared by every subcommand: the one place numbers on the command line are
range-checked, so a bad number is always a usage error (exit 2), never an exit 1 or 70 later.
"""

from __future__ import annotations

import argparse

INT64_MAX = 2**63 - 1  # beyond it numpy, torch and ONNX overflow


def integer(text: str, low: int = 0, high: int = INT64_MAX) -> int:
    """An integer written in decimal, from `low` to `high`; anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:  # also '1e20', '²' and 5,000-digit strings
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(f"expected an integer, not {shown!r}") from None
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
