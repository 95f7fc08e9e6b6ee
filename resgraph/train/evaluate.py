"""Test-time evaluation of a trained run, as in the paper's Sec. 3.4 and Table 3/4.

Three ways to look at a test image:
- center: the shorter side resized to the recipe's test size, the central crop of the
  network's input size (what the trainer reports as test error);
- 10crop: from the same resized image, the four corner crops and the central crop and their
  mirror images; the ten softmax outputs are averaged;
- multiscale: the shorter side resized to each scale, the network applied fully
  convolutionally (`head.kind: fcn`, the trained fc as a 1x1 conv), softmax outputs averaged
  over every position of the score map and then over the scales.

The mean subtracted is the run's per-pixel training mean (kept in its checkpoints, or
recomputed from the training data for older runs); the fully-convolutional form sees inputs
of any size, so there it is the per-channel mean of that image.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from resgraph.errors import Location, SpecError
from resgraph.pipeline import Compiled, compile_spec
from resgraph.train import PAPER_SCALES, TEST_MODES, TrainError, augment
from resgraph.train.datasets import (
    Dataset,
    Folder,
    InMemory,
    Split,
    image_problem,
    load_source,
    open_image,
)
from resgraph.train.loaders import Placement, make_batches, worker_count
from resgraph.train.model import model_from_spec
from resgraph.train.onnx_model import OnnxModel
from resgraph.train.recipe import Recipe, split_overrides
from resgraph.train.run import load_run

Tensor = torch.Tensor
TOP = (1, 5)
MAX_INPUT = 8192
PIXELS_PER_PASS = 1 << 22  # input pixels per forward pass of the fully-convolutional network
VIEW_BYTES_PER_BATCH = 256 << 20  # multiscale views a loader batch may hold (square estimate)


@dataclass(frozen=True)
class Request:
    """What `resgraph evaluate` was asked for."""

    run: Path
    data: str | None = None
    test: str = "center"
    scales: tuple[int, ...] | None = None  # None: the paper's, scaled to the run's input
    checkpoint: str = "best"
    device: str = "cpu"
    test_size: int | None = None
    batch_size: int | None = None
    workers: int | None = None
    onnx: Path | None = None  # an ONNX file scored beside the checkpoint


@dataclass(frozen=True)
class Scored:
    """Averaged class probabilities (N, K) of a batch, per scale for multiscale, and labels;
    `onnx`: the ONNX file's probabilities for the same views."""

    probabilities: Tensor
    per_scale: tuple[Tensor, ...]
    labels: Tensor
    onnx: Tensor | None = None


# --------------------------------------------------------------------------- views


def views_for(test: str, size: tuple[int, int], test_size: int, scales: Sequence[int]) -> Callable:
    """The function turning one PIL image into the uint8 views a test mode feeds the network."""
    height, width = size

    def center(image: Image.Image) -> Tensor:
        resized = augment.resize_shorter(image, test_size)
        return augment.to_tensor(augment.center_crop(resized, height, width))[None]

    def ten(image: Image.Image) -> Tensor:
        return augment.ten_crops(
            augment.to_tensor(augment.resize_shorter(image, test_size)), height, width
        )

    def multiscale(image: Image.Image) -> list[Tensor]:
        return [augment.to_tensor(augment.resize_shorter(image, s)) for s in scales]

    return {"center": center, "10crop": ten, "multiscale": multiscale}[test]


def default_scales(size: Sequence[int]) -> tuple[int, ...]:
    """The paper's test scales for its 224 input, scaled to this input's shorter side."""
    side = min(size)
    return tuple(dict.fromkeys(max(1, round(s * side / 224)) for s in PAPER_SCALES))


def _as_image(tensor: Tensor) -> Image.Image:
    """A uint8 (C, H, W) tensor as a PIL image, so in-memory data takes the same path as files."""
    array = tensor.permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


class ViewSet(torch.utils.data.Dataset):
    """Test images (files or in-memory tensors) and their views; label -1 marks a bad file."""

    def __init__(self, items: Folder | Split, mode: str, view: Callable, shorter: int) -> None:
        self.items, self.mode, self.view, self.shorter = items, mode, view, shorter

    def __len__(self) -> int:
        return len(self.items) if isinstance(self.items, Split) else len(self.items.test)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        if isinstance(self.items, Split):
            image = _as_image(self.items.images[index])
            return self.view(image), int(self.items.labels[index]), index
        path, label = self.items.test[index]
        image = open_image(path, self.mode, self.shorter)
        if image is None:  # the main process names the file
            return None, -1, index
        return self.view(image), label, index


def _keep_lists(items: list[tuple[Any, int, int]]) -> list[tuple[Any, int, int]]:
    """DataLoader collation that leaves per-image views alone (their sizes differ)."""
    return items


# --------------------------------------------------------------------------- scoring


def score_crops(model: Callable[[Tensor], Tensor], views: Tensor, mean: Tensor) -> Tensor:
    """Probabilities (N, K) of images given as uint8 views (N, V, C, H, W): mean over views."""
    n, v = views.shape[:2]
    probabilities = model(augment.normalize(views.flatten(0, 1), mean)).float().softmax(1)
    return probabilities.view(n, v, -1).mean(1)


def score_map(model: torch.nn.Module, images: Tensor, mean: Tensor) -> Tensor:
    """Probabilities (N, K) from a fully-convolutional model: mean over the score map."""
    scores = model(augment.normalize(images, mean))
    return scores.float().softmax(1).mean((2, 3))


def score_scales(
    model: torch.nn.Module, per_image: list[list[Tensor]], mean: Tensor, device: torch.device
) -> list[Tensor]:
    """For each scale, probabilities (N, K): images resized alike are run as one batch."""
    channel_mean = mean.mean((1, 2), keepdim=True)
    results = []
    for scale in range(len(per_image[0])):
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, views in enumerate(per_image):
            groups.setdefault(tuple(views[scale].shape), []).append(i)
        out: list[Tensor | None] = [None] * len(per_image)
        for shape, members in groups.items():
            step = max(1, PIXELS_PER_PASS // math.prod(shape[1:]))  # bounds activation memory
            for begin in range(0, len(members), step):
                part = members[begin : begin + step]
                batch = torch.stack([per_image[i][scale] for i in part]).to(device)
                for i, row in zip(part, score_map(model, batch, channel_mean), strict=True):
                    out[i] = row
        results.append(torch.stack(out))  # type: ignore[arg-type]
    return results


def top_k_errors(probabilities: Tensor, labels: Tensor) -> dict[int, int]:
    """How many images miss their label in the top 1 and top 5 (top K when K < 5)."""
    classes = probabilities.shape[1]
    ranked = probabilities.topk(min(max(TOP), classes), dim=1).indices
    hits = ranked == labels[:, None]
    return {k: int((~hits[:, : min(k, classes)].any(1)).sum()) for k in TOP}


# --------------------------------------------------------------------------- the run


def _recompiled(config: dict[str, Any], overrides: Sequence[str]) -> Compiled:
    spec_overrides, _ = split_overrides(config["choices"]["overrides"])
    return compile_spec(config["choices"]["spec_file"], [*spec_overrides, *overrides])


def minimum_input(config: dict[str, Any], window: int, limit: int) -> int:
    """The smallest square input the fully-convolutional network takes (binary search)."""

    def fits(size: int) -> bool:
        try:
            _fcn_compiled(config, window, size)
        except SpecError:
            return False
        return True

    low, high = 1, limit
    if not fits(high):
        return high
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


def _fcn_compiled(config: dict[str, Any], window: int, size: int) -> Compiled:
    return _recompiled(
        config,
        ["head.kind=fcn", f"head.window={window}", f"input.height={size}", f"input.width={size}"],
    )


def fcn_model(
    config: dict[str, Any], compiled: Compiled, weights: dict[str, Tensor], scales: Sequence[int]
) -> torch.nn.Module:
    """The run's network in fully-convolutional form, with the trained weights loaded.

    The pool window is the final feature map at the training input, so at that size the
    output equals the ordinary network's; every scale is checked against the shape pass.
    """
    final = compiled.network.nodes["avgpool"].in_shape
    _, height, width = final
    if height != width:
        raise TrainError(
            f"multiscale testing needs a square final feature map; this network's is "
            f"{height}x{width}",
            Location(config["choices"]["spec_file"]),
        )
    for scale in sorted(set(scales)):  # the largest last: its graph builds the module
        try:
            largest = _fcn_compiled(config, height, scale)
        except SpecError:
            smallest = minimum_input(config, height, MAX_INPUT)
            raise TrainError(
                f"scale {scale} is smaller than the smallest input this network takes "
                f"fully convolutionally ({smallest})",
                Location("--scales"),
            ) from None
    model = model_from_spec(largest, config["classes"])
    model.load_state_dict(weights)
    return model


def _pixel_mean(
    state: dict[str, Any], recipe: Recipe, seed: int, data: Dataset, shape: tuple[int, int, int]
) -> Tensor:
    """The checkpoint's training mean; runs older than that field recompute it (deterministic)."""
    if "pixel_mean" in state:
        return state["pixel_mean"].float()
    where = Placement(shape, 0, 1, torch.device("cpu"))
    return make_batches(data, recipe, seed, where).mean.cpu()


def _workers(request: Request, recipe: Recipe, in_memory: bool) -> int:
    """Loader processes: as asked, else the recipe's for files; at most one per core."""
    if request.workers is not None:
        return worker_count(request.workers)
    return 0 if in_memory else worker_count(recipe.workers)


@dataclass(frozen=True)
class _Setup:
    """Everything a test pass needs, read once: the data source named, the model, the batches."""

    source: str
    model: torch.nn.Module
    loader: torch.utils.data.DataLoader
    mean: Tensor
    device: torch.device
    items: Folder | Split
    shorter: int  # the largest shorter side a test image is resized to
    scales: tuple[int, ...]
    onnx: OnnxModel | None


def _setup(request: Request) -> _Setup:
    if request.test not in TEST_MODES:
        raise TrainError(
            f"unknown test mode; expected one of {', '.join(TEST_MODES)}", Location("--test")
        )
    if request.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda, but no CUDA GPU is available", Location("--device"))
    if request.onnx is not None and request.test == "multiscale":
        raise TrainError(
            "--onnx scores center and 10crop views; multiscale runs the network fully "
            "convolutionally, which the ONNX file is not",
            Location("--onnx"),
        )
    config, compiled, model, state = load_run(request.run, f"{request.checkpoint}.pt")
    spec = compiled.spec
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    onnx = None if request.onnx is None else OnnxModel(request.onnx, shape)
    source = request.data or config["choices"]["data"]
    data = load_source(source, shape, config["classes"])
    if data.classes != config["classes"]:
        raise TrainError(
            f"this data has {data.classes} classes; the run was trained on {config['classes']}",
            Location(f"--data {source}"),
        )
    recipe = Recipe.model_validate(config["recipe"])
    device = torch.device(request.device)
    mean = _pixel_mean(state, recipe, config["choices"]["seed"], data, shape).to(device)
    scales = request.scales or default_scales(shape[1:])
    batch_size = request.batch_size or recipe.eval_batch_size
    if request.test == "multiscale":
        model = fcn_model(config, compiled, state["model"], scales)
        if request.batch_size is None:
            per_image = shape[0] * sum(s * s for s in scales)
            batch_size = max(1, min(batch_size, VIEW_BYTES_PER_BATCH // per_image))
    model.to(device).eval()
    items: Folder | Split = data
    if isinstance(data, InMemory):  # fitted to the input size, as the trainer sees them
        items = Split(augment.fit(data.test.images, *shape), data.test.labels)
    test_size = max(request.test_size or recipe.test_size or 0, *shape[1:])
    view = views_for(request.test, shape[1:], test_size, scales)
    shorter = max(scales) if request.test == "multiscale" else test_size
    loader = torch.utils.data.DataLoader(
        ViewSet(items, "L" if shape[0] == 1 else "RGB", view, shorter),
        batch_size=batch_size,
        num_workers=_workers(request, recipe, in_memory=isinstance(items, Split)),
        collate_fn=_keep_lists,
    )
    return _Setup(source, model, loader, mean, device, items, shorter, scales, onnx)


def _scored(setup: _Setup, multiscale: bool) -> Iterator[Scored]:
    model, mean, device = setup.model, setup.mean, setup.device
    total = len(setup.loader.dataset)  # type: ignore[arg-type]
    bar = tqdm(total=total, unit="img", dynamic_ncols=True, disable=not sys.stderr.isatty())
    with torch.no_grad():
        for batch in setup.loader:
            bad = [index for _, label, index in batch if label < 0]
            if bad:
                assert isinstance(setup.items, Folder)  # in-memory images always read
                path = setup.items.test[bad[0]][0]
                raise TrainError(image_problem(path, setup.shorter), Location(str(path)))
            labels = torch.tensor([label for _, label, _ in batch], device=device)
            onnx = None
            if multiscale:
                per_scale = tuple(score_scales(model, [v for v, _, _ in batch], mean, device))
                averaged = torch.stack(per_scale).mean(0)
            else:
                views = torch.stack([v for v, _, _ in batch]).to(device)
                averaged, per_scale = score_crops(model, views, mean), ()
                if setup.onnx is not None:  # the same views through the ONNX file
                    onnx = score_crops(setup.onnx, views, mean).to(device)
            bar.update(len(batch))
            yield Scored(averaged, per_scale, labels, onnx)
    bar.close()


def scored_batches(request: Request) -> Iterator[Scored]:
    """Score every test image of the request's data, a batch at a time."""
    yield from _scored(_setup(request), request.test == "multiscale")


def evaluate(request: Request) -> dict[str, Any]:
    """Top-1 and top-5 error of a run's checkpoint under a test mode (per scale for multiscale)."""
    images = 0
    errors = dict.fromkeys(TOP, 0)
    onnx_errors = dict.fromkeys(TOP, 0)
    agree = 0
    scale_errors: list[dict[int, int]] = []
    setup = _setup(request)
    for scored in _scored(setup, request.test == "multiscale"):
        images += len(scored.labels)
        for k, n in top_k_errors(scored.probabilities, scored.labels).items():
            errors[k] += n
        if scored.onnx is not None:
            for k, n in top_k_errors(scored.onnx, scored.labels).items():
                onnx_errors[k] += n
            agree += int((scored.onnx.argmax(1) == scored.probabilities.argmax(1)).sum())
        if not scale_errors:
            scale_errors = [dict.fromkeys(TOP, 0) for _ in scored.per_scale]
        for totals, probabilities in zip(scale_errors, scored.per_scale, strict=True):
            for k, n in top_k_errors(probabilities, scored.labels).items():
                totals[k] += n
    result: dict[str, Any] = {
        "run": str(request.run),
        "checkpoint": f"{request.checkpoint}.pt",
        "data": setup.source,
        "test": request.test,
        "views_per_image": {"center": 1, "10crop": 10, "multiscale": len(setup.scales)}[
            request.test
        ],
        "images": images,
        "top1_error": errors[1] / images,
        "top5_error": errors[5] / images,
    }
    if request.onnx is not None:
        result["onnx"] = {
            "file": str(request.onnx),
            "top1_error": onnx_errors[1] / images,
            "top5_error": onnx_errors[5] / images,
            "top1_agreement": agree / images,  # share of images whose top-1 class is the same
        }
    if request.test == "multiscale":
        result["scales"] = [
            {"scale": s, "top1_error": e[1] / images, "top5_error": e[5] / images}
            for s, e in zip(setup.scales, scale_errors, strict=True)
        ]
    return result


def table(result: dict[str, Any]) -> str:
    """The result as a small text table."""
    rows = [(f"scale {r['scale']}", r) for r in result.get("scales", [])]
    rows.append((result["test"], result))
    lines = [
        f"{result['run']} ({result['checkpoint']}): {result['images']:,} images, "
        f"{result['views_per_image']} view(s) each",
        f"{'':<12} {'top-1 error':>11} {'top-5 error':>11}",
    ]
    if "onnx" in result:  # the same views through the ONNX file, beside the checkpoint's
        rows = [("pytorch", result), ("onnx", result["onnx"])]
    lines += [f"{name:<12} {r['top1_error']:>11.2%} {r['top5_error']:>11.2%}" for name, r in rows]
    if "onnx" in result:
        onnx = result["onnx"]
        lines.append(f"onnx: {onnx['file']}; top-1 class agrees on {onnx['top1_agreement']:.2%}")
    return "\n".join(lines)
