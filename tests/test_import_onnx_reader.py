"""The ONNX reader against onnxruntime: what resgraph's backend and torch.onnx.export write
reads back to the same function, and what resgraph cannot express is one precise line.

Each positive case runs the read SourceGraph with torch (`source.run`) and the file with an
onnxruntime session on the same random input: neither side is the reader's own output.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from resgraph.backends.onnx_export import compile_onnx
from resgraph.backends.pytorch import build_module
from resgraph.importer.onnx_reader import read_onnx
from resgraph.importer.source import ImportFailure, SourceGraph, run
from resgraph.pipeline import Compiled, compile_spec
from tests.conftest import SPECS
from tests.test_onnx_vs_pytorch import _trained_like

# A shipped spec's stem, blocks and shortcuts at a fraction of its cost: 32 x 32 inputs, one
# block in each of the two widest stages
SMALL = ["input.height=32", "input.width=32", "stages.2.blocks=1", "stages.3.blocks=1"]

# Every form the reader must put back together, in a few layers: ceil-mode pools at odd
# sizes (resgraph's end padding and its zero Pad before an AveragePool counting padding),
# SE gates, an option A shortcut (Slice + Pad), the fc head.
TINY = """
name: tiny
description: Every ONNX form the reader must undo, in a few layers.
input: {channels: 3, height: 30, width: 34}
shortcut: A
stem:
  - conv: {name: conv1, out: 8, kernel: 3}
  - bn: {name: bn1}
  - relu
  - maxpool: {kernel: 3, stride: 2, padding: 1, ceil_mode: true}
  - avgpool: {name: pool2, kernel: 3, stride: 2, padding: 1, ceil_mode: true}
  - avgpool: {name: pool3, kernel: 2, stride: 2, padding: 0, ceil_mode: true,
              count_include_pad: false}
block: se_basic
block_types:
  se_basic:
    description: A basic block with a squeeze-and-excitation gate before the add.
    stride_on: conv1
    layers:
      - conv: {name: conv1, out: width, kernel: 3}
      - bn: {name: bn1}
      - relu: {name: relu1}
      - conv: {name: conv2, out: width, kernel: 3}
      - bn: {name: bn2}
      - se: {reduction: 4}
      - add
      - relu
stages:
  - {blocks: 1, width: 8}
  - {blocks: 1, width: 16, stride: 2}
head: {classes: 5}
"""
TINY_POOLS = [
    ("maxpool", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    (
        "avgpool",
        {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": True},
    ),
    (
        "avgpool",
        {"kernel": 2, "stride": 2, "padding": 0, "ceil_mode": True, "count_include_pad": False},
    ),
]
POOLS = ("maxpool", "avgpool")
TINY_CONVS = [
    "conv1",
    *(f"layer{i}.0.{name}" for i in (1, 2) for name in ("conv1", "conv2", "se.fc1", "se.fc2")),
]


def _agree(path: Path, tolerance: float = 1e-4) -> SourceGraph:
    """The read graph, checked to compute what onnxruntime computes from the file."""
    graph = read_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, *graph.input)).astype(np.float32)
    (expected,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        got = run(graph, torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= tolerance * scale
    return graph


def _trained(compiled: Compiled) -> torch.nn.Module:
    """The generated module with trained-like BN statistics and non-zero conv biases (an
    exporter may drop a bias of zeros, as dynamo's optimizer does)."""
    torch.manual_seed(1)
    module = build_module(compiled).eval()
    _trained_like(module)
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d) and layer.bias is not None:
            layer.bias.data.normal_(0.0, 0.1)
    return module


def _resgraph_onnx(compiled: Compiled, tmp_path: Path, **options: object) -> Path:
    """resgraph's own ONNX of `compiled`, with trained-like weights from its module."""
    weights = tmp_path / "weights.pt"
    torch.save(_trained(compiled).state_dict(), weights)
    out = tmp_path / f"{compiled.network.name}.onnx"
    compile_onnx(compiled, output=out, weights=weights, **options)  # type: ignore[arg-type]
    return out


def _kinds(graph: SourceGraph) -> Counter[str]:
    return Counter(op.kind for op in graph.ops)


# -- resgraph's own ONNX --------------------------------------------------------------


def test_cifar_resnet20_reads_back_op_for_op(tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / "cifar_resnet20.yaml", [])
    graph = _agree(_resgraph_onnx(compiled, tmp_path))
    assert _kinds(graph) == {
        "conv": 19,
        "bn": 19,
        "relu": 19,
        "add": 9,
        "subsample": 2,
        "pad_channels": 2,
        "global_avgpool": 1,
        "flatten": 1,
        "linear": 1,
    }
    assert graph.input == (3, 32, 32)
    first = graph.ops[0]
    assert (first.name, first.kind, first.module, first.source_op) == (
        "conv1",
        "conv",
        "conv1",
        "Conv",
    )
    assert first.attrs == {
        "in_channels": 3,
        "out": 16,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
        "dilation": 1,
        "groups": 1,
        "bias": False,
    }
    shortcut = [op for op in graph.ops if op.kind in ("subsample", "pad_channels")][:2]
    assert [(op.kind, op.module, op.attrs) for op in shortcut] == [
        ("subsample", "layer2.0.downsample", {"stride": 2}),
        ("pad_channels", "layer2.0.downsample", {"before": 0, "after": 16}),
    ]
    bn = graph.by_name()["layer1.0.bn1"]
    assert (bn.module, bn.attrs) == ("layer1.0.bn1", {"channels": 16, "eps": 1e-05})
    assert graph.output.module == "fc" and graph.output.attrs["bias"]


@pytest.mark.parametrize(
    ("spec", "fold_bn"),
    [
        ("resnet18", False),
        ("resnet50", True),
        ("resnet50_d", False),
        ("se_resnet50", False),
        ("preact_resnet18", False),
    ],
)
def test_resgraph_onnx_of_shipped_specs(spec: str, fold_bn: bool, tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / f"{spec}.yaml", SMALL)
    path = _resgraph_onnx(compiled, tmp_path, fold_bn=fold_bn)
    graph = _agree(path)
    ops = compiled.network.nodes.values()
    convs = sum(n.op == "conv" for n in ops) + 2 * sum(n.op == "se" for n in ops)
    assert _kinds(graph)["conv"] == convs
    assert _kinds(graph)["bn"] == (0 if fold_bn else sum(n.op == "bn" for n in ops))
    for op in graph.ops:
        # each op's module is a node of resgraph's graph (SE's fcs: fc1, fc2 inside one)
        module = str(op.module)
        assert module in compiled.network.nodes or (
            module.rpartition(".")[0] in compiled.network.nodes and ".se." in module
        )
        # SE's fcs have biases, other convs only where BN folded into them
        assert op.kind != "conv" or op.attrs["bias"] == (fold_bn or ".se." in str(op.module))


def test_weights_are_the_modules_tensors_by_torch_names(tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / "cifar_resnet20.yaml", [])
    state = _trained(compiled).state_dict()
    graph = read_onnx(_resgraph_onnx(compiled, tmp_path))
    held = {f"{op.module}.{key}": value for op in graph.ops for key, value in op.weights.items()}
    assert held.keys() == {k for k in state if not k.endswith("num_batches_tracked")}
    for key, value in held.items():
        np.testing.assert_array_equal(value, state[key].numpy())


@pytest.mark.parametrize("opset", [11, 17])
def test_resgraph_ceil_mode_pools_read_back(opset: int, tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY, encoding="utf-8")
    path = _resgraph_onnx(compile_spec(spec, []), tmp_path, opset=opset)
    model = onnx.load(str(path))
    # the forms ops/pool.py writes: floor mode with end pads, a zero Pad before the average
    assert "Pad" in [n.op_type for n in model.graph.node if n.name == "pool2/pad"]
    assert all(a.i == 0 for n in model.graph.node for a in n.attribute if a.name == "ceil_mode")
    graph = _agree(path)
    assert [(op.kind, op.attrs) for op in graph.ops if op.kind in POOLS] == TINY_POOLS
    assert [op.module for op in graph.ops if op.kind == "conv"] == TINY_CONVS


def test_fp16_model_reads_as_float32(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY, encoding="utf-8")
    path = _resgraph_onnx(compile_spec(spec, []), tmp_path, fp16=True)
    graph = _agree(path, tolerance=1e-2)  # onnxruntime computes in half precision
    assert [op.name for op in graph.ops[:2]] == ["conv1", "bn1"]  # the Casts are no ops
    assert all(w.dtype == np.float32 for op in graph.ops for w in op.weights.values())


def test_external_weights_beside_the_model(tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / "cifar_resnet20.yaml", ["n=1"])
    path = _resgraph_onnx(compiled, tmp_path, external_threshold=0)
    assert len(list(tmp_path.glob(f"{path.name}.*.data"))) == 1
    _agree(path)


# -- torch.onnx.export ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    spec = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    spec.write_text(TINY, encoding="utf-8")
    return _trained(compile_spec(spec, []))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warn about TorchScript's deprecation."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


TINY_INPUT = torch.randn(2, 3, 30, 34)


@pytest.fixture(scope="module")
def dynamo_exports(
    tiny_module: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> dict[bool, Path]:
    """dynamo's export as it comes (BN kept), then after its optimizer (BN folded), which
    `optimize=True` would run: one slow export, two files."""
    folder = tmp_path_factory.mktemp("dynamo")
    paths = {False: folder / "bn.onnx", True: folder / "bn_folded.onnx"}
    with _quiet():
        program = torch.onnx.export(
            tiny_module,
            (TINY_INPUT,),
            input_names=["input"],
            output_names=["logits"],
            dynamo=True,
            optimize=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        assert program is not None
        program.save(str(paths[False]))
        program.optimize()
        program.save(str(paths[True]))
    return paths


def _torchscript_export(module: torch.nn.Module, path: Path, fold: bool, opset: int | None) -> Path:
    """torch.onnx.export's TorchScript path with a dynamic batch; `fold`: BN folded into the
    convs, else kept; `opset` None: the exporter's own."""
    mode = torch.onnx.TrainingMode
    with _quiet():
        torch.onnx.export(
            module,
            (TINY_INPUT,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamo=False,
            opset_version=opset,
            dynamic_axes={"input": {0: "batch"}},
            do_constant_folding=fold,
            training=mode.EVAL if fold else mode.PRESERVE,
        )
    return path


@pytest.mark.parametrize(
    ("dynamo", "fold", "opset"),
    [
        (False, False, None),
        (False, True, None),
        (False, False, 11),  # ReduceMean's axes an attribute, Squeeze/Unsqueeze's too
        (True, False, None),
        (True, True, None),
    ],
    ids=[
        "torchscript-bn",
        "torchscript-bn_folded",
        "torchscript-opset11",
        "dynamo-bn",
        "dynamo-bn_folded",
    ],
)
def test_torch_onnx_export(
    tiny_module: torch.nn.Module,
    dynamo_exports: dict[bool, Path],
    dynamo: bool,
    fold: bool,
    opset: int | None,
    tmp_path: Path,
) -> None:
    if dynamo:
        path = dynamo_exports[fold]
    else:
        path = _torchscript_export(tiny_module, tmp_path / "tiny.onnx", fold, opset)
    graph = _agree(path)
    kinds = _kinds(graph)
    assert kinds["bn"] == (0 if fold else 5)
    assert (kinds["conv"], kinds["subsample"], kinds["pad_channels"]) == (9, 1, 1)
    assert (kinds["global_avgpool"], kinds["mul"], kinds["sigmoid"]) == (3, 2, 2)
    assert [(op.kind, op.attrs) for op in graph.ops if op.kind in POOLS] == TINY_POOLS
    convs = [op for op in graph.ops if op.kind == "conv"]
    assert all(op.attrs["bias"] == (fold or ".se." in str(op.module)) for op in convs)
    assert [op.module for op in convs] == TINY_CONVS
    assert graph.output.module == "fc"
    # every op but the flatten (torch.flatten in forward, no module) names its module
    assert {op.kind for op in graph.ops if op.module is None} == {"flatten"}


# -- forms no exporter above writes, built by hand ----------------------------------


def _model(
    nodes: list[onnx.NodeProto],
    arrays: dict[str, np.ndarray],
    shape: list[int | str] | None = None,
    out_rank: int = 4,
    opset: int = 17,
) -> onnx.ModelProto:
    """A model reading `input` (N x 3 x 8 x 8 unless `shape`) and writing `y`."""
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape or ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * out_rank)],
        [numpy_helper.from_array(a, name) for name, a in arrays.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _random(*shape: int) -> np.ndarray:
    return np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)


def _conv(output: str, pads: list[int], name: str = "conv") -> onnx.NodeProto:
    return helper.make_node(
        "Conv", ["input", "onnx::Conv_123"], [output], name=name, kernel_shape=[3, 3], pads=pads
    )


def test_matmul_plus_add_is_one_linear(tmp_path: Path) -> None:
    nodes = [
        _conv("c", [1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
        helper.make_node("MatMul", ["f", "head.weight_t"], ["m"], name="head/matmul"),
        helper.make_node("Add", ["m", "head.bias"], ["y"], name="head/add"),
    ]
    arrays = {
        "onnx::Conv_123": _random(4, 3, 3, 3),
        "head.weight_t": _random(4, 6),
        "head.bias": _random(6),
    }
    graph = _agree(_save(_model(nodes, arrays, out_rank=2), tmp_path / "m.onnx"))
    assert [op.kind for op in graph.ops] == ["conv", "global_avgpool", "flatten", "linear"]
    conv, linear = graph.ops[0], graph.ops[-1]
    assert conv.module is None  # `onnx::Conv_123` and `conv` say nothing of a module
    assert (linear.name, linear.module, linear.attrs) == (
        "head/matmul",
        "head",
        {"in_features": 4, "out": 6, "bias": True},
    )
    np.testing.assert_array_equal(linear.weights["weight"], arrays["head.weight_t"].T)


def test_duplicate_node_names_give_way_to_outputs(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["input"], ["a"], name="same"),
        helper.make_node("Relu", ["a"], ["y"], name="same"),
    ]
    graph = read_onnx(_save(_model(nodes, {}), tmp_path / "m.onnx"))  # onnxruntime refuses
    assert [op.name for op in graph.ops] == ["a", "y"]


# -- errors: one line each, naming the node and the op ---------------------------------


def _failure(path: Path, **options: object) -> str:
    with pytest.raises(ImportFailure) as caught:
        read_onnx(path, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_op_resgraph_lacks(tmp_path: Path) -> None:
    nodes = [
        _conv("c", [1, 1, 1, 1]),
        helper.make_node("Softmax", ["c"], ["y"], name="Softmax_12", axis=1),
    ]
    path = _save(_model(nodes, {"onnx::Conv_123": _random(4, 3, 3, 3)}), tmp_path / "m.onnx")
    assert _failure(path) == f"{path}: node 'Softmax_12' (Softmax): resgraph has no op for Softmax"


def test_asymmetric_conv_pads(tmp_path: Path) -> None:
    nodes = [_conv("y", [0, 0, 1, 1])]
    path = _save(_model(nodes, {"onnx::Conv_123": _random(4, 3, 3, 3)}), tmp_path / "m.onnx")
    assert _failure(path) == (
        f"{path}: node 'conv' (Conv): pads [0, 0, 1, 1] differ between sides; resgraph's "
        "convs pad all alike"
    )


def test_a_pad_on_height_alone_is_named(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["p"], name="pad"),
        helper.make_node("Relu", ["p"], ["y"], name="relu"),
    ]
    pads = np.array([0, 0, 1, 0, 0, 0, 1, 0], dtype=np.int64)
    path = _save(_model(nodes, {"pads": pads}), tmp_path / "m.onnx")
    assert _failure(path) == (
        f"{path}: node 'pad' (Pad): pads height and width by itself; resgraph pads them "
        "only inside a conv or pool (a zero Pad read by an AveragePool)"
    )


@pytest.mark.parametrize(
    ("nodes", "arrays", "what"),
    [
        (
            [helper.make_node("Slice", ["input", "zero", "end", "h", "two"], ["y"], name="s")],
            {"h": np.array([2])},
            "node 's' (Slice): subsamples height by 2 and width by 1; resgraph subsamples both "
            "alike",
        ),
        (
            [helper.make_node("Reshape", ["input", "shape"], ["y"], name="r")],
            {"shape": np.array([0, 3, -1])},
            "node 'r' (Reshape): reshapes N x 3x8x8 to [0, 3, -1]; resgraph reshapes only to "
            "N x -1",
        ),
        (
            [helper.make_node("ReduceMean", ["input"], ["y"], name="m", axes=[2, 3], keepdims=0)],
            {},
            "node 'm' (ReduceMean): averages over axes [2, 3] without keeping them; resgraph "
            "averages over height and width, keeping them (a global average pool)",
        ),
        (
            [helper.make_node("Mul", ["input", "two_f"], ["y"], name="k")],
            {"two_f": np.array([2.0], dtype=np.float32)},
            "node 'k' (Mul): multiplies by a constant; resgraph multiplies feature maps only",
        ),
    ],
    ids=["slice_height_only", "reshape", "mean_dropping_axes", "mul_constant"],
)
def test_forms_resgraph_cannot_express(
    nodes: list[onnx.NodeProto], arrays: dict[str, np.ndarray], what: str, tmp_path: Path
) -> None:
    common = {"zero": np.array([0]), "end": np.array([2**63 - 1]), "two": np.array([2])}
    path = _save(_model(nodes, {**common, **arrays}), tmp_path / "m.onnx")
    assert _failure(path) == f"{path}: {what}"


def test_a_constant_too_large_to_fold(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], name="c"),
        helper.make_node("Add", ["input", "big"], ["y"], name="add"),
    ]
    shape = np.array([1 << 20, 1 << 20], dtype=np.int64)
    path = _save(_model(nodes, {"shape": shape}), tmp_path / "m.onnx")
    assert _failure(path) == (
        f"{path}: node 'c' (ConstantOfShape): would build a constant of 1,099,511,627,776 elements"
    )


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "spec.onnx"
    path.write_bytes((SPECS / "cifar_resnet20.yaml").read_bytes())
    assert _failure(path) == f"{path}: not an ONNX model"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert _failure(empty) == f"{empty}: not an ONNX model (no graph)"


def test_oversize_file(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["input"], ["y"], name="relu")]
    path = _save(_model(nodes, {}), tmp_path / "m.onnx")
    assert read_onnx(path).ops[0].kind == "relu"
    assert _failure(path, limit=64) == f"{path}: over 64 bytes; an ONNX model is limited to 64"


@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        (["N", 3, "height", "width"], "N x 3 x height x width"),
        (["N", "C", 8, 8], "N x C x 8 x 8"),
        ([1, 3, 8], "1 x 3 x 8"),
    ],
)
def test_input_without_fixed_chw(shape: list[int | str], shown: str, tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["input"], ["y"], name="relu")]
    path = _save(_model(nodes, {}, shape), tmp_path / "m.onnx")
    assert _failure(path) == (
        f"{path}: input 'input' is {shown}; resgraph needs N x C x H x W with C, H and W "
        "fixed (1 to 65,536)"
    )


def _external(folder: Path, location: str) -> Path:
    """A conv model whose weight lives at `location` (relative to `folder`, the model's)."""
    model = _model([_conv("y", [1, 1, 1, 1])], {"onnx::Conv_123": _random(4, 3, 3, 3)})
    tensor = model.graph.initializer[0]
    data = tensor.raw_data
    (folder.parent / "w.data").write_bytes(data)
    (folder / "w.data").write_bytes(data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(len(data))}.items():
        tensor.external_data.add(key=key, value=value)
    return _save(model, folder / "m.onnx")


def test_external_data_inside_the_folder_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    _agree(_external(folder, "w.data"))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_escaping_the_folder(how: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "w.data"
    if how == "symlink":
        os.symlink(outside, folder / "link.data")
    location = {"dotdot": "../w.data", "absolute": str(outside), "symlink": "link.data"}[how]
    path = _external(folder, location)
    verb = "links" if how == "symlink" else "is"
    assert _failure(path) == (
        f"{path}: tensor 'onnx::Conv_123': external data '{location}' {verb} outside the "
        "model's folder; only files beside the model are read"
    )
