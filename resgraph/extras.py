"""Optional dependencies: which extra installs a missing module, said in one line.

`OPTIONAL` mirrors pyproject's [project.optional-dependencies] (tests/test_api.py holds
them together); the trainer's commands need the whole `train` extra, whichever module of
it is missing first.
"""

from __future__ import annotations

import importlib.util

# import name -> the extra that installs it
OPTIONAL = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "numpy": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "tqdm": "train",
    "PIL": "train",
    "tensorboard": "tensorboard",
}
TRAIN_COMMANDS = frozenset({"train", "evaluate", "plot", "analyze"})


def install_hint(module: str | None, command: str | None = None) -> str | None:
    """`needs X: pip install 'resgraph[extra]'` for an optional module, else None (a bug)."""
    top = (module or "").partition(".")[0]
    if top not in OPTIONAL:
        return None
    extra = "train" if command in TRAIN_COMMANDS and top != "tensorboard" else OPTIONAL[top]
    return f"needs {top}, which is not installed: pip install 'resgraph[{extra}]'"


def require(module: str, extra: str) -> None:
    """Raise ModuleNotFoundError naming the extra when `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"{module} is not installed: pip install 'resgraph[{extra}]'", name=module
        )
