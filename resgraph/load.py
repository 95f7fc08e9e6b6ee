"""Read YAML specs safely, keeping the line and column of every key and value.

Guards against hostile input live here: a size cap on files, a nesting cap, an alias
expansion cap (YAML bombs), UTF-8 only, no duplicate keys, and no tags beyond YAML's
safe core schema. `extends:` and `--set` overrides are resolved on the located tree.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resgraph.errors import Location, SpecError
from resgraph.paths import describe, status
from resgraph.registry import shipped_file

MAX_FILE_BYTES = 1 << 20
READ_CHUNK = 1 << 20  # reads grow with the file, never with the limit
MAX_DEPTH = 32
MAX_YAML_NODES = 50_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# PyYAML's safe constructors trust their resolver: a scalar that looks like a date but is
# not one (2001-13-45), or an explicit tag on text that does not fit it (!!int abc,
# !!bool maybe, !!timestamp x), escapes as one of these instead of a YAMLError.
_CONSTRUCTOR_ERRORS = (ValueError, KeyError, AttributeError)

KeyPath = tuple[str | int, ...]
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


@dataclass
class Document:
    """Plain data from YAML plus where each value (and each mapping key) came from."""

    data: Any
    values: dict[KeyPath, Location] = field(default_factory=dict)
    keys: dict[KeyPath, Location] = field(default_factory=dict)

    def locate(self, path: Iterable[str | int]) -> Location | None:
        """Location of the deepest part of `path` that the document knows."""
        path = tuple(path)
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return None

    def locate_key(self, path: Iterable[str | int]) -> Location | None:
        """Location of the key that introduces `path`, falling back to its value."""
        path = tuple(path)
        return self.keys.get(path) or self.locate(path)


def read_bytes_bounded(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, at most `limit` of them, or a one-line SpecError saying why not.

    The cap counts bytes actually read, not `st_size` (0 for /dev/zero), and anything but a
    regular file is refused before a byte is read: a FIFO would block, a device never end.
    `what` names the file in messages, with its article: "a spec file", "a recipe".
    """
    where = Location(str(path))
    found = status(path, where)
    if found is None:
        raise SpecError("no such file", where)
    if not stat.S_ISREG(found.st_mode):
        raise SpecError(f"is {describe(found.st_mode)}, not {what}", where)
    try:  # O_NONBLOCK: a FIFO swapped in since the check must not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", where) from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SpecError(f"is {describe(mode)}, not {what}", where)
        chunks: list[bytes] = []
        left = limit + 1  # one byte past the limit tells a file at the limit from a larger one
        try:
            while left and (chunk := handle.read(min(left, READ_CHUNK))):
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            raise SpecError(f"cannot read: {exc.strerror}", where) from None
    if not left:
        raise SpecError(f"over {limit:,} bytes; {what} is limited to {limit:,}", where)
    return b"".join(chunks)


def read_text_bounded(path: Path, limit: int, what: str) -> str:
    """`read_bytes_bounded` decoded as UTF-8; a bad byte is refused with its line and column."""
    raw = read_bytes_bounded(path, limit, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
            Location(str(path), line, column),
        ) from None


def read_text(path: Path) -> str:
    """Read a spec file as UTF-8 text, at most MAX_FILE_BYTES of it."""
    return read_text_bounded(path, MAX_FILE_BYTES, "a spec file")


def parse_yaml(text: str, file: str) -> Document:
    """Parse one YAML document into located plain data."""
    try:
        _check_depth(text, file)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"YAML syntax error: {problem}", _mark(file, mark)) from None
    except yaml.reader.ReaderError as exc:  # its position counts bytes or characters by loader
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError(
            f"the control character U+{code:04X} is not allowed in YAML; remove it",
            _offset(text, file, text.find(chr(code))),
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", Location(file)) from None
    except RecursionError:
        raise SpecError(f"YAML nested deeper than {MAX_DEPTH} levels", Location(file)) from None
    if node is None:
        raise SpecError("the file is empty; a spec is a YAML mapping", Location(file, 1, 1))
    _measure(node, file, 0, {})
    doc = Document(data=None)
    doc.data = _Builder(file, doc).build(node, ())
    return doc


def _check_depth(text: str, file: str) -> None:
    """Refuse deep nesting from the flat event stream: composing it would overflow the C stack."""
    try:
        _scan_depth(text, file, _Loader)
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" not in str(exc.problem):
            raise
        # Newer libyaml stops at its own limit (1,000) before yielding an event; the pure-Python
        # parser has none, so it finds where our limit is passed, as with older versions.
        _scan_depth(text, file, yaml.SafeLoader)


def _scan_depth(text: str, file: str, loader: type) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(
                    f"YAML nested deeper than {MAX_DEPTH} levels", _mark(file, event.start_mark)
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _offset(text: str, file: str, index: int) -> Location:
    """The line and column of character `index` of `text`."""
    line = text.count("\n", 0, index) + 1
    return Location(file, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _mark(file: str, mark: Any) -> Location:
    if mark is None:
        return Location(file)
    return Location(file, mark.line + 1, mark.column + 1)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _measure(node: yaml.Node, file: str, depth: int, memo: dict[int, int]) -> int:
    """Count nodes with aliases expanded, so a YAML bomb is refused before it is built."""
    if id(node) in memo:
        return memo[id(node)]
    if depth > MAX_DEPTH:
        raise SpecError(f"YAML nested deeper than {MAX_DEPTH} levels", _mark(file, node.start_mark))
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_measure(child, file, depth + 1, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(
            _measure(k, file, depth + 1, memo) + _measure(v, file, depth + 1, memo)
            for k, v in node.value
        )
    if size > MAX_YAML_NODES:
        raise SpecError(
            f"YAML expands to more than {MAX_YAML_NODES:,} nodes (too many aliases?)",
            _mark(file, node.start_mark),
        )
    memo[id(node)] = size
    return size


class _Builder:
    """Turns composed YAML nodes into plain data, recording every location on the way."""

    def __init__(self, file: str, doc: Document) -> None:
        self.file = file
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.doc.values[path] = _mark(self.file, node.start_mark)
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
            raise SpecError(
                f"the YAML tag {node.tag!r} is not allowed in a spec",
                _mark(self.file, node.start_mark),
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar's value; a tag outside the safe schema (`!binary`, `!!python/`) is located."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            problem = exc.problem or "cannot read this value"
            raise SpecError(
                problem, _mark(self.file, exc.problem_mark or node.start_mark)
            ) from None
        except _CONSTRUCTOR_ERRORS:
            raise SpecError(
                f"cannot read {_clip(node.value)!r} as a YAML "
                f"{node.tag.removeprefix('tag:yaml.org,2002:')}; quote it if it is text",
                _mark(self.file, node.start_mark),
            ) from None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        try:
            self.constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise SpecError(
                exc.problem or "bad merge key", _mark(self.file, exc.problem_mark)
            ) from None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where = _mark(self.file, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("mapping keys must be plain names", where)
            key = self._scalar(key_node)
            if not isinstance(key, str):
                raise SpecError(
                    f"mapping key {key!r} must be a name, not a {type(key).__name__}", where
                )
            if key in result:
                first = self.doc.keys[(*path, key)]
                raise SpecError(f"duplicate key {key!r} (first given at line {first.line})", where)
            self.doc.keys[(*path, key)] = where
            result[key] = self.build(value_node, (*path, key))
        return result


def load_file(path: Path, what: str = "a spec file") -> Document:
    """Read and parse one YAML file, which must hold a mapping; `what` names it in messages."""
    doc = parse_yaml(read_text_bounded(path, MAX_FILE_BYTES, what), str(path))
    if not isinstance(doc.data, dict):
        raise SpecError("a spec must be a YAML mapping of keys to values", doc.locate(()))
    return doc


def load_spec(path: str | Path) -> Document:
    """Load a spec file with its `extends:` chain merged (child keys win, lists replace)."""
    return _load_with_parents(Path(path), ())


def _load_with_parents(path: Path, chain: tuple[Path, ...]) -> Document:
    doc = load_file(path)
    parent_name = doc.data.get("extends")
    if parent_name is None:
        return doc
    where = doc.locate(("extends",))
    if not isinstance(parent_name, str) or not parent_name:
        raise SpecError("extends must be a path to another spec file", where)
    given = path.parent / parent_name
    try:
        found = status(given)
    except SpecError as exc:  # a name too long, a symlink loop, a NUL byte
        raise SpecError(f"extends {parent_name!r}: {exc.message}", where) from None
    parent_path, here = Path(os.path.realpath(given)), Path(os.path.realpath(path))
    shown = Path(os.path.normpath(path.parent / parent_name))  # as the user's paths are written
    if found is None and (shipped := shipped_file(parent_name)) is not None:
        parent_path, shown, found = Path(os.path.realpath(shipped)), shipped, status(shipped)
    if parent_path in (*chain, here):
        cycle = " -> ".join(p.name for p in (*chain, here, parent_path))
        raise SpecError(f"extends cycle: {cycle}", where)
    if found is None:
        raise SpecError(f"extends {parent_name!r}, but {parent_path} does not exist", where)
    if not stat.S_ISREG(found.st_mode):
        raise SpecError(
            f"extends {parent_name!r}, but {parent_path} is {describe(found.st_mode)}, "
            "not a spec file",
            where,
        )
    parent = _load_with_parents(shown, (*chain, here))
    del doc.data["extends"]
    return merge(parent, doc)


def merge(base: Document, over: Document) -> Document:
    """Deep-merge `over` onto `base`: mappings merge key by key, anything else replaces."""
    out = Document(data=None)
    out.data = _merge_into(out, base, over, ())
    return out


def _merge_into(out: Document, base: Document, over: Document, path: KeyPath) -> Any:
    base_value, over_value = _get(base.data, path), _get(over.data, path)
    if not (isinstance(base_value, dict) and isinstance(over_value, dict)):
        _copy_locations(out, over, path)
        return over_value
    _copy_locations(out, over, path, subtree=False)
    merged: dict[str, Any] = {}
    for key, value in base_value.items():
        if key not in over_value:
            _copy_locations(out, base, (*path, key))
            merged[key] = value
    for key in over_value:
        if key in base_value:
            merged[key] = _merge_into(out, base, over, (*path, key))
        else:
            _copy_locations(out, over, (*path, key))
            merged[key] = over_value[key]
    return merged


def _get(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _copy_locations(out: Document, src: Document, prefix: KeyPath, subtree: bool = True) -> None:
    n = len(prefix)
    for table, target in ((src.values, out.values), (src.keys, out.keys)):
        for key, where in table.items():
            if key[:n] == prefix and (subtree or len(key) == n):
                target[key] = where


def apply_overrides(
    doc: Document,
    overrides: Iterable[str],
    params_key: str = "params",
    fields: Iterable[str] = (),
) -> Document:
    """Apply `--set NAME=VALUE` overrides: a parameter name, or a dotted path (stages.0.blocks).

    `fields` are top-level keys the document may gain even where it leaves them out.
    """
    known = frozenset(fields)
    for text in overrides:
        _apply_override(doc, text, params_key, known)
    return doc


def _apply_override(doc: Document, text: str, params_key: str, fields: frozenset[str]) -> None:
    root = doc.values.get(())
    where = Location(root.file if root else "--set", via=f"--set {text}")
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise SpecError("expected NAME=VALUE, e.g. --set n=18 or --set stages.0.blocks=5", where)
    if len(raw) > 1000:
        raise SpecError("value longer than 1,000 characters", where)
    try:  # the same guarded parser as files: no tags, no alias bombs, no deep nesting
        value = parse_yaml(raw, "--set").data if raw.strip() else ""
    except SpecError as exc:
        raise SpecError(f"cannot read value {_clip(raw)!r}: {exc.message}", where) from None
    params = doc.data.get(params_key)
    if "." not in name and isinstance(params, dict) and name in params:
        path: KeyPath = (params_key, name)
    else:
        path = _override_path(doc.data, name, where, params, fields)
    container = _get(doc.data, path[:-1])
    container[path[-1]] = value
    for end in range(1, len(path)):  # sections created on the way point at the override
        doc.values.setdefault(path[:end], where)
        doc.keys.setdefault(path[:end], where)
    for table in (doc.values, doc.keys):
        for key in [k for k in table if k[: len(path)] == path]:
            del table[key]
        table[path] = where


def _override_path(
    data: Any, name: str, where: Location, params: Any, fields: frozenset[str]
) -> KeyPath:
    parts = name.split(".")
    path: list[str | int] = []
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        shown = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise SpecError(f"{shown}: a list position must be a number", where)
            index = int(part)
            if not 0 <= index < len(node):
                raise SpecError(
                    f"{shown}: index {index} out of range (the list has {len(node)})", where
                )
            path.append(index)
            node = node[index]
        elif isinstance(node, dict):
            if part not in node and i == 0 and last and part not in fields:
                raise SpecError(_unknown_field(shown, part, node, params), where)
            if part not in node and not last:
                node[part] = {}  # a section the spec leaves to its defaults, e.g. init
            path.append(part)
            node = node.get(part)
        else:
            raise SpecError(
                f"{shown}: {'.'.join(parts[:i])} is the single value {node!r}; set it whole, "
                f"e.g. --set {'.'.join(parts[:i])}='{{...}}' in YAML flow style",
                where,
            )
    return tuple(path)


def _unknown_field(shown: str, part: str, node: dict[str, Any], params: Any) -> str:
    candidates = list(node) + (list(params) if isinstance(params, dict) else [])
    message = f"{shown}: no such parameter or field"
    close = difflib.get_close_matches(part, candidates, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    if isinstance(params, dict):
        message += f"; parameters: {', '.join(params) or 'none'}"
    return message
