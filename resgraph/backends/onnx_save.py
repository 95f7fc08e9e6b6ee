"""Serializing an ONNX model with its initializers and writing it atomically.

Weights dominate a model's bytes, so they never pass through protobuf: the model is
serialized without them and each tensor is appended as a further `graph` field, which
protobuf merges into the first (repeated fields concatenate). The bytes go to disk as
chunks, so each array's data is copied once: into the file. A protobuf message cannot
pass 2 GB, so bigger models keep their tensors in a side file `<output>.<digest>.data`
(ONNX external data) read beside the model.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from resgraph.output import remove_stale_temps, temp_pattern, writable, write_atomic

PROTOBUF_LIMIT = 2**31 - 1
GRAPH_HEADROOM = 64 * 2**20  # room left under the limit for the nodes themselves
EXTERNAL_THRESHOLD = PROTOBUF_LIMIT - GRAPH_HEADROOM
ALIGN = 4096  # page-aligned offsets let onnxruntime memory-map external tensors
# Tensors under 1 KiB stay inline, as with onnx's own converter: shape inference and
# TensorRT's parser read Slice and Pad indices as constants only from there.
INLINE_BELOW = 1024
DIGEST_BYTES = 8  # a weights file's name carries 16 hex digits of its content's hash

GRAPH = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
INITIALIZER = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
RAW_DATA = TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number

Chunk = bytes | memoryview


def _length_delimited(field: int, length: int) -> bytes:
    """A protobuf key for a length-delimited `field` followed by its payload's length."""
    out = bytearray()
    for value in (field << 3 | 2, length):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _header(name: str, array: np.ndarray) -> TensorProto:
    """A tensor with the name, type and shape of `array` and no data yet."""
    dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
    return TensorProto(name=name, data_type=dtype, dims=array.shape)


def serialize(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> list[Chunk]:
    """`model`'s bytes with `arrays` appended as raw initializers, in chunks to write in turn."""
    chunks: list[Chunk] = [model.SerializeToString()]
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        header = _header(name, data).SerializeToString()
        raw = _length_delimited(RAW_DATA, data.nbytes)
        tensor = _length_delimited(INITIALIZER, len(header) + len(raw) + data.nbytes)
        graph = _length_delimited(GRAPH, len(tensor) + len(header) + len(raw) + data.nbytes)
        chunks += [graph, tensor, header, raw, memoryview(data)]
    return chunks


def externalize(
    model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], location: str
) -> tuple[bytes, bytes]:
    """The model's chunks, large tensors pointing into a file `location`, and that file's."""
    large = {name: array for name, array in arrays.items() if array.nbytes >= INLINE_BELOW}
    small = {name: array for name, array in arrays.items() if name not in large}
    chunks: list[Chunk] = []
    offset = 0
    for name, array in large.items():
        gap = -offset % ALIGN
        chunks.append(bytes(gap))
        offset += gap
        tensor = model.graph.initializer.add()
        tensor.CopyFrom(_header(name, array))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        chunks.append(memoryview(np.ascontiguousarray(array)))
        offset += array.nbytes
    return serialize(model, small), chunks


def save_model(
    model: onnx.ModelProto,
    arrays: Mapping[str, np.ndarray],
    output: Path,
    external_threshold: int = EXTERNAL_THRESHOLD,
) -> None:
    """Write `model` with `arrays` as initializers, in a weights file past the threshold.

    The weights file is named after its content (`<output>.<digest>.data`), so the new one
    never overwrites the one the current model reads: renaming the model into place is the
    single step that switches from the old pair to the new. A kill at any point leaves one
    consistent pair; weights files no model refers to are removed by the next write.
    """
    output = writable(output)  # the real file: its weights go beside it
    family = rf"{re.escape(output.name)}(\.[0-9a-f]{{{2 * DIGEST_BYTES}}})?\.data"
    remove_stale_temps(output.parent, temp_pattern(family))
    if sum(a.nbytes for a in arrays.values()) <= external_threshold:
        write_atomic(output, serialize(model, arrays))
        _remove_unused(output.parent, family, keep=None)
        return
    data_path = output.with_name(f"{output.name}.{_digest(arrays)}.data")
    existed = data_path.exists()  # the same weights, possibly the current model's: keep them
    model_bytes, data = externalize(model, arrays, data_path.name)
    write_atomic(data_path, data)
    try:
        write_atomic(output, model_bytes)
    except BaseException:
        if not existed:
            data_path.unlink(missing_ok=True)
        raise
    _remove_unused(output.parent, family, keep=data_path.name)


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A hash of everything that decides a weights file's bytes: names, types, shapes, data."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for name, array in arrays.items():
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def _remove_unused(folder: Path, family: str, keep: str | None) -> None:
    """Remove this output's weights files other than `keep`: no model refers to them now."""
    for entry in os.scandir(folder):
        if entry.name != keep and re.fullmatch(family, entry.name) and entry.is_file():
            Path(entry.path).unlink(missing_ok=True)
