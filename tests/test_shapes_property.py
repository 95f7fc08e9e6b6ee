"""Property tests of shape inference and cost over random specs (resgraph.passes.shapes, cost)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resgraph.errors import SpecError
from resgraph.graph import INPUT
from resgraph.pipeline import compile_spec

# Library block types: whether each has an add, and its projection_from layer.
LIBRARY: dict[str, tuple[bool, str | None]] = {
    "basic": (True, None),
    "bottleneck": (True, None),
    "plain_basic": (False, None),
    "plain_bottleneck": (False, None),
    "preact_basic": (True, "relu1"),
    "preact_bottleneck": (True, "relu1"),
}
# Block types each spec defines (user_blocks): SE, groups, projection_from, a pool, no add.
USER = ["se_next", "preact_se", "pooled", "no_add"]


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
    if not draw(st.integers(0, 3)):
        args["groups"] = draw(st.integers(1, 4))
    return {"conv": args}


@st.composite
def pool(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["maxpool", "avgpool"]))
    args: dict[str, Any] = {"kernel": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        args["stride"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        args["padding"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        args["ceil_mode"] = True
    if op == "avgpool" and draw(st.booleans()):
        args["count_include_pad"] = False
    return {op: args}


se = st.builds(lambda r: {"se": {"reduction": r}}, st.integers(1, 4))
layer = st.one_of(conv(), pool(), st.just("bn"), st.just("relu"), se)
PROJECTIONS = [
    # ResNet-D (specs/resnet50_d.yaml): average-pool, then a stride-1 1x1 conv and a BN.
    [
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
        "bn",
    ],
    # Pre-activation nets (specs/preact_resnet18.yaml): a bare conv.
    [{"conv": {"out": "out_channels", "kernel": 1, "stride": "stride"}}],
    [
        {"conv": {"out": "out_channels", "kernel": 3, "stride": "stride"}},
        "bn",
        {"se": {"reduction": 2}},
    ],
]
policies = st.sampled_from(["A", "B", "C", "none"])
shortcut = st.one_of(
    policies,
    st.builds(
        lambda option, pad: {"option": option, "zero_pad": pad},
        policies,
        st.sampled_from(["end", "split"]),
    ),
    st.builds(
        lambda option, projection: {"option": option, "projection": projection},
        policies,
        st.sampled_from(PROJECTIONS),
    ),
)


@st.composite
def user_blocks(draw: st.DrawFn) -> dict[str, Any]:
    """The spec's own block types: SE-ResNeXt, a pre-activation unit with SE, and more."""
    r = draw(st.integers(1, 8))
    return {
        "se_next": {
            "params": {"e": draw(st.integers(1, 4)), "g": draw(st.integers(1, 4)), "r": r},
            "let": {"mid": "max(width // g, 1) * g"},
            "stride_on": draw(st.sampled_from(["conv1", "conv2", "conv3"])),
            "layers": [
                {"conv": {"name": "conv1", "out": "mid", "kernel": 1}},
                "bn",
                "relu",
                {"conv": {"name": "conv2", "out": "mid", "kernel": 3, "groups": "g"}},
                "bn",
                "relu",
                {"conv": {"name": "conv3", "out": "width * e", "kernel": 1}},
                "bn",
                {"se": {"reduction": "r"}},
                "add",
                "relu",
            ],
        },
        "preact_se": {
            "params": {"g": draw(st.integers(1, 3))},
            "stride_on": draw(st.sampled_from(["conv1", "conv2"])),
            "projection_from": draw(st.sampled_from(["relu1", "conv1"])),
            "layers": [
                {"bn": {"name": "bn1"}},
                {"relu": {"name": "relu1"}},
                {"conv": {"name": "conv1", "out": "width", "kernel": 3}},
                {"bn": {"name": "bn2"}},
                {"relu": {"name": "relu2"}},
                {"conv": {"name": "conv2", "out": "width", "kernel": 3, "groups": "g"}},
                {"se": {"reduction": draw(st.integers(1, 4))}},
                "add",
            ],
        },
        "pooled": {
            "stride_on": "pool",
            "layers": [
                {"conv": {"name": "conv", "out": "in_channels", "kernel": 3}},
                {op: {"name": "pool", **args} for op, args in draw(pool()).items()},
                "add",
            ],
        },
        "no_add": {"stride_on": "conv", "layers": [draw(conv()), "bn", "relu"]},
    }


@st.composite
def block(draw: st.DrawFn) -> str | dict[str, Any]:
    kind = draw(st.sampled_from([*LIBRARY, *USER]))
    if draw(st.booleans()):
        return kind
    use: dict[str, Any] = {"type": kind}
    if kind in ("bottleneck", "plain_bottleneck", "preact_bottleneck"):
        use["stride_on"] = draw(st.sampled_from(["conv1", "conv2", "conv3"]))
        if draw(st.booleans()):
            use["params"] = {"expansion": draw(st.integers(1, 4))}
            if kind != "preact_bottleneck" and draw(st.booleans()):
                use["params"]["groups"] = draw(st.integers(1, 4))
                use["params"]["base_width"] = draw(st.sampled_from([4, 32, 64, 128]))
    elif kind in ("basic", "plain_basic", "preact_basic"):
        use["stride_on"] = draw(st.sampled_from(["conv1", "conv2"]))
    elif kind == "se_next":
        use["params"] = {"g": draw(st.integers(1, 4)), "r": draw(st.integers(1, 4))}
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
def deep_stem(draw: st.DrawFn) -> list[Any]:
    """ResNet-C/D's stem: 3x3 conv-BN-ReLU two or three times, maybe grouped, maybe a pool."""
    groups = draw(st.integers(1, 2))
    stem: list[Any] = []
    for i in range(draw(st.integers(2, 3))):
        args = {"out": draw(st.integers(1, 8)) * groups, "kernel": 3, "stride": 1 + (i == 0)}
        stem += [{"conv": args | ({"groups": groups} if i else {})}, "bn", "relu"]
    return stem + draw(st.lists(pool(), max_size=1))


@st.composite
def head(draw: st.DrawFn) -> dict[str, Any]:
    """Classes, maybe layers before the pool, a name, and the fcn form with a window."""
    result: dict[str, Any] = {"classes": draw(st.integers(1, 20))}
    if draw(st.booleans()):
        result["layers"] = draw(
            st.sampled_from([["bn", "relu"], [{"bn": {"name": "norm"}}, "relu", {"se": {}}]])
            | st.lists(layer, min_size=1, max_size=2)
        )
    if not draw(st.integers(0, 3)):
        result["name"] = "classifier"
    if not draw(st.integers(0, 3)):
        result["kind"] = "fcn"
        if draw(st.booleans()):
            result["window"] = draw(st.integers(1, 4))
    return result


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 40))
    the_head = draw(head())
    square = the_head.get("kind") == "fcn" and "window" not in the_head
    return {
        "name": "random",
        "input": {
            "channels": draw(st.integers(1, 4)),
            "height": size,
            "width": size if square else draw(st.sampled_from([size, draw(st.integers(1, 40))])),
        },
        "shortcut": draw(shortcut),
        "stem": draw(deep_stem() | st.lists(layer, max_size=4)),
        "block": draw(block()),
        "block_types": draw(user_blocks()),
        "stages": draw(st.lists(stage(), min_size=1, max_size=4)),
        "head": the_head,
    }


def window(size: int, attrs: dict[str, Any]) -> int:
    """floor((H + 2p - k) / s) + 1, the conv/pool output size; with ceil_mode, PyTorch's
    ceil((H + 2p - k) / s) + 1, less one if the last window would start in the padding."""
    span = size + 2 * attrs["padding"] - attrs["kernel"]
    if not attrs.get("ceil_mode"):
        return span // attrs["stride"] + 1
    out = -(-span // attrs["stride"]) + 1
    return out - 1 if (out - 1) * attrs["stride"] >= size + attrs["padding"] else out


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
    if op == "se":
        # Two 1x1 convs with biases on the pooled vector, C -> C // r -> C; the pooling,
        # sigmoid and scaling are not multiply-accumulates of a conv or linear layer.
        c, hidden = inp[0], inp[0] // attrs["reduction"]
        return (c * hidden + hidden) + (hidden * c + c), c * hidden + hidden * c
    return 0, 0


def check_graph(spec: dict[str, Any], graph: nx.DiGraph) -> None:
    """Every invariant a compiled graph must hold."""
    nodes = list(graph.nodes)
    assert nx.is_directed_acyclic_graph(graph)
    assert [n for n in nodes if graph.in_degree(n) == 0] == [INPUT]
    head_name = spec["head"].get("name", "fc")
    assert [n for n in nodes if graph.out_degree(n) == 0] == [head_name]
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
            if op == "conv":
                assert c % attrs["groups"] == 0 and attrs["out"] % attrs["groups"] == 0
        elif op == "add":
            assert len(ins) == 2 and ins[0] == ins[1] == shape
        elif op == "zero_pad":
            c, h, w = ins[0]
            s = attrs["stride"]
            assert shape == (c + attrs["pad_before"] + attrs["pad_after"], -(-h // s), -(-w // s))
        elif op in ("bn", "relu"):
            assert shape == ins[0]
        elif op == "se":
            assert shape == ins[0] and ins[0][0] // attrs["reduction"] >= 1
        elif op == "global_avgpool":
            assert shape == (ins[0][0], 1, 1)
        params, macs = expected_cost(op, attrs, ins[0] if ins else shape, shape)
        assert (data["params"], data["macs"]) == (params, macs), name
        total_params += params
        total_macs += macs
    assert (graph.graph["params"], graph.graph["macs"]) == (total_params, total_macs)
    check_ends(spec, graph)
    check_blocks(spec, graph)


def check_ends(spec: dict[str, Any], graph: nx.DiGraph) -> None:
    """The stem's and head's layers, in order; the pool and classifier (fc or fcn)."""
    head = spec["head"]
    stem, head_layers = graph.graph["stem"], graph.graph["head"]
    assert len(stem) == len(spec["stem"]) and len(head_layers) == len(head.get("layers", []))
    assert all(graph.nodes[n]["role"] == "stem" for n in stem)
    assert all(graph.nodes[n]["role"] == "head" for n in head_layers)
    for before, after in zip([INPUT, *stem], stem, strict=False):
        assert graph.nodes[after]["inputs"] == [before]
    for before, after in zip(head_layers, [*head_layers[1:], "avgpool"], strict=False):
        assert graph.nodes[after]["inputs"] == [before]
    pool = graph.nodes["avgpool"]
    out = graph.nodes[head.get("name", "fc")]
    if head.get("kind", "fc") == "fc":
        assert pool["op"] == "global_avgpool" and out["op"] == "linear"
        assert out["shape"] == (head["classes"],)
    else:
        _, h, w = pool["in_shapes"][0]
        assert pool["attrs"]["kernel"] == head.get("window", h) and pool["attrs"]["stride"] == 1
        assert "window" in head or h == w
        assert out["op"] == "conv" and out["attrs"]["kernel"] == 1
        assert out["shape"] == (head["classes"], *pool["shape"][1:])


def option(value: str | dict[str, Any]) -> str:
    """The policy's option letter (or none), from the short or the long form."""
    return value if isinstance(value, str) else value["option"]


def block_type(spec: dict[str, Any], kind: str) -> tuple[bool, str | None]:
    """(has an add, projection_from) of a library block type or one the spec defines."""
    if kind in LIBRARY:
        return LIBRARY[kind]
    written = spec["block_types"][kind]
    return "add" in written["layers"], written.get("projection_from")


def check_blocks(spec: dict[str, Any], graph: nx.DiGraph) -> None:
    """The shortcut policy: A pads, B projects only where shapes change, C always, none never."""
    blocks = graph.graph["blocks"]
    assert len(blocks) == sum(s["blocks"] for s in spec["stages"])
    for i, stage in enumerate(spec["stages"]):
        policy = stage.get("shortcut", spec["shortcut"])
        written = isinstance(policy, dict) and "projection" in policy
        depth = len(policy["projection"]) if written else 2  # by default a 1x1 conv and a BN
        policy = option(policy)
        kind = stage.get("block", spec["block"])
        kind = kind if isinstance(kind, str) else kind["type"]
        has_add, projection_from = block_type(spec, kind)
        for j in range(stage["blocks"]):
            instance = blocks[f"layer{i + 1}.{j}"]
            assert instance.stride == (stage.get("stride", 1) if j == 0 else 1)
            names = [n for n in graph if graph.nodes[n].get("block") == instance.name]
            adds = [n for n in names if graph.nodes[n]["op"] == "add"]
            projections = [n for n in names if ".downsample." in n]
            residual = policy != "none" and has_add
            assert len(adds) == int(residual)
            if not residual:
                assert instance.shortcut.kind == "none" and not projections
                continue
            add = graph.nodes[adds[0]]
            block_input = graph.nodes[names[0]]["inputs"][0]
            changes = graph.nodes[add["inputs"][0]]["shape"] != graph.nodes[block_input]["shape"]
            # A downsample reads the block input, or a pre-activation unit's projection_from.
            source = f"{instance.name}.{projection_from}" if projection_from else block_input
            if policy == "C" or (policy == "B" and changes):
                assert instance.shortcut.kind == "projection"
                assert projections == [f"{instance.name}.downsample.{k}" for k in range(depth)]
                assert graph.nodes[projections[0]]["inputs"] == [source]
                assert add["inputs"][1] == projections[-1]
            elif policy == "A" and changes:
                assert instance.shortcut.kind == "zero_pad" and not projections
                assert graph.nodes[add["inputs"][1]]["inputs"] == [source]
            else:
                assert instance.shortcut.kind == "identity" and not projections
                assert add["inputs"][1] == block_input


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
            event("rejected")
            return
    event("compiled")
    graph = compiled.graph
    for instance in graph.graph["blocks"].values():
        event(f"block {instance.template.type_name}, shortcut {instance.shortcut.kind}")
    for op in {d["op"] for _, d in graph.nodes(data=True)}:
        event(f"op {op}")
    if any(d["op"] == "conv" and d["attrs"]["groups"] > 1 for _, d in graph.nodes(data=True)):
        event("grouped conv")
    check_graph(spec, graph)


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
