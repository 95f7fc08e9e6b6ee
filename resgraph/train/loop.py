"""The training loop: SGD steps, evaluations, metrics and checkpoints, resumable at any step."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from resgraph.errors import Location
from resgraph.train import TrainError, checkpoint, metrics
from resgraph.train.distributed import Context, mean_loss, parameter_spread, sum_over_ranks, wrap
from resgraph.train.loaders import Batches
from resgraph.train.recipe import Recipe
from resgraph.train.schedule import LrSchedule

AMP_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Speed:
    """Options that change speed, not the method: mixed precision, memory layout, compilation."""

    amp: str | None = None
    channels_last: bool = False
    compile: bool = False


class Trainer:
    """Trains one module on one batch source by one recipe; rank 0 writes into `run`.

    With `tensorboard`, rank 0 also writes each metrics record to `run`/tensorboard.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batches: Batches,
        recipe: Recipe,
        total: int,
        schedule: LrSchedule,
        ctx: Context,
        run: Path,
        speed: Speed = Speed(),
        tensorboard: bool = False,
    ) -> None:
        self.batches, self.recipe, self.total = batches, recipe, total
        self.tensorboard = tensorboard
        self.board: metrics.Board | None = None
        self.schedule, self.ctx, self.run, self.speed = schedule, ctx, run, speed
        layout = torch.channels_last if speed.channels_last else torch.preserve_format
        self.model = model.to(ctx.device, memory_format=layout)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=speed.amp == "fp16")
        self.net = wrap(self.model, ctx, recipe.sync_bn)
        if speed.compile:
            self.net = torch.compile(self.net)
        self.iteration = 0
        self.best = math.inf
        self.records = 0
        self.totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss, errors, images
        self.timed_images = 0
        self.clock = time.perf_counter()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.speed.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=AMP_TYPES[self.speed.amp])

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if self.speed.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        epoch, step = divmod(self.iteration, self.batches.steps_per_epoch)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": checkpoint.rng_states(),
            "position": {"iteration": self.iteration, "epoch": epoch, "step": step},
            "totals": self.totals.tolist(),
            "best": self.best,
            "records": self.records,
            "pixel_mean": self.batches.mean.cpu(),  # what `resgraph evaluate` subtracts
        }

    def restore(self, path: Path) -> dict[str, Any]:
        """Continue from the checkpoint `state` wrote to `path`; return it, checked."""
        state = checkpoint.read(path, self.model, tuple(self.batches.mean.shape), self.state())
        where = Location(str(path))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        try:
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise TrainError(f"damaged checkpoint: scaler: {exc}", where) from None
        checkpoint.restore_rng_states(state["rng"], where)
        self.iteration = state["position"]["iteration"]
        self.totals = torch.tensor(state["totals"], dtype=torch.float64, device=self.ctx.device)
        self.best, self.records = state["best"], state["records"]
        return state

    def fit(self) -> dict[str, Any] | None:
        """Train to `total` iterations; return the last metrics record written, if any."""
        bar = tqdm(
            total=self.total,
            initial=self.iteration,
            unit="it",
            dynamic_ncols=True,
            disable=not (self.ctx.main and sys.stderr.isatty()),
        )
        last = None
        if self.tensorboard and self.ctx.main:
            # events after the checkpoint resumed from are hidden, as their records are dropped
            self.board = metrics.Board(self.run, resumed_at=self.iteration)
        self.clock = time.perf_counter()
        try:
            while self.iteration < self.total:
                epoch, start = divmod(self.iteration, self.batches.steps_per_epoch)
                for images, labels in self.batches.train(epoch, start):
                    loss = self._step(images, labels)
                    bar.update()
                    if self.iteration % 10 == 0:
                        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self._lr():.3g}")
                    if self._evaluation_due():
                        last = self._evaluate_and_save()
                    elif (
                        self.recipe.checkpoint_every
                        and self.iteration % self.recipe.checkpoint_every == 0
                    ):
                        self._save("last.pt")
                    if self.iteration >= self.total:
                        break
        finally:
            bar.close()
            if self.board is not None:
                self.board.close()
                self.board = None
        return last

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        lr = self.schedule.lr(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        with self._autocast():
            logits = self.net(self._input(images))
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        value = mean_loss(loss, self.ctx)  # every rank stops together if one diverges
        if not math.isfinite(value):
            raise TrainError(
                f"the loss became {value} at iteration {self.iteration + 1}; stopped, "
                f"and the last good checkpoint ({self.run / 'last.pt'}) is kept; "
                "try a lower lr",
                Location(str(self.run)),
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        errors = (logits.detach().argmax(1) != labels).sum()
        self.totals += torch.stack(
            [
                loss.detach().double() * len(labels),
                errors.double(),
                torch.tensor(len(labels), dtype=torch.float64, device=self.ctx.device),
            ]
        )
        self.timed_images += len(labels)
        return value

    def _evaluation_due(self) -> bool:
        if self.iteration >= self.total:
            return True
        every = self.recipe.eval_every or self.batches.steps_per_epoch
        return self.iteration % every == 0

    @torch.no_grad()
    def held_out_error(self, split: str) -> float:
        """Top-1 error on a held-out split; 10-crop batches average the crops' probabilities."""
        self.model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)
        for images, labels in self.batches.evaluate(split):
            with self._autocast():
                if images.dim() == 5:
                    flat = self.model(self._input(images.flatten(0, 1))).float().softmax(1)
                    scores = flat.view(*images.shape[:2], -1).mean(1)
                else:
                    scores = self.model(self._input(images))
            totals += torch.stack(
                [
                    (scores.argmax(1) != labels).sum().double(),
                    torch.tensor(float(len(labels)), dtype=torch.float64, device=self.ctx.device),
                ]
            )
        errors, count = sum_over_ranks(totals, self.ctx).tolist()
        return errors / max(count, 1)

    def _check_replicas(self) -> None:
        """Stop if the ranks' parameters differ: DistributedDataParallel did not keep them equal."""
        low, high = parameter_spread(self.model, self.ctx)
        if low != high:
            raise TrainError(
                f"the {self.ctx.world} processes' copies of the model differ at iteration "
                f"{self.iteration} (parameter checksums {low!r} to {high!r}): "
                "DistributedDataParallel did not keep them in step; stopped",
                Location(str(self.run)),
            )

    def _evaluate_and_save(self) -> dict[str, Any]:
        if self.ctx.world > 1:
            self._check_replicas()
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        seconds = time.perf_counter() - self.clock
        loss, errors, seen = sum_over_ranks(self.totals.clone(), self.ctx).tolist()
        timed = self.timed_images * self.ctx.world
        record: dict[str, Any] = {
            "epoch": round(self.iteration / self.batches.steps_per_epoch, 3),
            "iteration": self.iteration,
            "train_loss": loss / seen,
            "train_error": errors / seen,
        }
        for split in self.batches.eval_splits:
            record[f"{split}_error"] = self.held_out_error(split)
        record.update(lr=self._lr(), images_per_s=round(timed / seconds, 1))
        held_out = record.get("val_error", record["test_error"])
        self.schedule.observe(record["train_error"], held_out)
        self.totals.zero_()
        self.records += 1
        improved = held_out < self.best
        self.best = min(self.best, held_out)
        if self.ctx.main:
            metrics.append(self.run, record)
            if self.board is not None:
                self.board.write(record)
            if improved:
                self._save("best.pt")
        self._save("last.pt")
        self.timed_images = 0
        self.clock = time.perf_counter()
        return record

    def _save(self, name: str) -> None:
        """Write a checkpoint; if the weights went non-finite, stop and keep the old one."""
        broken = [
            key
            for key, value in self.model.state_dict().items()
            if value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if broken:
            raise TrainError(
                f"the weights became non-finite ({broken[0]}) by iteration "
                f"{self.iteration}; stopped, and the last good checkpoint "
                f"({self.run / 'last.pt'}) is kept; try a lower lr",
                Location(str(self.run)),
            )
        if self.ctx.main:
            checkpoint.save(self.run / name, self.state())
