"""resgraph as a CI gate for other repositories: the pre-commit hook and the GitHub Action."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, SPECS, run_cli

BROKEN = """\
name: broken
input: {channels: 3, height: 32, width: 32}
stages: []
head: {classes: 10}
"""


def load(name: str) -> Any:
    return yaml.safe_load((REPO / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- pre-commit


def hook() -> dict[str, Any]:
    (only,) = load(".pre-commit-hooks.yaml")
    return only


def test_hook_manifest_has_what_pre_commit_requires() -> None:
    """pre-commit's manifest schema: id, name, entry, language required; files a regex."""
    entry = hook()
    assert entry["id"] == "resgraph-validate"
    assert entry["name"] and entry["entry"]
    assert entry["language"] == "python"  # pre-commit pip-installs this repository
    assert entry["types"] == ["yaml"]
    files = re.compile(entry["files"])
    assert all(files.search(path) for path in ("specs/resnet50.yaml", "specs/x/y.yml"))
    assert not any(files.search(path) for path in ("README.md", "other/resnet50.yaml"))


def hook_command(*files: str) -> subprocess.CompletedProcess[str]:
    """Run the hook's entry as pre-commit does (entry + file names), through this checkout."""
    program, *args = shlex.split(hook()["entry"])
    assert program == "resgraph"
    return run_cli(*args, *files, timeout=120)


def test_hook_passes_on_the_shipped_specs() -> None:
    files = re.compile(hook()["files"])
    specs = [p.relative_to(REPO).as_posix() for p in sorted(SPECS.rglob("*.yaml"))]
    matched = [path for path in specs if files.search(path)]
    assert len(matched) == len(specs)
    result = hook_command(*matched)
    assert result.returncode == 0, result.stderr


def test_hook_fails_on_a_broken_spec(write_spec: Callable[..., Path]) -> None:
    broken = write_spec(BROKEN)
    result = hook_command("specs/resnet18.yaml", str(broken))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{broken}:3:9: stages:"), result.stderr


# ---------------------------------------------------------------- GitHub Action


def action() -> dict[str, Any]:
    return load("action.yml")


def test_action_is_a_composite_action_with_documented_inputs() -> None:
    spec = action()
    assert spec["name"] and spec["description"]
    assert set(spec["inputs"]) == {"specs", "python-version", "resgraph-version"}
    for name, given in spec["inputs"].items():
        assert given["description"], name
        assert isinstance(given.get("default"), str), name  # inputs are strings
    assert spec["runs"]["using"] == "composite"
    for step in spec["runs"]["steps"]:
        assert ("uses" in step) != ("run" in step), step
        if "run" in step:
            assert step["shell"] == "bash", step  # composite run steps must name a shell


def step(name: str) -> dict[str, Any]:
    (found,) = (s for s in action()["runs"]["steps"] if s.get("name") == name)
    return found


def test_action_installs_the_given_version_or_its_own_ref() -> None:
    install = step("Install resgraph")
    assert install["env"] == {"RESGRAPH_VERSION": "${{ inputs.resgraph-version }}"}
    assert '"resgraph==$RESGRAPH_VERSION"' in install["run"]
    assert '"$GITHUB_ACTION_PATH"' in install["run"]


@pytest.fixture
def validate_step(tmp_path: Path) -> Callable[[str, Path], subprocess.CompletedProcess[str]]:
    """Run the action's validate script with bash, its `resgraph` being this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "resgraph"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m resgraph "$@"\n')
    shim.chmod(0o755)
    script = step("Validate specs")["run"]
    assert step("Validate specs")["env"] == {"SPECS": "${{ inputs.specs }}"}

    def run(specs: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "SPECS": specs,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO),
        }
        return subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def test_action_script_expands_globs_and_annotates_errors(
    validate_step: Callable[[str, Path], subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    nested = tmp_path / "repo" / "models" / "deep"
    nested.mkdir(parents=True)
    (nested / "good.yaml").write_text((SPECS / "resnet18.yaml").read_text())
    (nested.parent / "bad spec.yaml").write_text(BROKEN)
    result = validate_step("models/**/*.yaml\nmodels/deep/good.yaml", tmp_path / "repo")
    assert result.returncode == 1
    (annotation,) = result.stdout.splitlines()  # good.yaml twice is still valid, so silent
    assert annotation.startswith("::error file=models/bad spec.yaml,line=3,col=9::stages:")


def test_action_script_passes_valid_specs_and_refuses_empty_globs(
    validate_step: Callable[[str, Path], subprocess.CompletedProcess[str]],
) -> None:
    assert validate_step("specs/resnet*.yaml specs/cifar_resnet20.yaml", REPO).returncode == 0
    result = validate_step("specs/*.yaml nothing/*.yaml", REPO)
    assert result.returncode == 1
    assert result.stdout == "::error::no file matches nothing/*.yaml\n"
