"""Load an ONNX file for import, bounded like every other file resgraph reads.

The model and its external data are read through `load.read_bytes_bounded` (regular files
only, at most MAX_ONNX_BYTES in all), and external data only from files inside the model's
own folder: a `location` is a name chosen by whoever wrote the file, so one that climbs out
(`..`, an absolute path, a symlink) could make an import read any file the user can.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePath

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from resgraph.backends.onnx_save import PROTOBUF_LIMIT
from resgraph.errors import SpecError, printable
from resgraph.importer.source import ImportFailure
from resgraph.load import read_bytes_bounded

# The model and its external data together: what onnx's checker can still serialize once
# the data is inline. A ResNet-152 in float32 takes 240 MB.
MAX_ONNX_BYTES = PROTOBUF_LIMIT


def load_onnx(path: Path, limit: int = MAX_ONNX_BYTES) -> onnx.ModelProto:
    """The checked model with every tensor inline, or an ImportFailure saying why not."""
    data = _read(path, limit, "an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError):
        raise ImportFailure(f"{printable(str(path))}: not an ONNX model") from None
    if not model.graph.node or not model.opset_import:
        raise ImportFailure(f"{printable(str(path))}: not an ONNX model (no graph)")
    _inline_external(model, path, limit - len(data))
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFailure(
            f"{printable(str(path))}: not a valid ONNX model: {printable(first)}"
        ) from None
    return model


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        return read_bytes_bounded(path, limit, what)
    except SpecError as exc:
        raise ImportFailure(str(exc)) from None


def _tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Every tensor the graph holds: initializers and Constant nodes' values."""
    found = list(model.graph.initializer)
    for node in model.graph.node:
        found += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return found


def _inline_external(model: onnx.ModelProto, path: Path, budget: int) -> None:
    """Replace each external tensor by its bytes, read from files beside the model."""
    files: dict[Path, bytes] = {}
    for tensor in _tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        where = f"{printable(str(path))}: tensor '{printable(tensor.name)}'"
        info = {entry.key: entry.value for entry in tensor.external_data}
        file = _inside(path.parent, info.get("location", ""), where)
        if file not in files:
            files[file] = _read(file, max(budget, 0), "ONNX external data")
            budget -= len(files[file])
        data = files[file]
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
            offset = int(info.get("offset", 0))
            size = dtype.itemsize * math.prod(tensor.dims)
            length = int(info.get("length", size))
        except (KeyError, TypeError, ValueError):
            raise ImportFailure(f"{where}: unreadable external data entry") from None
        if length != size or offset < 0 or offset + size > len(data):
            raise ImportFailure(
                f"{where}: external data [{offset}, {offset + length}) does not hold its "
                f"{size:,} bytes in a file of {len(data):,}"
            )
        tensor.raw_data = data[offset : offset + size]
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _inside(folder: Path, location: str, where: str) -> Path:
    """The external data file `location` names, refused unless it lies inside `folder`."""
    shown = printable(location)
    name = PurePath(location)
    if not location or "\0" in location:
        raise ImportFailure(f"{where}: external data without a usable location")
    if name.is_absolute() or ".." in name.parts:
        raise ImportFailure(
            f"{where}: external data '{shown}' is outside the model's folder; "
            "only files beside the model are read"
        )
    file = folder / name
    try:
        inside = file.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise ImportFailure(
            f"{where}: external data '{shown}' links outside the model's folder; "
            "only files beside the model are read"
        )
    return file
