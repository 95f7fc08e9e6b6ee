"""Checkpoints: written atomically, read by one bounded reader that validates every entry.

`read` is the only way the trainer, `evaluate` and `analyze` open a checkpoint. Before torch
allocates anything it compares the sizes the zip archive declares with what a checkpoint
of this network can hold (a small deflated file may declare gigabytes); then it loads with
torch's weights-only unpickler (nothing in the file runs) and checks each entry against
the network and, for `train --resume`, against a fresh trainer's state of the same shape.
Every problem is one line naming the file and the entry.
"""

from __future__ import annotations

import math
import os
import random
import re
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resgraph.errors import Location
from resgraph.train import TrainError

MAX_PICKLE_BYTES = 16 << 20  # the data.pkl of a ResNet-152 checkpoint is under 200 KB
SLACK_BYTES = 4 << 20  # RNG states and small tensors beyond the weights, momentum and mean
MAX_ENTRIES = 100_000
SHOWN = 3  # names listed before "and N more"
_TEMP = re.compile(r"\.{name}\.[a-z0-9_]{{8}}\.tmp")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file beside `path`, fsync, then rename: never a half-written file.

    Temp files a killed earlier write to the same path left behind are removed first.
    """
    _remove_stale_temps(path)
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


def _remove_stale_temps(path: Path) -> None:
    """Delete `.NAME.XXXXXXXX.tmp` files that `save` made for `path` and never renamed."""
    pattern = re.compile(_TEMP.pattern.format(name=re.escape(path.name)))
    for entry in path.parent.glob(f".{path.name}.*.tmp"):
        if pattern.fullmatch(entry.name):
            entry.unlink(missing_ok=True)


def budget(model: torch.nn.Module, pixels: Sequence[int]) -> int:
    """The most tensor bytes a checkpoint of `model` holds: weights, momentum, pixel mean, RNG."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * weights + 4 * math.prod(pixels) + SLACK_BYTES


def read(
    path: Path,
    model: torch.nn.Module,
    pixels: tuple[int, int, int],
    fresh: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint of `model` (input `pixels`), checked; with `fresh` (a new trainer's
    state) every entry a resumed run restores is checked too."""
    where = Location(str(path))
    _check_archive(path, budget(model, pixels), where)
    state = _torch_load(path, where)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise TrainError("not a resgraph checkpoint (expected a dict of entries)", where)
    if "model" not in state:
        raise TrainError("not a resgraph checkpoint (no 'model' entry)", where)
    missing = [k for k in fresh or () if k not in state]
    if missing:
        raise TrainError(
            f"damaged checkpoint: no {_listed(missing)} entr{'y' if len(missing) == 1 else 'ies'}"
            " (a checkpoint written by train has them)",
            where,
        )
    _check_weights(state["model"], model.state_dict(), where)
    if "pixel_mean" in state:
        check_pixel_mean(state["pixel_mean"], pixels, where)
    if fresh is not None:
        _check_resumable(state, fresh, [tuple(p.shape) for p in model.parameters()], where)
    return state


# --------------------------------------------------------------------------- the file


def _check_archive(path: Path, limit: int, where: Location) -> None:
    """Refuse what is not torch's zip format, or declares more bytes than `limit` allows."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TrainError("no checkpoint here", where) from None
    except OSError as exc:
        raise TrainError(f"cannot read checkpoint: {exc.strerror}", where) from None
    if not stat.S_ISREG(info.st_mode):
        raise TrainError("not a regular file, so not a checkpoint", where)
    if info.st_size == 0:
        raise TrainError("empty file, not a checkpoint", where)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise TrainError(
            "not a checkpoint written by torch.save (not a zip archive)", where
        ) from None
    if len(entries) > MAX_ENTRIES:
        raise TrainError(f"{len(entries):,} archive entries; a checkpoint has fewer", where)
    pickles = sum(e.file_size for e in entries if e.filename.endswith(".pkl"))
    if pickles > MAX_PICKLE_BYTES:
        raise TrainError(
            f"its pickle declares {pickles:,} bytes; checkpoints are limited to "
            f"{MAX_PICKLE_BYTES:,}",
            where,
        )
    declared = sum(e.file_size for e in entries) - pickles
    if declared > limit:
        raise TrainError(
            f"declares {declared:,} bytes of tensors; a checkpoint of this network holds at "
            f"most {limit:,}",
            where,
        )


def _torch_load(path: Path, where: Location) -> Any:
    """torch.load with weights_only: tensors and plain data, torch's warnings kept quiet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for damaged or unsafe files
        raise TrainError(f"cannot load checkpoint: {_reason(exc)}", where) from None


def _reason(exc: Exception) -> str:
    """torch's refusal as one plain line (no colours, no advice to load unsafely)."""
    text = _ANSI.sub("", str(exc))
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global[: ]+([\w.]+)", text)
    if found:
        return f"it refers to {found.group(1)}, which a checkpoint may not hold"
    if "weights_only" in text or "Weights only" in text:
        return "it holds something other than tensors and plain data"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first[:200] or type(exc).__name__


# --------------------------------------------------------------------------- entries


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _check_weights(weights: Any, expected: Mapping[str, torch.Tensor], where: Location) -> None:
    """The 'model' entry must be this network's state_dict: same names, shapes, dtypes, finite."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) for k in weights):
        raise TrainError("damaged checkpoint: 'model' is not a state_dict", where)
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        parts = [f"{len(missing)} missing ({_listed(missing)})"] if missing else []
        parts += [f"{len(extra)} unexpected ({_listed(extra)})"] if extra else []
        raise TrainError(
            f"the weights are not this network's (another run's checkpoint?): {'; '.join(parts)}",
            where,
        )
    for name, reference in expected.items():
        value = weights[name]
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise TrainError(f"damaged checkpoint: model weight {name} is not a tensor", where)
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise TrainError(
                f"the weights are not this network's: {name} is {_shape(value.shape)} "
                f"{str(value.dtype).removeprefix('torch.')}, this network's is "
                f"{_shape(reference.shape)} {str(reference.dtype).removeprefix('torch.')}",
                where,
            )
    broken = [
        k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if broken:
        raise TrainError(f"non-finite weights (NaN or inf) in {_listed(broken)}", where)


def check_pixel_mean(mean: Any, pixels: tuple[int, int, int], where: Location) -> None:
    """The training images' per-pixel mean: float (C, H, W) of the input, values in [0, 1]."""
    if not isinstance(mean, torch.Tensor) or not mean.is_floating_point():
        raise TrainError("damaged checkpoint: 'pixel_mean' is not a float tensor", where)
    if tuple(mean.shape) != pixels:
        raise TrainError(
            f"damaged checkpoint: 'pixel_mean' is {_shape(mean.shape)}, the input is "
            f"{_shape(pixels)}",
            where,
        )
    if not torch.isfinite(mean).all() or mean.min() < 0 or mean.max() > 1:
        raise TrainError("damaged checkpoint: 'pixel_mean' is not a mean of [0, 1] pixels", where)


def _check_resumable(
    state: dict[str, Any],
    fresh: dict[str, Any],
    parameters: list[tuple[int, ...]],
    where: Location,
) -> None:
    """Every entry a resumed trainer restores: shaped like a fresh trainer's, values in range."""
    # CUDA RNG states: as many as the saving machine had GPUs (none on a CPU machine)
    reference = {**fresh, "rng": {**fresh["rng"], "cuda": []}}
    for key in ("scheduler", "position", "totals", "best", "records", "rng"):
        problem = _unlike(state[key], reference[key], key)
        if problem:
            raise TrainError(f"damaged checkpoint: {problem}", where)
    position, (kind, _, index, has_gauss, _) = state["position"], state["rng"]["numpy"]
    version, internal, _ = state["rng"]["python"]
    numbers = {
        "rng.numpy": kind == "MT19937" and 0 <= index <= 624 and has_gauss in (0, 1),
        "rng.python": version == 3 and all(0 <= v < 1 << 32 for v in internal),
        "position.iteration": position["iteration"] >= 0,
        "records": state["records"] >= 0,
        "best": not math.isnan(state["best"]) and state["best"] >= 0,
        "totals": all(math.isfinite(t) and t >= 0 for t in state["totals"]),
        "scheduler.scale": math.isfinite(state["scheduler"]["scale"])
        and state["scheduler"]["scale"] > 0,
        "scheduler.best": not math.isnan(state["scheduler"]["best"]),
        "scheduler.stalled": state["scheduler"]["stalled"] >= 0,
    }
    bad = [name for name, fine in numbers.items() if not fine]
    if bad:
        raise TrainError(f"damaged checkpoint: {bad[0]} is out of range", where)
    problem = _optimizer_problem(state["optimizer"], fresh["optimizer"], parameters)
    if problem:
        raise TrainError(f"damaged checkpoint: {problem}", where)
    if not isinstance(state["scaler"], dict):
        raise TrainError("damaged checkpoint: 'scaler' is not a dict", where)


def _unlike(found: Any, reference: Any, path: str) -> str | None:
    """How `found` differs in structure from `reference` (types, keys, lengths, shapes)."""
    if isinstance(reference, torch.Tensor):
        if not isinstance(found, torch.Tensor) or found.dtype != reference.dtype:
            return f"{path} is not a {str(reference.dtype).removeprefix('torch.')} tensor"
        if reference.dim() and found.shape != reference.shape:
            return f"{path} is {_shape(found.shape)}, expected {_shape(reference.shape)}"
        return None
    if isinstance(reference, dict):
        if not isinstance(found, dict):
            return f"{path} is not a dict"
        keys = set(reference) ^ set(found)
        if keys:
            return f"{path} has different entries ({_listed(sorted(map(str, keys)))})"
        return next(
            (p for k in reference if (p := _unlike(found[k], reference[k], f"{path}.{k}"))), None
        )
    if isinstance(reference, list | tuple):
        if not isinstance(found, list | tuple):
            return f"{path} is not a list"
        if not reference:  # any number of states, each a uint8 tensor
            tensors = all(isinstance(f, torch.Tensor) and f.dtype == torch.uint8 for f in found)
            return None if tensors else f"{path} is not a list of uint8 tensors"
        if len(found) != len(reference):
            return f"{path} has {len(found)} items, expected {len(reference)}"
        return next(
            (p for i, r in enumerate(reference) if (p := _unlike(found[i], r, f"{path}.{i}"))),
            None,
        )
    return _scalar_problem(found, reference, path)


def _scalar_problem(found: Any, reference: Any, path: str) -> str | None:
    """Plain values: bools stay bools, ints ints; floats may be ints; None may be a float."""
    if isinstance(reference, bool):
        fits = isinstance(found, bool)
    elif isinstance(reference, int):
        fits = isinstance(found, int) and not isinstance(found, bool)
    elif isinstance(reference, float) or reference is None:
        fits = isinstance(found, int | float) and not isinstance(found, bool)
        fits = fits or (found is None and reference is None)
    else:
        fits = type(found) is type(reference)
    return (
        None if fits else f"{path} is {type(found).__name__}, expected {type(reference).__name__}"
    )


def _optimizer_problem(
    found: Any, fresh: dict[str, Any], parameters: list[tuple[int, ...]]
) -> str | None:
    """SGD state: the recipe's hyperparameters, and a finite momentum buffer per parameter."""
    if not isinstance(found, dict) or set(found) != {"state", "param_groups"}:
        return "optimizer is not an SGD state_dict"
    problem = _unlike(found["param_groups"], fresh["param_groups"], "optimizer.param_groups")
    if problem:
        return problem
    for saved, new in zip(found["param_groups"], fresh["param_groups"], strict=True):
        for key, value in new.items():
            if key not in ("lr", "initial_lr") and saved[key] != value:
                return f"optimizer {key} is {saved[key]!r}, the recipe's is {value!r}"
    state = found["state"]
    if not isinstance(state, dict):
        return "optimizer.state is not a dict"
    for index, entry in state.items():
        if not (isinstance(index, int) and 0 <= index < len(parameters)):
            return f"optimizer.state has an entry {index!r} for no parameter"
        buffer = entry.get("momentum_buffer") if isinstance(entry, dict) else 0
        if buffer is None:
            continue
        if (
            not isinstance(buffer, torch.Tensor)
            or buffer.dtype != torch.float32
            or tuple(buffer.shape) != parameters[index]
        ):
            return (
                f"optimizer.state.{index} is not a momentum buffer of {_shape(parameters[index])}"
            )
        if not torch.isfinite(buffer).all():
            return f"optimizer.state.{index} momentum is not finite"
    return None


# --------------------------------------------------------------------------- RNG


def rng_states() -> dict[str, Any]:
    """Every random generator a training step may touch, as tensors and plain data."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_rng_states(state: dict[str, Any], where: Location) -> None:
    """Put back what `rng_states` saved; states the generators refuse are one TrainError."""
    try:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    except (ValueError, TypeError, RuntimeError, OverflowError, IndexError) as exc:
        raise TrainError(f"damaged checkpoint: rng: {_reason(exc)}", where) from None
