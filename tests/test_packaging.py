"""The package as users get it: built into a wheel, installed, used away from the checkout.

Editable installs and PYTHONPATH=checkout both find templates/ beside the sources; only a
real wheel proves that the templates and the block library ship inside the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SPECS

PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "runs"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (the build leaves build/ where it runs)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=SOURCE_IGNORE)
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = (root / "dist").glob("resgraph-*.whl")
    return built


def test_wheel_ships_templates_and_block_library(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"resgraph/templates/module.py.jinja", "resgraph/blocks/library.yaml"} <= names
    assert not any(name.startswith(("templates/", "tests/", "generated/")) for name in names)


def test_installed_wheel_compiles_and_the_result_imports(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "work"
    work.mkdir()
    code = f"""
import sys
from pathlib import Path
import resgraph
from resgraph.backends.pytorch import templates_folder
from resgraph.cli import main
assert resgraph.__file__.startswith({str(target)!r}), resgraph.__file__
assert templates_folder() == Path(resgraph.__file__).parent / "templates", templates_folder()
assert main(["compile", {str(SPECS / "cifar_resnet20.yaml")!r}, "-o", "net.py"]) == 0
sys.path.insert(0, ".")
import net
print(sum(p.numel() for p in net.build_model().parameters()))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESGRAPH_DEBUG")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=work,
        env={**env, "PYTHONPATH": str(target)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "269722"
