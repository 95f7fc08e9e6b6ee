"""resgraph as a library: `compile` a spec from anywhere, `create_model` a module in-process.

Overrides are the CLI's `--set`, from Python: a keyword argument names a parameter or a
field, with `__` for the dots of a path (`n=18`, `stages__0__blocks=5`); `overrides=` takes a
mapping of dotted paths to values (`{"init.zero_init_residual": True}`) or `K=V` strings
exactly as `--set` does. Values are Python data, written as YAML for the same checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import yaml

from resgraph.errors import Location, SpecError
from resgraph.expand import DEFAULT_MAX_NODES
from resgraph.extras import require
from resgraph.ir import Network
from resgraph.load import MAX_FILE_BYTES, Document, load_spec, merge, parse_yaml
from resgraph.pipeline import Compiled, compile_document
from resgraph.registry import resolve_spec, shipped_file
from resgraph.summary import layer_rows

if TYPE_CHECKING:
    import onnx
    import torch

Source = str | Path | Mapping[str, Any]
Overrides = Mapping[str, Any] | Sequence[str] | None
_Loader = Callable[[], tuple[Document, Path]]

TEXT = "<string>"  # where errors in YAML text point
DATA = "<dict>"  # where errors in a dict point (lines do not apply)


class CompiledNetwork:
    """A checked network, as `resgraph compile` sees it: its size, graph and IR, and what the
    backends make of it. Built by `resgraph.compile`."""

    def __init__(
        self, compiled: Compiled, load: _Loader, overrides: tuple[str, ...], max_nodes: int
    ) -> None:
        self._compiled = compiled
        self._load = load
        self._overrides = overrides
        self._max_nodes = max_nodes

    def __repr__(self) -> str:
        return f"<CompiledNetwork {self.name}: {self.params:,} params, {self.macs:,} MACs>"

    @property
    def name(self) -> str:
        """The spec's `name:`, also the generated class's (in CamelCase) and file's."""
        return self._compiled.network.name

    @property
    def params(self) -> int:
        """Learnable parameters (BN statistics excluded)."""
        return self._compiled.network.params

    @property
    def macs(self) -> int:
        """Multiply-accumulates of conv and linear layers at the spec's input size."""
        return self._compiled.network.macs

    @property
    def network(self) -> Network:
        """The typed IR every backend reads."""
        return self._compiled.network

    @property
    def graph(self) -> nx.DiGraph:
        """The IR as a networkx graph, for graph algorithms, drawing and reports."""
        return self._compiled.graph

    @property
    def layers(self) -> list[dict[str, Any]]:
        """One row per layer, as `resgraph summary --json` lists them: name, op,
        output_shape, params, macs, block."""
        return layer_rows(self._compiled.graph)

    def pytorch_source(self, fold_bn: bool = False, channels_last: bool = False) -> str:
        """The standalone module `resgraph compile` writes (formatted with ruff)."""
        from resgraph.backends.pytorch import Options, render_module

        options = Options(fold_bn=fold_bn, channels_last=channels_last)
        return render_module(self._compiled, options, overrides=list(self._overrides))

    def to_module(
        self, num_classes: int | None = None, weights: str | Path | None = None
    ) -> torch.nn.Module:
        """The generated module built in memory (no file, no subprocess), optionally loaded
        with a state_dict or training checkpoint checked against the network."""
        require("torch", "torch")
        from resgraph.backends.pytorch import build_module

        net = self
        if num_classes is not None and num_classes != self.network.classes:
            net = self._with(f"head.classes={num_classes}")  # so weights are checked for it
        model = build_module(net._compiled)
        if weights is not None:
            model.load_state_dict(net._weights(weights), strict=True)
        return model

    def onnx(
        self,
        path: str | Path | None = None,
        *,
        weights: str | Path | None = None,
        seed: int = 0,
        opset: int = 17,
        fold_bn: bool = False,
        fp16: bool = False,
        static_batch: int | None = None,
    ) -> onnx.ModelProto | Path:
        """The ONNX model in memory, or written to `path` (which is returned); weights from a
        file, or He-init from `seed`, as `compile --target onnx` does."""
        require("onnx", "onnx")
        from resgraph.backends.onnx_export import build_model, compile_onnx
        from resgraph.backends.onnx_weights import he_init, load_weights

        options = {"opset": opset, "fold_bn": fold_bn, "fp16": fp16, "static_batch": static_batch}
        file = Path(weights) if weights is not None else None
        if path is not None:
            compile_onnx(self._compiled, output=Path(path), weights=file, seed=seed, **options)
            return Path(path)
        network = self._compiled.network
        values = load_weights(file, network) if file is not None else he_init(network, seed)
        return build_model(self._compiled, values, **options)

    def _with(self, override: str) -> CompiledNetwork:
        overrides = (*self._overrides, override)
        return _compile_loaded(self._load, overrides, self._max_nodes)

    def _weights(self, weights: str | Path) -> dict[str, torch.Tensor]:
        import torch

        from resgraph.backends.onnx_weights import load_weights

        checked = load_weights(Path(weights), self._compiled.network)
        return {k: torch.from_numpy(v) for k, v in checked.items()}


def compile(
    source: Source,
    overrides: Overrides = None,
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    **settings: Any,
) -> CompiledNetwork:
    """Check a spec: a path, a shipped model's name, YAML text or a dict (a str holding a
    newline, or starting with '{', is YAML text). Raises SpecError with the mistake's place."""
    load = _loader(source)
    return _compile_loaded(load, _override_texts(overrides, settings), max_nodes)


def create_model(
    source: Source,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    *,
    overrides: Overrides = None,
    **settings: Any,
) -> torch.nn.Module:
    """The nn.Module of a spec, as timm's `create_model`: the generated module's classes,
    state_dict keys and function, built in-process; `weights` is a state_dict or a training
    checkpoint ({"model": state_dict}) file, checked key by key."""
    return compile(source, overrides, **settings).to_module(num_classes, weights)


def _compile_loaded(load: _Loader, overrides: tuple[str, ...], max_nodes: int) -> CompiledNetwork:
    doc, path = load()
    compiled = compile_document(doc, path, overrides, max_nodes)
    return CompiledNetwork(compiled, load, overrides, max_nodes)


def _override_texts(overrides: Overrides, settings: Mapping[str, Any]) -> tuple[str, ...]:
    """Overrides as `--set` texts: strings as given, Python values written as YAML (JSON)."""
    if isinstance(overrides, str):
        raise TypeError("overrides takes a mapping or a list of 'K=V' strings, not one string")
    pairs = dict(overrides) if isinstance(overrides, Mapping) else {}
    texts = [] if isinstance(overrides, Mapping) else list(overrides or ())
    pairs.update({k.replace("__", "."): v for k, v in settings.items()})
    for key, value in pairs.items():
        try:
            texts.append(f"{key}={json.dumps(value)}")
        except TypeError:
            raise SpecError(
                f"{key}: a {type(value).__name__} is not a spec value (numbers, text, "
                "booleans, lists and dicts are)",
                Location("overrides"),
            ) from None
    return tuple(texts)


def _loader(source: Source) -> _Loader:
    """How to (re)load the source: each call gives a fresh Document, as overrides change it."""
    if isinstance(source, Mapping):
        data = dict(source)
        return lambda: (_with_parent(_data_document(data)), Path(DATA))
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        text = source
        return lambda: (_with_parent(_text_document(text)), Path(TEXT))
    if not isinstance(source, (str, Path)):
        raise TypeError(f"a spec is a path, a name, YAML text or a dict, not {type(source)}")
    path = resolve_spec(source)
    return lambda: (load_spec(path), path)


def _text_document(text: str) -> Document:
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise SpecError(f"spec text is over {MAX_FILE_BYTES:,} bytes", Location(TEXT))
    doc = parse_yaml(text, TEXT)
    if not isinstance(doc.data, dict):
        raise SpecError("a spec must be a YAML mapping of keys to values", doc.locate(()))
    return doc


def _data_document(data: dict[str, Any]) -> Document:
    """A dict through the same guarded reader as files, every place being just `<dict>`."""
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except yaml.YAMLError as exc:
        raise SpecError(f"not plain data: {exc}", Location(DATA)) from None
    doc = _text_document(text)
    where = Location(DATA)
    return Document(doc.data, dict.fromkeys(doc.values, where), dict.fromkeys(doc.keys, where))


def _with_parent(doc: Document) -> Document:
    """Resolve `extends:` of text or data: a path from the current folder, or a shipped name."""
    parent = doc.data.get("extends")
    if parent is None:
        return doc
    if not isinstance(parent, str) or not parent:
        where = doc.locate(("extends",))
        raise SpecError("extends must be a spec file or a shipped model's name", where)
    del doc.data["extends"]
    return merge(load_spec(shipped_file(parent) or resolve_spec(parent)), doc)
