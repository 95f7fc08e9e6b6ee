"""Shape inference rules, one per op: the output shape from the input shapes and attributes.

Shapes are (C, H, W) feature maps or (F,) vectors. Every rule raises SpecError with the
op's location and a hint, so a shape mistake is caught before a tensor ever exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from resgraph.errors import Location, SpecError

Shape = tuple[int, ...]
ShapeRule = Callable[[Mapping[str, Any], list[Shape], str, Location | None], Shape]


def fmt(shape: Shape) -> str:
    """A shape as people write it: 64x56x56."""
    return "x".join(str(d) for d in shape)


def _spatial(
    size: int,
    kernel: int,
    stride: int,
    padding: int,
    ceil_mode: bool,
    axis: str,
    what: str,
    where: Location | None,
) -> int:
    padded = size + 2 * padding
    if kernel > padded:
        raise SpecError(
            f"{what}: kernel {kernel} is larger than its input ({axis} {size}, {padded} padded); "
            "use a smaller kernel, more padding, or a larger input",
            where,
        )
    span = padded - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch drops a last window that would start in the right padding
    return out


def _map_input(inputs: list[Shape], what: str, where: Location | None) -> Shape:
    shape = inputs[0]
    if len(shape) != 3:
        raise SpecError(f"{what}: needs a CxHxW feature map but gets {fmt(shape)}", where)
    return shape


def _windowed(
    attrs: Mapping[str, Any],
    inputs: list[Shape],
    what: str,
    where: Location | None,
    channels: int | None = None,
) -> Shape:
    c, h, w = _map_input(inputs, what, where)
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    ceil_mode = attrs.get("ceil_mode", False)
    return (
        c if channels is None else channels,
        _spatial(h, k, s, p, ceil_mode, "height", what, where),
        _spatial(w, k, s, p, ceil_mode, "width", what, where),
    )


def conv(attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None) -> Shape:
    c = _map_input(inputs, what, where)[0]
    groups = attrs["groups"]
    if c % groups or attrs["out"] % groups:
        raise SpecError(
            f"{what}: groups={groups} must divide both its input channels ({c}) and out "
            f"({attrs['out']})",
            where,
        )
    return _windowed(attrs, inputs, what, where, channels=attrs["out"])


def pool(attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None) -> Shape:
    if attrs["padding"] * 2 > attrs["kernel"]:
        raise SpecError(
            f"{what}: padding {attrs['padding']} is more than half of kernel {attrs['kernel']}",
            where,
        )
    return _windowed(attrs, inputs, what, where)


def same(attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None) -> Shape:
    return inputs[0]


def batchnorm(
    attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    return _map_input(inputs, what, where)


def global_avgpool(
    attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    return (_map_input(inputs, what, where)[0], 1, 1)


def flatten(
    attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    return (math.prod(inputs[0]),)


def linear(
    attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    if len(inputs[0]) != 1:
        raise SpecError(
            f"{what}: a linear layer needs a flat vector but gets {fmt(inputs[0])}", where
        )
    return (attrs["out"],)


def zero_pad(
    attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    c, h, w = _map_input(inputs, what, where)
    s = attrs["stride"]
    return (c + attrs["pad_before"] + attrs["pad_after"], -(-h // s), -(-w // s))


def squeeze_excite(
    attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    shape = _map_input(inputs, what, where)
    if attrs["hidden"] < 1:
        raise SpecError(
            f"{what}: reduction {attrs['reduction']} leaves no hidden units for "
            f"{shape[0]} channels; use a smaller reduction",
            where,
        )
    return shape


def add(attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None) -> Shape:
    branch, shortcut = inputs
    if branch != shortcut:
        raise SpecError(
            f"{what}: the residual branch gives {fmt(branch)} but the shortcut gives "
            f"{fmt(shortcut)}; the branch may change the map's size only by the block's stride "
            "(on its stride_on layer): keep its other layers size-preserving, e.g. convs with "
            "padding (kernel - 1) // 2",
            where,
        )
    return branch


RULES: dict[str, ShapeRule] = {
    "conv": conv,
    "bn": batchnorm,
    "relu": same,
    "maxpool": pool,
    "avgpool": pool,
    "global_avgpool": global_avgpool,
    "flatten": flatten,
    "linear": linear,
    "add": add,
    "zero_pad": zero_pad,
    "se": squeeze_excite,
}


def infer(
    op: str, attrs: Mapping[str, Any], inputs: list[Shape], what: str, where: Location | None
) -> Shape:
    """The output shape of one op; raises SpecError naming `what` at `where`."""
    shape = RULES[op](attrs, inputs, what, where)
    if min(shape) < 1:
        raise SpecError(f"{what}: output size reaches zero ({fmt(shape)})", where)
    return shape
