"""Read a PyTorch module with torch.fx symbolic tracing, never by reading its Python text.

Standard nn layers are fx leaves (call_module), so each becomes one SourceOp named by its
module path: a torchvision module's conv1 stays `conv1`, its layer1[0].conv1 `layer1.0.conv1`.
Functional forms (`F.relu`, `x.mean((2, 3), keepdim=True)`, `torch.flatten`, option A's
`F.pad(x[:, :, ::2, ::2], ...)`) lower to the same kinds.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from resgraph.importer.source import INPUT, ImportFailure, SourceGraph, SourceOp

SKIPPED_MODULES = ("Identity", "Dropout", "Dropout2d")


def load_callable(target: str) -> Callable[..., Any]:
    """`package.module:attribute` (the attribute may be dotted) to the object it names."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ImportFailure(
            f"{target}: name a callable as package.module:function (e.g. "
            "torchvision.models:resnet50), a .onnx file or a .prototxt file"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportFailure(f"{target}: cannot import {module_name}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ImportFailure(f"{target}: {module_name} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImportFailure(f"{target}: {attribute} is not callable")
    return obj


def build_module(target: str, kwargs: Mapping[str, Any]) -> Any:
    """Call the named factory (or class) with `kwargs`; it must return an nn.Module."""
    import torch

    factory = load_callable(target)
    try:
        module = factory(**kwargs)
    except Exception as exc:  # the user's own code: any failure is theirs to read, in one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ImportFailure(f"{target}: calling it failed: {type(exc).__name__}: {first}") from None
    if not isinstance(module, torch.nn.Module):
        raise ImportFailure(f"{target}: returned a {type(module).__name__}, not an nn.Module")
    return module


def read_module(module: Any, input_shape: tuple[int, int, int], origin: str) -> SourceGraph:
    """Trace `module` (in eval mode) into a SourceGraph with its own weights."""
    import torch.fx

    module.eval()
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx refuses data-dependent control flow with its own errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportFailure(f"{origin}: torch.fx cannot trace it: {first}") from None
    return _Lowering(traced, origin).graph(input_shape)


class _Lowering:
    """fx nodes to SourceOps; `alias` maps a skipped node (Identity, Dropout) to its input."""

    def __init__(self, traced: Any, origin: str) -> None:
        self.traced = traced
        self.origin = origin
        self.modules = dict(traced.named_modules())
        self.ops: list[SourceOp] = []
        self.alias: dict[str, str] = {}
        self.constants: set[str] = set()  # size() results and other non-tensors
        self.sizes: dict[str, str] = {}  # x.size() -> x: its items are x's dimensions
        self.dims: dict[str, tuple[str, int]] = {}  # x.size(k) or x.size()[k] -> (x, k)

    def graph(self, input_shape: tuple[int, int, int]) -> SourceGraph:
        placeholders = 0
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                placeholders += 1
                if placeholders > 1:
                    raise ImportFailure(f"{self.origin}: forward takes more than one input")
                self.alias[node.name] = INPUT
            elif node.op == "output":
                result = node.args[0]
                if not hasattr(result, "name") or self._ref(result) == INPUT:
                    raise ImportFailure(f"{self.origin}: forward must return one tensor")
                self._move_last(self._ref(result))
            elif node.op == "call_module":
                self._call_module(node)
            elif node.op == "call_function":
                self._call_function(node)
            elif node.op == "call_method":
                self._call_method(node)
            elif node.op == "get_attr":
                raise self._unsupported(node, "a tensor attribute used in forward")
        return SourceGraph(self.origin, input_shape, self.ops, has_weights=True)

    def _move_last(self, name: str) -> None:
        """The output op goes last (fx may order a side computation after it)."""
        index = next(i for i, op in enumerate(self.ops) if op.name == name)
        if index != len(self.ops) - 1:
            readers = [op for op in self.ops[index + 1 :] if name in op.inputs]
            if readers:
                raise ImportFailure(f"{self.origin}: the output is read again inside forward")
            self.ops.append(self.ops.pop(index))

    def _ref(self, arg: Any) -> str:
        name = arg.name
        return self.alias.get(name, name)

    def _add(self, node: Any, kind: str, inputs: tuple[Any, ...], **attrs: Any) -> None:
        self.ops.append(
            SourceOp(
                node.name,
                kind,
                tuple(self._ref(a) for a in inputs),
                attrs,
                source_op=_describe(node),
                module=node.target if node.op == "call_module" else None,
            )
        )

    def _unsupported(self, node: Any, what: str | None = None) -> ImportFailure:
        return ImportFailure(
            f"{self.origin}: node '{node.name}' ({_describe(node)}): resgraph has no op for "
            f"{what or _describe(node)}"
        )

    def _call_module(self, node: Any) -> None:
        import torch.nn as nn

        module = self.modules[node.target]
        kind = type(module).__name__
        (x,) = node.args[:1]
        if kind in SKIPPED_MODULES:
            self.alias[node.name] = self._ref(x)
        elif isinstance(module, nn.Conv2d):
            self._conv(node, module, x)
        elif isinstance(module, nn.BatchNorm2d):
            if not module.affine or not module.track_running_stats:
                raise self._unsupported(node, "a BatchNorm2d without affine or running stats")
            self._add(node, "bn", (x,), channels=module.num_features, eps=float(module.eps))
            self.ops[-1].weights = _tensors(
                module, ("weight", "bias", "running_mean", "running_var")
            )
        elif isinstance(module, nn.ReLU):
            self._add(node, "relu", (x,))
        elif isinstance(module, nn.Sigmoid):
            self._add(node, "sigmoid", (x,))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            self._pool(node, module, x)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            if _pair(module.output_size) != (1, 1):
                raise self._unsupported(node, "an adaptive pool to a size other than 1x1")
            self._add(node, "global_avgpool", (x,))
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise self._unsupported(node, "a Flatten other than Flatten(1)")
            self._add(node, "flatten", (x,))
        elif isinstance(module, nn.Linear):
            self._add(node, "linear", (x,), in_features=module.in_features, out=module.out_features)
            self.ops[-1].attrs["bias"] = module.bias is not None
            self.ops[-1].weights = _tensors(module, ("weight", "bias"))
        else:
            raise self._unsupported(node)

    def _conv(self, node: Any, module: Any, x: Any) -> None:
        sizes = {
            "kernel": _pair(module.kernel_size),
            "stride": _pair(module.stride),
            "padding": _pair(module.padding),
            "dilation": _pair(module.dilation),
        }
        for what, (h, w) in sizes.items():
            if h != w:
                raise self._unsupported(node, f"a Conv2d with {what} {h}x{w} (only square)")
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise self._unsupported(node, "a Conv2d padding other than zero padding by numbers")
        self._add(
            node,
            "conv",
            (x,),
            in_channels=module.in_channels,
            out=module.out_channels,
            groups=module.groups,
            bias=module.bias is not None,
            **{what: h for what, (h, _) in sizes.items()},
        )
        self.ops[-1].weights = _tensors(module, ("weight", "bias"))

    def _pool(self, node: Any, module: Any, x: Any) -> None:
        import torch.nn as nn

        kernel, stride, padding = (
            _pair(module.kernel_size),
            _pair(module.stride or module.kernel_size),
            _pair(module.padding),
        )
        if kernel[0] != kernel[1] or stride[0] != stride[1] or padding[0] != padding[1]:
            raise self._unsupported(node, "a pool with a window that is not square")
        attrs = {
            "kernel": kernel[0],
            "stride": stride[0],
            "padding": padding[0],
            "ceil_mode": bool(module.ceil_mode),
        }
        if isinstance(module, nn.MaxPool2d):
            if _pair(module.dilation) != (1, 1) or module.return_indices:
                raise self._unsupported(node, "a MaxPool2d with dilation or indices")
            self._add(node, "maxpool", (x,), **attrs)
        else:
            if module.divisor_override is not None:
                raise self._unsupported(node, "an AvgPool2d with divisor_override")
            self._add(node, "avgpool", (x,), **attrs, count_include_pad=module.count_include_pad)

    def _call_function(self, node: Any) -> None:
        import torch
        import torch.nn.functional as F

        target, args = node.target, node.args
        if target in (operator.add, torch.add) and _tensor_args(args, 2):
            self._add(node, "add", tuple(args[:2]))
        elif target in (operator.mul, torch.mul) and _tensor_args(args, 2):
            self._add(node, "mul", tuple(args[:2]))
        elif target in (F.relu, torch.relu, torch.relu_):
            self._add(node, "relu", (args[0],))
        elif target in (torch.sigmoid, F.sigmoid):
            self._add(node, "sigmoid", (args[0],))
        elif target is torch.flatten:
            if _flatten_start(args[1:], node.kwargs) != 1:
                raise self._unsupported(node, "a flatten from a dimension other than 1")
            self._add(node, "flatten", (args[0],))
        elif target is F.adaptive_avg_pool2d:
            if _pair(args[1] if len(args) > 1 else node.kwargs["output_size"]) != (1, 1):
                raise self._unsupported(node, "an adaptive pool to a size other than 1x1")
            self._add(node, "global_avgpool", (args[0],))
        elif target is operator.getitem and getattr(args[0], "name", None) in self.sizes:
            self.constants.add(node.name)
            self.dims[node.name] = (self.sizes[args[0].name], args[1])
        elif target is F.avg_pool2d and self._whole_map(args, node.kwargs):
            self._add(node, "global_avgpool", (args[0],))
        elif target in (F.avg_pool2d, F.max_pool2d):
            self._functional_pool(node, args, node.kwargs)
        elif target is operator.getitem and _is_subsample(args[1]):
            self._add(node, "subsample", (args[0],), stride=args[1][2].step)
        elif target is F.pad and _channel_pad(args, node.kwargs) is not None:
            before, after = _channel_pad(args, node.kwargs) or (0, 0)
            self._add(node, "pad_channels", (args[0],), before=before, after=after)
        elif target is torch.cat:
            raise self._unsupported(node, "concatenation (torch.cat)")
        else:
            raise self._unsupported(node)

    def _call_method(self, node: Any) -> None:
        method, args = node.target, node.args
        if method == "size":
            self.constants.add(node.name)
            if len(args) == 1 and not node.kwargs:
                self.sizes[node.name] = self._ref(args[0])
            elif len(args) == 2 and isinstance(args[1], int):
                self.dims[node.name] = (self._ref(args[0]), args[1])
        elif method in ("relu", "relu_", "sigmoid"):
            self._add(node, "sigmoid" if method == "sigmoid" else "relu", (args[0],))
        elif method == "flatten":
            if _flatten_start(args[1:], node.kwargs) != 1:
                raise self._unsupported(node, "a flatten from a dimension other than 1")
            self._add(node, "flatten", (args[0],))
        elif method in ("view", "reshape") and _is_flat_view(args[1:], self.constants):
            self._add(node, "flatten", (args[0],))
        elif method == "mean" and _is_spatial_mean(args[1:], node.kwargs):
            self._add(node, "global_avgpool", (args[0],))
        elif method in ("add", "add_") and _tensor_args(args, 2):
            self._add(node, "add", tuple(args[:2]))
        elif method in ("mul", "mul_") and _tensor_args(args, 2):
            self._add(node, "mul", tuple(args[:2]))
        elif method == "contiguous":
            self.alias[node.name] = self._ref(args[0])
        else:
            raise self._unsupported(node, f"the tensor method .{method}()")

    def _whole_map(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """F.avg_pool2d(x, x.size()[3]): a window as large as the (square) map."""
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
        dim = self.dims.get(getattr(kernel, "name", ""))
        rest = args[2:] or tuple(v for k, v in kwargs.items() if k != "kernel_size")
        return (
            dim is not None
            and dim[0] == self._ref(args[0])
            and dim[1] in (2, 3, -1, -2)
            and not rest
        )

    def _functional_pool(self, node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """F.max_pool2d / F.avg_pool2d with numbers for their window."""
        import torch.nn.functional as F

        names = ["kernel_size", "stride", "padding"]
        names += (
            ["dilation", "ceil_mode"]
            if node.target is F.max_pool2d
            else ["ceil_mode", "count_include_pad"]
        )
        given = dict(zip(names, args[1:], strict=False)) | dict(kwargs)
        kernel = given.get("kernel_size")
        stride = given.get("stride") or kernel
        values = [_pair(v) for v in (kernel, stride, given.get("padding", 0))]
        if not all(isinstance(v[0], int) and v[0] == v[1] for v in values):
            raise self._unsupported(node, "a pool whose window is not a square of fixed size")
        if _pair(given.get("dilation", 1)) != (1, 1) or given.get("divisor_override"):
            raise self._unsupported(node, "a pool with dilation or a divisor override")
        attrs: dict[str, Any] = {
            "kernel": values[0][0],
            "stride": values[1][0],
            "padding": values[2][0],
            "ceil_mode": bool(given.get("ceil_mode", False)),
        }
        if node.target is F.max_pool2d:
            self._add(node, "maxpool", (args[0],), **attrs)
        else:
            include = given.get("count_include_pad", True)
            self._add(node, "avgpool", (args[0],), **attrs, count_include_pad=bool(include))


def _describe(node: Any) -> str:
    if node.op == "call_module":
        return f"nn.{type(node.graph.owning_module.get_submodule(node.target)).__name__}"
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", str(node.target))


def _tensors(module: Any, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        value = getattr(module, name, None)
        if value is not None:
            out[name] = value.detach().cpu().float().numpy().copy()
    return out


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (value[0], value[1]) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def _tensor_args(args: tuple[Any, ...], count: int) -> bool:
    return len(args) == count and all(hasattr(a, "name") for a in args)


def _flatten_start(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return start if end == -1 else -1


def _is_subsample(index: Any) -> bool:
    """x[:, :, ::s, ::s]: option A's spatial subsampling."""
    if not isinstance(index, tuple) or len(index) != 4:
        return False
    if not all(isinstance(s, slice) and s.start is None and s.stop is None for s in index):
        return False
    steps = [s.step or 1 for s in index]
    return steps[0] == steps[1] == 1 and steps[2] == steps[3]


def _channel_pad(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[int, int] | None:
    """F.pad(x, (0, 0, 0, 0, before, after)) with zeros: option A's extra channels."""
    pad = args[1] if len(args) > 1 else kwargs.get("pad")
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value")
    if mode != "constant" or value not in (None, 0, 0.0):
        return None
    if not isinstance(pad, (tuple, list)) or len(pad) != 6 or any(pad[:4]):
        return None
    return int(pad[4]), int(pad[5])


def _is_flat_view(args: tuple[Any, ...], constants: set[str]) -> bool:
    """x.view(x.size(0), -1) or x.view(N, -1): the classic flatten before an fc."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    return len(args) == 2 and args[1] == -1 and getattr(args[0], "name", None) in constants


def _is_spatial_mean(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    dims = args[0] if args else kwargs.get("dim")
    keepdim = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
    return keepdim and tuple(dims or ()) in ((2, 3), (-2, -1))
