"""conv: 2-D convolution, square kernel, no bias by default (a BN follows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from resgraph import expr
from resgraph.errors import Location, SpecError
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import IntExpr, Model, Name, layer_name
from resgraph.ops.base import (
    OFFSET,
    SIZE,
    Op,
    feature_map,
    he_normal,
    kwargs,
    onnx_window,
    span,
    windowed,
    zeros,
)

if TYPE_CHECKING:
    import numpy as np

    from resgraph.backends.onnx_export import Emitter


class Conv(Model):
    """2-D convolution; padding defaults to (kernel - 1) // 2, 'same' for odd kernels."""

    name: Name | None = layer_name()
    out: IntExpr = Field(description="Output channels.")
    kernel: IntExpr = Field(description="Kernel size (square).")
    stride: IntExpr = Field(
        1,
        description=(
            "Stride; in a downsampling block the `stride_on` layer's stride is multiplied by the "
            "block's."
        ),
    )
    padding: IntExpr | None = Field(
        None, description="Zero padding on each side; none means (kernel - 1) // 2."
    )
    groups: IntExpr = Field(
        1, description="Grouped convolution; must divide both input and output channels."
    )
    bias: bool = Field(False, description="Add a bias (no bias by default: a BN follows).")
    dilation: IntExpr | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description=(
            "Dilation (atrous rate). None means 1 outside block types; in a block type's branch, "
            "the block's: its first conv whose kernel is not 1 takes `first_dilation`, later "
            "ones `dilation` (torchvision's and timm's rule for dilated stages). Padding then "
            "defaults to dilation * ((kernel - 1) // 2)."
        ),
    )


@dataclass(frozen=True)
class ConvAttrs:
    out: Dim = field(metadata=SIZE)
    kernel: Dim = field(metadata=SIZE)
    stride: Dim = field(metadata=SIZE)
    padding: Dim = field(metadata=OFFSET)
    groups: Dim = field(metadata=SIZE)
    bias: bool = False
    dilation: Dim = field(default=1, metadata=SIZE)


class ConvOp(Op):
    name = "conv"
    language = Conv

    def resolve(self, args: Conv, channels: Dim, dilation: Dim = 1) -> ConvAttrs:
        if args.dilation is not None:
            dilation = args.dilation
        elif args.kernel == 1:
            dilation = 1  # a 1x1 conv has nothing to dilate: it leaves the block's to the next
        padding = args.padding
        if padding is None:
            padding = expr.times(expr.halved_less_one(args.kernel), dilation)
        return ConvAttrs(
            args.out, args.kernel, args.stride, padding, args.groups, args.bias, dilation
        )

    def out_channels(self, attrs: ConvAttrs, channels: Dim) -> Dim:
        return attrs.out

    def shape(
        self, attrs: ConvAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        c = feature_map(inputs, what, where)[0]
        if c % attrs.groups or attrs.out % attrs.groups:
            raise SpecError(
                f"{what}: groups={attrs.groups} must divide both its input channels ({c}) and "
                f"out ({attrs.out})",
                where,
            )
        return windowed(attrs, inputs, what, where, channels=attrs.out)

    def cost(self, attrs: ConvAttrs, in_shape: Shape, shape: Shape) -> tuple[int, int]:
        weights = attrs.out * (in_shape[0] // attrs.groups) * attrs.kernel**2
        params = weights + (attrs.out if attrs.bias else 0)
        return params, weights * shape[1] * shape[2]

    def state(self, attrs: ConvAttrs, in_shape: Shape, shape: Shape) -> dict[str, Shape]:
        k = attrs.kernel
        found = {"weight": (attrs.out, in_shape[0] // attrs.groups, k, k)}
        if attrs.bias:
            found["bias"] = (attrs.out,)
        return found

    def initial(self, state: Any, rng: np.random.Generator, zero: bool) -> dict[str, np.ndarray]:
        init = {"weight": he_normal(state["weight"], rng)}
        if "bias" in state:
            init["bias"] = zeros(state["bias"])
        return init

    def torch(self, attrs: ConvAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        kw = kwargs(
            kernel_size=attrs.kernel,
            stride=None if attrs.stride == "1" else attrs.stride,
            padding=None if attrs.padding == "0" else attrs.padding,
            dilation=None if attrs.dilation == "1" else attrs.dilation,
            groups=None if attrs.groups == "1" else attrs.groups,
            bias=attrs.bias or biased,
        )
        return f"nn.Conv2d({channels}, {attrs.out}, {kw})"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        weight, bias = em.weights[f"{node.name}.weight"], em.weights.get(f"{node.name}.bias")
        weight, bias = em.folded(node.name, weight, bias)
        inputs = [xs[0], em.array(f"{node.name}.weight", weight)]
        if bias is not None:
            inputs.append(em.array(f"{node.name}.bias", bias))
        attrs = node.attrs
        dilated = {"dilations": [attrs.dilation] * 2} if attrs.dilation != 1 else {}
        return em.node(
            "Conv", node.name, inputs, group=attrs.groups, **dilated, **onnx_window(attrs)
        )

    def text(self, attrs: ConvAttrs) -> str:
        k, s = attrs.kernel, attrs.stride
        groups = f" g{attrs.groups}" if attrs.groups != 1 else ""
        dilated = f" d{attrs.dilation}" if attrs.dilation != 1 else ""
        return f"conv {k}x{k}{f'/{s}' if s != 1 else ''} {attrs.out}{groups}{dilated}"

    def foldable(self) -> bool:
        return True

    saves = ("input",)

    def window(self, attrs: ConvAttrs, in_shape: Shape) -> tuple[int, int]:
        return span(attrs), attrs.stride
