"""The bundled trainer: data, the paper's recipes, a resumable loop, plots and analyses.

Nothing here imports torch at import time, so `resgraph --help` stays fast.
"""

from __future__ import annotations

import stat
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


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refusing one over `limit` before reading it."""
    where = Location(str(path))
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise TrainError(f"not a regular file, so not a {what}", where)
        if info.st_size > limit:
            raise TrainError(f"{info.st_size:,} bytes; a {what} is limited to {limit:,}", where)
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        raise TrainError(f"missing {what}", where) from None
    except OSError as exc:
        raise TrainError(f"cannot read {what}: {exc.strerror or exc}", where) from None
    if len(raw) > limit:  # it grew while being read
        raise TrainError(f"over {limit:,} bytes; a {what} is limited to that", where)
    return raw
