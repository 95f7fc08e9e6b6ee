"""The ONNX backend: an onnx.ModelProto built from resgraph's graph, not traced from PyTorch.

One ONNX node per resgraph node, named like it, in the graph's topological order, using only
ops that TensorRT and onnxruntime's CUDA provider run natively. Option A shortcuts become
Slice (strided subsampling) + Pad (zero channels). With `fp16`, weights and activations are
half precision while `input` and `logits` stay float32, so callers feed and read the same
arrays either way; one Cast at each end does the conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper

from resgraph import __version__
from resgraph.backends.onnx_save import EXTERNAL_THRESHOLD, save_model, serialize
from resgraph.backends.onnx_weights import (
    BN_KEYS,
    Weights,
    check_weights_fit,
    fold_bn,
    he_init,
    load_weights,
)
from resgraph.errors import Location, SpecError

if TYPE_CHECKING:
    from resgraph.pipeline import Compiled

DEFAULT_OPSET = 17
MIN_OPSET = 11  # Pad takes its pads as an input from opset 11 on, the form emitted here
INPUT, OUTPUT, BATCH = "input", "logits", "batch"  # names in the ONNX graph
INT64_MAX = np.iinfo(np.int64).max


@dataclass
class _Emitter:
    """Walks the graph once, collecting ONNX nodes and the arrays their initializers hold."""

    graph: nx.DiGraph
    weights: Weights
    dtype: type[np.floating[Any]]
    folds: dict[str, str]  # conv -> the BN folded into it
    renamed: dict[str, str]  # node -> its output tensor, where that is not the node's name
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tensor: dict[str, str] = field(default_factory=dict)  # resgraph node -> its output tensor

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

    def param(self, key: str) -> str:
        """Add the weights entry `key` as an initializer of the same name."""
        return self.array(key, self.weights[key])

    def run(self, source: str) -> str:
        """Emit every node after the input `source`; return the tensor of the graph's output."""
        self.tensor["input"] = source
        folded = set(self.folds.values())
        for name in nx.topological_sort(self.graph):
            node = self.graph.nodes[name]
            if name in folded:
                self.tensor[name] = self.tensor[node["inputs"][0]]
            elif node["op"] != "input":
                xs = [self.tensor[i] for i in node["inputs"]]
                self.tensor[name] = EMITTERS[node["op"]](self, name, node, xs)
        return self.tensor[self.graph.graph["output"]]


def _foldable(graph: nx.DiGraph) -> dict[str, str]:
    """conv -> BN for each BN whose input is a conv that nothing else reads."""
    return {
        node["inputs"][0]: bn
        for bn, node in graph.nodes(data=True)
        if node["op"] == "bn"
        and graph.nodes[node["inputs"][0]]["op"] == "conv"
        and graph.out_degree(node["inputs"][0]) == 1
    }


def _window(attrs: Mapping[str, Any]) -> dict[str, list[int]]:
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    return {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}


def _conv(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    weight, bias = em.weights[f"{name}.weight"], em.weights.get(f"{name}.bias")
    bn = em.folds.get(name)
    if bn is not None:
        stats = {k: em.weights[f"{bn}.{k}"] for k in BN_KEYS}
        weight, bias = fold_bn(weight, bias, stats, em.graph.nodes[bn]["attrs"]["eps"])
    inputs = [xs[0], em.array(f"{name}.weight", weight)]
    if bias is not None:
        inputs.append(em.array(f"{name}.bias", bias))
    return em.node("Conv", name, inputs, group=node["attrs"]["groups"], **_window(node["attrs"]))


def _bn(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    params = [em.param(f"{name}.{k}") for k in BN_KEYS]
    return em.node("BatchNormalization", name, [xs[0], *params], epsilon=node["attrs"]["eps"])


def _maxpool(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    attrs = node["attrs"]
    return em.node("MaxPool", name, xs, ceil_mode=int(attrs["ceil_mode"]), **_window(attrs))


def _avgpool(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    attrs = node["attrs"]
    return em.node(
        "AveragePool",
        name,
        xs,
        ceil_mode=int(attrs["ceil_mode"]),
        count_include_pad=int(attrs["count_include_pad"]),
        **_window(attrs),
    )


def _linear(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    inputs = [xs[0], em.param(f"{name}.weight")]
    if node["attrs"]["bias"]:
        inputs.append(em.param(f"{name}.bias"))
    return em.node("Gemm", name, inputs, transB=1)


def _zero_pad(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    """Option A: x[:, :, ::stride, ::stride], then zero channels before and after."""
    attrs, x = node["attrs"], xs[0]
    if attrs["stride"] > 1:
        steps = [attrs["stride"]] * 2
        bounds = {"starts": [0, 0], "ends": [INT64_MAX] * 2, "axes": [2, 3], "steps": steps}
        inputs = [em.array(f"{name}/{k}", np.array(v, dtype=np.int64)) for k, v in bounds.items()]
        x = em.node("Slice", f"{name}/subsample", [x, *inputs])
    pads = np.array([0, attrs["pad_before"], 0, 0, 0, attrs["pad_after"], 0, 0], dtype=np.int64)
    return em.node("Pad", name, [x, em.array(f"{name}/pads", pads)])


def _squeeze_excite(em: _Emitter, name: str, node: Mapping[str, Any], xs: list[str]) -> str:
    """x * sigmoid(fc2(relu(fc1(mean(x))))), the fcs as 1x1 convs with biases."""
    gate = em.node("GlobalAveragePool", f"{name}/squeeze", xs)
    for fc in ("fc1", "fc2"):
        params = [em.param(f"{name}.{fc}.weight"), em.param(f"{name}.{fc}.bias")]
        gate = em.node("Conv", f"{name}/{fc}", [gate, *params], kernel_shape=[1, 1])
        if fc == "fc1":
            gate = em.node("Relu", f"{name}/relu", [gate])
    gate = em.node("Sigmoid", f"{name}/gate", [gate])
    return em.node("Mul", name, [xs[0], gate])


def _simple(op_type: str, **attrs: Any) -> Emit:
    """An emitter for an op that needs nothing but its inputs."""
    return lambda em, name, node, xs: em.node(op_type, name, xs, **attrs)


Emit = Callable[[_Emitter, str, Mapping[str, Any], list[str]], str]
EMITTERS: dict[str, Emit] = {
    "conv": _conv,
    "bn": _bn,
    "relu": _simple("Relu"),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "global_avgpool": _simple("GlobalAveragePool"),
    "flatten": _simple("Flatten", axis=1),
    "linear": _linear,
    "add": _simple("Add"),
    "zero_pad": _zero_pad,
    "se": _squeeze_excite,
}


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
    graph = compiled.graph
    head = graph.graph["output"]
    # fp16: the head writes `<head>/fp16` and a Cast `logits`, whatever the head is called
    renamed = {head: f"{head}/fp16", "logits/fp32": OUTPUT} if fp16 else {head: OUTPUT}
    em = _Emitter(
        graph,
        weights,
        dtype=np.float16 if fp16 else np.float32,
        folds=_foldable(graph) if fold_bn else {},
        renamed=renamed,
    )
    source = em.node("Cast", "input/fp16", [INPUT], to=TensorProto.FLOAT16) if fp16 else INPUT
    out = em.run(source)
    if fp16:
        em.node("Cast", "logits/fp32", [out], to=TensorProto.FLOAT)
    batch = static_batch or BATCH
    in_shape, out_shape = graph.nodes["input"]["shape"], graph.nodes[head]["shape"]
    if compiled.spec.head.kind == "fcn":  # fully convolutional: any image size, a score map
        in_shape, out_shape = (in_shape[0], "height", "width"), (out_shape[0], "rows", "cols")
    inputs = [_float_io(INPUT, batch, in_shape)]
    outputs = [_float_io(OUTPUT, batch, out_shape)]
    onnx_graph = helper.make_graph(em.nodes, graph.graph["spec"].name, inputs, outputs)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        onnx_graph,
        opset_imports=opsets,
        producer_name="resgraph",
        producer_version=__version__,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=f"{compiled.spec.name} from {compiled.path.name}",
    )
    helper.set_model_props(
        model, {"resgraph.spec": compiled.spec.name, "resgraph.spec_hash": compiled.content_hash}
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
    check_weights_fit(compiled.graph, Location(str(compiled.path)))
    values = (
        load_weights(weights, compiled.graph)
        if weights is not None
        else he_init(compiled.graph, compiled.spec.init, seed)
    )
    model, arrays = emit(
        compiled, values, opset=opset, fold_bn=fold_bn, fp16=fp16, static_batch=static_batch
    )
    save_model(model, arrays, output, external_threshold)
