"""One training run from command-line choices: compile, load data and recipe, train, resume.

A run folder holds config.yaml (how the run was asked for, plus the expanded spec and
recipe), metrics.jsonl, last.pt and best.pt. `--resume DIR` reads the choices back from
config.yaml; choices given again must agree with them, except the length (--epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from resgraph.errors import Location
from resgraph.output import write_atomic
from resgraph.pipeline import Compiled, compile_spec
from resgraph.train import TrainError, checkpoint, distributed, metrics
from resgraph.train.datasets import load_source
from resgraph.train.loaders import Placement, make_batches
from resgraph.train.loop import Speed, Trainer
from resgraph.train.model import model_from_spec, weighted_layers
from resgraph.train.recipe import Recipe, load_recipe, split_overrides
from resgraph.train.schedule import LrSchedule

CONFIG = "config.yaml"
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


def _choices(request: Request, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The run's inputs: from the command line, falling back to a resumed run's, then defaults."""
    if request.spec is None and saved is None:
        raise TrainError("give a spec to train (or --resume DIR)", Location("resgraph train"))
    if request.spec is not None:
        spec_file = str(Path(request.spec).resolve())
        overrides = list(request.overrides)
    else:
        spec_file, overrides = saved["spec_file"], saved["overrides"]
    old = saved or {}
    return {
        "spec_file": spec_file,
        "overrides": overrides,
        "recipe": request.recipe or old.get("recipe", "quick"),
        "data": request.data or old.get("data", "digits"),
        "seed": request.seed if request.seed is not None else old.get("seed", 0),
        "epochs": request.epochs if request.epochs is not None else old.get("epochs"),
    }


def _compile(choices: dict[str, Any]) -> tuple[Compiled, Recipe]:
    spec_overrides, recipe_overrides = split_overrides(choices["overrides"])
    compiled = compile_spec(choices["spec_file"], spec_overrides)
    return compiled, load_recipe(choices["recipe"], recipe_overrides, choices["epochs"])


def _difference(old: Any, new: Any, path: str) -> str | None:
    """The first dotted key where two configs differ, or None.

    Keys only `new` has are fields a later resgraph added, with the old behaviour as default.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old, key=str):
            found = _difference(old.get(key), new.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    return None if old == new else f"{path} ({old!r} then, {new!r} now)"


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    recipe = {k: v for k, v in config["recipe"].items() if k not in LENGTH_KEYS}
    return {
        "spec": config["spec"],
        "recipe": recipe,
        "data": config["choices"]["data"],
        "seed": config["choices"]["seed"],
        "classes": config["classes"],
    }


def read_config(run: Path) -> dict[str, Any]:
    """A run folder's config.yaml."""
    path = run / CONFIG
    if not path.is_file():
        raise TrainError(f"no {CONFIG} here; is this a training run's folder?", Location(str(run)))
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_run(run: Path, which: str = "best.pt") -> tuple[dict[str, Any], Compiled, torch.nn.Module]:
    """A finished (or running) run's config, compiled spec and module with trained weights."""
    config = read_config(run)
    compiled, _ = _compile(config["choices"])
    changed = _difference(config["spec"], compiled.spec.model_dump(mode="json"), "spec")
    if changed:
        raise TrainError(
            f"{config['choices']['spec_file']} changed since this run was trained: {changed}",
            Location(str(run / CONFIG)),
        )
    model = model_from_spec(compiled, config["classes"])
    model.load_state_dict(checkpoint.load(run / which)["model"])
    return config, compiled, model


def _prepare(request: Request, ctx: distributed.Context) -> tuple[Trainer, Path]:
    saved = read_config(Path(request.resume)) if request.resume else None
    choices = _choices(request, saved and saved["choices"])
    compiled, recipe = _compile(choices)
    shape = (compiled.spec.input.channels, compiled.spec.input.height, compiled.spec.input.width)
    data = load_source(choices["data"], shape, compiled.plan.classes)
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
    run = Path(request.resume or request.out or Path("runs") / compiled.spec.name)
    batches = make_batches(
        data, recipe, choices["seed"], Placement(shape, ctx.rank, ctx.world, ctx.device)
    )
    torch.manual_seed(choices["seed"])
    model = model_from_spec(compiled, data.classes)
    total = recipe.iterations or recipe.epochs * batches.steps_per_epoch
    warm = recipe.warmup is not None and weighted_layers(compiled.graph) >= recipe.warmup.min_layers
    trainer = Trainer(
        model, batches, recipe, total, LrSchedule(recipe, total, warm), ctx, run, request.speed
    )
    if saved is not None:
        state = checkpoint.load(run / "last.pt")
        trainer.restore(state)
        if ctx.main:
            metrics.keep_first(run, state["records"])
            write_atomic(run / CONFIG, yaml.safe_dump(config, sort_keys=False))
    elif ctx.main:
        if (run / "last.pt").exists():
            raise TrainError(
                "this folder already holds a run; continue it with --resume, or "
                "choose another --out",
                Location(str(run)),
            )
        run.mkdir(parents=True, exist_ok=True)
        write_atomic(run / CONFIG, yaml.safe_dump(config, sort_keys=False))
        write_atomic(run / metrics.FILE, "")
    return trainer, run


def train(request: Request) -> tuple[Path, dict[str, Any] | None]:
    """Run (or resume) training; return the run folder and (on rank 0) its last metrics record."""
    ctx = distributed.setup(request.device)
    try:
        trainer, run = _prepare(request, ctx)
        last = trainer.fit()
        return run, last if ctx.main else None
    finally:
        distributed.teardown(ctx)
