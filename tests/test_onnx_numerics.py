"""onnxruntime (CPU) runs every shipped spec as the torch.nn.functional reference does.

ImageNet specs run at 32x32 (1x1 maps after the last stage) to keep CI fast; the graph
is the same at any size. fp32 must agree to 1e-4. fp16 rounds every weight and activation
to 11 significant bits over up to 1202 layers, so it must agree to 1% of the largest
logit (measured on these specs: at most 0.11%, so 1% leaves a 9x margin).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS
from onnx_reference import FP32_TOLERANCE, reference_logits, run_onnx, trained_like_weights

from resgraph.backends.onnx_export import build_model
from resgraph.backends.onnx_weights import Weights
from resgraph.pipeline import Compiled, compile_spec

SPEC_PATHS = sorted(SPECS.glob("*.yaml"))
SMALL = ["input.height=32", "input.width=32"]
FP16_RELATIVE_TOLERANCE = 1e-2
VARIANTS = {"fp32": {}, "fp32-folded": {"fold_bn": True}, "fp16": {"fp16": True}}


@lru_cache(maxsize=1)
def _case(path: Path) -> tuple[Compiled, Weights, np.ndarray, np.ndarray]:
    """A spec at a small input, weights away from identity, a batch of 2 and the reference."""
    compiled = compile_spec(path)
    if compiled.graph.nodes["input"]["shape"][1] > 32:
        compiled = compile_spec(path, SMALL)
    weights = trained_like_weights(compiled.graph, seed=0)
    shape = (2, *compiled.graph.nodes["input"]["shape"])
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    return compiled, weights, x, reference_logits(compiled.graph, weights, x)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", SPEC_PATHS, ids=[p.stem for p in SPEC_PATHS])
def test_onnxruntime_matches_the_reference(path: Path, variant: str) -> None:
    compiled, weights, x, expected = _case(path)
    model = build_model(compiled, weights, **VARIANTS[variant])
    got = run_onnx(model.SerializeToString(), x)
    assert got.shape == expected.shape
    error = np.abs(got - expected).max()
    if variant == "fp16":
        assert error <= FP16_RELATIVE_TOLERANCE * np.abs(expected).max()
    else:
        assert error <= FP32_TOLERANCE


def test_a_dynamic_batch_runs_any_batch_size() -> None:
    compiled, weights, x, expected = _case(SPECS / "cifar_resnet20.yaml")
    model = build_model(compiled, weights).SerializeToString()
    batch = np.concatenate([x, x, x[:1]])
    np.testing.assert_allclose(run_onnx(model, batch)[:2], expected, atol=FP32_TOLERANCE)
