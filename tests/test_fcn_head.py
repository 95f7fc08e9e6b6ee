"""The fully-convolutional head: same weights, score maps for any input, same 224 output."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from resgraph.backends.pytorch import build_module
from resgraph.errors import SpecError
from resgraph.pipeline import compile_spec
from tests.conftest import SPECS, run_cli

FCN = ["head.kind=fcn", "head.window=7"]


@pytest.mark.parametrize(
    "size,score_map", [(224, (1, 1)), (256, (2, 2)), (384, (6, 6)), (480, (9, 9)), (640, (14, 14))]
)
def test_shape_pass_gives_the_score_map_for_any_input(size: int, score_map: tuple) -> None:
    overrides = [*FCN, f"input.height={size}", f"input.width={size}"]
    graph = compile_spec(SPECS / "resnet50.yaml", overrides).graph
    assert graph.nodes["fc"]["shape"] == (1000, *score_map)
    assert graph.graph["params"] == 25_557_032


def test_window_defaults_to_the_final_map_at_the_spec_input() -> None:
    graph = compile_spec(SPECS / "cifar_resnet20.yaml", ["head.kind=fcn"]).graph
    assert graph.nodes["avgpool"]["attrs"]["kernel"] == 8
    assert graph.nodes["fc"]["shape"] == (10, 1, 1)


def test_a_window_larger_than_the_map_is_a_located_error() -> None:
    with pytest.raises(SpecError, match="kernel 7 is larger than its input"):
        compile_spec(
            SPECS / "cifar_resnet20.yaml",
            ["head.kind=fcn", "head.window=7", "input.height=16", "input.width=16"],
        )


def test_fcn_module_loads_the_same_weights_and_matches_at_224() -> None:
    ordinary = importlib.import_module("generated.resnet18").build_model().double().eval()
    fcn = build_module(compile_spec(SPECS / "resnet18.yaml", FCN)).double().eval()
    fcn.load_state_dict(ordinary.state_dict(), strict=True)
    assert set(fcn.state_dict()) == set(ordinary.state_dict())
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        scores = fcn(x)
        assert scores.shape == (2, 1000, 1, 1)
        assert (scores.flatten(1) - ordinary(x)).abs().max().item() <= 1e-5
        assert fcn(torch.randn(1, 3, 320, 480, dtype=torch.float64)).shape == (1, 1000, 4, 9)


def test_compile_head_fcn_writes_a_separate_file(tmp_path) -> None:
    result = run_cli(
        "compile", "specs/cifar_resnet20.yaml", "--head", "fcn", "--out-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cifar_resnet20_fcn.py").is_file()
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("cifar_resnet20_fcn")
        assert module.build_model()(torch.randn(1, 3, 48, 48)).shape == (1, 10, 5, 5)
    finally:
        sys.path.remove(str(tmp_path))


def test_golden_resnet50_fcn_takes_resnet50_weights_and_scores_any_size() -> None:
    ordinary = importlib.import_module("generated.resnet50").build_model().double().eval()
    fcn = importlib.import_module("generated.resnet50_fcn").build_model().double().eval()
    fcn.load_state_dict(ordinary.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        assert (fcn(x).flatten(1) - ordinary(x)).abs().max().item() <= 1e-5
        assert fcn(torch.randn(1, 3, 256, 320, dtype=torch.float64)).shape == (1, 1000, 2, 4)
