"""Weights for the ONNX backend: He-init with numpy, or a PyTorch state_dict checked by name.

Keys are resgraph's node names plus PyTorch's parameter suffixes, so the state_dict of the
generated module (torchvision's, for the standard specs) loads as it is. torch is imported
only to read a weights file; everything else here is numpy.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from resgraph.errors import Location, SpecError
from resgraph.ir import Network, Node
from resgraph.ops import OPS
from resgraph.paths import describe, status

Weights = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]

SHOWN = 5  # names listed per kind of mismatch before "and N more"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # torch's messages carry terminal bold


def node_shapes(node: Node) -> Shapes:
    """The state_dict keys of one node with their shapes (none for parameter-free ops)."""
    state = OPS[node.op].state(node.attrs, node.in_shape, node.shape)
    return {f"{node.name}.{suffix}": shape for suffix, shape in state.items()}


def expected_shapes(network: Network) -> Shapes:
    """Every state_dict key of the generated module with its shape: what weights must hold."""
    shapes: Shapes = {}
    for node in network.nodes.values():
        shapes.update(node_shapes(node))
    return shapes


def he_init(network: Network, seed: int) -> Weights:
    """Fresh weights as the generated module initialises itself, drawn by numpy from `seed`."""
    rng = np.random.default_rng(seed)
    zeroed = (
        {b.residual_bn for b in network.blocks.values() if b.residual}
        if (network.zero_init_residual)
        else set()
    )
    weights: Weights = {}
    for node in network.nodes.values():
        state = OPS[node.op].state(node.attrs, node.in_shape, node.shape)
        if state:
            values = OPS[node.op].initial(state, rng, zero=node.name in zeroed)
            weights.update({f"{node.name}.{suffix}": v for suffix, v in values.items()})
    return weights


def check_shapes(found: Mapping[str, tuple[int, ...]], expected: Shapes, where: Location) -> None:
    """Raise one SpecError naming every missing, unexpected and mis-shaped key, if any."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    wrong = [
        f"{k} ({_fmt(found[k])}, expected {_fmt(s)})"
        for k, s in expected.items()
        if k in found and tuple(found[k]) != s
    ]
    problems = [
        f"{label} {_listed(keys)}"
        for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        raise SpecError(f"weights do not fit the network: {'; '.join(problems)}", where)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def check_weights_fit(network: Network, where: Location) -> None:
    """Refuse a network whose float32 weights exceed this machine's memory, before allocating.

    A valid spec may declare hundreds of billions of parameters (widths are capped, counts
    multiply); allocating them first would end in the kernel's OOM killer, not a message.
    """
    needed = network.params * 4
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > memory:
        raise SpecError(
            f"the network has {network.params:,} parameters: {needed / 1e9:,.1f} GB of "
            f"float32 weights, more than this machine's {memory / 1e9:,.1f} GB of memory",
            where,
        )


def load_weights(path: Path, network: Network) -> Weights:
    """Read a state_dict (or a training checkpoint's "model" entry), checked against the graph."""
    import torch  # only a weights file needs torch

    where = Location(str(path))
    found = status(path, where)
    if found is None:
        raise SpecError("weights file not found", where)
    if not stat.S_ISREG(found.st_mode):
        raise SpecError(f"is {describe(found.st_mode)}, not a weights file", where)
    try:
        # mmap spares a copy of every tensor; torch allows it for its (default) zip format only
        mmap = zipfile.is_zipfile(path)
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for our users
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many kinds for unreadable or unsafe pickles
        raise SpecError(f"cannot read weights: {_load_failure(exc)}", where) from None
    state = _state_dict(loaded, where)
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise SpecError(f"weights that are not tensors: {_listed(not_tensors)}", where)
    expected = expected_shapes(network)
    # A classifier trained as nn.Linear loads into the fcn head's 1x1 conv, as in PyTorch.
    state = {
        k: v[:, :, None, None] if v.dim() == 2 and len(expected.get(k, ())) == 4 else v
        for k, v in state.items()
    }
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, expected, where)
    not_finite = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if not_finite:
        raise SpecError(f"weights with NaN or infinite values: {_listed(not_finite)}", where)
    return {
        k: v.detach().numpy() if k.endswith("num_batches_tracked") else v.detach().float().numpy()
        for k, v in state.items()
    }


def _load_failure(exc: Exception) -> str:
    """torch.load's refusal in one line of resgraph's words: no ANSI escapes, no unsafe advice."""
    text = _ANSI.sub("", str(exc))
    detail = text.partition("WeightsUnpickler error:")[2].strip()
    if detail:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
        if found:
            return f"it holds {found[1]}, not tensor data; only tensors and containers are read"
        return f"not a pickle of tensors alone ({detail.splitlines()[0].rstrip('.')})"
    line = _first_line(exc)
    return "not a file of tensors that can be read safely" if "weights_only" in line else line


def _first_line(exc: Exception) -> str:
    """An exception as one line of text, by its type where it carries no message."""
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _state_dict(loaded: Any, where: Location) -> Mapping[str, Any]:
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) for k in loaded):
        raise SpecError(
            "weights file holds no state_dict (nor a checkpoint with a 'model' state_dict)", where
        )
    return loaded


def fold_bn(
    conv_weight: np.ndarray, conv_bias: np.ndarray | None, bn: Mapping[str, np.ndarray], eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """A conv's weight and bias with the BN after it folded in, computed in float64."""
    scale = bn["weight"].astype(np.float64) / np.sqrt(bn["running_var"].astype(np.float64) + eps)
    bias = np.zeros_like(scale) if conv_bias is None else conv_bias.astype(np.float64)
    weight = conv_weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    return weight, (bias - bn["running_mean"]) * scale + bn["bias"]
