"""Build the networkx graph from a plan: one node per op, named like torchvision's modules.

Shortcut policies depend on shapes (option B projects only where a block changes its
input's size), so shapes are inferred node by node as the graph is built, with the
rules in `resgraph.passes.shapes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx

from resgraph.errors import Location, SpecError
from resgraph.expand import (
    LIBRARY_FILE,
    BlockPlan,
    Plan,
    Where,
    evaluate,
    layer_attrs,
    layer_names,
)
from resgraph.passes import shapes
from resgraph.spec import Layer

INPUT = "input"


@dataclass(frozen=True)
class BlockInstance:
    """What a backend needs to instantiate one block: decided here, never re-derived."""

    name: str
    stage: str
    type_name: str
    in_channels: int
    out_channels: int
    width: int
    stride: int
    params: dict[str, int]
    stride_on: str | None
    shortcut: str  # identity | zero_pad | projection | none
    shortcut_attrs: dict[str, Any]
    layers: list[str]
    location: Location | None


class _GraphBuilder:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.graph = nx.DiGraph(name=plan.spec.name)

    def add(
        self,
        name: str,
        op: str,
        attrs: dict[str, Any],
        inputs: list[str],
        where: Location | None,
        what: str,
        **extra: Any,
    ) -> str:
        if name in self.graph:  # e.g. a block layer named downsample under option A
            raise SpecError(
                f"{what}: the name {name!r} is already taken in the graph; rename the layer", where
            )
        in_shapes = [self.graph.nodes[i]["shape"] for i in inputs]
        shape = shapes.infer(op, attrs, in_shapes, what, where)
        self.graph.add_node(
            name,
            op=op,
            attrs=attrs,
            inputs=inputs,
            in_shapes=in_shapes,
            shape=shape,
            loc=where,
            **extra,
        )
        for source in inputs:
            self.graph.add_edge(source, name, shape=self.graph.nodes[source]["shape"])
        return name

    def layers(
        self,
        layers: list[Layer],
        names: list[str],
        prefix: str,
        x: str,
        scope: dict[str, int],
        where: Where,
        **extra: Any,
    ) -> str:
        for i, (layer, name) in enumerate(zip(layers, names, strict=True)):
            full = f"{prefix}{name}"
            if layer.op == "add":
                raise SpecError(
                    f"{full}: add joins a block's shortcut to its branch, so it belongs in a "
                    "block type's layers, not here",
                    where(i),
                )
            x = self.layer(layer, full, x, scope, where.child(i), f"{full} ({layer.op})", **extra)
        return x

    def layer(
        self,
        layer: Layer,
        name: str,
        x: str,
        scope: dict[str, int],
        where: Where,
        what: str,
        stride_scale: int = 1,
        **extra: Any,
    ) -> str:
        """Add one spec layer reading `x`; `stride_scale` applies a block's stride to it."""
        attrs = layer_attrs(layer, scope, where, what, self.graph.nodes[x]["shape"][0])
        if stride_scale != 1:
            attrs["stride"] *= stride_scale
        return self.add(name, layer.op, attrs, [x], where(), what, **extra)

    def build(self) -> nx.DiGraph:
        spec = self.plan.spec
        root = self.plan.where
        inp = spec.input
        self.graph.add_node(
            INPUT,
            op="input",
            attrs={},
            inputs=[],
            in_shapes=[],
            shape=(inp.channels, inp.height, inp.width),
            loc=root("input"),
        )
        head_names = ["avgpool", "flatten", spec.head.name]
        stage_names = [s.name for s in self.plan.stages]
        where = root.child("head")
        taken = frozenset({INPUT, *head_names, *stage_names})
        if len(taken) != 1 + len(head_names) + len(stage_names):
            clash = [INPUT, *head_names, *stage_names].count(spec.head.name) > 1
            raise SpecError(
                "stage and head names must be unique (input, avgpool and flatten are taken, "
                "and so is the head's name)",
                root("head", "name") if clash else root("stages"),
            )
        stem_names = layer_names(spec.stem, root.child("stem"), "stem", taken)
        head_layers = layer_names(
            spec.head.layers, where.child("layers"), "head", taken | set(stem_names)
        )
        x = self.layers(
            spec.stem, stem_names, "", INPUT, self.plan.params, root.child("stem"), role="stem"
        )
        blocks: dict[str, BlockInstance] = {}
        stages: list[tuple[str, list[str]]] = []
        for stage in self.plan.stages:
            for block in stage.blocks:
                x, blocks[block.name] = self.block(block, x, stage.name)
            stages.append((stage.name, [b.name for b in stage.blocks]))
        x = self.layers(
            spec.head.layers,
            head_layers,
            "",
            x,
            self.plan.params,
            where.child("layers"),
            role="head",
        )
        self.head(x, where)
        self.graph.graph.update(
            spec=spec,
            plan=self.plan,
            blocks=blocks,
            stages=stages,
            stem=stem_names,
            head=head_layers,
            output=spec.head.name,
        )
        return self.graph

    def head(self, x: str, where: Where) -> None:
        """Pool and classify: globally (fc), or fully convolutionally (fcn) for any input size."""
        head = self.plan.spec.head
        classes = self.plan.classes
        if head.kind == "fc":
            x = self.add(
                "avgpool", "global_avgpool", {}, [x], where("pool"), "head avgpool", role="head"
            )
            x = self.add("flatten", "flatten", {}, [x], where(), "head flatten", role="head")
            self.add(
                head.name,
                "linear",
                {"out": classes, "bias": True},
                [x],
                where("classes"),
                f"head {head.name}",
                role="head",
            )
            return
        _, h, w = self.graph.nodes[x]["shape"]
        if head.window is None and h != w:
            raise SpecError(
                f"head: the final feature map is {h}x{w}, not square; set "
                "head.window for the fcn head",
                where("kind"),
            )
        window = (
            h
            if head.window is None
            else evaluate(head.window, self.plan.params, where("window"), "head.window")
        )
        pool = {
            "kernel": window,
            "stride": 1,
            "padding": 0,
            "ceil_mode": False,
            "count_include_pad": True,
        }
        x = self.add("avgpool", "avgpool", pool, [x], where("window"), "head avgpool", role="head")
        classifier = {
            "out": classes,
            "kernel": 1,
            "stride": 1,
            "padding": 0,
            "groups": 1,
            "bias": True,
        }
        self.add(
            head.name, "conv", classifier, [x], where("classes"), f"head {head.name}", role="head"
        )

    def block(self, plan: BlockPlan, x: str, stage: str) -> tuple[str, BlockInstance]:
        try:
            return self._block(plan, x, stage)
        except SpecError as exc:
            if exc.location is None or exc.location.file != LIBRARY_FILE:
                raise
            # The user's file is where the fix goes: point at the stage, not into the library.
            raise SpecError(
                f"{exc.message} (in the built-in block type {plan.source.name!r})", plan.where()
            ) from None

    def _block(self, plan: BlockPlan, x: str, stage: str) -> tuple[str, BlockInstance]:
        block_type = plan.source.block_type
        where = plan.source.where.child("layers")
        layers = block_type.layers
        label = f"{plan.name} ({plan.source.name})"
        adds = [i for i, layer in enumerate(layers) if layer.op == "add"]
        if len(adds) > 1:
            raise SpecError(
                f"block type {plan.source.name!r} has {len(adds)} adds; a block has at most one",
                where(adds[1]),
            )
        names = layer_names(layers, where, f"block type {plan.source.name!r}")
        split = adds[0] if adds else len(layers)
        branch, post = list(range(split)), list(range(split + 1, len(layers)))
        residual = bool(adds) and plan.shortcut.option != "none"
        if plan.stride > 1 or plan.stride_on is not None:
            self._check_stride_on(plan, names, branch, where)
        if block_type.projection_from and block_type.projection_from not in [
            names[i] for i in branch
        ]:
            raise SpecError(
                f"{label}: projection_from names {block_type.projection_from!r}, which is not a "
                "layer of the residual branch",
                plan.source.where("projection_from"),
            )

        in_shape = self.graph.nodes[x]["shape"]
        scope = {"in_channels": in_shape[0], "width": plan.width, **plan.params}
        for name, value in block_type.let.items():
            scope[name] = evaluate(value, scope, plan.source.where("let", name), f"{label}: {name}")
        prefix = f"{plan.name}."
        y = x
        projection_source = x
        strides: list[int] = []
        zero_bn: str | None = None
        for i in branch:
            layer, name = layers[i], names[i]
            scale = plan.stride if name == plan.stride_on else 1
            y = self.layer(
                layer,
                prefix + name,
                y,
                scope,
                where.child(i),
                f"{label}: {name}",
                scale,
                block=plan.name,
                role="branch",
            )
            strides.append(self.graph.nodes[y]["attrs"].get("stride", 1))
            if name == block_type.projection_from:
                projection_source, strides = y, []  # a projection only repeats later strides
            if layer.op == "bn":
                zero_bn = y
        shortcut, shortcut_attrs = "none", {}
        if residual:
            stride = math.prod(strides)
            sc, shortcut, shortcut_attrs = self.shortcut(
                plan, x, projection_source, y, stride, label
            )
            y = self.add(
                prefix + names[split],
                "add",
                {},
                [y, sc],
                where(split),
                f"{label}: add",
                block=plan.name,
                role="add",
            )
            if zero_bn is not None:
                self.graph.nodes[zero_bn]["residual_bn"] = True
        for i in post:
            y = self.layer(
                layers[i],
                prefix + names[i],
                y,
                scope,
                where.child(i),
                f"{label}: {names[i]}",
                block=plan.name,
                role="post",
            )
        instance = BlockInstance(
            plan.name,
            stage,
            plan.source.name,
            in_shape[0],
            self.graph.nodes[y]["shape"][0],
            plan.width,
            plan.stride,
            plan.params,
            plan.stride_on,
            shortcut,
            shortcut_attrs,
            [names[i] for i in (*branch, *post)],
            plan.where(),
        )
        return y, instance

    def _check_stride_on(
        self, plan: BlockPlan, names: list[str], branch: list[int], where: Where
    ) -> None:
        label = f"{plan.name} ({plan.source.name})"
        if plan.stride_on is None:
            raise SpecError(
                f"{label}: stride {plan.stride}, but block type {plan.source.name!r} "
                "has no stride_on layer to carry it; set stride_on",
                plan.where("stride"),
            )
        layers = plan.source.block_type.layers
        for i in branch:
            if names[i] == plan.stride_on:
                if layers[i].op in ("conv", "maxpool", "avgpool"):
                    return
                raise SpecError(
                    f"{label}: stride_on names {plan.stride_on!r}, a {layers[i].op} "
                    "layer, which has no stride",
                    plan.stride_on_where or where(i),
                )
        raise SpecError(
            f"{label}: stride_on names {plan.stride_on!r}, which is not a layer of the "
            f"residual branch (layers: {', '.join(names[i] for i in branch)})",
            plan.stride_on_where or plan.where("stride"),
        )

    def shortcut(
        self, plan: BlockPlan, x: str, source: str, y: str, stride: int, label: str
    ) -> tuple[str, str, dict[str, Any]]:
        """The shortcut joining block input `x` to branch output `y`.

        Identity reads `x`; a downsample module (zero padding or projection) reads `source`,
        the block input or its `projection_from` layer's output.
        """
        in_shape, out_shape = self.graph.nodes[x]["shape"], self.graph.nodes[y]["shape"]
        option = plan.shortcut.option
        where = plan.shortcut_where
        changes = in_shape != out_shape
        if option == "A" and changes:
            in_shape = self.graph.nodes[source]["shape"]
            extra = out_shape[0] - in_shape[0]
            if extra < 0:
                raise SpecError(
                    f"{label}: option A pads channels with zeros, so it cannot take {in_shape[0]} "
                    f"channels down to {out_shape[0]}; use shortcut B or C",
                    where("option"),
                )
            before = extra // 2 if plan.shortcut.zero_pad == "split" else 0
            attrs = {"stride": stride, "pad_before": before, "pad_after": extra - before}
            node = self.add(
                f"{plan.name}.downsample",
                "zero_pad",
                attrs,
                [source],
                where("option"),
                f"{label}: shortcut (option A)",
                block=plan.name,
                role="shortcut",
            )
            return node, "zero_pad", attrs
        if not changes and option != "C":
            return x, "identity", {}
        channels = self.graph.nodes[source]["shape"][0]
        scope = {"in_channels": channels, "out_channels": out_shape[0], "stride": stride}
        layers = plan.shortcut.projection
        node = self.layers(
            layers,
            [str(i) for i in range(len(layers))],
            f"{plan.name}.downsample.",
            source,
            scope,
            where.child("projection"),
            block=plan.name,
            role="shortcut",
        )
        channels = self.graph.nodes[node]["shape"][0]
        if channels != out_shape[0]:
            raise SpecError(
                f"{label}: the projection shortcut gives {channels} channels but the "
                f"residual branch gives {out_shape[0]}; end the projection with a layer "
                "of out: out_channels",
                where("projection"),
            )
        return node, "projection", {"stride": stride}


def build_graph(plan: Plan) -> nx.DiGraph:
    """The graph of a plan, every node carrying op, attrs, inputs, shape and source location."""
    return _GraphBuilder(plan).build()
