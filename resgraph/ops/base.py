"""What every op definition provides, and the helpers they share.

An op's attributes are a frozen dataclass whose size fields hold `Dim`s: expressions over a
block's names in a template (resolved once per block type, rendered into a generated class),
numbers in a graph node (`concrete` evaluates the same record). Both views come from one
`resolve`, so the class a backend writes and the node the passes count cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from resgraph import expr
from resgraph.errors import Location, SpecError
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import MAX_SIZE, Model

if TYPE_CHECKING:
    import numpy as np

    from resgraph.backends.onnx_export import Emitter

Locate = Callable[[str], Location | None]


# Metadata marking a size field of an attribute record, with the least value it may take:
# `field(metadata=SIZE)`. `concrete` evaluates and checks exactly these fields.
SIZE = {"minimum": 1}
OFFSET = {"minimum": 0}  # paddings, and counts that the shape rule checks itself


def concrete(attrs: Any, scope: Mapping[str, int], locate: Locate, what: str) -> Any:
    """The record with every size evaluated over `scope` and range-checked, errors located."""
    values = {}
    for f in dataclasses.fields(attrs):
        value = getattr(attrs, f.name)
        if "minimum" in f.metadata:
            value = evaluate(
                value, scope, locate(f.name), f"{what}: {f.name}", f.metadata["minimum"]
            )
        values[f.name] = value
    return dataclasses.replace(attrs, **values)


def rendered(attrs: Any) -> Any:
    """The record with every size as Python source, for a generated constructor."""
    values = {
        f.name: expr.render(getattr(attrs, f.name))
        for f in dataclasses.fields(attrs)
        if "minimum" in f.metadata
    }
    return dataclasses.replace(attrs, **values)


def evaluate(
    value: Dim,
    scope: Mapping[str, int],
    where: Location | None,
    what: str,
    minimum: int = 1,
    maximum: int = MAX_SIZE,
) -> int:
    """Evaluate a size and check its range, with a located error."""
    try:
        result = expr.evaluate(value, scope)
    except expr.ExprError as exc:
        raise SpecError(f"{what}: {exc}", where) from None
    if result < minimum:
        shown = f" ({value} = {result})" if isinstance(value, str) else ""
        raise SpecError(f"{what} must be at least {minimum}, got {result}{shown}", where)
    if result > maximum:
        raise SpecError(f"{what} is {result:,}; the limit is {maximum:,}", where)
    return result


def kwargs(**values: Any) -> str:
    """Keyword arguments as source, leaving out those that are None (the default)."""
    return ", ".join(f"{key}={value}" for key, value in values.items() if value is not None)


def fmt(shape: Shape) -> str:
    """A shape as people write it: 64x56x56."""
    return "x".join(str(d) for d in shape)


def feature_map(inputs: list[Shape], what: str, where: Location | None) -> Shape:
    """The input as a CxHxW map, or a located error."""
    shape = inputs[0]
    if len(shape) != 3:
        raise SpecError(f"{what}: needs a CxHxW feature map but gets {fmt(shape)}", where)
    return shape


def spatial(
    size: int,
    kernel: int,
    stride: int,
    padding: int,
    ceil_mode: bool,
    axis: str,
    what: str,
    where: Location | None,
) -> int:
    """One output size of a window op, as PyTorch computes it; `kernel` is the dilated span."""
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


def windowed(
    attrs: Any, inputs: list[Shape], what: str, where: Location | None, channels: int | None = None
) -> Shape:
    """The output of a kernel/stride/padding window over a map (conv, pools)."""
    c, h, w = feature_map(inputs, what, where)
    k, s, p = span(attrs), attrs.stride, attrs.padding
    ceil_mode = getattr(attrs, "ceil_mode", False)
    return (
        c if channels is None else channels,
        spatial(h, k, s, p, ceil_mode, "height", what, where),
        spatial(w, k, s, p, ceil_mode, "width", what, where),
    )


def span(attrs: Any) -> int:
    """A window's extent on its input: the kernel, spread by its dilation (convs)."""
    return getattr(attrs, "dilation", 1) * (attrs.kernel - 1) + 1


def onnx_window(attrs: Any) -> dict[str, list[int]]:
    """ONNX's kernel_shape, strides and pads for a square window."""
    k, s, p = attrs.kernel, attrs.stride, attrs.padding
    return {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}


class Op:
    """One op: language, attribute resolution, shape, cost, weights, PyTorch and ONNX.

    Subclasses override what applies to them; `resgraph.ops.OPS` registers one instance each.
    """

    name: ClassVar[str]
    language: ClassVar[type[Model] | None] = None  # the spec's settings model; None: internal
    torch_helper: ClassVar[str] = ""  # source of a helper class its constructor uses

    def resolve(self, args: Any, channels: Dim, dilation: Dim = 1) -> Any:
        """The attribute record from the spec's settings, defaults applied, sizes as Dims.

        `dilation` is the block's at this layer (a name in a block type, else 1): an op that
        dilates takes it as its default.
        """
        raise SpecError(f"{self.name} is not written in specs")

    def out_channels(self, attrs: Any, channels: Dim) -> Dim:
        """Output channels, from the input's (numbers or expressions alike)."""
        return channels

    def shape(self, attrs: Any, inputs: list[Shape], what: str, where: Location | None) -> Shape:
        """The output shape, or a located SpecError saying what to change."""
        return inputs[0]

    def cost(self, attrs: Any, in_shape: Shape, shape: Shape) -> tuple[int, int]:
        """(parameters, multiply-accumulates); MACs count convs and linears only."""
        return 0, 0

    def state(self, attrs: Any, in_shape: Shape, shape: Shape) -> dict[str, Shape]:
        """state_dict entries (key suffix -> shape), as the generated module holds them."""
        return {}

    def initial(
        self, state: Mapping[str, Shape], rng: np.random.Generator, zero: bool
    ) -> dict[str, np.ndarray]:
        """Fresh values for `state`, as the generated module's reset_parameters draws them."""
        return {}

    def torch(self, attrs: Any, channels: str, *, biased: bool, inplace: bool) -> str:
        """The constructor's source, sizes already source text; `biased`: a BN folds in."""
        raise SpecError(f"a {self.name} layer has no module of its own")

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        """Emit ONNX nodes computing `node` from tensors `xs`; return its output tensor."""
        raise NotImplementedError(self.name)

    def text(self, attrs: Any) -> str:
        """A short description for design tables: `conv 3x3/2 64`."""
        return self.name

    def foldable(self) -> bool:
        """Whether a BN reading this op's output can fold into it."""
        return False

    def window(self, attrs: Any, in_shape: Shape) -> tuple[int, int]:
        """(span, stride) of the window each output reads, for receptive fields: (1, 1) for
        pointwise ops; a global op spans its whole input."""
        return 1, 1

    # What autograd keeps for the backward pass, for the memory estimate: "input" (its first
    # input's tensor), "output" (its own), "indices" (int64, one per output element),
    # "statistics" (fp32 mean and 1 / std per channel).
    saves: ClassVar[tuple[str, ...]] = ()


def he_normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """He (MSRA) normal init, fan_out, as the generated reset_parameters draws conv weights."""
    import numpy as np

    std = np.float32(math.sqrt(2.0 / (shape[0] * math.prod(shape[2:]))))
    return rng.standard_normal(shape, dtype=np.float32) * std


def torch_default(shape: Shape, fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's default U(+-1/sqrt(fan_in)), as nn.Linear draws its weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype("float32")


def zeros(shape: Shape) -> np.ndarray:
    import numpy as np

    return np.zeros(shape, dtype=np.float32)
