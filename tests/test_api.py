"""resgraph as a library: the registry, SPEC names in the CLI, compile, create_model, torch.hub,
and the one-line messages for missing optional extras."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, SPECS, run_cli

import resgraph
from resgraph.extras import OPTIONAL
from resgraph.pipeline import compile_spec

SHIPPED = sorted(p.stem for p in SPECS.glob("*.yaml"))


# ---------------------------------------------------------------- the registry


def test_list_models_is_every_shipped_spec_and_filters_by_glob() -> None:
    assert resgraph.list_models() == SHIPPED
    assert resgraph.list_models("resnet5*") == ["resnet50", "resnet50_d", "resnet50_v1_5"]
    assert resgraph.list_models("*_v1_5") == [n for n in SHIPPED if n.endswith("_v1_5")]
    assert resgraph.list_models("nothing*") == []


def test_a_shipped_models_name_is_its_files_stem_and_its_name() -> None:
    for name in resgraph.list_models():
        assert compile_spec(name).network.name == name


def test_cli_list_gives_the_published_counts(tmp_path: Path) -> None:
    result = run_cli("list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == SHIPPED
    assert (rows["resnet50"]["params"], rows["resnet50"]["macs"]) == (25_557_032, 3_857_973_248)
    assert rows["cifar_resnet110"]["params"] == 1_727_962
    text = run_cli("list", "resnet15*", cwd=tmp_path).stdout.splitlines()
    assert [line.split() for line in text] == [
        ["name", "params", "GMACs"],
        ["resnet152", "60,192,808", "11.28"],
        ["resnet152_v1_5", "60,192,808", "11.51"],
    ]


def test_cli_show_prints_the_shipped_yaml(tmp_path: Path) -> None:
    result = run_cli("show", "resnet18", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (SPECS / "resnet18.yaml").read_text(encoding="utf-8")


def test_a_shown_spec_copied_elsewhere_still_finds_its_parent(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(run_cli("show", "resnet50_v1_5").stdout, encoding="utf-8")
    result = run_cli("validate", "mine.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "25,557,032 params, 4.09 GMACs" in result.stdout


# ---------------------------------------------------------------- SPEC: a path or a name


def test_every_command_takes_a_shipped_name(tmp_path: Path) -> None:
    result = run_cli("compile", "cifar_resnet20", "-o", "net.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    golden = (REPO / "generated" / "cifar_resnet20.py").read_text(encoding="utf-8")
    assert (tmp_path / "net.py").read_text(encoding="utf-8") == golden
    summary = run_cli("summary", "cifar_resnet", "--set", "n=18", "--json", cwd=tmp_path)
    assert json.loads(summary.stdout)["params"] == 1_727_962
    diff = run_cli("diff", "resnet50", "resnet50_v1_5", "--json", cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    sweep = run_cli("sweep", "cifar_resnet", "--set", "n=3,5", "--format", "csv", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    assert "269722" in sweep.stdout and "464154" in sweep.stdout


def test_an_existing_path_wins_over_a_shipped_name(tmp_path: Path) -> None:
    (tmp_path / "resnet50").write_text(
        (SPECS / "resnet18.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = run_cli("validate", "resnet50", cwd=tmp_path)
    assert result.stdout.startswith("resnet50: ok (resnet18: 11,689,512 params")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "resnt50",
            "resnt50: no spec file or shipped model of this name (did you mean 'resnet50', "
            "'resnet50_d', 'se_resnet50'?); `resgraph list` shows them all",
        ),
        (
            "specs/resnet152.yaml",
            "specs/resnet152.yaml: no such file; 'resnet152' is a shipped model, usable by its "
            "name alone",
        ),
        ("nothing.yaml", "nothing.yaml: no such file"),
    ],
)
def test_an_unknown_spec_is_one_line_with_what_exists(
    spec: str, message: str, tmp_path: Path
) -> None:
    for command in ("compile", "train"):  # train records the spec's absolute path
        result = run_cli(command, spec, cwd=tmp_path)
        assert result.returncode == 1, command
        assert result.stderr.count("\n") == 1 and result.stderr.endswith(message + "\n"), command


# ---------------------------------------------------------------- compile


def test_compile_takes_paths_names_text_and_dicts_alike() -> None:
    text = (SPECS / "cifar_resnet.yaml").read_text(encoding="utf-8")
    sources = [SPECS / "cifar_resnet.yaml", "cifar_resnet", text, yaml.safe_load(text)]
    for source in sources:
        net = resgraph.compile(source, n=18)
        assert (net.name, net.params, net.macs) == ("cifar_resnet", 1_727_962, 252_887_680)
    assert resgraph.compile({"extends": "resnet50.yaml", "name": "mine"}).macs == 3_857_973_248


def test_overrides_as_keywords_mappings_and_set_texts_agree() -> None:
    reference = compile_spec(SPECS / "cifar_resnet.yaml", ["stages.0.blocks=5", "n=7"]).network
    for net in (
        resgraph.compile("cifar_resnet", n=7, stages__0__blocks=5),
        resgraph.compile("cifar_resnet", {"stages.0.blocks": 5, "n": 7}),
        resgraph.compile("cifar_resnet", ["stages.0.blocks=5", "n=7"]),
    ):
        assert (net.params, net.macs) == (reference.params, reference.macs)


def test_the_compiled_network_shows_what_the_cli_shows() -> None:
    net = resgraph.compile("resnet50_v1_5")
    summary = json.loads(run_cli("summary", "resnet50_v1_5", "--json").stdout)
    assert net.layers == summary["layers"]
    assert net.graph.graph["params"] == net.network.params == summary["params"]
    golden = (REPO / "generated" / "resnet50_v1_5.py").read_text(encoding="utf-8")
    assert net.pytorch_source() == golden
    assert repr(net) == "<CompiledNetwork resnet50_v1_5: 25,557,032 params, 4,089,184,256 MACs>"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "extends: cifar_resnet\nname: mine\nbloc: basic\n",
            "<string>:3:1: unknown key 'bloc' in spec (did you mean 'block'?)",
        ),
        (
            {"extends": "cifar_resnet", "stages": [{"blocks": 3, "widht": 16}]},
            "<dict>: unknown key 'widht' in stages.0 (did you mean 'width'?)",
        ),
        ("resnet50", "resnet50.yaml:"),
    ],
)
def test_mistakes_raise_spec_error_with_their_place(source: object, message: str) -> None:
    overrides = {"stages.9.blocks": 1} if source == "resnet50" else None
    with pytest.raises(resgraph.SpecError) as info:
        resgraph.compile(source, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_onnx_in_memory_and_as_a_file(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    net = resgraph.compile("cifar_resnet20")
    model = net.onnx()
    assert [i.name for i in model.graph.input] == ["input"]
    assert net.onnx(tmp_path / "r20.onnx") == tmp_path / "r20.onnx"
    assert onnx.load(tmp_path / "r20.onnx") == model


# ---------------------------------------------------------------- create_model


def _generated(name: str):
    return importlib.import_module(f"generated.{name}")


def test_create_model_is_the_generated_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = resgraph.create_model("cifar_resnet20").eval()
    theirs = _generated("cifar_resnet20").build_model().eval()
    assert type(ours).__name__ == type(theirs).__name__ == "CifarResnet20"
    assert [type(m).__name__ for m in ours.modules()] == [
        type(m).__name__ for m in theirs.modules()
    ]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(ours(x), theirs(x))


def test_create_model_loads_state_dicts_and_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trained = _generated("cifar_resnet20").build_model(num_classes=7).eval()
    torch.save(trained.state_dict(), tmp_path / "sd.pt")
    torch.save({"model": trained.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    x = torch.randn(2, 3, 32, 32)
    for file in ("sd.pt", "ckpt.pt"):
        model = resgraph.create_model("cifar_resnet20", 7, weights=tmp_path / file).eval()
        assert torch.equal(model(x), trained(x)), file
    with pytest.raises(resgraph.SpecError, match=r"sd.pt: weights do not fit the network: wrong "):
        resgraph.create_model("cifar_resnet20", weights=tmp_path / "sd.pt")  # 10 classes


def test_hub_loads_each_shipped_spec(tmp_path: Path) -> None:
    model = torch.hub.load(str(REPO), "cifar_resnet", source="local", n=5, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == 470_004
    assert type(model).__name__ == "CifarResnet"
    hub = importlib.import_module("hubconf")
    assert set(SHIPPED) <= set(dir(hub))
    assert "ResNet-110" in hub.cifar_resnet110.__doc__
    with pytest.raises(ValueError, match="ships no weights"):
        hub.resnet18(pretrained=True)


# ---------------------------------------------------------------- missing optional extras


def _hiding(modules: tuple[str, ...], tmp_path: Path) -> dict[str, str]:
    """An environment where importing `modules` fails, as on a machine that lacks them."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\n", encoding="utf-8"
    )
    return {"PYTHONPATH": f"{site}:{REPO}"}


def _without(modules: tuple[str, ...], tmp_path: Path, *args: str):
    """Run the CLI where importing `modules` fails."""
    return run_cli(*args, cwd=tmp_path, env=_hiding(modules, tmp_path))


@pytest.mark.parametrize(
    ("missing", "args", "message"),
    [
        (("torch",), ("train", "cifar_resnet20"), "resgraph train: needs torch"),
        (("tqdm",), ("train", "cifar_resnet20"), "resgraph train: needs tqdm"),
        (("torch",), ("evaluate", "runs/none"), "resgraph evaluate: needs torch"),
        (("matplotlib",), ("plot", "r", "-o", "f.png"), "resgraph plot: needs matplotlib"),
        (("torch",), ("analyze", "responses", "r", "-o", "f.png"), "resgraph analyze: needs torch"),
    ],
)
def test_commands_name_the_train_extra_they_need(
    missing: tuple[str, ...], args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    result = _without(missing, tmp_path, *args)
    expected = f"{message}, which is not installed: pip install 'resgraph[train]'\n"
    assert (result.returncode, result.stderr, result.stdout) == (1, expected, "")


def test_onnx_names_the_onnx_extra(tmp_path: Path) -> None:
    args = ("compile", "resnet18", "--target", "onnx", "-o", "r.onnx")
    result = _without(("onnx",), tmp_path, *args)
    assert result.returncode == 1
    assert result.stderr == "--target onnx needs the onnx package: pip install 'resgraph[onnx]'\n"


def test_the_api_names_the_extra_a_method_needs(tmp_path: Path) -> None:
    code = (
        "import resgraph\nnet = resgraph.compile('resnet18')\nprint(net.params)\n"
        "for make in (net.to_module, net.onnx):\n"
        "    try:\n        make()\n    except ModuleNotFoundError as exc:\n        print(exc)\n"
    )
    env = {**os.environ, **_hiding(("torch", "onnx"), tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.stdout.splitlines() == [
        "11689512",
        "torch is not installed: pip install 'resgraph[torch]'",
        "onnx is not installed: pip install 'resgraph[onnx]'",
    ], result.stderr


def test_validate_and_compile_run_without_torch(tmp_path: Path) -> None:
    result = _without(("torch", "onnx"), tmp_path, "compile", "resnet18", "-o", "r.py")
    assert result.returncode == 0, result.stderr


def test_optional_modules_are_in_the_extras_pyproject_declares() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    distribution = {"sklearn": "scikit-learn", "PIL": "pillow"}
    for module, extra in OPTIONAL.items():
        names = [re.split(r"[<>=\[; ]", req)[0] for req in extras[extra]]
        assert distribution.get(module, module) in names, (module, extra)
    train = [re.split(r"[<>=\[; ]", req)[0] for req in extras["train"]]
    assert {distribution.get(m, m) for m, e in OPTIONAL.items() if e == "train"} <= set(train)
    assert "resgraph[torch,onnx,train,tensorboard]" in extras["test"]


def test_importing_resgraph_imports_neither_torch_nor_the_front_end() -> None:
    code = "import sys, resgraph; print(sorted({'torch', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr
