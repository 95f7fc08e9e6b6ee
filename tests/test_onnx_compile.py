"""compile_onnx end to end: weights files, He-init, errors by name, atomic and external output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import REPO, SPECS
from onnx_reference import FP32_TOLERANCE, reference_logits, run_onnx, trained_like_weights

from resgraph.backends import onnx_save
from resgraph.backends.onnx_export import compile_onnx
from resgraph.backends.onnx_save import ALIGN
from resgraph.backends.onnx_weights import Weights, expected_shapes, he_init
from resgraph.errors import SpecError
from resgraph.output import write_atomic
from resgraph.pipeline import Compiled, compile_spec


@pytest.fixture(scope="module")
def r20() -> Compiled:
    return compile_spec(SPECS / "cifar_resnet20.yaml")


@pytest.fixture(scope="module")
def r20_weights(r20: Compiled) -> Weights:
    return trained_like_weights(r20.graph, seed=3)


def _save(state: dict[str, object], path: Path) -> Path:
    torch.save(state, path)
    return path


def _tensors(weights: Weights) -> dict[str, object]:
    return {k: torch.from_numpy(v) for k, v in weights.items()}


def _x(compiled: Compiled) -> np.ndarray:
    shape = (2, *compiled.graph.nodes["input"]["shape"])
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


@pytest.mark.parametrize(
    ("wrap", "zipped"),
    [(False, True), (True, True), (False, False)],
    ids=["state_dict", "checkpoint", "legacy-format"],
)
def test_weights_file_gives_the_reference_output(
    r20: Compiled, r20_weights: Weights, tmp_path: Path, wrap: bool, zipped: bool
) -> None:
    state = _tensors(r20_weights)
    weights = tmp_path / "w.pt"
    torch.save(
        {"model": state, "epoch": 7} if wrap else state,
        weights,
        _use_new_zipfile_serialization=zipped,
    )
    out = tmp_path / "r20.onnx"
    compile_onnx(r20, output=out, weights=weights, fold_bn=True)
    onnx.checker.check_model(str(out), full_check=True)
    x = _x(r20)
    expected = reference_logits(r20.graph, r20_weights, x)
    np.testing.assert_allclose(run_onnx(str(out), x), expected, atol=FP32_TOLERANCE)


def _compile_error(compiled: Compiled, state: dict[str, object], tmp_path: Path) -> str:
    """The message of the SpecError a bad weights file raises; no output may appear."""
    weights = _save(state, tmp_path / "bad.pt")
    with pytest.raises(SpecError) as caught:
        compile_onnx(compiled, output=tmp_path / "out.onnx", weights=weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]
    assert caught.value.location is not None and caught.value.location.file == str(weights)
    assert "\n" not in str(caught.value)
    return caught.value.message


def test_missing_extra_and_misshaped_keys_are_named(
    r20: Compiled, r20_weights: Weights, tmp_path: Path
) -> None:
    state = _tensors(r20_weights)
    del state["layer2.1.bn1.running_var"]
    state["module.fc.weight"] = torch.zeros(10, 64)
    state["fc.weight"] = torch.zeros(1000, 64)
    assert _compile_error(r20, state, tmp_path) == (
        "weights do not fit the network: missing layer2.1.bn1.running_var; "
        "unexpected module.fc.weight; wrong shape fc.weight (1000x64, expected 10x64)"
    )


def test_long_lists_of_keys_are_cut_short(r20: Compiled, tmp_path: Path) -> None:
    message = _compile_error(r20, {"conv1.weight": torch.zeros(16, 3, 3, 3)}, tmp_path)
    missing = len(expected_shapes(r20.network)) - 1
    assert message == (
        "weights do not fit the network: missing bn1.weight, bn1.bias, bn1.running_mean, "
        f"bn1.running_var, bn1.num_batches_tracked and {missing - 5} more"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle", "cannot read weights: "),
        (None, "weights file holds no state_dict"),
        (b"", "cannot read weights: "),
    ],
)
def test_unreadable_weights_are_spec_errors(
    r20: Compiled, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(SpecError, match=message):
        compile_onnx(r20, output=tmp_path / "out.onnx", weights=path)
    assert not (tmp_path / "out.onnx").exists()


def test_values_that_are_not_tensors_are_named(r20: Compiled, tmp_path: Path) -> None:
    state = _tensors(he_init(r20.network, 0))
    state["fc.bias"] = [0.0] * 10
    message = _compile_error(r20, state, tmp_path)
    assert message == "weights that are not tensors: fc.bias"


def test_a_missing_weights_file_is_a_spec_error(r20: Compiled, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="weights file not found"):
        compile_onnx(r20, output=tmp_path / "out.onnx", weights=tmp_path / "absent.pt")
    assert list(tmp_path.iterdir()) == []


def test_he_init_is_seeded_and_follows_torchvision(write_spec: Callable[[str], Path]) -> None:
    resnet18 = SPECS / "resnet18.yaml"
    spec = f"extends: {resnet18}\nname: r18z\ninit: {{zero_init_residual: true}}\n"
    compiled = compile_spec(write_spec(spec))
    a, b = (
        he_init(compiled.network, 1),
        he_init(compiled.network, 1),
    )
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = he_init(compiled.network, 2)
    assert not np.array_equal(a["conv1.weight"], other["conv1.weight"])
    assert {k: v.shape for k, v in a.items()} == expected_shapes(compiled.network)
    weight = a["layer4.0.conv2.weight"]  # He normal, fan_out = 512 * 3 * 3
    assert weight.std() == pytest.approx(np.sqrt(2 / (512 * 9)), rel=0.01)
    assert np.abs(a["fc.weight"]).max() <= 1 / np.sqrt(512)
    assert not a["layer1.0.bn2.weight"].any()  # zero_init_residual: the branch's last BN
    assert a["layer1.0.bn1.weight"].tolist() == [1.0] * 64
    assert a["layer1.0.bn1.running_var"].tolist() == [1.0] * 64


def test_same_seed_gives_the_same_file(r20: Compiled, tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.onnx" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        compile_onnx(r20, output=path, seed=seed)
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()


def test_external_data_holds_the_weights_beside_the_model(
    r20: Compiled, r20_weights: Weights, tmp_path: Path
) -> None:
    weights = _save(_tensors(r20_weights), tmp_path / "w.pt")
    out = tmp_path / "r20.onnx"
    compile_onnx(r20, output=out, weights=weights, external_threshold=0)
    (data,) = tmp_path.glob("r20.onnx.*.data")  # named by its content's hash
    assert data.stat().st_size > 4 * 260_000 > 20 * out.stat().st_size
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out), load_external_data=False)
    offsets = [
        int(e.value) for t in model.graph.initializer for e in t.external_data if e.key == "offset"
    ]
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.name for t in external} >= {"conv1.weight", "layer3.2.conv2.weight", "fc.weight"}
    assert len(offsets) == len(external) and all(o % ALIGN == 0 for o in offsets)
    x = _x(r20)
    expected = reference_logits(r20.graph, r20_weights, x)
    np.testing.assert_allclose(run_onnx(str(out), x), expected, atol=FP32_TOLERANCE)


def test_external_data_is_removed_when_the_model_cannot_be_written(
    r20: Compiled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r20.onnx"

    def disk_full_for_the_model(path: Path, content: list[onnx_save.Chunk]) -> None:
        if path == out:
            raise OSError(28, "No space left on device")
        write_atomic(path, content)

    monkeypatch.setattr(onnx_save, "write_atomic", disk_full_for_the_model)
    with pytest.raises(OSError, match="No space left"):
        compile_onnx(r20, output=out, external_threshold=0)
    assert list(tmp_path.iterdir()) == []


def test_compiling_without_weights_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "r56.onnx"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from resgraph.pipeline import compile_spec\n"
        "from resgraph.backends.onnx_export import compile_onnx\n"
        f"compiled = compile_spec({str(SPECS / 'cifar_resnet56.yaml')!r})\n"
        f"compile_onnx(compiled, output=Path({str(out)!r}), fold_bn=True, fp16=True)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(str(out), full_check=True)


def _cli_in_a_fresh_python(args: list[str], before: str = "") -> subprocess.CompletedProcess[str]:
    script = (
        "import sys\n"
        f"{before}"
        "from resgraph.cli import main\n"
        f"status = main({args!r})\n"
        "print('torch' in sys.modules)\n"
        "sys.exit(status)\n"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)


def test_the_onnx_command_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "r20.onnx"
    args = ["compile", str(SPECS / "cifar_resnet20.yaml"), "--target", "onnx", "-o", str(out)]
    done = _cli_in_a_fresh_python(args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False", "torch was imported"
    onnx.checker.check_model(str(out), full_check=True)


def test_without_the_onnx_package_the_message_says_what_to_install(tmp_path: Path) -> None:
    out = tmp_path / "r20.onnx"
    args = ["compile", str(SPECS / "cifar_resnet20.yaml"), "--target", "onnx", "-o", str(out)]
    done = _cli_in_a_fresh_python(args, before="sys.modules['onnx'] = None\n")
    assert done.returncode == 1
    assert done.stderr == "--target onnx needs the onnx package: pip install 'resgraph[onnx]'\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "argument --seed: expected 0 or more, not -1"),
        (["--channels-last"], "--channels-last: only with --target pytorch"),
    ],
)
def test_flags_that_cannot_apply_are_usage_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resgraph.cli import main

    out = tmp_path / "r20.onnx"
    try:
        status = main(["compile", str(SPECS / "cifar_resnet20.yaml"), "--target", "onnx", *flags])
    except SystemExit as exc:
        status = exc.code
    assert status == 2 and message in capsys.readouterr().err
    assert not out.exists()
