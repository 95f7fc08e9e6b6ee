"""The front end in one call: load -> Spec -> expand -> graph -> passes."""

from __future__ import annotations

import contextlib
import difflib
import gc
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from resgraph.errors import SpecError
from resgraph.expand import DEFAULT_MAX_NODES, Plan, expand
from resgraph.graph import build_network, to_networkx
from resgraph.ir import Network
from resgraph.load import Document, apply_overrides, load_spec
from resgraph.passes import cost, fold
from resgraph.registry import resolve_spec
from resgraph.spec import Spec, all_field_names


@dataclass(frozen=True)
class Compiled:
    """A checked network: its source document, spec, plan, the annotated IR and its graph."""

    path: Path
    doc: Document
    spec: Spec
    plan: Plan
    network: Network
    graph: nx.DiGraph  # the IR as a networkx graph, for graph algorithms, drawing and reports

    @property
    def content_hash(self) -> str:
        """A short hash of the expanded spec and the block types it uses, blind to formatting."""
        used = {b.source.name: b.source.block_type for s in self.plan.stages for b in s.blocks}
        content = {
            "spec": self.spec.model_dump(mode="json"),
            "block_types": {name: bt.model_dump(mode="json") for name, bt in used.items()},
        }
        text = json.dumps(content, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_spec(doc: Document) -> Spec:
    """Validate located data against the language, turning the first error into a SpecError."""
    try:
        return Spec.model_validate(doc.data)
    except ValidationError as exc:
        raise _located(exc, doc) from None


def _located(exc: ValidationError, doc: Document) -> SpecError:
    errors = exc.errors(include_url=False)
    error = min(errors, key=lambda e: _sort_key(doc, e["loc"]))
    if error["type"] == "missing":  # a misspelt required key: point at the misspelling
        wanted = str(error["loc"][-1])
        for other in errors:
            if (
                other["type"] == "extra_forbidden"
                and other["loc"][:-1] == error["loc"][:-1]
                and difflib.get_close_matches(str(other["loc"][-1]), [wanted], n=1)
            ):
                error = {**other, "hint": wanted}
                break
    known = _known_keys(doc)
    loc = tuple(part for part in error["loc"] if isinstance(part, int) or part in known)
    dotted = ".".join(str(p) for p in loc) or "spec"
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        close = [error["hint"]] if "hint" in error else []
        close = close or difflib.get_close_matches(key, sorted(all_field_names()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return SpecError(
            f"unknown key {key!r} in {'.'.join(map(str, loc[:-1])) or 'spec'}{hint}",
            doc.locate_key(loc),
        )
    if kind == "missing":
        parent = ".".join(str(p) for p in loc[:-1]) or "the spec"
        return SpecError(f"{parent}: missing required key {loc[-1]!r}", doc.locate(loc[:-1]))
    message = error["msg"].removeprefix("Value error, ")
    if "[key]" in error["loc"]:  # a refused mapping key (a parameter's name): point at it
        return SpecError(f"{dotted}: {message}", doc.locate_key(loc))
    return SpecError(f"{dotted}: {message}", doc.locate(loc))


def _known_keys(doc: Document) -> set[str]:
    """Keys that are real spec fields (pydantic adds union tags such as 'function-after')."""
    return {p for path in doc.values for p in path if isinstance(p, str)} | set(all_field_names())


def _sort_key(doc: Document, loc: tuple[Any, ...]) -> tuple[int, int]:
    where = doc.locate(loc)
    return (where.line, where.column) if where else (0, 0)


def compile_spec(
    path: str | Path, overrides: Sequence[str] = (), max_nodes: int = DEFAULT_MAX_NODES
) -> Compiled:
    """Load, validate, expand and analyse a spec file or shipped model's name; raise SpecError
    on any mistake."""
    path = resolve_spec(path)
    return compile_document(load_spec(path), path, overrides, max_nodes)


def compile_document(
    doc: Document,
    path: Path,
    overrides: Sequence[str] = (),
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Compiled:
    """The front end after loading, for documents from text or data; `path` names the source
    (generated files say they come from `path.name`). Overrides change `doc` in place."""
    doc = apply_overrides(doc, overrides, fields=Spec.model_fields)
    spec = to_spec(doc)
    plan = expand(spec, doc, max_nodes)
    with _collector_paused():
        network = fold.annotate(cost.annotate(build_network(plan)))
        graph = to_networkx(network)
    return Compiled(path, doc, spec, plan, network, graph)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the IR is built: its full passes over a
    growing heap of small records made building 10,000 blocks quadratic. The IR holds no
    cycles, so nothing is left for the collector when it resumes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
