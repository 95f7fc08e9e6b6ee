"""linear: a fully-connected layer on a flat vector (the classifier of an fc head)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from resgraph.errors import Location, SpecError
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import IntExpr, Model, Name, layer_name
from resgraph.ops.base import SIZE, Op, fmt, torch_default

if TYPE_CHECKING:
    import numpy as np

    from resgraph.backends.onnx_export import Emitter


class Linear(Model):
    """Fully-connected layer on a flattened input."""

    name: Name | None = layer_name()
    out: IntExpr = Field(description="Output features.")
    bias: bool = Field(True, description="Add a bias.")


@dataclass(frozen=True)
class LinearAttrs:
    out: Dim = field(metadata=SIZE)
    bias: bool = True


class LinearOp(Op):
    name = "linear"
    language = Linear
    saves = ("input",)

    def resolve(self, args: Linear, channels: Dim, dilation: Dim = 1) -> LinearAttrs:
        return LinearAttrs(args.out, args.bias)

    def out_channels(self, attrs: LinearAttrs, channels: Dim) -> Dim:
        return attrs.out

    def shape(
        self, attrs: LinearAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        if len(inputs[0]) != 1:
            raise SpecError(
                f"{what}: a linear layer needs a flat vector but gets {fmt(inputs[0])}", where
            )
        return (attrs.out,)

    def cost(self, attrs: LinearAttrs, in_shape: Shape, shape: Shape) -> tuple[int, int]:
        weights = attrs.out * math.prod(in_shape)
        return weights + (attrs.out if attrs.bias else 0), weights

    def state(self, attrs: LinearAttrs, in_shape: Shape, shape: Shape) -> dict[str, Shape]:
        found = {"weight": (attrs.out, in_shape[0])}
        if attrs.bias:
            found["bias"] = (attrs.out,)
        return found

    def initial(self, state: Any, rng: np.random.Generator, zero: bool) -> dict[str, np.ndarray]:
        fan_in = state["weight"][1]
        return {key: torch_default(shape, fan_in, rng) for key, shape in state.items()}

    def torch(self, attrs: LinearAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        return f"nn.Linear({channels}, {attrs.out}{'' if attrs.bias else ', bias=False'})"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        inputs = [xs[0], em.param(f"{node.name}.weight")]
        if node.attrs.bias:
            inputs.append(em.param(f"{node.name}.bias"))
        return em.node("Gemm", node.name, inputs, transB=1)
