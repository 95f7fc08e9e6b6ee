"""Random command lines for every subcommand: exit 0, 1 or 2, never a traceback or exit 70.

Each example is a real process (forked from tests/cli_fuzz_server.py, which imports resgraph
once) with capped memory and a time limit, run in a folder of prepared files: valid and
broken specs, a tiny trained run, hostile paths (devices, a FIFO, symlink loops, names over
the system's limit). Options and their choices come from the parser itself, so a new
option is fuzzed without editing this file. Valid specs are tiny, so that a valid `train`
finishes in seconds: a timeout is a finding.

CI runs a fixed (derandomized) sample; for a campaign set RESGRAPH_CLI_FUZZ_EXAMPLES=2000
(and RESGRAPH_CLI_FUZZ_SEED for a fresh one): a failure prints the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from resgraph.cli import build_parser

EXAMPLES = int(os.environ.get("RESGRAPH_CLI_FUZZ_EXAMPLES", "60"))
SEED = os.environ.get("RESGRAPH_CLI_FUZZ_SEED")
TIMEOUT = 60.0  # per command line; the cheap inputs below finish in seconds
# Flags whose work is slow by design (torch.compile builds C++), not a user mistake's path.
SKIPPED = {"--compile"}

TINY = """\
name: tiny
input: {channels: 1, height: 8, width: 8}
shortcut: A
stem: [{conv: {out: 4, kernel: 3}}, bn, relu]
block: basic
stages: [{blocks: 1, width: 4}]
head: {classes: 10}
"""


class Server:
    """The fork server: one request, one forked command line."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "cli_fuzz_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, argv: list[str], cwd: Path) -> dict[str, object]:
        """Exit code, stdout and stderr of `resgraph ARGV` run in `cwd`."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"argv": argv, "cwd": str(cwd), "timeout": TIMEOUT}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        """Stop the server (closing its stdin ends its loop)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Path:
    """A folder of inputs, good and hostile, that the command lines name by relative path."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "tiny.yaml").write_text(TINY)
    (root / "thin.yaml").write_text("extends: tiny.yaml\nstages: [{blocks: 2, width: 4}]\n")
    (root / "broken.yaml").write_text("name: x\nstages: [{blocks: 1}]\n")
    (root / "bel.yaml").write_bytes(b"name: a\x07b\n")
    (root / "recipe.yaml").write_text("lr: 0.1\n")
    (root / "folder").mkdir()
    (root / "text.txt").write_text("not yaml: [\n")
    os.mkfifo(root / "fifo.yaml")
    (root / "loop.yaml").symlink_to("loop2.yaml")
    (root / "loop2.yaml").symlink_to("loop.yaml")
    (root / "null.yaml").symlink_to("/dev/null")
    trained = server.run(
        ["train", "tiny.yaml", "--data", "synthetic:64", "--epochs", "1", "--out", "run"], root
    )
    assert trained["code"] == 0, trained
    return root


PATHS = [
    "tiny.yaml",
    "thin.yaml",
    "broken.yaml",
    "bel.yaml",
    "run",
    "run/best.pt",
    "run/config.yaml",
    "run/metrics.jsonl",
    "recipe.yaml",
    "folder",
    "text.txt",
    "fifo.yaml",
    "loop.yaml",
    "null.yaml",
    "/dev/zero",
    "/dev/urandom",
    "missing.yaml",
    "n" * 300,
    "out/" + "n" * 300 + "/x",
    "out/x.py",
    "out/x.onnx",
    "out/x.png",
    "out/x.json",
    "",
    "-",
    "\udcff.yaml",  # an undecodable byte, as Linux hands it to Python
]
NUMBERS = ["0", "1", "2", "-1", "1e20", "9" * 25, "2.5", "nan", "²", "0x10", " 3", "1_0", "8,16"]
SOURCES = [
    "synthetic:64",
    "synthetic:0",
    "synthetic:99999999999",
    "digits",
    "cifar10:folder",
    "imagefolder:folder",
    "cifar10:" + "n" * 300,
    "nope:x",
]
SETS = [
    "n=2",
    "lr=0.05",
    "lr=1e300",
    "stages.0.width='---16'",
    "stages.0.width='²'",
    "input.height=65536",
    "head.classes=0",
    "__class__=1",
    "spec.input.height=16",
    "epochs=1",
    "n=[1, {a: *b}]",
    "=",
    "n",
]
# Arguments as a terminal passes them: any text but NUL, and surrogates only as
# undecodable bytes (PATHS holds one).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


def _commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf subcommand (`analyze responses` included) with its parser."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[words] = parser
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*words, name))

    walk(build_parser(), ())
    return found


COMMANDS = _commands()


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    """A value for `action`: one of its choices or a wrong one, a path, number, override, text."""
    pools = [
        st.sampled_from(PATHS),
        st.sampled_from(NUMBERS),
        st.sampled_from(SETS),
        st.sampled_from(SOURCES),
        TEXT,
    ]
    if action.choices:
        pools.insert(0, st.sampled_from([*map(str, action.choices), "bogus"]))
        pools.insert(0, st.sampled_from(list(map(str, action.choices))))
    return st.one_of(pools)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A subcommand with random positionals and options, some valid, many not."""
    words = draw(st.sampled_from(sorted(COMMANDS)))
    parser = COMMANDS[words]
    options = [
        a
        for a in parser._actions
        if a.option_strings and not set(a.option_strings) & SKIPPED and a.dest != "help"
    ]
    argv = list(words)
    argv += draw(st.lists(st.one_of(st.sampled_from(PATHS), TEXT), max_size=3))
    for action in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            argv.append(draw(_value(action)))
    if draw(st.integers(0, 9)) == 0:  # now and then an option no command has, or --help
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["--nope", "-h"])))
    return argv


def _settings(test: Callable[..., None]) -> Callable[..., None]:
    """Hypothesis settings: a fixed sample in CI, a seeded or fresh one for a campaign."""
    configured = settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None and EXAMPLES <= 60,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )(test)
    return seed(int(SEED))(configured) if SEED else configured


@_settings
@given(argv=command_lines())
def test_random_command_lines_exit_0_1_or_2(server: Server, world: Path, argv: list[str]) -> None:
    result = server.run(argv, world)
    event(f"{argv[0]} exit {result['code']}")  # --hypothesis-show-statistics tallies these
    shown = f"resgraph {' '.join(map(repr, argv))}\n{result['out']}{result['err']}"
    assert not result["timed_out"], f"timed out after {TIMEOUT} s: {shown}"
    assert result["code"] in (0, 1, 2), shown
    output = f"{result['out']}{result['err']}"
    assert "internal error" not in output and "Traceback" not in output, shown


def test_the_fuzzer_reaches_every_subcommand() -> None:
    expected = {"validate", "summary", "graph", "compile", "diff", "sweep", "train"}
    expected |= {"evaluate", "plot", "analyze", "schema", "list", "show", "import"}
    assert {words[0] for words in COMMANDS} == expected
    assert ("analyze", "responses") in COMMANDS


def test_the_fork_server_reports_what_a_process_would(server: Server, world: Path) -> None:
    ok = server.run(["validate", "tiny.yaml"], world)
    assert ok["code"] == 0 and ok["out"].startswith("tiny.yaml: ok (tiny: ")
    usage = server.run(["compile", "tiny.yaml", "--opset", "1"], world)
    assert usage["code"] == 2 and "argument --opset: choose 11 to" in usage["err"]
    refused = server.run(["validate", "/dev/zero"], world)
    assert refused["code"] == 1
    assert refused["err"] == "/dev/zero: is a character device, not a spec file\n"
