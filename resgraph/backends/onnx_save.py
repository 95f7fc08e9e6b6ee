"""Attaching initializers to an ONNX model and writing it atomically, inline or as external data.

A protobuf message cannot pass 2 GB, so bigger models keep their tensors in a side file
`<output>.data` (ONNX external data) that onnxruntime and TensorRT read beside the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from resgraph.output import write_atomic

PROTOBUF_LIMIT = 2**31 - 1
GRAPH_HEADROOM = 64 * 2**20  # room left under the limit for the nodes themselves
EXTERNAL_THRESHOLD = PROTOBUF_LIMIT - GRAPH_HEADROOM
ALIGN = 4096  # page-aligned offsets let onnxruntime memory-map external tensors
# Tensors under 1 KiB stay inline, as with onnx's own converter: shape inference and
# TensorRT's parser read Slice and Pad indices as constants only from there.
INLINE_BELOW = 1024


def _initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> TensorProto:
    """A new initializer of `model` with the name, type and shape of `array`, and no data yet."""
    tensor = model.graph.initializer.add()
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor.dims.extend(array.shape)
    return tensor


def attach_inline(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """`model` with every array stored in it as a raw initializer."""
    for name, array in arrays.items():
        _initializer(model, name, array).raw_data = np.ascontiguousarray(array).tobytes()
    return model


def attach_external(
    model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], location: str
) -> bytes:
    """Point `model`'s large initializers into a file named `location`; return that file's bytes."""
    large = {name: array for name, array in arrays.items() if array.nbytes >= INLINE_BELOW}
    attach_inline(model, {name: array for name, array in arrays.items() if name not in large})
    chunks: list[bytes | np.ndarray] = []
    offset = 0
    for name, array in large.items():
        gap = -offset % ALIGN
        chunks.append(bytes(gap))
        offset += gap
        tensor = _initializer(model, name, array)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        chunks.append(np.ascontiguousarray(array))
        offset += array.nbytes
    return b"".join(chunks)


def save_model(
    model: onnx.ModelProto,
    arrays: Mapping[str, np.ndarray],
    output: Path,
    external_threshold: int = EXTERNAL_THRESHOLD,
) -> None:
    """Write `model` with `arrays` as initializers, in a `.data` file past the threshold."""
    if sum(a.nbytes for a in arrays.values()) <= external_threshold:
        write_atomic(output, attach_inline(model, arrays).SerializeToString())
        return
    data_path = output.with_name(f"{output.name}.data")
    write_atomic(data_path, attach_external(model, arrays, data_path.name))
    try:
        write_atomic(output, model.SerializeToString())
    except BaseException:
        data_path.unlink(missing_ok=True)
        raise
