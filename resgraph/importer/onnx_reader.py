"""Read an ONNX file into the importer's common form, a SourceGraph of primitive ops.

Covers what resgraph's own ONNX backend and torch.onnx.export (TorchScript and dynamo, BN
folded or not) write for ResNet-family networks. Operands computed by nodes (pads, flatten
shapes, zero biases) are folded (`onnx_fold`); forms that spread one PyTorch op over
several nodes are put back together: a zero Pad before an AveragePool is the pool's
padding, a Slice per axis is one subsample, MatMul + Add is one linear. Whatever has no
resgraph equivalent is one line naming the node and its op type.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from resgraph.errors import SpecError, printable
from resgraph.importer.onnx_fold import BATCHES, Value, fold
from resgraph.importer.onnx_load import MAX_ONNX_BYTES, load_onnx
from resgraph.importer.source import (
    INPUT,
    ImportFailure,
    SourceGraph,
    SourceOp,
    op_shape,
    weight_shapes,
)
from resgraph.language import MAX_SIZE
from resgraph.ops.base import fmt, spatial

MAX_NODES = 250_000  # as `compile --max-nodes` bounds a network's graph
TORCH_NAMES = ("weight", "bias", "running_mean", "running_var")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")  # a module path: layer1.0.conv1
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
NO_AUTO_PAD = ("NOTSET", "VALID")
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
MAX_SCOPES_CHARS = 4096


def read_onnx(path: Path, limit: int = MAX_ONNX_BYTES) -> SourceGraph:
    """The network an ONNX file holds, as primitive ops with its initializers as weights."""
    return _Reader(load_onnx(path, limit), printable(str(path))).read()


@dataclass
class _Pending:
    """A node whose PyTorch equivalent needs the node that reads it (none of its own)."""

    node: onnx.NodeProto
    source: str  # the op it reads
    why: str  # the message if anything else reads it


@dataclass
class _SpatialPad(_Pending):
    """A zero Pad on height and width: an AveragePool reading it pads by that much."""

    begin: tuple[int, int] = (0, 0)
    end: tuple[int, int] = (0, 0)


@dataclass
class _PartialSlice(_Pending):
    """Slices with steps on one of height and width: another Slice completes the subsample."""

    steps: dict[int, int] = field(default_factory=dict)


class _Reader:
    """One pass over the nodes the output needs, in the file's (topological) order."""

    def __init__(self, model: onnx.ModelProto, origin: str) -> None:
        self.graph = model.graph
        self.origin = origin
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.by_resgraph = model.producer_name == "resgraph"  # node names are module paths
        self.values: dict[str, Value] = {}
        self.acts: dict[str, str] = {}  # tensor -> the op computing it, or INPUT
        self.shape: dict[str, tuple[int, ...]] = {}  # op -> output shape without batch
        self.pending: dict[str, _Pending] = {}
        self.ops: list[SourceOp] = []
        self.op: dict[str, SourceOp] = {}
        self.names = Counter(node.name for node in self.graph.node)
        self.read_by: Counter[str] = Counter()  # how many needed nodes read each tensor

    def fail(self, node: onnx.NodeProto, what: str) -> ImportFailure:
        name = printable(node.name or node.output[0] if node.output else node.name)
        return ImportFailure(f"{self.origin}: node '{name}' ({printable(node.op_type)}): {what}")

    def read(self) -> SourceGraph:
        """Lower every needed node, then check the output is the last op."""
        if len(self.graph.node) > MAX_NODES:
            raise ImportFailure(
                f"{self.origin}: {len(self.graph.node):,} nodes; an import reads at most "
                f"{MAX_NODES:,}"
            )
        if not self.opset:
            raise ImportFailure(f"{self.origin}: no opset of the default ONNX domain")
        for tensor in self.graph.initializer:
            try:
                self.values[tensor.name] = Value.of(numpy_helper.to_array(tensor), True)
            except (ValueError, TypeError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ImportFailure(
                    f"{self.origin}: initializer '{printable(tensor.name)}': {printable(first)}"
                ) from None
        input_shape = self._input()
        if len(self.graph.output) != 1:
            raise ImportFailure(
                f"{self.origin}: {len(self.graph.output)} graph outputs; resgraph imports "
                "networks with one"
            )
        output = self.graph.output[0].name
        needed = self._needed(output)
        self.read_by = Counter(t for n in needed for t in n.input if t) + Counter([output])
        for node in needed:
            self._visit(node)
        return self._finish(output, input_shape)

    def _input(self) -> tuple[int, int, int]:
        """The one graph input that is not an initializer: float, N x C x H x W, CHW fixed."""
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise ImportFailure(
                f"{self.origin}: {len(inputs)} graph inputs besides initializers; resgraph "
                "imports networks with one"
            )
        (value,) = inputs
        tensor = value.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in tensor.shape.dim
        ]
        shown = " x ".join(printable(str(d)) for d in dims)
        where = f"{self.origin}: input '{printable(value.name)}'"
        if tensor.elem_type not in FLOATS:
            raise ImportFailure(f"{where}: holds {_type_name(tensor.elem_type)}, not floats")
        chw = dims[1:]
        if len(dims) != 4 or not all(isinstance(d, int) and 0 < d <= MAX_SIZE for d in chw):
            raise ImportFailure(
                f"{where} is {shown or 'of unknown shape'}; resgraph needs N x C x H x W with "
                f"C, H and W fixed (1 to {MAX_SIZE:,})"
            )
        c, h, w = (int(d) for d in chw)
        self.acts[value.name] = INPUT
        self.shape[INPUT] = (c, h, w)
        return (c, h, w)

    def _needed(self, output: str) -> list[onnx.NodeProto]:
        """The nodes the output depends on, in file order (the checker made it topological)."""
        producer = {out: i for i, node in enumerate(self.graph.node) for out in node.output}
        seen: set[int] = set()
        stack = [output]
        while stack:
            index = producer.get(stack.pop())
            if index is not None and index not in seen:
                seen.add(index)
                stack.extend(t for t in self.graph.node[index].input if t)
        return [self.graph.node[i] for i in sorted(seen)]

    def _finish(self, output: str, input_shape: tuple[int, int, int]) -> SourceGraph:
        if output in self.pending:
            pending = self.pending[output]
            raise self.fail(pending.node, pending.why)
        if output not in self.acts or self.acts[output] == INPUT or not self.ops:
            raise ImportFailure(f"{self.origin}: the output is not computed from the input")
        if self.acts[output] != self.ops[-1].name:
            raise ImportFailure(f"{self.origin}: the output is not the network's last op")
        return SourceGraph(self.origin, input_shape, self.ops, has_weights=True)

    # -- one node -----------------------------------------------------------------------

    def _visit(self, node: onnx.NodeProto) -> None:
        inputs = [t for t in node.input if t]
        if node.op_type == "Shape" and inputs and inputs[0] in self.acts:
            self._shape_of(node)
        elif node.op_type == "CastLike" and len(inputs) == 2 and inputs[1] in self.acts:
            value = self.required(node, 0, "value")
            self.values[node.output[0]] = Value.of(value.astype(np.float32))
        elif all(t in self.values for t in inputs):
            args = [self.values.get(t) if t else None for t in node.input]
            try:
                results = fold(node, args, self.opset)
            except ValueError as exc:
                raise self.fail(node, str(exc)) from None
            self.values.update(zip(node.output, results, strict=False))
        else:
            lower = LOWER.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if lower is None:
                op_type = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
                raise self.fail(node, f"resgraph has no op for {printable(op_type)}")
            for index, extra in enumerate(node.output[1:], start=2):
                if extra and self.read_by[extra]:
                    raise self.fail(node, f"its output {index} is read; resgraph's op has one")
            lower(self, node)

    def _shape_of(self, node: onnx.NodeProto) -> None:
        """Shape of a feature map, at each of BATCHES (start/end as ONNX slices them)."""
        shape = self.shape[self.act(node, 0)]
        attrs = _attrs(node)
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.values[node.output[0]] = Value(
            tuple(np.array((b, *shape), dtype=np.int64)[start:end] for b in BATCHES)
        )

    def act(self, node: onnx.NodeProto, index: int) -> str:
        """The op computing input `index`, which must be a feature map."""
        tensor = node.input[index] if index < len(node.input) else ""
        if tensor in self.pending:
            pending = self.pending[tensor]
            raise self.fail(pending.node, pending.why)
        if tensor not in self.acts:
            raise self.fail(node, f"input {index + 1} is a constant, not a feature map")
        return self.acts[tensor]

    def required(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        found = self.const(node, index, what)
        if found is None:
            raise self.fail(node, f"has no {what}")
        return found

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Input `index` as a constant (None if omitted); one computed from the input fails."""
        tensor = node.input[index] if index < len(node.input) else ""
        if not tensor:
            return None
        if tensor not in self.values:
            raise self.fail(
                node, f"its {what} is computed from the input; resgraph needs a constant"
            )
        value = self.values[tensor]
        if not value.static:
            raise self.fail(node, f"its {what} depends on the batch size")
        return value.at[0]

    def computed_zero(self, node: onnx.NodeProto, index: int, array: np.ndarray | None) -> bool:
        """A bias of zeros that no initializer holds: dynamo's stand-in for no bias at all."""
        return (
            array is not None
            and not self.values[node.input[index]].initializer
            and not (array.any())
        )

    def emit(
        self,
        node: onnx.NodeProto,
        kind: str,
        inputs: tuple[str, ...],
        attrs: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
        weight: str | None = None,
    ) -> SourceOp:
        """Append one op for `node`, its output tensor computed by it; checked to fit."""
        op = SourceOp(
            name=self._name(node),
            kind=kind,
            inputs=inputs,
            attrs=attrs or {},
            weights={k: np.array(v, dtype=np.float32) for k, v in (weights or {}).items()},
            source_op=node.op_type,
            module=self.module_of(node, weight),
        )
        self._check_weights(node, op)
        try:
            self.shape[op.name] = op_shape(op, [self.shape[name] for name in inputs])
        except ImportFailure as exc:
            raise ImportFailure(f"{self.origin}: node {exc}") from None
        self.ops.append(op)
        self.op[op.name] = op
        self.acts[node.output[0]] = op.name
        return op

    def _check_weights(self, node: onnx.NodeProto, op: SourceOp) -> None:
        for key, shape in weight_shapes(op).items():
            found = op.weights[key].shape
            if found != shape:
                raise self.fail(node, f"its {key} is {fmt(found)}, not {fmt(shape)}")

    def alias(self, node: onnx.NodeProto, source: str) -> None:
        """The node computes nothing resgraph needs an op for: its output is its input's."""
        self.acts[node.output[0]] = source

    def _name(self, node: onnx.NodeProto) -> str:
        """The node's name where it is unique, else its output's; never one used before."""
        name = node.name if node.name and self.names[node.name] == 1 else node.output[0]
        base, count = name, 1
        while name == INPUT or name in self.op:
            count += 1
            name = f"{base}#{count}"
        return name

    def module_of(self, node: onnx.NodeProto, weight: str | None) -> str | None:
        """The module path the names suggest: a weight's prefix, resgraph's node name, the
        scope torch.onnx.export's TorchScript path writes into node names (/layer1/...), or
        the one its dynamo path writes into node metadata."""
        if weight:
            prefix, _, suffix = weight.rpartition(".")
            if suffix in TORCH_NAMES and DOTTED.fullmatch(prefix):
                return prefix
        if self.by_resgraph:
            head = node.name.split("/")[0]
            return head if DOTTED.fullmatch(head) else None
        if node.name.startswith("/"):
            return _scope(node.name)
        return _name_scopes(node)

    def axes(self, node: onnx.NodeProto, values: Any, rank: int) -> list[int]:
        """Axes as non-negative numbers, each checked to exist (ONNX counts from the end too)."""
        found = [int(v) for v in np.asarray(values).reshape(-1)]
        if any(not -rank <= axis < rank for axis in found):
            raise self.fail(node, f"axes {found} do not exist in a rank-{rank} tensor")
        return [axis % rank for axis in found]

    def square(self, node: onnx.NodeProto, what: str, values: Any, minimum: int = 1) -> int:
        """One size for height and width alike (kernels, strides, dilations, paddings)."""
        values = [int(v) for v in values]
        if len(values) != 2:
            raise self.fail(node, f"{what} {values}: resgraph's ops are 2-D")
        if values[0] != values[1]:
            raise self.fail(
                node, f"{what} {values} differ between height and width; resgraph's are square"
            )
        if values[0] < minimum:
            raise self.fail(node, f"{what} {values[0]}: must be at least {minimum}")
        return values[0]

    def pads(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> list[int]:
        """A window's ONNX pads, [top, left, bottom, right]; auto_pad only where it pads none."""
        if attrs.get("auto_pad", "NOTSET") not in NO_AUTO_PAD:
            raise self.fail(node, f"auto_pad {attrs['auto_pad']}; resgraph needs explicit pads")
        if attrs.get("auto_pad") == "VALID":
            return [0] * 4
        pads = [int(p) for p in attrs.get("pads", [0] * 4)]
        if len(pads) != 4 or min(pads) < 0:
            raise self.fail(node, f"pads {pads}: resgraph needs 4 of at least 0")
        return pads


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    found = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in found.items()}


def _type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def _scope(name: str) -> str | None:
    """`/layer2/layer2.0/downsample/downsample.0/Conv` -> `layer2.0.downsample.0`.

    Each scope names a module relative to the one before, which it may repeat as a prefix.
    """
    path: list[str] = []
    for part in name.split("/")[1:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        elif part:
            path.append(part)
    module = ".".join(path)
    return module if DOTTED.fullmatch(module) else None


def _name_scopes(node: onnx.NodeProto) -> str | None:
    """The module torch.onnx.export's dynamo path records in a node's metadata.

    `pkg.torch.onnx.name_scopes` lists the module paths from the root down, then the fx
    node: `['', 'layer1', 'layer1.0', 'layer1.0.relu1', 'relu_1']`.
    """
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES and len(prop.value) <= MAX_SCOPES_CHARS:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
            if isinstance(scopes, list) and len(scopes) >= 2 and isinstance(scopes[-2], str):
                return scopes[-2] if DOTTED.fullmatch(scopes[-2]) else None
    return None


# -- the lowerings, one per ONNX op type ----------------------------------------------


def _conv(r: _Reader, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    x = r.act(node, 0)
    weight = r.required(node, 1, "weight")
    if weight.ndim != 4:
        raise r.fail(node, f"a {weight.ndim - 2}-D convolution; resgraph's are 2-D")
    kernel = r.square(node, "kernel", a.get("kernel_shape", weight.shape[2:]))
    if kernel != weight.shape[2] or kernel != weight.shape[3]:
        raise r.fail(node, f"kernel {kernel} but its weight is {fmt(weight.shape)}")
    pads = r.pads(node, a)
    if len(set(pads)) != 1:
        raise r.fail(node, f"pads {pads} differ between sides; resgraph's convs pad all alike")
    bias = r.const(node, 2, "bias")
    if r.computed_zero(node, 2, bias):
        bias = None
    groups = int(a.get("group", 1))
    if groups < 1:
        raise r.fail(node, f"group {groups}: must be at least 1")
    attrs = {
        "in_channels": weight.shape[1] * groups,
        "out": weight.shape[0],
        "kernel": kernel,
        "stride": r.square(node, "strides", a.get("strides", [1, 1])),
        "padding": pads[0],
        "dilation": r.square(node, "dilations", a.get("dilations", [1, 1])),
        "groups": groups,
        "bias": bias is not None,
    }
    weights = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    r.emit(node, "conv", (x,), attrs, weights, node.input[1])


def _bn(r: _Reader, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    x = r.act(node, 0)
    if a.get("training_mode", 0):
        raise r.fail(node, "normalizes in training mode; resgraph imports inference graphs")
    keys = ("weight", "bias", "running_mean", "running_var")
    weights = {key: r.required(node, i, key) for i, key in enumerate(keys, start=1)}
    # ONNX stores epsilon as float32: its shortest float32 spelling is what the author wrote
    eps = float(str(np.float32(a.get("epsilon", 1e-5))))
    attrs = {"channels": weights["weight"].shape[0] if weights["weight"].ndim else 0, "eps": eps}
    r.emit(node, "bn", (x,), attrs, weights, node.input[1])


def _pointwise(kind: str) -> Any:
    def lower(r: _Reader, node: onnx.NodeProto) -> None:
        r.emit(node, kind, (r.act(node, 0),))

    return lower


def _skip(r: _Reader, node: onnx.NodeProto) -> None:
    """Identity, and Dropout at inference (unless its training_mode input says otherwise)."""
    training = r.const(node, 2, "training_mode") if node.op_type == "Dropout" else None
    if training is not None and training.any():
        raise r.fail(node, "drops out in training mode; resgraph imports inference graphs")
    r.alias(node, r.act(node, 0))


def _cast(r: _Reader, node: onnx.NodeProto) -> None:
    """Float to float (resgraph's fp16 models cast at each end): nothing to compute."""
    to = _attrs(node).get("to")
    if to not in FLOATS:
        raise r.fail(node, f"casts the feature map to {_type_name(int(to or 0))}")
    r.alias(node, r.act(node, 0))


def _global_avgpool(r: _Reader, node: onnx.NodeProto) -> None:
    r.emit(node, "global_avgpool", (r.act(node, 0),))


def _reduce_mean(r: _Reader, node: onnx.NodeProto) -> None:
    """The mean over height and width (torch's x.mean((2, 3), keepdim=True))."""
    a = _attrs(node)
    x = r.act(node, 0)
    rank = len(r.shape[x]) + 1
    axes = a.get("axes") if r.opset < 18 else r.const(node, 1, "axes")
    axes = sorted(r.axes(node, axes, rank)) if axes is not None else list(range(rank))
    keep = bool(a.get("keepdims", 1))
    if axes != [2, 3] or rank != 4 or not keep:
        kept = "" if keep else " without keeping them"
        raise r.fail(
            node,
            f"averages over axes {axes}{kept}; resgraph averages over height and width, "
            "keeping them (a global average pool)",
        )
    r.emit(node, "global_avgpool", (x,))


def _flatten(r: _Reader, node: onnx.NodeProto) -> None:
    x = r.act(node, 0)
    axis = int(_attrs(node).get("axis", 1))
    if axis not in (1, -len(r.shape[x])):
        raise r.fail(node, f"flattens from axis {axis}; resgraph flattens from axis 1")
    if len(r.shape[x]) == 1:
        r.alias(node, x)
    else:
        r.emit(node, "flatten", (x,))


def _reshape(r: _Reader, node: onnx.NodeProto) -> None:
    """A flatten when it gives N x (C*H*W) at every batch size (a view(x.size(0), -1))."""
    x = r.act(node, 0)
    if node.input[1] not in r.values:
        raise r.fail(node, "its shape is computed from the input; resgraph needs a constant")
    targets = r.values[node.input[1]].at
    allowzero = bool(_attrs(node).get("allowzero", 0))
    shape = r.shape[x]
    results = [_reshaped((b, *shape), t, allowzero) for b, t in zip(BATCHES, targets, strict=True)]
    if all(out == (b, *shape) for b, out in zip(BATCHES, results, strict=True)):
        r.alias(node, x)
    elif all(out == (b, math.prod(shape)) for b, out in zip(BATCHES, results, strict=True)):
        r.emit(node, "flatten", (x,))
    else:
        target = [int(v) for v in targets[0].reshape(-1)]
        raise r.fail(
            node, f"reshapes N x {fmt(shape)} to {target}; resgraph reshapes only to N x -1"
        )


def _reshaped(
    shape: tuple[int, ...], target: np.ndarray, allowzero: bool
) -> tuple[int, ...] | None:
    """ONNX Reshape's output shape, or None where the target does not fit."""
    dims = [int(v) for v in target.reshape(-1)]
    out = [
        shape[i] if d == 0 and not allowzero and i < len(shape) else d for i, d in enumerate(dims)
    ]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        return None
    known = math.prod(d for d in out if d != -1)
    total = math.prod(shape)
    if -1 in out:
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return tuple(out) if math.prod(out) == total else None


def _gemm(r: _Reader, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    x = r.act(node, 0)
    if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
        raise r.fail(node, "scales or transposes its input; resgraph's linear does neither")
    matrix = r.required(node, 1, "weight")
    weight = matrix if a.get("transB", 0) else matrix.T
    bias = r.const(node, 2, "bias")
    if r.computed_zero(node, 2, bias):
        bias = None
    _linear(r, node, x, weight, bias, node.input[1])


def _matmul(r: _Reader, node: onnx.NodeProto) -> None:
    """x @ W: a linear without bias, until an Add of a constant gives it one (see _add)."""
    x = r.act(node, 0)
    _linear(r, node, x, r.required(node, 1, "weight").T, None, node.input[1])


def _linear(
    r: _Reader,
    node: onnx.NodeProto,
    x: str,
    weight: np.ndarray,
    bias: np.ndarray | None,
    weight_name: str,
) -> None:
    if weight.ndim != 2 or len(r.shape[x]) != 1:
        raise r.fail(node, "multiplies more than a vector by a matrix; resgraph's linear does not")
    attrs = {"in_features": weight.shape[1], "out": weight.shape[0], "bias": bias is not None}
    weights = {"weight": weight} | ({"bias": bias.reshape(-1)} if bias is not None else {})
    r.emit(node, "linear", (x,), attrs, weights, weight_name)


def _add(r: _Reader, node: onnx.NodeProto) -> None:
    """Two feature maps, or a MatMul's output plus a constant: that linear's bias."""
    if all(t in r.acts or t in r.pending for t in node.input):
        r.emit(node, "add", (r.act(node, 0), r.act(node, 1)))
        return
    side = 0 if node.input[0] in r.acts else 1
    x = r.act(node, side)
    bias = r.const(node, 1 - side, "addend")
    op = r.op.get(x)
    if (
        op is None
        or op.kind != "linear"
        or op.attrs["bias"]
        or r.read_by[node.input[side]] != 1
        or bias is None
        or bias.size != op.attrs["out"]
    ):
        raise r.fail(node, "adds a constant; resgraph adds one only as a linear's bias")
    op.attrs["bias"] = True
    op.weights["bias"] = np.array(bias, dtype=np.float32).reshape(-1)
    op.module = op.module or r.module_of(node, node.input[1 - side])
    r.alias(node, x)


def _mul(r: _Reader, node: onnx.NodeProto) -> None:
    if not all(t in r.acts or t in r.pending for t in node.input):
        raise r.fail(node, "multiplies by a constant; resgraph multiplies feature maps only")
    r.emit(node, "mul", (r.act(node, 0), r.act(node, 1)))


def _pad(r: _Reader, node: onnx.NodeProto) -> None:
    """Zeros on channels (option A's shortcut), or on height and width for an AveragePool."""
    a = _attrs(node)
    x = r.act(node, 0)
    if a.get("mode", "constant") != "constant":
        raise r.fail(node, f"pads in {a['mode']} mode; resgraph pads with zeros")
    rank = len(r.shape[x]) + 1
    if r.opset < 11:
        pads, value = a.get("pads"), a.get("value", 0.0)
        axes: list[int] = list(range(rank))
    else:
        pads, value = r.required(node, 1, "pads"), r.const(node, 2, "constant")
        found = r.const(node, 3, "axes")
        axes = r.axes(node, found, rank) if found is not None else list(range(rank))
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    if value is not None and np.asarray(value).any():
        raise r.fail(
            node, f"pads with {np.asarray(value).reshape(-1)[0]}; resgraph pads with zeros"
        )
    if len(pads) != 2 * len(axes):
        raise r.fail(node, f"{len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * rank, [0] * rank
    for axis, before, after in zip(axes, pads[: len(axes)], pads[len(axes) :], strict=True):
        begin[axis], end[axis] = before, after
    if min(begin + end) < 0:
        raise r.fail(node, f"crops (pads {pads}); resgraph has no op for that")
    touched = {axis for axis in range(rank) if begin[axis] or end[axis]}
    if not touched:
        r.alias(node, x)
    elif touched == {1}:
        r.emit(node, "pad_channels", (x,), {"before": begin[1], "after": end[1]})
    elif rank == 4 and touched <= {2, 3}:
        r.pending[node.output[0]] = _SpatialPad(
            node,
            x,
            "pads height and width by itself; resgraph pads them only inside a conv or pool "
            "(a zero Pad read by an AveragePool)",
            (begin[2], begin[3]),
            (end[2], end[3]),
        )
    else:
        raise r.fail(node, f"pads axes {sorted(touched)}; resgraph pads channels only")


def _slice(r: _Reader, node: onnx.NodeProto) -> None:
    """x[:, :, ::s, ::s], in one Slice (resgraph, TorchScript) or one per axis (dynamo)."""
    partial = r.pending.get(node.input[0])
    if partial is not None and not isinstance(partial, _PartialSlice):
        raise r.fail(partial.node, partial.why)
    x = partial.source if partial else r.act(node, 0)
    shape = r.shape[x]
    rank = len(shape) + 1
    if r.opset < 10:
        a = _attrs(node)
        starts, ends = a.get("starts", []), a.get("ends", [])
        axes, steps = a.get("axes"), None
    else:
        starts, ends = r.required(node, 1, "starts"), r.required(node, 2, "ends")
        axes, steps = r.const(node, 3, "axes"), r.const(node, 4, "steps")
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = r.axes(node, axes, rank) if axes is not None else list(range(len(starts)))
    steps = [int(v) for v in steps] if steps is not None else [1] * len(starts)
    taken = dict(partial.steps) if partial else {}
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        size = (BATCHES[-1], *shape)[axis] if axis else 2**31
        if start != 0 or end < size or step < 1 or (axis < 2 and step != 1) or axis in taken:
            raise r.fail(
                node,
                f"slices axis {axis} as {start}:{end}:{step}; resgraph subsamples height and "
                "width from the start (x[:, :, ::s, ::s])",
            )
        if step != 1:
            taken[axis] = step
    sh, sw = taken.get(2, 1), taken.get(3, 1)
    if sh == sw == 1:
        r.alias(node, x)
    elif sh == sw:
        r.emit(node, "subsample", (x,), {"stride": sh})
    else:
        r.pending[node.output[0]] = _PartialSlice(
            node,
            x,
            f"subsamples height by {sh} and width by {sw}; resgraph subsamples both alike",
            taken,
        )


def _pool(kind: str) -> Any:
    def lower(r: _Reader, node: onnx.NodeProto) -> None:
        _lower_pool(r, node, kind)

    return lower


def _lower_pool(r: _Reader, node: onnx.NodeProto, kind: str) -> None:
    """A pool as PyTorch's: padding, ceil_mode and count_include_pad from the ONNX form.

    resgraph writes a ceil_mode pool in floor mode with end padding that gives PyTorch's
    size, and one counting padding past PyTorch's as a zero Pad before a pool that counts
    none (`ops.pool.emit_pool`); torch.onnx.export writes ceil_mode itself. Any of these
    whose windows and divisors are PyTorch's for some padding and ceil_mode is read back.
    """
    a = _attrs(node)
    pad = r.pending.get(node.input[0]) if kind == "avgpool" else None
    if pad is not None and not isinstance(pad, _SpatialPad):
        raise r.fail(pad.node, pad.why)
    x = pad.source if pad else r.act(node, 0)
    if len(r.shape[x]) != 3:
        raise r.fail(node, f"pools a {fmt(r.shape[x])} tensor; resgraph pools feature maps")
    if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
        raise r.fail(node, f"dilations {a['dilations']}; resgraph's pools do not dilate")
    k = r.square(node, "kernel", a.get("kernel_shape", []))
    s = r.square(node, "strides", a.get("strides", [1, 1]))
    own = r.pads(node, a)
    counts = kind == "avgpool" and bool(a.get("count_include_pad", 0))
    zeros_begin, zeros_end = (pad.begin, pad.end) if pad else ((0, 0), (0, 0))
    begin = [zeros_begin[i] + own[i] for i in range(2)]
    end = [zeros_end[i] + own[2 + i] for i in range(2)]
    counted_begin = [zeros_begin[i] + (own[i] if counts else 0) for i in range(2)]
    counted_end = [zeros_end[i] + (own[2 + i] if counts else 0) for i in range(2)]
    include = counts or any(counted_begin + counted_end)
    p = r.square(node, "padding before", begin, minimum=0)
    if include and counted_begin != begin:
        raise r.fail(node, f"counts part of its padding ({own}); PyTorch counts all or none")
    if 2 * p > k:
        raise r.fail(node, f"padding {p} is more than half of kernel {k}; PyTorch refuses it")
    sizes = r.shape[x][1:]
    outs = []
    for size, e in zip(sizes, end, strict=True):
        span = size + p + e - k
        if span < 0:
            raise r.fail(node, f"kernel {k} is larger than its padded input {size + p + e}")
        outs.append((-(-span // s) if a.get("ceil_mode", 0) else span // s) + 1)
    ceil_mode = _torch_ceil_mode(r, node, sizes, k, s, p, outs)
    if include:
        for size, out, e in zip(sizes, outs, counted_end, strict=True):
            last = -p + (out - 1) * s + k  # where the last window ends
            if min(last, size + p) != min(last, size + e):
                raise r.fail(node, f"counts end padding ({e}) that PyTorch's pool would not")
    attrs = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil_mode}
    if kind == "avgpool":
        attrs["count_include_pad"] = include
    r.emit(node, kind, (x,), attrs)


def _torch_ceil_mode(
    r: _Reader,
    node: onnx.NodeProto,
    sizes: tuple[int, ...],
    k: int,
    s: int,
    p: int,
    outs: list[int],
) -> bool:
    """The ceil_mode with which PyTorch's pool (padding p) gives the ONNX node's sizes."""
    for ceil_mode in (False, True):
        try:
            torch_outs = [
                spatial(n, k, s, p, ceil_mode, axis, "its window", None)
                for n, axis in zip(sizes, ("height", "width"), strict=True)
            ]
        except SpecError as exc:
            raise r.fail(node, exc.message) from None
        if torch_outs == outs:
            return ceil_mode
    raise r.fail(node, f"its output {fmt(tuple(outs))} is no PyTorch pool's with padding {p}")


LOWER = {
    "Conv": _conv,
    "BatchNormalization": _bn,
    "Relu": _pointwise("relu"),
    "Sigmoid": _pointwise("sigmoid"),
    "MaxPool": _pool("maxpool"),
    "AveragePool": _pool("avgpool"),
    "GlobalAveragePool": _global_avgpool,
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Mul": _mul,
    "Slice": _slice,
    "Pad": _pad,
    "Identity": _skip,
    "Dropout": _skip,
    "Cast": _cast,
}
