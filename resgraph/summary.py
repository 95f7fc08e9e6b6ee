"""Per-layer tables of a compiled network: shapes, parameters, MACs, receptive fields and
memory; as text or JSON."""

from __future__ import annotations

from typing import Any

import networkx as nx

from resgraph.graph import INPUT
from resgraph.ops.base import fmt
from resgraph.passes.memory import Memory, memory
from resgraph.passes.receptive_field import receptive_fields


def layer_rows(graph: nx.DiGraph, batch: int = 1, dtype: str = "fp32") -> list[dict[str, Any]]:
    """One row per op in topological (definition) order, the input excluded; activation
    bytes at `batch` and `dtype`."""
    network = graph.graph["network"]
    fields = receptive_fields(network)
    activations = memory(network, batch, dtype).activations
    return [
        {
            "name": name,
            "op": data["op"],
            "output_shape": list(data["shape"]),
            "params": data["params"],
            "macs": data["macs"],
            "block": data.get("block"),
            "receptive_field": fields[name].size,
            "jump": fields[name].jump,
            "activation_bytes": activations[name],
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


def memory_dict(estimate: Memory) -> dict[str, Any]:
    """The memory estimate's totals, in bytes."""
    return {
        "batch": estimate.batch,
        "dtype": estimate.dtype,
        "activation_peak_bytes": estimate.peak,
        "saved_activation_bytes": estimate.saved,
        "weight_bytes": estimate.weights,
        "inference_bytes": estimate.inference,
        "training_bytes": estimate.training,
    }


def summary_dict(graph: nx.DiGraph, batch: int = 1, dtype: str = "fp32") -> dict[str, Any]:
    """The `summary --json` contract: name, params, macs, shapes, the layers and memory."""
    features = feature_rows(graph)
    return {
        "name": graph.graph["name"],
        "params": graph.graph["params"],
        "macs": graph.graph["macs"],
        "input_shape": list(graph.nodes[INPUT]["shape"]),
        "output_shape": list(graph.nodes[graph.graph["output"]]["shape"]),
        "nodes": graph.number_of_nodes(),
        "blocks": len(graph.graph["blocks"]),
        "layers": layer_rows(graph, batch, dtype),
        "memory": memory_dict(memory(graph.graph["network"], batch, dtype)),
        **({"features": features} if features else {}),
    }


def _size(n: int) -> str:
    """Bytes as people read them: 3.06 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def summary_text(graph: nx.DiGraph, batch: int = 1, dtype: str = "fp32") -> str:
    """An aligned table with totals, for people."""
    rows = [row_cells(r) for r in layer_rows(graph, batch, dtype)]
    header = COLUMNS
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        left = [str(c).ljust(w) for c, w in zip(row[:3], widths[:3], strict=True)]
        right = [str(c).rjust(w) for c, w in zip(row[3:], widths[3:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(header))
    out = [f"{graph.graph['name']}: input {fmt(graph.nodes[INPUT]['shape'])}", line(header), rule]
    out += [line(row) for row in rows]
    out.append(rule)
    for f in feature_rows(graph):
        shape = fmt(tuple(f["shape"]))
        out.append(f"feature {f['name']}: {shape} from {f['node']}, reduction {f['reduction']}")
    out += totals_lines(graph, batch, dtype)
    return "\n".join(out)


COLUMNS = ("name", "op", "output", "params", "MACs", "RF", "jump", "activation")


def row_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """A layer row's cells (COLUMNS) as the table prints them; the HTML page shows the same."""
    return (
        row["name"],
        row["op"],
        fmt(tuple(row["output_shape"])),
        f"{row['params']:,}",
        f"{row['macs']:,}",
        str(row["receptive_field"]),
        str(row["jump"]),
        _size(row["activation_bytes"]),
    )


def totals_lines(graph: nx.DiGraph, batch: int = 1, dtype: str = "fp32") -> list[str]:
    """The table's closing lines: memory for inference and training, then the totals."""
    total = (
        f"{graph.graph['params']:,} params, {graph.graph['macs']:,} MACs "
        f"({graph.graph['macs'] / 1e9:.2f} GMACs)"
    )
    est = memory(graph.graph["network"], batch, dtype)
    at = f"batch {batch}, {dtype} activations"
    layers = graph.number_of_nodes() - 1  # every op but the input, as the table lists them
    return [
        f"inference ({at}): {_size(est.inference)} = weights {_size(est.weights)} + peak "
        f"activations {_size(est.peak)}",
        f"training ({at}, SGD): {_size(est.training)} = saved activations {_size(est.saved)} "
        f"+ weights, gradients and momentum {_size(est.weights + 2 * est.params)}",
        f"total: {total}, {len(graph.graph['blocks'])} blocks, {layers} layers",
    ]
