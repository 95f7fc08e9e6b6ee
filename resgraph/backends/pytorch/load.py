"""Loading a generated module in-process: the same source a file would hold, executed once."""

from __future__ import annotations

import linecache
import sys
import types
from typing import Any

from resgraph.backends.pytorch.emit import Options, render_module
from resgraph.pipeline import Compiled


def build_module(
    compiled: Compiled, num_classes: int | None = None, options: Options | None = None
) -> Any:
    """Build the torch.nn.Module of a compiled spec in memory, from the same generated source
    (unformatted: no formatter process per build)."""
    options = options or Options()
    source = render_module(compiled, options, formatted=False)
    variant = "_folded" if options.fold_bn else ""
    name = f"resgraph_generated_{compiled.network.name}_{compiled.content_hash}{variant}"
    module = types.ModuleType(name)
    module.__file__ = f"<resgraph {compiled.network.name}>"
    sys.modules[name] = module  # classes must be importable for pickling and torch.compile

    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    if compiled.network.features:  # a backbone has no classifier to size
        return module.build_model()
    return module.build_model(num_classes)
