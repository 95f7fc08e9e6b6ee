"""se: squeeze-and-excitation (Hu et al. 2018), gating channels by an MLP of their means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from resgraph import expr
from resgraph.errors import Location, SpecError
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import IntExpr, Model, Name, layer_name
from resgraph.ops.base import OFFSET, SIZE, Op, feature_map, he_normal, zeros

if TYPE_CHECKING:
    import numpy as np

    from resgraph.backends.onnx_export import Emitter


class SqueezeExcite(Model):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from a 2-layer bottleneck MLP."""

    name: Name | None = layer_name()
    reduction: IntExpr = Field(16, description="Hidden units are channels // reduction.")


@dataclass(frozen=True)
class SqueezeExciteAttrs:
    reduction: Dim = field(metadata=SIZE)
    hidden: Dim = field(metadata=OFFSET)  # channels // reduction; the shape rule says when it is 0


HELPER = '''
class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): gate each channel by an MLP of channel means."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.fc2(self.relu(self.fc1(scale)))
        return x * scale.sigmoid()
'''


class SqueezeExciteOp(Op):
    name = "se"
    language = SqueezeExcite
    torch_helper = HELPER

    def resolve(self, args: SqueezeExcite, channels: Dim, dilation: Dim = 1) -> SqueezeExciteAttrs:
        return SqueezeExciteAttrs(args.reduction, expr.divided(channels, args.reduction))

    def shape(
        self, attrs: SqueezeExciteAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        shape = feature_map(inputs, what, where)
        if attrs.hidden < 1:
            raise SpecError(
                f"{what}: reduction {attrs.reduction} leaves no hidden units for "
                f"{shape[0]} channels; use a smaller reduction",
                where,
            )
        return shape

    def cost(self, attrs: SqueezeExciteAttrs, in_shape: Shape, shape: Shape) -> tuple[int, int]:
        c, hidden = in_shape[0], attrs.hidden
        return 2 * c * hidden + hidden + c, 2 * c * hidden

    def state(self, attrs: SqueezeExciteAttrs, in_shape: Shape, shape: Shape) -> dict[str, Shape]:
        c, hidden = shape[0], attrs.hidden
        return {
            "fc1.weight": (hidden, c, 1, 1),
            "fc1.bias": (hidden,),
            "fc2.weight": (c, hidden, 1, 1),
            "fc2.bias": (c,),
        }

    def initial(self, state: Any, rng: np.random.Generator, zero: bool) -> dict[str, np.ndarray]:
        """Both fcs are 1x1 convs: He weights, zero biases."""
        return {
            key: he_normal(shape, rng) if key.endswith("weight") else zeros(shape)
            for key, shape in state.items()
        }

    def torch(
        self, attrs: SqueezeExciteAttrs, channels: str, *, biased: bool, inplace: bool
    ) -> str:
        return f"SqueezeExcite({channels}, {attrs.hidden})"

    saves = ("input",)  # the gate's product keeps x (its small gate tensors are not counted)

    def window(self, attrs: SqueezeExciteAttrs, in_shape: Shape) -> tuple[int, int]:
        return max(in_shape[1:]), 1  # the gate reads the whole map

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        """x * sigmoid(fc2(relu(fc1(mean(x))))), the fcs as 1x1 convs with biases."""
        name = node.name
        gate = em.node("GlobalAveragePool", f"{name}/squeeze", xs)
        for fc in ("fc1", "fc2"):
            params = [em.param(f"{name}.{fc}.weight"), em.param(f"{name}.{fc}.bias")]
            gate = em.node("Conv", f"{name}/{fc}", [gate, *params], kernel_shape=[1, 1])
            if fc == "fc1":
                gate = em.node("Relu", f"{name}/relu", [gate])
        gate = em.node("Sigmoid", f"{name}/gate", [gate])
        return em.node("Mul", name, [xs[0], gate])
