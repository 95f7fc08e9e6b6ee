"""The bundled trainer: data, the paper's recipes, a resumable loop, plots and analyses.

Nothing here imports torch at import time, so `resgraph --help` stays fast.
"""

from __future__ import annotations

from resgraph.errors import SpecError


class TrainError(SpecError):
    """A problem with a training run (data, checkpoint, diverged loss) a user can act on."""
