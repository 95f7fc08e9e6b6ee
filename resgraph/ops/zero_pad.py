"""zero_pad: option A's parameter-free shortcut, subsample by the stride and append zeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resgraph.errors import Location
from resgraph.ir import Node, Shape
from resgraph.ops.base import Op, feature_map

if TYPE_CHECKING:
    from resgraph.backends.onnx_export import Emitter

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ZeroPadAttrs:
    stride: int
    pad_before: int
    pad_after: int


HELPER = '''
class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by the stride, then append zero channels. No parameters."""

    def __init__(self, stride: int, pad_before: int, pad_after: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (0, 0, 0, 0, pad_before, pad_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x[:, :, :: self.stride, :: self.stride], self.pad)
'''


class ZeroPadOp(Op):
    name = "zero_pad"

    def window(self, attrs: ZeroPadAttrs, in_shape: Shape) -> tuple[int, int]:
        return 1, attrs.stride

    torch_helper = HELPER

    def shape(
        self, attrs: ZeroPadAttrs, inputs: list[Shape], what: str, where: Location | None
    ) -> Shape:
        c, h, w = feature_map(inputs, what, where)
        s = attrs.stride
        return (c + attrs.pad_before + attrs.pad_after, -(-h // s), -(-w // s))

    def torch(self, attrs: ZeroPadAttrs, channels: str, *, biased: bool, inplace: bool) -> str:
        return f"ZeroPadShortcut({attrs.stride}, {attrs.pad_before}, {attrs.pad_after})"

    def onnx(self, em: Emitter, node: Node, xs: list[str]) -> str:
        """x[:, :, ::stride, ::stride] as a Slice, then zero channels before and after (Pad)."""
        name, attrs, x = node.name, node.attrs, xs[0]
        if attrs.stride > 1:
            steps = [attrs.stride] * 2
            bounds = {"starts": [0, 0], "ends": [INT64_MAX] * 2, "axes": [2, 3], "steps": steps}
            inputs = [em.int64(f"{name}/{k}", v) for k, v in bounds.items()]
            x = em.node("Slice", f"{name}/subsample", [x, *inputs])
        pads = [0, attrs.pad_before, 0, 0, 0, attrs.pad_after, 0, 0]
        return em.node("Pad", name, [x, em.int64(f"{name}/pads", pads)])
