"""The trainer's only contact with the compiler: a module from a compiled spec, and IR facts."""

from __future__ import annotations

import torch

from resgraph.ir import Network
from resgraph.pipeline import Compiled


def model_from_spec(compiled: Compiled, num_classes: int) -> torch.nn.Module:
    """The generated PyTorch module, its head sized for the dataset's classes."""
    from resgraph.backends.pytorch import build_module

    return build_module(compiled, num_classes=num_classes)


def weighted_layers(network: Network) -> int:
    """Depth as the paper counts it: convolutions and fc layers, projection shortcuts excluded."""
    return sum(
        1
        for node in network.nodes.values()
        if node.op in ("conv", "linear") and node.role != "shortcut"
    )


def conv3x3_bns(network: Network) -> list[str]:
    """Names of the BN layers right after each 3x3 convolution, in the network's order."""
    return [
        node.name
        for node in network.nodes.values()
        if node.op == "bn"
        and network.nodes[node.inputs[0]].op == "conv"
        and network.nodes[node.inputs[0]].attrs.kernel == 3
    ]
