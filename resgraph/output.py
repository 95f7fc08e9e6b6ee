"""Writing output files safely: atomically (temp file + rename), never half-written."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from resgraph.errors import Location, SpecError
from resgraph.paths import describe, status


def write_atomic(path: Path, content: str | bytes | Iterable[bytes | memoryview]) -> None:
    """Write `content` to `path` through a temp file in the same folder, then rename.

    A symlink is written through: its target is replaced, never the link. Anything but a
    regular file (a device, a FIFO, a folder) is refused. `content` may come in chunks, so
    that large outputs (ONNX weights) are never joined into one more copy in memory.
    """
    target = writable(path)
    try:
        remove_stale_temps(target.parent, temp_pattern(re.escape(target.name)))
        _replace(target, content)
    except (FileExistsError, NotADirectoryError):  # mkdir met a file where a folder must be
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), target.parent)
        raise SpecError(f"cannot write: {blocker} is not a folder", Location(str(path))) from None
    except OSError as exc:
        raise SpecError(f"cannot write: {exc.strerror or exc}", Location(str(path))) from None


def writable(path: Path) -> Path:
    """The real path that writing `path` replaces: through symlinks, refusing non-files.

    A rename replaces a symlink itself (`-o /dev/stdout` once replaced the system's link),
    and would replace a device or FIFO: so the link is resolved first, and what is there
    must be a regular file or nothing.
    """
    where = Location(str(path))
    if not path.name:
        raise SpecError("an empty output file name", where)
    found = status(path, where)
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise SpecError("is a folder; give a file name", where)
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise SpecError(
            f"is {describe(found.st_mode)}, not a regular file; give a file name", where
        )
    return Path(os.path.realpath(path))


def temp_pattern(name: str) -> re.Pattern[str]:
    """The names `write_atomic` gives its temp files for files named by the regex `name`.

    `name` is a regular expression: `re.escape(path.name)` for one file, or a family of
    names (ONNX weights files) whose stale temps one write should remove.
    """
    return re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temps(folder: Path, pattern: re.Pattern[str]) -> None:
    """Remove temp files matching `pattern` in `folder` that a killed write left behind.

    A writer holds an exclusive lock on its temp file until the rename, and the system
    drops the lock when a process dies: a file whose lock can be taken is stale. Only
    this user's regular files are touched.
    """
    try:
        entries = [e for e in os.scandir(folder) if pattern.fullmatch(e.name)]
    except OSError:
        return  # no folder yet: nothing stale in it
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(entry.path)
        except OSError:
            pass  # locked by a live writer, or gone already
        finally:
            os.close(fd)


def _replace(path: Path, content: str | bytes | Iterable[bytes | memoryview]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename: marks the file as in use
            handle.writelines([data] if isinstance(data, bytes) else data)
            handle.flush()
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside(folder: Path, name: str) -> Path:
    """`folder/name`, refusing a name that would escape the folder (.., absolute, links)."""
    # realpath, not Path.resolve: a symlink loop is left for write_atomic to report in one line
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(root / name))
    if target.parent != root and root not in target.parents:
        raise SpecError(f"output name {name!r} would be written outside {folder}", Location(name))
    return target
