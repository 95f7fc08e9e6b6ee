"""Design tools over compiled graphs: compare two architectures, sweep one over a grid.

Both read only what the passes wrote on the graph (shapes, params, MACs, block instances),
so what they report is exactly what `summary` and the backends see.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from resgraph.errors import Location, SpecError
from resgraph.expand import DEFAULT_MAX_NODES
from resgraph.graph import INPUT
from resgraph.load import load_spec
from resgraph.ops import OPS
from resgraph.ops.base import fmt
from resgraph.pipeline import compile_spec
from resgraph.registry import resolve_spec

MAX_POINTS = 1024  # a sweep compiles every point; beyond this it is a typo, not a design study

# ---------------------------------------------------------------- describing a network


@dataclass(frozen=True)
class Part:
    """One stage of a network, or its stem or head: what it is and what it costs."""

    name: str
    fields: dict[str, Any]
    params: int
    macs: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.fields, "params": self.params, "macs": self.macs}


def _layer_text(op: str, attrs: Any) -> str:
    """A layer as people sketch it: conv 7x7/2 64, maxpool 3x3/2, bn."""
    return OPS[op].text(attrs)


def _shortcut_text(graph: nx.DiGraph, nodes: list[str], kind: str) -> str:
    """A block's shortcut, naming a projection's layers (ResNet-D pools before its conv)."""
    if kind != "projection":
        return kind
    ops = [graph.nodes[n]["op"] for n in nodes if graph.nodes[n]["role"] == "shortcut"]
    return f"projection({'+'.join(ops)})"


def node_cost(graph: nx.DiGraph, nodes: list[str]) -> tuple[int, int]:
    """The parameters and MACs of `nodes` together (a stage, a block)."""
    return (
        sum(graph.nodes[n]["params"] for n in nodes),
        sum(graph.nodes[n]["macs"] for n in nodes),
    )


def _block_outputs(graph: nx.DiGraph) -> dict[str, str]:
    """Each block's output node: the last node built for it (its add, or a layer after)."""
    return {data["block"]: name for name, data in graph.nodes(data=True) if "block" in data}


def parts(graph: nx.DiGraph) -> list[Part]:
    """The stem, each stage and the head of a compiled graph, in order."""
    by_block: dict[str, list[str]] = {}
    by_role: dict[str, list[str]] = {}
    for name, data in graph.nodes(data=True):
        if "block" in data:
            by_block.setdefault(data["block"], []).append(name)
        by_role.setdefault(data.get("role", ""), []).append(name)

    stem = by_role.get("stem", [])
    stem_out = stem[-1] if stem else INPUT
    result = [
        Part(
            "stem",
            {
                "input": fmt(graph.nodes[INPUT]["shape"]),
                "layers": ", ".join(
                    _layer_text(graph.nodes[n]["op"], graph.nodes[n]["node"].attrs) for n in stem
                )
                or "none",
                "output": fmt(graph.nodes[stem_out]["shape"]),
            },
            *node_cost(graph, stem),
        )
    ]
    blocks = graph.graph["blocks"]
    outputs = _block_outputs(graph)
    for stage, names in graph.graph["stages"]:
        first, last = blocks[names[0]], blocks[names[-1]]
        nodes = [n for b in names for n in by_block[b]]
        shortcuts = dict.fromkeys(
            _shortcut_text(graph, by_block[b], blocks[b].shortcut.kind) for b in names
        )
        fields = {
            "blocks": len(names),
            "block": first.template.type_name,
            **{f"block.{k}": v for k, v in first.params.items()},
            "stride_on": first.template.stride_on or "none",
            "width": first.width,
            "out_channels": last.out_channels,
            "stride": first.stride,
            "shortcut": ", ".join(shortcuts),
            "output": fmt(graph.nodes[outputs[last.name]]["shape"]),
        }
        result.append(Part(stage, fields, *node_cost(graph, nodes)))
    head = by_role.get("head", [])
    layers = ", ".join(
        _layer_text(graph.nodes[n]["op"], graph.nodes[n]["node"].attrs) for n in head
    )
    fields = {"layers": layers or "none", "classes": graph.graph["network"].classes}
    result.append(Part("head", fields, *node_cost(graph, head)))
    return result


# ---------------------------------------------------------------- diff


@dataclass(frozen=True)
class PartDiff:
    """A part of A matched with the same-position part of B; either may be missing."""

    name: str
    a: Part | None
    b: Part | None

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        """Fields both sides have that differ, as (A's value, B's value).

        Block parameters of different block types are not compared: the `block` change
        says it all. A part only one side has has no changes; it was added or removed.
        """
        if self.a is None or self.b is None:
            return {}
        a, b = self.a.fields, self.b.fields
        return {k: (a[k], b[k]) for k in a if k in b and a[k] != b[k]}

    def cost(self, side: str, what: str) -> int | None:
        """`params` or `macs` of side `a` or `b`; None for a stage that side lacks."""
        part = self.a if side == "a" else self.b
        return getattr(part, what) if part else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "a": self.a.as_dict() if self.a else None,
            "b": self.b.as_dict() if self.b else None,
            "changes": {k: list(v) for k, v in self.changes.items()},
            "params_change": (self.cost("b", "params") or 0) - (self.cost("a", "params") or 0),
            "macs_change": (self.cost("b", "macs") or 0) - (self.cost("a", "macs") or 0),
        }


def diff(a: nx.DiGraph, b: nx.DiGraph) -> list[PartDiff]:
    """Stem, stages by position, and head of A next to B's."""
    pa, pb = parts(a), parts(b)
    stages_a, stages_b = pa[1:-1], pb[1:-1]
    paired = [
        PartDiff("/".join(dict.fromkeys(s.name for s in (sa, sb) if s)), sa, sb)
        for sa, sb in itertools.zip_longest(stages_a, stages_b)
    ]
    return [PartDiff("stem", pa[0], pb[0]), *paired, PartDiff("head", pa[-1], pb[-1])]


def diff_dict(a: nx.DiGraph, b: nx.DiGraph) -> dict[str, Any]:
    """The `diff --json` contract: both networks' totals, the changes, and each part."""
    return {
        "a": _totals(a),
        "b": _totals(b),
        "params_change": b.graph["params"] - a.graph["params"],
        "macs_change": b.graph["macs"] - a.graph["macs"],
        "parts": [d.as_dict() for d in diff(a, b)],
    }


def _totals(graph: nx.DiGraph) -> dict[str, Any]:
    return {
        "name": graph.graph["name"],
        "params": graph.graph["params"],
        "macs": graph.graph["macs"],
    }


def _cells(old: int | None, new: int | None) -> tuple[str, str, str]:
    """Two costs and the change, with a percentage; `-` for a side without the part."""
    delta = (new or 0) - (old or 0)
    percent = f" ({delta / old:+.1%})" if old and delta else ""
    return (
        "-" if old is None else f"{old:,}",
        "-" if new is None else f"{new:,}",
        f"{delta:+,}{percent}",
    )


def brief(part: Part) -> str:
    """A stage in a few words: 3 x bottleneck, width 64, output 256x56x56."""
    f = part.fields
    return f"{f['blocks']} x {f['block']}, width {f['width']}, output {f['output']}"


def note(d: PartDiff) -> str:
    """One line on how a part changed; empty if it did not (the diff's text and HTML page)."""
    if d.a is None and d.b is not None:
        return f"added ({brief(d.b)})"
    if d.b is None and d.a is not None:
        return f"removed ({brief(d.a)})"
    return "; ".join(f"{k} {old} -> {new}" for k, (old, new) in d.changes.items())


def diff_text(a: nx.DiGraph, b: nx.DiGraph) -> str:
    """What changed, part by part, then a cost table with per-part and total changes."""
    diffs = diff(a, b)
    out = [f"{a.graph['name']} -> {b.graph['name']}", ""]
    notes = [(d.name, note(d)) for d in diffs]
    out += [f"  {name}: {text}" for name, text in notes if text]
    if not any(text for _, text in notes):
        out.append("  same structure")
    out.append("")

    rows = [
        (
            d.name,
            *_cells(d.cost("a", "params"), d.cost("b", "params")),
            *_cells(d.cost("a", "macs"), d.cost("b", "macs")),
        )
        for d in diffs
    ]
    total = (
        "total",
        *_cells(a.graph["params"], b.graph["params"]),
        *_cells(a.graph["macs"], b.graph["macs"]),
    )
    header = ("part", "params A", "params B", "change", "MACs A", "MACs B", "change")
    out += _table(header, [*rows, total], left=1)
    return "\n".join(out)


# ---------------------------------------------------------------- sweep


@dataclass(frozen=True)
class Measured:
    """What a valid grid point compiles to."""

    params: int
    macs: int
    output_shape: tuple[int, ...]
    stage_shapes: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Point:
    """One grid point: its --set values and either its measurements or its error."""

    values: dict[str, str]
    measured: Measured | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        m = self.measured
        return {
            "set": self.values,
            "params": m.params if m else None,
            "macs": m.macs if m else None,
            "output_shape": list(m.output_shape) if m else None,
            "stage_shapes": {k: list(v) for k, v in m.stage_shapes.items()} if m else None,
            "error": self.error,
        }


def split_values(text: str) -> list[str]:
    """Split `3,5,7` on the commas outside brackets and quotes, so `{option: A, ...}` is one."""
    values: list[str] = []
    depth, quote, start = 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(settings: Sequence[str]) -> dict[str, list[str]]:
    """`["n=3,5", "width=16,32"]` as {name: values}; a name given twice is an error."""
    grid: dict[str, list[str]] = {}
    for text in settings:
        where = Location(f"--set {text}")
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SpecError("expected NAME=V1,V2,..., e.g. --set n=3,5,7,9", where)
        if name in grid:
            raise SpecError(f"{name!r} is set twice; give all its values in one --set", where)
        values = split_values(raw)
        if "" in values:
            raise SpecError(f"an empty value in {raw!r}", where)
        grid[name] = values
    points = math.prod(len(values) for values in grid.values())
    if points > MAX_POINTS:
        raise SpecError(
            f"the grid has {points:,} points; a sweep is limited to {MAX_POINTS:,}",
            Location("--set"),
        )
    return grid


def sweep(
    path: Path, grid: dict[str, list[str]], max_nodes: int = DEFAULT_MAX_NODES
) -> list[Point]:
    """Compile every point of the grid's cartesian product; a failing point keeps its error.

    A spec that does not load at all (missing file, bad YAML) fails the sweep instead of
    giving the same error at every point.
    """
    load_spec(resolve_spec(path))
    points: list[Point] = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination, strict=True))
        overrides = [f"{k}={v}" for k, v in values.items()]
        try:
            graph = compile_spec(path, overrides, max_nodes).graph
        except SpecError as exc:
            points.append(Point(values, error=str(exc)))
            continue
        outputs = _block_outputs(graph)
        measured = Measured(
            graph.graph["params"],
            graph.graph["macs"],
            graph.nodes[graph.graph["output"]]["shape"],
            {
                stage: graph.nodes[outputs[names[-1]]]["shape"]
                for stage, names in graph.graph["stages"]
            },
        )
        points.append(Point(values, measured))
    return points


def _stage_text(measured: Measured) -> str:
    return " ".join(fmt(s) for s in measured.stage_shapes.values())


def sweep_text(points: list[Point], grid: dict[str, list[str]]) -> str:
    """An aligned table; an invalid point shows its one-line error in place of its numbers."""
    header = (*grid, "params", "MACs", "GMACs", "output", "stage outputs")
    rows: list[tuple[str, ...]] = []
    for point in points:
        values = tuple(point.values[k] for k in grid)
        m = point.measured
        if m is None:
            rows.append((*values, f"error: {point.error}"))
            continue
        rows.append(
            (
                *values,
                f"{m.params:,}",
                f"{m.macs:,}",
                f"{m.macs / 1e9:.2f}",
                fmt(m.output_shape),
                _stage_text(m),
            )
        )
    return "\n".join(_table(header, rows, left=len(grid), right=3))


def sweep_csv(points: list[Point], grid: dict[str, list[str]]) -> str:
    """One row per point: the grid values, params, macs, shapes (CxHxW), error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*grid, "params", "macs", "output_shape", "stage_shapes", "error"])
    for point in points:
        values = [point.values[k] for k in grid]
        m = point.measured
        if m is None:
            writer.writerow([*values, "", "", "", "", point.error])
        else:
            writer.writerow([*values, m.params, m.macs, fmt(m.output_shape), _stage_text(m), ""])
    return buffer.getvalue()


def sweep_dict(path: Path, points: list[Point], grid: dict[str, list[str]]) -> dict[str, Any]:
    """The `sweep --format json` contract: the spec, the grid and one object per point."""
    return {"spec": str(path), "grid": grid, "points": [p.as_dict() for p in points]}


# ---------------------------------------------------------------- layout


def _table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], left: int, right: int | None = None
) -> list[str]:
    """Aligned lines: the first `left` columns flush left, the next `right` (default: all)
    flush right, any after that flush left again. A row shorter than the header ends in
    free text (an error) that takes the place of its remaining cells."""
    n = len(header)
    right_end = n if right is None else left + right

    def aligned(row: tuple[str, ...]) -> tuple[str, ...]:
        return row if len(row) == n else row[:-1]

    widths = [max(len(r[i]) for r in (header, *map(aligned, rows)) if i < len(r)) for i in range(n)]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(w) if left <= i < right_end else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(aligned(row), widths, strict=False))
        ]
        if len(row) < n:
            cells.append(row[-1])
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]
