"""The resolved IR and the decisions made on it once: templates, instances, folds, in-place.

The three specs of the IR issue validate and once compiled to modules that disagreed with
`summary`, crashed, or computed something else under --fold-bn; here each is checked where
its mechanism lives. (tests/test_differential.py compares every view on random specs.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from resgraph.backends.pytorch import Options, build_module, render_module
from resgraph.errors import SpecError
from resgraph.ops import LANGUAGE, OPS
from resgraph.pipeline import Compiled, compile_spec
from resgraph.spec import Layer
from tests.conftest import SPECS

WriteSpec = Callable[[str], Path]
BLOCK = """
name: probe
input: {{channels: 3, height: 16, width: 16}}
shortcut: {shortcut}
block_types:
  mine:
    stride_on: c0
    projection_from: {source}
    layers:
      - conv: {{name: c0, out: width, kernel: {kernel}}}
{layers}
      - add
      - relu
stem:
  - conv: {{name: conv1, out: 8, kernel: 3}}
block: mine
stages:
  - {{blocks: 2, width: {width}, stride: {stride}}}
head: {{classes: 10}}
"""


def probe(
    write_spec: WriteSpec,
    source: str,
    *,
    layers: str = "      - bn: {name: b0}",
    shortcut: str = "A",
    kernel: int = 1,
    width: int = 16,
    stride: int = 2,
) -> Path:
    text = BLOCK.format(
        shortcut=shortcut, source=source, kernel=kernel, layers=layers, width=width, stride=stride
    )
    return write_spec(text)


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """BN statistics and affine terms away from identity, so a wrong fold shows."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def folded_module(compiled: Compiled, model: torch.nn.Module) -> torch.nn.Module:
    namespace: dict = {}
    exec(compile(render_module(compiled, Options(fold_bn=True)), "<folded>", "exec"), namespace)
    folded = namespace["build_model"]().eval()
    folded.load_state_dict(namespace["fold_batchnorm"](model.state_dict()))
    return folded


def test_a_bn_folds_only_when_nothing_else_reads_its_conv(write_spec: WriteSpec) -> None:
    # foldwrong.yaml: the projection reads c0, so b0 cannot fold into it where it projects
    reads_conv = compile_spec(probe(write_spec, "c0")).network
    assert "layer1.0.b0" not in reads_conv.folds  # the first block projects from c0
    assert reads_conv.folds["layer1.1.b0"] == "layer1.1.c0"  # identity: nothing else reads c0
    # foldname.yaml: the projection reads b0 itself, which folds: c0's output is b0's
    reads_bn = compile_spec(probe(write_spec, "b0", kernel=3, width=8, stride=1)).network
    assert reads_bn.folds["layer1.0.b0"] == "layer1.0.c0"
    resnet = compile_spec(SPECS / "resnet50.yaml").network
    assert len(resnet.folds) == sum(1 for n in resnet.nodes.values() if n.op == "bn") == 53


def test_folded_modules_equal_the_eval_module(write_spec: WriteSpec) -> None:
    for spec in (
        probe(write_spec, "c0"),  # foldwrong.yaml
        probe(write_spec, "b0", kernel=3, width=8, stride=1),  # foldname.yaml
    ):
        compiled = compile_spec(spec)
        model = trained_like(build_module(compiled))
        x = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(folded_module(compiled, model)(x), model(x), atol=1e-5, rtol=0)


def test_blocks_of_one_type_with_different_folds_get_their_own_classes(
    write_spec: WriteSpec,
) -> None:
    compiled = compile_spec(probe(write_spec, "c0"))
    source = render_module(compiled, Options(fold_bn=True))
    assert "class Mine(" in source and "class Mine2(" in source  # b0 kept, b0 folded
    assert source.count("class Mine") == 1 + 1
    assert render_module(compiled).count("class Mine") == 1  # one class when nothing folds


def test_a_projection_reads_the_channels_of_its_source_layer(write_spec: WriteSpec) -> None:
    # crash.yaml: the projection reads conv1 (32 channels), not the block input (16)
    spec = probe(write_spec, "c0", shortcut="B", kernel=3, width=32, stride=2)
    compiled = compile_spec(spec)
    block = compiled.network.blocks["layer1.0"]
    assert (block.in_channels, block.shortcut.in_channels, block.shortcut.stride) == (8, 32, 1)
    model = build_module(compiled)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == compiled.network.params


def test_no_in_place_op_overwrites_what_a_projection_read(write_spec: WriteSpec) -> None:
    layers = "      - relu: {name: r0}\n      - conv: {name: c1, out: width, kernel: 1}"
    compiled = compile_spec(probe(write_spec, "c0", layers=layers, shortcut="B"))
    model = build_module(compiled).train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # in-place r0 would break autograd
    assert model.layer1[0].r0.inplace is False


def test_stride_moved_by_a_stage_is_what_the_docstring_says() -> None:
    source = render_module(compile_spec(SPECS / "resnet50_v1_5.yaml"))
    doc = source.split("class Bottleneck", 1)[1].split("def __init__", 1)[0]
    assert "stride in conv2, a 3x3 conv" in doc and "first 1x1" not in doc
    assert "stride=stride" in source.split("self.conv2 = ", 1)[1].split("self.bn2", 1)[0]


def test_every_language_op_is_one_definition() -> None:
    assert list(Layer.model_fields) == list(LANGUAGE)
    for name, op in OPS.items():
        assert op.name == name
        if op.language is not None:
            assert op.language.model_fields["name"].default is None


def test_validate_refuses_what_the_generated_module_could_not_hold(write_spec: WriteSpec) -> None:
    # a layer named like an nn.Module attribute validated, then failed only at compile
    text = BLOCK.format(
        shortcut="B", source="c0", kernel=3, layers="      - bn: {name: forward}", width=8, stride=1
    )
    with pytest.raises(SpecError, match=r"would shadow torch\.nn\.Module\.forward") as caught:
        compile_spec(write_spec(text))
    assert caught.value.location is not None and caught.value.location.line == 11
