"""Property tests of shape inference and cost over random specs (resgraph.passes.shapes, cost)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resgraph.errors import SpecError
from resgraph.graph import INPUT
from resgraph.pipeline import compile_spec

BLOCKS = ["basic", "bottleneck", "plain_basic", "plain_bottleneck"]


@st.composite
def conv(draw: st.DrawFn) -> dict[str, Any]:
    args: dict[str, Any] = {
        "out": draw(st.integers(1, 24)),
        "kernel": draw(st.integers(1, 7)),
        "stride": draw(st.integers(1, 3)),
    }
    if draw(st.booleans()):
        args["padding"] = draw(st.integers(0, 3))
    if draw(st.booleans()):
        args["bias"] = True
    return {"conv": args}


@st.composite
def pool(draw: st.DrawFn) -> dict[str, Any]:
    args: dict[str, Any] = {"kernel": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        args["stride"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        args["padding"] = draw(st.integers(0, 2))
    return {draw(st.sampled_from(["maxpool", "avgpool"])): args}


layer = st.one_of(conv(), pool(), st.just("bn"), st.just("relu"))
shortcut = st.one_of(
    st.sampled_from(["A", "B", "C", "none"]),
    st.builds(
        lambda option, pad: {"option": option, "zero_pad": pad},
        st.sampled_from(["A", "B", "C", "none"]),
        st.sampled_from(["end", "split"]),
    ),
)


@st.composite
def block(draw: st.DrawFn) -> str | dict[str, Any]:
    kind = draw(st.sampled_from(BLOCKS))
    if "bottleneck" not in kind or draw(st.booleans()):
        return kind
    use: dict[str, Any] = {"type": kind, "stride_on": draw(st.sampled_from(["conv1", "conv2"]))}
    if draw(st.booleans()):
        use["params"] = {"expansion": draw(st.integers(1, 4))}
    return use


@st.composite
def stage(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = {"blocks": draw(st.integers(1, 3)), "width": draw(st.integers(1, 24))}
    if draw(st.booleans()):
        result["stride"] = draw(st.integers(1, 3))
    if draw(st.integers(0, 3)) == 0:
        result["block"] = draw(block())
    if draw(st.integers(0, 3)) == 0:
        result["shortcut"] = draw(shortcut)
    return result


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 40))
    return {
        "name": "random",
        "input": {
            "channels": draw(st.integers(1, 4)),
            "height": size,
            "width": draw(st.sampled_from([size, draw(st.integers(1, 40))])),
        },
        "shortcut": draw(shortcut),
        "stem": draw(st.lists(layer, max_size=4)),
        "block": draw(block()),
        "stages": draw(st.lists(stage(), min_size=1, max_size=4)),
        "head": {"classes": draw(st.integers(1, 20))},
    }


def window(size: int, attrs: dict[str, Any]) -> int:
    """floor((H + 2p - k) / s) + 1, the conv/pool output size (no ceil_mode)."""
    return (size + 2 * attrs["padding"] - attrs["kernel"]) // attrs["stride"] + 1


def expected_cost(
    op: str, attrs: dict[str, Any], inp: tuple[int, ...], out: tuple[int, ...]
) -> tuple[int, int]:
    """(params, MACs) by the textbook formulas, written independently of resgraph.passes.cost."""
    if op == "conv":
        weights = attrs["out"] * inp[0] // attrs["groups"] * attrs["kernel"] * attrs["kernel"]
        return weights + attrs["out"] * attrs["bias"], weights * out[1] * out[2]
    if op == "linear":
        return attrs["out"] * inp[0] + attrs["out"], attrs["out"] * inp[0]
    if op == "bn":
        return 2 * inp[0], 0
    return 0, 0


def check_graph(spec: dict[str, Any], graph: nx.DiGraph) -> None:
    """Every invariant a compiled graph must hold."""
    nodes = list(graph.nodes)
    assert nx.is_directed_acyclic_graph(graph)
    assert [n for n in nodes if graph.in_degree(n) == 0] == [INPUT]
    assert [n for n in nodes if graph.out_degree(n) == 0] == [spec["head"].get("name", "fc")]
    order = {name: i for i, name in enumerate(nodes)}
    total_params = total_macs = 0
    for name, data in graph.nodes(data=True):
        shape = data["shape"]
        assert all(isinstance(d, int) and d >= 1 for d in shape), (name, shape)
        assert [graph.nodes[i]["shape"] for i in data["inputs"]] == data["in_shapes"]
        assert set(graph.predecessors(name)) == set(data["inputs"])
        assert all(order[i] < order[name] for i in data["inputs"])  # built in topological order
        for source in data["inputs"]:
            assert graph.edges[source, name]["shape"] == graph.nodes[source]["shape"]
        op, attrs, ins = data["op"], data["attrs"], data["in_shapes"]
        if op in ("conv", "maxpool", "avgpool"):
            c, h, w = ins[0]
            assert shape == (
                attrs["out"] if op == "conv" else c,
                window(h, attrs),
                window(w, attrs),
            )
            assert attrs["kernel"] <= min(h, w) + 2 * attrs["padding"]
        elif op == "add":
            assert len(ins) == 2 and ins[0] == ins[1] == shape
        elif op == "zero_pad":
            c, h, w = ins[0]
            s = attrs["stride"]
            assert shape == (c + attrs["pad_before"] + attrs["pad_after"], -(-h // s), -(-w // s))
        elif op in ("bn", "relu"):
            assert shape == ins[0]
        elif op == "global_avgpool":
            assert shape == (ins[0][0], 1, 1)
        params, macs = expected_cost(op, attrs, ins[0] if ins else shape, shape)
        assert (data["params"], data["macs"]) == (params, macs), name
        total_params += params
        total_macs += macs
    assert (graph.graph["params"], graph.graph["macs"]) == (total_params, total_macs)
    assert graph.nodes[spec["head"].get("name", "fc")]["shape"] == (spec["head"]["classes"],)
    check_blocks(spec, graph)


def option(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else value["option"]


def check_blocks(spec: dict[str, Any], graph: nx.DiGraph) -> None:
    """The shortcut policy: A pads, B projects only where shapes change, C always, none never."""
    blocks = graph.graph["blocks"]
    assert len(blocks) == sum(s["blocks"] for s in spec["stages"])
    for i, stage in enumerate(spec["stages"]):
        policy = option(stage.get("shortcut", spec["shortcut"]))
        kind = stage.get("block", spec["block"])
        kind = kind if isinstance(kind, str) else kind["type"]
        for j in range(stage["blocks"]):
            instance = blocks[f"layer{i + 1}.{j}"]
            assert instance.stride == (stage.get("stride", 1) if j == 0 else 1)
            names = [n for n in graph if graph.nodes[n].get("block") == instance.name]
            adds = [n for n in names if graph.nodes[n]["op"] == "add"]
            projections = [n for n in names if ".downsample." in n]
            residual = policy != "none" and not kind.startswith("plain")
            assert len(adds) == int(residual)
            if not residual:
                assert instance.shortcut == "none" and not projections
                continue
            add = graph.nodes[adds[0]]
            changes = (
                graph.nodes[add["inputs"][0]]["shape"] != graph.nodes[names[0]]["in_shapes"][0]
            )
            if policy == "C" or (policy == "B" and changes):
                assert instance.shortcut == "projection" and len(projections) == 2
            elif policy == "A" and changes:
                assert instance.shortcut == "zero_pad" and not projections
            else:
                assert instance.shortcut == "identity" and not projections
                assert add["inputs"][1] == graph.nodes[names[0]]["inputs"][0]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_specs_compile_or_fail_with_a_located_spec_error(spec: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        try:
            compiled = compile_spec(path)
        except SpecError as exc:
            assert exc.location is not None, exc
            assert exc.location.file == str(path) and exc.location.line >= 1, str(exc)
            return
    check_graph(spec, compiled.graph)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.sampled_from(["A", "B", "C"]), st.integers(8, 64))
def test_resnet_like_specs_always_compile(n: int, policy: str, size: int) -> None:
    spec = {
        "name": "family",
        "input": {"channels": 3, "height": size, "width": size},
        "shortcut": policy,
        "stem": [{"conv": {"out": 16, "kernel": 3}}, "bn", "relu"],
        "block": "basic",
        "stages": [
            {"blocks": n, "width": 16},
            {"blocks": n, "width": 32, "stride": 2},
            {"blocks": n, "width": 64, "stride": 2},
        ],
        "head": {"classes": 10},
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "family.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        graph = compile_spec(path).graph
    check_graph(spec, graph)
    last = (size + 3) // 4  # two stride-2 3x3 convs with padding 1: ceil(ceil(size / 2) / 2)
    assert graph.nodes[f"layer3.{n - 1}.relu"]["shape"] == (64, last, last)
