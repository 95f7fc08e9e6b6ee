"""What the page shows, decided here so the templates only lay it out.

Every figure is one another command prints: a node's cells are `summary`'s (`row_cells`),
a stage's facts and cost are `diff`'s (`design.parts`), the totals are `summary`'s closing
lines. Nothing is recomputed from the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from resgraph.design import Part, brief, node_cost, parts
from resgraph.html_view.compare import UNCHANGED, Changed
from resgraph.ir import Block, Network, Node
from resgraph.ops import OPS
from resgraph.ops.base import fmt
from resgraph.summary import COLUMNS, layer_rows, row_cells, totals_lines

if TYPE_CHECKING:
    from resgraph.pipeline import Compiled

# The details panel's rows, in order; a node shows those it has (the input has no cost).
FIELDS = (
    "op",
    "attributes",
    "inputs",
    "output",
    "params",
    "MACs",
    "receptive field",
    "jump",
    "activation",
    "role",
    "block",
    "spec",
)
# summary's columns the panel shows, under the panel's label: the same strings as the table
FROM_SUMMARY = {"output": "output", "params": "params", "MACs": "MACs", "RF": "receptive field"}
FROM_SUMMARY |= {"jump": "jump", "activation": "activation"}


@dataclass(frozen=True)
class Box:
    """One IR node as a box: its name, its op as people sketch it, its output shape."""

    name: str
    label: str
    shape: str
    role: str
    changed: bool = False


@dataclass(frozen=True)
class BlockBox:
    """One block: its layers in the branch column, the shortcut's in the lane beside it."""

    name: str
    title: str
    shortcut: str  # identity | zero_pad | projection | none: how the arc is drawn
    shortcut_text: str
    params: str
    macs: str
    branch: tuple[Box, ...]  # the residual branch and the add
    lane: tuple[Box, ...]  # a projection's layers
    post: tuple[Box, ...]  # layers on the sum, drawn below the add
    changed: bool = False


@dataclass(frozen=True)
class PartBox:
    """The stem, a stage or the head, folded into one box with its facts and cost."""

    name: str
    kind: str  # stem | stage | head
    facts: tuple[tuple[str, str], ...]
    brief: str  # a stage in a few words; empty for the stem and head
    params: str
    macs: str
    params_share: float  # percent of the network's
    macs_share: float
    params_bar: float  # percent of the widest part's bar
    macs_bar: float
    layers: tuple[Box, ...] = ()  # the stem's and the head's
    blocks: tuple[BlockBox, ...] = ()  # a stage's
    note: str = ""  # how `resgraph diff` says it changed; empty if it did not


@dataclass(frozen=True)
class NetworkView:
    """One network: its boxes, and each node's details-panel values (FIELDS, in order)."""

    key: str
    name: str
    description: str
    source: str
    totals: tuple[str, ...]
    input: Box
    parts: tuple[PartBox, ...]
    details: dict[str, list[str]] = field(repr=False)


def _shortcut_text(block: Block) -> str:
    """The arc's tooltip, in the paper's words."""
    sc = block.shortcut
    if sc.kind == "zero_pad":
        return (
            f"option A: identity, stride {sc.stride}, zero channels "
            f"{sc.in_channels} -> {sc.out_channels}"
        )
    if sc.kind == "projection":
        return f"projection {sc.in_channels} -> {sc.out_channels}, stride {sc.stride}"
    return "identity" if sc.kind == "identity" else "no shortcut"


def _details(network: Network, graph: nx.DiGraph) -> dict[str, list[str]]:
    """Each node's panel values, FIELDS in order ("" where a node has none)."""
    cells = {
        row["name"]: dict(zip(COLUMNS, row_cells(row), strict=True)) for row in layer_rows(graph)
    }
    details: dict[str, list[str]] = {}
    for name, node in network.nodes.items():
        row = cells.get(name, {})  # the input has no row
        shown = {label: row[column] for column, label in FROM_SUMMARY.items() if column in row}
        values = {
            "op": node.op,
            "attributes": ", ".join(f"{k}={v}" for k, v in vars(node.attrs).items()),
            "inputs": ", ".join(
                f"{i} ({fmt(s)})" for i, s in zip(node.inputs, node.in_shapes, strict=True)
            ),
            "output": fmt(node.shape),  # the input's; summary's cell for every other node
            "role": node.role,
            "block": node.block or "",
            "spec": str(node.loc) if node.loc else "",
            **shown,
        }
        details[name] = [values.get(f, "") for f in FIELDS]
    return details


def _box(node: Node, changed: Changed) -> Box:
    label = OPS[node.op].text(node.attrs)
    return Box(node.name, label, fmt(node.shape), node.role, node.name in changed.nodes)


def _block(network: Network, graph: nx.DiGraph, block: Block, changed: Changed) -> BlockBox:
    def boxes(*roles: str) -> tuple[Box, ...]:
        nodes = (network.nodes[n] for n in block.nodes)
        return tuple(_box(node, changed) for node in nodes if node.role in roles)

    params, macs = node_cost(graph, list(block.nodes))
    stride = f", stride {block.stride}" if block.stride != 1 else ""
    return BlockBox(
        block.name,
        f"{block.template.type_name} {block.in_channels} -> {block.out_channels}{stride}",
        block.shortcut.kind,
        _shortcut_text(block),
        f"{params:,}",
        f"{macs:,}",
        branch=boxes("branch", "add"),
        lane=boxes("shortcut"),
        post=boxes("post"),
        changed=block.name in changed.blocks,
    )


def _share(part: int, total: int) -> float:
    return 100 * part / total if total else 0.0


def _part(
    part: Part,
    kind: str,
    totals: tuple[int, int],
    widest: tuple[int, int],
    layers: tuple[Box, ...] = (),
    blocks: tuple[BlockBox, ...] = (),
    note: str = "",
) -> PartBox:
    return PartBox(
        part.name,
        kind,
        tuple((k, str(v)) for k, v in part.fields.items()),
        brief(part) if kind == "stage" else "",
        f"{part.params:,}",
        f"{part.macs:,}",
        _share(part.params, totals[0]),
        _share(part.macs, totals[1]),
        _share(part.params, widest[0]),
        _share(part.macs, widest[1]),
        layers,
        blocks,
        note,
    )


def network_view(
    compiled: Compiled,
    key: str = "net",
    changed: Changed = UNCHANGED,
    notes: Sequence[str] = (),
) -> NetworkView:
    """The page's records for one compiled network; `changed` and `notes` (one per part of
    the diff: stem, stages by position, head) mark one side of a diff."""
    graph, network = compiled.graph, compiled.network
    found = parts(graph)
    totals = (network.params, network.macs)
    widest = (max(p.params for p in found), max(p.macs for p in found))
    boxes = []
    for index, part in enumerate(found):
        kind = "stem" if index == 0 else "head" if index == len(found) - 1 else "stage"
        note = notes[-1 if kind == "head" else index] if notes else ""
        if kind == "stage":
            stage = network.stages[index - 1]
            blocks = tuple(_block(network, graph, network.blocks[b], changed) for b in stage.blocks)
            boxes.append(_part(part, kind, totals, widest, blocks=blocks, note=note))
        else:
            layers = tuple(_box(n, changed) for n in network.nodes.values() if n.role == kind)
            boxes.append(_part(part, kind, totals, widest, layers=layers, note=note))
    return NetworkView(
        key,
        network.name,
        network.description or "",
        str(compiled.path),
        tuple(totals_lines(graph)),
        _box(network.input, changed),
        tuple(boxes),
        _details(network, graph),
    )
