"""PyTorch backend: the IR as standalone, readable PyTorch source, or a module in memory.

names: identifiers and escaping; emit: the IR rendered through templates/module.py.jinja;
format: ruff over the result; load: the same source executed in-process.
"""

from __future__ import annotations

from resgraph.backends.pytorch.emit import Options, output_name, render_module, templates_folder
from resgraph.backends.pytorch.load import build_module
from resgraph.backends.pytorch.names import MODULE_ATTRIBUTES, docstring

__all__ = [
    "MODULE_ATTRIBUTES",
    "Options",
    "build_module",
    "docstring",
    "output_name",
    "render_module",
    "templates_folder",
]
