"""The importers' common form: an existing network as a flat list of primitive ops.

Every reader (torch.fx, ONNX, Caffe prototxt) lowers its source to a `SourceGraph`; the
recognizer reads only this. `run` executes a SourceGraph with torch's functional ops, so a
reader is checked against its own source (the module, the onnxruntime session) without the
recognizer, and the recognizer against the SourceGraph without the readers.

Kinds and their attributes (all sizes are ints, square windows only):

| kind | attrs | weights (torch's names) |
|---|---|---|
| conv | in_channels, out, kernel, stride, padding, dilation, groups, bias | weight, bias |
| bn | channels, eps | weight, bias, running_mean, running_var |
| relu, sigmoid, flatten, global_avgpool | | |
| maxpool | kernel, stride, padding, ceil_mode | |
| avgpool | kernel, stride, padding, ceil_mode, count_include_pad | |
| linear | in_features, out, bias | weight, bias |
| add, mul | (two inputs; mul broadcasts a C x 1 x 1 gate) | |
| subsample | stride (x[:, :, ::stride, ::stride]) | |
| pad_channels | before, after (zero channels) | |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INPUT = "input"

KINDS: dict[str, tuple[str, ...]] = {
    "conv": ("in_channels", "out", "kernel", "stride", "padding", "dilation", "groups", "bias"),
    "bn": ("channels", "eps"),
    "relu": (),
    "sigmoid": (),
    "flatten": (),
    "global_avgpool": (),
    "maxpool": ("kernel", "stride", "padding", "ceil_mode"),
    "avgpool": ("kernel", "stride", "padding", "ceil_mode", "count_include_pad"),
    "linear": ("in_features", "out", "bias"),
    "add": (),
    "mul": (),
    "subsample": ("stride",),
    "pad_channels": ("before", "after"),
}
ARITY = {"add": 2, "mul": 2}


class ImportFailure(Exception):
    """A source the importer cannot read or express; printed as one line, exit 1."""


@dataclass
class SourceOp:
    """One primitive op of the source, named as the source names it."""

    name: str  # module path, ONNX node name or Caffe layer name: unique in the graph
    kind: str
    inputs: tuple[str, ...]  # names of the ops read; INPUT is the network input
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    source_op: str = ""  # the source's own op type (for messages), e.g. "Conv", "nn.Conv2d"
    # the dotted module path the source suggests for the spec's names, e.g. "layer1.0.conv1"
    # (an fx call_module target, an ONNX initializer's prefix, a Caffe layer name); None if none
    module: str | None = None

    def describe(self) -> str:
        return f"'{self.name}' ({self.source_op or self.kind})"


@dataclass
class SourceGraph:
    """A network as its source gives it: input (C, H, W), ops in topological order."""

    origin: str  # the file or callable it came from, for messages
    input: tuple[int, int, int]
    ops: list[SourceOp]
    has_weights: bool

    def __post_init__(self) -> None:
        check(self)

    @property
    def output(self) -> SourceOp:
        return self.ops[-1]

    def by_name(self) -> dict[str, SourceOp]:
        return {op.name: op for op in self.ops}

    def readers(self) -> dict[str, list[SourceOp]]:
        """For each op (and INPUT), the ops that read its output, in order."""
        out: dict[str, list[SourceOp]] = {INPUT: []}
        for op in self.ops:
            out[op.name] = []
            for name in op.inputs:
                out[name].append(op)
        return out


def check(graph: SourceGraph) -> None:
    """The invariants readers must keep: known kinds, full attrs, names defined before use."""
    seen = {INPUT}
    for op in graph.ops:
        if op.kind not in KINDS:
            raise ValueError(f"{op.describe()}: unknown kind {op.kind!r}")
        missing = set(KINDS[op.kind]) - set(op.attrs)
        if missing:
            raise ValueError(f"{op.describe()}: missing attrs {sorted(missing)}")
        if len(op.inputs) != ARITY.get(op.kind, 1):
            raise ValueError(f"{op.describe()}: {len(op.inputs)} inputs")
        unknown = [name for name in op.inputs if name not in seen]
        if unknown:
            raise ValueError(f"{op.describe()}: reads {unknown} before they are defined")
        if op.name in seen:
            raise ValueError(f"{op.describe()}: the name is used twice")
        seen.add(op.name)
    if not graph.ops:
        raise ValueError("the graph has no ops")


def weight_shapes(op: SourceOp) -> dict[str, tuple[int, ...]]:
    """The tensors an op holds, by torch's names (what a reader's weights must match)."""
    a = op.attrs
    if op.kind == "conv":
        shapes = {"weight": (a["out"], a["in_channels"] // a["groups"], a["kernel"], a["kernel"])}
        return shapes | ({"bias": (a["out"],)} if a["bias"] else {})
    if op.kind == "bn":
        c = (a["channels"],)
        return {"weight": c, "bias": c, "running_mean": c, "running_var": c}
    if op.kind == "linear":
        shapes = {"weight": (a["out"], a["in_features"])}
        return shapes | ({"bias": (a["out"],)} if a["bias"] else {})
    return {}


def run(graph: SourceGraph, x: Any) -> Any:
    """Execute the graph on torch tensor `x` (N, C, H, W); on the meta device for shapes.

    Without weights (a prototxt), ops use zero tensors of the right shapes.
    """
    import torch

    values: dict[str, torch.Tensor] = {INPUT: x}
    for op in graph.ops:
        tensors = {
            key: (
                torch.from_numpy(np.ascontiguousarray(op.weights[key])).to(x.device, x.dtype)
                if key in op.weights
                else torch.zeros(shape, device=x.device, dtype=x.dtype)
            )
            for key, shape in weight_shapes(op).items()
        }
        args = [values[name] for name in op.inputs]
        values[op.name] = _EXECUTE[op.kind](op.attrs, tensors, *args)
    return values[graph.output.name]


def shapes(graph: SourceGraph) -> dict[str, tuple[int, ...]]:
    """Each op's output shape without its batch dimension, computed on the meta device."""
    out: dict[str, tuple[int, ...]] = {INPUT: graph.input}
    for op in graph.ops:
        out[op.name] = op_shape(op, [out[name] for name in op.inputs])
    return out


def op_shape(op: SourceOp, inputs: list[tuple[int, ...]]) -> tuple[int, ...]:
    """One op's output shape from its inputs' (no batch dimension), on the meta device.

    `shapes` for a whole graph; a reader calls it while it lowers, where a size decides the
    lowering (a pool's rounding, a flatten computed from the input's shape).
    """
    import torch

    tensors = {key: torch.empty(shape, device="meta") for key, shape in weight_shapes(op).items()}
    args = [torch.empty((1, *shape), device="meta") for shape in inputs]
    try:
        value = _EXECUTE[op.kind](op.attrs, tensors, *args)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportFailure(f"{op.describe()}: does not fit its input: {first}") from None
    return tuple(value.shape[1:])


def _conv(a: dict[str, Any], w: dict[str, Any], x: Any) -> Any:
    import torch.nn.functional as F

    return F.conv2d(
        x, w["weight"], w.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"]
    )


def _bn(a: dict[str, Any], w: dict[str, Any], x: Any) -> Any:
    import torch.nn.functional as F

    return F.batch_norm(
        x, w["running_mean"], w["running_var"], w["weight"], w["bias"], False, 0.0, a["eps"]
    )


def _maxpool(a: dict[str, Any], w: dict[str, Any], x: Any) -> Any:
    import torch.nn.functional as F

    return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])


def _avgpool(a: dict[str, Any], w: dict[str, Any], x: Any) -> Any:
    import torch.nn.functional as F

    return F.avg_pool2d(
        x,
        a["kernel"],
        a["stride"],
        a["padding"],
        ceil_mode=a["ceil_mode"],
        count_include_pad=a["count_include_pad"],
    )


def _linear(a: dict[str, Any], w: dict[str, Any], x: Any) -> Any:
    import torch.nn.functional as F

    return F.linear(x, w["weight"], w.get("bias"))


def _pad_channels(a: dict[str, Any], w: dict[str, Any], x: Any) -> Any:
    import torch.nn.functional as F

    return F.pad(x, (0, 0, 0, 0, a["before"], a["after"]))


_EXECUTE: dict[str, Callable[..., Any]] = {
    "conv": _conv,
    "bn": _bn,
    "relu": lambda a, w, x: x.relu(),
    "sigmoid": lambda a, w, x: x.sigmoid(),
    "flatten": lambda a, w, x: x.flatten(1),
    "global_avgpool": lambda a, w, x: x.mean((2, 3), keepdim=True),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "linear": _linear,
    "add": lambda a, w, x, y: x + y,
    "mul": lambda a, w, x, y: x * y,
    "subsample": lambda a, w, x: x[:, :, :: a["stride"], :: a["stride"]],
    "pad_channels": _pad_channels,
}
