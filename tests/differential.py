"""Differential testing: the correctness oracle for the compiler (issue 12, item 6).

`check_spec(spec_dict)` compiles a spec given as a dict and demands EITHER a located,
one-line `SpecError` (the spec is rejected, with a location naming a file) OR that every
artefact agrees with every other:

- the generated PyTorch module builds and runs on the spec's input size (batch 2);
- its parameter count equals the cost pass's;
- every module named like a graph node outputs that node's shape (forward hooks), and the
  modules named like graph nodes are exactly the graph's module-bearing nodes;
- conv and linear MACs measured with hooks equal the cost pass's, per node and in total;
- `init.zero_init_residual` zeroes exactly the BNs the graph marks as a branch's last BN;
- with non-trivial BN statistics, the `--fold-bn` module loaded with its own
  `fold_batchnorm(state_dict)` equals the eval-mode module (float64, <= 1e-4 relative to
  the logits' scale);
- onnxruntime on the ONNX model built with the same weights equals the eval-mode module,
  with BN folded and not (float32, <= 1e-4 of the largest logit, or absolute below 1).
- import (issue 15): `resgraph import` of the generated module (torch.fx) writes a spec
  whose graph has the same nodes (op, shape, parameters, MACs, in order; drop paths, the
  identity in eval mode, aside) and whose module, loaded with the imported weights, computes
  the module; a classifier network always imports (features and fcn heads are not
  classifiers).
- a features head (issue 13): the module returns the IR's features, keyed and ordered by
  stage, each of its node's shape; every map is compared like the logits above (--fold-bn,
  ONNX's output of that name); `feature_info` states the IR's channels and reductions, and a
  reduction is the product of the strides on the feature's path; each drop_path module's
  drop_prob is its node's (drop path is the identity in eval mode and in ONNX).

Every access to resgraph's internals goes through the adapters in the first section, so a
new compiler core changes only them. A failure raises `Disagreement`, whose message is one
line naming the mechanism, then the spec as YAML to reproduce it:

    python -m tests.differential spec.yaml            # check one spec file, print the verdict
    python -m tests.differential spec.yaml --reduce   # ... and minimise it if it fails
    python -m tests.differential --campaign 5000 7 failures/   # count mechanisms, keep examples
"""

from __future__ import annotations

import ast
import copy
import math
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

# ---------------------------------------------------------------- adapters to resgraph
# Only the functions in this section touch resgraph. When the core changes, change these.
from resgraph.backends.onnx_export import build_model as _onnx_build_model
from resgraph.backends.pytorch import Options, build_module
from resgraph.errors import SpecError
from resgraph.importer import ImportFailure, import_graph
from resgraph.importer.torch_reader import read_module
from resgraph.pipeline import compile_spec

REJECTION = SpecError  # the one exception type a rejected spec may raise
# Graph ops that the generated module holds as a module of the node's name.
MODULE_OPS = frozenset(
    {"conv", "bn", "relu", "maxpool", "avgpool", "linear", "zero_pad", "global_avgpool", "se"}
)
ONNX_OUTPUT = "logits"  # a classifier's one ONNX output (a backbone's are its stages' names)


@dataclass(frozen=True)
class NodeFacts:
    """What the passes say about one graph node."""

    op: str
    shape: tuple[int, ...]  # output shape without the batch
    params: int
    macs: int
    residual_bn: bool  # the last BN of a residual branch (zeroed by zero_init_residual)
    module: bool  # the generated module holds a module of the node's name
    drop_prob: float | None = None  # a drop_path node's probability


def compile_dict(spec: Mapping[str, Any]) -> Any:
    """Compile a spec given as a dict, as a user's file: write YAML, run the front end."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
        return compile_spec(path)


def rejection_problem(exc: BaseException) -> str | None:
    """None if `exc` is a proper rejection (one line, located in a file); else what is wrong."""
    text = str(exc)
    location = getattr(exc, "location", None)
    if location is None or not getattr(location, "file", ""):
        return f"SpecError without a location naming a file: {text!r}"
    if "\n" in text or "\r" in text:
        return f"SpecError message spans several lines: {text!r}"
    return None


def totals(compiled: Any) -> tuple[int, int]:
    """(parameters, MACs) of the whole network, by the cost pass."""
    return compiled.network.params, compiled.network.macs


def nodes(compiled: Any) -> dict[str, NodeFacts]:
    """Per IR node: op, shape, params, MACs, and whether it is a residual branch's last BN."""
    network = compiled.network
    residual = {b.residual_bn for b in network.blocks.values() if b.residual}
    facts = {}
    for node in network.nodes.values():
        prob = float(node.attrs.prob) if node.op == "drop_path" else None
        module = node.op in MODULE_OPS or bool(prob)  # drop path: None where its rate is 0
        facts[node.name] = NodeFacts(
            node.op, node.shape, node.params, node.macs, node.name in residual, module, prob
        )
    return facts


@dataclass(frozen=True)
class FeatureFacts:
    """One output of a features head, by the IR: its key, the node it is, and timm's
    feature_info entry (channels, reduction)."""

    name: str
    node: str
    channels: int
    reduction: int
    strides: int  # the product of the strides of the nodes on a path from the input to it


def features(compiled: Any) -> list[FeatureFacts]:
    """A features head's outputs in network order; empty for a classifier."""
    nodes = compiled.network.nodes

    def strides(name: str) -> int:  # any path will do: an add's inputs have one shape
        stride = 1
        while nodes[name].inputs:
            stride *= getattr(nodes[name].attrs, "stride", 1) or 1
            name = nodes[name].inputs[0]
        return stride

    return [
        FeatureFacts(f.name, f.node, f.channels, f.reduction, strides(f.node))
        for f in compiled.network.features
    ]


def feature_info(model: torch.nn.Module) -> list[tuple[str, int, int]] | None:
    """The generated module's `feature_info` as (name, channels, reduction); None if absent."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return None
    return [(entry["module"], entry["num_chs"], entry["reduction"]) for entry in info]


def input_shape(compiled: Any) -> tuple[int, int, int]:
    """(channels, height, width) of the network's input."""
    return compiled.network.input.shape  # type: ignore[no-any-return]


def zero_init_residual(compiled: Any) -> bool:
    return bool(compiled.network.zero_init_residual)


def build(compiled: Any, fold_bn: bool = False) -> torch.nn.Module:
    """The generated PyTorch module (`compile`, or `compile --fold-bn`), freshly initialised."""
    return build_module(compiled, options=Options(fold_bn=fold_bn))


def fold_state_dict(
    folded_module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The `--fold-bn` module's own `fold_batchnorm`, applied to an unfolded state_dict."""
    generated = sys.modules[type(folded_module).__module__]
    return generated.fold_batchnorm(dict(state_dict))


def build_onnx(compiled: Any, weights: dict[str, np.ndarray], fold_bn: bool) -> bytes:
    """The ONNX model (`compile --target onnx --weights [--fold-bn]`), serialised."""
    return _onnx_build_model(compiled, weights, fold_bn=fold_bn).SerializeToString()


def importable(compiled: Any) -> bool:
    """A classifier (an fc head): what `resgraph import` reads back."""
    return compiled.network.head_kind == "fc"


def import_module(model: torch.nn.Module, compiled: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """`resgraph import` of a module: the imported spec compiled, and the weights it writes."""
    shape = input_shape(compiled)
    imported = import_graph(read_module(model, shape, "module"), "imported")
    return compile_spec_text(imported.text), imported.weights or {}


def compile_spec_text(text: str) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.yaml"
        path.write_text(text, encoding="utf-8")
        return compile_spec(path)


# ---------------------------------------------------------------- the oracle

BATCH = 2
TOLERANCE = 1e-4  # relative to the largest logit of the reference


class Disagreement(AssertionError):
    """The backends (or the passes) disagree on a spec that validated."""


def check_spec(spec: Mapping[str, Any]) -> str:
    """A located one-line SpecError, or every artefact agrees; raise Disagreement otherwise.

    Returns the verdict, for statistics: 'ok', 'rejected' or 'rejected by the PyTorch backend'.
    """
    try:
        return _check(spec)
    except Disagreement as exc:
        message = (
            f"{exc.args[0]}\n--- spec (YAML; save it and run "
            f"`python -m tests.differential SPEC.yaml --reduce` to minimise) ---\n{as_yaml(spec)}"
        )
    raise Disagreement(message)


def as_yaml(spec: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(spec), sort_keys=False, default_flow_style=None, width=100)


def outcome(spec: Mapping[str, Any]) -> str:
    """'rejected', 'ok', or the first line of the disagreement (for campaigns' statistics)."""
    try:
        return _check(spec)
    except Disagreement as exc:
        return exc.args[0].splitlines()[0]


def _fail(mechanism: str, detail: str = "") -> None:
    raise Disagreement(f"{mechanism}{': ' + detail if detail else ''}")


def _stage(mechanism: str, action: Callable[[], Any]) -> Any:
    """Run one step; an exception other than a proper rejection is a disagreement."""
    try:
        return action()
    except Disagreement:
        raise
    except REJECTION as exc:
        problem = rejection_problem(exc)
        if problem:
            _fail(f"{mechanism}: improper SpecError", problem)
        raise
    except Exception as exc:
        failure = f"{mechanism} raised {type(exc).__name__}", " ".join(str(exc).split())[:300]
    _fail(*failure)  # outside the handler: the message says it all, no chained traceback


def _check(spec: Mapping[str, Any]) -> str:
    try:
        compiled = _stage("compile", lambda: compile_dict(spec))
    except REJECTION:
        return "rejected"
    torch.manual_seed(0)  # the generated init draws from torch's global generator
    try:
        model = _stage("build module", lambda: build(compiled))
    except REJECTION as exc:  # what validates must build: only the front end may reject
        _fail("the PyTorch backend rejected a spec that validated", str(exc))
    facts = nodes(compiled)
    _check_init(compiled, model, facts)
    _randomise(model)
    model.eval()
    x = torch.from_numpy(
        np.random.default_rng(0).standard_normal((BATCH, *input_shape(compiled)))
    ).float()
    shapes, macs = _stage("forward", lambda: _measure(model, x))
    _check_counts(compiled, model, facts, shapes, macs)
    with torch.no_grad():
        reference = _outputs(model(x))
    _check_features(compiled, model, facts, reference)
    _check_fold(compiled, model, x)
    _check_onnx(compiled, model, x, reference)
    _check_import(compiled, model, x, reference)
    return "ok"


def _check_import(
    compiled: Any, model: torch.nn.Module, x: torch.Tensor, reference: dict[str, np.ndarray]
) -> None:
    """The imported spec is the module's graph, and its module with the imported weights
    computes the module."""
    if not importable(compiled):
        return
    try:
        imported, weights = import_module(model, compiled)
    except (ImportFailure, SpecError) as exc:
        _fail("import refused a generated module", str(exc))
    except Exception as exc:
        _fail(f"import raised {type(exc).__name__}", " ".join(str(exc).split())[:300])

    def layers(c: Any) -> list[tuple[Any, ...]]:
        return [(f.op, f.shape, f.params, f.macs) for f in nodes(c).values() if f.op != "drop_path"]

    if layers(imported) != layers(compiled):
        got, want = layers(imported), layers(compiled)
        first = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        _fail(
            "imported graph differs from the spec's",
            f"node {first}: {got[first] if first < len(got) else None} vs "
            f"{want[first] if first < len(want) else None}",
        )
    rebuilt = _stage("imported module build", lambda: build(imported))
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}
    _stage("loading the imported weights", lambda: rebuilt.load_state_dict(state))
    with torch.no_grad():
        got = _outputs(_stage("imported module forward", lambda: rebuilt.eval()(x)))
    _close("the imported module differs from the module", got, reference, 1.0)


def _outputs(out: Any) -> dict[str, np.ndarray]:
    """The module's outputs by name: a backbone's dict of feature maps in its order, or a
    classifier's logits under the ONNX output's name."""
    if isinstance(out, Mapping):
        return {str(k): v.detach().numpy() for k, v in out.items()}
    return {ONNX_OUTPUT: out.detach().numpy()}


def _check_features(
    compiled: Any,
    model: torch.nn.Module,
    facts: dict[str, NodeFacts],
    outputs: dict[str, np.ndarray],
) -> None:
    """A features head returns the IR's feature maps, keyed and ordered by stage, each of its
    node's shape; `feature_info` states the IR's channels and reductions."""
    wanted = features(compiled)
    if not wanted:
        if list(outputs) != [ONNX_OUTPUT]:
            _fail("a classifier returns a dict", f"keys {list(outputs)}")
        return
    names = [f.name for f in wanted]
    if list(outputs) != names:
        _fail("feature keys differ from the IR's features", f"module {list(outputs)}, IR {names}")
    for f in wanted:
        shape = tuple(outputs[f.name].shape[1:])
        if shape != facts[f.node].shape:
            _fail(
                "a feature map's shape differs from its node's",
                f"{f.name} ({f.node}): module {shape}, graph {facts[f.node].shape}",
            )
        if facts[f.node].shape[0] != f.channels:
            _fail(
                "a feature's channels differ from its node's",
                f"{f.name}: feature {f.channels}, node {facts[f.node].shape}",
            )
    for f in wanted:
        if f.reduction != f.strides:
            _fail(
                "a feature's reduction is not the product of the strides before it",
                f"{f.name}: reduction {f.reduction}, strides {f.strides} (to {f.node})",
            )
    info = feature_info(model)
    expected = [(f.name, f.channels, f.reduction) for f in wanted]
    if info != expected:
        _fail("feature_info differs from the IR's features", f"module {info}, IR {expected}")


def _check_init(compiled: Any, model: torch.nn.Module, facts: dict[str, NodeFacts]) -> None:
    """zero_init_residual zeroes exactly the residual branches' last BNs, nothing else."""
    zeroed = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d) and not module.weight.detach().any()
    }
    expected = (
        {n for n, f in facts.items() if f.residual_bn} if zero_init_residual(compiled) else set()
    )
    if zeroed != expected:
        _fail(
            "zero_init_residual zeroes other BNs than the graph's residual_bn nodes",
            f"module zeroes {sorted(zeroed)}, graph marks {sorted(expected)}",
        )


def _randomise(model: torch.nn.Module) -> None:
    """Trained-like values: BN statistics and affine parameters, conv biases; seeded."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.5)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.2)
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(torch.randn(module.out_channels, generator=gen) * 0.1)


def _measure(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[dict[str, list[tuple[int, ...]]], dict[str, int]]:
    """One forward pass: output shapes and conv/linear MACs per module name."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    macs: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            shapes.setdefault(name, []).append(tuple(output.shape[1:]))
            if isinstance(module, torch.nn.Conv2d):
                count = module.weight.numel() * output.shape[2] * output.shape[3]
            elif isinstance(module, torch.nn.Linear):
                count = module.weight.numel()
            else:
                return
            macs[name] = macs.get(name, 0) + count

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not all(np.isfinite(v).all() for v in _outputs(out).values()):
        _fail("forward gives non-finite outputs")
    return shapes, macs


def _node_modules(model: torch.nn.Module) -> set[str]:
    """Module names that stand for one graph node each: leaves, whole SE gates, option A."""
    whole = [
        n
        for n, m in model.named_modules()
        if type(m).__name__ in ("SqueezeExcite", "ZeroPadShortcut")
    ]
    return {
        name
        for name, module in model.named_modules()
        if name
        and (name in whole or not any(module.children()))
        and not any(name.startswith(w + ".") for w in whole)
    }


def _check_counts(
    compiled: Any,
    model: torch.nn.Module,
    facts: dict[str, NodeFacts],
    shapes: dict[str, list[tuple[int, ...]]],
    macs: dict[str, int],
) -> None:
    params, total_macs = totals(compiled)
    counted = sum(p.numel() for p in model.parameters())
    if counted != params:
        _fail("parameter count differs from the cost pass", f"module {counted:,}, graph {params:,}")
    expected = {n for n, f in facts.items() if f.module}
    found = _node_modules(model)
    if found != expected:
        _fail(
            "module names differ from the graph's nodes",
            f"only in module {sorted(found - expected)}, only in graph {sorted(expected - found)}",
        )
    for name in sorted(expected):
        if shapes.get(name) != [facts[name].shape]:
            _fail(
                "a module's output shape differs from its node's",
                f"{name} ({facts[name].op}): module {shapes.get(name)}, graph {facts[name].shape}",
            )
        measured = sum(v for k, v in macs.items() if k == name or k.startswith(name + "."))
        if measured != facts[name].macs:
            _fail(
                "a node's MACs differ from the cost pass",
                f"{name} ({facts[name].op}): module {measured:,}, graph {facts[name].macs:,}",
            )
    modules = dict(model.named_modules())
    for name, fact in facts.items():
        prob = getattr(modules.get(name), "drop_prob", None)
        if fact.drop_prob and (prob is None or abs(prob - fact.drop_prob) > 1e-9):
            _fail(
                "a drop_path module's drop_prob differs from its node's",
                f"{name}: module {prob}, graph {fact.drop_prob}",
            )
    if sum(macs.values()) != total_macs:
        _fail("total MACs differ", f"module {sum(macs.values()):,}, graph {total_macs:,}")


def _close(
    mechanism: str, got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], floor: float
) -> None:
    """Every output (the logits, or each feature map) within TOLERANCE of its largest value,
    or of `floor` where the values are smaller (float32 rounding follows the activations'
    scale, not the outputs')."""
    if list(got) != list(want):
        _fail(mechanism, f"outputs {list(got)}, expected {list(want)}")
    for name, expected in want.items():
        if got[name].shape != expected.shape:
            _fail(mechanism, f"{name} shape {got[name].shape}, expected {expected.shape}")
        scale = max(float(np.abs(expected).max(initial=0.0)), floor)
        error = float(
            np.abs(got[name].astype(np.float64) - expected.astype(np.float64)).max(initial=0.0)
        )
        if not math.isfinite(error) or error > TOLERANCE * scale:
            _fail(mechanism, f"max difference {error:.3g} where {name} reaches {scale:.3g}")


def _check_fold(compiled: Any, model: torch.nn.Module, x: torch.Tensor) -> None:
    """--fold-bn with fold_batchnorm(state_dict) computes the eval-mode module (float64)."""
    try:
        folded = _stage("build --fold-bn module", lambda: build(compiled, fold_bn=True))
    except REJECTION:
        return  # e.g. two BN eps values: --fold-bn refuses with a located message
    state = {k: v.double() for k, v in model.state_dict().items()}
    weights = _stage("fold_batchnorm", lambda: fold_state_dict(folded, state))
    folded = folded.double().eval()
    _stage("loading fold_batchnorm's state_dict", lambda: folded.load_state_dict(weights))
    reference = model.double()
    try:
        with torch.no_grad():
            want = _outputs(reference(x.double()))
            got = _outputs(_stage("--fold-bn forward", lambda: folded(x.double())))
    finally:
        model.float()
    _close("--fold-bn module differs from the eval-mode module", got, want, floor=1e-3)


def _check_onnx(
    compiled: Any, model: torch.nn.Module, x: torch.Tensor, reference: dict[str, np.ndarray]
) -> None:
    """onnxruntime on the ONNX model with the module's weights computes the module: each
    named output (the logits, or one per feature map) the module's output of that name."""
    import onnxruntime as ort

    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for fold_bn in (False, True):
        flag = " --fold-bn" if fold_bn else ""
        try:
            data = _stage(f"ONNX{flag} build", lambda f=fold_bn: build_onnx(compiled, weights, f))
        except REJECTION:
            continue
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: a disagreement is reported by the checks
        session = _stage(
            f"onnxruntime{flag} load",
            lambda d=data, o=options: ort.InferenceSession(
                d, o, providers=["CPUExecutionProvider"]
            ),
        )
        values = _stage(
            f"onnxruntime{flag} run", lambda s=session: s.run(None, {"input": x.numpy()})
        )
        got = dict(zip([o.name for o in session.get_outputs()], values, strict=True))
        _close(f"onnxruntime{flag} differs from the eval-mode module", got, reference, 1.0)


# ---------------------------------------------------------------- minimising a failure


def mechanism(verdict: str) -> str:
    """A verdict with its numbers blanked: failures of one mechanism share it."""
    return re.sub(r"\d[\d,.]*(e-?\d+)?", "N", verdict)


def reduce(spec: Mapping[str, Any], budget: int = 2000) -> dict[str, Any]:
    """A smaller spec that fails the same way: greedily drop keys and list items, write
    layers bare, shrink numbers, while the mechanism stays the same (at most `budget` tries)."""
    target = mechanism(outcome(spec))
    if target == "ok" or target.startswith("rejected"):
        raise ValueError(f"nothing to reduce: {target}")
    best: Any = copy.deepcopy(dict(spec))
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for candidate in _smaller(best):
            tries += 1
            if mechanism(outcome(candidate)) == target:
                best, changed = candidate, True
                break
            if tries >= budget:
                break
    return best


def _smaller(tree: Any) -> Any:
    """Every one-step simplification of a spec tree, biggest steps first."""
    for path, _ in list(_walk(tree, ())):
        if path:
            yield _without(tree, path)
    for path, value in list(_walk(tree, ())):
        if isinstance(value, dict) and len(value) == 1:
            ((op, args),) = value.items()
            if isinstance(args, dict) and not any(k in args for k in ("out", "kernel")):
                yield _replaced(tree, path, op)
        if isinstance(value, int) and not isinstance(value, bool):
            for smaller in sorted({1, 2, value // 2, value - 1}):
                if 0 < smaller < value:
                    yield _replaced(tree, path, smaller)
        if isinstance(value, str) and (number := _constant(value)) is not None:
            yield _replaced(tree, path, number)


def _constant(text: str) -> int | None:
    """The value of an expression of int literals (`2 * 3 - 3`, `max(4, 1)`), else None."""
    ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__}

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("max", "min"):
            return (max if node.func.id == "max" else min)(value(a) for a in node.args)
        raise ValueError(text)

    try:
        return value(ast.parse(text, mode="eval").body)
    except (ValueError, SyntaxError):
        return None


def _walk(tree: Any, path: tuple[Any, ...]) -> Any:
    yield path, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _walk(value, (*path, i))


def _without(tree: Any, path: tuple[Any, ...]) -> Any:
    result = copy.deepcopy(tree)
    parent = result
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return result


def _replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    result = copy.deepcopy(tree)
    parent = result
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return result


# ---------------------------------------------------------------- campaigns


def campaign(examples: int, seed: int, folder: Path | None = None) -> Counter[str]:
    """Run `examples` random specs without stopping at failures; count verdicts by mechanism
    and, with `folder`, keep the shortest failing spec of each mechanism there as YAML."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    from tests.spec_strategy import specs

    counts: Counter[str] = Counter()
    shortest: dict[str, str] = {}

    @fixed_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(specs())
    def run(spec: dict[str, Any]) -> None:
        verdict = outcome(spec)
        key = re.sub(r"\[[^\]]*\]", "[...]", mechanism(verdict))[:160]
        counts[key] += 1
        text = as_yaml(spec)
        failed = verdict != "ok" and not verdict.startswith("rejected")
        if failed and (key not in shortest or len(text) < len(shortest[key])):
            shortest[key] = text
            if folder is not None:
                _save_failures(folder, shortest)

    run()
    return counts


def _save_failures(folder: Path, shortest: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("failure_*.yaml"):
        old.unlink()
    for i, (key, text) in enumerate(sorted(shortest.items())):
        (folder / f"failure_{i:02d}.yaml").write_text(f"# {key}\n{text}", encoding="utf-8")


def main(argv: list[str]) -> int:
    """Check spec files given on the command line; print one verdict each. With --reduce,
    also print a minimised spec that fails the same way."""
    torch.set_num_threads(1)
    if argv[:1] == ["--campaign"]:  # --campaign EXAMPLES [SEED [FOLDER]]
        examples, seed = int(argv[1]), int(argv[2]) if len(argv) > 2 else 0
        folder = Path(argv[3]) if len(argv) > 3 else None
        started = time.perf_counter()
        counts = campaign(examples, seed, folder)
        seconds = time.perf_counter() - started
        print(f"{examples} specs in {seconds:.0f} s ({examples / seconds:.1f}/s), seed {seed}")
        for key, count in counts.most_common():
            print(f"{count:6d}  {key}")
        return int(any(k != "ok" and not k.startswith("rejected") for k in counts))
    shrink = "--reduce" in argv
    status = 0
    for name in (a for a in argv if a != "--reduce"):
        spec = yaml.safe_load(Path(name).read_text(encoding="utf-8"))
        verdict = outcome(spec)
        print(f"{name}: {verdict}")
        failed = verdict not in ("ok", "rejected", "rejected by the PyTorch backend")
        status |= failed
        if failed and shrink:
            print(as_yaml(reduce(spec)))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
