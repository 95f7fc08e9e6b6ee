"""int8 ONNX: resgraph's float graph with BN folded, quantized statically by onnxruntime.

onnxruntime's own quantizer (`quantize_static`) writes a QDQ graph: QuantizeLinear /
DequantizeLinear pairs around each quantized op, which onnxruntime fuses into int8
kernels and TensorRT reads as explicit precision. The choices, measured in docs/onnx.md:

- BN is folded first (the fold pass's decisions), so each conv's weight is quantized with
  its BN scale already in it and no float BN is left between int8 ops.
- Weights: int8, symmetric, one scale per output channel (folded BN scales differ widely
  between channels), in 7 bits of range (`reduce_range`): onnxruntime's int8 kernels on
  x86 CPUs without VNNI add pairs of uint8 x int8 products in int16, which saturates with
  full-range weights. On a digits ResNet-20, full range disagreed with the float model on
  15 of 1,437 images there, 7 bits on 3; in exact QDQ arithmetic full range gave 2.
- Activations: ranges from the min/max of the calibration images. By default uint8 with a
  zero point (asymmetric): a ReLU's output then starts at the zero point, the quantizer
  drops the ReLU and onnxruntime fuses every conv into one int8 kernel (ResNet-50: 53
  QLinearConv). `symmetric=True` gives int8 with zero point 0, which TensorRT requires;
  there the ReLUs stay, so onnxruntime runs 20 of ResNet-50's convs in float and gains
  little (docs/onnx.md has the figures).
- Convs, residual Adds, pools and the classifier's Gemm are quantized, so the tensors
  between int8 ops stay int8: quantizing convs alone was as accurate on the digits
  ResNet-20 and left ResNet-50 20% slower (float Adds between dequantize and quantize).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from resgraph.backends.onnx_export import DEFAULT_OPSET, INPUT, build_model
from resgraph.backends.onnx_save import EXTERNAL_THRESHOLD
from resgraph.backends.onnx_weights import check_weights_fit, he_init, load_weights
from resgraph.errors import Location, SpecError
from resgraph.extras import require
from resgraph.output import write_atomic

if TYPE_CHECKING:
    from resgraph.pipeline import Compiled

MIN_OPSET = 13  # per-channel QuantizeLinear / DequantizeLinear (their `axis`)
CALIBRATION_BATCH = 16  # images per calibration run when the batch axis is dynamic
QUANTIZED_OPS = ("Conv", "Gemm", "Add", "MaxPool", "AveragePool", "GlobalAveragePool")

Batches = Callable[[int], Iterator[np.ndarray]]  # batch size -> normalised float32 batches


def check_int8_options(opset: int, fp16: bool) -> None:
    """Refuse options an int8 graph cannot have, before any work is done."""
    if fp16:
        raise SpecError("--int8 and --fp16 are two precisions; choose one", Location("--fp16"))
    if opset < MIN_OPSET:
        raise SpecError(
            f"--int8 stores per-channel scales, which need opset {MIN_OPSET} or newer",
            Location("--opset"),
        )
    require("onnxruntime", "onnx")


def quantize(
    model: onnx.ModelProto, batches: Batches, static_batch: int | None, symmetric: bool = False
) -> bytes:
    """The QDQ int8 form of a float model, calibrated on `batches`, as ONNX bytes."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """Feeds the graph input one batch per `get_next`, None when done."""

        def __init__(self, source: Iterator[np.ndarray]) -> None:
            self.source = source

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.source, None)
            return None if batch is None else {INPUT: batch}

    reader = Reader(batches(static_batch or CALIBRATION_BATCH))
    with tempfile.TemporaryDirectory(prefix="resgraph-int8-") as tmp:
        source, output = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, source)  # quantize_static rewrites a ModelProto it is given
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process: the graph is already folded
        try:
            quantize_static(
                source,
                output,
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            )
        finally:
            root.setLevel(level)
        return output.read_bytes()


def compile_int8(
    compiled: Compiled,
    *,
    output: Path,
    batches: Batches,
    weights: Path | None = None,
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    static_batch: int | None = None,
    symmetric: bool = False,
) -> None:
    """Write `compiled` as a QDQ int8 ONNX model calibrated on `batches`, atomically."""
    check_int8_options(opset, fp16=False)
    where = Location(str(compiled.path))
    check_weights_fit(compiled.network, where)
    if compiled.network.params * 4 > EXTERNAL_THRESHOLD:
        raise SpecError(
            f"--int8 quantizes models whose float weights fit in one ONNX file (2 GB); this "
            f"network has {compiled.network.params:,} parameters",
            where,
        )
    values = (
        load_weights(weights, compiled.network)
        if weights is not None
        else he_init(compiled.network, seed)
    )
    model = build_model(compiled, values, opset=opset, fold_bn=True, static_batch=static_batch)
    write_atomic(output, quantize(model, batches, static_batch, symmetric))
