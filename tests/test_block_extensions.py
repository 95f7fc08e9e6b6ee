"""Pre-activation units, squeeze-and-excitation and head layers, checked against the math."""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from resgraph.backends.pytorch import build_module
from resgraph.pipeline import compile_spec
from tests.conftest import SPECS


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_se_resnet50_matches_the_published_count() -> None:
    compiled = compile_spec(SPECS / "se_resnet50.yaml")
    assert compiled.graph.graph["params"] == 28_088_024
    assert _params(importlib.import_module("generated.se_resnet50").build_model()) == 28_088_024
    # SE adds two 1x1 convs on pooled maps: 2 * C * C/16 MACs per block.
    resnet = compile_spec(SPECS / "resnet50_v1_5.yaml").graph.graph["macs"]
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert compiled.graph.graph["macs"] - resnet == sum(2 * c * (c // 16) for c in widths)


def test_squeeze_excite_gates_channels_by_their_means() -> None:
    compiled = compile_spec(SPECS / "se_resnet50.yaml", ["input.height=64", "input.width=64"])
    se = build_module(compiled).layer1[0].se
    x = torch.randn(2, 256, 5, 5)
    hidden = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), se.fc1.weight, se.fc1.bias))
    gate = torch.sigmoid(F.conv2d(hidden, se.fc2.weight, se.fc2.bias))
    torch.testing.assert_close(se(x), x * gate)
    assert se.fc1.out_channels == 16


def test_preact_block_is_bn_relu_conv_with_a_clean_identity() -> None:
    compiled = compile_spec(SPECS / "cifar_preact_resnet110.yaml", ["n=1"])
    model = build_module(compiled).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    block = model.layer2[0]
    x = torch.randn(2, 16, 8, 8)

    def bn(m: torch.nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, eps=m.eps)

    pre = F.relu(bn(block.bn1, x))
    branch = F.conv2d(
        F.relu(bn(block.bn2, F.conv2d(pre, block.conv1.weight, stride=2, padding=1))),
        block.conv2.weight,
        padding=1,
    )
    shortcut = F.pad(pre[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))
    with torch.no_grad():
        torch.testing.assert_close(block(x), branch + shortcut)
        plain_block = model.layer1[0]
        expected = x + F.conv2d(
            F.relu(
                bn(
                    plain_block.bn2,
                    F.conv2d(F.relu(bn(plain_block.bn1, x)), plain_block.conv1.weight, padding=1),
                )
            ),
            plain_block.conv2.weight,
            padding=1,
        )
        torch.testing.assert_close(plain_block(x), expected)


def test_preact_head_layers_run_before_the_pool() -> None:
    graph = compile_spec(SPECS / "preact_resnet18.yaml").graph
    assert [n for n in graph.predecessors("avgpool")] == ["relu"]
    assert graph.nodes["norm"]["shape"] == (512, 7, 7)
    model = importlib.import_module("generated.preact_resnet18").build_model()
    assert _params(model) == graph.graph["params"]
    # Projections are conv-only and read the pre-activated input.
    assert model.layer2[0].downsample[0].in_channels == 64
    assert len(model.layer2[0].downsample) == 1


def test_projection_from_must_name_a_branch_layer(write_spec) -> None:
    path = write_spec(
        """
name: bad
input: {channels: 3, height: 16, width: 16}
block_types:
  odd:
    stride_on: conv1
    projection_from: nowhere
    layers:
      - conv: {name: conv1, out: width, kernel: 3}
      - add
stages: [{blocks: 1, width: 8, stride: 2}]
head: {classes: 2}
"""
    )
    try:
        compile_spec(path, ["block=odd"])
    except Exception as exc:
        assert type(exc).__name__ == "SpecError"
        assert "projection_from" in str(exc) and str(path) in str(exc)
    else:
        raise AssertionError("accepted a projection_from that names no layer")


def test_user_defined_wide_resnet_example() -> None:
    spec = SPECS / "examples" / "wide_resnet_cifar.yaml"
    compiled = compile_spec(spec)
    assert compiled.graph.graph["params"] == 36_479_194  # WRN-28-10 as published
    small = compile_spec(spec, ["n=2", "k=4"])
    model = build_module(small)
    assert _params(model) == small.graph.graph["params"] == 2_748_890  # WRN-16-4: 2.7M
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
