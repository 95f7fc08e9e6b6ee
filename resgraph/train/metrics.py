"""metrics.jsonl: one JSON object per evaluation, the contract `plot` and other tools read.

With `--tensorboard` the same records also go to RUN/tensorboard as scalars by iteration.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from resgraph.errors import Location
from resgraph.output import write_atomic
from resgraph.train import TrainError

FILE = "metrics.jsonl"
BOARD = "tensorboard"
SCALARS = ("train_loss", "train_error", "test_error", "val_error", "lr", "images_per_s")
PLOTTED = ("iteration", "train_error", "test_error")  # what `plot` needs of every record
MAX_FILE_BYTES = 16 << 20  # about 80,000 records
MAX_LINE_BYTES = 4096  # a record the trainer writes is about 200 bytes
MAX_DIGITS = 18  # an integer in a record (an iteration) fits in 64 bits


def append(run: Path, record: dict[str, Any]) -> None:
    """Add one evaluation's record."""
    with (run / FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def keep_first(run: Path, count: int) -> None:
    """Drop records written after the checkpoint a resumed run starts from.

    The records kept are checked as `plot` reads them, so a damaged line is reported now,
    with its place, rather than surviving to break `plot` later.
    """
    path = run / FILE
    if not path.exists():
        write_atomic(path, "")
        return
    kept = []
    for number, line in _lines(path):
        if number > count:
            break
        _record(line, Location(str(path), number), PLOTTED)
        kept.append(line)
    write_atomic(path, b"".join(kept))


def read(run: Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """All records of a run, in order; each must be an object with numbers for `required`."""
    path = run / FILE
    if not path.is_file():
        raise TrainError(f"no {FILE} here; is this a training run's folder?", Location(str(run)))
    return [_record(line, Location(str(path), number), required) for number, line in _lines(path)]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The file's lines with their numbers, refusing a file or a line over the bounds."""
    where = Location(str(path))
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise TrainError("not a regular file", where)
            total = 0
            for number in itertools.count(1):
                line = handle.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                total += len(line)
                if total > MAX_FILE_BYTES:
                    raise TrainError(f"over {MAX_FILE_BYTES:,} bytes; too large for {FILE}", where)
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    raise TrainError(
                        f"a line over {MAX_LINE_BYTES:,} bytes; records are about 200",
                        Location(str(path), number, 1),
                    )
                yield number, line if line.endswith(b"\n") else line + b"\n"
    except OSError as exc:
        raise TrainError(f"cannot read {FILE}: {exc.strerror or exc}", where) from None


def _number(text: str, kind: type) -> int | float:
    """A JSON number within what a record holds: short integers, finite floats."""
    if kind is int and len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits")
    value = kind(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not a finite number")


def _record(line: bytes, where: Location, required: Sequence[str]) -> dict[str, Any]:
    """One line as a record: a JSON object with numbers for the `required` keys."""
    at = Location(where.file, where.line, 1)
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise TrainError(
            f"not UTF-8 text (byte 0x{line[exc.start]:02x})",
            Location(where.file, where.line, exc.start + 1),
        ) from None
    try:
        record = json.loads(
            text,
            parse_int=lambda t: _number(t, int),
            parse_float=lambda t: _number(t, float),
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise TrainError(
            f"not JSON: {exc.msg}", Location(where.file, where.line, exc.colno)
        ) from None
    except RecursionError:
        raise TrainError("not a record: nested too deeply", at) from None
    except ValueError as exc:
        raise TrainError(f"not a record: {exc}", at) from None
    if not isinstance(record, dict):
        raise TrainError("a record must be a JSON object", at)
    for key in required:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrainError(f"the record has no number {key!r}", at)
    return record


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
