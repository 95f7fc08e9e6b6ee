"""The learning rate at every iteration, with its state kept for exact resumption."""

from __future__ import annotations

import math
from typing import Any

from resgraph.train.recipe import Recipe


class LrSchedule:
    """Warm-up, then the recipe's schedule: fixed steps, plateau, cosine or constant."""

    def __init__(self, recipe: Recipe, total_iterations: int, warm_up: bool) -> None:
        self.recipe = recipe
        self.total = total_iterations
        self.warming = warm_up and recipe.warmup is not None
        self.scale = 1.0
        self.best = math.inf
        self.stalled = 0

    def lr(self, iteration: int) -> float:
        """The lr for the step that starts at `iteration`."""
        if self.warming:
            return self.recipe.warmup.lr
        schedule = self.recipe.schedule
        if schedule.kind == "steps":
            passed = sum(iteration >= m for m in schedule.milestones)
            return self.recipe.lr * schedule.gamma**passed
        if schedule.kind == "cosine":
            return self.recipe.lr * 0.5 * (1 + math.cos(math.pi * iteration / self.total))
        return self.recipe.lr * self.scale

    def observe(self, train_error: float, held_out_error: float) -> None:
        """After an evaluation: end the warm-up once training error is low, track plateaus."""
        if self.warming and train_error < self.recipe.warmup.until_train_error:
            self.warming = False
        if self.recipe.schedule.kind != "plateau":
            return
        if held_out_error < self.best - self.recipe.schedule.threshold:
            self.best, self.stalled = held_out_error, 0
            return
        self.stalled += 1
        if self.stalled >= self.recipe.schedule.patience:
            self.scale *= self.recipe.schedule.gamma
            self.stalled = 0

    def state_dict(self) -> dict[str, Any]:
        """What changes while training; the rest comes from the recipe."""
        return {
            "warming": self.warming,
            "scale": self.scale,
            "best": self.best,
            "stalled": self.stalled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.warming, self.scale = state["warming"], state["scale"]
        self.best, self.stalled = state["best"], state["stalled"]
