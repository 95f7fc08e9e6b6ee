"""bn: batch normalisation over channels; folds into the conv before it for inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from resgraph.errors import Location
from resgraph.expr import Dim
from resgraph.ir import Node, Shape
from resgraph.language import Model, Name, layer_name
from resgraph.ops.base import Op, feature_map, kwargs

if TYPE_CHECKING:
    import numpy as np

    from resgraph.backends.onnx_export import Emitter

DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.1
STATISTICS = ("weight", "bias", "running_mean", "running_var")  # what a fold reads


class BatchNorm(Model):
    """Batch normalisation over channels."""

    name: Name | None = layer_name()
    eps: float = Field(DEFAULT_EPS, gt=0, lt=1, description="Added to the variance.")
    momentum: float = Field(
        DEFAULT_MOMENTUM, gt=0, lt=1, description="Running statistics' update rate, as in PyTorch."
    )


@dataclass(frozen=True)
class BatchNormAttrs:
    eps: float = DEFAULT_EPS
    momentum: float = DEFAULT_MOMENTUM


class BatchNormOp(Op):
    name = "bn"
    language = BatchNorm
    saves = ("input", "statistics")  # in training: its input, the batch's mean and 1 / std

    def resolve(self, args: BatchNorm, channels: Dim, dilation: Dim = 1) -> BatchNormAttrs:
        return BatchNormAttrs(args.eps, args.momentum)

    def shape(
        self, attrs: BatchNormAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        return feature_map(inputs, what, where)

    def cost(self, attrs: BatchNormAttrs, in_shape: Shape, shape: Shape) -> tuple[int, int]:
        return 2 * in_shape[0], 0

    def state(self, attrs: BatchNormAttrs, in_shape: Shape, shape: Shape) -> dict[str, Shape]:
        return {**{key: shape[:1] for key in STATISTICS}, "num_batches_tracked": ()}

    def initial(self, state: Any, rng: np.random.Generator, zero: bool) -> dict[str, np.ndarray]:
        """Weight 1 (0 on a branch's last BN under zero_init_residual), bias 0, stats 0/1."""
        import numpy as np

        (c,) = state["weight"]
        return {
            "weight": np.full(c, 0.0 if zero else 1.0, np.float32),
            "bias": np.zeros(c, np.float32),
            "running_mean": np.zeros(c, np.float32),
            "running_var": np.ones(c, np.float32),
            "num_batches_tracked": np.zeros((), np.int64),
        }

    def torch(self, attrs: BatchNormAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        kw = kwargs(
            eps=None if attrs.eps == DEFAULT_EPS else repr(attrs.eps),
            momentum=None if attrs.momentum == DEFAULT_MOMENTUM else repr(attrs.momentum),
        )
        return f"nn.BatchNorm2d({channels}{', ' + kw if kw else ''})"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        params = [em.param(f"{node.name}.{k}") for k in STATISTICS]
        return em.node("BatchNormalization", node.name, [xs[0], *params], epsilon=node.attrs.eps)
