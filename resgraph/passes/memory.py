"""Memory pass: activation bytes per node, and totals for inference and for training.

Inference: the weights (parameters and buffers) plus the peak of the activations alive at
once, running the nodes in order and freeing each output after its last reader. Training
at a batch: the activations autograd keeps for the backward pass (each op says which of its
tensors: resgraph.ops `Op.saves`; a tensor kept by two ops counts once), plus parameters,
their gradients and SGD's momentum buffer. `dtype` is the activations' (bf16 under
autocast); weights, gradients and momentum stay fp32, as mixed-precision training keeps them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resgraph.ir import INPUT, Network
from resgraph.ops import OPS

DTYPE_BYTES = {"fp32": 4, "bf16": 2}
INDEX_BYTES = 8  # int64, as max pooling's saved indices
WEIGHT_BYTES = 4


@dataclass(frozen=True)
class Memory:
    batch: int
    dtype: str
    activations: dict[str, int]  # node -> its output's bytes at this batch
    saved: int  # bytes autograd keeps for the backward pass
    weights: int  # parameters and buffers (BN statistics)
    params: int  # parameters alone
    peak: int  # the most activation bytes alive at once in a forward pass

    @property
    def inference(self) -> int:
        """Weights plus the forward pass's peak of live activations."""
        return self.weights + self.peak

    @property
    def training(self) -> int:
        """Saved activations, weights, gradients and SGD momentum (one buffer per parameter)."""
        return self.saved + self.weights + 2 * self.params


def memory(network: Network, batch: int = 1, dtype: str = "fp32") -> Memory:
    """The network's memory at `batch` and activation `dtype` (fp32 or bf16)."""
    size = DTYPE_BYTES[dtype]
    nodes = network.nodes
    activations = {name: batch * math.prod(n.shape) * size for name, n in nodes.items()}
    saved: set[str] = set()
    extra = 0  # max pooling indices, BN batch statistics
    for name, node in nodes.items():
        for what in OPS[node.op].saves:
            if what == "indices":
                extra += batch * math.prod(node.shape) * INDEX_BYTES
            elif what == "statistics":
                extra += 2 * node.shape[0] * WEIGHT_BYTES
            else:
                saved.add(name if what == "output" else node.inputs[0])
    last_reader = {source: name for name, n in nodes.items() for source in n.inputs}
    alive: set[str] = {INPUT}
    peak = activations[INPUT]
    for name, node in nodes.items():
        if name == INPUT:
            continue
        alive.add(name)
        peak = max(peak, sum(activations[a] for a in alive))
        alive -= {i for i in node.inputs if last_reader.get(i) == name}
    weights = sum(
        math.prod(shape) * WEIGHT_BYTES
        for node in nodes.values()
        for shape in OPS[node.op].state(node.attrs, node.in_shape, node.shape).values()
    )
    return Memory(
        batch=batch,
        dtype=dtype,
        activations={k: v for k, v in activations.items() if k != INPUT},
        saved=sum(activations[s] for s in saved) + extra,
        weights=weights,
        params=network.params * WEIGHT_BYTES,
        peak=peak,
    )
