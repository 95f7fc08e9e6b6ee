"""The imported spec's module, loaded with the imported weights, must compute the source's
function: run both on one random batch and compare."""

from __future__ import annotations

import numpy as np

from resgraph.importer.importing import Imported
from resgraph.importer.source import ImportFailure, SourceGraph, run

TOLERANCE = 1e-4  # the bound, on outputs scaled to at most 1


def function_difference(imported: Imported, graph: SourceGraph, seed: int = 0) -> float:
    """The largest difference between the module's outputs and the source's, relative to the
    outputs' size (absolute where they are small)."""
    import torch

    weights = imported.weights or {}
    module = imported.compiled.to_module()
    try:
        module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ImportFailure(f"{graph.origin}: the weights do not fit the spec: {first}") from None
    module.eval()
    x = torch.randn((2, *graph.input), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected, found = run(graph, x), module(x)
    scale = max(1.0, float(expected.abs().max()))
    return float((found - expected).abs().max()) / scale


def check_function(imported: Imported, graph: SourceGraph) -> float:
    """The difference, or a one-line failure when it is over TOLERANCE."""
    difference = function_difference(imported, graph)
    if not difference <= TOLERANCE:
        raise ImportFailure(
            f"{graph.origin}: the imported module's outputs differ from the source's by "
            f"{difference:.2g} (relative); nothing written"
        )
    return difference
