"""Ops only the front end writes: the input, and the fc head's global pool and flatten."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from resgraph.errors import Location
from resgraph.ir import Node, Shape
from resgraph.ops.base import Op, feature_map
from resgraph.ops.relu import NoAttrs

if TYPE_CHECKING:
    from resgraph.backends.onnx_export import Emitter


class InputOp(Op):
    name = "input"


class GlobalAvgPoolOp(Op):
    name = "global_avgpool"
    saves = ("input",)

    def window(self, attrs: NoAttrs, in_shape: Shape) -> tuple[int, int]:
        size = max(in_shape[1:])
        return size, size

    def shape(
        self, attrs: NoAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        return (feature_map(inputs, what, where)[0], 1, 1)

    def torch(self, attrs: NoAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        return "nn.AdaptiveAvgPool2d(1)"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return em.node("GlobalAveragePool", node.name, xs)


class FlattenOp(Op):
    name = "flatten"

    def shape(
        self, attrs: NoAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        return (math.prod(inputs[0]),)

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return em.node("Flatten", node.name, xs, axis=1)
