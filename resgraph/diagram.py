"""The graph as Graphviz DOT or Mermaid text, one cluster per block."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import networkx as nx

from resgraph.ops.base import fmt


def _label(name: str, data: dict) -> str:
    return f"{name}\n{data['op']} {fmt(data['shape'])}"


def _by_block(graph: nx.DiGraph) -> dict[str | None, list[str]]:
    groups: dict[str | None, list[str]] = defaultdict(list)
    for name, data in graph.nodes(data=True):
        groups[data.get("block")].append(name)
    return groups


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT source; `dot -Tsvg` renders it."""
    q = json.dumps  # a JSON string is a valid DOT quoted id
    lines = [
        f"digraph {q(graph.graph['name'])} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
    ]
    for block, members in _by_block(graph).items():
        indent = "  "
        if block is not None:
            lines.append(f"  subgraph {q('cluster_' + block)} {{")
            lines.append(f"    label={q(block)};")
            indent = "    "
        for name in members:
            lines.append(f"{indent}{q(name)} [label={q(_label(name, graph.nodes[name]))}];")
        if block is not None:
            lines.append("  }")
    lines += [f"  {q(a)} -> {q(b)};" for a, b in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_id(name: str) -> str:
    return "n_" + re.sub(r"\W", "_", name)


def to_mermaid(graph: nx.DiGraph) -> str:
    """A Mermaid flowchart, which GitHub renders inside ```mermaid blocks."""
    lines = ["flowchart TD"]
    for block, members in _by_block(graph).items():
        indent = "  "
        if block is not None:
            lines.append(f'  subgraph {_mermaid_id(block)} ["{block}"]')
            indent = "    "
        for name in members:
            label = _label(name, graph.nodes[name]).replace("\n", "<br/>")
            lines.append(f'{indent}{_mermaid_id(name)}["{label}"]')
        if block is not None:
            lines.append("  end")
    lines += [f"  {_mermaid_id(a)} --> {_mermaid_id(b)}" for a, b in graph.edges]
    return "\n".join(lines) + "\n"
