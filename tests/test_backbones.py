"""Backbones: dilation and output stride against a torchvision-style reference written here.

The reference follows torchvision.models.resnet's code for `replace_stride_with_dilation`
(torchvision cannot be installed beside the CPU torch here): in a dilated stage the stride
becomes 1 and the running dilation is multiplied by it; the stage's first block keeps the
previous dilation in its 3x3 conv (padding = dilation), later blocks take the new one; the
projection is a 1x1 conv with stride 1.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from resgraph.backends.pytorch import build_module
from resgraph.errors import SpecError
from resgraph.passes.memory import memory
from resgraph.passes.receptive_field import receptive_fields
from resgraph.pipeline import compile_spec
from tests.conftest import SPECS


class RefBottleneck(nn.Module):
    """torchvision's Bottleneck: stride and dilation in the 3x3 conv."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class RefResNet50(nn.Module):
    """torchvision's ResNet with Bottleneck, [3, 4, 6, 3], replace_stride_with_dilation."""

    def __init__(self, replace_stride_with_dilation: list[bool]) -> None:
        super().__init__()
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        dilate = replace_stride_with_dilation
        self.layer2 = self._make_layer(128, 4, stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(256, 6, stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(512, 3, stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1000)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [RefBottleneck(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * 4
        for _ in range(1, blocks):
            layers.append(RefBottleneck(self.inplanes, planes, dilation=self.dilation))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def intermediate_layers(model: nn.Module, x: torch.Tensor, names: list[str]) -> OrderedDict:
    """IntermediateLayerGetter's result: the named children's outputs, in order."""
    out = OrderedDict()
    for name, child in model.named_children():
        if name == "avgpool":
            break
        x = child(x)
        if name in names:
            out[name] = x
    return out


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine values, so eval mode is a real test."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


STAGES = ["layer1", "layer2", "layer3", "layer4"]
SMALL = ["input.height=64", "input.width=64"]
DILATE = {8: [False, True, True], 16: [False, False, True]}


def _reference(output_stride: int) -> nn.Module:
    torch.manual_seed(0)
    ref = RefResNet50(DILATE[output_stride]).eval()
    randomise_bn(ref)
    return ref


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_is_torchvision_replace_stride_with_dilation(output_stride: int) -> None:
    ref = _reference(output_stride)
    compiled = compile_spec(
        SPECS / "resnet50_v1_5.yaml", [f"output_stride={output_stride}", *SMALL]
    )
    ours = build_module(compiled).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = intermediate_layers(ref, x, STAGES)
        got = intermediate_layers(ours, x, STAGES)
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-4)
    for name in STAGES:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-4)
    # the IR's shapes are the module's
    for name in STAGES:
        last = compiled.network.stages[STAGES.index(name)].blocks[-1]
        node = compiled.network.blocks[last].nodes[-1]
        assert compiled.network.nodes[node].shape == tuple(got[name].shape[1:])


@pytest.mark.parametrize("output_stride,sizes", [(8, [56, 28, 28, 28]), (16, [56, 28, 14, 14])])
def test_output_stride_maps_at_224(output_stride: int, sizes: list[int]) -> None:
    net = compile_spec(SPECS / "resnet50_v1_5.yaml", [f"output_stride={output_stride}"]).network
    for stage, size in zip(net.stages, sizes, strict=True):
        node = net.nodes[net.blocks[stage.blocks[-1]].nodes[-1]]
        assert node.shape[1:] == (size, size), stage.name
    plain = compile_spec(SPECS / "resnet50_v1_5.yaml").network
    assert net.params == plain.params  # dilation adds no weights


def test_output_stride_32_changes_nothing() -> None:
    a = compile_spec(SPECS / "resnet50_v1_5.yaml", ["output_stride=32"]).network
    b = compile_spec(SPECS / "resnet50_v1_5.yaml").network
    assert [n.shape for n in a.nodes.values()] == [n.shape for n in b.nodes.values()]
    assert a.macs == b.macs


def test_output_stride_the_strides_never_reach_is_an_error() -> None:
    with pytest.raises(SpecError, match="output_stride 8: the stem and stage strides reach 4"):
        compile_spec(SPECS / "cifar_resnet20.yaml", ["output_stride=8"])


def test_stage_dilation_and_output_stride_together_is_an_error() -> None:
    with pytest.raises(SpecError, match="either output_stride or the stages' dilation"):
        compile_spec(SPECS / "resnet50_v1_5.yaml", ["output_stride=16", "stages.3.dilation=2"])


def test_basic_blocks_dilate_both_convs_as_timm() -> None:
    """timm's BasicBlock: conv1 takes first_dilation, conv2 the block's dilation."""
    net = compile_spec(SPECS / "resnet18.yaml", ["output_stride=8"]).network
    dilations = {
        name: node.attrs.dilation
        for name, node in net.nodes.items()
        if node.op == "conv" and name.startswith(("layer3.", "layer4."))
    }
    assert dilations["layer3.0.conv1"] == 1 and dilations["layer3.0.conv2"] == 2
    assert dilations["layer3.1.conv1"] == 2 and dilations["layer4.0.conv1"] == 2
    assert dilations["layer4.0.conv2"] == 4 and dilations["layer4.1.conv1"] == 4
    assert dilations["layer4.0.downsample.0"] == 1
    model = build_module(compile_spec(SPECS / "resnet18.yaml", ["output_stride=8"])).eval()
    with torch.no_grad():
        assert model.layer4(model.layer3(torch.zeros(1, 128, 8, 8))).shape == (1, 512, 8, 8)


def test_conv_dilation_in_the_language(write_spec) -> None:
    spec = write_spec(
        "name: dil\ninput: {channels: 3, height: 32, width: 32}\n"
        "stem:\n  - conv: {out: 8, kernel: 3, dilation: 3}\n"
        "block: basic\nstages:\n  - {blocks: 1, width: 8}\nhead: {classes: 10}\n"
    )
    compiled = compile_spec(spec)
    conv = compiled.network.nodes["conv"]
    assert (conv.attrs.dilation, conv.attrs.padding, conv.shape) == (3, 3, (8, 32, 32))
    model = build_module(compiled)
    assert model.conv.dilation == (3, 3) and model.conv.padding == (3, 3)


# ---------------------------------------------------------------- feature outputs


@pytest.mark.parametrize("output_stride", [8, 16])
def test_features_head_is_intermediate_layer_getter(output_stride: int) -> None:
    ref = _reference(output_stride)
    sets = ["head.kind=features", f"output_stride={output_stride}", *SMALL]
    ours = build_module(compile_spec(SPECS / "resnet50_v1_5.yaml", sets)).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == ["fc.bias", "fc.weight"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = intermediate_layers(ref, x, STAGES), ours(x)
    assert list(got) == STAGES
    for name in STAGES:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-4)
    reductions = {8: [4, 8, 8, 8], 16: [4, 8, 16, 16]}[output_stride]
    assert ours.feature_info == [
        {"module": name, "num_chs": got[name].shape[1], "reduction": r}
        for name, r in zip(STAGES, reductions, strict=True)
    ]
    assert [64 // got[name].shape[-1] for name in STAGES] == reductions


def test_features_head_builds_no_stage_after_the_last_it_returns() -> None:
    sets = ["head.kind=features", "head.stages=[layer2, layer3]", *SMALL]
    compiled = compile_spec(SPECS / "resnet18.yaml", sets)
    assert [s.name for s in compiled.network.stages] == ["layer1", "layer2", "layer3"]
    model = build_module(compiled)
    assert not hasattr(model, "layer4") and not hasattr(model, "fc")
    out = model(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "layer2": (1, 128, 8, 8),
        "layer3": (1, 256, 4, 4),
    }


@pytest.mark.parametrize(
    "stages,message",
    [
        ("[layer5]", "no stage is named 'layer5' \\(did you mean 'layer4'\\?\\)"),
        ("[layer3, layer2]", "name each stage once, in network order"),
        ("[]", "name at least one stage"),
    ],
)
def test_features_head_stage_errors(stages: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        compile_spec(SPECS / "resnet18.yaml", ["head.kind=features", f"head.stages={stages}"])


def test_a_classifier_head_needs_classes(write_spec) -> None:
    spec = write_spec(
        "name: nocls\ninput: {channels: 3, height: 32, width: 32}\n"
        "block: basic\nstages:\n  - {blocks: 1, width: 8}\nhead: {}\n"
    )
    with pytest.raises(SpecError, match="a fc head needs `classes`"):
        compile_spec(spec)
    features = write_spec(
        "name: backbone\ninput: {channels: 3, height: 32, width: 32}\n"
        "block: basic\nstages:\n  - {blocks: 1, width: 8}\nhead: {kind: features}\n",
        "features.yaml",
    )
    assert [f.name for f in compile_spec(features).network.features] == ["layer1"]


SHIPPED = sorted(p for p in SPECS.rglob("*.yaml"))


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_classifier_turns_into_its_backbone(spec) -> None:
    classifier = compile_spec(spec).network
    backbone = compile_spec(spec, ["head.kind=features"]).network
    assert [f.name for f in backbone.features] == [s.name for s in classifier.stages]
    last = classifier.blocks[classifier.stages[-1].blocks[-1]].nodes[-1]
    assert backbone.features[-1].node == last
    h = classifier.input.shape[1]
    for f in backbone.features:
        node = backbone.nodes[f.node]
        assert (node.shape[0], -(-h // node.shape[1])) == (f.channels, f.reduction)
    head_params = sum(classifier.nodes[n].params for n in classifier.head_layers)
    head_params += classifier.nodes[classifier.output].params
    assert backbone.params == classifier.params - head_params


def test_summary_shows_the_features(tmp_path) -> None:
    from tests.conftest import run_cli

    sets = ["--set", "head.kind=features", "--set", "output_stride=8"]
    text = run_cli("summary", "specs/resnet50_v1_5.yaml", *sets)
    assert text.returncode == 0, text.stderr
    assert "feature layer3: 1024x28x28 from layer3.5.relu, reduction 8" in text.stdout
    data = json.loads(run_cli("summary", "specs/resnet50_v1_5.yaml", "--json", *sets).stdout)
    assert [(f["name"], f["channels"], f["reduction"]) for f in data["features"]] == [
        ("layer1", 256, 4),
        ("layer2", 512, 8),
        ("layer3", 1024, 8),
        ("layer4", 2048, 8),
    ]


def test_features_onnx_equals_pytorch_at_two_sizes(tmp_path) -> None:
    import numpy as np
    import onnxruntime as ort

    from resgraph.backends.onnx_export import compile_onnx

    compiled = compile_spec(SPECS / "resnet18.yaml", ["head.kind=features", "output_stride=8"])
    torch.manual_seed(0)
    model = build_module(compiled).eval()
    randomise_bn(model)
    weights = tmp_path / "backbone.pt"
    torch.save(model.state_dict(), weights)
    for fold in (False, True):
        path = tmp_path / f"backbone{fold}.onnx"
        compile_onnx(compiled, output=path, weights=weights, fold_bn=fold)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == STAGES[:4]
        for size in (64, 96):
            x = np.random.default_rng(size).standard_normal((2, 3, size, size), np.float32)
            got = session.run(None, {"input": x})
            with torch.no_grad():
                expected = model(torch.from_numpy(x))
            for name, array in zip(STAGES, got, strict=True):
                assert np.abs(array - expected[name].numpy()).max() <= 1e-4, (fold, size, name)


# ---------------------------------------------------------------- drop path

CIFAR = SPECS / "cifar_resnet20.yaml"


def test_drop_path_rates_follow_timm_and_modules_are_named_as_timm() -> None:
    compiled = compile_spec(CIFAR, ["drop_path_rate=0.2"])
    blocks = list(compiled.network.blocks.values())
    n = len(blocks)
    model = build_module(compiled)
    for i, block in enumerate(blocks):
        assert block.drop_path == pytest.approx(0.2 * i / (n - 1), abs=1e-6)
        module = model.get_submodule(block.name)
        if i == 0:
            assert module.drop_path is None  # rate 0: no module, as timm
        else:
            assert module.drop_path.drop_prob == block.drop_path
            assert compiled.network.nodes[f"{block.name}.drop_path"].op == "drop_path"
    # no parameters or buffers: checkpoints of the same net without drop path load strictly
    plain = build_module(compile_spec(CIFAR))
    model.load_state_dict(plain.state_dict(), strict=True)


def test_drop_path_network_equals_the_network_without_it_in_eval() -> None:
    plain = build_module(compile_spec(CIFAR)).eval()
    randomise_bn(plain)
    dropped = build_module(compile_spec(CIFAR, ["drop_path_rate=0.5"])).eval()
    dropped.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dropped(x), plain(x), rtol=0, atol=0)


def test_drop_path_drops_a_fraction_of_samples_that_matches_the_rate() -> None:
    compiled = compile_spec(CIFAR, ["drop_path_rate=0.5", "input.height=8", "input.width=8"])
    model = build_module(compiled).train()
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    blocks = [b for b in compiled.network.blocks.values() if b.drop_path > 0]
    for block in blocks:
        module = model.get_submodule(f"{block.name}.drop_path")
        module.register_forward_hook(
            lambda m, args, out, name=block.name: seen.__setitem__(name, (args[0], out))
        )
    torch.manual_seed(0)
    batch = 4000
    with torch.no_grad():
        model(torch.randn(batch, 3, 8, 8))
    for block in blocks:
        x, y = seen[block.name]
        p = block.drop_path
        dropped = (y.flatten(1) == 0).all(1) & (x.flatten(1) != 0).any(1)
        kept = ~dropped
        # a binomial fraction: 6 standard deviations, so a fixed seed cannot flake near it
        sigma = (p * (1 - p) / batch) ** 0.5
        assert abs(dropped.float().mean().item() - p) <= 6 * sigma + 1e-9, block.name
        torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_drop_path_is_the_identity_in_onnx(tmp_path) -> None:
    import numpy as np
    import onnxruntime as ort

    from resgraph.backends.onnx_export import compile_onnx

    compiled = compile_spec(CIFAR, ["drop_path_rate=0.3"])
    torch.manual_seed(0)
    model = build_module(compiled).eval()
    randomise_bn(model)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    path = tmp_path / "m.onnx"
    compile_onnx(compiled, output=path, weights=weights)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), np.float32)
    (logits,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(logits - expected).max() <= 1e-4


# ---------------------------------------------------------------- receptive field and memory


def _fx_receptive_fields(model: nn.Module, shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """Receptive field and jump per module call, from a torch.fx trace with shapes on meta
    tensors: convs and pools widen the field, pointwise ops pass it on, joins take the max."""
    import operator

    from torch.fx.passes.shape_prop import ShapeProp

    traced = torch.fx.symbolic_trace(model)
    ShapeProp(traced).propagate(torch.empty(1, *shape, device="meta"))
    modules = dict(traced.named_modules())
    fields: dict[str, tuple[int, int]] = {}
    out: dict[str, tuple[int, int]] = {}
    for node in traced.graph.nodes:
        inputs = [a for a in node.all_input_nodes if a.name in fields]
        if node.op == "placeholder":
            fields[node.name] = (1, 1)
            continue
        if not inputs:
            continue
        rf = max(fields[a.name][0] for a in inputs)
        jump = max(fields[a.name][1] for a in inputs)
        span, stride = 1, 1
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, nn.Conv2d):
                span, stride = m.dilation[0] * (m.kernel_size[0] - 1) + 1, m.stride[0]
            elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
                span, stride = m.kernel_size, m.stride
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                size = max(inputs[0].meta["tensor_meta"].shape[2:])
                span, stride = size, size
        elif node.op == "call_function" and node.target is operator.getitem:
            index = node.args[1]
            if isinstance(index, tuple) and len(index) == 4 and isinstance(index[2], slice):
                stride = index[2].step or 1  # option A's subsampling
        elif node.op == "call_method" and node.target == "mean":
            size = max(inputs[0].meta["tensor_meta"].shape[2:])  # a global pool
            span = size
        fields[node.name] = (rf + (span - 1) * jump, jump * stride)
        if node.op == "call_module":
            out[node.target] = fields[node.name]
    return out


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_receptive_fields_agree_with_a_torch_fx_walk(spec) -> None:
    compiled = compile_spec(spec)
    with torch.device("meta"):
        model = build_module(compiled)
    expected = _fx_receptive_fields(model, compiled.network.input.shape)
    fields = receptive_fields(compiled.network)
    checked = 0
    for name, node in compiled.network.nodes.items():
        if (
            node.op in ("conv", "maxpool", "avgpool", "global_avgpool", "linear")
            and name in expected
        ):
            assert (fields[name].size, fields[name].jump) == expected[name], name
            checked += 1
    assert checked >= len(compiled.network.blocks)
    out = compiled.network.output
    assert (fields[out].size, fields[out].jump) == expected[out]


def test_receptive_field_of_resnet50_layer4_and_of_a_dilated_stage() -> None:
    net = compile_spec(SPECS / "resnet50_v1_5.yaml").network
    fields = receptive_fields(net)
    assert (fields["layer4.2.relu"].size, fields["layer4.2.relu"].jump) == (427, 32)
    dilated = compile_spec(SPECS / "resnet50_v1_5.yaml", ["output_stride=8"]).network
    field = receptive_fields(dilated)["layer4.2.relu"]
    assert field.jump == 8 and field.size == 427  # dilation keeps the field, not the stride


@pytest.mark.parametrize(
    "spec,sets",
    [
        ("resnet50_v1_5", SMALL),
        ("resnet18", ["output_stride=8", *SMALL]),
        ("se_resnet50", SMALL),
        ("preact_resnet18", ["head.kind=features", *SMALL]),
        ("cifar_resnet20", ["drop_path_rate=0.2"]),
        ("cifar_resnet56", []),
        ("resnet50_d", SMALL),
        ("wide_resnet50_2", SMALL),
    ],
)
def test_saved_activation_estimate_is_within_ten_percent_of_autograd(spec: str, sets) -> None:
    compiled = compile_spec(SPECS / f"{spec}.yaml", sets)
    model = build_module(compiled).train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    batch = 2
    x = torch.randn(batch, *compiled.network.input.shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    estimate = memory(compiled.network, batch)
    measured = sum(seen.values())
    assert abs(estimate.saved - measured) <= 0.1 * measured, (estimate.saved, measured)


def test_memory_totals() -> None:
    net = compile_spec(SPECS / "resnet18.yaml").network
    one, many = memory(net, 1), memory(net, 32, "bf16")
    assert all(many.activations[n] == 16 * a for n, a in one.activations.items())
    assert one.saved < many.saved < 32 * one.saved  # bf16 halves all but int64 indices
    assert one.params == 4 * net.params and one.weights > one.params  # BN statistics
    assert one.training == one.saved + one.weights + 2 * one.params
    assert one.inference == one.weights + one.peak
    # the peak holds at least the largest activation with its input
    assert one.peak >= max(one.activations.values()) + 3 * 224 * 224 * 4


def test_per_instance_facts_keep_the_1202_layer_file_short() -> None:
    """Dilation and drop probability are constructor arguments: one class per block type,
    runs of blocks as loops, the drop path schedule computed in the generated code."""
    from resgraph.backends.pytorch import render_module

    plain = render_module(compile_spec(SPECS / "cifar_resnet1202.yaml"), formatted=False)
    sets = ["drop_path_rate=0.2", "head.kind=features"]
    source = render_module(compile_spec(SPECS / "cifar_resnet1202.yaml", sets), formatted=False)
    assert len(source.splitlines()) <= len(plain.splitlines()) + 30
    assert source.count("class ") == plain.count("class ") + 1  # DropPath
