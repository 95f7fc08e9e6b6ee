"""The package as users get it: built into a wheel, installed, used away from the checkout.

Editable installs and PYTHONPATH=checkout both find templates/ and specs/ beside the
sources; only a real wheel proves that they, the block library and the recipes ship inside
the package. One sdist and wheel are built per session, as `python -m build` makes them for
publishing (without build isolation, so nothing is downloaded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SPECS

PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "runs"
)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it, from a copy of the checkout (a build leaves
    build/ and *.egg-info where it runs)."""
    pytest.importorskip("build", reason="the test extra installs build")
    root = tmp_path_factory.mktemp("dists")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=SOURCE_IGNORE)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "-o", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (sdist,) = (root / "dist").glob("resgraph-*.tar.gz")
    (wheel,) = (root / "dist").glob("resgraph-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="session")
def wheel(dists: dict[str, Path]) -> Path:
    return dists["wheel"]


def test_wheel_ships_templates_and_block_library(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"resgraph/templates/module.py.jinja", "resgraph/blocks/library.yaml"} <= names
    assert {"resgraph/py.typed", "resgraph/train/recipes/imagenet-paper.yaml"} <= names
    page = {f"resgraph/templates/{t.name}" for t in (REPO / "templates").glob("*") if t.is_file()}
    assert {"resgraph/html_view/render.py", "resgraph/templates/html_view.js", *page} <= names
    assert {f"resgraph/specs/{p.name}" for p in SPECS.glob("*.yaml")} <= names
    assert not any(
        name.startswith(("templates/", "specs/", "tests/", "generated/")) for name in names
    )


def test_sdist_holds_what_the_wheel_is_built_from(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "templates/module.py.jinja"} <= names
    assert {f"specs/{p.name}" for p in SPECS.glob("*.yaml")} <= names


def test_dists_pass_twine_check(dists: dict[str, Path]) -> None:
    pytest.importorskip("twine", reason="the test extra installs twine")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_fresh_venv_runs_shipped_models_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    """The issue's acceptance: the wheel (not the checkout) in a fresh venv, used elsewhere;
    torch and the light dependencies come from the base environment, nothing is downloaded."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    python, resgraph = venv / "bin" / "python", venv / "bin" / "resgraph"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESGRAPH_DEBUG")}

    def run(*args: str | Path) -> str:
        result = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, cwd=work, env=env, timeout=300
        )
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result.stdout

    listed = run(resgraph, "list").splitlines()
    assert len(listed) == 1 + len(list(SPECS.glob("*.yaml")))
    assert ["resnet152", "60,192,808", "11.28"] in [line.split() for line in listed]
    assert run(resgraph, "compile", "resnet152", "-o", "r.py") == "resnet152 -> r.py\n"
    assert "from resnet152.yaml" in (work / "r.py").read_text(encoding="utf-8")
    run(resgraph, "compile", "resnet50_v1_5", "-o", "r50.py")
    check = textwrap.dedent(
        f"""
        import sys
        import torch
        import resgraph
        assert resgraph.__file__.startswith({str(venv)!r}), resgraph.__file__
        m = resgraph.create_model("resnet50_v1_5").eval()
        sys.path.insert(0, ".")
        import r50
        g = r50.build_model().eval()
        g.load_state_dict(m.state_dict(), strict=True)
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            print(type(m).__name__, torch.equal(m(x), g(x)))
        """
    )
    assert run(python, "-c", check) == "Resnet50V1_5 True\n"


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
assert main(["graph", "cifar_resnet20", "--format", "html", "-o", "net.html"]) == 0
assert 'data-node="layer3.2.conv2"' in Path("net.html").read_text(encoding="utf-8")
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
