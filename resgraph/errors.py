"""Errors are values with a source location until the CLI prints them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a spec: a file (or a --set override) with 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0
    via: str | None = None  # a command-line override that supplied the value, e.g. "--set n=18"

    def __str__(self) -> str:
        if self.line:
            return f"{printable(self.file)}:{self.line}:{self.column}"
        return printable(self.file)


def printable(text: str) -> str:
    """`text` with control characters escaped (a newline as \\n): a message stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class SpecError(Exception):
    """A mistake in a spec that a user can fix; printed as `file:line:col: message`."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        if location is not None and location.via:
            message = f"{printable(location.via)}: {message}"
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"
