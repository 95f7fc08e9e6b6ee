"""`resgraph import`: existing networks (torch modules, ONNX files, Caffe prototxts) to specs.

Readers lower a source to a SourceGraph (resgraph.importer.source); the recognizer finds
its stem, blocks and head and writes the spec a person would write; the spec is compiled and
held against the source node by node, and with weights, function by function.

The names below load on first use, so that the CLI, which registers `import` on every run,
does not pay for the importer (numpy, the recognizer) when another command runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ loads them
    from resgraph.importer.importing import Imported, import_graph
    from resgraph.importer.source import ImportFailure, SourceGraph

_EXPORTS = {
    "ImportFailure": "resgraph.importer.source",
    "SourceGraph": "resgraph.importer.source",
    "Imported": "resgraph.importer.importing",
    "import_graph": "resgraph.importer.importing",
}
__all__ = ["ImportFailure", "Imported", "SourceGraph", "import_graph"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'resgraph.importer' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
