"""`resgraph import`: existing networks (torch modules, ONNX files, Caffe prototxts) to specs.

Readers lower a source to a SourceGraph (resgraph.importer.source); the recognizer finds
its stem, blocks and head and writes the spec a person would write; the spec is compiled and
held against the source node by node, and with weights, function by function.
"""

from resgraph.importer.importing import Imported, import_graph
from resgraph.importer.source import ImportFailure, SourceGraph

__all__ = ["ImportFailure", "Imported", "SourceGraph", "import_graph"]
