"""Writing output files safely: atomically (temp file + rename), never half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from resgraph.errors import Location, SpecError


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` through a temp file in the same folder, then rename."""
    if path.is_dir():
        raise SpecError(f"{path} is a folder; give a file name", Location(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
