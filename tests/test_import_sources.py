"""`resgraph import` end to end from files: Caffe deploy prototxts (the paper's counts) and
ONNX files (resgraph's own and torch.onnx.export's, BN folded or not) back to the function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

import resgraph
from resgraph.cli import main
from tests.caffe_prototxt import resnet_deploy_prototxt
from tests.test_import import FUNCTION_CHECKED, INPUT_KEYS, randomize, small

# DESIGN.md: the paper's Caffe models (stride in the first 1x1) and torchvision's parameter
# counts; the ResNet-50 deploy net's conv1 has a bias (64 more parameters), 101/152's do not
CAFFE = {
    50: (3_857_973_248, 25_557_032 + 64, [3, 4, 6, 3]),
    101: (7_570_194_432, 44_549_160, [3, 4, 23, 3]),
    152: (11_282_415_616, 60_192_808, [3, 8, 36, 3]),
}


@pytest.mark.parametrize("depth", sorted(CAFFE))
def test_caffe_deploy_prototxts_import_to_the_papers_numbers(
    depth: int, tmp_path: Path, capsys
) -> None:
    macs, params, blocks = CAFFE[depth]
    source, spec = tmp_path / f"ResNet-{depth}-deploy.prototxt", tmp_path / "net.yaml"
    source.write_text(resnet_deploy_prototxt(depth))
    assert main(["import", str(source), "-o", str(spec)]) == 0
    err = capsys.readouterr().err
    assert f"{params:,} parameters, {macs:,} MACs" in err
    assert "layer 'prob' (Softmax) dropped" in err
    data = yaml.safe_load(spec.read_text())
    assert data["block"] == "bottleneck"  # the paper's: stride on the first 1x1
    assert data["shortcut"] == "B"
    assert [s["blocks"] for s in data["stages"]] == blocks
    assert data["stem"][0]["conv"].get("bias", False) == (depth == 50)
    assert data["stem"][3] == {
        "maxpool": {"name": "pool1", "kernel": 3, "stride": 2, "padding": 0, "ceil_mode": True}
    }
    assert data["head"] == {"classes": 1000, "name": "fc1000"}
    compiled = resgraph.compile(spec)
    assert (compiled.macs, compiled.params) == (macs, params)


def test_a_prototxt_has_no_weights_to_write(tmp_path: Path, capsys) -> None:
    source = tmp_path / "ResNet-50-deploy.prototxt"
    source.write_text(resnet_deploy_prototxt(50))
    out = tmp_path / "w.pt"
    assert main(["import", str(source), "--weights-out", str(out)]) == 1
    assert capsys.readouterr().err == f"{source}: --weights-out: a prototxt holds no weights\n"
    assert not out.exists()


ROUND_TRIP = sorted(set(resgraph.registry.list_models()) - {"cifar_resnet1202"})


def _module_and_weights(
    name: str, folder: Path
) -> tuple[resgraph.CompiledNetwork, torch.nn.Module, Path]:
    compiled = resgraph.compile(name, {"input": dict(zip(INPUT_KEYS, small(name), strict=True))})
    module = randomize(compiled.to_module())
    weights = folder / "source.pt"
    torch.save(module.state_dict(), weights)
    return compiled, module, weights


def _same_graph(imported: resgraph.CompiledNetwork, original: resgraph.CompiledNetwork) -> None:
    def layers(network) -> list[tuple]:
        return [(n.op, n.shape, n.params, n.macs) for n in network.nodes.values()]

    assert (imported.params, imported.macs) == (original.params, original.macs)
    assert layers(imported.network) == layers(original.network)


def _function(spec: Path, weights: Path, module: torch.nn.Module, shape: tuple) -> None:
    rebuilt = resgraph.create_model(str(spec), weights=str(weights)).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), module(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_resgraph_onnx_imports_back_to_the_same_graph_and_function(
    name: str, tmp_path: Path
) -> None:
    compiled, module, weights = _module_and_weights(name, tmp_path)
    onnx_file = compiled.onnx(tmp_path / f"{name}.onnx", weights=weights)
    spec, out = tmp_path / "imported.yaml", tmp_path / "imported.pt"
    args = ["import", str(onnx_file), "-o", str(spec)]
    if name in FUNCTION_CHECKED:
        args += ["--weights-out", str(out)]
    assert main(args) == 0
    _same_graph(resgraph.compile(spec), compiled)
    if name in FUNCTION_CHECKED:
        _function(spec, out, module, compiled.network.input.shape)


@pytest.mark.parametrize("name", ["cifar_resnet20", "resnet18", "se_resnet50"])
@pytest.mark.parametrize("folded", [False, True])
def test_torch_onnx_export_imports_with_bn_folded_or_not(
    name: str, folded: bool, tmp_path: Path
) -> None:
    compiled, module, _ = _module_and_weights(name, tmp_path)
    shape = compiled.network.input.shape
    onnx_file = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        module,
        (torch.randn(2, *shape),),
        str(onnx_file),
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
        dynamo=False,
        do_constant_folding=folded,
        training=torch.onnx.TrainingMode.EVAL if folded else torch.onnx.TrainingMode.PRESERVE,
    )
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    has_bn = any(
        n.op_type == "BatchNormalization"
        for n in __import__("onnx").load(str(onnx_file)).graph.node
    )
    assert has_bn != folded  # the exporter did fold (or keep) them
    spec, out = tmp_path / "imported.yaml", tmp_path / "imported.pt"
    assert main(["import", str(onnx_file), "-o", str(spec), "--weights-out", str(out)]) == 0
    imported = resgraph.compile(spec)
    assert imported.macs == compiled.macs
    if not folded:
        _same_graph(imported, compiled)
    else:  # BN in the conv biases: convs with bias and no bn, as the file says
        assert not any(n.op == "bn" and n.role != "head" for n in imported.network.nodes.values())
        assert all(n.attrs.bias for n in imported.network.nodes.values() if n.op == "conv")
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    rebuilt = resgraph.create_model(str(spec), weights=str(out)).eval()
    with torch.no_grad():
        got = rebuilt(torch.from_numpy(x)).numpy()
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_the_docs_prototxt_is_the_test_helpers() -> None:
    """docs/import.md imports this file: it is the deploy form the tests check."""
    shipped = Path(__file__).resolve().parents[1] / "docs/import/ResNet-50-deploy.prototxt"
    assert shipped.read_text() == resnet_deploy_prototxt(50)
