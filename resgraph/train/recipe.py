"""Training recipes: YAML documents shipped in recipes/, validated here, overridable with --set.

Which `--set K=V` goes where: `recipe.K=V` always sets the recipe and `spec.K=V` always
the spec; a bare `K=V` sets the recipe when K's first part is a recipe field (lr, epochs,
batch_size, warmup.lr, ...) and the spec otherwise (n=18, input.height=16, stages.0.blocks=5).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from resgraph.argtypes import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_LR,
    MAX_SIDE,
    MAX_WORKERS,
)
from resgraph.errors import Location
from resgraph.load import Document, apply_overrides, load_file, parse_yaml
from resgraph.train import TrainError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]


class Warmup(_Model):
    """Start at a small lr until training error falls below a bound (the paper's 110-layer net)."""

    lr: float = Field(gt=0, le=MAX_LR)
    until_train_error: float = Field(gt=0, le=1)
    min_layers: int = Field(default=0, ge=0)


class Schedule(_Model):
    """How the lr falls: at fixed iterations, on a plateau, as a cosine, or never."""

    kind: Literal["steps", "plateau", "cosine", "constant"] = "constant"
    milestones: list[Annotated[int, Field(ge=0, le=MAX_ITERATIONS)]] = Field(
        default_factory=list, max_length=1000
    )
    gamma: float = Field(default=0.1, gt=0, le=1)
    patience: int = Field(default=3, ge=1)
    threshold: float = Field(default=0.001, ge=0, le=1)


class Augment(_Model):
    """Training-time augmentation; crops are always to the spec's input size."""

    pad: int = Field(default=0, ge=0, le=MAX_SIDE)
    flip: bool = False
    scale: tuple[Side, Side] | None = None
    lighting: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="std of alpha in AlexNet's PCA colour augmentation (0.1 in the paper); "
        "0 turns it off; RGB input only",
    )


class Recipe(_Model):
    """Every number of a training run that is not the network itself."""

    description: str = ""
    lr: float = Field(gt=0, le=MAX_LR)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    batch_size: int = Field(gt=0, le=MAX_BATCH)
    epochs: int | None = Field(default=None, gt=0, le=MAX_EPOCHS)
    iterations: int | None = Field(default=None, gt=0, le=MAX_ITERATIONS)
    schedule: Schedule = Field(default_factory=Schedule)
    warmup: Warmup | None = None
    val_split: int = Field(default=0, ge=0, le=MAX_ITERATIONS)
    augment: Augment = Field(default_factory=Augment)
    test_size: Side | None = None
    test_crops: Literal[1, 10] = 1
    eval_every: int = Field(default=0, ge=0, le=MAX_ITERATIONS)
    checkpoint_every: int = Field(default=0, ge=0, le=MAX_ITERATIONS)
    eval_batch_size: int = Field(default=256, gt=0, le=MAX_BATCH)
    mean_images: int = Field(default=10_000, gt=0, le=MAX_ITERATIONS)
    workers: int = Field(default=4, ge=0, le=MAX_WORKERS)
    sync_bn: bool = False

    @model_validator(mode="after")
    def _one_length(self) -> Recipe:
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError("give exactly one of epochs and iterations")
        return self


RECIPE_FIELDS = frozenset(Recipe.model_fields)


def shipped() -> list[str]:
    """Names of the recipes shipped with resgraph."""
    folder = resources.files("resgraph.train.recipes")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Route each `K=V` to the spec or the recipe by the rule in this module's docstring."""
    spec: list[str] = []
    recipe: list[str] = []
    for text in overrides:
        head = text.partition("=")[0].strip().split(".")[0]
        if head == "recipe":
            recipe.append(text.partition(".")[2])
        elif head == "spec":
            spec.append(text.partition(".")[2])
        elif head in RECIPE_FIELDS:
            recipe.append(text)
        else:
            spec.append(text)
    return spec, recipe


def _document(name: str) -> Document:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_file(Path(name))
    if name not in shipped():
        raise TrainError(
            f"unknown recipe {name!r}; shipped: {', '.join(shipped())}, "
            "or give a path to a .yaml file",
            Location("--recipe"),
        )
    text = resources.files("resgraph.train.recipes").joinpath(f"{name}.yaml").read_text("utf-8")
    return parse_yaml(text, f"resgraph/train/recipes/{name}.yaml")


def _with_defaults(doc: Document) -> Document:
    """Spell out every optional field, so `--set` may change one the file leaves out."""
    for name, info in Recipe.model_fields.items():
        if name not in doc.data and not info.is_required():
            value = info.get_default(call_default_factory=True)
            doc.data[name] = (
                value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            )
    return doc


def load_recipe(name: str, overrides: Sequence[str] = (), epochs: int | None = None) -> Recipe:
    """Load a shipped recipe (or a YAML file), apply overrides, and let --epochs set the length."""
    doc = apply_overrides(_with_defaults(_document(name)), overrides, params_key="")
    if epochs is not None:
        doc.data.update(epochs=epochs, iterations=None)
    try:
        return Recipe.model_validate(doc.data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        path = tuple(error["loc"])
        label = " ".join(["recipe", ".".join(map(str, path))]).strip()
        message = error["msg"].removeprefix("Value error, ")
        where = doc.locate_key(path) if error["type"] == "extra_forbidden" else doc.locate(path)
        raise TrainError(f"{label}: {message}", where) from None
