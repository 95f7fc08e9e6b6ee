"""Layer responses of a trained run (the paper's Fig. 7): std after BN, before the non-linearity.

The responses measured are the outputs of the BN that follows each 3x3 convolution, on the
run's held-out test data with the network in evaluation mode; a layer's std is taken over
every element of its output (all images, channels and positions).
"""

from __future__ import annotations

from pathlib import Path

import torch

from resgraph.errors import Location
from resgraph.train import TrainError
from resgraph.train.datasets import load_source
from resgraph.train.loaders import Placement, make_batches
from resgraph.train.model import conv3x3_bns
from resgraph.train.plot import quiet, save_figure
from resgraph.train.recipe import Recipe
from resgraph.train.run import load_run


class _Moments:
    """Running sums of x and x^2 over a layer's outputs, in float64."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def __call__(self, module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        values = output.detach().double()
        self.count += values.numel()
        self.total += float(values.sum())
        self.squares += float(values.square().sum())

    def std(self) -> float:
        mean = self.total / self.count
        return max(self.squares / self.count - mean * mean, 0.0) ** 0.5


@torch.no_grad()
def responses(run: Path, which: str = "best.pt", device: str = "cpu") -> dict[str, float]:
    """The std of each 3x3 layer's response on held-out data, in the network's order."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda, but no CUDA GPU is available", Location("--device"))
    config, compiled, model, _ = load_run(run, which)
    where = torch.device(device)
    shape = (compiled.spec.input.channels, compiled.spec.input.height, compiled.spec.input.width)
    data = load_source(config["choices"]["data"], shape, config["classes"])
    recipe = Recipe.model_validate(config["recipe"])
    batches = make_batches(data, recipe, config["choices"]["seed"], Placement(shape, 0, 1, where))
    moments = {name: _Moments() for name in conv3x3_bns(compiled.graph)}
    for name, hook in moments.items():
        model.get_submodule(name).register_forward_hook(hook)
    model.to(where).eval()
    for images, _ in batches.evaluate("test"):
        model(images.flatten(0, 1) if images.dim() == 5 else images)
    return {name: hook.std() for name, hook in moments.items()}


@quiet
def plot_responses(measured: dict[str, dict[str, float]], output: Path) -> None:
    """Two panels like Fig. 7: stds in layer order (top) and sorted in descending order (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (ordered, ranked) = plt.subplots(2, 1, figsize=(7, 6))
    for name, stds in measured.items():
        values = list(stds.values())
        layers = range(1, len(values) + 1)
        ordered.plot(layers, values, marker=".", label=name)
        ranked.plot(layers, sorted(values, reverse=True), marker=".", label=name)
    ordered.set_xlabel("layer index (original)")
    ranked.set_xlabel("layer index (sorted by magnitude)")
    for axes in (ordered, ranked):
        axes.set_ylabel("std")
        axes.grid(alpha=0.3)
        axes.legend()
    save_figure(figure, output)
