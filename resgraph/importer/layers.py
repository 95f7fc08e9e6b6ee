"""Source ops to layers: one layer per resgraph op, with its shapes.

Most source ops are one layer. A squeeze-and-excitation gate (mean, 1x1 conv, relu, 1x1
conv, sigmoid, product) is one `se` layer; option A's subsampling and channel padding are
one `zero_pad` layer; an average pool before the flatten whose window covers the whole map
(Caffe's pool5) is a `global_avgpool`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resgraph.importer.source import ImportFailure, SourceGraph, SourceOp, shapes

Shape = tuple[int, ...]


@dataclass
class Layer:
    """One resgraph op made of one or more source ops."""

    key: str  # the last source op's name: what readers of this layer name as their input
    kind: str  # a resgraph op: conv, bn, relu, maxpool, avgpool, se, zero_pad, global_avgpool, ...
    attrs: dict[str, Any]
    inputs: tuple[str, ...]
    sources: tuple[SourceOp, ...]
    in_shape: Shape
    shape: Shape
    extra: dict[str, Any] = field(default_factory=dict)  # se: its two convs

    @property
    def module(self) -> str | None:
        if self.kind == "se":
            fc1 = self.extra["fc1"].module
            return fc1.rpartition(".")[0] or None if fc1 else None
        return self.sources[-1].module

    @property
    def stride(self) -> int:
        return int(self.attrs.get("stride", 1))

    def describe(self) -> str:
        return self.sources[-1].describe()


def lower(graph: SourceGraph) -> list[Layer]:
    """The graph's layers in order; ops resgraph cannot express are one-line errors."""
    sizes = shapes(graph)
    ops = graph.by_name()
    readers = graph.readers()
    taken: dict[str, Layer] = {}  # source op -> the composite layer it belongs to
    for op in graph.ops:
        if op.kind == "mul":
            layer = _squeeze_excite(op, ops, readers, sizes, graph.origin)
            taken.update({source.name: layer for source in layer.sources})
        elif op.kind == "subsample" and _only_reader(op, readers, "pad_channels"):
            pad = readers[op.name][0]
            layer = _layer(pad, "zero_pad", _zero_pad(op, pad), op.inputs, (op, pad), sizes)
            taken.update({op.name: layer, pad.name: layer})
    layers: list[Layer] = []
    for op in graph.ops:
        if op.name in taken:
            layer = taken[op.name]
            if layer.key == op.name:
                layers.append(layer)
            continue
        head = [reader.kind for reader in readers[op.name]] == ["flatten"]
        layers.append(_single(op, sizes, graph.origin, head))
    return layers


def _single(op: SourceOp, sizes: dict[str, Shape], origin: str, head: bool) -> Layer:
    a = op.attrs
    if op.kind == "subsample":
        return _layer(
            op,
            "zero_pad",
            {"stride": a["stride"], "before": 0, "after": 0},
            op.inputs,
            (op,),
            sizes,
        )
    if op.kind == "pad_channels":
        attrs = {"stride": 1, "before": a["before"], "after": a["after"]}
        return _layer(op, "zero_pad", attrs, op.inputs, (op,), sizes)
    if op.kind in ("sigmoid", "mul"):
        raise ImportFailure(
            f"{origin}: {op.describe()}: resgraph has no op for a {op.kind} outside a "
            "squeeze-and-excitation gate"
        )
    if op.kind == "avgpool" and _covers_map(a, sizes[op.inputs[0]], sizes[op.name]) and head:
        return _layer(op, "global_avgpool", {}, op.inputs, (op,), sizes)
    return _layer(op, op.kind, dict(a), op.inputs, (op,), sizes)


def _layer(
    last: SourceOp,
    kind: str,
    attrs: dict[str, Any],
    inputs: tuple[str, ...],
    sources: tuple[SourceOp, ...],
    sizes: dict[str, Shape],
) -> Layer:
    return Layer(last.name, kind, attrs, inputs, sources, sizes[inputs[0]], sizes[last.name])


def _covers_map(attrs: dict[str, Any], in_shape: Shape, shape: Shape) -> bool:
    """A pool whose one window is the whole map, without padding: a global average."""
    return (
        len(in_shape) == 3
        and shape[1:] == (1, 1)
        and attrs["padding"] == 0
        and attrs["kernel"] == in_shape[1] == in_shape[2]
    )


def _only_reader(op: SourceOp, readers: dict[str, list[SourceOp]], kind: str) -> bool:
    found = readers[op.name]
    return len(found) == 1 and found[0].kind == kind


def _zero_pad(subsample: SourceOp, pad: SourceOp) -> dict[str, Any]:
    return {
        "stride": subsample.attrs["stride"],
        "before": pad.attrs["before"],
        "after": pad.attrs["after"],
    }


def _squeeze_excite(
    mul: SourceOp,
    ops: dict[str, SourceOp],
    readers: dict[str, list[SourceOp]],
    sizes: dict[str, Shape],
    origin: str,
) -> Layer:
    """x * sigmoid(conv(relu(conv(mean(x))))), with 1x1 convs: one se layer (a conv without
    a bias, as an exporter writes a zero one, is one with a zero bias)."""
    for x, gate in (mul.inputs, mul.inputs[::-1]):
        chain = _chain_back(gate, ops, ("sigmoid", "conv", "relu", "conv", "global_avgpool"))
        if chain is None or chain[-1].inputs[0] != x:
            continue
        pool, fc1, relu, fc2, sigmoid = chain[::-1]
        if any(len(readers[op.name]) != 1 for op in (pool, fc1, relu, fc2, sigmoid)):
            continue
        if not all(_pointwise_conv(fc) for fc in (fc1, fc2)):
            continue
        channels, hidden = sizes[x][0], fc1.attrs["out"]
        reduction = channels // hidden
        if channels // reduction != hidden:
            raise ImportFailure(
                f"{origin}: {mul.describe()}: a squeeze-and-excitation gate with {hidden} "
                f"hidden units for {channels} channels is no channels // reduction"
            )
        layer = Layer(
            mul.name,
            "se",
            {"reduction": reduction, "hidden": hidden},
            (x,),
            (pool, fc1, relu, fc2, sigmoid, mul),
            sizes[x],
            sizes[mul.name],
            {"fc1": fc1, "fc2": fc2},
        )
        return layer
    raise ImportFailure(
        f"{origin}: {mul.describe()}: resgraph has no op for a product that is not a "
        "squeeze-and-excitation gate (mean, 1x1 conv, relu, 1x1 conv, sigmoid)"
    )


def _chain_back(
    name: str, ops: dict[str, SourceOp], kinds: tuple[str, ...]
) -> list[SourceOp] | None:
    chain = []
    for kind in kinds:
        op = ops.get(name)
        if op is None or op.kind != kind:
            return None
        chain.append(op)
        name = op.inputs[0]
    return chain


def _pointwise_conv(op: SourceOp) -> bool:
    a = op.attrs
    return (
        a["kernel"] == 1
        and a["stride"] == 1
        and a["padding"] == 0
        and a["groups"] == 1
        and a["bias"]
    )
