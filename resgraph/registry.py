"""The shipped specs as a model registry: names, their files, and SPEC arguments resolved.

`specs/` in the checkout is the one copy: pyproject maps it to the package `resgraph.specs`
(as `templates/` is mapped to `resgraph.templates`), so a wheel carries it and an editable
install reads the checkout's. A model's name is its file's stem, which is also its `name:`.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any

from resgraph.errors import Location, SpecError
from resgraph.paths import status

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.cache
def specs_folder() -> Path:
    """specs/ as installed (resgraph/specs in a wheel), else the checkout's."""
    # resgraph.specs is a namespace package (data only): ask for a file and take its folder,
    # as templates_folder() does, because str() of a MultiplexedPath is not a path.
    try:
        probe = resources.files("resgraph.specs").joinpath("resnet50.yaml")
    except ModuleNotFoundError:
        probe = None
    if probe is not None and probe.is_file():
        return Path(str(probe)).parent
    return Path(__file__).resolve().parents[1] / "specs"


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the shipped specs, sorted; `pattern` filters them by a glob (`resnet*`), as
    timm's `list_models` does."""
    names = sorted(path.stem for path in specs_folder().glob("*.yaml"))
    return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def spec_path(name: str) -> Path:
    """The file of a shipped spec; a SpecError with a did-you-mean for an unknown name."""
    if name in list_models():
        return specs_folder() / f"{name}.yaml"
    raise SpecError(f"no spec file or shipped model of this name{_hint(name)}", Location(name))


def resolve_spec(spec: str | Path) -> Path:
    """The file a SPEC argument means: a path that exists wins, then a shipped model's name.

    A missing path that does not look like a name is left for the loader to report, with a
    note when its stem is a shipped model (`specs/resnet50.yaml` away from the checkout).
    """
    path = Path(spec)
    if status(path) is not None:  # a SpecError for names the system refuses (too long, NUL)
        return path
    if _NAME.fullmatch(str(spec)):
        return spec_path(str(spec))
    if path.suffix in (".yaml", ".yml") and path.stem in list_models():
        raise SpecError(
            f"no such file; {path.stem!r} is a shipped model, usable by its name alone",
            Location(str(path)),
        )
    return path


def shipped_file(name: str) -> Path | None:
    """The shipped spec `extends: resnet50.yaml` (or `resnet50`) means where no such file is
    beside the spec: so a spec copied out with `resgraph show` still finds its parent."""
    stem = name.removesuffix(".yaml")
    if _NAME.fullmatch(stem) and stem in list_models():
        return specs_folder() / f"{stem}.yaml"
    return None


def _hint(name: str) -> str:
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
    if close:
        return f" (did you mean {', '.join(map(repr, close))}?); `resgraph list` shows them all"
    return "; `resgraph list` shows the shipped models"


def model_table(pattern: str | None = None) -> list[dict[str, Any]]:
    """Each shipped model's name, parameters, MACs and description (`resgraph list`)."""
    from resgraph.pipeline import compile_spec

    rows: list[dict[str, Any]] = []
    for name in list_models(pattern):
        network = compile_spec(spec_path(name)).network
        rows.append(
            {
                "name": name,
                "params": network.params,
                "macs": network.macs,
                "description": network.description,
            }
        )
    return rows


def model_table_text(rows: list[dict[str, Any]]) -> str:
    """An aligned table of `model_table` rows, for people."""
    header = ("name", "params", "GMACs")
    cells = [(str(r["name"]), f"{r['params']:,}", f"{r['macs'] / 1e9:.2f}") for r in rows]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(3)]
    lines = [
        f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}"
        for row in (header, *cells)
    ]
    return "\n".join(lines)
