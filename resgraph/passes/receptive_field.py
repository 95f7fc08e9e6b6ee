"""Receptive field pass: each node's receptive field and jump (effective stride) on the input.

A window of span k (dilation included) and stride s over a map whose pixels are `jump`
input pixels apart, each seeing `rf` input pixels, sees rf + (k - 1) * jump and moves
jump * s. Where paths join (an add), the largest over the paths is kept, so the figures
are exact for residual graphs. Padding is ignored: a border pixel's field may extend past
the image. Each op says its window (resgraph.ops: `Op.window`).
"""

from __future__ import annotations

from dataclasses import dataclass

from resgraph.ir import INPUT, Network
from resgraph.ops import OPS


@dataclass(frozen=True)
class Field:
    size: int  # input pixels one output pixel sees, along each axis
    jump: int  # input pixels between neighbouring output pixels


def receptive_fields(network: Network) -> dict[str, Field]:
    """Every node's receptive field and jump, in topological order (the input: 1, 1)."""
    fields = {INPUT: Field(1, 1)}
    for name, node in network.nodes.items():
        if name == INPUT:
            continue
        size = max(fields[i].size for i in node.inputs)
        jump = max(fields[i].jump for i in node.inputs)
        span, stride = OPS[node.op].window(node.attrs, node.in_shape)
        fields[name] = Field(size + (span - 1) * jump, jump * stride)
    return fields
