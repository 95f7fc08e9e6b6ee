"""The bundled trainer: data, the paper's recipes, a resumable loop, plots and analyses.

Nothing here imports torch at import time, so `resgraph --help` stays fast.
"""

from __future__ import annotations

from resgraph.errors import SpecError

TEST_MODES = ("center", "10crop", "multiscale")  # `resgraph evaluate --test`
PAPER_SCALES = (224, 256, 384, 480, 640)  # the paper's fully-convolutional test scales (Sec. 3.4)


class TrainError(SpecError):
    """A problem with a training run (data, checkpoint, diverged loss) a user can act on."""
