"""torch.hub entry points: one per shipped spec, e.g.

    torch.hub.load("<owner>/resgraph", "resnet50_v1_5")          # or a checkout, source="local"
    torch.hub.load(repo, "cifar_resnet", n=18, num_classes=100)  # settings as in create_model

No weights ship with resgraph: pass `weights=` a state_dict or training checkpoint file.
"""

from __future__ import annotations

from typing import Any

import resgraph
from resgraph.load import load_spec
from resgraph.registry import list_models, spec_path

dependencies = ["torch", "pydantic", "yaml", "jinja2", "networkx"]  # import names, as hub checks


def _entry(name: str) -> Any:
    def entry(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise ValueError(f"{name}: resgraph ships no weights; pass weights='file.pt' instead")
        return resgraph.create_model(name, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    description = load_spec(spec_path(name)).data.get("description") or name
    entry.__doc__ = f"{description}\n\nBuilt by resgraph.create_model({name!r}, **kwargs)."
    return entry


globals().update({name: _entry(name) for name in list_models()})
