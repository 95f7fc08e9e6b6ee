"""The PyTorch backend against the torchvision-style reference, and the generated files."""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path

import pytest
import torch

from bench.reference_resnet import reference
from resgraph.backends.pytorch import Options, build_module, render_module
from resgraph.pipeline import compile_spec
from tests.conftest import REPO, SPECS, run_cli

TORCHVISION_SPECS = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnet50_v1_5": "resnet50",
    "resnet101_v1_5": "resnet101",
    "resnet152_v1_5": "resnet152",
}


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine values, so eval mode is a real test."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


FCN_GOLDEN = ["specs/resnet50.yaml"]  # the fully-convolutional form, as the README compiles it


def test_generated_files_are_up_to_date() -> None:
    specs = sorted(str(p.relative_to(REPO)) for p in SPECS.rglob("*.yaml"))  # examples too
    result = run_cli("compile", "--check", *specs)
    assert result.returncode == 0, result.stderr
    fcn = run_cli("compile", "--check", "--head", "fcn", *FCN_GOLDEN)
    assert fcn.returncode == 0, fcn.stderr
    assert sorted(p.stem for p in (REPO / "generated").glob("*.py")) == sorted(
        [compile_spec(REPO / s).spec.name for s in specs]
        + [f"{compile_spec(REPO / s).spec.name}_fcn" for s in FCN_GOLDEN]
    )


@pytest.mark.parametrize("spec,arch", sorted(TORCHVISION_SPECS.items()))
def test_state_dict_matches_torchvision(spec: str, arch: str) -> None:
    module = importlib.import_module(f"generated.{spec}")
    ours = module.build_model().state_dict()
    theirs = reference(arch).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("spec,arch", [("resnet50_v1_5", "resnet50"), ("resnet18", "resnet18")])
def test_same_function_as_torchvision(spec: str, arch: str) -> None:
    theirs = reference(arch).eval()
    _randomise_bn(theirs)
    ours = importlib.import_module(f"generated.{spec}").build_model().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_paper_layout_is_a_different_function_with_the_same_weights() -> None:
    theirs = reference("resnet50").eval()
    paper = importlib.import_module("generated.resnet50").build_model().eval()
    paper.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(paper(x), theirs(x))
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)


def test_length_does_not_grow_with_depth() -> None:
    small = (REPO / "generated/cifar_resnet20.py").read_text().splitlines()
    deep = (REPO / "generated/cifar_resnet1202.py").read_text().splitlines()
    assert len(small) == len(deep)


def test_generated_source_imports_only_torch() -> None:
    for path in (REPO / "generated").glob("*.py"):
        imports = [
            line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))
        ]
        assert imports == [
            "from __future__ import annotations",
            "import torch",
            "from torch import nn",
        ], path


def test_option_a_is_parameter_free_and_pads_zeros() -> None:
    model = build_module(compile_spec(SPECS / "cifar_resnet20.yaml")).eval()
    assert sum(p.numel() for p in model.parameters()) == 269_722
    shortcut = model.layer2[0].downsample
    x = torch.randn(1, 16, 32, 32)
    y = shortcut(x)
    assert y.shape == (1, 32, 16, 16)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_option_a_split_puts_zeros_on_both_sides() -> None:
    compiled = compile_spec(
        SPECS / "cifar_resnet20.yaml", ["shortcut={option: A, zero_pad: split}"]
    )
    y = build_module(compiled).layer2[0].downsample(torch.randn(1, 16, 8, 8))
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0
    assert torch.count_nonzero(y[:, 8:24]) > 0


def test_zero_init_residual_zeroes_the_last_bn_of_each_branch() -> None:
    compiled = compile_spec(SPECS / "resnet50.yaml", ["init.zero_init_residual=true"])
    model = build_module(compiled)
    assert all(
        torch.count_nonzero(b.bn3.weight) == 0
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4)
        for b in stage
    )
    assert torch.count_nonzero(model.layer1[0].bn2.weight) > 0


@pytest.mark.parametrize("spec", ["resnet18.yaml", "cifar_resnet20.yaml", "cifar_plain20.yaml"])
def test_fold_bn_matches_unfolded_in_eval(spec: str) -> None:
    overrides = ["input.height=64", "input.width=64"] if spec.startswith("resnet") else []
    compiled = compile_spec(SPECS / spec, overrides)
    torch.manual_seed(0)
    model = build_module(compiled).eval()
    _randomise_bn(model)
    source = render_module(compiled, Options(fold_bn=True))
    namespace: dict = {}
    exec(compile(source, "<folded>", "exec"), namespace)
    folded = namespace["build_model"]().eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    folded.load_state_dict(namespace["fold_batchnorm"](model.state_dict()), strict=True)
    x = torch.randn(4, 3, compiled.spec.input.height, compiled.spec.input.width)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max().item() <= 1e-4


def test_channels_last_option() -> None:
    compiled = compile_spec(SPECS / "cifar_resnet20.yaml")
    model = build_module(compiled, options=Options(channels_last=True))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_num_classes_replaces_the_head() -> None:
    model = build_module(compile_spec(SPECS / "cifar_resnet20.yaml"), num_classes=7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_torch_compile_and_export() -> None:
    model = build_module(compile_spec(SPECS / "cifar_resnet20.yaml", ["n=1"])).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
        compiled = torch.compile(model, backend="eager")
        torch.testing.assert_close(compiled(x), expected)


def test_generated_module_has_no_resgraph_dependency(tmp_path) -> None:
    result = run_cli("compile", "specs/cifar_resnet20.yaml", "-o", str(tmp_path / "net.py"))
    assert result.returncode == 0, result.stderr
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import net; m = net.build_model(); "
        "assert 'resgraph' not in sys.modules; print(type(m).__name__)"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CifarResnet20"


@pytest.mark.parametrize(
    "spec", sorted(p.relative_to(SPECS).as_posix() for p in SPECS.rglob("*.yaml"))
)
def test_every_generated_module_has_the_cost_pass_parameter_count(spec: str) -> None:
    compiled = compile_spec(SPECS / spec)
    module = importlib.import_module(f"generated.{compiled.spec.name}")
    model = module.build_model()
    assert sum(p.numel() for p in model.parameters()) == compiled.graph.graph["params"]


def test_check_names_the_command_that_rewrites_what_it_checked(tmp_path: Path) -> None:
    args = ["specs/cifar_resnet.yaml", "--out-dir", str(tmp_path), "--fold-bn", "--set", "n=5"]
    stale = run_cli("compile", "--check", *args)
    assert stale.returncode == 1
    command = stale.stderr.strip().split("; run ", 1)[1]
    assert shlex.split(command)[:2] == ["resgraph", "compile"]
    fixed = run_cli(*shlex.split(command)[1:])
    assert fixed.returncode == 0, fixed.stderr
    assert run_cli("compile", "--check", *args).returncode == 0
