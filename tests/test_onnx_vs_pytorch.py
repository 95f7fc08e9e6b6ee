"""The two backends agree: onnxruntime on the ONNX file equals the generated PyTorch module.

End to end as a user runs it: weights saved from the generated module with torch.save, then
`resgraph compile --target onnx --weights`, then an onnxruntime session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from resgraph.backends.onnx_export import compile_onnx
from resgraph.backends.pytorch import build_module
from resgraph.pipeline import compile_spec
from tests.conftest import SPECS, run_cli

SMALL = ["input.height=64", "input.width=64"]
CASES = {
    "cifar_resnet20": [],
    "cifar_preact_resnet110": ["n=2"],
    "resnet18": SMALL,
    "se_resnet50": SMALL,
}


def _trained_like(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine values, so eval-mode BN is really exercised."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) * 0.5 + 0.25)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("spec", sorted(CASES))
def test_onnxruntime_equals_the_generated_module(spec: str, tmp_path: Path) -> None:
    overrides = CASES[spec]
    compiled = compile_spec(SPECS / f"{spec}.yaml", overrides)
    torch.manual_seed(1)
    model = build_module(compiled).eval()
    _trained_like(model)
    weights = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, weights)  # a training checkpoint
    sets = [a for o in overrides for a in ("--set", o)]
    x = (
        np.random.default_rng(0)
        .standard_normal((2, *compiled.graph.nodes["input"]["shape"]))
        .astype(np.float32)
    )
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for flags, tolerance in (([], 1e-4), (["--fold-bn"], 1e-4), (["--fp16"], 1e-2)):
        out = tmp_path / f"model{''.join(flags)}.onnx"
        result = run_cli(
            "compile",
            f"specs/{spec}.yaml",
            "--target",
            "onnx",
            "--weights",
            str(weights),
            "-o",
            str(out),
            *sets,
            *flags,
        )
        assert result.returncode == 0, result.stderr
        (logits,) = _session(out).run(["logits"], {"input": x})
        scale = 1.0 if tolerance == 1e-4 else float(np.abs(expected).max())
        assert np.abs(logits - expected).max() <= tolerance * scale, (flags, spec)


def test_pytorch_only_flags_and_onnx_only_flags_are_usage_errors(tmp_path: Path) -> None:
    assert run_cli("compile", "specs/cifar_resnet20.yaml", "--fp16").returncode == 2
    result = run_cli("compile", "specs/cifar_resnet20.yaml", "--target", "onnx", "--check")
    assert result.returncode == 2


def test_default_onnx_output_name(tmp_path: Path) -> None:
    result = run_cli(
        "compile", "specs/cifar_resnet20.yaml", "--target", "onnx", "--out-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cifar_resnet20.onnx").is_file()


def test_fcn_head_onnx_takes_any_image_size(tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / "cifar_resnet20.yaml", ["head.kind=fcn"])
    model = build_module(compiled).eval()
    ordinary = build_module(compile_spec(SPECS / "cifar_resnet20.yaml"))
    model.load_state_dict(ordinary.state_dict())
    weights = tmp_path / "fcn.pt"
    torch.save(ordinary.state_dict(), weights)  # fc.weight is 2-D, as trained
    out = tmp_path / "fcn.onnx"
    result = run_cli(
        "compile",
        "specs/cifar_resnet20.yaml",
        "--head",
        "fcn",
        "--target",
        "onnx",
        "--weights",
        str(weights),
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 48)).astype(np.float32)
    (scores,) = _session(out).run(["logits"], {"input": x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert scores.shape == expected.shape == (1, 10, 9, 5)  # maps 16x12, window 8
    assert np.abs(scores - expected).max() <= 1e-4


def _calibrate(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Running BN statistics measured on `x`, so activations stay in a trained network's range
    even 1,202 layers deep (made-up statistics give logits of 1e15 there).

    Variances are floored at 0.5, as in `_trained_like`: a channel that is nearly constant on
    eight random images is scaled up ~300x by its BN, and through plain-56 that amplifies
    float32 rounding until PyTorch itself is 2e-4 away from a float64 evaluation (onnxruntime
    is as far); the comparison would then measure float32, not the backends.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batch
    with torch.no_grad():
        model.train()(x)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.clamp_(min=0.5)
    model.eval()


def _small(spec: Path) -> list[str]:
    """Overrides that keep a shipped spec quick in CI: ImageNet nets at 64x64."""
    return SMALL if compile_spec(spec).spec.input.height > 64 else []


@pytest.mark.parametrize(
    "spec", sorted(p.relative_to(SPECS).as_posix() for p in SPECS.rglob("*.yaml"))
)
def test_every_shipped_spec_runs_the_same_in_onnxruntime(spec: str, tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / spec, _small(SPECS / spec))
    torch.manual_seed(2)
    model = build_module(compiled)
    _trained_like(model)
    x = np.random.default_rng(1).standard_normal((8, *compiled.graph.nodes["input"]["shape"]))
    x = x.astype(np.float32)
    _calibrate(model, torch.from_numpy(x))
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for fold_bn in (False, True):
        out = tmp_path / f"model{fold_bn}.onnx"
        compile_onnx(compiled, output=out, weights=weights, fold_bn=fold_bn)
        (logits,) = _session(out).run(["logits"], {"input": x})
        assert np.abs(logits - expected).max() <= 1e-4, (fold_bn, np.abs(expected).max())
