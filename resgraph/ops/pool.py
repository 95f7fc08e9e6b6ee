"""maxpool and avgpool: square windows; stride defaults to the kernel, padding to half of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from resgraph import expr
from resgraph.errors import Location, SpecError
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import IntExpr, Model, Name, layer_name
from resgraph.ops.base import OFFSET, SIZE, Op, kwargs, onnx_window, windowed

if TYPE_CHECKING:
    from resgraph.backends.onnx_export import Emitter


class Pool(Model):
    """Max or average pooling; stride defaults to the kernel, padding to (kernel - 1) // 2."""

    name: Name | None = layer_name()
    kernel: IntExpr = Field(description="Window size (square).")
    stride: IntExpr | None = Field(None, description="Stride; none means the kernel size.")
    padding: IntExpr | None = Field(
        None, description="Padding on each side; none means (kernel - 1) // 2."
    )
    ceil_mode: bool = Field(False, description="Round output sizes up, as PyTorch's `ceil_mode`.")


class AvgPool(Pool):
    count_include_pad: bool = Field(
        True, description="Count padded positions in the average, as PyTorch's `count_include_pad`."
    )


@dataclass(frozen=True)
class PoolAttrs:
    kernel: Dim = field(metadata=SIZE)
    stride: Dim = field(metadata=SIZE)
    padding: Dim = field(metadata=OFFSET)
    ceil_mode: bool = False
    count_include_pad: bool = True  # avgpool only


def emit_pool(em: Emitter, op_type: str, node: Node, xs: list[str], **attrs: Any) -> str:
    """A pool node giving PyTorch's output, written without ONNX's ceil_mode.

    ONNX runtimes disagree with PyTorch (and with their own shape inference) on ceil_mode's
    last window. With ceil_mode the window is written in floor mode with the end padding that
    yields PyTorch's size. Where that padding passes PyTorch's (an average counting padding,
    whose last window PyTorch divides by its part inside the padded input), the padding
    becomes zeros of an explicit Pad, which the average then counts as input.
    """
    a = node.attrs
    k, s, p = a.kernel, a.stride, a.padding
    window: dict[str, Any] = {**onnx_window(a), "ceil_mode": 0, **attrs}
    if not a.ceil_mode:
        return em.node(op_type, node.name, xs, **window)
    ends = [
        max((out - 1) * s + k - size - p, 0)
        for size, out in zip(node.in_shape[1:], node.shape[1:], strict=True)
    ]
    if not (attrs.get("count_include_pad") and max(ends) > p):
        return em.node(op_type, node.name, xs, **{**window, "pads": [p, p, *ends]})
    zeros = [0, 0, p, p, 0, 0, *(min(end, p) for end in ends)]
    padded = em.node("Pad", f"{node.name}/pad", [xs[0], em.int64(f"{node.name}/pads", zeros)])
    extra = [max(end - p, 0) for end in ends]
    window = {**window, "pads": [0, 0, *extra], "count_include_pad": 0}
    return em.node(op_type, node.name, [padded], **window)


class MaxPoolOp(Op):
    name = "maxpool"
    language = Pool
    torch_class: ClassVar[str] = "MaxPool2d"  # the nn module it constructs

    def resolve(self, args: Pool, channels: Dim, dilation: Dim = 1) -> PoolAttrs:
        return PoolAttrs(
            args.kernel,
            args.kernel if args.stride is None else args.stride,
            expr.halved_less_one(args.kernel) if args.padding is None else args.padding,
            args.ceil_mode,
            getattr(args, "count_include_pad", True),
        )

    def shape(
        self, attrs: PoolAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        if attrs.padding * 2 > attrs.kernel:
            raise SpecError(
                f"{what}: padding {attrs.padding} is more than half of kernel {attrs.kernel}",
                where,
            )
        return windowed(attrs, inputs, what, where)

    def torch(self, attrs: PoolAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        kw = kwargs(
            kernel_size=attrs.kernel,
            stride=attrs.stride,
            padding=None if attrs.padding == "0" else attrs.padding,
            ceil_mode=True if attrs.ceil_mode else None,
            count_include_pad=None if attrs.count_include_pad else False,
        )
        return f"nn.{self.torch_class}({kw})"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return emit_pool(em, "MaxPool", node, xs)

    saves = ("input", "indices")

    def window(self, attrs: PoolAttrs, in_shape: Shape) -> tuple[int, int]:
        return attrs.kernel, attrs.stride

    def text(self, attrs: PoolAttrs) -> str:
        k, s = attrs.kernel, attrs.stride
        return f"{self.name} {k}x{k}{f'/{s}' if s != 1 else ''}"


class AvgPoolOp(MaxPoolOp):
    name = "avgpool"
    language = AvgPool
    torch_class = "AvgPool2d"
    saves = ("input",)

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return emit_pool(
            em, "AveragePool", node, xs, count_include_pad=int(node.attrs.count_include_pad)
        )
