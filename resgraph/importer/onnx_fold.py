"""Evaluate the constant parts of an ONNX graph: shape arithmetic, pads, zero biases.

Exporters compute some operands with nodes instead of storing them: torch.onnx.export's
TorchScript path builds F.pad's pads from ConstantOfShape/Concat/Reshape/Slice/Transpose,
and `x.view(x.size(0), -1)` from Shape/Gather/Unsqueeze/Concat; its dynamo path, without
optimization, a bias-less conv's bias as Expand(CastLike(0, x), Shape(weight)[:1]). The
reader folds such nodes with onnx's reference implementation instead of refusing them.

A value may depend on the batch size (a Shape of an activation): each value is held at two
batch sizes, BATCHES, so a reader tells `[N, -1]` from `[2, -1]` by comparing them.
Only the ops below are folded, and none may build a tensor much larger than its inputs:
a hostile file could otherwise ask ConstantOfShape for terabytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

BATCHES = (2, 3)  # the batch sizes a batch-dependent value is evaluated at
MAX_FOLD_ELEMENTS = 1 << 20  # beyond its largest input, what one folded node may build

FOLDABLE = frozenset(
    {
        "Constant",
        "Identity",
        "Cast",
        "CastLike",
        "Shape",
        "Size",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Concat",
        "Reshape",
        "Flatten",
        "Slice",
        "Transpose",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "ConstantOfShape",
        "Expand",
    }
)
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div"})


@dataclass(frozen=True)
class Value:
    """A constant at each of BATCHES; `static` when it is the same at both."""

    at: tuple[np.ndarray, ...]
    initializer: bool = False  # a graph initializer, not computed

    @staticmethod
    def of(array: np.ndarray, initializer: bool = False) -> Value:
        return Value((array,) * len(BATCHES), initializer)

    @property
    def static(self) -> bool:
        first = self.at[0]
        return all(a is first or _same(a, first) for a in self.at[1:])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def fold(node: onnx.NodeProto, inputs: list[Value | None], opset: int) -> list[Value]:
    """The node's outputs from constant inputs (None: an omitted optional input).

    Raises ValueError with a short reason when the node cannot or must not be folded.
    """
    if node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx"):
        raise ValueError(f"resgraph has no op for {node.op_type}")
    try:
        evaluator = ReferenceEvaluator(_model(node, inputs, opset))
    except Exception as exc:  # onnx's reference code on a hostile file's attributes
        raise ValueError(f"cannot evaluate it: {_first(exc)}") from None
    results: list[tuple[np.ndarray, ...]] = []
    same = all(v is None or v.at[0] is v.at[1] for v in inputs)
    for i in range(1 if same else len(BATCHES)):
        arrays = [None if v is None else v.at[i] for v in inputs]
        _check_size(node, arrays)
        feeds = {name: a for name, a in zip(node.input, arrays, strict=True) if name}
        try:
            outputs = evaluator.run(None, feeds)
        except Exception as exc:  # onnx's reference code on a hostile file's operands
            raise ValueError(f"cannot evaluate its constant inputs: {_first(exc)}") from None
        results.append(tuple(np.asarray(out) for out in outputs))
    if same:
        return [Value.of(out) for out in results[0]]
    return [Value(tuple(r[k] for r in results)) for k in range(len(node.output))]


def _model(node: onnx.NodeProto, inputs: list[Value | None], opset: int) -> onnx.ModelProto:
    """The node alone in a model of the file's opset: the reference evaluator picks each op's
    version from a model's opset imports (given a bare node, it takes the newest)."""
    feeds = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.at[0].dtype), None
        )
        for name, value in zip(node.input, inputs, strict=False)
        if name and value is not None
    ]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = helper.make_graph([node], "fold", feeds, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _first(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_size(node: onnx.NodeProto, arrays: list[np.ndarray | None]) -> None:
    """Refuse a node whose output would be much larger than its inputs, before building it."""
    present = [a for a in arrays if a is not None]
    limit = max([MAX_FOLD_ELEMENTS, *(a.size for a in present)])
    try:
        if node.op_type == "ConstantOfShape":
            size = math.prod(int(d) for d in present[0].reshape(-1))
        elif node.op_type == "Expand":
            shape = tuple(int(d) for d in present[1].reshape(-1))
            size = math.prod(np.broadcast_shapes(present[0].shape, shape))
        elif node.op_type in ELEMENTWISE:
            size = math.prod(np.broadcast_shapes(*(a.shape for a in present)))
        elif node.op_type == "Gather":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            size = present[0].size // max(present[0].shape[axis], 1) * present[1].size
        else:
            return
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"cannot evaluate its constant inputs: {_first(exc)}") from None
    if size > limit:
        raise ValueError(f"would build a constant of {size:,} elements")
