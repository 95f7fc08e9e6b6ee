"""Hostile files, paths and values through the real CLI: one line, exit 1 or 2, bounded memory.

Each test builds its hostile input itself. Where memory matters the run is capped with
RLIMIT_AS, so an unbounded read fails the test instead of the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SPECS, run_cli

from resgraph.output import temp_pattern

R20 = str(SPECS / "cifar_resnet20.yaml")
LONG = "n" * 300  # over every common file system's 255-byte name limit
MEMORY_CAP = 2 << 30  # address space for one capped run: far below what an unbounded read takes


def one_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single stderr line of a run that failed as a user's mistake should."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "internal error" not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_capped(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`resgraph ARGS` with its address space capped and a 60 s limit (a FIFO must not hang)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RESGRAPH_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "resgraph", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=60,
        preexec_fn=cap,
    )


# ---------------------------------------------------------------- readers


@pytest.mark.parametrize(
    ("device", "kind"),
    [("/dev/zero", "a character device"), ("/dev/urandom", "a character device")],
)
def test_a_device_is_refused_before_reading(device: str, kind: str) -> None:
    line = one_line(run_capped("validate", device))
    assert line == f"{device}: is {kind}, not a spec file"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "net.yaml"
    os.mkfifo(fifo)
    line = one_line(run_capped("summary", str(fifo)))
    assert line == f"{fifo}: is a named pipe (FIFO), not a spec file"


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "net.yaml"
    link.symlink_to("/dev/zero")
    line = one_line(run_capped("validate", str(link)))
    assert line == f"{link}: is a character device, not a spec file"


def test_extends_a_device_or_fifo_is_located_at_the_key(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    for parent, kind in (("/dev/urandom", "a character device"), ("pipe.yaml", "a named pipe")):
        spec = tmp_path / "child.yaml"
        spec.write_text(f"name: x\nextends: {parent}\n")
        line = one_line(run_capped("validate", str(spec)))
        assert line.startswith(f"{spec}:2:10: extends {parent!r}, but "), line
        assert f"is {kind}" in line


def test_the_size_cap_counts_bytes_read_not_the_reported_size(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# padding\n" * 120_000)  # 1.2 MB of comments: valid YAML, over the cap
    line = one_line(run_capped("validate", str(big)))
    assert line == f"{big}: over 1,048,576 bytes; a spec file is limited to 1,048,576"
    exact = tmp_path / "exact.yaml"  # exactly at the cap is read (and then judged as YAML)
    exact.write_bytes(b"#" * ((1 << 20) - 1) + b"\n")
    line = one_line(run_capped("validate", str(exact)))
    assert line.endswith("the file is empty; a spec is a YAML mapping")


def test_extends_through_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").symlink_to("b.yaml")
    (tmp_path / "b.yaml").symlink_to("a.yaml")
    spec = tmp_path / "s.yaml"
    spec.write_text("extends: a.yaml\nname: x\n")
    line = one_line(run_cli("validate", str(spec), timeout=60))
    loop = "unusable path: Too many levels of symbolic links"
    assert line == f"{spec}:1:10: extends 'a.yaml': {loop}"
    line = one_line(run_cli("validate", str(tmp_path / "a.yaml"), timeout=60))
    assert line == f"{tmp_path / 'a.yaml'}: {loop}"


def test_an_output_folder_that_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    for args in (("--out-dir", "loop"), ("-o", "loop/x.py")):
        line = one_line(run_cli("compile", R20, *args, cwd=tmp_path, timeout=60))
        assert line.endswith("unusable path: Too many levels of symbolic links"), line


def test_extends_a_name_too_long(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: x\nextends: {LONG}.yaml\n")
    line = one_line(run_cli("validate", str(spec), timeout=60))
    assert line == f"{spec}:2:10: extends '{LONG}.yaml': unusable path: a name in it is too long"


@pytest.mark.parametrize(
    ("text", "where", "code"),
    [
        ("name: a\x07b\n", (1, 8), "U+0007"),  # the BEL
        ("name: x\ndescription: 'tab\x00'\n", (2, 18), "U+0000"),  # NUL inside quotes
        ("name: x\n# a comment \x1b[31m red\n", (2, 13), "U+001B"),  # an ANSI escape
        ("name: x\u0085\ufeff\n\x7f: 1\n", (2, 1), "U+007F"),  # NEL and BOM: no new line
    ],
)
def test_control_characters_are_located(
    tmp_path: Path, text: str, where: tuple[int, int], code: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(text.encode("utf-8"))
    line = one_line(run_cli("validate", str(spec), timeout=60))
    message = f"the control character {code} is not allowed in YAML; remove it"
    assert line == f"{spec}:{where[0]}:{where[1]}: {message}"


# ---------------------------------------------------------------- the writer


def test_output_through_a_symlink_replaces_the_target_not_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "net.py"
    target.write_text("old\n")
    link = tmp_path / "net.py"
    link.symlink_to(target)
    dangling = tmp_path / "new.py"
    dangling.symlink_to(tmp_path / "real" / "created.py")
    for out in (link, dangling):
        result = run_cli("compile", R20, "-o", str(out), timeout=60)
        assert result.returncode == 0, result.stderr
        assert out.is_symlink()
    assert target.read_text().startswith('"""') and (tmp_path / "real" / "created.py").is_file()


def test_output_through_a_symlink_to_a_pipe_or_device_is_refused(tmp_path: Path) -> None:
    for name, points_to, kind in (
        ("stdout.py", "/proc/self/fd/1", "a named pipe (FIFO)"),  # run_cli's stdout is a pipe
        ("null.py", "/dev/null", "a character device"),
    ):
        link = tmp_path / name
        link.symlink_to(points_to)
        line = one_line(run_cli("graph", R20, "-o", str(link), timeout=60))
        assert line == f"{link}: is {kind}, not a regular file; give a file name"
        assert link.is_symlink() and os.readlink(link) == points_to


def test_stale_temp_files_are_removed_on_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "net.py"
    killed = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from resgraph.output import write_atomic\n"
        "def chunks():\n"
        "    yield b'half a file'\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"write_atomic(Path({str(out)!r}), chunks())\n"
    )
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", killed], cwd=REPO, timeout=60)
        assert done.returncode == -9
    stale = [p.name for p in tmp_path.iterdir()]  # each write removed the one killed before it
    assert len(stale) == 1 and temp_pattern(r"net\.py").fullmatch(stale[0]), stale
    others = [tmp_path / ".net.py.mine.tmp", tmp_path / ".other.py.abcdefgh.tmp"]
    for other in others:  # not names write_atomic makes for net.py: kept
        other.write_text("keep")
    holder = subprocess.Popen(  # a live writer's temp file: locked, so kept
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / '.net.py.live0000.tmp')!r}, os.O_CREAT | os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        result = run_cli("compile", R20, "-o", str(out), timeout=60)
        assert result.returncode == 0, result.stderr
    finally:
        holder.kill()
        holder.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".net.py.live0000.tmp", ".net.py.mine.tmp", ".other.py.abcdefgh.tmp", "net.py"]


@pytest.mark.parametrize(
    "args",
    [
        ("compile", R20, "-o", LONG + ".py"),
        ("compile", R20, "--out-dir", LONG),
        ("compile", R20, "--out-dir", f"{LONG}/deeper"),
        ("graph", R20, "-o", LONG),
        ("compile", R20, "--target", "onnx", "-o", LONG + ".onnx"),
        ("compile", R20, "--target", "onnx", "--weights", LONG + ".pt", "-o", "x.onnx"),
        ("validate", LONG + ".yaml"),
    ],
)
def test_names_over_the_system_limit_are_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    line = one_line(run_cli(*args, cwd=tmp_path, timeout=120))
    assert "unusable path: a name in it is too long" in line or "cannot write" in line, line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- weights and sizes


def _r20_weights() -> dict[str, object]:
    """A valid state_dict for cifar_resnet20 as torch tensors."""
    import torch

    from resgraph.backends.onnx_weights import he_init
    from resgraph.pipeline import compile_spec

    compiled = compile_spec(R20)
    weights = he_init(compiled.network, seed=0)
    return {k: torch.from_numpy(v.copy()) for k, v in weights.items()}


def test_non_finite_weights_are_refused_by_name(tmp_path: Path) -> None:
    import torch

    state = _r20_weights()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"][3] = float("-inf")
    torch.save(state, tmp_path / "w.pt")
    out = tmp_path / "r20.onnx"
    args = ("compile", R20, "--target", "onnx", "--weights", str(tmp_path / "w.pt"), "-o", str(out))
    line = one_line(run_cli(*args, timeout=120))
    assert line == (
        f"{tmp_path / 'w.pt'}: weights with NaN or infinite values: layer1.0.conv1.weight, fc.bias"
    )
    assert not out.exists()


def test_unsafe_and_old_pickles_are_one_clean_line(tmp_path: Path) -> None:
    import argparse
    import pickle

    import torch

    torch.save({"conv1.weight": argparse.Namespace()}, tmp_path / "object.pt")
    torch.save(  # the legacy (non-zip) format with protocol 4: torch warns, then refuses
        _r20_weights(),
        tmp_path / "legacy.pt",
        _use_new_zipfile_serialization=False,
        pickle_protocol=4,
    )
    with (tmp_path / "plain.pkl").open("wb") as handle:
        pickle.dump({"conv1.weight": [1.0]}, handle, protocol=4)
    os.mkfifo(tmp_path / "pipe.pt")
    expected = {
        "object.pt": "it holds argparse.Namespace, not tensor data; only tensors and containers",
        "legacy.pt": "not a pickle of tensors alone",
        "plain.pkl": "cannot read weights: ",
        "pipe.pt": "is a named pipe (FIFO), not a weights file",
    }
    for name, fragment in expected.items():
        weights = str(tmp_path / name)
        result = run_cli("compile", R20, "--target", "onnx", "--weights", weights, "-o", "x.onnx")
        line = one_line(result)
        assert fragment in line and "\x1b" not in line and "weights_only" not in line, line
        assert "Warning" not in result.stderr


def test_a_valid_spec_too_large_to_allocate_is_refused_first(tmp_path: Path) -> None:
    spec = tmp_path / "huge.yaml"
    spec.write_text(
        "name: huge\ninput: {channels: 3, height: 32, width: 32}\n"
        "stem: [{conv: {out: 65536, kernel: 3}}]\nblock: basic\n"
        "stages: [{blocks: 9, width: 65536}]\nhead: {classes: 10}\n"
    )
    out = tmp_path / "huge.onnx"
    line = one_line(run_capped("compile", str(spec), "--target", "onnx", "-o", str(out)))
    assert line.startswith(f"{spec}: the network has 695,789,486,090 parameters: 2,783.2 GB")
    assert not out.exists()


# ---------------------------------------------------------------- names and numbers

BLOCK = """\
name: net
input: {{channels: 3, height: 8, width: 8}}
block_types:
  mine:
    params: {{{param}: 1}}
    let: {{{let}: width * 1}}
    layers: [{{conv: {{out: width, kernel: 3}}}}, bn, relu, add, relu]
block: mine
stages: [{{blocks: 1, width: 3}}]
head: {{classes: 3}}
"""


@pytest.mark.parametrize(
    ("param", "let", "message"),
    [
        ("__class__", "mid", "'__class__': names starting with '__' are Python's"),
        ("k", "__class__", "'__class__': names starting with '__' are Python's"),
        ("__init__", "mid", "'__init__': names starting with '__' are Python's"),
        ("__k", "mid", "'__k': names starting with '__' are Python's"),  # mangled in a class
        ("max", "mid", "'max' is a Python built-in"),  # the expressions' max() in __init__
        ("k", "isinstance", "'isinstance' is a Python built-in"),
        ("k", "range", "'range' is a Python built-in"),
    ],
)
def test_parameter_names_python_gives_a_meaning_are_refused(
    tmp_path: Path, param: str, let: str, message: str
) -> None:
    spec = tmp_path / "s.yaml"
    text = BLOCK.format(param=param, let=let)
    spec.write_text(text)
    bad = param if message.startswith(f"'{param}'") else let
    line_no = 5 if bad == param else 6
    column = text.splitlines()[line_no - 1].index(bad) + 1
    line = one_line(run_cli("validate", str(spec), timeout=60))
    assert line.startswith(f"{spec}:{line_no}:{column}: "), line
    assert message in line


def test_a_parameter_name_python_leaves_free_still_builds(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BLOCK.format(param="_k", let="projection"))
    out = tmp_path / "net.py"
    assert run_cli("compile", str(spec), "-o", str(out), timeout=60).returncode == 0
    script = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('net', {str(out)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(tuple(module.build_model()(torch.zeros(1, 3, 8, 8)).shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout == "(1, 3)\n", done.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'---16'", "stages[0].width must be at least 1, got -16"),
        ("'²'", "cannot parse expression '²': invalid character '²' (U+00B2)"),
        ("'\uff11\uff16'", "cannot parse expression"),  # fullwidth 16: int() takes it
        ("'٣'", "cannot parse expression '٣'"),
        ("'1" + "0" * 40 + "'", "overflows: values are limited to 1,099,511,627,776"),
    ],
)
def test_integers_are_ascii_decimal_or_expressions(value: str, message: str) -> None:
    line = one_line(run_cli("validate", R20, "--set", f"stages.0.width={value}", timeout=60))
    assert message in line and "int()" not in line, line


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--opset", "1", "argument --opset: choose 11 to "),
        ("--opset", "10000", "argument --opset: choose 11 to "),
        ("--opset", "seventeen", "argument --opset: expected an integer, not 'seventeen'"),
        ("--static-batch", "0", "argument --static-batch: expected 1 or more, not 0"),
        ("--static-batch", "1e20", "argument --static-batch: expected an integer, not '1e20'"),
        ("--static-batch", "9" * 30, "argument --static-batch: expected at most 9,223,"),
        ("--seed", "-3", "argument --seed: expected 0 or more, not -3"),
        ("--seed", "9" * 5000, "argument --seed: expected an integer, not '9999"),
        ("--max-nodes", "²", "argument --max-nodes: expected an integer, not '²'"),
    ],
)
def test_bad_numbers_are_usage_errors(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    out = str(tmp_path / "x.onnx")
    result = run_cli("compile", R20, "--target", "onnx", "-o", out, option, value, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"resgraph compile: error: {message}")
    assert not (tmp_path / "x.onnx").exists()


def test_check_refuses_a_device_as_the_current_module() -> None:
    line = one_line(run_capped("compile", R20, "--check", "-o", "/dev/zero"))
    assert line == "/dev/zero: is a character device, not a generated module"


# ---------------------------------------------------------------- the ONNX pair

ONNX_SPEC = str(SPECS / "cifar_resnet20.yaml")
PAIR_SCRIPT = """\
import os, signal, sys
from pathlib import Path
from resgraph.backends.onnx_export import compile_onnx
from resgraph.pipeline import compile_spec

out, seed, kill_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
steps = {"n": 0}
real_replace, real_unlink = os.replace, Path.unlink

def step():
    steps["n"] += 1
    if steps["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def replace(*args, **kwargs):
    step()
    real_replace(*args, **kwargs)

def unlink(self, *args, **kwargs):
    if self.name.endswith(".data"):
        step()
    real_unlink(self, *args, **kwargs)

os.replace, Path.unlink = replace, unlink
compile_onnx(compile_spec(sys.argv[4]), output=out, seed=seed, external_threshold=0)
print(steps["n"])
"""


def _pair(out: Path, seed: int, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
    """Compile cifar_resnet20 to `out` with external data; SIGKILL itself at step `kill_at`."""
    return subprocess.run(
        [sys.executable, "-c", PAIR_SCRIPT, str(out), str(seed), str(kill_at), ONNX_SPEC],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def _logits(model: Path) -> bytes:
    """What onnxruntime computes from the files on disk, as bytes to compare exactly."""
    import numpy as np
    import onnxruntime as ort

    x = np.linspace(-1, 1, 3 * 32 * 32, dtype=np.float32).reshape(1, 3, 32, 32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0].tobytes()


def test_a_kill_at_any_step_leaves_one_consistent_onnx_pair(tmp_path: Path) -> None:
    out = tmp_path / "r20.onnx"
    done = _pair(out, seed=1)
    assert done.returncode == 0, done.stderr
    steps = int(done.stdout)  # renames and removals of the first write: at least data + model
    assert steps >= 2
    old = _logits(out)
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    assert _pair(new_dir / "r20.onnx", seed=2).returncode == 0
    new = _logits(new_dir / "r20.onnx")
    assert old != new
    for kill_at in range(1, steps + 3):  # every rename and removal of a replacing write
        killed = _pair(out, seed=2, kill_at=kill_at)
        assert killed.returncode in (-9, 0), killed.stderr
        assert _logits(out) in (old, new), f"inconsistent pair after a kill at step {kill_at}"
        if _logits(out) == new:  # put the old pair back for the next kill
            assert _pair(out, seed=1).returncode == 0
    assert _pair(out, seed=2).returncode == 0  # a clean write removes every leftover
    files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert len(files) == 2 and files[0] == "r20.onnx" and files[1].endswith(".data"), files
    assert _logits(out) == new


def test_a_failed_switch_keeps_the_old_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resgraph.backends.onnx_export import compile_onnx
    from resgraph.errors import SpecError
    from resgraph.pipeline import compile_spec

    compiled = compile_spec(ONNX_SPEC)
    out = tmp_path / "r20.onnx"
    compile_onnx(compiled, output=out, seed=1, external_threshold=0)
    before = sorted(tmp_path.iterdir())
    old = _logits(out)
    real_replace = os.replace
    calls = {"n": 0}

    def second_fails(src: str, dst: str) -> None:  # the weights land, the model's rename fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(SpecError, match="cannot write: No space left on device"):
        compile_onnx(compiled, output=out, seed=2, external_threshold=0)
    assert sorted(tmp_path.iterdir()) == before and _logits(out) == old


def test_a_recipe_that_is_a_device_or_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "recipe.yaml")
    for recipe, kind in (("/dev/zero", "a character device"), ("recipe.yaml", "a named pipe")):
        line = one_line(run_capped("train", R20, "--recipe", recipe, cwd=tmp_path))
        assert line.startswith(f"{recipe}: is {kind}"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_a_file_where_a_folder_must_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("mine\n")
    for args in (
        ("graph", R20, "-o", "notes/deeper/g.dot"),
        ("compile", R20, "--out-dir", "notes"),
    ):
        line = one_line(run_cli(*args, cwd=tmp_path, timeout=60))
        assert line.endswith(f"cannot write: {tmp_path / 'notes'} is not a folder"), line
    assert (tmp_path / "notes").read_text() == "mine\n"


def test_newlines_in_names_and_overrides_stay_on_one_line(tmp_path: Path) -> None:
    line = one_line(run_cli("validate", R20, "--set", "n=[1,\n2", timeout=60))
    assert line.startswith(f"{R20}: --set n=[1,\\n2: cannot read value '[1,\\n2': "), line
    line = one_line(run_cli("validate", "two\nlines.yaml", cwd=tmp_path, timeout=60))
    assert line == "two\\nlines.yaml: no such file"
