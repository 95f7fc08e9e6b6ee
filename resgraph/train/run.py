"""One training run from command-line choices: compile, load data and recipe, train, resume.

A run folder holds config.yaml (how the run was asked for, plus the expanded spec and
recipe), metrics.jsonl, last.pt and best.pt (and tensorboard/ with --tensorboard).
`--resume DIR` reads the choices back from config.yaml; choices given again must agree with
them, except the length (--epochs).
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from resgraph.argtypes import MAX_EPOCHS, MAX_SEED
from resgraph.errors import Location, SpecError
from resgraph.load import Document, parse_yaml
from resgraph.output import write_atomic
from resgraph.pipeline import Compiled, compile_spec
from resgraph.registry import resolve_spec
from resgraph.train import (
    TrainError,
    checkpoint,
    distributed,
    metrics,
    read_bounded,
    user_path,
)
from resgraph.train.datasets import check_channels, load_source
from resgraph.train.loaders import Placement, make_batches
from resgraph.train.loop import Speed, Trainer
from resgraph.train.model import model_from_spec, weighted_layers
from resgraph.train.recipe import Recipe, load_recipe, split_overrides
from resgraph.train.schedule import LrSchedule

CONFIG = "config.yaml"
MAX_CONFIG_BYTES = 1 << 20  # a run's config.yaml is a few KB
RUN_FILES = (CONFIG, "metrics.jsonl", "last.pt", "best.pt")
LENGTH_KEYS = ("epochs", "iterations")


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    spec: str | None = None
    data: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    seed: int | None = None
    out: str | None = None
    resume: str | None = None
    device: str = "cpu"
    overrides: list[str] = field(default_factory=list)
    speed: Speed = field(default_factory=Speed)
    tensorboard: bool = False
    force: bool = False  # a new run may replace the run files in a non-empty --out folder


@dataclass(frozen=True)
class Outcome:
    """What a `train` call did: the run folder, and on rank 0 its last record or a note."""

    run: Path
    last: dict[str, Any] | None = None
    note: str | None = None  # e.g. that a resumed run was already complete


def _choices(request: Request, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The run's inputs: from the command line, falling back to a resumed run's, then defaults."""
    if request.spec is None and saved is None:
        raise TrainError("give a spec to train (or --resume DIR)", Location("resgraph train"))
    old = saved or {}
    # A resumed run keeps its --set values; ones given again are added, so that a changed
    # value shows up as a difference whether or not SPEC is given again.
    kept = list(old.get("overrides", []))
    overrides = kept + [o for o in request.overrides if o not in kept]
    if request.spec is not None:
        spec_file = str(resolve_spec(request.spec).resolve())
    else:
        spec_file = saved["spec_file"]
    return {
        "spec_file": spec_file,
        "overrides": overrides,
        "recipe": request.recipe or old.get("recipe", "quick"),
        "data": request.data or old.get("data", "digits"),
        "seed": request.seed if request.seed is not None else old.get("seed", 0),
        "epochs": request.epochs if request.epochs is not None else old.get("epochs"),
        # a run logged to TensorBoard keeps logging when resumed
        "tensorboard": request.tensorboard or bool(old.get("tensorboard", False)),
    }


def _compile(choices: dict[str, Any]) -> tuple[Compiled, Recipe]:
    spec_overrides, recipe_overrides = split_overrides(choices["overrides"])
    compiled = compile_spec(choices["spec_file"], spec_overrides)
    return compiled, load_recipe(choices["recipe"], recipe_overrides, choices["epochs"])


def _difference(old: Any, new: Any, path: str) -> str | None:
    """The first dotted key where two configs differ, or None, said in one short line.

    Keys only `new` has are fields a later resgraph added, with the old behaviour as default.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old, key=str):
            found = _difference(old.get(key), new.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return f"{path} ({len(old)} items then, {len(new)} now)"
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _difference(a, b, f"{path}.{index}")
            if found:
                return found
        return None
    return None if old == new else f"{path} ({_brief(old)} then, {_brief(new)} now)"


def _brief(value: Any) -> str:
    """A value's repr, cut to a length that keeps a message on one line."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    recipe = {k: v for k, v in config["recipe"].items() if k not in LENGTH_KEYS}
    return {
        "spec": config["spec"],
        "recipe": recipe,
        "data": config["choices"]["data"],
        "seed": config["choices"]["seed"],
        "classes": config["classes"],
    }


class _Choices(BaseModel):
    """How a run was asked for, as config.yaml records it (later versions may add keys)."""

    model_config = ConfigDict(extra="allow")

    spec_file: StrictStr
    overrides: list[StrictStr]
    recipe: StrictStr
    data: StrictStr
    seed: StrictInt = Field(ge=0, le=MAX_SEED)
    epochs: StrictInt | None = Field(ge=1, le=MAX_EPOCHS)
    tensorboard: StrictBool = False


class _RunConfig(BaseModel):
    """What config.yaml must hold for train --resume, evaluate and analyze to use it."""

    model_config = ConfigDict(extra="allow")

    choices: _Choices
    classes: StrictInt
    spec: dict[str, Any]
    recipe: Recipe


def _config_text(path: Path) -> str:
    try:
        return read_bounded(path, MAX_CONFIG_BYTES, CONFIG).decode("utf-8")
    except UnicodeDecodeError:
        raise TrainError(f"damaged {CONFIG}: not UTF-8 text", Location(str(path))) from None


def _check_config(doc: Document, path: Path) -> None:
    """Refuse a config.yaml that is not what a run writes, naming the first wrong entry."""
    if not isinstance(doc.data, dict):
        raise TrainError(f"damaged {CONFIG}: expected a mapping", Location(str(path)))
    try:
        _RunConfig.model_validate(doc.data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        keys = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        label = ".".join(map(str, keys))
        prefix = "" if keys[:1] == ("recipe",) else f"damaged {CONFIG}: "
        raise TrainError(
            f"{prefix}{label}: {message}", doc.locate(keys) or Location(str(path))
        ) from None


def read_config(run: Path) -> dict[str, Any]:
    """A run folder's config.yaml, checked: a damaged one is refused with its location."""
    path = user_path(str(run), "RUN") / CONFIG
    if not path.exists():
        raise TrainError(f"no {CONFIG} here; is this a training run's folder?", Location(str(run)))
    try:
        doc = parse_yaml(_config_text(path), str(path))
    except TrainError:
        raise
    except SpecError as exc:  # YAML syntax, located by parse_yaml
        raise TrainError(f"damaged {CONFIG}: {exc.message}", exc.location) from None
    _check_config(doc, path)
    return doc.data


class TrainedRun(NamedTuple):
    """A run folder read back: its config, its compiled spec, the module with the checkpoint's
    weights, and the whole checkpoint (optimizer state, pixel mean, ...)."""

    config: dict[str, Any]
    compiled: Compiled
    model: torch.nn.Module
    state: dict[str, Any]


def load_run(run: Path, which: str = "best.pt") -> TrainedRun:
    """A finished (or running) run, checked against its spec file as it is now."""
    config = read_config(run)
    compiled, _ = _compile(config["choices"])
    changed = _difference(config["spec"], compiled.spec.model_dump(mode="json"), "spec")
    if changed:
        raise TrainError(
            f"{config['choices']['spec_file']} changed since this run was trained: {changed}",
            Location(str(run / CONFIG)),
        )
    model = model_from_spec(compiled, config["classes"])
    shape = (compiled.spec.input.channels, compiled.spec.input.height, compiled.spec.input.width)
    state = checkpoint.read(run / which, model, shape)
    model.load_state_dict(state["model"])
    return TrainedRun(config, compiled, model, state)


def _check_tensorboard() -> None:
    """Fail before any work if --tensorboard cannot write (torch's writer needs tensorboard)."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        raise TrainError(
            "needs the tensorboard package: pip install 'resgraph[tensorboard]'",
            Location("--tensorboard"),
        ) from None


def _already_done(request: Request, trainer: Trainer, run: Path) -> str | None:
    """A note if a resumed run has nothing left to do; an error if --epochs is behind it."""
    done, total, steps = trainer.iteration, trainer.total, trainer.batches.steps_per_epoch
    if done < total:
        return None
    more = done // steps + 1  # the fewest --epochs that trains further
    if request.epochs is not None and done > total:
        raise TrainError(
            f"{request.epochs} means {total} iterations, but {run} is already at "
            f"iteration {done}; give {more} or more to train longer",
            Location("--epochs"),
        )
    return (
        f"{run}: already complete at iteration {done}; to train longer, resume with "
        f"--epochs M (M >= {more})"
    )


def _check_new_folder(run: Path, force: bool) -> None:
    """A new run writes only into a missing or empty folder, or with --force over a run's files.

    Without the check a folder holding someone's config.yaml or best.pt would be overwritten.
    """
    where = Location(str(run))
    if run.exists() and not run.is_dir():
        raise TrainError("is a file, not a folder; choose another --out", where)
    try:
        entries = sorted(e.name for e in run.iterdir()) if run.is_dir() else []
    except OSError as exc:
        raise TrainError(f"cannot read the folder: {exc.strerror}", where) from None
    if not entries:
        return
    if force:
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
        shutil.rmtree(run / metrics.BOARD, ignore_errors=True)
        return
    if "last.pt" in entries:
        raise TrainError(
            "this folder already holds a run; continue it with --resume, or "
            "choose another --out (or --force to replace it)",
            where,
        )
    more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
    raise TrainError(
        f"this folder is not empty ({entries[0]}{more}) and holds no run to resume; choose "
        f"another --out, or give --force to write a new run's {', '.join(RUN_FILES)} there",
        where,
    )


def _prepare(request: Request, ctx: distributed.Context) -> tuple[Trainer, Path, str | None]:
    saved = read_config(Path(request.resume)) if request.resume else None
    choices = _choices(request, saved and saved["choices"])
    if choices["tensorboard"]:
        _check_tensorboard()
    compiled, recipe = _compile(choices)
    run = user_path(
        request.resume or request.out or str(Path("runs") / compiled.spec.name),
        "--resume" if request.resume else "--out",
    )
    if saved is None and ctx.main:
        _check_new_folder(run, request.force)
    shape = (compiled.spec.input.channels, compiled.spec.input.height, compiled.spec.input.width)
    data = load_source(choices["data"], shape, compiled.plan.classes)
    check_channels(data, shape[0], f"--data {choices['data']}", Location(choices["spec_file"]))
    config = {
        "choices": choices,
        "classes": data.classes,
        "world_size": ctx.world,
        "spec": compiled.spec.model_dump(mode="json"),
        "recipe": recipe.model_dump(mode="json"),
    }
    if saved is not None:
        changed = _difference(_comparable(saved), _comparable(config), "config")
        if changed:
            raise TrainError(
                f"cannot resume with different settings: {changed}",
                Location(str(Path(request.resume) / CONFIG)),
            )
    batches = make_batches(
        data, recipe, choices["seed"], Placement(shape, ctx.rank, ctx.world, ctx.device)
    )
    torch.manual_seed(choices["seed"])
    model = model_from_spec(compiled, data.classes)
    total = recipe.iterations or recipe.epochs * batches.steps_per_epoch
    warm = (
        recipe.warmup is not None and weighted_layers(compiled.network) >= recipe.warmup.min_layers
    )
    trainer = Trainer(
        model,
        batches,
        recipe,
        total,
        LrSchedule(recipe, total, warm),
        ctx,
        run,
        request.speed,
        tensorboard=choices["tensorboard"],
    )
    note = None
    if saved is not None:
        state = trainer.restore(run / "last.pt")
        note = _already_done(request, trainer, run)
        if ctx.main:
            metrics.keep_first(run, state["records"])
            write_atomic(run / CONFIG, yaml.safe_dump(config, sort_keys=False))
    elif ctx.main:
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainError(
                f"cannot create the run folder: {exc.strerror}", Location(str(run))
            ) from None
        write_atomic(run / CONFIG, yaml.safe_dump(config, sort_keys=False))
        write_atomic(run / metrics.FILE, "")
    return trainer, run, note


def train(request: Request) -> Outcome:
    """Run (or resume) training; on rank 0 the outcome holds the last record written or a note."""
    ctx = distributed.setup(request.device)
    try:
        trainer, run, note = _prepare(request, ctx)
        if note is not None:
            return Outcome(run, note=note if ctx.main else None)
        last = trainer.fit()
        return Outcome(run, last if ctx.main else None)
    finally:
        distributed.teardown(ctx)
