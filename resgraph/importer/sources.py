"""Which reader a source needs: a .onnx file, a .prototxt file or `package.module:callable`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resgraph.importer.source import ImportFailure, SourceGraph

DEFAULT_INPUT = (3, 224, 224)


def kind_of(source: str) -> str:
    """onnx, prototxt or module."""
    suffix = Path(source).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".prototxt":
        return "prototxt"
    if ":" in source and not Path(source).exists():
        return "module"
    raise ImportFailure(
        f"{source}: name a .onnx file, a .prototxt file or a callable as "
        "package.module:function (e.g. torchvision.models:resnet50)"
    )


def read_source(
    source: str, kwargs: Mapping[str, Any], input_shape: tuple[int, int, int] | None
) -> SourceGraph:
    """The source as a SourceGraph; `kwargs` and `input_shape` are for module sources."""
    kind = kind_of(source)
    if kind != "module":
        if kwargs:
            raise ImportFailure(f"{source}: --arg is for a callable, not a {kind} file")
        if input_shape is not None:
            raise ImportFailure(f"{source}: --input is for a callable; a {kind} file gives its own")
    if kind == "onnx":
        from resgraph.importer.onnx_reader import read_onnx

        return read_onnx(Path(source))
    if kind == "prototxt":
        from resgraph.importer.caffe_reader import read_prototxt

        return read_prototxt(Path(source))
    from resgraph.importer.torch_reader import build_module, read_module

    module = build_module(source, kwargs)
    return read_module(module, input_shape or DEFAULT_INPUT, source)


def default_name(source: str) -> str:
    """resnet50.onnx -> resnet50; torchvision.models:resnet50 -> resnet50."""
    from resgraph.importer.spec_writer import network_name

    if kind_of(source) == "module":
        return network_name(source.rpartition(":")[2].rpartition(".")[2])
    return network_name(Path(source).stem)
