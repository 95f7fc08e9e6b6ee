"""Protobuf text format (Caffe's .prototxt) read into located values, without protobuf.

The syntax needs no message definitions: a message is an ordered list of fields, each a
scalar or a nested message, and what a field means is the reader's business
(`caffe_reader`). Every field keeps its line and column, so the reader's refusals point at
it. A hostile file is bounded three ways (bytes read, nesting, count of fields) and
refused with one located line, never a hang or a RecursionError.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from resgraph.errors import Location, SpecError, printable
from resgraph.importer.source import ImportFailure
from resgraph.load import read_text_bounded

MAX_PROTOTXT_BYTES = 1 << 22  # 4 MiB; the paper's ResNet-152 deploy prototxt is ~100 KB
MAX_DEPTH = 32  # Caffe nests 3 deep (layer > convolution_param > weight_filler)
MAX_FIELDS = 100_000  # the paper's ResNet-152 deploy prototxt has ~5,000
_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


@dataclass(frozen=True)
class Identifier:
    """A bare identifier value, an enum's name (`pool: MAX`), distinct from a quoted string."""

    name: str

    def __str__(self) -> str:
        return self.name


Scalar = str | int | float | bool | Identifier


class Field(NamedTuple):
    """One `name: value` or `name { ... }`, and where it is written (a tuple: files hold many)."""

    name: str
    value: Scalar | Message
    file: str
    line: int
    column: int

    @property
    def where(self) -> Location:
        return Location(self.file, self.line, self.column)


@dataclass(frozen=True)
class Message:
    """A `{ ... }` block (or the whole file): its fields in order, repeated ones repeated."""

    fields: tuple[Field, ...]
    where: Location

    def all(self, name: str) -> list[Field]:
        """Every occurrence of a repeated field, in order."""
        return [f for f in self.fields if f.name == name]

    def one(self, name: str) -> Field | None:
        """A singular field, or None; given twice is an error, as protobuf's own parser says."""
        found = self.all(name)
        if len(found) > 1:
            raise failure(found[1].where, f"'{name}' is given twice; it takes one value")
        return found[0] if found else None

    def get(self, name: str, default: Scalar | Message | None = None) -> Scalar | Message | None:
        """A singular field's value, or `default`."""
        found = self.one(name)
        return default if found is None else found.value


def clip(text: str, limit: int = 64) -> str:
    """A name from the file as a message shows it: one line, at most `limit` characters."""
    return printable(text if len(text) <= limit else text[:limit] + "...")


def failure(where: Location, message: str) -> ImportFailure:
    """The one-line error every prototxt problem becomes: `file:line:col: message`."""
    return ImportFailure(f"{where}: {message}")


def read(path: Path) -> Message:
    """Parse a prototxt file, at most MAX_PROTOTXT_BYTES of it."""
    try:
        text = read_text_bounded(path, MAX_PROTOTXT_BYTES, "a prototxt")
    except SpecError as exc:
        raise ImportFailure(str(exc)) from None
    return parse(text, str(path))


def parse(text: str, file: str) -> Message:
    """Parse protobuf text format into a Message located in `file`."""
    return _Parser(text.removeprefix("\ufeff"), file).document()


_TOKEN = re.compile(
    r"""(?P<space>(?:[ \t\r\n\f\v]+|\#[^\n]*)+)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<number>(?:0[xX][0-9A-Fa-f]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?
                 |\.[0-9]+(?:[eE][+-]?[0-9]+)?)[fF]?)
    |(?P<string>"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"|'[^'\\\n]*(?:\\[^\n][^'\\\n]*)*')
    |(?P<punct>[{}<>\[\]:;,\-])""",
    re.VERBOSE,
)
_ESCAPE = re.compile(  # on the literal's UTF-8 bytes: an escape may give one byte
    rb"\\(?:([0-7]{1,3})|[xX]([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))",
    re.DOTALL,
)
_SIMPLE_ESCAPES = {
    b"n": b"\n", b"t": b"\t", b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f",
    b"v": b"\v", b"\\": b"\\", b"'": b"'", b'"': b'"', b"?": b"?",
}  # fmt: skip
_CLOSE = {"{": "}", "<": ">"}
_NON_FINITE = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}


class _Token(NamedTuple):
    kind: str  # ident, number, string, punct, end
    text: str
    file: str
    line: int
    column: int

    @property
    def where(self) -> Location:
        return Location(self.file, self.line, self.column)

    def shown(self) -> str:
        if self.kind == "end":
            return "the end of the file"
        if self.kind == "string":
            return "a string"
        return f"'{clip(self.text, 40)}'"


class _Parser:
    """Recursive descent over a token stream; recursion is capped at MAX_DEPTH."""

    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.tokens = self._tokens(text)
        self.token = next(self.tokens)
        self.count = 0

    def _tokens(self, text: str) -> Iterator[_Token]:
        """Tokens with their places; whitespace and `#` comments dropped."""
        pos, line, line_start = 0, 1, 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                char = text[pos]
                where = Location(self.file, line, pos - line_start + 1)
                if char in "\"'":
                    raise failure(where, "a string is not closed on its line")
                raise failure(where, f"unexpected character {printable(repr(char))}")
            kind, end = match.lastgroup or "", match.end()
            if kind == "space":
                newlines = text.count("\n", pos, end)
                if newlines:
                    line += newlines
                    line_start = text.rfind("\n", pos, end) + 1
            else:
                if (
                    kind == "number"
                    and end < len(text)
                    and (text[end].isalnum() or text[end] in "_.")
                ):
                    raise failure(
                        Location(self.file, line, pos - line_start + 1),
                        f"malformed number '{clip(text[pos : end + 1], 40)}'",
                    )
                yield _Token(kind, match.group(), self.file, line, pos - line_start + 1)
            pos = end
        yield _Token("end", "", self.file, line, pos - line_start + 1)

    def advance(self) -> _Token:
        token, self.token = self.token, next(self.tokens, self.token)  # the end repeats
        return token

    def accept(self, text: str) -> bool:
        if self.token.kind == "punct" and self.token.text == text:
            self.advance()
            return True
        return False

    def document(self) -> Message:
        return Message(
            self.fields(None, 0, "", Location(self.file, 1, 1)), Location(self.file, 1, 1)
        )

    def fields(
        self, close: str | None, depth: int, owner: str, opened: Location
    ) -> tuple[Field, ...]:
        """Fields up to `close` (None: the end of the file)."""
        out: list[Field] = []
        while True:
            token = self.token
            if token.kind == "end":
                if close is None:
                    return tuple(out)
                raise failure(
                    token.where,
                    f"the file ends inside '{clip(owner)}' (opened at "
                    f"{opened.line}:{opened.column}); '{close}' is missing",
                )
            if token.kind == "punct" and token.text == close:
                self.advance()
                return tuple(out)
            if token.kind == "punct" and token.text == "[":
                raise failure(token.where, "extension and Any fields ([...]) are not supported")
            if token.kind != "ident":
                raise failure(token.where, f"expected a field name, not {token.shown()}")
            self.advance()
            self.field(token, depth, out)
            if not self.accept(";"):
                self.accept(",")

    def field(self, name: _Token, depth: int, out: list[Field]) -> None:
        """The value(s) after a field name: a scalar, a message, or a `[...]` list of either."""
        colon = self.accept(":")
        if self.token.kind == "punct" and self.token.text in _CLOSE:
            out.append(self.counted(name.text, self.message(name.text, depth), name))
        elif self.accept("["):
            if self.accept("]"):
                return
            while True:
                at = self.token
                if self.token.kind == "punct" and self.token.text in _CLOSE:
                    value: Scalar | Message = self.message(name.text, depth)
                else:
                    value = self.scalar(name.text)
                out.append(self.counted(name.text, value, at))
                if self.accept("]"):
                    return
                if not self.accept(","):
                    raise failure(
                        self.token.where,
                        f"expected ',' or ']' in the list of '{clip(name.text)}', "
                        f"not {self.token.shown()}",
                    )
        elif colon:
            out.append(self.counted(name.text, self.scalar(name.text), name))
        else:
            raise failure(
                self.token.where,
                f"expected ':' or '{{' after '{clip(name.text)}', not {self.token.shown()}",
            )

    def counted(self, name: str, value: Scalar | Message, at: _Token) -> Field:
        self.count += 1
        if self.count > MAX_FIELDS:
            raise failure(
                at.where,
                f"more than {MAX_FIELDS:,} fields; a prototxt is limited to {MAX_FIELDS:,}",
            )
        return Field(name, value, at.file, at.line, at.column)

    def message(self, owner: str, depth: int) -> Message:
        opening = self.advance()
        if depth + 1 > MAX_DEPTH:
            raise failure(opening.where, f"nested deeper than {MAX_DEPTH} levels")
        fields = self.fields(_CLOSE[opening.text], depth + 1, owner, opening.where)
        return Message(fields, opening.where)

    def scalar(self, owner: str) -> Scalar:
        token = self.advance()
        if token.kind == "string":
            text = _unquote(token)
            while self.token.kind == "string":  # adjacent literals concatenate, as in C
                text += _unquote(self.advance())
            return text
        if token.kind == "number":
            return _number(token.text, token.where)
        if token.kind == "ident":
            if token.text in ("true", "True"):
                return True
            if token.text in ("false", "False"):
                return False
            return Identifier(token.text)
        if token.kind == "punct" and token.text == "-":
            value = self.advance()
            if value.kind == "number":
                return _number("-" + value.text, token.where)
            if value.kind == "ident" and value.text.lower() in _NON_FINITE:
                return -_NON_FINITE[value.text.lower()]
            raise failure(value.where, f"expected a number after '-', not {value.shown()}")
        raise failure(token.where, f"expected a value for '{clip(owner)}', not {token.shown()}")


def _number(text: str, where: Location) -> int | float:
    """An integer (decimal, 0x hex, 0 octal) within 64 bits, or a float."""
    if text.isdigit() and (text[0] != "0" or text == "0") and len(text) < 19:
        return int(text)  # the common case, fast: plain decimal within int64
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text)
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16) if len(digits) <= 18 else _UINT64_MAX + 1
    elif digits[-1] in "fF" or any(c in digits for c in ".eE"):
        return sign * float(digits.rstrip("fF"))
    elif len(digits) > 1 and digits[0] == "0":
        if not digits.isdigit() or any(c in "89" for c in digits):
            raise failure(where, f"malformed octal number {text!r}")
        value = int(digits, 8) if len(digits) <= 23 else _UINT64_MAX + 1
    else:
        value = int(digits) if len(digits) <= 20 else _UINT64_MAX + 1
    value *= sign
    if not _INT64_MIN <= value <= _UINT64_MAX:
        raise failure(
            where, f"the integer {text[:24]}{'...' if len(text) > 24 else ''} does not fit 64 bits"
        )
    return value


def _unquote(token: _Token) -> str:
    """A string literal's text: C escapes give bytes, and the bytes must be UTF-8."""
    body = token.text[1:-1]
    if "\\" not in body:
        return body

    def replace(match: re.Match[bytes]) -> bytes:
        octal, hexa, short, long, char = match.groups()
        simple = _SIMPLE_ESCAPES.get(char or b"")
        if simple is not None:
            return simple
        shown = match.group().decode("utf-8", "replace")
        if octal is not None:
            if int(octal, 8) > 0xFF:
                raise failure(token.where, f"the escape {shown} is more than one byte")
            return bytes((int(octal, 8),))
        if hexa is not None:
            return bytes((int(hexa, 16),))
        if short is not None or long is not None:
            code = int(short or long, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise failure(token.where, f"the escape {shown} is not a Unicode character")
            return chr(code).encode("utf-8")
        raise failure(token.where, f"unknown escape {printable(shown)!r} in a string")

    try:
        return _ESCAPE.sub(replace, body.encode("utf-8")).decode("utf-8")
    except UnicodeDecodeError:
        raise failure(token.where, "the string's escapes do not give UTF-8 text") from None
