"""The ONNX backend: an onnx.ModelProto built from resgraph's graph, not traced from PyTorch.

One ONNX node per resgraph node, named like it, in the graph's topological order, using only
ops that TensorRT and onnxruntime's CUDA provider run natively. Option A shortcuts become
Slice (strided subsampling) + Pad (zero channels). With `fp16`, weights and activations are
half precision while `input` and `logits` stay float32, so callers feed and read the same
arrays either way; one Cast at each end does the conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from resgraph import __version__
from resgraph.backends.onnx_save import EXTERNAL_THRESHOLD, save_model, serialize
from resgraph.backends.onnx_weights import (
    Weights,
    check_weights_fit,
    fold_bn,
    he_init,
    load_weights,
)
from resgraph.errors import Location, SpecError
from resgraph.ir import INPUT as INPUT_NODE
from resgraph.ir import Network
from resgraph.ops import OPS
from resgraph.ops.bn import STATISTICS

if TYPE_CHECKING:
    from resgraph.pipeline import Compiled

DEFAULT_OPSET = 17
MIN_OPSET = 11  # Pad takes its pads as an input from opset 11 on, the form emitted here
INPUT, OUTPUT, BATCH = "input", "logits", "batch"  # names in the ONNX graph


@dataclass
class Emitter:
    """Walks the IR once, collecting ONNX nodes and the arrays their initializers hold.

    Each op's definition (resgraph.ops) emits its own nodes through `node`, `param` and
    `array`; the fold pass says which BNs vanish into their convs.
    """

    network: Network
    weights: Weights
    dtype: type[np.floating[Any]]
    folds: Mapping[str, str]  # BN -> the conv it folds into (empty: no folding)
    renamed: dict[str, str]  # node -> its output tensor, where that is not the node's name
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tensor: dict[str, str] = field(default_factory=dict)  # IR node -> its output tensor

    def __post_init__(self) -> None:
        self.absorbs = {conv: bn for bn, conv in self.folds.items()}

    def node(self, op_type: str, name: str, inputs: list[str], **attrs: Any) -> str:
        """Append one ONNX node; its output tensor carries the node's name unless renamed."""
        out = self.renamed.get(name, name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def array(self, key: str, value: np.ndarray) -> str:
        """Add an initializer, in the model's precision unless it holds integers."""
        self.arrays[key] = (
            value if value.dtype == np.int64 else value.astype(self.dtype, copy=False)
        )
        return key

    def int64(self, key: str, values: list[int]) -> str:
        """Add an int64 initializer (Slice bounds, Pad amounts)."""
        return self.array(key, np.array(values, dtype=np.int64))

    def param(self, key: str) -> str:
        """Add the weights entry `key` as an initializer of the same name."""
        return self.array(key, self.weights[key])

    def folded(
        self, conv: str, weight: np.ndarray, bias: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A conv's weight and bias with the BN the fold pass gave it folded in, if any."""
        bn = self.absorbs.get(conv)
        if bn is None:
            return weight, bias
        stats = {k: self.weights[f"{bn}.{k}"] for k in STATISTICS}
        return fold_bn(weight, bias, stats, self.network.nodes[bn].attrs.eps)

    def run(self, source: str) -> None:
        """Emit every node after the input `source`."""
        self.tensor[INPUT_NODE] = source
        for name, node in self.network.nodes.items():
            if name in self.folds:
                self.tensor[name] = self.tensor[node.inputs[0]]
            elif name != INPUT_NODE:
                xs = [self.tensor[i] for i in node.inputs]
                self.tensor[name] = OPS[node.op].onnx(self, node, xs)


def _check_options(opset: int, static_batch: int | None) -> None:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise SpecError(
            f"opset {opset} is not supported; choose {MIN_OPSET} to {newest}", Location("--opset")
        )
    if static_batch is not None and static_batch < 1:
        raise SpecError(
            f"a static batch must be at least 1, not {static_batch}", Location("--static-batch")
        )


def _float_io(name: str, batch: int | str, shape: tuple[int | str, ...]) -> onnx.ValueInfoProto:
    """A graph input or output: float32 whatever the precision inside, batch first."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape])


def emit(
    compiled: Compiled,
    weights: Weights,
    *,
    opset: int = DEFAULT_OPSET,
    fold_bn: bool = False,
    fp16: bool = False,
    static_batch: int | None = None,
) -> tuple[onnx.ModelProto, Weights]:
    """The model without initializers, and the arrays to attach as them (inline or external)."""
    _check_options(opset, static_batch)
    network = compiled.network
    folds = network.folds if fold_bn else {}
    # graph outputs: the classifier's `logits`, or one per feature map named after its stage;
    # a folded BN's output is its conv's, so the conv writes the output
    named = {folds.get(f.node, f.node): f.name for f in network.features} or {
        network.output: OUTPUT
    }
    # fp16: a node writes `<node>/fp16` and a Cast the output, whatever the node is called
    renamed = (
        {node: f"{node}/fp16" for node in named} | {f"{name}/fp32": name for name in named.values()}
        if fp16
        else dict(named)
    )
    for node, name in list(named.items()):  # a layer named like a graph output writes elsewhere
        if name in network.nodes and name != node:
            renamed[name] = f"{name}/layer"
    em = Emitter(
        network,
        weights,
        dtype=np.float16 if fp16 else np.float32,
        folds=folds,
        renamed=renamed,
    )
    source = em.node("Cast", "input/fp16", [INPUT], to=TensorProto.FLOAT16) if fp16 else INPUT
    em.run(source)
    if fp16:
        for node, name in named.items():
            em.node("Cast", f"{name}/fp32", [em.tensor[node]], to=TensorProto.FLOAT)
    batch = static_batch or BATCH
    in_shape: tuple[int | str, ...] = network.input.shape
    outputs = []
    for node, name in named.items():
        out_shape: tuple[int | str, ...] = network.nodes[node].shape
        if network.head_kind == "fcn":  # fully convolutional: any image size, a score map
            out_shape = (out_shape[0], "rows", "cols")
        elif network.features:  # a backbone: any image size, maps of its size / reduction
            out_shape = (out_shape[0], f"{name}_height", f"{name}_width")
        outputs.append(_float_io(name, batch, out_shape))
    if network.head_kind in ("fcn", "features"):
        in_shape = (in_shape[0], "height", "width")
    inputs = [_float_io(INPUT, batch, in_shape)]
    onnx_graph = helper.make_graph(em.nodes, network.name, inputs, outputs)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        onnx_graph,
        opset_imports=opsets,
        producer_name="resgraph",
        producer_version=__version__,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=f"{compiled.network.name} from {compiled.path.name}",
    )
    helper.set_model_props(
        model, {"resgraph.spec": compiled.network.name, "resgraph.spec_hash": compiled.content_hash}
    )
    return model, em.arrays


def build_model(compiled: Compiled, weights: Weights, **options: Any) -> onnx.ModelProto:
    """The complete model in memory, parsed from the bytes `compile_onnx` would write."""
    model, arrays = emit(compiled, weights, **options)
    return onnx.load_model_from_string(b"".join(serialize(model, arrays)))


def compile_onnx(
    compiled: Compiled,
    *,
    output: Path,
    weights: Path | None = None,
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    fold_bn: bool = False,
    fp16: bool = False,
    static_batch: int | None = None,
    external_threshold: int = EXTERNAL_THRESHOLD,
) -> None:
    """Write `compiled` as an ONNX model to `output`, with a weights file or He-init from `seed`."""
    check_weights_fit(compiled.network, Location(str(compiled.path)))
    values = (
        load_weights(weights, compiled.network)
        if weights is not None
        else he_init(compiled.network, seed)
    )
    model, arrays = emit(
        compiled, values, opset=opset, fold_bn=fold_bn, fp16=fp16, static_batch=static_batch
    )
    save_model(model, arrays, output, external_threshold)
