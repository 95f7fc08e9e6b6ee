"""Checkpoints: written atomically, loaded without running pickled code, RNG states included."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resgraph.errors import Location
from resgraph.train import TrainError


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file beside `path`, fsync, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, accepting tensors and plain data only."""
    if not path.is_file():
        raise TrainError("no checkpoint here", Location(str(path)))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise TrainError(
            f"cannot load checkpoint: {str(exc).splitlines()[0]}", Location(str(path))
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise TrainError("not a resgraph checkpoint (no 'model' entry)", Location(str(path)))
    return state


def rng_states() -> dict[str, Any]:
    """Every random generator a training step may touch, as tensors and plain data."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_rng_states(state: dict[str, Any]) -> None:
    """Put back what `rng_states` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
