"""Hostile specs: no spec string becomes code, and output files are written safely.

Spec text reaches generated source only as a validated identifier or an escaped literal;
these tests try to break that, then import what was generated to prove nothing runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resgraph import output
from resgraph.backends.pytorch import MODULE_ATTRIBUTES, docstring, render_module
from resgraph.errors import SpecError
from resgraph.output import inside, write_atomic
from resgraph.pipeline import compile_spec
from tests.conftest import SPECS, run_cli

BASE: dict[str, Any] = {
    "name": "net",
    "input": {"channels": 3, "height": 16, "width": 16},
    "shortcut": "A",
    "stem": [{"conv": {"name": "conv1", "out": 8, "kernel": 3}}, "bn", "relu"],
    "block": "basic",
    "stages": [{"blocks": 1, "width": 8}, {"blocks": 1, "width": 16, "stride": 2}],
    "head": {"classes": 3},
}

PAYLOADS = [
    '"""\nimport os; os.system("touch PWNED")\n"""',
    '\\"""\nimport os; os.system("touch PWNED")\n#',
    'ends in a quote"',
    "ends in a backslash \\",
    "\u2028import os; os.system('touch PWNED')\u2029",
    "\x0cimport os; os.system('touch PWNED')",
    "\rimport os; os.system('touch PWNED')\r",
    "'''\nimport os; os.system('touch PWNED')\n'''",
]


def spec_text(**changes: Any) -> str:
    """The base spec as YAML, with top-level keys replaced."""
    return yaml.safe_dump({**BASE, **changes}, sort_keys=False)


def import_in_subprocess(folder: Path, module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Import a generated module in a fresh interpreter whose cwd is `folder`."""
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, '.'); import {module}; {code}"],
        capture_output=True,
        text=True,
        cwd=folder,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=120,
    )


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "override",
    [
        "name=x; import os",
        "name=../escape",
        "stages.0.name=__import__",
        "stages.0.name=__hidden",  # Python would mangle it to _Net__hidden in the state_dict
        "stages.0.name=_modules",
        "stem.0.conv.name=forward",
        "stem.0.conv.name=training",
        "head.name=training",
        "head.name=state_dict",
    ],
)
def test_hostile_names_are_rejected(write_spec: Any, tmp_path: Path, override: str) -> None:
    spec = write_spec(spec_text())
    out = tmp_path / "net.py"
    result = run_cli("compile", str(spec), "--set", override, "-o", str(out))
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "internal error" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["forward", "training", "downsample", "_parameters"])
def test_block_layer_names_cannot_shadow_module_attributes(write_spec: Any, name: str) -> None:
    block = {
        "stride_on": "c",
        "layers": [{"conv": {"name": "c", "out": "width", "kernel": 3}}, {"bn": {"name": name}}],
    }
    spec = write_spec(spec_text(block="mine", block_types={"mine": block}))
    with pytest.raises(SpecError, match=name):
        render_module(compile_spec(spec))


def test_reserved_list_covers_every_public_module_attribute() -> None:
    """The backend cannot import torch (compile stays fast), so its list is checked here."""
    module = torch.nn.Module()
    public = {n for n in [*dir(torch.nn.Module), *vars(module)] if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES


# ---------------------------------------------------------------- free text


def test_descriptions_carrying_code_run_nothing(write_spec: Any, tmp_path: Path) -> None:
    block = {
        "stride_on": "conv1",
        "layers": [
            {"conv": {"name": "conv1", "out": "width", "kernel": 3}},
            {"bn": {"name": "bn1"}},
            "add",
            "relu",
        ],
    }
    block_types = {f"b{i}": {**block, "description": p} for i, p in enumerate(PAYLOADS)}
    stages = [{"blocks": 1, "width": 8, "block": f"b{i}"} for i in range(len(PAYLOADS))]
    spec = write_spec(
        spec_text(description=" ".join(PAYLOADS), block_types=block_types, stages=stages)
    )
    folder = tmp_path / "out"
    result = run_cli("compile", str(spec), "-o", str(folder / "hostile.py"))
    assert result.returncode == 0, result.stderr
    code = (
        "import json; print(json.dumps([hostile.__doc__] + "
        f"[getattr(hostile, 'B{{}}'.format(i)).__doc__ for i in range({len(PAYLOADS)})]))"
    )
    ran = import_in_subprocess(folder, "hostile", code)
    assert ran.returncode == 0, ran.stderr
    assert not (folder / "PWNED").exists()
    module_doc, *block_docs = json.loads(ran.stdout)
    assert 'import os; os.system("touch PWNED")' in module_doc
    assert "ends in a backslash \\" in module_doc
    for payload, doc in zip(PAYLOADS, block_docs, strict=True):
        visible = " ".join("".join(c if c.isprintable() else " " for c in payload).split())
        assert " ".join(doc.split()) == visible


def test_file_name_and_overrides_stay_in_the_comment(tmp_path: Path) -> None:
    """The header names the spec file and the --set values: a newline there would be code."""
    folder = tmp_path / "out"
    folder.mkdir()
    hostile = tmp_path / 'x\nimport os; os.system("touch PWNED")\n#.yaml'
    hostile.write_text((SPECS / "cifar_resnet.yaml").read_text(), encoding="utf-8")
    override = 'description=x\nimport os; os.system("touch PWNED")'
    result = run_cli("compile", str(hostile), "--set", override, "-o", str(folder / "net.py"))
    assert result.returncode == 0, result.stderr
    ran = import_in_subprocess(
        folder, "net", "print(net.build_model()(__import__('torch').zeros(1, 3, 32, 32)).shape)"
    )
    assert ran.returncode == 0, ran.stderr
    assert not (folder / "PWNED").exists()
    header = (folder / "net.py").read_text().splitlines()
    assert any(line.startswith("# Generated") and "\\nimport os" in line for line in header)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(st.sampled_from(list("ab- \"'\\#\n\r\t\x0c\x00\u2028\u2029é")), max_size=300),
    indent=st.sampled_from([0, 4]),
)
@example(text="\\" * 120, indent=0)  # a word longer than a line, made of escapes
@example(text="x" * 91 + '"' * 5, indent=4)
def test_docstring_is_one_string_with_the_visible_words(text: str, indent: int) -> None:
    tree = ast.parse(docstring(text, indent))
    assert len(tree.body) == 1
    value = tree.body[0]
    assert isinstance(value, ast.Expr) and isinstance(value.value, ast.Constant)
    visible = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    assert " ".join(value.value.value.split()) == visible


# ---------------------------------------------------------------- output paths


def test_failed_compile_writes_nothing_and_keeps_the_old_file(
    write_spec: Any, tmp_path: Path
) -> None:
    bad = write_spec(spec_text(shortcut="A", stages=[{"blocks": 1, "width": 2}]))
    fresh = tmp_path / "fresh.py"
    result = run_cli("compile", str(bad), "-o", str(fresh))
    assert result.returncode == 1 and "option A" in result.stderr
    assert not fresh.exists()
    existing = tmp_path / "existing.py"
    existing.write_text("keep me\n")
    os.utime(existing, (1_000_000, 1_000_000))
    result = run_cli("compile", str(bad), "-o", str(existing))
    assert result.returncode == 1
    assert existing.read_text() == "keep me\n" and existing.stat().st_mtime == 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.py", "spec.yaml"]


def test_compile_writes_atomically_without_leftovers(write_spec: Any, tmp_path: Path) -> None:
    spec = write_spec(spec_text())
    result = run_cli("compile", str(spec), "--out-dir", str(tmp_path / "gen"))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "gen").iterdir()] == ["net.py"]
    assert (tmp_path / "gen" / "net.py").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_interrupted_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "net.py"
    target.write_text("old\n")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(output.os, "replace", fail)
    with pytest.raises(SpecError, match="cannot write: disk full"):  # one line, not a traceback
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["net.py"]


@pytest.mark.parametrize("name", ["../x.py", "/etc/x.py", "a/../../x.py", "link/x.py"])
def test_inside_refuses_names_escaping_the_folder(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path)
    with pytest.raises(SpecError, match="outside"):
        inside(folder, name)
    assert inside(folder, "net.py") == (folder / "net.py").resolve()


def test_output_option_takes_one_spec(tmp_path: Path) -> None:
    result = run_cli(
        "compile",
        "specs/cifar_resnet20.yaml",
        "specs/cifar_resnet32.yaml",
        "-o",
        str(tmp_path / "x.py"),
    )
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_folder_is_a_user_error(tmp_path: Path) -> None:
    result = run_cli("compile", "specs/cifar_resnet20.yaml", "-o", str(tmp_path))
    assert result.returncode == 1 and "folder" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_special_and_empty_outputs_are_user_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    cases = {
        str(tmp_path / "file.txt" / "net.py"): "cannot write: ",  # a file where a folder must be
        str(fifo): "not a regular file; give a file name",
        "": "an empty output file name",
    }
    (tmp_path / "file.txt").write_text("x")
    for target, message in cases.items():
        result = run_cli("compile", "specs/cifar_resnet20.yaml", "-o", target)
        assert result.returncode == 1, (target, result.stderr)
        assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert fifo.exists() and not fifo.is_file()  # never replaced by a rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "pipe.py"]
