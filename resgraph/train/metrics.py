"""metrics.jsonl: one JSON object per evaluation, the contract `plot` and other tools read.

With `--tensorboard` the same records also go to RUN/tensorboard as scalars by iteration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resgraph.errors import Location
from resgraph.output import write_atomic
from resgraph.train import TrainError

FILE = "metrics.jsonl"
BOARD = "tensorboard"
SCALARS = ("train_loss", "train_error", "test_error", "val_error", "lr", "images_per_s")


def append(run: Path, record: dict[str, Any]) -> None:
    """Add one evaluation's record."""
    with (run / FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def keep_first(run: Path, count: int) -> None:
    """Drop records written after the checkpoint a resumed run starts from."""
    path = run / FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    write_atomic(path, "".join(lines[:count]))


def read(run: Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """All records of a run, in order; each must be an object with numbers for `required`."""
    path = run / FILE
    if not path.is_file():
        raise TrainError(f"no {FILE} here; is this a training run's folder?", Location(str(run)))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TrainError("not UTF-8 text", Location(str(path))) from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainError(
                f"not JSON: {exc.msg}", Location(str(path), number, exc.colno)
            ) from None
        if not isinstance(record, dict):
            raise TrainError("a record must be a JSON object", Location(str(path), number, 1))
        for key in required:
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TrainError(
                    f"the record has no number {key!r}", Location(str(path), number, 1)
                )
        records.append(record)
    return records


class Board:
    """TensorBoard scalars of each record, by iteration (rank 0 only; torch's SummaryWriter)."""

    def __init__(self, run: Path, resumed_at: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run wrote after the checkpoint it resumes from
        self.writer = SummaryWriter(
            log_dir=str(run / BOARD), purge_step=resumed_at + 1 if resumed_at else None
        )

    def write(self, record: dict[str, Any]) -> None:
        """Add one record's numbers and flush, so a live TensorBoard sees them at once."""
        for key in SCALARS:
            if key in record:
                self.writer.add_scalar(key, record[key], record["iteration"])
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
