"""The bundled trainer: data, the paper's recipes, a resumable loop, plots and analyses.

Nothing here imports torch at import time, so `resgraph --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from resgraph.errors import Location, SpecError

TEST_MODES = ("center", "10crop", "multiscale")  # `resgraph evaluate --test`
PAPER_SCALES = (224, 256, 384, 480, 640)  # the paper's fully-convolutional test scales (Sec. 3.4)


class TrainError(SpecError):
    """A problem with a training run (data, checkpoint, diverged loss) a user can act on."""


def user_path(text: str, what: str) -> Path:
    """A path from the command line, refused in one line if the system cannot look it up
    at all (a name longer than the file system allows, a NUL byte); `what` names the option."""
    path = Path(text)
    try:
        path.exists()  # raises for ENAMETOOLONG, which Path.exists does not swallow
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not a usable path"
        raise TrainError(f"{what}: {reason}", Location(text)) from None
    return path
