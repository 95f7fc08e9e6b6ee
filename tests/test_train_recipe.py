"""Recipes: the paper's numbers as shipped, overrides routed by the documented rule, schedules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from resgraph.errors import SpecError
from resgraph.train.recipe import load_recipe, shipped, split_overrides
from resgraph.train.schedule import LrSchedule


def test_shipped_recipes() -> None:
    assert shipped() == ["cifar10-paper", "digits-depth", "imagenet-paper", "quick"]


def test_cifar10_paper_recipe_is_the_papers() -> None:
    r = load_recipe("cifar10-paper")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size, r.iterations) == (
        0.1,
        0.9,
        1e-4,
        128,
        64000,
    )
    assert (r.schedule.kind, r.schedule.milestones, r.schedule.gamma) == (
        "steps",
        [32000, 48000],
        0.1,
    )
    assert (r.val_split, r.augment.pad, r.augment.flip) == (5000, 4, True)
    assert (r.warmup.lr, r.warmup.until_train_error, r.warmup.min_layers) == (0.01, 0.8, 110)


def test_imagenet_paper_recipe_is_the_papers() -> None:
    r = load_recipe("imagenet-paper")
    assert (r.lr, r.batch_size, r.iterations, r.schedule.kind) == (0.1, 256, 600000, "plateau")
    assert (r.augment.scale, r.augment.flip, r.test_size) == ((256, 480), True, 256)


def test_overrides_go_to_the_recipe_by_field_name_or_prefix() -> None:
    spec, recipe = split_overrides(
        [
            "n=18",
            "lr=0.05",
            "warmup.lr=0.02",
            "recipe.epochs=3",
            "spec.input.height=16",
            "stages.0.blocks=5",
        ]
    )
    assert spec == ["n=18", "input.height=16", "stages.0.blocks=5"]
    assert recipe == ["lr=0.05", "warmup.lr=0.02", "epochs=3"]


def test_overrides_and_epochs_apply() -> None:
    r = load_recipe(
        "cifar10-paper", ["lr=0.05", "warmup.lr=0.02", "schedule.milestones=[10, 20]"], epochs=3
    )
    assert (r.lr, r.warmup.lr, r.schedule.milestones, r.epochs, r.iterations) == (
        0.05,
        0.02,
        [10, 20],
        3,
        None,
    )


def test_bad_values_are_located() -> None:
    with pytest.raises(
        SpecError, match=r"quick\.yaml: --set momentum=2: recipe momentum: Input should be less"
    ):
        load_recipe("quick", ["momentum=2"])
    with pytest.raises(
        SpecError, match=r"cifar10-paper.yaml:\d+:\d+: recipe: give exactly one of epochs"
    ):
        load_recipe("cifar10-paper", ["epochs=3"])


def test_unknown_recipe_and_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown recipe 'cifar'; shipped: cifar10-paper"):
        load_recipe("cifar")
    path = tmp_path / "mine.yaml"
    path.write_text("lr: 0.2\nbatch_size: 8\nepochs: 1\nbogus: 1\n")
    with pytest.raises(SpecError, match=r"mine.yaml:4:1: recipe bogus: Extra inputs"):
        load_recipe(str(path))


def test_step_schedule_divides_at_milestones() -> None:
    schedule = LrSchedule(load_recipe("cifar10-paper"), 64000, warm_up=False)
    assert [schedule.lr(i) for i in (0, 31999, 32000, 48000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001]
    )


def test_warm_up_until_training_error_is_below_80_percent() -> None:
    schedule = LrSchedule(load_recipe("cifar10-paper"), 64000, warm_up=True)
    assert schedule.lr(0) == 0.01
    schedule.observe(train_error=0.85, held_out_error=0.9)
    assert schedule.lr(400) == 0.01
    schedule.observe(train_error=0.79, held_out_error=0.8)
    assert schedule.lr(401) == 0.1


def test_plateau_divides_after_patience_and_resumes_from_its_state() -> None:
    recipe = load_recipe("imagenet-paper", ["schedule.patience=2"])
    schedule = LrSchedule(recipe, 100, warm_up=False)
    for error in (0.5, 0.4, 0.4, 0.4):
        schedule.observe(0.3, error)
    assert schedule.lr(0) == pytest.approx(0.01)
    copy = LrSchedule(recipe, 100, warm_up=False)
    copy.load_state_dict(schedule.state_dict())
    copy.observe(0.3, 0.4)
    copy.observe(0.3, 0.4)
    assert copy.lr(0) == pytest.approx(0.001)


def test_cosine_falls_to_zero_over_the_run() -> None:
    schedule = LrSchedule(load_recipe("quick"), 100, warm_up=False)
    assert schedule.lr(0) == 0.1 and schedule.lr(50) == pytest.approx(0.05)
    assert math.isclose(schedule.lr(100), 0, abs_tol=1e-12)


def test_extending_a_cosine_run_recomputes_it_over_the_new_length() -> None:
    """docs/training.md's example: 8 epochs resumed with --epochs 16 jump to half the lr."""
    steps = 44
    eight = LrSchedule(load_recipe("quick"), 8 * steps, warm_up=False)
    sixteen = LrSchedule(load_recipe("quick", epochs=16), 16 * steps, warm_up=False)
    sixteen.load_state_dict(eight.state_dict())  # what --resume restores
    assert eight.lr(8 * steps - 1) < 1e-4
    assert sixteen.lr(8 * steps) == pytest.approx(0.05)
    assert math.isclose(sixteen.lr(16 * steps), 0, abs_tol=1e-12)


def test_fields_a_recipe_file_leaves_out_can_still_be_set() -> None:
    r = load_recipe(
        "quick",
        [
            "warmup={lr: 0.01, until_train_error: 0.5}",
            "schedule.kind=steps",
            "schedule.milestones=[100]",
        ],
    )
    assert (r.warmup.lr, r.schedule.kind, r.schedule.milestones) == (0.01, "steps", [100])
