"""The trainer end to end, as separate processes: real digits, SIGKILL and resume, torchrun."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from resgraph.backends.pytorch import build_module
from resgraph.cli import main
from resgraph.pipeline import compile_spec

REPO = Path(__file__).resolve().parent.parent
RESNET20 = str(REPO / "specs" / "cifar_resnet20.yaml")
TINY = ["--set", "n=1", "--set", "input.height=8", "--set", "input.width=8"]  # an 8-layer net


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RESGRAPH_DEBUG", None)
    return env


def trainer(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m resgraph ARGS` the way a user would."""
    return subprocess.run(
        [sys.executable, "-m", "resgraph", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        cwd=REPO,
    )


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet-20 at 16x16 trained on the real digits for 4 epochs with the quick recipe."""
    run = tmp_path_factory.mktemp("runs") / "r20"
    done = trainer(
        "train",
        RESNET20,
        "--set",
        "input.height=16",
        "--set",
        "input.width=16",
        "--epochs",
        "4",
        "--out",
        str(run),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{run}: iteration 176, ")
    return run


def test_resnet20_reaches_95_percent_on_real_digits(digits_run: Path) -> None:
    metrics = records(digits_run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert {
            "epoch",
            "iteration",
            "train_loss",
            "train_error",
            "test_error",
            "lr",
            "images_per_s",
        } <= set(m)
    assert metrics[-1]["test_error"] <= 0.05, metrics[-1]


def test_checkpoints_load_into_the_generated_module(digits_run: Path) -> None:
    config = yaml.safe_load((digits_run / "config.yaml").read_text())
    assert config["recipe"]["lr"] == 0.1 and config["spec"]["input"]["height"] == 16
    module = build_module(compile_spec(RESNET20, config["choices"]["overrides"]), num_classes=10)
    for name in ("best.pt", "last.pt"):
        state = torch.load(digits_run / name, weights_only=True)
        module.load_state_dict(state["model"], strict=True)
        assert {"optimizer", "scheduler", "rng", "position"} <= set(state)


def test_plot_and_analyze_write_pngs(digits_run: Path, tmp_path: Path) -> None:
    figure, std = tmp_path / "fig.png", tmp_path / "std.png"
    assert trainer("plot", str(digits_run), str(digits_run), "-o", str(figure)).returncode == 0
    done = trainer("analyze", "responses", str(digits_run), "-o", str(std))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("r20: 19 layers, std mean ")  # 19 3x3 convs in ResNet-20
    for path in (figure, std):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_on_in_memory_data_reproduces_the_test_error(digits_run: Path) -> None:
    output = digits_run / "center.json"
    done = trainer("evaluate", str(digits_run), "--checkpoint", "last", "-o", str(output))
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    assert result["data"] == "digits" and result["images"] == 360
    assert result["top1_error"] == records(digits_run)[-1]["test_error"]


def _train_args(run: Path) -> list[str]:
    return [
        "train",
        RESNET20,
        *TINY,
        "--epochs",
        "2",
        "--set",
        "checkpoint_every=4",
        "--seed",
        "3",
        "--out",
        str(run),
    ]


def test_sigkilled_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(
        [sys.executable, "-m", "resgraph", *_train_args(killed)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (
        not (killed / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    position = torch.load(killed / "last.pt", weights_only=True)["position"]
    assert 0 < position["iteration"] < 88, "the kill must land mid-run"

    resumed = trainer("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    assert trainer(*_train_args(whole)).returncode == 0

    one = torch.load(killed / "last.pt", weights_only=True)
    two = torch.load(whole / "last.pt", weights_only=True)
    assert one["position"] == two["position"] == {"iteration": 88, "epoch": 2, "step": 0}
    for key, value in two["model"].items():
        assert torch.equal(one["model"][key], value), key
    for key, value in two["optimizer"]["state"].items():
        assert torch.equal(
            one["optimizer"]["state"][key]["momentum_buffer"], value["momentum_buffer"]
        )
    strip = [{k: v for k, v in m.items() if k != "images_per_s"} for m in records(whole)]
    assert [{k: v for k, v in m.items() if k != "images_per_s"} for m in records(killed)] == strip


def board_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in RUN/tensorboard, as (step, value) lists, read the way TensorBoard reads."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    return {
        tag: [(event.step, event.value) for event in board.Scalars(tag)]
        for tag in board.Tags()["scalars"]
    }


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_old_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    first = trainer(*_train_args(run)[:-2], "--epochs", "1", "--tensorboard", "--out", str(run))
    assert first.returncode == 0, first.stderr
    again = trainer(*_train_args(run))
    assert again.returncode == 1
    assert (
        again.stderr == f"{run}: this folder already holds a run; continue it with --resume, "
        "or choose another --out (or --force to replace it)\n"
    )
    changed = trainer(*_train_args(run)[:-2], "--set", "lr=0.2", "--resume", str(run))
    assert changed.returncode == 1
    assert changed.stderr.startswith(
        f"{run / 'config.yaml'}: cannot resume with different "
        "settings: config.recipe.lr (0.1 then, 0.2 now)"
    )
    longer = trainer("train", "--resume", str(run), "--epochs", "2")  # still logs to TensorBoard
    assert longer.returncode == 0, longer.stderr
    assert [m["epoch"] for m in records(run)] == [1, 2]
    # the cosine is recomputed over the new length (docs/training.md, Resuming): the last
    # step of epoch 1 had the 44-iteration cosine's lr, the last of epoch 2 the 88-iteration's
    cosine = [0.1 * 0.5 * (1 + math.cos(math.pi * i / n)) for i, n in ((43, 44), (87, 88))]
    assert [m["lr"] for m in records(run)] == pytest.approx(cosine, rel=1e-12)
    # TensorBoard holds what metrics.jsonl holds, as float32 scalars by iteration
    expected = {
        key: [(m["iteration"], float(np.float32(m[key]))) for m in records(run)]
        for key in ("train_loss", "train_error", "test_error", "lr", "images_per_s")
    }
    assert board_scalars(run) == expected

    # nothing left to do: said on stdout, exit 0; a shorter --epochs is refused
    assert main(["train", "--resume", str(run)]) == 0
    assert capsys.readouterr().out == (
        f"{run}: already complete at iteration 88; to train longer, resume with "
        "--epochs M (M >= 3)\n"
    )
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 1
    assert capsys.readouterr().err == (
        f"--epochs: 1 means 44 iterations, but {run} is already at iteration 88; "
        "give 3 or more to train longer\n"
    )
    assert [m["epoch"] for m in records(run)] == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["choices"]["epochs"] == 2


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = trainer(
        "train",
        RESNET20,
        *TINY,
        "--set",
        "lr=1e4",
        "--set",
        "checkpoint_every=1",
        "--data",
        "synthetic:512",
        "--out",
        str(run),
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "the last good checkpoint" in done.stderr and "is kept; try a lower lr" in done.stderr
    state = torch.load(run / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_data_errors_are_one_line(tmp_path: Path) -> None:
    done = trainer("train", RESNET20, "--data", f"cifar10:{tmp_path}", "--out", str(tmp_path / "r"))
    assert (done.returncode, done.stderr) == (
        1,
        f"{tmp_path / 'batches.meta'}: missing CIFAR-10 batch file\n",
    )


def test_bf16_autocast_channels_last_and_compile_run_on_cpu(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = trainer(
        "train",
        RESNET20,
        *TINY,
        "--epochs",
        "2",
        "--amp",
        "bf16",
        "--channels-last",
        "--compile",
        "--data",
        "synthetic:64",
        "--out",
        str(run),
    )
    assert done.returncode == 0, done.stderr
    assert [m["iteration"] for m in records(run)] == [2, 4]
    assert math.isfinite(records(run)[-1]["train_loss"])
    keys = torch.load(run / "last.pt", weights_only=True)["model"]
    assert "conv1.weight" in keys and not any(k.startswith("_orig_mod") for k in keys)


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    done = subprocess.run(
        [
            sys.executable,  # `python -m torch.distributed.run` is the torchrun console script
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            # One elastic restart: a worker once aborted (SIGABRT) at start under heavy load
            # and never again in many runs; a crash after the run began still fails below.
            "--max-restarts=1",
            "-m",
            "resgraph",
            "train",
            RESNET20,
            *TINY,
            "--epochs",
            "2",
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[:3000] + "\n...\n" + done.stderr[-2000:]
    assert done.stdout.count("iteration 88") == 1  # rank 0 alone reports and writes
    metrics = records(run)
    assert [m["iteration"] for m in metrics] == [44, 88]
    assert yaml.safe_load((run / "config.yaml").read_text())["world_size"] == 2
    assert metrics[-1]["test_error"] < 0.9


# Two gloo processes running the real Trainer on a two-weight model, once per scenario;
# argv: rank, rendezvous folder, runs folder. "no-ddp" trains without DistributedDataParallel
# (the mutant the replica check must catch); "nan" makes rank 1's loss non-finite at its
# sixth step, after one evaluation under DDP has passed the replica check. Each scenario
# prints the line it stopped with.
RANKS_SCRIPT = textwrap.dedent(
    """
    import gc
    import sys
    from datetime import timedelta
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from resgraph.train import TrainError, loop
    from resgraph.train.distributed import Context
    from resgraph.train.recipe import load_recipe
    from resgraph.train.schedule import LrSchedule

    rank, stores, runs = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    ddp = loop.wrap


    class Net(torch.nn.Module):
        def __init__(self, poison: bool) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.poison, self.steps = poison, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.steps += self.training
            out = self.fc(x)
            return out * float("inf") if self.poison and self.steps == 6 else out


    class Batches:
        steps_per_epoch, eval_splits, mean = 4, ("test",), torch.zeros(4)

        def train(self, epoch, start):
            rng = torch.Generator().manual_seed(100 * epoch + rank)  # each rank its own data
            for step in range(self.steps_per_epoch):
                batch = torch.randn(8, 4, generator=rng), torch.randint(0, 2, (8,), generator=rng)
                if step >= start:
                    yield batch

        def evaluate(self, split):
            yield torch.ones(8, 4), torch.zeros(8, dtype=torch.long)


    def fit(scenario: str) -> None:
        loop.wrap = (lambda model, ctx, sync_bn: model) if scenario == "no-ddp" else ddp
        recipe = load_recipe("quick")
        torch.manual_seed(0)
        net = Net(poison=scenario == "nan" and rank == 1)
        ctx = Context(rank, 2, torch.device("cpu"))
        run = runs / scenario
        trainer = loop.Trainer(net, Batches(), recipe, 8, LrSchedule(recipe, 8, False), ctx, run)
        try:
            trainer.fit()
            print("finished")
        except TrainError as exc:
            print(exc)


    for scenario in ("no-ddp", "nan"):
        dist.init_process_group(
            "gloo", init_method=f"file://{stores / scenario}", rank=rank, world_size=2,
            timeout=timedelta(seconds=60),
        )
        fit(scenario)
        # the DDP reducer holds the process group: free it before leaving the group, as
        # `resgraph train` does, not during interpreter shutdown (gloo aborts there)
        gc.collect()
        dist.destroy_process_group()
    """
)


def test_every_rank_stops_when_replicas_drift_or_one_rank_diverges(tmp_path: Path) -> None:
    script, stores, runs = tmp_path / "ranks.py", tmp_path / "stores", tmp_path / "runs"
    script.write_text(RANKS_SCRIPT)
    for folder in (stores, runs / "no-ddp", runs / "nan"):
        folder.mkdir(parents=True)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(stores), str(runs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        for rank in (0, 1)
    ]
    for rank, process in enumerate(processes):
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 0, (rank, output)
        drift, nan = output.splitlines()
        assert drift.startswith(
            f"{runs / 'no-ddp'}: the 2 processes' copies of the model differ at iteration 4 "
            "(parameter checksums "
        ), (rank, output)
        assert drift.endswith("DistributedDataParallel did not keep them in step; stopped")
        # rank 0's own loss stayed finite, yet it stops with rank 1 instead of hanging
        assert nan == (
            f"{runs / 'nan'}: the loss became nan at iteration 6; stopped, and the last good "
            f"checkpoint ({runs / 'nan' / 'last.pt'}) is kept; try a lower lr"
        ), (rank, output)
    assert not (runs / "no-ddp" / "metrics.jsonl").exists()  # stopped before writing
    assert [m["iteration"] for m in records(runs / "nan")] == [4]  # the DDP evaluation passed


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `resgraph ARGS` in this process: (exit status, stdout, stderr)."""
    monkeypatch.delenv("RESGRAPH_DEBUG", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_tensorboard_without_the_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    run = tmp_path / "run"
    assert cli("train", RESNET20, *TINY, "--tensorboard", "--out", str(run)) == (
        1,
        "",
        "--tensorboard: needs the tensorboard package: pip install 'resgraph[tensorboard]'\n",
    )
    assert not run.exists()


GOOD_CONFIG = {
    "choices": {
        "spec_file": RESNET20,
        "overrides": [],
        "recipe": "quick",
        "data": "digits",
        "seed": 0,
        "epochs": 1,
    },
    "classes": 10,
    "spec": {},
    "recipe": {"lr": 0.1, "batch_size": 32, "epochs": 1},
}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("choices: [spec_file\n", ":2:1", "damaged config.yaml: YAML syntax error: "),
        ("- a list\n", "", "damaged config.yaml: expected a mapping"),
        (
            yaml.safe_dump({**GOOD_CONFIG, "classes": "ten"}),
            ":8:10",
            "damaged config.yaml: classes: Input should be a valid integer",
        ),
        (
            yaml.safe_dump({**GOOD_CONFIG, "recipe": {"lr": -1, "batch_size": 32, "epochs": 1}}),
            ":12:7",
            "recipe.lr: Input should be greater than 0",
        ),
        (
            yaml.safe_dump({**GOOD_CONFIG, "recipe": {"lr": 0.1, "batch_size": 32}}),
            ":10:3",
            "recipe: give exactly one of epochs and iterations",
        ),
    ],
)
def test_damaged_config_is_one_line_for_resume_analyze_and_evaluate(
    tmp_path: Path, cli, text: str, where: str, message: str
) -> None:
    (tmp_path / "config.yaml").write_text(text)
    for command in (
        ("train", "--resume", str(tmp_path)),
        ("analyze", "responses", str(tmp_path), "-o", str(tmp_path / "std.png")),
        ("evaluate", str(tmp_path)),
    ):
        status, out, err = cli(*command)
        assert (status, out, err.count("\n")) == (1, "", 1), (command, err)
        assert err.startswith(f"{tmp_path / 'config.yaml'}{where}: {message}"), (command, err)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"iteration": 44, "train_error": 0.5}', "1:1: the record has no number 'test_error'"),
        ('{"iteration": 44, "test_error": 0.5}', "1:1: the record has no number 'train_error'"),
        ('{"iteration": 44, "train_e', "1:19: not JSON: Unterminated string starting at"),
        ("[44, 0.5, 0.5]", "1:1: a record must be a JSON object"),
    ],
)
def test_plot_names_a_broken_metrics_record(tmp_path: Path, cli, lines: str, message: str) -> None:
    (tmp_path / "metrics.jsonl").write_text(lines + "\n")
    figure = tmp_path / "fig.png"
    assert cli("plot", str(tmp_path), "-o", str(figure)) == (
        1,
        "",
        f"{tmp_path / 'metrics.jsonl'}:{message}\n",
    )
    assert not figure.exists()
