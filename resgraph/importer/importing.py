"""From a source graph to a checked spec (and weights): find, fit, write, compile, compare."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from resgraph.errors import SpecError
from resgraph.importer.fit import StageFit, plain_units, stages
from resgraph.importer.layers import lower
from resgraph.importer.source import ImportFailure, SourceGraph
from resgraph.importer.spec_writer import spec_data, to_yaml
from resgraph.importer.structure import Found, find, lead_length
from resgraph.importer.verify import align, state_dict

if TYPE_CHECKING:
    from resgraph.api import CompiledNetwork
    from resgraph.ir import Network


@dataclass
class Imported:
    spec: dict[str, Any]
    text: str  # the spec as YAML: what `resgraph import -o` writes
    compiled: CompiledNetwork  # the text compiled: its nodes are the source's layers
    weights: dict[str, np.ndarray] | None  # keyed as the generated module's state_dict

    @property
    def network(self) -> Network:
        return self.compiled.network


def import_graph(graph: SourceGraph, name: str) -> Imported:
    """The spec that is the source's graph: library block types where they fit exactly."""
    first: ImportFailure | None = None
    for source in (graph, _unnamed(graph)):  # the source's names may clash: then none
        layers = lower(source)
        tries: list[int | None] = [None, *range(lead_length(layers) + 1)]
        for count in tries:  # where the first block begins is the one guess: try each
            try:
                return _attempt(source, name, find(layers, source.origin, plain_units(), count))
            except ImportFailure as failure:
                first = first or failure
    assert first is not None
    raise first


def _unnamed(graph: SourceGraph) -> SourceGraph:
    """The graph without the source's module names (the spec then names layers itself)."""
    ops = [dataclasses.replace(op, module=None) for op in graph.ops]
    return dataclasses.replace(graph, ops=ops)


def _attempt(graph: SourceGraph, name: str, found: Found) -> Imported:
    """Fit stages to `found`, trying each stage's candidates until the compiled spec is the
    source's graph."""
    from resgraph import api

    origin = graph.origin
    fits = stages(found, origin)
    counts = [len(fit.blocks) for fit in fits]
    while True:
        spec = spec_data(name, origin, found, fits, graph.input)
        text = to_yaml(spec)
        try:
            compiled = api.compile(text)
        except SpecError as exc:
            if not _to_own_types(fits):
                raise ImportFailure(f"{origin}: resgraph cannot express it: {exc}") from None
            continue
        pairs, bad, first = align(compiled.network, found, counts)
        if not first:
            break
        if not bad or any(fits[s].choice == len(fits[s].candidates) - 1 for s in bad):
            raise ImportFailure(f"{origin}: the spec written differs from the source: {first}")
        for s in bad:
            fits[s].choice += 1
    weights = state_dict(pairs) if graph.has_weights else None
    return Imported(spec, text, compiled, weights)


def _to_own_types(fits: list[StageFit]) -> bool:
    """Move every stage to its own block type; False if all were there already."""
    moved = False
    for fit in fits:
        last = len(fit.candidates) - 1
        if fit.choice != last:
            fit.choice, moved = last, True
    return moved
