"""relu: the rectified linear unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resgraph.expr import Dim
from resgraph.ir import Node
from resgraph.language import Model, Name, layer_name
from resgraph.ops.base import Op

if TYPE_CHECKING:
    from resgraph.backends.onnx_export import Emitter


class ReLU(Model):
    """Rectified linear unit."""

    name: Name | None = layer_name()


@dataclass(frozen=True)
class NoAttrs:
    """For ops that need nothing but their inputs."""


class ReLUOp(Op):
    name = "relu"
    language = ReLU
    saves = ("output",)

    def resolve(self, args: ReLU, channels: Dim, dilation: Dim = 1) -> NoAttrs:
        return NoAttrs()

    def torch(self, attrs: NoAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        return "nn.ReLU(inplace=True)" if inplace else "nn.ReLU()"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return em.node("Relu", node.name, xs)
