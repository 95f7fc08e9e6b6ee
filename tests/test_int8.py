"""int8 ONNX end to end: a ResNet-20 trained on the real digits by `resgraph train`, quantized
with `compile --int8 --calibrate digits`, and scored by onnxruntime on the digits test images
beside the float model; the QDQ graph's structure; `evaluate --onnx`; and each bad input's
one-line message, with nothing written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from resgraph.cli import main
from resgraph.train import augment
from resgraph.train.datasets import digits
from tests.conftest import SPECS, run_cli

RESNET20 = str(SPECS / "cifar_resnet20.yaml")
SMALL = ["--set", "input.height=16", "--set", "input.width=16"]  # as the run was trained
INPUT = (3, 16, 16)
# One thread per process: on a busy machine OpenMP's spinning threads slow training tenfold.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet-20 at 16x16 trained on the real digits for 4 epochs (quick recipe): ~2% error."""
    run = tmp_path_factory.mktemp("runs") / "r20"
    done = run_cli("train", RESNET20, *SMALL, "--epochs", "4", "--out", str(run), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def int8(run: Path) -> Path:
    """The run's best.pt compiled to int8 by the console script, calibrated on digits."""
    output = run.parent / "r20_int8.onnx"
    done = run_cli(
        "compile",
        RESNET20,
        *SMALL,
        "--target",
        "onnx",
        "--weights",
        str(run / "best.pt"),
        "--int8",
        "--calibrate",
        "digits",
        "-o",
        str(output),
        env=ONE_THREAD,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{RESNET20} -> {output}\n", "")
    return output


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `resgraph ARGS` in this process: (exit status, stdout, stderr)."""
    monkeypatch.delenv("RESGRAPH_DEBUG", raising=False)

    def call(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return call


def _test_images(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as the trainer feeds it, computed here from its parts: fitted to
    the input, minus the checkpoint's per-pixel mean."""
    mean = torch.load(run / "best.pt", weights_only=True)["pixel_mean"]
    test = digits().test
    images = augment.fit(test.images, *INPUT).float() / 255 - mean
    return images.numpy(), test.labels.numpy()


def _predict(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images})[0].argmax(1)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """In-process commands on one torch thread too, like the console scripts above."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _evaluate(cli, run: Path, onnx_file: Path) -> dict:
    """`resgraph evaluate RUN --onnx FILE` (in this process): the JSON result and stdout."""
    output = onnx_file.with_suffix(".json")
    status, out, err = cli("evaluate", str(run), "--onnx", str(onnx_file), "-o", str(output))
    assert status == 0, err
    return json.loads(output.read_text()) | {"stdout": out}


def test_int8_keeps_the_float_models_accuracy_on_the_digits_test_images(
    run: Path, int8: Path, cli
) -> None:
    images, labels = _test_images(run)
    result = _evaluate(cli, run, int8)
    float_error = result["top1_error"]
    assert result["images"] == len(labels) == 360 and float_error <= 0.05, result
    # onnxruntime on the test images, computed here: the error evaluate reports
    predicted = _predict(int8, images)
    int8_error = float((predicted != labels).mean())
    assert result["onnx"]["top1_error"] == pytest.approx(int8_error, abs=1e-12)
    assert abs(int8_error - float_error) <= 0.005, (int8_error, float_error)
    assert result["onnx"]["top1_agreement"] >= 0.99, result["onnx"]
    assert result["stdout"].splitlines()[2:5] == [
        f"pytorch      {float_error:>11.2%} {result['top5_error']:>11.2%}",
        f"onnx         {int8_error:>11.2%} {result['onnx']['top5_error']:>11.2%}",
        f"onnx: {int8}; top-1 class agrees on {result['onnx']['top1_agreement']:.2%}",
    ]


def test_evaluate_onnx_scores_a_float_graph_exactly_like_the_checkpoint(
    run: Path, cli, tmp_path: Path
) -> None:
    fp32 = tmp_path / "r20.onnx"
    weights = str(run / "best.pt")
    assert (
        cli("compile", RESNET20, *SMALL, "--target", "onnx", "--weights", weights, "-o", str(fp32))[
            0
        ]
        == 0
    )
    result = _evaluate(cli, run, fp32)
    assert result.pop("stdout") and result["onnx"] == {
        "file": str(fp32),
        "top1_error": result["top1_error"],
        "top5_error": result["top5_error"],
        "top1_agreement": 1.0,
    }


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_the_graph_is_qdq_with_per_channel_7_bit_weights_and_bn_folded(int8: Path) -> None:
    model = onnx.load(str(int8))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    arrays = _initializers(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layers) == 20  # 19 convs and the fc
    for layer in layers:
        dequantize = producer[layer.input[1]]
        assert dequantize.op_type == "DequantizeLinear", layer.name
        weight, scale, zero = (arrays[name] for name in dequantize.input)
        assert weight.dtype == np.int8 and scale.shape == zero.shape == (weight.shape[0],)
        assert not zero.any() and np.abs(weight).max() <= 64  # symmetric, 7 bits of range
        axis = {a.name: a.i for a in dequantize.attribute}.get("axis", 1)
        assert axis == 0, layer.name  # one scale per output channel
        assert producer[layer.input[0]].op_type == "DequantizeLinear"  # int8 activations in
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert adds and all(producer[x].op_type == "DequantizeLinear" for a in adds for x in a.input)
    zero_points = {
        arrays[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"
    }
    assert zero_points == {np.dtype(np.uint8)}  # asymmetric activations: ReLUs fold away


def test_symmetric_and_static_batch_int8(run: Path, cli, tmp_path: Path) -> None:
    output = tmp_path / "r20_trt.onnx"
    args = ["--target", "onnx", "--weights", str(run / "best.pt"), "--int8", "--calibrate"]
    status = cli(
        "compile",
        RESNET20,
        *SMALL,
        *args,
        "digits",
        "--int8-symmetric",
        "--static-batch",
        "7",
        "--calibration-images",
        "64",
        "-o",
        str(output),
    )
    assert status == (0, f"{RESNET20} -> {output}\n", "")
    model = onnx.load(str(output))
    arrays = _initializers(model)
    # TensorRT's form: int8 activations whose zero points are all 0
    zeros = [arrays[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zeros and all(z.dtype == np.int8 and not z.any() for z in zeros)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 7
    result = _evaluate(cli, run, output)  # 360 images in padded chunks of 7
    assert result["images"] == 360 and result["onnx"]["top1_agreement"] >= 0.99, result["onnx"]


def _compile_args(output: Path, *extra: str) -> list[str]:
    return ["compile", RESNET20, "--target", "onnx", *extra, "-o", str(output)]


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """Image folders that cannot calibrate: an empty class, an unreadable image."""
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    bad = tmp_path / "bad" / "train" / "a"
    bad.mkdir(parents=True)
    (bad / "0.png").write_bytes(b"not an image")
    (tmp_path / "bad" / "val" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "val" / "a" / "0.png").write_bytes(b"not an image")
    return tmp_path


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (
            ["--int8"],
            2,
            "resgraph compile: --int8 and --calibrate SOURCE go together (the int8 ranges "
            "come from the calibration images)",
        ),
        (
            ["--calibrate", "digits"],
            2,
            "resgraph compile: --int8 and --calibrate SOURCE go together (the int8 ranges "
            "come from the calibration images)",
        ),
        (["--int8-symmetric"], 2, "resgraph compile: --int8-symmetric: only with --int8"),
        (
            ["--int8", "--calibrate", "nosuch"],
            1,
            "--calibrate nosuch: unknown data source; expected one of digits, synthetic[:N], "
            "cifar10:DIR, imagefolder:DIR",
        ),
        (
            ["--int8", "--calibrate", "synthetic:0"],
            1,
            "--calibrate synthetic:0: synthetic:N needs a positive number of training images",
        ),
        (
            ["--int8", "--calibrate", "imagefolder:{tmp}/missing"],
            1,
            "{tmp}/missing: no such folder",
        ),
        (
            ["--int8", "--calibrate", "imagefolder:{tmp}/empty"],
            1,
            "{tmp}/empty/train/a: empty class folder: no images (.jpg, .png, ...)",
        ),
        (
            ["--int8", "--calibrate", "imagefolder:{tmp}/bad"],
            1,
            "{tmp}/bad/train/a/0.png: cannot read this image (missing, truncated or not an image)",
        ),
        (
            ["--int8", "--calibrate", "imagefolder:{tmp}/bad", "--set", "input.channels=2"],
            1,
            "--calibrate imagefolder:{tmp}/bad: input.channels is 2, but --calibrate "
            "imagefolder:{tmp}/bad has 3-channel images, which become 1 or 3 channels only",
        ),
        (
            ["--int8", "--calibrate", "digits", "--set", "input.height=5000"],
            1,
            "spec input: the input is 5000x32; the trainer takes sides up to 4096",
        ),
        (
            ["--int8", "--calibrate", "digits", "--fp16"],
            1,
            "--fp16: --int8 and --fp16 are two precisions; choose one",
        ),
        (
            ["--int8", "--calibrate", "digits", "--opset", "12"],
            1,
            "--opset: --int8 stores per-channel scales, which need opset 13 or newer",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    cli, folders: Path, extra: list[str], status: int, message: str
) -> None:
    output = folders / "out" / "model.onnx"
    extra = [e.replace("{tmp}", str(folders)) for e in extra]
    assert cli(*_compile_args(output, *extra)) == (
        status,
        "",
        message.replace("{tmp}", str(folders)) + "\n",
    )
    assert not output.parent.exists()


def test_weights_trained_at_another_input_size_are_named(run: Path, cli, tmp_path: Path) -> None:
    output = tmp_path / "model.onnx"
    weights = run / "best.pt"  # trained at 16x16; the spec's own input is 32x32
    assert cli(
        *_compile_args(output, "--weights", str(weights), "--int8", "--calibrate", "digits")
    ) == (
        1,
        "",
        f"{weights}: these weights were trained on 3x16x16 input, the spec's is 3x32x32; "
        "compile with the run's --set values\n",
    )
    assert not output.exists()


def test_int8_on_pytorch_target_is_refused(cli, tmp_path: Path) -> None:
    output = tmp_path / "model.py"
    assert cli("compile", RESNET20, "--int8", "--calibrate", "digits", "-o", str(output)) == (
        2,
        "",
        "resgraph compile: --int8, --calibrate: only with --target onnx\n",
    )
    assert not output.exists()


def test_missing_onnxruntime_is_one_line(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    output = tmp_path / "model.onnx"
    assert cli(*_compile_args(output, "--int8", "--calibrate", "digits")) == (
        1,
        "",
        "resgraph compile: needs onnxruntime, which is not installed: "
        "pip install 'resgraph[onnx]'\n",
    )
    assert not output.exists()


def test_a_failed_quantization_leaves_the_old_file(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("calibration ran out of memory")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", fail)
    output = tmp_path / "model.onnx"
    output.write_bytes(b"the previous model")
    status, _, err = cli(*_compile_args(output, "--int8", "--calibrate", "synthetic:8"))
    assert (status, err) == (
        70,
        "resgraph: internal error: RuntimeError: calibration ran out of memory "
        "(set RESGRAPH_DEBUG=1 for the traceback)\n",
    )
    assert output.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_evaluate_onnx_refuses_what_it_cannot_score(run: Path, cli, tmp_path: Path) -> None:
    missing = tmp_path / "none.onnx"
    assert cli("evaluate", str(run), "--onnx", str(missing)) == (
        1,
        "",
        f"{missing}: no such ONNX file\n",
    )
    other = tmp_path / "r20_32.onnx"
    assert cli(*_compile_args(other))[0] == 0  # the spec's own 32x32 input, not the run's
    assert cli("evaluate", str(run), "--onnx", str(other)) == (
        1,
        "",
        f"{other}: the model's input is 3x32x32, the run's is 3x16x16\n",
    )
    assert cli("evaluate", str(run), "--onnx", str(other), "--test", "multiscale") == (
        1,
        "",
        "--onnx: --onnx scores center and 10crop views; multiscale runs the network fully "
        "convolutionally, which the ONNX file is not\n",
    )
    assert not (run / "evaluate-center.json").exists()
