"""Cost pass: parameters and multiply-accumulates per node, by each op's own rule.

MACs count conv and linear layers only, the paper's convention (its Table 1 FLOPs are
multiply-adds). Parameters are learnable tensors as torchvision counts them (BN: weight
and bias; running statistics are buffers).
"""

from __future__ import annotations

import dataclasses

from resgraph.ir import Network
from resgraph.ops import OPS


def annotate(network: Network) -> Network:
    """The network with `params` and `macs` on every node, and their totals."""
    nodes = {}
    for name, node in network.nodes.items():
        params, macs = OPS[node.op].cost(node.attrs, node.in_shape, node.shape)
        nodes[name] = dataclasses.replace(node, params=params, macs=macs)
    return dataclasses.replace(
        network,
        nodes=nodes,
        params=sum(n.params for n in nodes.values()),
        macs=sum(n.macs for n in nodes.values()),
    )
