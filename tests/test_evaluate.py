"""`resgraph evaluate` and the colour augmentation, on small image folders written here.

One small network is trained on an image folder once per module; the tests then check each
test mode against a computation done by hand, the sizes the fully-convolutional network sees
at every scale, the lighting noise's statistics, and the messages for bad inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resgraph.cli import main
from resgraph.train import TrainError, augment
from resgraph.train import evaluate as ev
from resgraph.train.datasets import load_source
from resgraph.train.loaders import Placement, make_batches
from resgraph.train.recipe import load_recipe
from resgraph.train.run import Request as TrainRequest
from resgraph.train.run import load_run, train
from tests.conftest import SPECS, run_cli

SIZE = 16  # the network's input: cifar_resnet20 at 16x16, final feature map 4x4
CLASSES = ("cat", "dog", "owl")
VAL_SIZES = ((30, 20), (20, 26), (24, 24))  # (width, height), PIL's order


def _noise_image(rng: np.random.Generator, size: tuple[int, int], tint: int) -> Image.Image:
    width, height = size
    array = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    array[:, :, tint] += 120
    return Image.fromarray(array)


def write_folder(root: Path) -> Path:
    """train/ and val/ with three tinted noise classes; val/ images of several shapes."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        for split, sizes in (("train", ((20, 20), (24, 18)) * 6), ("val", VAL_SIZES)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, size in enumerate(sizes):
                _noise_image(rng, size, label).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A cifar_resnet20 at 16x16 trained for two epochs on the folder: (run, data root)."""
    root = write_folder(tmp_path_factory.mktemp("images"))
    run = tmp_path_factory.mktemp("runs") / "r20"
    train(
        TrainRequest(
            spec=str(SPECS / "cifar_resnet20.yaml"),
            data=f"imagefolder:{root}",
            epochs=2,
            out=str(run),
            overrides=[
                f"input.height={SIZE}",
                f"input.width={SIZE}",
                "batch_size=6",
                "workers=0",
                "test_size=20",
                "eval_batch_size=4",
            ],
        )
    )
    return run, root


def _request(run: Path, root: Path, **kwargs: object) -> ev.Request:
    return ev.Request(run=run, data=f"imagefolder:{root}", workers=0, **kwargs)


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple]:
    """Record the shapes going into and out of one of evaluate's scoring functions."""
    calls: list[tuple] = []
    real = getattr(ev, name)

    def spy(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        scores = model(augment.normalize(images, mean)) if images.dim() == 4 else None
        calls.append((tuple(images.shape), None if scores is None else tuple(scores.shape)))
        return real(model, images, mean)

    monkeypatch.setattr(ev, name, spy)
    return calls


def _by_hand(model: torch.nn.Module, mean: torch.Tensor, crops: list[np.ndarray]) -> torch.Tensor:
    """Mean softmax over crops given as (H, W, 3) uint8 arrays, one forward each."""
    probabilities = []
    for crop in crops:
        x = torch.from_numpy(crop.copy()).permute(2, 0, 1).float().div(255).sub(mean)
        probabilities.append(model(x[None]).softmax(1)[0])
    return torch.stack(probabilities).mean(0)


def test_ten_crop_takes_ten_views_and_averages_them(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, root = trained
    calls = _spy(monkeypatch, "score_crops")
    scored = list(ev.scored_batches(_request(run, root, test="10crop", batch_size=100)))
    probabilities = torch.cat([s.probabilities for s in scored])
    assert [shape for shape, _ in calls] == [(9, 10, 3, SIZE, SIZE)]  # 9 images, 10 views each

    model = load_run(run).model
    model.eval()
    mean = torch.load(run / "best.pt", weights_only=True)["pixel_mean"]
    files = sorted((root / "val").rglob("*.png"))
    assert len(files) == len(probabilities) == 9
    with torch.no_grad():
        for i, path in enumerate(files):
            image = Image.open(path).convert("RGB")
            scale = 20 / min(image.size)  # the run's test_size
            w, h = max(20, round(image.width * scale)), max(20, round(image.height * scale))
            array = np.asarray(image.resize((w, h), Image.BILINEAR))
            corners = [(0, 0), (0, w - SIZE), (h - SIZE, 0), (h - SIZE, w - SIZE)]
            corners.append(((h - SIZE) // 2, (w - SIZE) // 2))
            crops = [array[y : y + SIZE, x : x + SIZE] for y, x in corners]
            crops += [crop[:, ::-1] for crop in crops]
            expected = _by_hand(model, mean, crops)
            assert (probabilities[i] - expected).abs().max().item() < 1e-5


def test_center_equals_the_trainers_test_error(trained: tuple[Path, Path]) -> None:
    run, root = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    result = ev.evaluate(_request(run, root, test="center"))
    assert result["images"] == 9 and result["views_per_image"] == 1
    assert result["top1_error"] == min(r["test_error"] for r in records)
    assert result["top5_error"] == 0.0  # three classes: the label is always in the top five


def _feature_size(size: int) -> int:
    """cifar_resnet20's 3x3 stride-2 convs (padding 1) in stages 2 and 3: 16 -> 8 -> 4."""
    for _ in range(2):
        size = (size - 1) // 2 + 1
    return size


def test_multiscale_runs_every_scale_with_the_right_sizes(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, root = trained
    calls = _spy(monkeypatch, "score_map")
    scales = (16, 24, 40)
    result = ev.evaluate(_request(run, root, test="multiscale", scales=scales, batch_size=100))
    window = _feature_size(SIZE)
    expected = set()
    for scale in scales:
        for width, height in VAL_SIZES:
            factor = scale / min(width, height)
            w, h = max(scale, round(width * factor)), max(scale, round(height * factor))
            score = (_feature_size(h) - window + 1, _feature_size(w) - window + 1)
            expected.add(((3, h, w), (len(CLASSES), *score)))
    seen = {(images[1:], scores[1:]) for images, scores in calls}
    assert seen == expected
    # every image at every scale, and at least one score map larger than 1x1
    assert sum(images[0] for images, _ in calls) == 9 * len(scales)
    assert any(scores[2] * scores[3] > 1 for _, scores in calls)
    assert [s["scale"] for s in result["scales"]] == list(scales)
    assert result["views_per_image"] == len(scales)


def test_multiscale_averages_positions_then_scales(trained: tuple[Path, Path]) -> None:
    run, root = trained
    scales = (16, 24)
    (first, *_) = ev.scored_batches(_request(run, root, test="multiscale", scales=scales))
    assert len(first.per_scale) == 2
    assert torch.allclose(first.probabilities, (first.per_scale[0] + first.per_scale[1]) / 2)
    assert torch.allclose(first.probabilities.sum(1), torch.ones(len(first.labels)))


def test_cli_prints_a_table_and_writes_json(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, root = trained
    out = tmp_path / "result.json"
    args = ["evaluate", str(run), "--data", f"imagefolder:{root}", "--test", "multiscale"]
    result = run_cli(*args, "--scales", "16,20", "--workers", "0", "-o", str(out))
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    assert written["test"] == "multiscale" and written["images"] == 9
    assert [s["scale"] for s in written["scales"]] == [16, 20]
    assert "top-1 error" in result.stdout and "scale 20" in result.stdout


def test_a_scale_below_the_networks_minimum_is_refused(trained: tuple[Path, Path]) -> None:
    run, root = trained
    with pytest.raises(TrainError) as caught:
        ev.evaluate(_request(run, root, test="multiscale", scales=(224, 12)))
    # 13 is the smallest input whose final feature map reaches the 4x4 window
    assert str(caught.value) == (
        "--scales: scale 12 is smaller than the smallest input this network takes "
        "fully convolutionally (13)"
    )
    assert _feature_size(13) == 4 and _feature_size(12) == 3


def test_an_empty_class_folder_is_named(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained
    root = write_folder(tmp_path / "images")
    for path in (root / "val" / "owl").iterdir():
        path.unlink()
    assert main(["evaluate", str(run), "--data", f"imagefolder:{root}", "--workers", "0"]) == 1
    assert capsys.readouterr().err == (
        f"{root / 'val' / 'owl'}: empty class folder: no images (.jpg, .png, ...)\n"
    )


def test_a_corrupt_image_is_named(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained
    root = write_folder(tmp_path / "images")
    bad = root / "val" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_cli(
        "evaluate", str(run), "--data", f"imagefolder:{root}", "--test", "10crop", "--workers", "1"
    )
    assert result.returncode == 1
    assert result.stderr == f"{bad}: cannot read this image (missing, truncated or not an image)\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scales", "224,x"], "argument --scales: expected an integer, not 'x'"),
        (["--scales", "0"], "argument --scales: expected an integer from 1 to 4,096, not 0"),
        (["--scales", "60000"], "expected an integer from 1 to 4,096, not 60000"),
        (["--test-size", "1e24"], "argument --test-size: expected an integer, not '1e24'"),
        (["--test-size", "60000"], "expected an integer from 1 to 4,096, not 60000"),
        (["--test", "5crop"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["evaluate", "runs/r20", *args])
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_not_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"{tmp_path}: no config.yaml here; is this a training run's folder?\n"
    )


# --------------------------------------------------------------------------- lighting

EIGENVALUES = torch.tensor(augment.IMAGENET_EIGENVALUES, dtype=torch.float64)
EIGENVECTORS = torch.tensor(augment.IMAGENET_EIGENVECTORS, dtype=torch.float64)


def test_lighting_is_zero_when_alpha_is_zero() -> None:
    images = torch.rand(4, 3, 5, 5)
    assert torch.equal(augment.lighting(images, 0.0, augment.generator("x")), images)
    assert not augment.lighting_offsets(4, 0.0, augment.generator("x")).any()


def test_lighting_has_the_stated_covariance() -> None:
    offsets = augment.lighting_offsets(200_000, 0.1, augment.generator("covariance"))
    expected = EIGENVECTORS @ torch.diag((0.1 * EIGENVALUES) ** 2) @ EIGENVECTORS.T
    measured = torch.cov(offsets.T)
    assert (measured - expected).abs().max().item() < 0.02 * expected.abs().max().item()
    # the eigenvectors are orthonormal, so each principal direction carries its own variance
    along = offsets @ EIGENVECTORS
    assert torch.allclose(along.std(0), 0.1 * EIGENVALUES, rtol=0.01)
    assert offsets.mean(0).abs().max().item() < 1e-3


def test_lighting_adds_one_rgb_offset_per_training_image(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images")
    where = Placement((3, SIZE, SIZE), 0, 1, torch.device("cpu"))
    data = load_source(f"imagefolder:{root}", (3, SIZE, SIZE), 3)
    common = ["batch_size=6", "workers=0", "augment.scale=[18, 24]"]
    lit = make_batches(data, load_recipe("imagenet-paper", common), 0, where)
    plain = make_batches(
        data, load_recipe("imagenet-paper", [*common, "augment.lighting=0"]), 0, where
    )
    for step, ((a, labels), (b, same)) in enumerate(
        zip(lit.train(1, 0), plain.train(1, 0), strict=True)
    ):
        assert torch.equal(labels, same)
        difference = (a - b).double()
        offsets = augment.lighting_offsets(6, 0.1, augment.generator("lighting", 0, 1, step, 0))
        assert torch.allclose(
            difference, offsets[:, :, None, None].expand_as(difference), atol=1e-6
        )


def test_imagenet_recipe_has_lighting_and_grey_input_refuses_it() -> None:
    assert load_recipe("imagenet-paper").augment.lighting == 0.1
    assert load_recipe("quick").augment.lighting == 0.0
    where = Placement((1, 8, 8), 0, 1, torch.device("cpu"))
    with pytest.raises(TrainError, match=r"augment\.lighting uses ImageNet.s RGB colour"):
        make_batches(load_source("digits", (1, 8, 8), 10), load_recipe("imagenet-paper"), 0, where)
