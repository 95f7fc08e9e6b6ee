"""The resolved IR: frozen records of what the front end decided, typed per op.

The front end (resgraph.graph) builds it once; passes (resgraph.passes) annotate it by
returning updated copies; backends only read it. Nothing here is re-derived from the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from resgraph.errors import Location
from resgraph.expr import Dim

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    """One op instance: resolved attributes (every size a number), inputs and shapes."""

    name: str
    op: str
    attrs: Any  # the op's attribute record (resgraph.ops), sizes as ints
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    shape: Shape
    loc: Location | None
    role: str  # input | stem | branch | add | post | shortcut | head
    block: str | None = None
    params: int = 0
    macs: int = 0

    @property
    def in_shape(self) -> Shape:
        """The (first) input's shape; the input node's own shape for the input."""
        return self.in_shapes[0] if self.in_shapes else self.shape


@dataclass(frozen=True)
class LayerTemplate:
    """A layer as a block type or projection writes it: sizes as expressions of its names."""

    name: str
    op: str
    attrs: Any  # the op's attribute record, sizes as `Dim`s
    channels: Dim  # its input channels, as an expression (`in_channels`, `mid`, ...)
    loc: Location | None
    fields: Mapping[str, Location | None] = field(default_factory=dict, compare=False)  # errors


@dataclass(frozen=True)
class BlockTemplate:
    """A block type with its stride placed: what one generated class is written from."""

    type_name: str
    description: str | None
    params: Mapping[str, int]  # declared parameters and their defaults
    let: Mapping[str, Any]  # derived values, as written (IntExpr)
    stride_on: str | None
    declared_stride_on: str | None  # the block type's own, before a stage's BlockUse moved it
    projection_from: str | None
    branch: tuple[LayerTemplate, ...]
    add: str | None  # the add's name; None for a block type without one
    post: tuple[LayerTemplate, ...]
    loc: Location | None
    drop_path: bool = False  # a drop path before the add (the spec sets drop_path_rate)


@dataclass(frozen=True)
class ProjectionTemplate:
    """A projection shortcut's layers, written over in_channels, out_channels and stride."""

    layers: tuple[LayerTemplate, ...]


@dataclass(frozen=True)
class Shortcut:
    """How one block's input reaches its add."""

    kind: str  # identity | zero_pad | projection | none
    source: str | None = None  # the branch layer a downsample reads (projection_from), else input
    in_channels: int = 0  # channels the downsample reads
    out_channels: int = 0
    stride: int = 1
    pad_before: int = 0
    pad_after: int = 0
    projection: ProjectionTemplate | None = None


@dataclass(frozen=True)
class Block:
    """One block instance: every per-instance fact a backend needs, decided once."""

    name: str
    stage: str
    template: BlockTemplate
    in_channels: int
    out_channels: int
    width: int
    stride: int
    dilation: int  # its dilation (atrous rate), `dilation` in its layers
    first_dilation: int  # its first dilated conv's: the previous stage's in a stage's first block
    drop_path: float  # its residual branch's drop probability; 0: no drop path module
    params: Mapping[str, int]
    shortcut: Shortcut
    residual_bn: str | None  # the branch's last BN (node name): zeroed by zero_init_residual
    nodes: tuple[str, ...]
    loc: Location | None

    @property
    def residual(self) -> bool:
        """Whether an add joins a shortcut (false for plain blocks and shortcut: none)."""
        return self.shortcut.kind != "none"


@dataclass(frozen=True)
class Stage:
    name: str
    blocks: tuple[str, ...]
    loc: Location | None


@dataclass(frozen=True)
class Feature:
    """One output of a features head: a stage's output map (timm's feature_info entry)."""

    name: str  # the stage, the key `forward` returns it under
    node: str  # the node whose output it is
    channels: int
    reduction: int  # input size over the map's: the product of the strides before it


@dataclass(frozen=True)
class Network:
    """The whole network: nodes in topological order, its blocks, stages and head."""

    name: str
    description: str | None
    nodes: Mapping[str, Node]
    stem: tuple[str, ...]
    stages: tuple[Stage, ...]
    blocks: Mapping[str, Block]
    head_layers: tuple[str, ...]
    head_kind: str  # fc | fcn | features
    output: str  # the classifier's node; a features head's last feature's
    classes: int  # 0 for a features head
    zero_init_residual: bool
    params: int = 0
    macs: int = 0
    folds: Mapping[str, str] = field(default_factory=dict)  # BN -> the conv it folds into
    features: tuple[Feature, ...] = ()  # a features head's outputs, in network order
    drop_path_rate: float = 0.0  # block i of the plan's N gets rate * i / (N - 1)
    drop_path_blocks: int = 0  # N: the plan's blocks (a features head may build fewer)

    @property
    def input(self) -> Node:
        return self.nodes[INPUT]


INPUT = "input"
