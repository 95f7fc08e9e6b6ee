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
