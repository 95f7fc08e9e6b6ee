"""Cost pass: parameters and multiply-accumulates per node.

MACs count conv and linear layers only, the paper's convention (its Table 1 FLOPs are
multiply-adds). Parameters are learnable tensors as torchvision counts them (BN: weight
and bias; running statistics are buffers).
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx


def node_cost(
    op: str, attrs: dict[str, Any], in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[int, int]:
    """(params, macs) of one op."""
    if op == "conv":
        weights = attrs["out"] * (in_shape[0] // attrs["groups"]) * attrs["kernel"] ** 2
        params = weights + (attrs["out"] if attrs["bias"] else 0)
        return params, weights * out_shape[1] * out_shape[2]
    if op == "linear":
        weights = attrs["out"] * math.prod(in_shape)
        return weights + (attrs["out"] if attrs["bias"] else 0), weights
    if op == "se":
        c, hidden = in_shape[0], attrs["hidden"]
        return 2 * c * hidden + hidden + c, 2 * c * hidden
    if op == "bn":
        return 2 * in_shape[0], 0
    return 0, 0


def annotate(graph: nx.DiGraph) -> None:
    """Write `params` and `macs` on every node, and totals on the graph."""
    total_params = total_macs = 0
    for _, data in graph.nodes(data=True):
        in_shape = data["in_shapes"][0] if data["in_shapes"] else data["shape"]
        params, macs = node_cost(data["op"], data["attrs"], in_shape, data["shape"])
        data["params"], data["macs"] = params, macs
        total_params += params
        total_macs += macs
    graph.graph["params"], graph.graph["macs"] = total_params, total_macs
