"""The trainer's only contact with the compiler: a module from a compiled spec, and graph facts."""

from __future__ import annotations

import networkx as nx
import torch

from resgraph.pipeline import Compiled


def model_from_spec(compiled: Compiled, num_classes: int) -> torch.nn.Module:
    """The generated PyTorch module, its head sized for the dataset's classes."""
    from resgraph.backends.pytorch import build_module

    return build_module(compiled, num_classes=num_classes)


def weighted_layers(graph: nx.DiGraph) -> int:
    """Depth as the paper counts it: convolutions and fc layers, projection shortcuts excluded."""
    return sum(
        1
        for _, node in graph.nodes(data=True)
        if node["op"] in ("conv", "linear") and node.get("role") != "shortcut"
    )


def conv3x3_bns(graph: nx.DiGraph) -> list[str]:
    """Names of the BN layers right after each 3x3 convolution, in the network's order."""
    names = []
    for name in nx.topological_sort(graph):
        node = graph.nodes[name]
        if node["op"] != "bn":
            continue
        source = graph.nodes[node["inputs"][0]]
        if source["op"] == "conv" and source["attrs"].get("kernel") == 3:
            names.append(name)
    return names
