"""Per-layer tables of a compiled network: shapes, parameters, MACs; as text or JSON."""

from __future__ import annotations

from typing import Any

import networkx as nx

from resgraph.graph import INPUT
from resgraph.ops.base import fmt


def layer_rows(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """One row per op in topological (definition) order, the input excluded."""
    return [
        {
            "name": name,
            "op": data["op"],
            "output_shape": list(data["shape"]),
            "params": data["params"],
            "macs": data["macs"],
            "block": data.get("block"),
        }
        for name, data in graph.nodes(data=True)
        if name != INPUT
    ]


def feature_rows(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """A features head's outputs: name, node, channels, reduction and shape (timm's
    feature_info); empty for a classifier."""
    return [
        {
            "name": f.name,
            "node": f.node,
            "channels": f.channels,
            "reduction": f.reduction,
            "shape": list(graph.nodes[f.node]["shape"]),
        }
        for f in graph.graph["network"].features
    ]


def summary_dict(graph: nx.DiGraph) -> dict[str, Any]:
    """The `summary --json` contract: name, params, macs, shapes and the layers."""
    features = feature_rows(graph)
    return {
        "name": graph.graph["name"],
        "params": graph.graph["params"],
        "macs": graph.graph["macs"],
        "input_shape": list(graph.nodes[INPUT]["shape"]),
        "output_shape": list(graph.nodes[graph.graph["output"]]["shape"]),
        "nodes": graph.number_of_nodes(),
        "blocks": len(graph.graph["blocks"]),
        "layers": layer_rows(graph),
        **({"features": features} if features else {}),
    }


def summary_text(graph: nx.DiGraph) -> str:
    """An aligned table with totals, for people."""
    rows = [
        (r["name"], r["op"], fmt(tuple(r["output_shape"])), f"{r['params']:,}", f"{r['macs']:,}")
        for r in layer_rows(graph)
    ]
    header = ("name", "op", "output", "params", "MACs")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(5)]

    def line(row: tuple[str, ...]) -> str:
        left = [str(c).ljust(w) for c, w in zip(row[:3], widths[:3], strict=True)]
        right = [str(c).rjust(w) for c, w in zip(row[3:], widths[3:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(header))
    total = (
        f"{graph.graph['params']:,} params, {graph.graph['macs']:,} MACs "
        f"({graph.graph['macs'] / 1e9:.2f} GMACs)"
    )
    out = [f"{graph.graph['name']}: input {fmt(graph.nodes[INPUT]['shape'])}", line(header), rule]
    out += [line(row) for row in rows]
    out += [rule, f"total: {total}, {len(graph.graph['blocks'])} blocks, {len(rows)} layers"]
    for f in feature_rows(graph):
        shape = fmt(tuple(f["shape"]))
        out.append(f"feature {f['name']}: {shape} from {f['node']}, reduction {f['reduction']}")
    return "\n".join(out)
