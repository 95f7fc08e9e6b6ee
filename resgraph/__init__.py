"""resgraph: a declarative graph-spec compiler for ResNet-family networks.

The public API (docs/api.md): `list_models`, `compile`, `create_model`, `CompiledNetwork`
and `SpecError`. They load on first use, so `import resgraph` (and the CLI) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resgraph.errors import SpecError

__version__ = "0.1.0"
__all__ = ["CompiledNetwork", "SpecError", "__version__", "compile", "create_model", "list_models"]

_LAZY = {
    "compile": "resgraph.api",
    "create_model": "resgraph.api",
    "CompiledNetwork": "resgraph.api",
    "list_models": "resgraph.registry",
}

if TYPE_CHECKING:
    from resgraph.api import CompiledNetwork, compile, create_model
    from resgraph.registry import list_models


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resgraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
