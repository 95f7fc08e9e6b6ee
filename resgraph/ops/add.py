"""add: where a block's shortcut joins its residual branch, y = F(x) + x."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resgraph.errors import Location, SpecError
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import Model, Name, layer_name
from resgraph.ops.base import Op, fmt
from resgraph.ops.relu import NoAttrs

if TYPE_CHECKING:
    from resgraph.backends.onnx_export import Emitter


class Add(Model):
    """The residual addition: where the shortcut joins the branch inside a block."""

    name: Name | None = layer_name()


class AddOp(Op):
    name = "add"
    language = Add

    def resolve(self, args: Add, channels: Dim, dilation: Dim = 1) -> NoAttrs:
        return NoAttrs()

    def shape(
        self, attrs: NoAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        branch, shortcut = inputs
        if branch != shortcut:
            raise SpecError(
                f"{what}: the residual branch gives {fmt(branch)} but the shortcut gives "
                f"{fmt(shortcut)}; the branch may change the map's size only by the block's "
                "stride (on its stride_on layer): keep its other layers size-preserving, e.g. "
                "convs with padding (kernel - 1) // 2",
                where,
            )
        return branch

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return em.node("Add", node.name, xs)
