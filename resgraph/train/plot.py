"""Error curves of several runs in one figure, drawn like the paper's Figures 1, 4 and 6."""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resgraph.output import write_atomic
from resgraph.train import metrics


def quiet(draw: Callable[..., None]) -> Callable[..., None]:
    """Run a drawing function with matplotlib's warnings (missing glyphs in a run's name, a
    legend with no labels) not shown: a tool's output is its own, and the figure is written."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draw(*args, **kwargs)

    return wrapper


@quiet
def plot_errors(runs: list[Path], output: Path) -> None:
    """Thin dashed training error, bold test error, one colour per run, against iterations."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, run in enumerate(runs):
        records = metrics.read(run, required=metrics.PLOTTED)
        colour = f"C{index}"
        steps = [r["iteration"] for r in records]
        axes.plot(
            steps,
            [100 * r["train_error"] for r in records],
            color=colour,
            linewidth=0.8,
            linestyle="--",
        )
        axes.plot(
            steps,
            [100 * r["test_error"] for r in records],
            color=colour,
            linewidth=2.2,
            label=run.name,
        )
    axes.set_xlabel("iterations")
    axes.set_ylabel("error (%)")
    axes.set_title("dashed: training error, bold: test error")
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, output)


def save_figure(figure: object, output: Path) -> None:
    """Write a matplotlib figure as PNG atomically, then release it."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    write_atomic(output, buffer.getvalue())
