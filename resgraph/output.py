"""Writing output files safely: atomically (temp file + rename), never half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from resgraph.errors import Location, SpecError


def write_atomic(path: Path, content: str | bytes | Iterable[bytes | memoryview]) -> None:
    """Write `content` to `path` through a temp file in the same folder, then rename.

    `content` may come in chunks, so that large outputs (ONNX weights) are never joined
    into one more copy in memory.
    """
    where = Location(str(path))
    if not path.name:
        raise SpecError("an empty output file name", where)
    if path.is_dir():
        raise SpecError("is a folder; give a file name", where)
    if path.exists() and not path.is_file():  # /dev/stdout, a FIFO: a rename would replace it
        raise SpecError("not a regular file; give a file name", where)
    try:
        _replace(path, content)
    except OSError as exc:
        raise SpecError(f"cannot write: {exc.strerror or exc}", where) from None


def _replace(path: Path, content: str | bytes | Iterable[bytes | memoryview]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.writelines([data] if isinstance(data, bytes) else data)
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
    root = folder.resolve()
    target = (root / name).resolve()
    if target.parent != root and root not in target.parents:
        raise SpecError(f"output name {name!r} would be written outside {folder}", Location(name))
    return target
