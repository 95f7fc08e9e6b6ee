"""metrics.jsonl: one JSON object per evaluation, the contract `plot` and other tools read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resgraph.errors import Location
from resgraph.output import write_atomic
from resgraph.train import TrainError

FILE = "metrics.jsonl"


def append(run: Path, record: dict[str, Any]) -> None:
    """Add one evaluation's record."""
    with (run / FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def keep_first(run: Path, count: int) -> None:
    """Drop records written after the checkpoint a resumed run starts from."""
    path = run / FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    write_atomic(path, "".join(lines[:count]))


def read(run: Path) -> list[dict[str, Any]]:
    """All records of a run, in order."""
    path = run / FILE
    if not path.is_file():
        raise TrainError(f"no {FILE} here; is this a training run's folder?", Location(str(run)))
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise TrainError(
                f"not JSON: {exc.msg}", Location(str(path), number, exc.colno)
            ) from None
    return records
