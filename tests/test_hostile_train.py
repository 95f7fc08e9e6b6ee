"""Hostile inputs to the trainer's commands: each test builds the file itself, then checks that
resgraph answers with one line and exit 1 or 2, within bounded memory, never exit 70."""

from __future__ import annotations

import io
import math
import pathlib
import pickle
import resource
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from resgraph.cli import main
from tests.conftest import SPECS, run_cli

RESNET20 = str(SPECS / "cifar_resnet20.yaml")
TINY = ["--set", "n=1", "--set", "input.height=8", "--set", "input.width=8"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-layer ResNet at 8x8 trained for one epoch on the digits (last.pt, best.pt)."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    done = run_cli("train", RESNET20, *TINY, "--epochs", "1", "--out", str(run))
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture
def copy_run(tiny_run: Path, tmp_path: Path) -> Callable[[], Path]:
    """A fresh copy of the tiny run to damage."""

    def copy() -> Path:
        target = tmp_path / "run"
        shutil.copytree(tiny_run, target)
        return target

    return copy


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `resgraph ARGS` in this process: (exit status, stdout, stderr); usage errors too."""
    monkeypatch.delenv("RESGRAPH_DEBUG", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return run


def one_line(result: tuple[int, str, str], status: int, text: str) -> None:
    """The command failed with `status` and exactly one stderr line containing `text`."""
    got, _, err = result
    assert got == status, err
    assert err.count("\n") == 1 and text in err, err
    assert "internal error" not in err and "Traceback" not in err


def peak_rss_mb(*args: str, limit_gb: float = 4) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `python -m resgraph ARGS` under an address-space cap; its peak RSS in MB."""

    def cap() -> None:
        size = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(
        [sys.executable, "-m", "resgraph", *args],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        timeout=300,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return done, max(after, before) / 1024


# --------------------------------------------------------------------------- checkpoints


def _damage(run: Path, name: str, change: Callable[[dict[str, Any]], Any]) -> None:
    state = torch.load(run / name, weights_only=True)
    changed = change(state)
    torch.save(state if changed is None else changed, run / name)


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that puts `value` at `path` (dict keys and list indices) in a checkpoint."""

    def change(state: dict[str, Any]) -> None:
        *parents, last = path
        target = state
        for key in parents:
            target = target[key]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: {"model": s["model"]}, "damaged checkpoint: no optimizer, scheduler, scaler"),
        (_set("records", value=-3), "damaged checkpoint: records is out of range"),
        (_set("best", value=math.nan), "damaged checkpoint: best is out of range"),
        (_set("totals", value=[1.0, math.inf, 3.0]), "damaged checkpoint: totals is out of range"),
        (_set("totals", value="3"), "damaged checkpoint: totals is not a list"),
        (
            _set("position", value={"iteration": 4}),
            "damaged checkpoint: position has different entries",
        ),
        (_set("position", "iteration", value=4.5), "position.iteration is float, expected int"),
        (
            _set("scheduler", "scale", value=-1.0),
            "damaged checkpoint: scheduler.scale is out of range",
        ),
        (_set("scheduler", "warming", value=1), "scheduler.warming is int, expected bool"),
        (
            _set("rng", "torch", value=torch.zeros(7, dtype=torch.uint8)),
            "rng.torch is 7, expected 5056",
        ),
        (_set("rng", "numpy", 2, value=100_000), "damaged checkpoint: rng.numpy is out of range"),
        (_set("rng", "python", value=(3, (1 << 40,) * 625, None)), "rng.python is out of range"),
        (_set("rng", "cuda", value=[1, 2]), "rng.cuda is not a list of uint8 tensors"),
        (_set("optimizer", value={"state": {}}), "optimizer is not an SGD state_dict"),
        (
            _set("optimizer", "param_groups", 0, "weight_decay", value=0.5),
            "optimizer weight_decay is 0.5, the recipe's is 0.0005",
        ),
        (
            _set("optimizer", "state", 0, "momentum_buffer", value=torch.zeros(2)),
            "optimizer.state.0 is not a momentum buffer of 16x3x3x3",
        ),
        (
            _set("optimizer", "state", 99, value={"momentum_buffer": None}),
            "an entry 99 for no parameter",
        ),
        (
            _set("pixel_mean", value=torch.full((3, 8, 8), 7.0)),
            "'pixel_mean' is not a mean of [0, 1]",
        ),
        (
            _set("model", "fc.weight", value=torch.zeros(10, 3)),
            "fc.weight is 10x3 float32, this network's",
        ),
        (
            _set("model", "bn1.running_var", value=torch.zeros(16).fill_(math.nan)),
            "in bn1.running_var",
        ),
    ],
)
def test_resume_refuses_a_damaged_last_pt_in_one_line(
    copy_run: Callable[[], Path], cli, change: Callable, message: str
) -> None:
    run = copy_run()
    _damage(run, "last.pt", change)
    result = cli("train", "--resume", str(run))
    one_line(result, 1, message)
    assert result[2].startswith(f"{run / 'last.pt'}: ")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b""), "empty file, not a checkpoint"),
        (
            lambda path: path.write_bytes(b"PK\x03\x04" + bytes(40)),
            "not a checkpoint written by torch.save (not a zip archive)",
        ),
        (
            lambda path: path.write_bytes(pickle.dumps({"model": {}}, protocol=4)),
            "not a checkpoint written by torch.save (not a zip archive)",
        ),
        (
            lambda path: torch.save({"model": {}, "x": pathlib.PurePosixPath("a")}, path),
            "cannot load checkpoint: it refers to pathlib.PurePosixPath, which a checkpoint may",
        ),
        (lambda path: torch.save([1, 2], path), "not a resgraph checkpoint (expected a dict"),
        (
            lambda path: torch.save({"optimizer": {}}, path),
            "not a resgraph checkpoint (no 'model' entry)",
        ),
        (lambda path: path.unlink(), "no checkpoint here"),
    ],
)
def test_evaluate_and_analyze_refuse_what_is_not_a_checkpoint(
    copy_run: Callable[[], Path], cli, write: Callable[[Path], Any], message: str
) -> None:
    run = copy_run()
    write(run / "best.pt")
    for command in (
        ("evaluate", str(run)),
        ("analyze", "responses", str(run), "-o", str(run / "std.png")),
    ):
        status, out, err = cli(*command)
        one_line((status, out, err), 1, f"{run / 'best.pt'}: {message}")
        assert "\x1b" not in err and "weights_only=False" not in err


def test_weights_of_another_network_are_one_line(copy_run: Callable[[], Path], cli) -> None:
    run = copy_run()
    _damage(
        run,
        "best.pt",
        _set("model", value={f"stem.{i}.weight": torch.zeros(1) for i in range(40)}),
    )
    status, _, err = cli("evaluate", str(run))
    one_line((status, "", err), 1, "the weights are not this network's (another run's checkpoint?)")
    assert "40 unexpected (stem.0.weight, stem.1.weight, stem.2.weight and 37 more)" in err


def test_non_finite_weights_and_mean_are_refused_by_name(copy_run: Callable[[], Path], cli) -> None:
    run = copy_run()

    def poison(state: dict[str, Any]) -> None:
        state["model"]["conv1.weight"][0, 0, 0, 0] = math.inf
        state["model"]["fc.bias"][3] = math.nan

    _damage(run, "best.pt", poison)
    one_line(
        cli("evaluate", str(run)), 1, "non-finite weights (NaN or inf) in conv1.weight, fc.bias"
    )
    shutil.copy(run / "last.pt", run / "best.pt")
    _damage(run, "best.pt", _set("pixel_mean", value=torch.full((3, 8, 8), math.nan)))
    one_line(cli("evaluate", str(run)), 1, "'pixel_mean' is not a mean of [0, 1] pixels")


def deflated_checkpoint(source: Path, target: Path, nbytes: int) -> None:
    """A copy of a checkpoint with one more tensor of `nbytes` zeros, deflated in the zip."""
    state = torch.load(source, weights_only=True)
    marker = 70_001  # a numel pickled as a 4-byte int, patched to the big one
    state["padding"] = torch.zeros(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    key = b"J" + marker.to_bytes(4, "little")
    with zipfile.ZipFile(buffer) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            body = old.read(info)
            if info.filename.endswith("data.pkl"):
                body = body.replace(key, b"J" + (nbytes // 4).to_bytes(4, "little"))
            if info.file_size != marker * 4:
                new.writestr(info, body)
                continue
            entry = zipfile.ZipInfo(info.filename)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with new.open(entry, "w", force_zip64=True) as out:
                for _ in range(nbytes >> 24):
                    out.write(bytes(1 << 24))


def test_a_deflated_giant_tensor_is_refused_before_allocating(
    copy_run: Callable[[], Path],
) -> None:
    run = copy_run()
    deflated_checkpoint(run / "best.pt", run / "best.pt", 1 << 30)
    assert (run / "best.pt").stat().st_size < 4 << 20
    done, peak = peak_rss_mb("evaluate", str(run), limit_gb=6)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"{run / 'best.pt'}: declares 1,07")
    assert "bytes of tensors; a checkpoint of this network holds at most" in done.stderr
    assert peak < 700, peak
