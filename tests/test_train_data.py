"""Datasets and batches: CIFAR batches and image folders written here, digits, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resgraph.cli import main
from resgraph.train import TrainError, augment
from resgraph.train.datasets import CIFAR_TRAIN, digits, load_source
from resgraph.train.loaders import Placement, make_batches
from resgraph.train.recipe import load_recipe

CPU = Placement((3, 32, 32), 0, 1, torch.device("cpu"))


def write_cifar(folder: Path, per_batch: int = 20) -> Path:
    """Six small CIFAR-10 python batches and batches.meta, as the real ones are laid out."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [*CIFAR_TRAIN, "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"batch_label": name.encode(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return folder


def write_image_folder(
    root: Path, sizes: tuple[tuple[int, int], ...] = ((40, 30), (30, 50))
) -> Path:
    """train/ and val/ with two classes of small PNGs of different sizes."""
    for split in ("train", "val"):
        for label, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i, size in enumerate(sizes * 2):
                Image.new("RGB", size, colour).save(folder / f"{i}.png")
    return root


def test_cifar_batches_load_in_the_standard_layout(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar")
    data = load_source(f"cifar10:{folder}", (3, 32, 32), 10)
    assert data.train.images.shape == (100, 3, 32, 32) and data.test.images.shape == (20, 3, 32, 32)
    raw = pickle.loads((folder / "data_batch_1").read_bytes())
    # the first 1024 bytes of a row are the red plane, row-major
    assert data.train.images[0, 0, 0, :5].tolist() == raw[b"data"][0, :5].tolist()
    assert data.train.images[0, 1, 0, 0] == raw[b"data"][0, 1024]
    assert data.train.labels[:20].tolist() == raw[b"labels"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "missing CIFAR-10 batch file"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated CIFAR-10 batch file"),
        (
            lambda p: p.write_bytes(
                pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
            ),
            "b'data' must be a uint8 array of shape (N, 3072)",
        ),
        (
            lambda p: p.write_bytes(
                pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
            ),
            "b'labels' must be a list of 2 labels",
        ),
        (lambda p: p.write_bytes(b"not a pickle at all"), "not a CIFAR-10 python batch"),
    ],
)
def test_damaged_cifar_batch_is_named_in_one_line(tmp_path: Path, damage, message: str) -> None:
    folder = write_cifar(tmp_path / "cifar")
    damage(folder / "data_batch_3")
    with pytest.raises(TrainError) as caught:
        load_source(f"cifar10:{folder}", (3, 32, 32), 10)
    assert str(caught.value).startswith(f"{folder / 'data_batch_3'}: {message}")
    assert "\n" not in str(caught.value)


def test_a_batch_file_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = write_cifar(tmp_path / "cifar")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(TrainError, match=r"refers to builtins\.print"):
        load_source(f"cifar10:{folder}", (3, 32, 32), 10)


def test_digits_are_real_and_split_the_same_way_every_time() -> None:
    first, second = digits(), digits()
    assert len(first.train) + len(first.test) == 1797 and len(first.test) == 360
    assert torch.equal(first.test.labels, second.test.labels)
    assert first.train.images.dtype == torch.uint8 and first.train.images.max() == 255


def test_unknown_source_lists_the_choices() -> None:
    with pytest.raises(TrainError, match="expected one of digits, synthetic"):
        load_source("mnist", (3, 32, 32), 10)


def test_batches_fit_the_spec_input_and_repeat_for_the_same_seed_and_step() -> None:
    recipe = load_recipe("quick", ["batch_size=16"])
    where = Placement((3, 16, 16), 0, 1, torch.device("cpu"))
    one, two = (make_batches(digits(), recipe, 7, where) for _ in range(2))
    images, labels = next(one.train(epoch=1, start=5))
    again, same = next(two.train(epoch=1, start=5))
    assert images.shape == (16, 3, 16, 16) and labels.shape == (16,)
    assert torch.equal(images, again) and torch.equal(labels, same)
    other, _ = next(make_batches(digits(), recipe, 8, where).train(epoch=1, start=5))
    assert not torch.equal(images, other)


def test_ranks_take_disjoint_halves_of_each_global_batch() -> None:
    recipe = load_recipe("quick", ["batch_size=16", "augment.pad=0"])
    data = digits()
    single = next(make_batches(data, recipe, 0, Placement((1, 8, 8), 0, 1, CPU.device)).train(0, 3))
    halves = [
        next(make_batches(data, recipe, 0, Placement((1, 8, 8), r, 2, CPU.device)).train(0, 3))
        for r in (0, 1)
    ]
    assert torch.equal(torch.cat([h[1] for h in halves]), single[1])


def test_val_split_holds_out_the_last_training_images(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar")
    recipe = load_recipe("cifar10-paper", ["val_split=30", "batch_size=10"])
    batches = make_batches(load_source(f"cifar10:{folder}", (3, 32, 32), 10), recipe, 0, CPU)
    assert batches.eval_splits == ("test", "val") and batches.steps_per_epoch == 7
    assert sum(len(y) for _, y in batches.evaluate("val")) == 30


def test_crop_flip_pads_with_zeros_and_keeps_the_size() -> None:
    images = torch.full((64, 1, 4, 4), 9, dtype=torch.uint8)
    out = augment.crop_flip(images, 2, True, augment.generator("test"))
    assert out.shape == images.shape
    assert (out == 0).any() and (out == 9).any()


def test_image_folder_scale_augmentation_and_ten_crops(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    recipe = load_recipe(
        "imagenet-paper",
        [
            "batch_size=4",
            "workers=0",
            "augment.scale=[24, 36]",
            "test_size=24",
            "test_crops=10",
            "eval_batch_size=3",
        ],
    )
    where = Placement((3, 20, 20), 0, 1, torch.device("cpu"))
    batches = make_batches(load_source(f"imagefolder:{root}", (3, 20, 20), 1000), recipe, 0, where)
    images, labels = next(batches.train(0, 0))
    assert images.shape == (4, 3, 20, 20) and set(labels.tolist()) <= {0, 1}
    test_images, test_labels = next(batches.evaluate("test"))
    assert test_images.shape == (3, 10, 3, 20, 20)
    # plain-colour images: the red class stays red after mean subtraction, whatever the crop
    red = test_images[test_labels == 0]
    assert (red[:, :, 0] > red[:, :, 2]).all()


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    bad = root / "val" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG truncated")
    recipe = load_recipe("imagenet-paper", ["batch_size=2", "workers=0", "augment.scale=null"])
    where = Placement((3, 20, 20), 0, 1, torch.device("cpu"))
    batches = make_batches(load_source(f"imagefolder:{root}", (3, 20, 20), 2), recipe, 0, where)
    with pytest.raises(TrainError) as caught:
        list(batches.evaluate("test"))
    assert (
        str(caught.value) == f"{bad}: cannot read this image (missing, truncated or not an image)"
    )


def test_image_folder_needs_val(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "val").rmdir()
    with pytest.raises(TrainError, match="missing folder"):
        load_source(f"imagefolder:{root}", (3, 20, 20), 2)


def test_channels_the_data_cannot_become_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RESGRAPH_DEBUG", raising=False)
    spec = str(Path(__file__).resolve().parent.parent / "specs" / "cifar_resnet20.yaml")
    data = write_cifar(tmp_path / "cifar")
    args = ["train", spec, "--data", f"cifar10:{data}", "--out", str(tmp_path / "r")]
    assert main([*args, "--set", "input.channels=2"]) == 1
    assert capsys.readouterr().err == (
        f"{spec}: input.channels is 2, but --data cifar10:{data} has 3-channel images, "
        "which become 1 or 3 channels only\n"
    )
    assert not (tmp_path / "r").exists()
    # what `resgraph evaluate --data` meets when it resizes test images for such a run
    with pytest.raises(TrainError, match=r"cannot turn 3-channel images into 2 channels"):
        augment.fit(load_source(f"cifar10:{data}", (2, 8, 8), 10).test.images, 2, 8, 8)
    grey = augment.fit(digits().test.images[:2], 2, 8, 8)  # grey repeats to any count
    assert grey.shape == (2, 2, 8, 8) and torch.equal(grey[:, 0], grey[:, 1])
