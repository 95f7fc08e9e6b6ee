"""The front end's last step: a plan becomes the resolved IR, one node per op.

Layers are resolved once into templates (sizes as expressions of a block's names, for the
generated classes) and each instance evaluates the same templates into nodes (sizes as
numbers, for the passes and the ONNX backend), so the two cannot disagree. Shortcut
policies depend on shapes (option B projects only where a block changes its input's size),
so shapes are inferred node by node as the IR is built, with each op's own shape rule.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

import networkx as nx

from resgraph.errors import Location, SpecError
from resgraph.expand import LIBRARY_FILE, BlockPlan, Plan, Where, layer_names
from resgraph.expr import Dim, times
from resgraph.ir import (
    INPUT,
    Block,
    BlockTemplate,
    Feature,
    LayerTemplate,
    Network,
    Node,
    ProjectionTemplate,
    Shortcut,
    Stage,
)
from resgraph.language import check_attribute
from resgraph.ops import OPS
from resgraph.ops.base import concrete, evaluate, fmt
from resgraph.ops.conv import ConvAttrs
from resgraph.ops.drop_path import ARGUMENT as DROP_PATH
from resgraph.ops.drop_path import DropPathAttrs
from resgraph.ops.linear import LinearAttrs
from resgraph.ops.pool import PoolAttrs
from resgraph.ops.relu import NoAttrs
from resgraph.ops.zero_pad import ZeroPadAttrs
from resgraph.spec import Layer
from resgraph.spec import Shortcut as ShortcutPolicy

__all__ = ["INPUT", "build_network", "to_networkx"]

SCALED_BY_BLOCK = "stride"  # the name a stride_on layer's stride is multiplied by
DILATION, FIRST_DILATION = "dilation", "first_dilation"  # a block's dilations, by name
UNDILATED: tuple[Dim, Dim] = (1, 1)


def templates(
    layers: list[Layer],
    names: list[str],
    channels: Dim,
    where: Where,
    stride_on: str | None = None,
    offset: int = 0,
    dilations: tuple[Dim, Dim] = UNDILATED,
) -> tuple[LayerTemplate, ...]:
    """Resolve layers once, tracking input channels as an expression through them.

    `offset` is the first layer's index in the list the spec wrote (layers after an add).
    `dilations` (first, later): the defaults of the first op that takes the block's dilation
    and of those after it; names in a dilated network's block types, else 1.
    """
    out = []
    dilation, later = dilations
    for i, (layer, name) in enumerate(zip(layers, names, strict=True), start=offset):
        if layer.op != "add":  # every other layer becomes a module attribute of that name
            check_attribute(name, where(i, layer.op, "name") or where(i))
        op = OPS[layer.op]
        attrs = op.resolve(layer.args, channels, dilation)
        if dilation != later and getattr(attrs, "dilation", None) == dilation:
            dilation = later
        if name == stride_on and hasattr(attrs, "stride"):  # else _check_stride_on says why
            attrs = dataclasses.replace(attrs, stride=times(attrs.stride, SCALED_BY_BLOCK))
        here = where.child(i, layer.op)
        fields = {f.name: here(f.name) for f in dataclasses.fields(attrs)}
        out.append(LayerTemplate(name, layer.op, attrs, channels, where(i), fields))
        channels = op.out_channels(attrs, channels)
    return tuple(out)


def _refuse_add(layers: list[Layer], names: list[str], where: Where) -> None:
    """Outside a block type there is no shortcut for an add to join."""
    for i, (layer, name) in enumerate(zip(layers, names, strict=True)):
        if layer.op == "add":
            raise SpecError(
                f"{name}: add joins a block's shortcut to its branch, so it belongs in a "
                "block type's layers, not here",
                where(i),
            )


class _Builder:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []  # node names as added, to slice a block's out cheaply
        self.block_templates: dict[tuple[int, str | None], BlockTemplate] = {}
        self.projections: dict[int, ProjectionTemplate] = {}
        dilated = any(
            (b.dilation, b.first_dilation) != UNDILATED for s in plan.stages for b in s.blocks
        )
        self.dilations: tuple[Dim, Dim] = (FIRST_DILATION, DILATION) if dilated else UNDILATED
        self.drop_path = bool(plan.spec.drop_path_rate)

    def channels(self, name: str) -> int:
        return self.nodes[name].shape[0]

    def add(
        self,
        name: str,
        op: str,
        attrs: Any,
        inputs: list[str],
        where: Location | None,
        what: str,
        role: str,
        block: str | None = None,
    ) -> str:
        if name in self.nodes:  # e.g. a block layer named downsample under option A
            raise SpecError(
                f"{what}: the name {name!r} is already taken in the graph; rename the layer", where
            )
        in_shapes = tuple(self.nodes[i].shape for i in inputs)
        shape = OPS[op].shape(attrs, list(in_shapes), what, where)
        if min(shape) < 1:
            raise SpecError(f"{what}: output size reaches zero ({fmt(shape)})", where)
        self.order.append(name)
        self.nodes[name] = Node(
            name, op, attrs, tuple(inputs), in_shapes, shape, where, role, block
        )
        return name

    def layer(
        self,
        template: LayerTemplate,
        name: str,
        x: str,
        scope: dict[str, int],
        what: str,
        role: str,
        block: str | None = None,
    ) -> str:
        """Evaluate one template over `scope` into a node reading `x`."""
        attrs = concrete(template.attrs, scope, template.fields.get, what)
        return self.add(name, template.op, attrs, [x], template.loc, what, role, block)

    def layers(self, layers: list[Layer], names: list[str], x: str, where: Where, role: str) -> str:
        """Stem or head layers: concrete, named as written."""
        _refuse_add(layers, names, where)
        for template in templates(layers, names, self.channels(x), where):
            what = f"{template.name} ({template.op})"
            x = self.layer(template, template.name, x, self.plan.params, what, role)
        return x

    def build(self) -> Network:
        spec = self.plan.spec
        root = self.plan.where
        inp = spec.input
        self.nodes[INPUT] = Node(
            INPUT,
            "input",
            NoAttrs(),
            (),
            (),
            (inp.channels, inp.height, inp.width),
            root("input"),
            "input",
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
        x = self.layers(spec.stem, stem_names, INPUT, root.child("stem"), "stem")
        reduction = math.prod(getattr(self.nodes[n].attrs, "stride", 1) for n in stem_names)
        wanted = self.feature_stages(stage_names, where)
        blocks: dict[str, Block] = {}
        stages: list[Stage] = []
        features: list[Feature] = []
        for stage in self.plan.stages:
            if wanted is not None and not wanted:
                break  # a features head builds no stage after the last it returns
            check_attribute(stage.name, stage.where("name"))
            for plan in stage.blocks:
                x, blocks[plan.name] = self.block(plan, x, stage.name)
                # every stride on the block's main path: its stride_on layer's, and any layer's own
                main = (
                    n for n in blocks[plan.name].nodes if self.nodes[n].role in ("branch", "post")
                )
                reduction *= math.prod(getattr(self.nodes[n].attrs, "stride", 1) for n in main)
            stages.append(
                Stage(stage.name, tuple(b.name for b in stage.blocks), stage.where("name"))
            )
            if wanted is not None and stage.name in wanted:
                wanted.remove(stage.name)
                features.append(Feature(stage.name, x, self.channels(x), reduction))
        if wanted is not None:
            output, head_layers = x, []  # a backbone: no head layers, pool or classifier
        else:
            x = self.layers(spec.head.layers, head_layers, x, where.child("layers"), "head")
            output = self.head(x, where)
        return Network(
            name=spec.name,
            description=spec.description,
            nodes=self.nodes,
            stem=tuple(stem_names),
            stages=tuple(stages),
            blocks=blocks,
            head_layers=tuple(head_layers),
            head_kind=spec.head.kind,
            output=output,
            classes=self.plan.classes,
            zero_init_residual=spec.init.zero_init_residual,
            features=tuple(features),
            drop_path_rate=spec.drop_path_rate or 0.0,
            drop_path_blocks=sum(len(stage.blocks) for stage in self.plan.stages),
        )

    def feature_stages(self, stage_names: list[str], where: Where) -> list[str] | None:
        """The stages a features head returns (all by default), checked; None for a classifier."""
        head = self.plan.spec.head
        if head.kind != "features":
            return None
        if head.stages is None:
            return list(stage_names)
        if not head.stages:
            raise SpecError("head.stages: name at least one stage", where("stages"))
        for i, name in enumerate(head.stages):
            if name not in stage_names:
                close = difflib.get_close_matches(name, stage_names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(
                    f"head.stages: no stage is named {name!r}{hint}; stages: "
                    + ", ".join(stage_names),
                    where("stages", i),
                )
        positions = [stage_names.index(name) for name in head.stages]
        if positions != sorted(set(positions)):
            raise SpecError("head.stages: name each stage once, in network order", where("stages"))
        return list(head.stages)

    def head(self, x: str, where: Where) -> str:
        """Pool and classify: globally (fc), or fully convolutionally (fcn) for any input size."""
        head = self.plan.spec.head
        classes = self.plan.classes
        check_attribute(head.name, where("name"))
        if head.kind == "fc":
            x = self.add(
                "avgpool", "global_avgpool", NoAttrs(), [x], where("pool"), "head avgpool", "head"
            )
            x = self.add("flatten", "flatten", NoAttrs(), [x], where(), "head flatten", "head")
            classifier = LinearAttrs(out=classes, bias=True)
            return self.add(
                head.name, "linear", classifier, [x], where("classes"), f"head {head.name}", "head"
            )
        _, h, w = self.nodes[x].shape
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
        pool = PoolAttrs(kernel=window, stride=1, padding=0)
        x = self.add("avgpool", "avgpool", pool, [x], where("window"), "head avgpool", "head")
        conv = ConvAttrs(out=classes, kernel=1, stride=1, padding=0, groups=1, bias=True)
        return self.add(head.name, "conv", conv, [x], where("classes"), f"head {head.name}", "head")

    def block(self, plan: BlockPlan, x: str, stage: str) -> tuple[str, Block]:
        try:
            return self._block(plan, x, stage)
        except SpecError as exc:
            if exc.location is None or exc.location.file != LIBRARY_FILE:
                raise
            # The user's file is where the fix goes: point at the stage, not into the library.
            raise SpecError(
                f"{exc.message} (in the built-in block type {plan.source.name!r})", plan.where()
            ) from None

    def template(self, plan: BlockPlan) -> BlockTemplate:
        """The block type resolved with its stride placed; one per (type, stride_on)."""
        key = (id(plan.source), plan.stride_on)
        if key in self.block_templates:
            return self.block_templates[key]
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
        if block_type.projection_from and block_type.projection_from not in names[:split]:
            raise SpecError(
                f"{label}: projection_from names {block_type.projection_from!r}, which is not a "
                "layer of the residual branch",
                plan.source.where("projection_from"),
            )
        branch = templates(
            layers[:split], names[:split], "in_channels", where, plan.stride_on, 0, self.dilations
        )
        last = branch[-1] if branch else None
        channels = OPS[last.op].out_channels(last.attrs, last.channels) if last else "in_channels"
        later = self.dilations[1]
        post = templates(
            layers[split + 1 :],
            names[split + 1 :],
            channels,
            where,
            None,
            split + 1,
            (later, later),
        )
        template = BlockTemplate(
            type_name=plan.source.name,
            description=block_type.description,
            params=block_type.params,
            let=block_type.let,
            stride_on=plan.stride_on,
            declared_stride_on=block_type.stride_on,
            projection_from=block_type.projection_from,
            branch=branch,
            add=names[split] if adds else None,
            post=post,
            loc=plan.source.where(),
            drop_path=self.drop_path,
        )
        self.block_templates[key] = template
        return template

    def _block(self, plan: BlockPlan, x: str, stage: str) -> tuple[str, Block]:
        block_type = plan.source.block_type
        label = f"{plan.name} ({plan.source.name})"
        template = self.template(plan)
        if plan.stride > 1 or plan.stride_on is not None:
            self._check_stride_on(plan, template)
        residual = template.add is not None and plan.shortcut.option != "none"
        in_channels = self.channels(x)
        scope = {
            "in_channels": in_channels,
            "width": plan.width,
            DILATION: plan.dilation,
            FIRST_DILATION: plan.first_dilation,
            **plan.params,
        }
        for name, value in block_type.let.items():
            scope[name] = evaluate(value, scope, plan.source.where("let", name), f"{label}: {name}")
        prefix = f"{plan.name}."
        first = len(self.order)
        y = x
        source: str | None = None
        source_node = x
        strides: list[int] = []
        residual_bn: str | None = None
        for layer in template.branch:
            scaled = layer.name == plan.stride_on
            here = scope | {SCALED_BY_BLOCK: plan.stride} if scaled else scope
            y = self.layer(
                layer, prefix + layer.name, y, here, f"{label}: {layer.name}", "branch", plan.name
            )
            strides.append(getattr(self.nodes[y].attrs, "stride", 1))
            if layer.name == template.projection_from:
                source, source_node, strides = (
                    layer.name,
                    y,
                    [],
                )  # a projection repeats later strides
            if layer.op == "bn":
                residual_bn = y
        shortcut = Shortcut("none")
        if residual:
            sc, shortcut = self.shortcut(plan, x, source, source_node, y, math.prod(strides), label)
            assert template.add is not None
            if template.drop_path:
                y = self.add(
                    f"{prefix}{DROP_PATH}",
                    "drop_path",
                    DropPathAttrs(plan.drop_path),
                    [y],
                    self.plan.where("drop_path_rate"),
                    f"{label}: drop path",
                    "branch",
                    plan.name,
                )
            add_loc = plan.source.where("layers", len(template.branch))
            what = f"{label}: add"
            y = self.add(
                prefix + template.add, "add", NoAttrs(), [y, sc], add_loc, what, "add", plan.name
            )
        else:
            residual_bn = None
        for layer in template.post:
            y = self.layer(
                layer, prefix + layer.name, y, scope, f"{label}: {layer.name}", "post", plan.name
            )
        block = Block(
            name=plan.name,
            stage=stage,
            template=template,
            in_channels=in_channels,
            out_channels=self.channels(y),
            width=plan.width,
            stride=plan.stride,
            dilation=plan.dilation,
            first_dilation=plan.first_dilation,
            drop_path=plan.drop_path if residual and template.drop_path else 0.0,
            params=plan.params,
            shortcut=shortcut,
            residual_bn=residual_bn,
            nodes=tuple(self.order[first:]),
            loc=plan.where(),
        )
        return y, block

    def _check_stride_on(self, plan: BlockPlan, template: BlockTemplate) -> None:
        label = f"{plan.name} ({plan.source.name})"
        if plan.stride_on is None:
            raise SpecError(
                f"{label}: stride {plan.stride}, but block type {plan.source.name!r} "
                "has no stride_on layer to carry it; set stride_on",
                plan.where("stride"),
            )
        for layer in template.branch:
            if layer.name == plan.stride_on:
                if hasattr(layer.attrs, "stride"):
                    return
                raise SpecError(
                    f"{label}: stride_on names {plan.stride_on!r}, a {layer.op} "
                    "layer, which has no stride",
                    plan.stride_on_where or layer.loc,
                )
        names = ", ".join(layer.name for layer in template.branch)
        raise SpecError(
            f"{label}: stride_on names {plan.stride_on!r}, which is not a layer of the "
            f"residual branch (layers: {names})",
            plan.stride_on_where or plan.where("stride"),
        )

    def shortcut(
        self,
        plan: BlockPlan,
        x: str,
        source: str | None,
        source_node: str,
        y: str,
        stride: int,
        label: str,
    ) -> tuple[str, Shortcut]:
        """The shortcut joining block input `x` to branch output `y`.

        Identity reads `x`; a downsample module (zero padding or projection) reads
        `source_node`: the block input, or its `projection_from` layer's output.
        """
        in_shape, out_shape = self.nodes[x].shape, self.nodes[y].shape
        option = plan.shortcut.option
        where = plan.shortcut_where
        reads = self.channels(source_node)
        if option == "A" and in_shape != out_shape:
            extra = out_shape[0] - reads
            if extra < 0:
                raise SpecError(
                    f"{label}: option A pads channels with zeros, so it cannot take {reads} "
                    f"channels down to {out_shape[0]}; use shortcut B or C",
                    where("option"),
                )
            before = extra // 2 if plan.shortcut.zero_pad == "split" else 0
            attrs = ZeroPadAttrs(stride, before, extra - before)
            node = self.add(
                f"{plan.name}.downsample",
                "zero_pad",
                attrs,
                [source_node],
                where("option"),
                f"{label}: shortcut (option A)",
                "shortcut",
                plan.name,
            )
            return node, Shortcut(
                "zero_pad", source, reads, out_shape[0], stride, before, extra - before
            )
        if in_shape == out_shape and option != "C":
            return x, Shortcut("identity")
        projection = self.projection(plan.shortcut, where, f"{plan.name}.downsample.")
        scope = {"in_channels": reads, "out_channels": out_shape[0], "stride": stride}
        node = source_node
        for layer in projection.layers:
            name = f"{plan.name}.downsample.{layer.name}"
            node = self.layer(
                layer, name, node, scope, f"{name} ({layer.op})", "shortcut", plan.name
            )
        if self.channels(node) != out_shape[0]:
            raise SpecError(
                f"{label}: the projection shortcut gives {self.channels(node)} channels but the "
                f"residual branch gives {out_shape[0]}; end the projection with a layer "
                "of out: out_channels",
                where("projection"),
            )
        return node, Shortcut(
            "projection", source, reads, out_shape[0], stride, projection=projection
        )

    def projection(self, policy: ShortcutPolicy, where: Where, prefix: str) -> ProjectionTemplate:
        """A projection's layers resolved once per shortcut policy; `prefix` names its nodes."""
        if id(policy) not in self.projections:
            layers = policy.projection
            names = [str(i) for i in range(len(layers))]
            _refuse_add(layers, [prefix + name for name in names], where.child("projection"))
            self.projections[id(policy)] = ProjectionTemplate(
                templates(layers, names, "in_channels", where.child("projection"))
            )
        return self.projections[id(policy)]


def build_network(plan: Plan) -> Network:
    """The IR of a plan: every node with its op, typed attributes, inputs, shape and location."""
    return _Builder(plan).build()


def to_networkx(network: Network) -> nx.DiGraph:
    """The IR as a networkx graph, for graph algorithms, drawing and reports."""
    graph = nx.DiGraph(name=network.name)
    for node in network.nodes.values():
        graph.add_node(
            node.name,
            node=node,
            op=node.op,
            attrs=vars(node.attrs),  # a frozen record's fields, for reports; read-only
            inputs=list(node.inputs),
            in_shapes=list(node.in_shapes),
            shape=node.shape,
            loc=node.loc,
            role=node.role,
            params=node.params,
            macs=node.macs,
            **({"block": node.block} if node.block else {}),
        )
        for source in node.inputs:
            graph.add_edge(source, node.name, shape=network.nodes[source].shape)
    graph.graph.update(
        network=network,
        name=network.name,
        params=network.params,
        macs=network.macs,
        output=network.output,
        blocks=network.blocks,
        stages=[(stage.name, list(stage.blocks)) for stage in network.stages],
        stem=list(network.stem),
        head=list(network.head_layers),
    )
    return graph
