"""An independent reference for the ONNX backend: resgraph's graph run with torch.nn.functional.

It walks the same graph but shares no code with the emitter, so an ONNX model that agrees
with it computes the network the spec describes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from resgraph.backends.onnx_weights import Weights, he_init

FP32_TOLERANCE = 1e-4  # max abs difference allowed between onnxruntime and the reference

Tensors = Mapping[str, torch.Tensor]
Op = Callable[[Tensors, str, Mapping[str, Any], list[torch.Tensor]], torch.Tensor]


def _conv(w: Tensors, name: str, a: Mapping[str, Any], xs: list[torch.Tensor]) -> torch.Tensor:
    bias = w.get(f"{name}.bias")
    dilation = a.get("dilation", 1)
    return F.conv2d(
        xs[0], w[f"{name}.weight"], bias, a["stride"], a["padding"], dilation, a["groups"]
    )


def _bn(w: Tensors, name: str, a: Mapping[str, Any], xs: list[torch.Tensor]) -> torch.Tensor:
    mean, var = w[f"{name}.running_mean"], w[f"{name}.running_var"]
    return F.batch_norm(xs[0], mean, var, w[f"{name}.weight"], w[f"{name}.bias"], eps=a["eps"])


def _zero_pad(w: Tensors, name: str, a: Mapping[str, Any], xs: list[torch.Tensor]) -> torch.Tensor:
    s = a["stride"]
    return F.pad(xs[0][:, :, ::s, ::s], (0, 0, 0, 0, a["pad_before"], a["pad_after"]))


def _se(w: Tensors, name: str, a: Mapping[str, Any], xs: list[torch.Tensor]) -> torch.Tensor:
    gate = xs[0].mean((2, 3), keepdim=True)
    gate = F.relu(F.conv2d(gate, w[f"{name}.fc1.weight"], w[f"{name}.fc1.bias"]))
    return xs[0] * torch.sigmoid(F.conv2d(gate, w[f"{name}.fc2.weight"], w[f"{name}.fc2.bias"]))


OPS: dict[str, Op] = {
    "conv": _conv,
    "bn": _bn,
    "relu": lambda w, n, a, xs: F.relu(xs[0]),
    "maxpool": lambda w, n, a, xs: F.max_pool2d(
        xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"]
    ),
    "avgpool": lambda w, n, a, xs: F.avg_pool2d(
        xs[0], a["kernel"], a["stride"], a["padding"], a["ceil_mode"], a["count_include_pad"]
    ),
    "global_avgpool": lambda w, n, a, xs: F.adaptive_avg_pool2d(xs[0], 1),
    "flatten": lambda w, n, a, xs: torch.flatten(xs[0], 1),
    "linear": lambda w, n, a, xs: F.linear(xs[0], w[f"{n}.weight"], w.get(f"{n}.bias")),
    "add": lambda w, n, a, xs: xs[0] + xs[1],
    "zero_pad": _zero_pad,
    "se": _se,
    "drop_path": lambda w, n, a, xs: xs[0],  # the identity in eval
}


class ReferenceNet(torch.nn.Module):
    """The graph as an eval-mode torch module: one functional call per node, in graph order."""

    def __init__(self, graph: nx.DiGraph, weights: Weights) -> None:
        super().__init__()
        self.graph = graph
        self.order = [n for n in nx.topological_sort(graph) if graph.nodes[n]["op"] != "input"]
        self.weights = {k: torch.from_numpy(v) for k, v in weights.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {"input": x}
        for name in self.order:
            node = self.graph.nodes[name]
            xs = [values[i] for i in node["inputs"]]
            values[name] = OPS[node["op"]](self.weights, name, node["attrs"], xs)
        return values[self.graph.graph["output"]]


def reference_logits(graph: nx.DiGraph, weights: Weights, x: np.ndarray) -> np.ndarray:
    """The reference's output for a float32 batch `x`."""
    with torch.no_grad():
        return ReferenceNet(graph, weights)(torch.from_numpy(x)).numpy()


def trained_like_weights(graph: nx.DiGraph, seed: int) -> Weights:
    """He-init weights with BN statistics and affine terms drawn away from identity.

    Running stats of 0/1 would let a folding or BN bug pass unseen; scaling each residual
    branch's last BN by 1/sqrt(blocks) keeps even 1202 layers' activations near 1.
    """
    network = graph.graph["network"]
    weights = he_init(network, seed)
    rng = np.random.default_rng(seed + 1)
    residual = {b.residual_bn for b in network.blocks.values() if b.residual} - {None}
    blocks = len(residual)
    for name, node in graph.nodes(data=True):
        if node["op"] != "bn":
            continue
        c = node["shape"][0]
        gain = 1 / np.sqrt(blocks) if name in residual else 1.0
        weights[f"{name}.weight"] = (rng.uniform(0.5, 1.5, c) * gain).astype(np.float32)
        weights[f"{name}.bias"] = rng.normal(0.0, 0.1, c).astype(np.float32)
        weights[f"{name}.running_mean"] = rng.normal(0.0, 0.1, c).astype(np.float32)
        weights[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return weights


def run_onnx(model: bytes | str, x: np.ndarray) -> np.ndarray:
    """The `logits` onnxruntime's CPU provider computes for `x` (model bytes or a file path)."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]
