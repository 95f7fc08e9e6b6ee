"""Property test: random valid specs compile to torch modules that agree with the passes.

The backend never re-derives a shape or a cost, so the real module is the independent
check: forward hooks measure every named layer's output shape and the MACs of its convs
and linears, and the module's parameters are counted, against what the graph says.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resgraph.backends.pytorch import Options, build_module
from resgraph.errors import SpecError
from resgraph.pipeline import Compiled, compile_spec

LIBRARY_BLOCKS = ["basic", "bottleneck", "plain_basic", "plain_bottleneck"]
MODULE_OPS = {"conv", "bn", "relu", "maxpool", "avgpool", "linear", "zero_pad", "global_avgpool"}


@st.composite
def user_block(draw: st.DrawFn) -> dict[str, Any]:
    """A block type written in the spec, with params, let, a pool and a chosen stride_on."""
    layers: list[Any] = [
        {"conv": {"name": "a", "out": "mid", "kernel": draw(st.sampled_from([1, 3]))}},
        "bn",
        {"relu": {"name": "act"}},
    ]
    strided = ["a", "b"]
    if draw(st.booleans()):
        layers.append({"avgpool": {"name": "pool", "kernel": 3, "stride": 1}})
        strided.append("pool")
    layers += [
        {"conv": {"name": "b", "out": "width * e", "kernel": draw(st.sampled_from([1, 3, 5]))}},
        {"bn": {"name": "last", "eps": 1e-3}},
        "add",
    ]
    if draw(st.booleans()):
        layers.append("relu")
    return {
        "description": draw(st.sampled_from(["A user block.", 'Quotes " and \\ inside.'])),
        "params": {"e": draw(st.integers(1, 2))},
        "let": {"mid": "max(width // 2, 1)"},
        "stride_on": draw(st.sampled_from(strided)),
        "layers": layers,
    }


def block_use(draw: st.DrawFn) -> Any:
    """A block reference: a library type or the spec's own `mine`, sometimes with settings."""
    name = draw(st.sampled_from([*LIBRARY_BLOCKS, "mine"]))
    if name in ("bottleneck", "plain_bottleneck") and draw(st.booleans()):
        return {
            "type": name,
            "stride_on": draw(st.sampled_from(["conv1", "conv2"])),
            "params": {"expansion": draw(st.integers(1, 4))},
        }
    return name


def shortcut(draw: st.DrawFn) -> Any:
    """A shortcut policy: A (zeros at the end or split), B, C or none."""
    option = draw(st.sampled_from(["A", "B", "C", "none"]))
    if option == "A" and draw(st.booleans()):
        return {"option": "A", "zero_pad": draw(st.sampled_from(["end", "split"]))}
    return option


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec as a dict: random input, stem, stages, block types and shortcut policies."""
    stem_width = draw(st.integers(2, 12))
    stem: list[Any] = []
    kind = draw(st.sampled_from(["none", "conv", "imagenet"]))
    if kind != "none":
        stem = [
            {
                "conv": {
                    "name": "conv1",
                    "out": stem_width,
                    "kernel": draw(st.sampled_from([3, 5, 7])),
                    "stride": draw(st.sampled_from([1, 2])),
                }
            },
            {"bn": {"name": "bn1"}},
            "relu",
        ]
        if kind == "imagenet":
            stem.append({"maxpool": {"kernel": 3, "stride": 2}})
    stages = []
    for i in range(draw(st.integers(1, 3))):
        stage: dict[str, Any] = {
            "blocks": draw(st.integers(1, 2)),
            "width": draw(st.integers(1, 6)) * 2,
            "stride": draw(st.sampled_from([1, 2])),
        }
        if draw(st.integers(0, 3)) == 0:
            stage["block"] = block_use(draw)
        if draw(st.integers(0, 3)) == 0:
            stage["shortcut"] = shortcut(draw)
        if draw(st.integers(0, 4)) == 0:
            stage["name"] = f"stage{i}"
        stages.append(stage)
    return {
        "name": "random_net",
        "description": "A random network.",
        "input": {
            "channels": draw(st.integers(1, 4)),
            "height": draw(st.integers(8, 48)),
            "width": draw(st.integers(8, 48)),
        },
        "shortcut": shortcut(draw),
        "stem": stem,
        "block": block_use(draw),
        "block_types": {"mine": draw(user_block())},
        "stages": stages,
        "head": {"classes": draw(st.integers(1, 10))},
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


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=specs(), channels_last=st.booleans())
def test_module_agrees_with_the_graph(spec: dict[str, Any], channels_last: bool) -> None:
    try:
        compiled = compile_dict(spec)
    except SpecError:
        event("rejected by the compiler")
        return
    event("compiled")
    graph = compiled.graph
    model = build_module(compiled, options=Options(channels_last=channels_last)).eval()
    inp = spec["input"]
    x = torch.randn(1, inp["channels"], inp["height"], inp["width"])
    with torch.no_grad():
        shapes, macs = measure(model, x)

    module_nodes = {n for n, d in graph.nodes(data=True) if d["op"] in MODULE_OPS}
    leaves = {n for n, m in model.named_modules() if n and not any(m.children())}
    assert leaves == module_nodes
    for name in module_nodes:
        assert shapes[name] == [graph.nodes[name]["shape"]], name
    assert sum(p.numel() for p in model.parameters()) == graph.graph["params"]
    assert macs == graph.graph["macs"]
    assert model(x).shape == (1, graph.nodes[graph.graph["output"]]["shape"][0])


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
        spec["params"] = {"width_param": 4}
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
