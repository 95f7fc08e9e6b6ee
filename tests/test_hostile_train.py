"""Hostile inputs to the trainer's commands: each test builds the file itself, then checks that
resgraph answers with one line and exit 1 or 2, within bounded memory, never exit 70."""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from resgraph.cli import main
from resgraph.train import TrainError
from resgraph.train import evaluate as ev
from resgraph.train.datasets import MAX_CIFAR_BATCH_BYTES, load_source
from tests.conftest import SPECS, run_cli
from tests.test_train_data import write_cifar

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


# Runs `python -m resgraph ARGS` and, at exit, writes the peak RSS of its own memory image
# (VmHWM in kB). Counters kept across exec (ru_maxrss) also count the forking test process.
PEAK_WRAPPER = """
import atexit, runpy, sys
report = sys.argv.pop(1)
def hwm():
    status = open("/proc/self/status").read()
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    open(report, "w").write(kb)
atexit.register(hwm)
sys.argv[0] = "resgraph"
runpy.run_module("resgraph", run_name="__main__", alter_sys=True)
"""


def peak_rss_mb(*args: str, limit_gb: float = 4) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `python -m resgraph ARGS` under an address-space cap; its peak RSS in MB."""

    def cap() -> None:
        size = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "peak"
        done = subprocess.run(
            [sys.executable, "-c", PEAK_WRAPPER, str(report), *args],
            capture_output=True,
            text=True,
            preexec_fn=cap,
            timeout=300,
        )
        return done, int(report.read_text()) / 1024


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


# --------------------------------------------------------------------------- CIFAR-10 batches


class _Hollow:
    """Pickles as numpy's array reconstruction of `shape`, with `state` (or none) after it."""

    def __init__(self, shape: tuple[int, ...], state: tuple | None = None) -> None:
        self.shape, self.state = shape, state

    def __reduce__(self) -> tuple:
        call = (np._core.multiarray._reconstruct, (np.ndarray, self.shape, b"B"))
        return call if self.state is None else (*call, self.state)


def _cifar_with(folder: Path, batch: Any) -> Path:
    write_cifar(folder)
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch))
    return folder / "data_batch_1"


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (  # no BUILD: numpy would hand back an uninitialised (300000, 3072) array
            {b"data": _Hollow((300_000, 3072)), b"labels": [[0]] * 300_000},
            "b'data' must be a uint8 array of shape (N, 3072)",
        ),
        (
            {
                b"data": _Hollow((0,), (1, (1 << 40, 3072), np.dtype("u1"), False, b"")),
                b"labels": [0],
            },
            "an array declares shape (1099511627776, 3072) (3,377,699,720,527,872 bytes) but "
            "holds 0",
        ),
        (
            {b"data": np.zeros((3, 3072), np.uint8), b"labels": [[0]] * 3},
            "b'labels' must be integers in [0, 10)",
        ),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, True]},
            "b'labels' must be integers in [0, 10)",
        ),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
            "b'labels' must be integers in [0, 10)",
        ),
        (
            {b"data": np.zeros((2, 3072), np.float64).astype(">f8"), b"labels": [0, 1]},
            "a dtype that is not plain little-endian data",
        ),
        (
            {b"data": np.zeros((2, 1536), np.dtype("U2")), b"labels": [0, 1]},
            "an array of dtype 'U2'",
        ),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": [[]] * 10**6},
            None,  # a million references to one list cost pointers only: accepted
        ),
    ],
)
def test_hostile_cifar_batches_are_one_line_and_allocate_nothing_big(
    tmp_path: Path, cli, batch: Any, message: str | None
) -> None:
    path = _cifar_with(tmp_path / "cifar", batch)
    assert path.stat().st_size < 4 << 20
    if message is None:
        data = load_source(f"cifar10:{path.parent}", (3, 32, 32), 10)
        assert data.train.images.shape == (82, 3, 32, 32)
        return
    run = tmp_path / "run"
    result = cli("train", RESNET20, "--data", f"cifar10:{path.parent}", "--out", str(run))
    one_line(result, 1, message)
    assert result[2].startswith(f"{path}: ") and not run.exists()


def test_hollow_cifar_batch_stays_small_in_a_real_process(tmp_path: Path) -> None:
    path = _cifar_with(
        tmp_path / "cifar", {b"data": _Hollow((300_000, 3072)), b"labels": [[0]] * 300_000}
    )
    done, peak = peak_rss_mb(
        "train", RESNET20, "--data", f"cifar10:{path.parent}", "--out", str(tmp_path / "r")
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert peak < 700, peak


def test_cifar_batch_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar")
    with (folder / "test_batch").open("wb") as handle:
        handle.truncate(MAX_CIFAR_BATCH_BYTES + 1)  # sparse: no disk used
    with pytest.raises(TrainError) as caught:
        load_source(f"cifar10:{folder}", (3, 32, 32), 10)
    assert str(caught.value) == (
        f"{folder / 'test_batch'}: {MAX_CIFAR_BATCH_BYTES + 1:,} bytes; a CIFAR-10 batch file "
        f"is limited to {MAX_CIFAR_BATCH_BYTES:,}"
    )


def test_a_fifo_in_place_of_a_batch_does_not_hang(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar")
    (folder / "data_batch_2").unlink()
    os.mkfifo(folder / "data_batch_2")
    with pytest.raises(TrainError, match="not a regular file, so not a CIFAR-10 batch file"):
        load_source(f"cifar10:{folder}", (3, 32, 32), 10)


# --------------------------------------------------------------------------- images


def png_of_zeros(path: Path, width: int, height: int) -> None:
    """A valid grey PNG of zeros, compressed row by row: a few hundred KB for 13000x13000."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def _image_folder(root: Path) -> Path:
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (9 * i, 9, 9)).save(root / split / label / f"{i}.png")
    return root


IMAGE_TRAIN = ["--set", "batch_size=4", "--epochs", "1", *TINY]


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((13_000, 13_000), "13000x13000 image; the trainer decodes at most 50,000,000 pixels"),
        ((20_000, 20_000), "400,000,000-pixel image; the trainer decodes at most 50,000,000"),
        (
            (800_000, 1),
            "800000x1 image resized to a shorter side of 8 has 51,200,000 pixels; the trainer "
            "takes at most 50,000,000",
        ),
    ],
)
def test_image_bombs_are_named_before_decoding(
    tmp_path: Path, size: tuple[int, int], message: str
) -> None:
    root = _image_folder(tmp_path / "images")
    png_of_zeros(root / "train" / "b" / "9.png", *size)
    done, peak = peak_rss_mb(
        "train",
        RESNET20,
        "--data",
        f"imagefolder:{root}",
        *IMAGE_TRAIN,
        "--out",
        str(tmp_path / "r"),
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"{root / 'train' / 'b' / '9.png'}: ")
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert peak < 700, peak


# --------------------------------------------------------------------------- metrics.jsonl

GOOD_RECORD = '{"iteration": 4, "train_error": 0.5, "test_error": 0.5}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_RECORD.replace("4", "7" * 5000), ":1:1: a line over 4,096 bytes"),
        (GOOD_RECORD.replace("4", "7" * 401), ":1:1: not a record: an integer of 401 digits"),
        (GOOD_RECORD + "[" * 100_000 + "]" * 100_000 + "\n", ":2:1: a line over 4,096 bytes"),
        (GOOD_RECORD + "[" * 1500 + "]" * 1500 + "\n", ":2:1: not a record: nested too deeply"),
        (GOOD_RECORD.replace("0.5", "NaN", 1), ":1:1: not a record: NaN is not a finite number"),
        (GOOD_RECORD.replace("0.5", "1e999", 1), ":1:1: not a record: 1e999 is not a finite"),
        (GOOD_RECORD.replace("train", "tr\udcffain"), ":1:21: not UTF-8 text (byte 0xff)"),
        (GOOD_RECORD * 2 + "\x00garbage\n", ":3:1: not JSON: Expecting value"),
    ],
)
def test_plot_reads_metrics_with_bounds_and_places(
    tmp_path: Path, cli, text: str, message: str
) -> None:
    (tmp_path / "metrics.jsonl").write_bytes(text.encode("utf-8", "surrogateescape"))
    figure = tmp_path / "fig.png"
    result = cli("plot", str(tmp_path), "-o", str(figure))
    one_line(result, 1, f"{tmp_path / 'metrics.jsonl'}{message}")
    assert not figure.exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"garbage\n", ":2:1: not JSON: Expecting value"),
        (b'{"iteration": 1, "train_error": "x", "test_error": 0}\n', ":2:1: the record has no"),
        (b'{"iteration": 1, "tr\xe9in_error": 0}\n', ":2:21: not UTF-8 text (byte 0xe9)"),
    ],
)
def test_resume_refuses_a_damaged_record_it_would_keep(
    copy_run: Callable[[], Path], cli, line: bytes, message: str
) -> None:
    run = copy_run()
    path = run / "metrics.jsonl"
    path.write_bytes(GOOD_RECORD.encode() + line)
    _damage(run, "last.pt", _set("records", value=2))
    before = path.read_bytes()
    one_line(cli("train", "--resume", str(run), "--epochs", "2"), 1, f"{path}{message}")
    assert path.read_bytes() == before


def test_resume_drops_damaged_records_after_the_checkpoint(
    copy_run: Callable[[], Path], cli
) -> None:
    run = copy_run()
    path = run / "metrics.jsonl"
    kept = path.read_bytes()
    path.write_bytes(kept + b"\xff garbage a killed run left\n")
    status, out, err = cli("train", "--resume", str(run))
    assert status == 0, err
    assert path.read_bytes() == kept and "already complete" in out


# --------------------------------------------------------------------------- numbers and paths

LONG = "x" * 300


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["train", RESNET20, "--seed", "1e23"], 2, "--seed: expected an integer, not '1e23'"),
        (["train", RESNET20, "--seed", "-1"], 2, "--seed: expected an integer from 0 to"),
        (["train", RESNET20, "--seed", "9" * 30], 2, "not 999999999999... (30 digits)"),
        (["train", RESNET20, "--epochs", "0"], 2, "--epochs: expected an integer from 1"),
        (
            ["train", RESNET20, "--set", "lr=1e300"],
            1,
            "recipe lr: Input should be less than or equal to 1000000",
        ),
        (["train", RESNET20, "--set", "lr=.inf"], 1, "recipe lr: Input should be a finite"),
        (["train", RESNET20, "--set", "augment.pad=99999"], 1, "recipe augment.pad: Input should"),
        (["train", RESNET20, "--set", "augment.pad=40"], 1, "augment.pad 40 is more than the"),
        (["train", RESNET20, "--set", "test_size=10000"], 1, "recipe test_size: Input should"),
        (["train", RESNET20, "--data", "synthetic:99999999999"], 1, "in-memory data is limited"),
        (["train", RESNET20, "--data", "synthetic:²"], 1, "synthetic:N needs a positive number"),
        (
            ["train", RESNET20, "--set", "input.height=65536", "--set", "input.width=65536"],
            1,
            "spec input: the input is 65536x65536; the trainer takes sides up to 4096",
        ),
        (
            ["train", RESNET20, "--set", "input.height=1500", "--set", "input.width=1500"],
            1,
            "--data digits: 1,797 images of 3x1500x1500 take 12,129,750,000 bytes",
        ),
        (["evaluate", "r", "--test-size", "1e24"], 2, "--test-size: expected an integer, not"),
        (["evaluate", "r", "--test-size", "60000"], 2, "from 1 to 4,096, not 60000"),
        (["evaluate", "r", "--scales", "224,60000"], 2, "--scales: expected an integer from 1"),
        (["evaluate", "r", "--batch-size", "0"], 2, "--batch-size: expected an integer from 1"),
        (["evaluate", "r", "--workers", "100000"], 2, "--workers: expected an integer from 0"),
        (["train", RESNET20, "--out", f"/tmp/{LONG}"], 1, f"/tmp/{LONG}: --out: File name too"),
        (["evaluate", f"/tmp/{LONG}"], 1, f"/tmp/{LONG}: RUN: File name too long"),
        (["plot", f"/tmp/{LONG}", "-o", "x.png"], 1, f"/tmp/{LONG}: RUN: File name too long"),
        (["plot", "r", "-o", f"/tmp/{LONG}.png"], 1, f"/tmp/{LONG}.png: -o: File name too long"),
        (
            ["train", RESNET20, "--data", f"cifar10:/tmp/{LONG}"],
            1,
            f"/tmp/{LONG}: --data cifar10:DIR: File name too long",
        ),
        (
            ["analyze", "responses", "r", "-o", f"/tmp/{LONG}.png"],
            1,
            f"/tmp/{LONG}.png: -o: File name too long",
        ),
    ],
)
def test_bad_numbers_and_paths_are_one_line(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, args: list[str], status: int, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "run")] if args[0] == "train" else args
    result = cli(*args)
    got, _, err = result
    assert got == status, err
    assert message in err and "Traceback" not in err and "internal error" not in err, err
    assert err.count("\n") == 1 or status == 2, err  # argparse adds its usage line
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_evaluate_output_over_the_name_limit_is_one_line(tiny_run: Path, cli) -> None:
    one_line(cli("evaluate", str(tiny_run), "-o", f"/tmp/{LONG}"), 1, "-o: File name too long")


def test_seed_in_config_yaml_is_range_checked(copy_run: Callable[[], Path], cli) -> None:
    run = copy_run()
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 100000000000000000000000"))
    result = cli("train", "--resume", str(run))
    one_line(result, 1, "damaged config.yaml: choices.seed: Input should be less than or equal")


@pytest.mark.parametrize(("name", "value"), [("WORLD_SIZE", "abc"), ("LOCAL_RANK", "-1")])
def test_torchrun_environment_numbers_are_checked(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(name, value)
    result = cli("train", RESNET20, "--out", str(tmp_path / "run"))
    one_line(result, 1, f"environment variable {name}: expected an integer of")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_analyze_on_cuda_without_cuda_is_one_line(tiny_run: Path, cli, tmp_path: Path) -> None:
    result = cli(
        "analyze", "responses", str(tiny_run), "-o", str(tmp_path / "s.png"), "--device", "cuda"
    )
    one_line(result, 1, "--device: --device cuda, but no CUDA GPU is available")


# --------------------------------------------------------------------------- run folders


def test_a_folder_of_user_files_is_not_overwritten(tmp_path: Path, cli) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    files = {"config.yaml": b"mine: 1\n", "metrics.jsonl": b"{}\n", "best.pt": b"weights"}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    result = cli("train", RESNET20, *TINY, "--epochs", "1", "--out", str(folder))
    one_line(result, 1, f"{folder}: this folder is not empty (best.pt and 2 more) and holds no run")
    assert {n: (folder / n).read_bytes() for n in files} == files
    status, _, err = cli("train", RESNET20, *TINY, "--epochs", "1", "--out", str(folder), "--force")
    assert status == 0, err
    assert (folder / "best.pt").read_bytes()[:2] == b"PK" and (folder / "last.pt").is_file()


def test_out_naming_a_file_is_one_line(tmp_path: Path, cli) -> None:
    (tmp_path / "f").write_text("x")
    one_line(cli("train", RESNET20, "--out", str(tmp_path / "f")), 1, "is a file, not a folder")


def test_stale_checkpoint_temp_files_are_removed_on_the_next_write(
    copy_run: Callable[[], Path], cli
) -> None:
    run = copy_run()
    stale = [run / ".last.pt.k1ll3d_x.tmp", run / ".best.pt.abcdefgh.tmp"]
    other = run / ".last.pt.notmine.tmp"  # not a name checkpoint.save makes: kept
    for path in [*stale, other]:
        path.write_bytes(b"half a checkpoint")
    status, _, err = cli("train", "--resume", str(run), "--epochs", "2")
    assert status == 0, err
    assert [p.exists() for p in stale] == [False, False] and other.exists()


@pytest.mark.parametrize("with_spec", [False, True])
def test_resume_refuses_changed_values_with_or_without_spec(
    copy_run: Callable[[], Path], cli, with_spec: bool
) -> None:
    run = copy_run()
    spec = [RESNET20] if with_spec else []
    for change, message in (
        ("lr=0.5", "config.recipe.lr (0.1 then, 0.5 now)"),
        ("n=2", "config.spec.params.n (1 then, 2 now)"),
        ("stages=[{blocks: 1, width: 16}]", "config.spec.stages (3 items then, 1 now)"),
    ):
        result = cli("train", *spec, "--resume", str(run), "--set", change)
        one_line(result, 1, f"cannot resume with different settings: {message}")
    status, out, err = cli("train", *spec, "--resume", str(run), "--set", "lr=0.1")
    assert status == 0 and "already complete" in out, err


# --------------------------------------------------------------------------- multiscale, messages


def test_multiscale_defaults_follow_the_run_input(tiny_run: Path, tmp_path: Path, cli) -> None:
    output = tmp_path / "ms.json"
    status, _, err = cli("evaluate", str(tiny_run), "--test", "multiscale", "-o", str(output))
    assert status == 0, err
    result = json.loads(output.read_text())
    assert [s["scale"] for s in result["scales"]] == [8, 9, 14, 17, 23]  # 224..640 x 8/224
    assert result["images"] == 360 and err == ""


def test_multiscale_passes_are_bounded_in_pixels(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ten"
    for split in ("train", "val"):
        for label in range(10):
            (root / split / f"c{label}").mkdir(parents=True)
            Image.new("L", (40, 30), 20 * label).save(root / split / f"c{label}" / "0.png")
    seen: list[tuple[int, ...]] = []
    score_map = ev.score_map

    def spy(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape))
        return score_map(model, images, mean)

    monkeypatch.setattr(ev, "score_map", spy)
    monkeypatch.setattr(ev, "PIXELS_PER_PASS", 1 << 20)
    request = ev.Request(
        tiny_run, data=f"imagefolder:{root}", test="multiscale", scales=(8, 600), workers=0
    )
    result = ev.evaluate(request)
    assert result["images"] == 10 and [s["scale"] for s in result["scales"]] == [8, 600]
    big = [shape for shape in seen if min(shape[2:]) == 600]
    assert sum(shape[0] for shape in big) == 10 and len(big) >= 3  # 600x800 x 10 in parts
    assert max(n * h * w for n, _, h, w in seen) <= 1 << 20


def test_image_folder_runs_print_no_library_warnings(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    palette = Image.new("P", (40, 30), 3)
    palette.info["transparency"] = b"\x00\x01"  # PIL warns when such an image becomes RGB
    palette.save(root / "train" / "a" / "9.png", transparency=b"\x00\x01")
    done = run_cli(
        "train",
        RESNET20,
        "--data",
        f"imagefolder:{root}",
        *IMAGE_TRAIN,
        "--set",
        "workers=64",  # more than the cores: DataLoader would warn at length
        "--out",
        str(tmp_path / "run"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_million_cifar_class_names_are_refused(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 1_000_000}))
    with pytest.raises(TrainError) as caught:
        load_source(f"cifar10:{folder}", (3, 32, 32), 10)
    assert str(caught.value) == (
        f"{folder / 'batches.meta'}: b'label_names' lists 1,000,000 classes; at most 100,000 "
        "are taken"
    )


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_config_yaml_that_is_not_a_file_is_refused_without_reading(
    copy_run: Callable[[], Path], cli, kind: str
) -> None:
    run = copy_run()
    config = run / "config.yaml"
    config.unlink()
    if kind == "device":
        config.symlink_to("/dev/zero")
    else:
        os.mkfifo(config)
    for command in (("evaluate", str(run)), ("train", "--resume", str(run))):
        one_line(cli(*command), 1, f"{config}: not a regular file, so not a config.yaml")
