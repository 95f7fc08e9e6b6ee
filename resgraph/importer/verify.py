"""Compile an imported spec and hold its graph against the source's layers, node by node.

The compiled network's stem, blocks and head list their nodes in order; each must be the
layer found at that place (same op, attributes, output shape). What differs is reported
per stage, so the importer can try the stage's next candidate. The aligned pairs also say
where each source weight goes in the generated module's state_dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from resgraph.importer.layers import Layer
from resgraph.importer.structure import Found
from resgraph.ir import Network, Node

# the source attribute each IR attribute is compared with, per op
COMPARED = {
    "conv": ("out", "kernel", "stride", "padding", "groups", "bias", "dilation"),
    "maxpool": ("kernel", "stride", "padding", "ceil_mode"),
    "avgpool": ("kernel", "stride", "padding", "ceil_mode", "count_include_pad"),
    "linear": ("out", "bias"),
    "se": ("hidden",),
}
ZERO_PAD = {"stride": "stride", "pad_before": "before", "pad_after": "after"}

Pairs = list[tuple[Node, Layer]]


def align(network: Network, found: Found, stage_blocks: list[int]) -> tuple[Pairs, set[int], str]:
    """(node, layer) pairs; the stages whose nodes differ; the first difference, in words."""
    pairs: Pairs = []
    bad: set[int] = set()
    first = ""

    def compare(nodes: list[Node], layers: list[Layer], stage: int | None) -> None:
        nonlocal first
        problem = _difference(nodes, layers)
        if problem:
            first = first or problem
            if stage is not None:
                bad.add(stage)
        else:
            pairs.extend(zip(nodes, layers, strict=True))

    compare([network.nodes[n] for n in network.stem], found.stem, None)
    blocks = iter(found.blocks)
    for s, (stage, count) in enumerate(zip(network.stages, stage_blocks, strict=True)):
        if len(stage.blocks) != count:
            bad.add(s)
            first = first or f"stage {stage.name} has {len(stage.blocks)} blocks, not {count}"
            for _ in range(count):
                next(blocks)
            continue
        for block_name in stage.blocks:
            block = next(blocks)
            layers = block.pre + block.branch + block.shortcut
            layers += ([block.add] if block.add else []) + block.post
            nodes = [network.nodes[n] for n in network.blocks[block_name].nodes]
            compare(nodes, layers, s)
    head = [node for node in network.nodes.values() if node.role == "head"]
    compare(head, [*found.head_layers, found.pool, found.flatten, found.classifier], None)
    return pairs, bad, first


def _difference(nodes: list[Node], layers: list[Layer]) -> str:
    if len(nodes) != len(layers):
        names = ", ".join(node.name for node in nodes)
        return f"[{names}] are {len(nodes)} nodes for {len(layers)} source layers"
    for node, layer in zip(nodes, layers, strict=True):
        problem = _node_difference(node, layer)
        if problem:
            return f"{node.name}: {problem} (source {layer.describe()})"
    return ""


def _node_difference(node: Node, layer: Layer) -> str:
    if node.op != layer.kind:
        return f"is a {node.op}, the source has a {layer.kind}"
    if tuple(node.shape) != tuple(layer.shape):
        return f"has shape {node.shape}, the source {layer.shape}"
    attrs = dataclasses.asdict(node.attrs) if dataclasses.is_dataclass(node.attrs) else {}
    keys = ZERO_PAD if node.op == "zero_pad" else {k: k for k in COMPARED.get(node.op, ())}
    for ir_key, source_key in keys.items():
        if attrs.get(ir_key) != layer.attrs.get(source_key):
            return f"{ir_key} is {attrs.get(ir_key)}, the source's {layer.attrs.get(source_key)}"
    if node.op == "bn" and abs(attrs["eps"] - layer.attrs["eps"]) > 1e-12:
        return f"eps is {attrs['eps']}, the source's {layer.attrs['eps']}"
    return ""


def state_dict(pairs: Pairs) -> dict[str, np.ndarray]:
    """The source's weights under the generated module's state_dict keys."""
    weights: dict[str, np.ndarray] = {}
    for node, layer in pairs:
        for key, value in _layer_weights(layer).items():
            weights[f"{node.name}.{key}"] = value
    return weights


def _layer_weights(layer: Layer) -> dict[str, Any]:
    if layer.kind == "se":
        out = {}
        for fc in ("fc1", "fc2"):
            weights = layer.extra[fc].weights
            out[f"{fc}.weight"] = weights["weight"]
            out[f"{fc}.bias"] = weights.get("bias", np.zeros(weights["weight"].shape[0]))
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    weights = dict(layer.sources[-1].weights)
    if layer.kind == "bn":
        weights["num_batches_tracked"] = np.zeros((), np.int64)
    return {
        k: np.asarray(v, dtype=np.int64 if k == "num_batches_tracked" else np.float32)
        for k, v in weights.items()
    }
