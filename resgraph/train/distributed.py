"""Running under torchrun: process group setup, DDP wrapping, and summing numbers over ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resgraph.errors import Location
from resgraph.train import TrainError


@dataclass(frozen=True)
class Context:
    """This process's place in the run; rank 0 alone writes files."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0


def _environment_number(name: str, default: str, low: int) -> int:
    """An integer torchrun puts in the environment, refused in one line if it is not one."""
    text = os.environ.get(name, default)
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and int(text) >= low):
        raise TrainError(
            f"expected an integer of {low} or more, not {text[:20]!r}",
            Location(f"environment variable {name}"),
        )
    return int(text)


def setup(device: str) -> Context:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU), if any."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda, but no CUDA GPU is available", Location("--device"))
    world = _environment_number("WORLD_SIZE", "1", 1)
    if world == 1:
        return Context(0, 1, torch.device(device))
    local = _environment_number("LOCAL_RANK", "0", 0)
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    where = torch.device(f"cuda:{local}") if device == "cuda" else torch.device("cpu")
    return Context(dist.get_rank(), world, where)


def wrap(model: torch.nn.Module, ctx: Context, sync_bn: bool) -> torch.nn.Module:
    """The module to train: with SyncBatchNorm and DistributedDataParallel when there are ranks."""
    if ctx.world == 1:
        return model
    if sync_bn:
        if ctx.device.type != "cuda":
            raise TrainError(
                "sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel)",
                Location("recipe sync_bn"),
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sum_over_ranks(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Element-wise sum of a float64 tensor over all ranks (itself when alone)."""
    if ctx.world > 1:
        dist.all_reduce(values)
    return values


def mean_loss(loss: torch.Tensor, ctx: Context) -> float:
    """The loss averaged over ranks (this rank's when alone), non-finite if any rank's is.

    Every rank learns of a divergence at the same step, so none is left waiting in the
    gradient all-reduce for a rank that stopped; one scalar, so it costs little.
    """
    if ctx.world == 1:
        return loss.item()
    total = loss.detach().float().reshape(1).clone()
    dist.all_reduce(total)
    return total.item() / ctx.world


def parameter_spread(model: torch.nn.Module, ctx: Context) -> tuple[float, float]:
    """The lowest and highest float64 checksum of the module's parameters over all ranks.

    DistributedDataParallel keeps every rank's parameters identical, so the two are equal
    unless the replicas drifted apart. Buffers (BN running statistics) are left out: they
    may legitimately differ per rank.
    """
    values = [p.detach().double() for p in model.parameters()]
    sums = torch.stack([v.sum() + v.square().sum() for v in values]).to(ctx.device)
    checksum = (sums * torch.arange(1, len(sums) + 1, dtype=torch.float64, device=ctx.device)).sum()
    both = torch.stack([checksum, -checksum])
    if ctx.world > 1:
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
    high, low = both.tolist()
    return -low, high


def teardown(ctx: Context) -> None:
    """Leave the process group."""
    if ctx.world > 1:
        dist.destroy_process_group()
