"""Expansion: resolve parameters, the block library and shortcut policies into a plan.

The plan fixes every number that does not depend on a tensor's shape. Values that do
(a block layer's `in_channels`) are evaluated by `resgraph.graph` as it builds the graph.
The node limit is enforced here, before anything large is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass
from importlib import resources

from pydantic import TypeAdapter

from resgraph import expr
from resgraph.errors import Location, SpecError
from resgraph.load import Document, KeyPath, parse_yaml
from resgraph.ops import OPS
from resgraph.ops.base import evaluate
from resgraph.spec import MAX_BLOCKS, BlockType, Layer, Shortcut, Spec

DEFAULT_MAX_NODES = 250_000
LIBRARY_FILE = "resgraph/blocks/library.yaml"


@dataclass(frozen=True)
class Where:
    """A path into a located document, to point errors at the right line."""

    doc: Document
    path: KeyPath

    def __call__(self, *more: str | int) -> Location | None:
        return self.doc.locate((*self.path, *more))

    def key(self, *more: str | int) -> Location | None:
        return self.doc.locate_key((*self.path, *more))

    def child(self, *more: str | int) -> Where:
        return Where(self.doc, (*self.path, *more))


@dataclass(frozen=True)
class BlockSource:
    """A block type and where it was written (the library or the spec's block_types)."""

    name: str
    block_type: BlockType
    where: Where


@dataclass(frozen=True)
class BlockPlan:
    """One block of a stage, with everything but its input shape decided."""

    name: str
    source: BlockSource
    width: int
    stride: int
    params: dict[str, int]
    stride_on: str | None
    shortcut: Shortcut
    shortcut_where: Where
    where: Where
    stride_on_where: Location | None = None
    dilation: int = 1  # the block's dilation (atrous rate), `dilation` in its layers
    first_dilation: int = 1  # its first dilated conv's: the previous stage's in a first block
    drop_path: float = 0.0  # its residual branch's drop probability (stochastic depth)


@dataclass(frozen=True)
class StagePlan:
    name: str
    blocks: list[BlockPlan]
    where: Where


@dataclass(frozen=True)
class Plan:
    """The expanded spec: concrete stages and blocks, ready to become a graph."""

    spec: Spec
    params: dict[str, int]
    stages: list[StagePlan]
    classes: int
    where: Where


@functools.cache
def library() -> dict[str, BlockSource]:
    """The built-in block types shipped as data in resgraph/blocks/library.yaml."""
    path = resources.files("resgraph.blocks").joinpath("library.yaml")
    doc = parse_yaml(path.read_text(encoding="utf-8"), LIBRARY_FILE)
    types = TypeAdapter(dict[str, BlockType]).validate_python(doc.data)
    return {name: BlockSource(name, bt, Where(doc, (name,))) for name, bt in types.items()}


def layer_names(
    layers: list[Layer], where: Where, scope_name: str, taken: frozenset[str] = frozenset()
) -> list[str]:
    """Names for a list of layers: explicit ones, else the op (conv, relu2...), all unique."""
    explicit: dict[str, int] = {}
    for i, layer in enumerate(layers):
        name = layer.args.name
        if name is None:
            continue
        if name in explicit or name in taken:
            raise SpecError(
                f"{scope_name}: the name {name!r} is used twice", where(i, layer.op, "name")
            )
        explicit[name] = i
    counts: dict[str, int] = {}
    for layer in layers:
        if layer.args.name is None:
            counts[layer.op] = counts.get(layer.op, 0) + 1
    used = set(explicit) | set(taken)
    seen: dict[str, int] = {}
    names: list[str] = []
    for layer in layers:
        if layer.args.name is not None:
            names.append(layer.args.name)
            continue
        op = layer.op
        if counts[op] == 1 and op not in used:
            name = op
        else:
            seen[op] = seen.get(op, 0) + 1
            name = f"{op}{seen[op]}"
            while name in used:
                seen[op] += 1
                name = f"{op}{seen[op]}"
        used.add(name)
        names.append(name)
    return names


def expand(spec: Spec, doc: Document, max_nodes: int = DEFAULT_MAX_NODES) -> Plan:
    """Resolve a validated spec into a plan, refusing one over `max_nodes` graph nodes."""
    root = Where(doc, ())
    params = _resolve_params(spec.params, root.child("params"), "params")
    block_types = dict(library())
    for name, block_type in spec.block_types.items():
        block_types[name] = BlockSource(name, block_type, root.child("block_types", name))

    stages: list[StagePlan] = []
    node_estimate = len(spec.stem) + 4
    reached = _stem_stride(spec, params, root)  # input size over the map's, so far
    dilation = 1
    for i, stage in enumerate(spec.stages):
        here = root.child("stages", i)
        what = f"stages[{i}]"
        blocks = evaluate(
            stage.blocks, params, here("blocks"), f"{what}.blocks", maximum=MAX_BLOCKS
        )
        width = evaluate(stage.width, params, here("width"), f"{what}.width")
        stride = evaluate(stage.stride, params, here("stride"), f"{what}.stride")
        previous = dilation
        if stage.dilation is not None:
            if spec.output_stride is not None:
                raise SpecError(
                    f"{what}: set either output_stride or the stages' dilation, not both",
                    here("dilation"),
                )
            dilation = evaluate(stage.dilation, params, here("dilation"), f"{what}.dilation")
        elif spec.output_stride is not None and reached * stride > spec.output_stride:
            dilation, stride = dilation * stride, 1  # torchvision's replace_stride_with_dilation
        reached *= stride
        use = stage.block or spec.block
        use_where = here.child("block") if stage.block else root.child("block")
        if use is None:
            raise SpecError(f"{what}: no block type; set `block:` here or at the top level", here())
        source = _block_source(block_types, use.type, use_where)
        block_params = _block_params(source, use.params, params, use_where)
        stride_on = use.stride_on or source.block_type.stride_on
        stride_on_where = use_where("stride_on") if use.stride_on else source.where("stride_on")
        shortcut = stage.shortcut or spec.shortcut
        shortcut_where = here.child("shortcut") if stage.shortcut else root.child("shortcut")
        per_block = len(source.block_type.layers) + len(shortcut.projection) + 1
        node_estimate += blocks * per_block
        if node_estimate > max_nodes:
            raise SpecError(
                f"{what}: the network would have over {max_nodes:,} graph nodes "
                f"({blocks:,} blocks here); raise --max-nodes if you mean it",
                here("blocks"),
            )
        name = stage.name or f"layer{i + 1}"
        plans = [
            BlockPlan(
                f"{name}.{j}",
                source,
                width,
                stride if j == 0 else 1,
                block_params,
                stride_on,
                shortcut,
                shortcut_where,
                here,
                stride_on_where,
                dilation,
                previous if j == 0 else dilation,
            )
            for j in range(blocks)
        ]
        stages.append(StagePlan(name, plans, here))
    stages = _drop_paths(stages, spec.drop_path_rate or 0.0)
    if spec.output_stride is not None and reached != spec.output_stride:
        raise SpecError(
            f"output_stride {spec.output_stride}: the stem and stage strides reach {reached} "
            f"instead; choose an output stride the strides pass through",
            root("output_stride"),
        )
    classes = _classes(spec, params, root)
    return Plan(spec, params, stages, classes, root)


def _drop_paths(stages: list[StagePlan], rate: float) -> list[StagePlan]:
    """timm's linear rule: block i of N, counted over the network, gets rate * i / (N - 1)
    (to 6 decimal places)."""
    if not rate:
        return stages
    last = sum(len(stage.blocks) for stage in stages) - 1
    i = 0
    out = []
    for stage in stages:
        blocks = []
        for block in stage.blocks:
            p = round(rate * i / last, 6) if last else 0.0  # as the generated code computes it
            blocks.append(dataclasses.replace(block, drop_path=p))
            i += 1
        out.append(dataclasses.replace(stage, blocks=blocks))
    return out


def _classes(spec: Spec, params: dict[str, int], root: Where) -> int:
    """The classifier's outputs; a features head has no classifier (0)."""
    head = spec.head
    if head.kind == "features":
        return 0
    if head.classes is None:
        raise SpecError(f"head: a {head.kind} head needs `classes`", root("head"))
    return evaluate(head.classes, params, root("head", "classes"), "head.classes")


def _stem_stride(spec: Spec, params: dict[str, int], root: Where) -> int:
    """The product of the stem layers' strides: the stages' starting reduction."""
    stride = 1
    for i, layer in enumerate(spec.stem):
        attrs = OPS[layer.op].resolve(layer.args, 0)
        if hasattr(attrs, "stride"):
            where = root.child("stem", i, layer.op)
            stride *= evaluate(attrs.stride, params, where("stride"), f"stem[{i}].stride")
    return stride


def _resolve_params(
    raw: dict[str, int | str], where: Where, what: str, outer: dict[str, int] | None = None
) -> dict[str, int]:
    resolved: dict[str, int] = {}
    for name, value in raw.items():
        scope = {**(outer or {}), **resolved}
        resolved[name] = evaluate(
            value,
            scope,
            where(name),
            f"{what}.{name}",
            minimum=-expr.MAX_MAGNITUDE,
            maximum=expr.MAX_MAGNITUDE,
        )
    return resolved


def _block_source(block_types: dict[str, BlockSource], name: str, where: Where) -> BlockSource:
    if name in block_types:
        return block_types[name]
    close = difflib.get_close_matches(name, block_types, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(sorted(block_types))
    raise SpecError(f"unknown block type {name!r}{hint}; known: {known}", where())


def _block_params(
    source: BlockSource, given: dict[str, int | str], params: dict[str, int], where: Where
) -> dict[str, int]:
    declared = source.block_type.params
    for name in given:
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(declared) or "none"
            raise SpecError(
                f"block type {source.name!r} has no parameter {name!r}{hint}; "
                f"its parameters: {known}",
                where.key("params", name),
            )
    defaults = _resolve_params(declared, source.where.child("params"), f"{source.name}.params")
    chosen = _resolve_params(given, where.child("params"), "params", outer=params)
    return {**defaults, **chosen}
