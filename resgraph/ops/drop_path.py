"""drop_path: stochastic depth on a residual branch, as timm applies it to ResNets.

The builder puts one before the add of every residual block when the spec sets
`drop_path_rate`; block i of N gets `drop_path_rate * i / (N - 1)`. While training, each
sample's branch is zeroed with that probability and kept ones are scaled by 1 / (1 - p);
in eval and in ONNX it is the identity. A block whose rate is 0 gets no module (None), as
timm's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resgraph.ir import Node
from resgraph.ops.base import Op

if TYPE_CHECKING:
    from resgraph.backends.onnx_export import Emitter

ARGUMENT = "drop_path"  # the block constructor's argument holding its probability


@dataclass(frozen=True)
class DropPathAttrs:
    prob: float | str  # a node's probability; in a block template, the argument's name


HELPER = '''
class DropPath(nn.Module):
    """Stochastic depth (timm's DropPath): while training, zero each sample's residual branch
    with probability drop_prob and scale the kept ones by 1 / (1 - drop_prob)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)
'''


class DropPathOp(Op):
    name = "drop_path"
    torch_helper = HELPER
    saves = ()  # x * mask keeps only the per-sample mask (B values, not counted)

    def torch(self, attrs: DropPathAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        return f"DropPath({attrs.prob}) if {attrs.prob} > 0 else None"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        return xs[0]  # the identity at inference

    def text(self, attrs: DropPathAttrs) -> str:
        return f"drop path {attrs.prob:.3g}" if isinstance(attrs.prob, float) else self.name
