"""The ONNX graph itself: valid for the checker, resgraph's shapes, names, ops and options."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
from conftest import SPECS

from resgraph.backends.onnx_export import MIN_OPSET, build_model
from resgraph.backends.onnx_weights import he_init
from resgraph.errors import SpecError
from resgraph.pipeline import Compiled, compile_spec

SPEC_PATHS = sorted(SPECS.glob("*.yaml"))
NATIVE_OPS = {
    "Conv",
    "Sigmoid",
    "Mul",
    "BatchNormalization",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Gemm",
    "Add",
    "Slice",
    "Pad",
    "Cast",
}  # TensorRT and ORT CUDA run these


def _model(compiled: Compiled, **options: object) -> onnx.ModelProto:
    return build_model(compiled, he_init(compiled.network, 0), **options)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every tensor's shape as onnx's own (strict) shape inference derives it."""
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    return {v.name: _dims(v) for v in (*graph.value_info, *graph.output)}


@pytest.fixture(scope="module", params=SPEC_PATHS, ids=[p.stem for p in SPEC_PATHS])
def shipped(request: pytest.FixtureRequest) -> Iterator[tuple[Compiled, onnx.ModelProto]]:
    """Each shipped spec at its own input size with its He-init model, built once per spec."""
    compiled = compile_spec(request.param)
    yield compiled, _model(compiled)


def test_shipped_specs_pass_the_full_checker(shipped: tuple[Compiled, onnx.ModelProto]) -> None:
    onnx.checker.check_model(shipped[1], full_check=True)


def test_onnx_shapes_equal_resgraph_shapes(shipped: tuple[Compiled, onnx.ModelProto]) -> None:
    compiled, model = shipped
    shapes = _inferred_shapes(model)
    graph = compiled.graph
    for name, node in graph.nodes(data=True):
        if node["op"] != "input":
            tensor = "logits" if name == graph.graph["output"] else name
            assert shapes[tensor] == ["batch", *node["shape"]], name


def test_nodes_are_named_after_resgraph_nodes_and_use_native_ops(
    shipped: tuple[Compiled, onnx.ModelProto],
) -> None:
    compiled, model = shipped
    names = {n.name.split("/")[0] for n in model.graph.node}
    assert names == {n for n, op in compiled.graph.nodes(data="op") if op != "input"}
    assert {n.op_type for n in model.graph.node} <= NATIVE_OPS


def test_folding_removes_every_batchnorm_and_keeps_the_shapes() -> None:
    compiled = compile_spec(SPECS / "resnet50_v1_5.yaml")
    model = _model(compiled, fold_bn=True)
    onnx.checker.check_model(model, full_check=True)
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    shapes = _inferred_shapes(model)
    for name, node in compiled.graph.nodes(data=True):
        if node["op"] not in ("input", "bn", "linear"):
            assert shapes[name] == ["batch", *node["shape"]], name
    assert all(f"{n.name}.bias" in n.input for n in model.graph.node if n.op_type == "Conv")


def test_option_a_shortcut_is_a_parameter_free_slice_and_pad() -> None:
    model = _model(compile_spec(SPECS / "cifar_resnet20.yaml"))
    shortcut = [n for n in model.graph.node if n.name.startswith("layer2.0.downsample")]
    assert [n.op_type for n in shortcut] == ["Slice", "Pad"]
    assert not any(init.name.startswith("layer2.0.downsample.") for init in model.graph.initializer)


def test_batch_axis_is_dynamic_unless_a_static_batch_is_asked_for() -> None:
    compiled = compile_spec(SPECS / "cifar_resnet20.yaml")
    dynamic, static = _model(compiled), _model(compiled, static_batch=8)
    assert _dims(dynamic.graph.input[0]) == ["batch", 3, 32, 32]
    assert _dims(dynamic.graph.output[0]) == ["batch", 10]
    assert _dims(static.graph.input[0]) == [8, 3, 32, 32]
    assert _inferred_shapes(static)["layer3.2.relu"] == [8, 64, 8, 8]


def test_fp16_keeps_float32_at_the_boundaries_and_half_inside() -> None:
    model = _model(compile_spec(SPECS / "cifar_resnet20.yaml"), fp16=True)
    onnx.checker.check_model(model, full_check=True)
    float32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == float32
    assert model.graph.output[0].type.tensor_type.elem_type == float32
    kinds = {init.data_type for init in model.graph.initializer}
    assert kinds == {onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64}
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert [n.name for n in casts] == ["input/fp16", "logits/fp32"]


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, onnx.defs.onnx_opset_version()])
def test_opset_is_selectable_and_ir_version_is_the_oldest_that_carries_it(opset: int) -> None:
    model = _model(compile_spec(SPECS / "cifar_resnet20.yaml"), opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"opset": MIN_OPSET - 1}, "--opset"),
        ({"opset": 999}, "--opset"),
        ({"static_batch": 0}, "--static-batch"),
    ],
)
def test_unsupported_options_are_spec_errors_naming_the_flag(
    options: dict[str, int], flag: str
) -> None:
    with pytest.raises(SpecError) as caught:
        _model(compile_spec(SPECS / "cifar_resnet20.yaml"), **options)
    assert str(caught.value).startswith(f"{flag}: ")


def test_model_records_its_spec() -> None:
    compiled = compile_spec(SPECS / "resnet18.yaml")
    model = _model(compiled)
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"resgraph.spec": "resnet18", "resgraph.spec_hash": compiled.content_hash}
    assert model.graph.name == "resnet18"


@pytest.mark.parametrize("fp16", [False, True])
def test_a_head_named_logits_gives_one_logits_tensor(
    write_spec: Callable[[str], Path], fp16: bool
) -> None:
    spec = f"extends: {SPECS / 'cifar_resnet20.yaml'}\nhead: {{classes: 10, name: logits}}\n"
    model = _model(compile_spec(write_spec(spec)), fp16=fp16)
    onnx.checker.check_model(model, full_check=True)
    assert [n.name for n in model.graph.node if "logits" in n.output] == [
        "logits/fp32" if fp16 else "logits"
    ]
