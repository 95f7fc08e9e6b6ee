"""Property test: random valid specs compile to torch modules that agree with the passes.

The backend never re-derives a shape or a cost, so the real module is the independent
check: forward hooks measure every named layer's output shape and the MACs of its convs
and linears, and the module's parameters are counted, against what the graph says.

The specs cover the design space: every library block type (post- and pre-activation,
plain, bottlenecks with groups and base_width), block types the spec defines (with `let`,
pools, squeeze-excitation, grouped convs, projection_from), deep stems, user-written
projections (ResNet-D's avgpool then 1x1 conv, conv-only), head layers and the fcn head,
with numbers written as ints or as expressions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from resgraph.backends.pytorch import Options, build_module
from resgraph.errors import SpecError
from resgraph.pipeline import Compiled, compile_spec

LIBRARY_BLOCKS = [
    "basic",
    "bottleneck",
    "plain_basic",
    "plain_bottleneck",
    "preact_basic",
    "preact_bottleneck",
]
USER_BLOCKS = ["mine", "se_next", "preact_se"]
MODULE_OPS = {
    "conv",
    "bn",
    "relu",
    "maxpool",
    "avgpool",
    "linear",
    "zero_pad",
    "global_avgpool",
    "se",
}


def number(draw: st.DrawFn, value: int) -> int | str:
    """`value` as an int or as an expression equal to it (a sum, a difference, a max)."""
    form = draw(st.integers(0, 4))
    if form == 2:
        return f"{value - 1} + 1"
    if form == 3:
        return f"2 * {value} - {value}"
    if form == 4:
        return f"max({value}, 1)"
    return value


@st.composite
def user_block(draw: st.DrawFn) -> dict[str, Any]:
    """A block type written in the spec, with params, let, a pool and a chosen stride_on."""
    layers: list[Any] = [
        {
            "conv": {
                "name": "a",
                "out": "mid",
                "kernel": draw(st.sampled_from([1, 3])),
                "stride": number(draw, 1),
            }
        },
        "bn",
        {"relu": {"name": "act"}},
    ]
    strided = ["a", "b"]
    if draw(st.booleans()):
        layers.append({"avgpool": {"name": "pool", "kernel": number(draw, 3), "stride": 1}})
        strided.append("pool")
    if draw(st.booleans()):
        # No stride: a strided pool's stride is its kernel (times the block's stride).
        layers.append({"maxpool": {"name": "mp", "kernel": number(draw, 1), "padding": 0}})
        strided.append("mp")
    layers += [
        {
            "conv": {
                "name": "b",
                "out": "width * e",
                "kernel": draw(st.sampled_from([1, 3, 5])),
                "stride": number(draw, 1),
            }
        },
        {"bn": {"name": "last", "eps": 1e-3}},
    ]
    if draw(st.booleans()):
        layers.append({"se": {"reduction": number(draw, draw(st.integers(1, 3)))}})
    layers.append("add")
    if draw(st.booleans()):
        layers.append("relu")
    return {
        "description": draw(st.sampled_from(["A user block.", 'Quotes " and \\ inside.'])),
        "params": {"e": draw(st.integers(1, 2))},
        "let": {"mid": "max(width // 2, 1)"},
        "stride_on": draw(st.sampled_from(strided)),
        "layers": layers,
    }


@st.composite
def se_next_block(draw: st.DrawFn) -> dict[str, Any]:
    """A post-activation ResNeXt bottleneck with a squeeze-excitation gate before the add."""
    return {
        "description": "Grouped 3x3, then SE (SE-ResNeXt).",
        "params": {
            "e": draw(st.integers(1, 4)),
            "g": draw(st.sampled_from([1, 2, 4])),
            "r": draw(st.sampled_from([1, 2, 4])),
        },
        "let": {"mid": "max(width // g, 1) * g"},
        "stride_on": draw(st.sampled_from(["conv1", "conv2"])),
        "layers": [
            {"conv": {"name": "conv1", "out": "mid", "kernel": 1}},
            {"bn": {"name": "bn1"}},
            {"relu": {"name": "relu1"}},
            {"conv": {"name": "conv2", "out": "mid", "kernel": 3, "groups": "g"}},
            {"bn": {"name": "bn2"}},
            {"relu": {"name": "relu2"}},
            {"conv": {"name": "conv3", "out": "width * e", "kernel": 1}},
            {"bn": {"name": "bn3"}},
            {"se": {"name": "se", "reduction": draw(st.sampled_from(["r", "r * 1", "r + 0"]))}},
            "add",
            "relu",
        ],
    }


@st.composite
def preact_block(draw: st.DrawFn) -> dict[str, Any]:
    """A pre-activation unit written in the spec: BN-ReLU-conv twice, maybe SE, nothing after."""
    layers: list[Any] = [
        {"bn": {"name": "bn1"}},
        {"relu": {"name": "relu1"}},
        {"conv": {"name": "conv1", "out": "width", "kernel": 3, "stride": number(draw, 1)}},
        {"bn": {"name": "bn2"}},
        {"relu": {"name": "relu2"}},
        {"conv": {"name": "conv2", "out": "width * k", "kernel": 3, "groups": "g"}},
    ]
    if draw(st.booleans()):
        layers.append({"se": {"name": "gate", "reduction": number(draw, 2)}})
    block: dict[str, Any] = {
        "params": {"k": draw(st.integers(1, 2)), "g": draw(st.sampled_from([1, 2]))},
        "stride_on": draw(st.sampled_from(["conv1", "conv2"])),
        "layers": [*layers, "add"],
    }
    if draw(st.integers(0, 3)):
        block["projection_from"] = "relu1"
    return block


def block_use(draw: st.DrawFn) -> Any:
    """A block reference: a library type or one of the spec's own, sometimes with settings."""
    name = draw(st.sampled_from(LIBRARY_BLOCKS) | st.sampled_from(USER_BLOCKS))
    if not draw(st.integers(0, 2)):
        return name
    use: dict[str, Any] = {"type": name}
    params: dict[str, Any] = {}
    if name in ("bottleneck", "plain_bottleneck"):
        use["stride_on"] = draw(st.sampled_from(["conv1", "conv2"]))
        params["expansion"] = draw(st.integers(1, 4))
        params["groups"] = draw(st.sampled_from([1, 2, 4]))
        params["base_width"] = draw(st.sampled_from([32, 64, 128]))
    elif name == "preact_bottleneck":
        use["stride_on"] = draw(st.sampled_from(["conv1", "conv2", "conv3"]))
        params["expansion"] = draw(st.integers(1, 4))
    elif name in ("basic", "plain_basic", "preact_basic"):
        use["stride_on"] = draw(st.sampled_from(["conv1", "conv2"]))
    elif name == "se_next":
        params["g"] = draw(st.sampled_from([1, 2, 3]))
        params["r"] = number(draw, draw(st.sampled_from([1, 2])))
    elif name == "preact_se":
        params["g"] = draw(st.sampled_from([1, 2]))
    if params and draw(st.booleans()):
        use["params"] = params
    return use


PROJECTIONS: dict[str, list[Any]] = {
    # ResNet-D: average-pool, then a stride-1 1x1 conv (specs/resnet50_d.yaml).
    "avgpool_conv": [
        {
            "avgpool": {
                "kernel": "stride",
                "stride": "stride",
                "padding": 0,
                "ceil_mode": True,
                "count_include_pad": False,
            }
        },
        {"conv": {"out": "out_channels", "kernel": 1}},
        {"bn": {}},
    ],
    # Pre-activation nets: a bare conv (specs/preact_resnet18.yaml).
    "conv_only": [{"conv": {"out": "out_channels", "kernel": 1, "stride": "stride"}}],
    "conv3_bn_relu": [
        {"conv": {"out": "out_channels", "kernel": 3, "stride": "stride"}},
        "bn",
        "relu",
    ],
}


def shortcut(draw: st.DrawFn) -> Any:
    """A shortcut policy: A (zeros at the end or split), B or C (maybe written out), none."""
    option = draw(st.sampled_from(["A", "B", "C", "none"]))
    if option == "A" and draw(st.booleans()):
        return {"option": "A", "zero_pad": draw(st.sampled_from(["end", "split"]))}
    if option in ("B", "C") and draw(st.booleans()):
        return {
            "option": option,
            "projection": PROJECTIONS[draw(st.sampled_from(sorted(PROJECTIONS)))],
        }
    return option


def stem_layers(draw: st.DrawFn) -> list[Any]:
    """No stem, one conv (CIFAR), conv + maxpool (ImageNet), or a deep stem of 2-3 convs."""
    kind = draw(st.sampled_from(["none", "conv", "imagenet", "deep"]))
    if kind == "none":
        return []
    if kind != "deep":
        stem: list[Any] = [
            {
                "conv": {
                    "name": "conv1",
                    "out": draw(st.integers(2, 12)),
                    "kernel": draw(st.sampled_from([3, 5, 7])),
                    "stride": draw(st.sampled_from([1, 2])),
                }
            },
            {"bn": {"name": "bn1"}},
            "relu",
        ]
        if kind == "imagenet":
            stem.append({"maxpool": {"kernel": 3, "stride": 2}})
        return stem
    # Deep stem (ResNet-C/D): 3x3 convs, the first maybe strided, later ones maybe grouped;
    # named as in specs/resnet50_d.yaml, or left for the compiler to number.
    groups = draw(st.sampled_from([1, 2]))
    named = draw(st.booleans())
    stem = []
    for i in range(draw(st.integers(2, 3))):
        conv: dict[str, Any] = {
            "out": draw(st.integers(1, 4)) * 2,
            "kernel": 3,
            "stride": draw(st.sampled_from([1, 2])) if i == 0 else 1,
        }
        if i > 0 and groups > 1:
            conv["groups"] = groups
        bn: dict[str, Any] = {}
        relu: dict[str, Any] = {}
        if named:
            conv["name"], bn["name"], relu["name"] = f"conv{i + 1}", f"bn{i + 1}", f"relu{i + 1}"
        stem += [{"conv": conv}, {"bn": bn}, {"relu": relu} if relu else "relu"]
    if draw(st.booleans()):
        stem.append({"se": {"reduction": 2}})
    if draw(st.booleans()):
        stem.append({"maxpool": {"kernel": 3, "stride": 2}})
    return stem


def head(draw: st.DrawFn) -> dict[str, Any]:
    """Classes, and maybe layers before the pool (preact's final BN-ReLU), a name, the fcn form."""
    result: dict[str, Any] = {"classes": draw(st.integers(1, 10))}
    layers = draw(
        st.sampled_from(
            [
                [],
                [{"bn": {"name": "norm"}}, "relu"],
                ["bn", "relu", {"se": {"reduction": 2}}],
                [{"conv": {"name": "head_conv", "out": 6, "kernel": 1}}, "bn", "relu"],
            ]
        )
    )
    if layers:
        result["layers"] = layers
    if not draw(st.integers(0, 3)):
        result["name"] = "classifier"
    if not draw(st.integers(0, 4)):
        result["kind"] = "fcn"
    return result


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec as a dict: random input, stem, stages, block types, shortcuts and head."""
    stem = stem_layers(draw)
    stages = []
    for i in range(draw(st.integers(1, 3))):
        stage: dict[str, Any] = {
            "blocks": draw(st.sampled_from([1, 2, "n"])),
            "width": draw(st.sampled_from([2, 4, 6, 8, 10, 12, "2 * k", "4 * k"])),
            "stride": draw(st.sampled_from([1, 2])),
        }
        if draw(st.integers(0, 2)) == 0:
            stage["block"] = block_use(draw)
        if draw(st.integers(0, 3)) == 0:
            stage["shortcut"] = shortcut(draw)
        if draw(st.integers(0, 4)) == 0:
            stage["name"] = f"stage{i}"
        stages.append(stage)
    the_head = head(draw)
    height = draw(st.integers(8, 32))
    width = height if the_head.get("kind") == "fcn" else draw(st.integers(8, 32))
    return {
        "name": "random_net",
        "description": "A random network.",
        "params": {"n": draw(st.integers(1, 2)), "k": draw(st.integers(1, 3))},
        "input": {"channels": draw(st.integers(1, 4)), "height": height, "width": width},
        "shortcut": shortcut(draw),
        "stem": stem,
        "block": block_use(draw),
        "block_types": {
            "mine": draw(user_block()),
            "se_next": draw(se_next_block()),
            "preact_se": draw(preact_block()),
        },
        "stages": stages,
        "head": the_head,
        "init": {"zero_init_residual": draw(st.booleans())},
    }


def compile_dict(spec: dict[str, Any]) -> Compiled:
    """Write the spec as YAML and compile it like a user's file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return compile_spec(path)


def measure(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[dict[str, list[tuple[int, ...]]], int]:
    """Run the model once; (output shapes per module name, MACs of convs and linears)."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    macs = 0

    def hook(name: str) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            nonlocal macs
            shapes.setdefault(name, []).append(tuple(output.shape[1:]))
            if isinstance(module, torch.nn.Conv2d):
                macs += module.weight.numel() * output.shape[2] * output.shape[3]
            elif isinstance(module, torch.nn.Linear):
                macs += module.weight.numel()

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.isfinite(out).all()
    return shapes, macs


def leaf_modules(model: torch.nn.Module) -> set[str]:
    """Names of the modules that are one graph node each: the leaves, and whole SE gates."""
    gates = [n for n, m in model.named_modules() if type(m).__name__ == "SqueezeExcite"]
    return {
        name
        for name, module in model.named_modules()
        if name
        and (name in gates or not any(module.children()))
        and not any(name.startswith(gate + ".") for gate in gates)
    }


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,  # shrink one failure (each try builds a module): minutes less
)
@given(spec=specs(), channels_last=st.booleans())
def test_module_agrees_with_the_graph(spec: dict[str, Any], channels_last: bool) -> None:
    try:
        compiled = compile_dict(spec)
    except SpecError:
        event("rejected by the compiler")
        return
    event("compiled")
    for instance in compiled.graph.graph["blocks"].values():
        event(f"block {instance.template.type_name}, shortcut {instance.shortcut.kind}")
    check_module(spec, compiled, channels_last)


def check_module(spec: dict[str, Any], compiled: Compiled, channels_last: bool = False) -> None:
    """The built module's layer shapes, parameters, MACs and output agree with the graph."""
    graph = compiled.graph
    model = build_module(compiled, options=Options(channels_last=channels_last)).eval()
    inp = spec["input"]
    x = torch.randn(1, inp["channels"], inp["height"], inp["width"])
    with torch.no_grad():
        shapes, macs = measure(model, x)

    module_nodes = {n for n, d in graph.nodes(data=True) if d["op"] in MODULE_OPS}
    assert leaf_modules(model) == module_nodes
    for name in module_nodes:
        assert shapes[name] == [graph.nodes[name]["shape"]], name
        data = graph.nodes[name]
        if data["op"] == "se":  # the gate's MLP: C -> C // reduction -> C, as 1x1 convs
            note_event("squeeze-excitation")
            se = model.get_submodule(name)
            channels = data["shape"][0]
            assert (se.fc1.in_channels, se.fc1.out_channels) == (channels, data["attrs"]["hidden"])
            assert (se.fc2.in_channels, se.fc2.out_channels) == (data["attrs"]["hidden"], channels)
        elif data["op"] == "conv" and data["attrs"]["groups"] > 1:
            note_event("grouped conv")
            assert model.get_submodule(name).groups == data["attrs"]["groups"], name
    assert sum(p.numel() for p in model.parameters()) == graph.graph["params"]
    assert macs == graph.graph["macs"]
    assert model(x).shape == (1, *graph.nodes[graph.graph["output"]]["shape"])


def note_event(name: str) -> None:
    """Count a feature in hypothesis's statistics, when running under hypothesis."""
    if currently_in_test_context():
        event(name)


def one_layer_block(layer: dict[str, Any], stride: int, stride_on: str | None) -> dict[str, Any]:
    """A spec whose one block is `layer` then the add: the smallest home for a block layer."""
    block: dict[str, Any] = {"layers": [layer, "add"]}
    if stride_on:
        block["stride_on"] = stride_on
    return {
        "name": "one_layer",
        "input": {"channels": 4, "height": 8, "width": 8},
        "block": "mine",
        "block_types": {"mine": block},
        "stages": [{"blocks": 1, "width": 4, "stride": stride}],
        "head": {"classes": 1},
    }


@pytest.mark.parametrize(
    ("layer", "stride", "stride_on"),
    [
        # The stride_on layer's stride is its own times the block's: (1 + 0) * 2, not 1 + 0 * 2.
        ({"conv": {"name": "a", "out": 4, "kernel": 1, "stride": "1 + 0"}}, 2, "a"),
        ({"conv": {"name": "a", "out": 4, "kernel": 1, "stride": "2 * 1 - 1"}}, 2, "a"),
        ({"maxpool": {"name": "a", "kernel": "2 - 1", "padding": 0}}, 2, "a"),
        # The gate's hidden width is C // (1 + 1), not C // 1 + 1.
        ({"se": {"reduction": "1 + 1"}}, 1, None),
    ],
)
def test_expressions_in_block_layers_keep_their_value(
    layer: dict[str, Any], stride: int, stride_on: str | None
) -> None:
    """Block layers are rendered over expressions: a sum must stay one operand."""
    spec = one_layer_block(layer, stride, stride_on)
    check_module(spec, compile_dict(spec))


@settings(max_examples=40, deadline=None)
@given(spec=specs(), mutation=st.sampled_from(["kernel", "stride_on", "width", "option_a"]))
def test_invalid_specs_raise_spec_error_only(spec: dict[str, Any], mutation: str) -> None:
    """Broken specs (huge kernel, bad stride_on, zero width, shrinking A): SpecError only."""
    if mutation == "kernel":
        spec["stem"] = [{"conv": {"out": 4, "kernel": 99, "padding": 0}}]
    elif mutation == "stride_on":
        spec["block_types"]["mine"]["stride_on"] = "act"
        spec["block"] = "mine"
        spec["stages"][0]["stride"] = 2
        spec["stages"][0].pop("block", None)
    elif mutation == "width":
        spec["stages"][-1]["width"] = "width_param - 4"
        spec["params"] = {**spec["params"], "width_param": 4}
    else:
        spec["shortcut"] = "A"
        spec["block"] = "basic"
        spec["stem"] = [{"conv": {"name": "conv1", "out": 64, "kernel": 3}}]
        spec["stages"] = [{"blocks": 1, "width": 8}]
    try:
        compile_dict(spec)
    except SpecError as exc:
        assert str(exc)
    else:
        raise AssertionError(f"{mutation}: the compiler accepted a broken spec")
