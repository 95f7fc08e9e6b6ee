"""Caffe prototxts (the paper's deploy nets) to a SourceGraph, with Caffe's semantics.

The facts followed are BVLC Caffe's: Convolution rounds output sizes down and has a bias
unless `bias_term: false`; Pooling rounds up (`ceil_mode`) and its AVE counts padding;
BatchNorm only normalizes, so it is a BN only together with the Scale (gamma, beta) right
after it; layers usually write in place (top == bottom), so a blob stands for its latest
producer. Sizes are followed with Caffe's own rules, so a layer that does not fit is
refused at its line, and a pool where Caffe and PyTorch would disagree is refused rather
than imported wrong. A prototxt carries no weights.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resgraph.errors import Location
from resgraph.importer import prototxt
from resgraph.importer.prototxt import Field, Identifier, Message, clip, failure
from resgraph.importer.source import INPUT, ImportFailure, SourceGraph, SourceOp
from resgraph.language import MAX_SIZE

Shape = tuple[int, ...]  # without the batch dimension: (C, H, W), or (features,) once flat

_NET_FIELDS = frozenset(
    {"name", "input", "input_shape", "input_dim", "layer", "layers"}
    | {"force_backward", "state", "debug_info"}
)
# LayerParameter's fields that do not change the function (plus each type's *_param);
# V1LayerParameter adds blobs_lr, weight_decay and blob_share_mode
_LAYER_FIELDS = frozenset(
    {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs", "propagate_down"}
    | {"blobs_lr", "weight_decay", "blob_share_mode"}
)
# legacy `layers { type: CONVOLUTION }` names of the types read here
_V1_TYPES = {
    "CONVOLUTION": "Convolution",
    "POOLING": "Pooling",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "ELTWISE": "Eltwise",
    "INNER_PRODUCT": "InnerProduct",
    "FLATTEN": "Flatten",
    "SOFTMAX": "Softmax",
    "DROPOUT": "Dropout",
    "SPLIT": "Split",
    "SILENCE": "Silence",
}
_DEFAULT_EPS = 1e-5  # BatchNormParameter.eps


def read_prototxt(path: Path) -> SourceGraph:
    """A Caffe prototxt's network as primitive ops; a prototxt has no weights."""
    return lower(prototxt.read(path), str(path))


def lower(net: Message, origin: str) -> SourceGraph:
    """A parsed NetParameter as a SourceGraph (`origin` names the file in messages)."""
    return _Lowering(net, origin).graph()


@dataclass(frozen=True)
class _Blob:
    op: str  # the op whose output the blob holds now; INPUT for the network input
    shape: Shape


def _shown(value: object) -> str:
    if isinstance(value, Message):
        return "a { ... } message"
    if isinstance(value, Identifier):
        return value.name
    if isinstance(value, str):
        return clip(repr(value[:40]), 44)
    return repr(value)


def _int(field: Field, context: str, low: int, high: int) -> int:
    value = field.value
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise failure(
            field.where,
            f"{context}{field.name} must be an integer from {low:,} to {high:,}, "
            f"not {_shown(value)}",
        )
    return value


def _string(field: Field, context: str) -> str:
    if not isinstance(field.value, str):
        raise failure(
            field.where, f"{context}{field.name} must be a quoted string, not {_shown(field.value)}"
        )
    return field.value


def _real(field: Field, context: str) -> float:
    value = field.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise failure(
            field.where, f"{context}{field.name} must be a finite number, not {_shown(value)}"
        )
    return float(value)


def _shape(field: Field, context: str) -> tuple[int, int, int]:
    """A BlobShape message `{ dim: N dim: C dim: H dim: W }` as C, H, W."""
    shape = field.value
    if not isinstance(shape, Message) or {f.name for f in shape.fields} - {"dim"}:
        raise failure(field.where, f"{context}{field.name} must be {{ dim: ... }}")
    return _dims(shape.all("dim"), field.where, context)


def _dims(fields: list[Field], where: Location, context: str) -> tuple[int, int, int]:
    """An input's N x C x H x W; resgraph keeps C, H, W."""
    if len(fields) != 4:
        raise failure(
            where, f"{context}the input shape has {len(fields)} dims; resgraph reads N x C x H x W"
        )
    _, c, h, w = (_int(f, context, 1, MAX_SIZE) for f in fields)
    return c, h, w


class _Layer:
    """One `layer { ... }` with typed, located access to its fields."""

    def __init__(self, msg: Message, where: Location, legacy: bool) -> None:
        self.msg, self.where = msg, where
        self.name, self.type = "", ""
        found = msg.one("name")
        if found is None:
            raise failure(where, "a layer needs a name")
        self.name = _string(found, "layer: ")
        found = msg.one("type")
        if found is None:
            raise self.fail("needs a type")
        if not legacy:
            self.type = _string(found, f"{self.describe()}: ")
        elif isinstance(found.value, Identifier):
            self.type = _V1_TYPES.get(found.value.name, found.value.name)
        else:
            raise self.fail("in a legacy layers { } block, type is a name such as CONVOLUTION")
        for item in msg.fields:
            if item.name in ("include", "exclude"):
                raise self.fail(
                    f"{item.name} rules are for train nets; give the deploy prototxt", item.where
                )
            if item.name == "layer" and legacy:
                raise self.fail(
                    "V0 layers (layers { layer { ... } }) are not read; upgrade the file with "
                    "Caffe's upgrade_net_proto_text",
                    item.where,
                )
            if item.name not in _LAYER_FIELDS and not item.name.endswith("_param"):
                raise self.fail(f"unknown field '{clip(item.name)}'", item.where)

    def describe(self) -> str:
        kind = f" ({clip(self.type)})" if self.type else ""
        return f"layer '{clip(self.name)}'{kind}"

    def fail(self, message: str, where: Location | None = None) -> ImportFailure:
        return failure(where or self.where, f"{self.describe()}: {message}")

    def io(self, bottoms: int | None, tops: int | None) -> tuple[list[Field], list[str]]:
        """Bottoms (as fields, for their places) and top names, in the counts the type takes."""
        found = self.msg.all("bottom")
        top_fields = self.msg.all("top")
        for fields, want, what in ((found, bottoms, "bottom"), (top_fields, tops, "top")):
            if want is not None and len(fields) != want:
                raise self.fail(f"takes {want} {what}{'s' if want != 1 else ''}, not {len(fields)}")
            if want is None and not fields:
                raise self.fail(f"needs a {what}")
        return found, [_string(f, f"{self.describe()}: ") for f in top_fields]

    def param(self, name: str, allowed: frozenset[str], required: bool = False) -> Message:
        """The type's `*_param` message (empty when absent); fields resgraph does not read
        are refused, as protobuf refuses names its schema lacks."""
        found = self.msg.one(name)
        if found is None:
            if required:
                raise self.fail(f"needs {name} {{ ... }}")
            return Message((), self.where)
        if not isinstance(found.value, Message):
            raise self.fail(f"{name} must be a {{ ... }} message", found.where)
        for item in found.value.fields:
            if item.name not in allowed:
                close = difflib.get_close_matches(item.name, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(
                    f"resgraph does not read {name}.{clip(item.name)}{hint}", item.where
                )
        return found.value

    def integer(self, msg: Message, name: str, default: int | None, low: int = 1) -> int:
        found = msg.one(name)
        if found is None:
            if default is None:
                raise self.fail(f"needs {name}", msg.where)
            return default
        return _int(found, f"{self.describe()}: ", low, MAX_SIZE)

    def real(self, msg: Message, name: str, default: float) -> float:
        found = msg.one(name)
        return default if found is None else _real(found, f"{self.describe()}: ")

    def flag(self, msg: Message, name: str, default: bool) -> bool:
        found = msg.one(name)
        if found is None:
            return default
        if found.value in (0, 1) and not isinstance(found.value, float | Message):
            return bool(found.value)
        raise self.fail(f"{name} must be true or false, not {_shown(found.value)}", found.where)

    def choice(self, msg: Message, name: str, names: tuple[str, ...], default: str) -> str:
        """An enum field by name or number (`names` in the enum's number order)."""
        found = msg.one(name)
        if found is None:
            return default
        value = found.value
        if isinstance(value, Identifier) and value.name in names:
            return value.name
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return names[value]
        raise self.fail(
            f"{name} must be one of {', '.join(names)}, not {_shown(value)}", found.where
        )

    def place(self, msg: Message, name: str) -> Location:
        """Where a field is written, or its message when it is not."""
        found = msg.one(name)
        return msg.where if found is None else found.where

    def fixed(self, msg: Message, name: str, value: int) -> None:
        """A field resgraph reads only at its default (an `axis`)."""
        found = msg.one(name)
        if found is not None and found.value != value:
            raise self.fail(
                f"{name} {_shown(found.value)}: resgraph reads only {name} {value}", found.where
            )

    def window(
        self, msg: Message, name: str, pair: tuple[str, str] | None, default: int | None, most: int
    ) -> int:
        """One square window size: `name` (up to `most` values, all equal) or its _h/_w pair."""
        values = msg.all(name)
        h = msg.one(pair[0]) if pair else None
        w = msg.one(pair[1]) if pair else None
        low = 0 if name == "pad" else 1
        if pair and (h or w):
            first = h or w
            assert first is not None
            if values:
                raise self.fail(f"give {name} or {pair[0]} and {pair[1]}, not both", first.where)
            if not (h and w):
                raise self.fail(f"give both {pair[0]} and {pair[1]}", first.where)
            size_h, size_w = (self.integer(msg, key, None, low) for key in pair)
            if size_h != size_w:
                raise self.fail(
                    f"{pair[0]} {size_h} and {pair[1]} {size_w} differ; resgraph's windows are "
                    "square",
                    h.where,
                )
            return size_h
        if len(values) > most:
            raise self.fail(
                f"{name} gives {len(values)} values; it takes {most}"
                + (", or one per spatial axis" if most > 1 else ""),
                values[most].where,
            )
        sizes = [_int(v, f"{self.describe()}: ", low, MAX_SIZE) for v in values]
        if len(set(sizes)) > 1:
            raise self.fail(
                f"{name} {sizes[0]} and {sizes[1]} differ; resgraph's windows are square",
                values[1].where,
            )
        if sizes:
            return sizes[0]
        if default is None:
            raise self.fail(f"needs {name}" + (f" (or {pair[0]} and {pair[1]})" if pair else ""))
        return default


@dataclass
class _PendingBN:
    """A BatchNorm waiting for its Scale: the pair becomes one bn op."""

    layer: _Layer
    source: _Blob
    top: str
    eps: float


class _Lowering:
    """Walks the layers in file order (Caffe's order is topological), tracking blobs."""

    def __init__(self, net: Message, origin: str) -> None:
        self.net, self.origin = net, origin
        self.ops: list[SourceOp] = []
        self.places: dict[str, Location] = {}  # each op's layer, for messages
        self.blobs: dict[str, _Blob] = {}
        self.hidden: dict[str, str] = {}  # blobs no layer may read, and why
        self.read: set[str] = set()  # ops read by a layer that has no op (Silence)
        self.taken: set[str] = set()
        self.input: tuple[int, int, int] | None = None
        self.pending: _PendingBN | None = None
        self.softmax: tuple[_Layer, str] | None = None
        self.notes: list[str] = []

    def graph(self) -> SourceGraph:
        for item in self.net.fields:
            if item.name not in _NET_FIELDS:
                raise failure(item.where, f"unknown field '{clip(item.name)}' in the net")
        layers = self.layers()
        self.taken = {INPUT} | {layer.name for layer in layers}
        self.declared_input(layers)
        seen: set[str] = set()
        for layer in layers:
            if self.pending and layer.type != "Scale":
                raise self.lone_batch_norm(self.pending)
            if layer.name in seen:
                raise layer.fail("a second layer of this name; layer names must be unique")
            seen.add(layer.name)
            lower_layer = _LOWER.get(layer.type)
            if lower_layer is None:
                raise layer.fail(f"resgraph has no op for {clip(layer.type)}")
            lower_layer(self, layer)
        if self.pending:
            raise self.lone_batch_norm(self.pending)
        self.check_output()
        assert self.input is not None
        return SourceGraph(self.origin, self.input, self.ops, has_weights=False, notes=self.notes)

    def layers(self) -> list[_Layer]:
        current, legacy = self.net.all("layer"), self.net.all("layers")
        if current and legacy:
            raise failure(
                legacy[0].where,
                "the net mixes layer { } and legacy layers { } blocks; Caffe refuses that too",
            )
        out = []
        for item in current or legacy:
            if not isinstance(item.value, Message):
                raise failure(item.where, f"{item.name} must be a {{ ... }} message")
            out.append(_Layer(item.value, item.where, legacy=bool(legacy)))
        return out

    def declared_input(self, layers: list[_Layer]) -> None:
        """The net-level `input:` (legacy) with `input_dim` x4 or `input_shape`; at most one
        input in all, counting Input layers."""
        declared = self.net.all("input")
        sources = [f.where for f in declared] + [x.where for x in layers if x.type == "Input"]
        if len(sources) > 1:
            raise failure(sources[1], "a second input; resgraph networks have one input")
        dims, shapes = self.net.all("input_dim"), self.net.all("input_shape")
        if not declared:
            if dims or shapes:
                where = (dims or shapes)[0].where
                raise failure(where, 'input_dim and input_shape need an input: "name"')
            if not sources:
                raise failure(
                    Location(self.origin),
                    "the net has no input; declare one: input: with input_shape { dim: ... }, "
                    "or an Input layer",
                )
            return
        name = _string(declared[0], "")
        if dims and shapes:
            raise failure(shapes[0].where, "give input_shape or input_dim, not both")
        if len(shapes) > 1:
            raise failure(shapes[1].where, "a second input_shape; resgraph networks have one input")
        if shapes:
            self.input = _shape(shapes[0], "")
        elif dims:
            self.input = _dims(dims, dims[0].where, "")
        else:
            raise failure(
                declared[0].where,
                f"input '{clip(name)}' has no shape; give input_shape {{ dim: ... }} "
                "or four input_dim",
            )
        self.blobs[name] = _Blob(INPUT, self.input)

    def blob(self, layer: _Layer, bottom: Field) -> _Blob:
        """What a bottom reads: the latest producer of that blob."""
        name = _string(bottom, f"{layer.describe()}: ")
        if name in self.hidden:
            raise layer.fail(f"bottom '{clip(name)}' {self.hidden[name]}", bottom.where)
        if name not in self.blobs:
            raise layer.fail(
                f"bottom '{clip(name)}' names no blob (no input or earlier layer writes it)",
                bottom.where,
            )
        return self.blobs[name]

    def source(self, layer: _Layer) -> tuple[_Blob, str]:
        """A one-bottom, one-top layer's input blob and its top's name."""
        bottoms, tops = layer.io(1, 1)
        return self.blob(layer, bottoms[0]), tops[0]

    def map_shape(self, layer: _Layer, blob: _Blob) -> tuple[int, int, int]:
        if len(blob.shape) != 3:
            raise layer.fail(f"needs a C x H x W map; its input has shape {blob.shape}")
        c, h, w = blob.shape
        return c, h, w

    def emit(
        self,
        layer: _Layer,
        kind: str,
        inputs: list[_Blob],
        attrs: dict[str, object],
        shape: Shape,
        name: str | None = None,
    ) -> _Blob:
        """Append an op and return its output. The op is the layer's, named and moduled after
        it, unless `name` is given: an op Caffe has no layer of its own for, with no module."""
        if name is None and layer.name == INPUT:
            raise layer.fail(f"'{INPUT}' names the network's input in resgraph; rename the layer")
        op = SourceOp(
            name=name or layer.name,
            kind=kind,
            inputs=tuple(blob.op for blob in inputs),
            attrs=attrs,
            source_op=layer.type,
            module=layer.name if name is None else None,
        )
        self.ops.append(op)
        self.places[op.name] = layer.where
        return _Blob(op.name, shape)

    def write(self, top: str, blob: _Blob) -> None:
        self.blobs[top] = blob
        self.hidden.pop(top, None)

    def fresh(self, name: str) -> str:
        """A name no layer has, for an op Caffe does not write as a layer of its own."""
        candidate, n = name, 2
        while candidate in self.taken:
            candidate, n = f"{name}{n}", n + 1
        self.taken.add(candidate)
        return candidate

    def lone_batch_norm(self, pending: _PendingBN) -> ImportFailure:
        return pending.layer.fail(
            "not followed by a Scale (bias_term: true) on its top; resgraph's bn has an affine "
            "transform, and a lone BatchNorm has none"
        )

    def check_output(self) -> None:
        """One output: the last op, read by nobody; a Softmax on it is dropped."""
        if not self.ops:
            raise failure(Location(self.origin), "the net has no layer that resgraph computes")
        last = self.ops[-1]
        if self.softmax:
            layer, reads = self.softmax
            if reads != last.name:
                raise layer.fail(
                    "resgraph has no op for Softmax; only a final Softmax, on the network's "
                    "output, is dropped"
                )
            self.notes.append(f"{layer.describe()} dropped: resgraph's networks output logits")
        read = self.read | {name for op in self.ops for name in op.inputs}
        outputs = [op for op in self.ops if op.name not in read]
        if outputs != [last]:
            listed = ", ".join(op.describe() for op in outputs) or "none"
            extra = [op for op in outputs if op is not last]
            raise failure(
                self.places[extra[0].name] if extra else Location(self.origin),
                f"the net's outputs are {listed}; resgraph networks have one output, the last op",
            )


def _input(self: _Lowering, layer: _Layer) -> None:
    _, tops = layer.io(0, 1)
    param = layer.param("input_param", frozenset({"shape"}), required=True)
    shapes = param.all("shape")
    if len(shapes) != 1:
        where = shapes[1].where if shapes else param.where
        raise layer.fail("needs input_param { shape { dim: ... } }, one shape", where)
    self.input = _shape(shapes[0], f"{layer.describe()}: ")
    self.write(tops[0], _Blob(INPUT, self.input))


_CONV_FIELDS = frozenset(
    {"num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "group"}
    | {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w", "axis"}
    | {"weight_filler", "bias_filler", "engine", "force_nd_im2col"}
)


def _convolution(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    c, h, w = self.map_shape(layer, source)
    param = layer.param("convolution_param", _CONV_FIELDS, required=True)
    out = layer.integer(param, "num_output", None)
    kernel = layer.window(param, "kernel_size", ("kernel_h", "kernel_w"), None, most=2)
    stride = layer.window(param, "stride", ("stride_h", "stride_w"), 1, most=2)
    pad = layer.window(param, "pad", ("pad_h", "pad_w"), 0, most=2)
    dilation = layer.window(param, "dilation", None, 1, most=2)
    group = layer.integer(param, "group", 1)
    bias = layer.flag(param, "bias_term", True)
    layer.fixed(param, "axis", 1)
    if out % group or c % group:
        raise layer.fail(f"group {group} does not divide its {c} input and {out} output channels")
    span = dilation * (kernel - 1) + 1
    if min(h, w) + 2 * pad < span:
        raise layer.fail(
            f"its {span}x{span} window is larger than its {h}x{w} input padded by {pad}"
        )
    attrs = {
        "in_channels": c,
        "out": out,
        "kernel": kernel,
        "stride": stride,
        "padding": pad,
        "dilation": dilation,
        "groups": group,
        "bias": bias,
    }
    size = [(n + 2 * pad - span) // stride + 1 for n in (h, w)]  # Caffe rounds down here
    self.write(top, self.emit(layer, "conv", [source], attrs, (out, *size)))


def _batch_norm(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    fields = frozenset({"use_global_stats", "moving_average_fraction", "eps"})
    param = layer.param("batch_norm_param", fields)
    eps = layer.real(param, "eps", _DEFAULT_EPS)
    if eps <= 0:
        raise layer.fail(f"eps must be above 0, not {eps:g}", layer.place(param, "eps"))
    layer.flag(param, "use_global_stats", True)
    layer.real(param, "moving_average_fraction", 0.999)
    self.pending = _PendingBN(layer, source, top, eps)


def _scale(self: _Lowering, layer: _Layer) -> None:
    pending, self.pending = self.pending, None
    if pending is None:
        raise layer.fail(
            "not right after a BatchNorm; resgraph has no op for a lone Scale (its bn is "
            "BatchNorm and Scale together)"
        )
    bottoms, tops = layer.io(None, 1)
    if len(bottoms) != 1 or _string(bottoms[0], "") != pending.top:
        raise self.lone_batch_norm(pending)
    fields = frozenset({"axis", "num_axes", "filler", "bias_term", "bias_filler"})
    param = layer.param("scale_param", fields)
    layer.fixed(param, "axis", 1)
    layer.fixed(param, "num_axes", 1)
    if not layer.flag(param, "bias_term", False):
        raise layer.fail("needs bias_term: true after a BatchNorm; resgraph's bn has a bias (beta)")
    bn = pending.layer
    attrs = {"channels": pending.source.shape[0], "eps": pending.eps}
    self.write(tops[0], self.emit(bn, "bn", [pending.source], attrs, pending.source.shape))
    if tops[0] != pending.top:
        self.hidden[pending.top] = f"is {bn.describe()}'s output before its Scale"


def _relu(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    param = layer.param("relu_param", frozenset({"negative_slope", "engine"}))
    slope = layer.real(param, "negative_slope", 0.0)
    if slope:
        raise layer.fail(
            f"negative_slope {slope:g}: resgraph's relu has slope 0",
            layer.place(param, "negative_slope"),
        )
    self.write(top, self.emit(layer, "relu", [source], {}, source.shape))


def _sigmoid(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    layer.param("sigmoid_param", frozenset({"engine"}))
    self.write(top, self.emit(layer, "sigmoid", [source], {}, source.shape))


def _pooling(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    c, h, w = self.map_shape(layer, source)
    fields = frozenset(
        {"pool", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w"}
        | {"pad", "pad_h", "pad_w", "global_pooling", "round_mode", "engine"}
    )
    param = layer.param("pooling_param", fields)
    method = layer.choice(param, "pool", ("MAX", "AVE", "STOCHASTIC"), "MAX")
    if method == "STOCHASTIC":
        raise layer.fail("resgraph has no op for stochastic pooling", layer.place(param, "pool"))
    if layer.flag(param, "global_pooling", False):
        _global_pooling(self, layer, param, method, source, top)
        return
    kernel = layer.window(param, "kernel_size", ("kernel_h", "kernel_w"), None, most=1)
    stride = layer.window(param, "stride", ("stride_h", "stride_w"), 1, most=1)
    pad = layer.window(param, "pad", ("pad_h", "pad_w"), 0, most=1)
    ceil_mode = layer.choice(param, "round_mode", ("CEIL", "FLOOR"), "CEIL") == "CEIL"
    if pad > kernel // 2:
        raise layer.fail(
            f"pad {pad} is more than half its kernel {kernel}; resgraph's pools (PyTorch's) "
            f"allow at most {kernel // 2}"
        )
    if min(h, w) + 2 * pad < kernel:
        raise layer.fail(f"its {kernel}x{kernel} window is larger than its {h}x{w} input")
    size = [_pooled(n, kernel, stride, pad, ceil_mode) for n in (h, w)]
    if (
        ceil_mode
        and not pad
        and any((m - 1) * stride >= n for m, n in zip(size, (h, w), strict=True))
    ):
        raise layer.fail(
            "Caffe's last window starts past the input here (stride over kernel, no pad) and "
            "PyTorch drops that window; resgraph cannot match this pool"
        )
    attrs: dict[str, object] = {
        "kernel": kernel,
        "stride": stride,
        "padding": pad,
        "ceil_mode": ceil_mode,
    }
    if method == "AVE":
        attrs["count_include_pad"] = True  # Caffe divides by the window, padding included
    kind = "maxpool" if method == "MAX" else "avgpool"
    self.write(top, self.emit(layer, kind, [source], attrs, (c, *size)))


def _pooled(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Caffe's pooled size: rounded up (CEIL), less a last window that starts in the padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _global_pooling(
    self: _Lowering, layer: _Layer, param: Message, method: str, source: _Blob, top: str
) -> None:
    for name in ("kernel_size", "kernel_h", "kernel_w"):
        found = param.all(name)
        if found:
            raise layer.fail(
                "global_pooling takes no kernel size (Caffe refuses it too)", found[0].where
            )
    if layer.window(param, "stride", ("stride_h", "stride_w"), 1, most=1) != 1 or layer.window(
        param, "pad", ("pad_h", "pad_w"), 0, most=1
    ):
        raise layer.fail("global_pooling takes stride 1 and pad 0 (Caffe refuses others)")
    if method == "MAX":
        raise layer.fail("resgraph has no op for global max pooling, only global average pooling")
    self.write(top, self.emit(layer, "global_avgpool", [source], {}, (source.shape[0], 1, 1)))


def _eltwise(self: _Lowering, layer: _Layer) -> None:
    bottoms, tops = layer.io(2, 1)
    first, second = (self.blob(layer, bottom) for bottom in bottoms)
    param = layer.param("eltwise_param", frozenset({"operation", "coeff", "stable_prod_grad"}))
    operation = layer.choice(param, "operation", ("PROD", "SUM", "MAX"), "SUM")
    coeffs = param.all("coeff")
    if coeffs and len(coeffs) != len(bottoms):
        raise layer.fail(
            f"{len(coeffs)} coeff for {len(bottoms)} bottoms; Caffe takes one per bottom",
            coeffs[0].where,
        )
    for coeff in coeffs:
        value = _real(coeff, f"{layer.describe()}: ")
        if operation != "SUM" or value != 1:
            raise layer.fail(
                f"coeff {value:g}: resgraph's add and mul have no coefficients", coeff.where
            )
    if operation == "MAX":
        raise layer.fail("resgraph has no op for an elementwise maximum (operation: MAX)")
    if first.shape != second.shape:
        raise layer.fail(f"its bottoms' shapes {first.shape} and {second.shape} differ")
    kind = "add" if operation == "SUM" else "mul"
    self.write(tops[0], self.emit(layer, kind, [first, second], {}, first.shape))


def _inner_product(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    fields = frozenset(
        {"num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"}
    )
    param = layer.param("inner_product_param", fields)
    out = layer.integer(param, "num_output", None)
    bias = layer.flag(param, "bias_term", True)
    layer.fixed(param, "axis", 1)
    layer.flag(param, "transpose", False)  # the weights' layout only; a prototxt has none
    flat = _flat(self, layer, source)
    attrs = {"in_features": flat.shape[0], "out": out, "bias": bias}
    self.write(top, self.emit(layer, "linear", [flat], attrs, (out,)))


def _flat(self: _Lowering, layer: _Layer, source: _Blob) -> _Blob:
    """`source` as features: a flatten op when it is still a map (InnerProduct's axis 1)."""
    if len(source.shape) == 1:
        return source
    name = self.fresh(f"{layer.name}_flatten")
    return self.emit(layer, "flatten", [source], {}, (math.prod(source.shape),), name)


def _flatten(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    param = layer.param("flatten_param", frozenset({"axis", "end_axis"}))
    layer.fixed(param, "axis", 1)
    layer.fixed(param, "end_axis", -1)
    if len(source.shape) == 1:
        self.write(top, source)
        return
    shape = (math.prod(source.shape),)
    self.write(top, self.emit(layer, "flatten", [source], {}, shape))


def _softmax(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)
    layer.param("softmax_param", frozenset({"axis", "engine"}))
    if self.softmax:
        raise layer.fail("resgraph has no op for Softmax; only a final Softmax is dropped")
    self.softmax = (layer, source.op)
    self.blobs.pop(top, None)
    self.hidden[top] = f"is the output of {layer.describe()}, which resgraph drops"


def _dropout(self: _Lowering, layer: _Layer) -> None:
    source, top = self.source(layer)  # identity at inference, as Caffe scales while training
    layer.param("dropout_param", frozenset({"dropout_ratio", "scale_train"}))
    self.write(top, source)


def _split(self: _Lowering, layer: _Layer) -> None:
    bottoms, tops = layer.io(1, None)
    source = self.blob(layer, bottoms[0])
    for top in tops:
        self.write(top, source)


def _silence(self: _Lowering, layer: _Layer) -> None:
    bottoms, _ = layer.io(None, 0)
    self.read.update(self.blob(layer, bottom).op for bottom in bottoms)


_LOWER: dict[str, Callable[[_Lowering, _Layer], None]] = {
    "Input": _input,
    "Convolution": _convolution,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "ReLU": _relu,
    "Sigmoid": _sigmoid,
    "Pooling": _pooling,
    "Eltwise": _eltwise,
    "InnerProduct": _inner_product,
    "Flatten": _flatten,
    "Softmax": _softmax,
    "Dropout": _dropout,
    "Split": _split,
    "Silence": _silence,
}
