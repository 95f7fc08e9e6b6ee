"""Fold pass: which BN folds into which conv for inference, decided once for every backend.

A BN folds into the conv it reads only when nothing else reads that conv's output: a
projection shortcut fed from the conv (`projection_from`) must see it before the BN, and a
feature map returned by a features head is the conv's output too.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from resgraph.ir import Network
from resgraph.ops import OPS


def annotate(network: Network) -> Network:
    """The network with `folds`: BN node -> the conv node that absorbs it."""
    readers = Counter(source for node in network.nodes.values() for source in node.inputs)
    readers.update(feature.node for feature in network.features)  # a returned map is read too
    folds = {
        node.name: node.inputs[0]
        for node in network.nodes.values()
        if node.op == "bn"
        and OPS[network.nodes[node.inputs[0]].op].foldable()
        and readers[node.inputs[0]] == 1
    }
    return dataclasses.replace(network, folds=folds)
