"""The docs stay true: the generated reference is current, doc specs validate, shown output is real.

- docs/reference.md equals what `resgraph.reference.render()` gives now.
- Every spec under docs/ validates, except deliberate mistakes, whose exact error line must be
  shown in a doc (so a shown message is the one resgraph prints now).
- Every ```console block in docs/*.md is run, in order, in a copy of docs/ and specs/, and
  its output compared with the block (a line `...` stands for any lines).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SPECS, run_cli

from resgraph import reference, spec
from resgraph.cli import build_parser
from resgraph.pipeline import compile_spec

DOCS = REPO / "docs"
REGENERATE = f"docs/reference.md is stale; regenerate it with `{reference.COMMAND}`"
TUTORIAL_MISTAKE = "docs/tutorial/se_resnet20_mistake.yaml"
# modules a console block needs when it mentions them (`--target onnx`, the tutorial's scripts)
OPTIONAL = {
    "onnx": ("onnx",),
    "save_weights.py": ("torch",),
    "compare.py": ("torch", "onnxruntime"),
    "api/example.py": ("torch",),
}


# ---------------------------------------------------------------- the generated reference


def test_reference_is_current() -> None:
    current = (DOCS / "reference.md").read_text(encoding="utf-8")
    assert current == reference.render(), REGENERATE


def test_reference_command_prints_the_reference() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resgraph.reference"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference.render()


def test_reference_covers_every_model_field_and_op() -> None:
    text = reference.render()
    for model in reference._models():
        assert model.__name__ in text
        if model is not spec.Layer:
            for name in model.model_fields:
                assert f"| `{name}` |" in text, (model.__name__, name)
    for op in spec.OPS:
        assert f"### `{op}` (" in text


def test_every_field_is_described() -> None:
    """Descriptions live on the models, so the reference and editors (the schema) show them."""
    for model in reference._models():
        if model is spec.Layer:  # one key per op, each documented under Layers
            continue
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} needs Field(description=...)"


def test_reference_imports_no_torch() -> None:
    code = (
        "import sys, resgraph.reference as r; r.render(); "
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- specs under docs/


def _doc_specs() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in DOCS.rglob("*.yaml"))


def _doc_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))


def test_every_spec_under_docs_validates_or_is_a_shown_mistake() -> None:
    specs = _doc_specs()
    assert TUTORIAL_MISTAKE in specs
    shown = _doc_text()
    result = run_cli("validate", *specs, "--format", "json")
    for entry in json.loads(result.stdout)["specs"]:
        if entry["valid"]:
            continue
        text = entry["error"]["text"]
        assert text in shown, (
            f"{entry['file']} is invalid and no doc shows its error:\n{text}\n"
            "fix the spec, or show this exact message where the doc explains the mistake"
        )


def test_tutorial_shows_the_mistake_as_resgraph_prints_it() -> None:
    result = run_cli("validate", TUTORIAL_MISTAKE)
    assert result.returncode == 1
    printed = result.stderr.strip()
    assert printed.startswith(f"{TUTORIAL_MISTAKE}:")
    tutorial = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    located = re.compile(rf"{re.escape(TUTORIAL_MISTAKE)}:\d+:\d+: ")
    shown = [line for line in tutorial.splitlines() if located.match(line)]
    assert shown == [printed], f"docs/tutorial.md shows {shown}, resgraph prints {printed!r}"


def test_tutorial_spec_and_its_mistake_differ_only_where_the_tutorial_says() -> None:
    good = (DOCS / "tutorial/se_resnet20.yaml").read_text(encoding="utf-8")
    bad = (REPO / TUTORIAL_MISTAKE).read_text(encoding="utf-8")
    tutorial = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    assert f"```yaml\n{good}```" in tutorial  # the file is shown whole
    changed = {line for line in bad.splitlines()} - set(good.splitlines())
    assert any("reduction: 32" in line for line in changed)
    assert all(line.startswith(("name:", "  ", "    params:")) for line in changed), changed


# ---------------------------------------------------------------- numbers and names


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as lists of rows of cells (the |---| rule dropped)."""
    tables: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


@pytest.mark.parametrize("doc", ["reproducing.md", "design-space.md"])
def test_tables_of_params_and_macs_are_what_the_specs_give(doc: str) -> None:
    checked = 0
    for header, *rows in _tables((DOCS / doc).read_text(encoding="utf-8")):
        if "spec" not in header:
            continue
        names = {"params": ("params", "parameters"), "macs": ("MACs",)}
        columns = {
            key: next((i for i, h in enumerate(header) if h in words), None)
            for key, words in names.items()
        }
        for row in rows:
            path = SPECS / (row[header.index("spec")].strip("`").removesuffix(".yaml") + ".yaml")
            if not path.is_file():
                continue
            graph = compile_spec(path).graph
            for key, column in columns.items():
                if column is not None:
                    shown = int(row[column].replace(",", ""))
                    assert shown == graph.graph[key], f"docs/{doc}: {path.name} {key}"
                    checked += 1
    assert checked >= 5


# `test_...` words of the trainer that are not test names: CIFAR's batch file, a metric,
# recipe fields.
NOT_TESTS = {"test_batch", "test_error", "test_size", "test_crops"}


def test_tests_named_in_the_docs_exist() -> None:
    defined = {
        name
        for path in (REPO / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M)
    }
    named = set(re.findall(r"`(test_\w+)`", _doc_text())) - NOT_TESTS
    assert named, "no test names found"
    assert not named - defined, f"docs name tests that do not exist: {sorted(named - defined)}"


def _prose(path: Path) -> str:
    """A doc without its fenced code blocks."""
    kept, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def _anchors(path: Path) -> set[str]:
    return {reference._anchor(m) for m in re.findall(r"^#+ (.+)$", _prose(path), re.M)}


def test_links_between_docs_resolve() -> None:
    for doc in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc)):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file) if file else doc
            assert path.exists(), f"docs/{doc.name}: link to missing {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"docs/{doc.name}: no heading for {target}"


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    """Every subcommand (`analyze responses` too) and its long options."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                command = f"{prefix} {name}".strip()
                found[command] = [
                    option
                    for a in sub._actions
                    for option in a.option_strings
                    if option.startswith("--") and option != "--help"
                ]
                found.update(_commands(sub, command))
    return found


def test_cli_docs_name_every_command_and_option() -> None:
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    also = {
        "compile": DOCS / "onnx.md",
        "train": DOCS / "training.md",
        "evaluate": DOCS / "training.md",
        "plot": DOCS / "training.md",
        "analyze responses": DOCS / "training.md",
    }
    for command, options in _commands(build_parser()).items():
        assert f"resgraph {command}" in cli, f"docs/cli.md does not mention `resgraph {command}`"
        text = cli + (also[command].read_text(encoding="utf-8") if command in also else "")
        for option in options:
            assert option in text, f"docs do not describe `resgraph {command} {option}`"
    for choice in ("text", "json", "github", "sarif"):
        assert f"--format {choice}" in cli or f"|{choice}" in cli


# ---------------------------------------------------------------- console blocks


def _console_blocks(path: Path) -> list[tuple[int, list[str], list[str]]]:
    """(line number, commands, expected output lines) of each ```console block."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```console":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            commands = [line[2:] for line in body if line.startswith("$ ")]
            expected = [
                line
                for k, line in enumerate(body)
                if not line.startswith("$ ")
                # a blank line before the next command only separates commands
                and not (line == "" and k + 1 < len(body) and body[k + 1].startswith("$ "))
            ]
            blocks.append((start, commands, expected))
        i += 1
    return blocks


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; an expected line `...` (indented or not) matches any run of lines."""
    if not expected:
        return not actual
    if expected[0].strip() == "...":
        return any(_matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and _matches(expected[1:], actual[1:])


def _shims(folder: Path) -> dict[str, str]:
    """An environment whose `resgraph` and `python` are this checkout and this interpreter."""
    folder.mkdir()
    for name, run in (("resgraph", f'"{sys.executable}" -m resgraph'), ("python", sys.executable)):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec {run} "$@"\n', encoding="utf-8")
        script.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "80",
        "LC_ALL": "C",  # shell globs sort the same everywhere
    }
    env.pop("RESGRAPH_DEBUG", None)
    return env


DOCS_WITH_CONSOLE = sorted(p.name for p in DOCS.glob("*.md") if _console_blocks(p))


@pytest.mark.skipif(shutil.which("bash") is None, reason="console blocks are bash")
@pytest.mark.parametrize("doc", DOCS_WITH_CONSOLE)
def test_console_blocks_show_real_output(doc: str, tmp_path: Path) -> None:
    work = tmp_path / "repo"
    for folder in ("docs", "specs"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("build"))
    env = _shims(tmp_path / "bin")
    skipped = None
    for line, commands, expected in _console_blocks(DOCS / doc):
        script = "\n".join(commands)
        missing = [
            module
            for word, modules in OPTIONAL.items()
            if word in script
            for module in modules
            if importlib.util.find_spec(module) is None
        ]
        if missing:  # this block and the ones after it, which may depend on its files
            skipped = f"docs/{doc}:{line} and later blocks need {', '.join(missing)}"
            break
        result = subprocess.run(
            ["bash", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=work,
            env=env,
            timeout=600,
            check=False,
        )
        actual = result.stdout.splitlines()
        assert _matches(expected, actual), (
            f"docs/{doc}:{line}: the block's output is not what its commands print now.\n"
            f"--- shown\n" + "\n".join(expected) + "\n--- printed\n" + "\n".join(actual)
        )
    _check_excerpts(doc, work)
    if skipped:
        pytest.skip(skipped)


def _check_excerpts(doc: str, work: Path) -> None:
    """A code block after `<!-- excerpt: FILE -->` must appear verbatim in FILE, once written."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    for match in re.finditer(r"<!-- excerpt: (\S+) -->\n```\w*\n(.*?)```", text, re.DOTALL):
        source = work / match.group(1)
        if source.is_file():
            assert match.group(2) in source.read_text(encoding="utf-8"), (
                f"docs/{doc}: the excerpt of {match.group(1)} is not in the file it quotes"
            )
