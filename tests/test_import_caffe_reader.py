"""The Caffe reader on the paper's deploy prototxts (counts, shapes, MACs, parameters) and
on small nets for each Caffe rule and each refusal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from resgraph.importer.caffe_reader import read_prototxt
from resgraph.importer.source import INPUT, ImportFailure, SourceGraph, shapes
from tests.caffe_prototxt import resnet_deploy_prototxt
from tests.test_import_prototxt import at

# the paper's MACs at 224x224 (conv + fc) and torchvision's parameter counts; the Caffe
# ResNet-50 alone has a bias on conv1 (64 more)
PAPER = {
    50: (3_857_973_248, 25_557_032 + 64),
    101: (7_570_194_432, 44_549_160),
    152: (11_282_415_616, 60_192_808),
}
KINDS = {
    50: {"conv": 53, "bn": 53, "relu": 49, "add": 16},
    101: {"conv": 104, "bn": 104, "relu": 100, "add": 33},
    152: {"conv": 155, "bn": 155, "relu": 151, "add": 50},
}
HEAD = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[SourceGraph, dict]]:
    """Each deploy net read once, with its shapes from the meta device."""
    out = {}
    for depth in PAPER:
        path = tmp_path_factory.mktemp("caffe") / f"ResNet-{depth}-deploy.prototxt"
        path.write_text(resnet_deploy_prototxt(depth), encoding="utf-8")
        graph = read_prototxt(path)
        out[depth] = (graph, shapes(graph))
    return out


def cost(graph: SourceGraph, sizes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """MACs (conv and linear) and parameters (as torchvision counts: BN has 2 per channel)."""
    macs = params = 0
    for op in graph.ops:
        a = op.attrs
        if op.kind == "conv":
            weights = a["out"] * a["in_channels"] // a["groups"] * a["kernel"] ** 2
            _, height, width = sizes[op.name]
            macs += weights * height * width
            params += weights + (a["out"] if a["bias"] else 0)
        elif op.kind == "bn":
            params += 2 * a["channels"]
        elif op.kind == "linear":
            macs += a["in_features"] * a["out"]
            params += a["in_features"] * a["out"] + (a["out"] if a["bias"] else 0)
    return macs, params


@pytest.mark.parametrize("depth", sorted(PAPER))
def test_deploy_nets_give_the_papers_counts(deploy: dict, depth: int) -> None:
    graph, sizes = deploy[depth]
    kinds = Counter(op.kind for op in graph.ops)
    assert kinds == {**KINDS[depth], "maxpool": 1, "avgpool": 1, "flatten": 1, "linear": 1}
    assert cost(graph, sizes) == PAPER[depth]
    assert graph.input == (3, 224, 224)
    assert not graph.has_weights
    assert all(not op.weights for op in graph.ops)
    assert graph.by_name()["conv1"].attrs["bias"] is (depth == 50)
    assert not any(op.attrs["bias"] for op in graph.ops if op.kind == "conv" and op.name != "conv1")
    assert graph.notes == ["layer 'prob' (Softmax) dropped: resgraph's networks output logits"]


@pytest.mark.parametrize("depth", sorted(PAPER))
def test_deploy_nets_have_caffes_sizes(deploy: dict, depth: int) -> None:
    graph, sizes = deploy[depth]
    assert sizes["conv1"] == (64, 112, 112)
    assert sizes["pool1"] == (64, 56, 56)  # rounded up: floor would give 55
    assert sizes["res5c_relu"] == (2048, 7, 7)
    assert graph.by_name()["pool5"].inputs == ("res5c_relu",)
    assert sizes["pool5"] == (2048, 1, 1)
    assert graph.output.name == "fc1000" and sizes["fc1000"] == (1000,)


def test_resnet50_ops_are_named_and_wired_as_caffe_writes_them(deploy: dict) -> None:
    graph, _ = deploy[50]
    ops = graph.by_name()
    first = [(op.name, op.kind, op.inputs, op.module, op.source_op) for op in graph.ops[:5]]
    assert first == [
        ("conv1", "conv", (INPUT,), "conv1", "Convolution"),
        ("bn_conv1", "bn", ("conv1",), "bn_conv1", "BatchNorm"),
        ("conv1_relu", "relu", ("bn_conv1",), "conv1_relu", "ReLU"),
        ("pool1", "maxpool", ("conv1_relu",), "pool1", "Pooling"),
        ("res2a_branch1", "conv", ("pool1",), "res2a_branch1", "Convolution"),
    ]
    assert ops["conv1"].attrs == {
        "in_channels": 3,
        "out": 64,
        "kernel": 7,
        "stride": 2,
        "padding": 3,
        "dilation": 1,
        "groups": 1,
        "bias": True,
    }
    assert ops["bn_conv1"].attrs == {"channels": 64, "eps": 1e-5}
    assert ops["pool1"].attrs == {"kernel": 3, "stride": 2, "padding": 0, "ceil_mode": True}
    assert ops["res2a"].inputs == ("bn2a_branch1", "bn2a_branch2c")
    assert ops["res2b"].inputs == ("res2a_relu", "bn2b_branch2c")
    assert ops["res2b_branch2a"].inputs == ("res2a_relu",)
    # the paper's layout: the stride sits in the first 1x1 conv of a stage's first block
    assert [ops[f"res3a_{b}"].attrs["stride"] for b in ("branch1", "branch2a", "branch2b")] == [
        2,
        2,
        1,
    ]
    assert ops["pool5"].attrs == {
        "kernel": 7,
        "stride": 1,
        "padding": 0,
        "ceil_mode": True,
        "count_include_pad": True,
    }
    flatten = ops["fc1000_flatten"]
    assert (flatten.kind, flatten.inputs, flatten.module) == ("flatten", ("pool5",), None)
    assert ops["fc1000"].inputs == ("fc1000_flatten",)
    assert ops["fc1000"].attrs == {"in_features": 2048, "out": 1000, "bias": True}


def test_deeper_nets_letter_their_blocks_as_the_originals(deploy: dict) -> None:
    names = {101: ("res3b3", "res4b22", "res5c"), 152: ("res3b7", "res4b35", "res5c")}
    for depth, expected in names.items():
        ops = deploy[depth][0].by_name()
        assert all(ops[name].kind == "add" for name in expected)
        assert "res3b" not in ops and "bn4b22_branch2c" in ops


def layer(name: str, kind: str, bottoms: list[str], top: str | None, body: str = "") -> str:
    """One layer on one line, bottoms before the top, as small test nets write it."""
    wires = "".join(f'bottom: "{b}" ' for b in bottoms) + (f'top: "{top}" ' if top else "")
    return f'layer {{ name: "{name}" type: "{kind}" {wires}{body}}}\n'


def conv(name: str, bottom: str, top: str | None = None, extra: str = "") -> str:
    param = f"convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {extra}}} "
    return layer(name, "Convolution", [bottom], top or name, param)


def bn_scale(blob: str, suffix: str, top: str | None = None) -> str:
    bn = layer(f"bn{suffix}", "BatchNorm", [blob], top or blob)
    scale = layer(
        f"scale{suffix}", "Scale", [top or blob], top or blob, "scale_param { bias_term: true } "
    )
    return bn + scale


def read(tmp_path: Path, text: str) -> SourceGraph:
    path = tmp_path / "net.prototxt"
    path.write_text(text, encoding="utf-8")
    return read_prototxt(path)


@pytest.mark.parametrize(
    "head",
    [
        HEAD,
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n',
        layer(
            "data", "Input", [], "data", "input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } "
        ),
    ],
)
def test_every_input_form_gives_the_same_graph(tmp_path: Path, head: str) -> None:
    graph = read(tmp_path, head + conv("c", "data") + layer("r", "ReLU", ["c"], "c"))
    assert graph.input == (3, 8, 8)
    assert [(op.name, op.inputs) for op in graph.ops] == [("c", (INPUT,)), ("r", ("c",))]


def test_a_pair_out_of_place_is_one_bn_and_its_plain_output_is_unreadable(tmp_path: Path) -> None:
    text = HEAD + conv("c", "data") + bn_scale("c", "c", top="n") + layer("r", "ReLU", ["n"], "n")
    graph = read(tmp_path, text)
    assert [(op.name, op.kind, op.inputs) for op in graph.ops] == [
        ("c", "conv", (INPUT,)),
        ("bnc", "bn", ("c",)),
        ("r", "relu", ("bnc",)),
    ]
    plain = (
        HEAD
        + conv("c", "data")
        + layer("bnc", "BatchNorm", ["c"], "b")
        + layer("scalec", "Scale", ["b"], "s", "scale_param { bias_term: true } ")
        + layer("r", "ReLU", ["b"], "r")
    )
    where = at(plain, 'bottom: "b"', 2)
    with pytest.raises(ImportFailure) as caught:
        read(tmp_path, plain)
    assert str(caught.value) == (
        f"{tmp_path / 'net.prototxt'}:{where}: layer 'r' (ReLU): "
        "bottom 'b' is layer 'bnc' (BatchNorm)'s output before its Scale"
    )


@pytest.mark.parametrize(
    ("side", "pool", "ceil_mode", "size"),
    [
        (8, "kernel_size: 3 stride: 2", True, 4),  # rounded up; floor would give 3
        (8, "kernel_size: 3 stride: 2 round_mode: FLOOR", False, 3),
        # rounded up to 4, then Caffe drops the last window, which would start in the padding
        (5, "kernel_size: 2 stride: 2 pad: 1", True, 3),
        (5, "pool: AVE kernel_size: 2 stride: 2 pad: 1", True, 3),
        (8, "pool: AVE kernel_size: 3 stride: 2 pad: 1", True, 5),
    ],
)
def test_pools_round_as_caffe_does_and_torch_agrees(
    tmp_path: Path, side: int, pool: str, ceil_mode: bool, size: int
) -> None:
    text = (
        HEAD.replace("dim: 8 dim: 8", f"dim: {side} dim: {side}")
        + layer("p", "Pooling", ["data"], "p", f"pooling_param {{ {pool} }} ")
        + layer("fc", "InnerProduct", ["p"], "fc", "inner_product_param { num_output: 2 } ")
    )
    graph = read(tmp_path, text)
    pooled = graph.by_name()["p"]
    assert pooled.attrs["ceil_mode"] is ceil_mode
    assert graph.by_name()["fc"].attrs["in_features"] == 3 * size * size  # Caffe's size rule
    assert shapes(graph)["p"] == (3, size, size)  # PyTorch's, on the meta device
    if "AVE" in pool:
        assert pooled.kind == "avgpool" and pooled.attrs["count_include_pad"] is True
    else:
        assert pooled.kind == "maxpool" and "count_include_pad" not in pooled.attrs


def test_skipped_layers_leave_no_op(tmp_path: Path) -> None:
    text = (
        HEAD
        + conv("c", "data")
        + layer("split", "Split", ["c"], None, 'top: "c1" top: "c2" ')
        + layer("drop", "Dropout", ["c1"], "d", "dropout_param { dropout_ratio: 0.5 } ")
        + layer(
            "sum",
            "Eltwise",
            ["d", "c2"],
            "sum",
            "eltwise_param { operation: SUM coeff: 1 coeff: 1 } ",
        )
        + conv("side", "sum")
        + layer("quiet", "Silence", ["side"], None)
        + layer("gate", "Sigmoid", ["sum"], "gate")
        + layer("prod", "Eltwise", ["sum", "gate"], "prod", "eltwise_param { operation: PROD } ")
        + layer("flat", "Flatten", ["prod"], "flat")
        + layer(
            "fc",
            "InnerProduct",
            ["flat"],
            "fc",
            "inner_product_param { num_output: 2 bias_term: false } ",
        )
    )
    graph = read(tmp_path, text)
    assert [(op.name, op.kind, op.inputs) for op in graph.ops] == [
        ("c", "conv", (INPUT,)),
        ("sum", "add", ("c", "c")),
        ("side", "conv", ("sum",)),
        ("gate", "sigmoid", ("sum",)),
        ("prod", "mul", ("sum", "gate")),
        ("flat", "flatten", ("prod",)),
        ("fc", "linear", ("flat",)),
    ]
    assert graph.by_name()["fc"].attrs == {"in_features": 256, "out": 2, "bias": False}
    assert graph.notes == []


def test_legacy_layers_blocks_read_when_simple(tmp_path: Path) -> None:
    text = (
        HEAD + 'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 '
        "convolution_param { num_output: 4 kernel_size: 3 } }\n"
        'layers { name: "r" type: RELU bottom: "c" top: "c" }\n'
        'layers { name: "p" type: POOLING bottom: "c" top: "p" '
        "pooling_param { pool: AVE kernel_size: 2 stride: 2 } }\n"
        'layers { name: "fc" type: INNER_PRODUCT bottom: "p" top: "fc" '
        "inner_product_param { num_output: 10 } }\n"
        'layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }\n'
    )
    graph = read(tmp_path, text)
    assert [(op.name, op.kind, op.source_op) for op in graph.ops] == [
        ("c", "conv", "Convolution"),
        ("r", "relu", "ReLU"),
        ("p", "avgpool", "Pooling"),
        ("fc_flatten", "flatten", "InnerProduct"),
        ("fc", "linear", "InnerProduct"),
    ]
    assert graph.by_name()["fc"].attrs["in_features"] == 4 * 3 * 3
    assert graph.notes == ["layer 'prob' (Softmax) dropped: resgraph's networks output logits"]


CONV = conv("c", "data")
BAD_IN = 'input: "data"\n'
REFUSALS = [
    pytest.param(
        HEAD + CONV + layer("s", "Scale", ["c"], "c", "scale_param { bias_term: true } "),
        'layer { name: "s"',
        "layer 's' (Scale): not right after a BatchNorm; resgraph has no op for a lone Scale "
        "(its bn is BatchNorm and Scale together)",
        id="lone-scale",
    ),
    pytest.param(
        HEAD + CONV + layer("b", "BatchNorm", ["c"], "c") + layer("r", "ReLU", ["c"], "c"),
        'layer { name: "b"',
        "layer 'b' (BatchNorm): not followed by a Scale (bias_term: true) on its top; "
        "resgraph's bn has an affine transform, and a lone BatchNorm has none",
        id="lone-batchnorm",
    ),
    pytest.param(
        HEAD + CONV + layer("b", "BatchNorm", ["c"], "c") + layer("s", "Scale", ["c"], "c"),
        'layer { name: "s"',
        "layer 's' (Scale): needs bias_term: true after a BatchNorm; resgraph's bn has a bias "
        "(beta)",
        id="scale-without-bias",
    ),
    pytest.param(
        HEAD + CONV + layer("n", "LRN", ["c"], "n", "lrn_param { local_size: 5 } "),
        'layer { name: "n"',
        "layer 'n' (LRN): resgraph has no op for LRN",
        id="unknown-type",
    ),
    pytest.param(
        HEAD
        + layer(
            "c",
            "Convolution",
            ["data"],
            "c",
            "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 } ",
        ),
        "kernel_h",
        "layer 'c' (Convolution): kernel_h 3 and kernel_w 1 differ; resgraph's windows are square",
        id="kernel-h-w",
    ),
    pytest.param(
        HEAD + conv("c", "data", extra="stride: 1 stride: 2 "),
        "stride: 2",
        "layer 'c' (Convolution): stride 1 and 2 differ; resgraph's windows are square",
        id="stride-pair",
    ),
    pytest.param(
        HEAD
        + CONV
        + conv("d", "data")
        + layer("e", "Eltwise", ["c", "d"], "e", "eltwise_param { coeff: 1 coeff: -1 } "),
        "coeff: -1",
        "layer 'e' (Eltwise): coeff -1: resgraph's add and mul have no coefficients",
        id="eltwise-coeff",
    ),
    pytest.param(
        HEAD
        + CONV
        + conv("d", "data")
        + layer("e", "Eltwise", ["c", "d"], "e", "eltwise_param { operation: MAX } "),
        'layer { name: "e"',
        "layer 'e' (Eltwise): resgraph has no op for an elementwise maximum (operation: MAX)",
        id="eltwise-max",
    ),
    pytest.param(
        HEAD + CONV + layer("c", "ReLU", ["c"], "c"),
        'layer { name: "c" type: "ReLU"',
        "layer 'c' (ReLU): a second layer of this name; layer names must be unique",
        id="duplicate-name",
    ),
    pytest.param(
        BAD_IN + CONV,
        "input:",
        "input 'data' has no shape; give input_shape { dim: ... } or four input_dim",
        id="input-without-shape",
    ),
    pytest.param(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 8\n' + CONV,
        "input_dim",
        "the input shape has 3 dims; resgraph reads N x C x H x W",
        id="input-dim-count",
    ),
    pytest.param(
        layer("data", "Input", [], "data") + CONV,
        'layer { name: "data"',
        "layer 'data' (Input): needs input_param { ... }",
        id="input-layer-without-param",
    ),
    pytest.param(
        HEAD + conv("c", "nope"),
        'bottom: "nope"',
        "layer 'c' (Convolution): bottom 'nope' names no blob (no input or earlier layer writes "
        "it)",
        id="bottom-names-no-blob",
    ),
    pytest.param(
        HEAD
        + layer("data2", "Input", [], "x", "input_param { shape { dim: 1 dim: 1 dim: 1 dim: 1 } } ")
        + CONV,
        'layer { name: "data2"',
        "a second input; resgraph networks have one input",
        id="second-input",
    ),
    pytest.param(
        HEAD + layer("r", "ReLU", ["data"], "r", "relu_param { negative_slope: 0.1 } "),
        "negative_slope",
        "layer 'r' (ReLU): negative_slope 0.1: resgraph's relu has slope 0",
        id="leaky-relu",
    ),
    pytest.param(
        HEAD
        + layer("g", "Pooling", ["data"], "g", "pooling_param { pool: MAX global_pooling: true } "),
        'layer { name: "g"',
        "layer 'g' (Pooling): resgraph has no op for global max pooling, only global average "
        "pooling",
        id="global-max-pool",
    ),
    pytest.param(
        HEAD + layer("p", "Pooling", ["data"], "p", "pooling_param { kernel_size: 1 stride: 3 } "),
        'layer { name: "p"',
        "layer 'p' (Pooling): Caffe's last window starts past the input here (stride over "
        "kernel, no pad) and PyTorch drops that window; resgraph cannot match this pool",
        id="pool-window-past-input",
    ),
    pytest.param(
        HEAD + layer("p", "Pooling", ["data"], "p", "pooling_param { kernel_size: 3 pad: 2 } "),
        'layer { name: "p"',
        "layer 'p' (Pooling): pad 2 is more than half its kernel 3; resgraph's pools "
        "(PyTorch's) allow at most 1",
        id="pool-pad-over-half",
    ),
    pytest.param(
        HEAD
        + layer(
            "c",
            "Convolution",
            ["data"],
            "c",
            "convolution_param { num_output: 4 kernel_size: 11 } ",
        ),
        'layer { name: "c"',
        "layer 'c' (Convolution): its 11x11 window is larger than its 8x8 input padded by 0",
        id="conv-window-too-large",
    ),
    pytest.param(
        HEAD + CONV + layer("p", "Softmax", ["c"], "p") + conv("d", "p"),
        'bottom: "p"',
        "layer 'd' (Convolution): bottom 'p' is the output of layer 'p' (Softmax), which "
        "resgraph drops",
        id="softmax-output-read",
    ),
    pytest.param(
        HEAD + CONV + layer("p", "Softmax", ["c"], "p") + conv("d", "c"),
        'layer { name: "p"',
        "layer 'p' (Softmax): resgraph has no op for Softmax; only a final Softmax, on the "
        "network's output, is dropped",
        id="softmax-not-on-output",
    ),
    pytest.param(
        HEAD + conv("c", "data", extra="kernal_size: 3 "),
        "kernal_size",
        "layer 'c' (Convolution): resgraph does not read convolution_param.kernal_size "
        "(did you mean 'kernel_size'?)",
        id="param-typo",
    ),
    pytest.param(
        HEAD
        + layer(
            "c",
            "Convolution",
            ["data"],
            "c",
            'convolution_param { num_output: "4" kernel_size: 3 } ',
        ),
        "num_output",
        "layer 'c' (Convolution): num_output must be an integer from 1 to 65,536, not '4'",
        id="num-output-string",
    ),
    pytest.param(
        HEAD + CONV + conv("d", "data", extra="group: 3 "),
        'layer { name: "d"',
        "layer 'd' (Convolution): group 3 does not divide its 3 input and 4 output channels",
        id="group",
    ),
    pytest.param(
        HEAD
        + CONV
        + layer("p", "Pooling", ["data"], "p", "pooling_param { kernel_size: 2 stride: 2 } ")
        + layer("e", "Eltwise", ["c", "p"], "e"),
        'layer { name: "e"',
        "layer 'e' (Eltwise): its bottoms' shapes (4, 8, 8) and (3, 4, 4) differ",
        id="eltwise-shapes",
    ),
    pytest.param(
        HEAD
        + layer("fc", "InnerProduct", ["data"], "fc", "inner_product_param { num_output: 2 } ")
        + conv("c", "fc"),
        'layer { name: "c"',
        "layer 'c' (Convolution): needs a C x H x W map; its input has shape (2,)",
        id="conv-on-features",
    ),
    pytest.param(
        HEAD + layer("c", "Convolution", ["data"], "c", "include { phase: TEST } "),
        "include",
        "layer 'c' (Convolution): include rules are for train nets; give the deploy prototxt",
        id="include-rule",
    ),
    pytest.param(
        HEAD + CONV + 'layers { name: "r" type: RELU bottom: "c" top: "c" }\n',
        "layers",
        "the net mixes layer { } and legacy layers { } blocks; Caffe refuses that too",
        id="layer-and-layers",
    ),
    pytest.param(
        HEAD + CONV + layer("b", "BatchNorm", ["c"], "c"),
        'layer { name: "b"',
        "layer 'b' (BatchNorm): not followed by a Scale (bias_term: true) on its top; "
        "resgraph's bn has an affine transform, and a lone BatchNorm has none",
        id="batchnorm-last",
    ),
    pytest.param(
        HEAD + conv("input", "data"),
        'layer { name: "input"',
        "layer 'input' (Convolution): 'input' names the network's input in resgraph; rename "
        "the layer",
        id="layer-named-input",
    ),
    pytest.param(
        HEAD
        + CONV
        + conv("d", "data")
        + layer("e", "Eltwise", ["c", "d"], "e", "eltwise_param { coeff: 1 } "),
        "coeff",
        "layer 'e' (Eltwise): 1 coeff for 2 bottoms; Caffe takes one per bottom",
        id="coeff-count",
    ),
    pytest.param(
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 axis: 0 }\n' + CONV,
        "input_shape",
        "input_shape must be { dim: ... }",
        id="input-shape-fields",
    ),
    pytest.param(
        HEAD + 'layer { name: "x" bottom: "data" top: "x" }\n',
        "layer",
        "layer 'x': needs a type",
        id="layer-without-type",
    ),
    pytest.param(
        HEAD + CONV + conv("d", "data"),
        'layer { name: "c"',
        "the net's outputs are 'c' (Convolution), 'd' (Convolution); resgraph networks have "
        "one output, the last op",
        id="two-outputs",
    ),
]


@pytest.mark.parametrize(("text", "needle", "message"), REFUSALS)
def test_each_refusal_is_one_line_at_the_layer_or_field(
    tmp_path: Path, text: str, needle: str, message: str
) -> None:
    with pytest.raises(ImportFailure) as caught:
        read(tmp_path, text)
    assert str(caught.value) == f"{tmp_path / 'net.prototxt'}:{at(text, needle)}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            CONV,
            "the net has no input; declare one: input: with input_shape { dim: ... }, or an Input "
            "layer",
        ),
        (
            HEAD + layer("d", "Dropout", ["data"], "d"),
            "the net has no layer that resgraph computes",
        ),
    ],
)
def test_whole_net_refusals_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ImportFailure) as caught:
        read(tmp_path, text)
    assert str(caught.value) == f"{tmp_path / 'net.prototxt'}: {message}"


def test_names_from_the_file_are_clipped(tmp_path: Path) -> None:
    name, kind = "n\\n" * 10_000, "T" * 10_000
    text = HEAD + layer(name, kind, ["data"], "x")
    with pytest.raises(ImportFailure) as caught:
        read(tmp_path, text)
    shown = "n\\n" * 32 + "..."  # 64 characters of the name, then escaped to one line
    assert str(caught.value) == (
        f"{tmp_path / 'net.prototxt'}:3:1: layer '{shown}' ({'T' * 64}...): resgraph has no op "
        f"for {'T' * 64}..."
    )
