"""Paths a user gives, checked before use: every problem with one becomes a one-line SpecError.

`os.stat` and friends raise for names the system refuses (too long, a symlink loop, a NUL
byte); outside the CLI's error handling those escape as an internal error. The reader
(`resgraph.load.read_text_bounded`) and the writer (`resgraph.output.write_atomic`) both
start here, and so should any other code that touches a user's path.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from resgraph.errors import Location, SpecError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def describe(mode: int) -> str:
    """What a file of this `st_mode` is, in words: 'a regular file', 'a named pipe (FIFO)', ..."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file")


def status(path: Path | str, where: Location | None = None) -> os.stat_result | None:
    """`os.stat(path)` following links; None where nothing is there; SpecError if unusable.

    A missing file and a path through a regular file (`file.txt/x`, ENOTDIR) both mean
    "nothing there", so that creating it reports the real obstacle. Everything else the
    system refuses (a name over its limit, a symlink loop, a NUL byte) is a user's mistake.
    """
    where = where or Location(str(path))
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # os.stat's answer to a NUL character
        raise SpecError("unusable path: it contains a NUL character", where) from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise SpecError("unusable path: a name in it is too long", where) from None
        raise SpecError(f"unusable path: {exc.strerror or exc}", where) from None
