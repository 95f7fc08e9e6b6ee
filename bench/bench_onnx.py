"""Benchmark the ONNX backend; every ratio is measured within this one run.

1. onnxruntime CPU latency of resgraph's resnet50_v1_5 graph against the graph that
   torch.onnx.export (TorchScript exporter) makes of the generated PyTorch module
   (resgraph.backends.pytorch.build_module), same weights: the module's state_dict is
   saved with torch.save and handed to compile_onnx as its weights file (target <= 1.0),
   for resgraph's default graph and its --fold-bn graph. Sessions run interleaved in
   rotating order; each round gives one paired ratio per graph, and the figure is the
   median of those ratios with a 95% bootstrap interval. A second session of torch's own
   graph is timed the same way, as a control: its ratio to the first shows how far the
   machine's noise alone moves a ratio. The graphs onnxruntime actually runs (after its
   ORT_ENABLE_ALL optimisations) are also compared node for node.
2. Time to emit resnet152 with a weights file (compile_onnx: load, check, build, write)
   against the time torch.save takes to write the same weights to disk (target < 2x).

    python bench/bench_onnx.py [--quick] [--rounds 300] [--batch 1] [--repeats 5] [--threads 0]

Exit status 1 if a target is missed; a latency ratio counts as missed only when its whole
95% interval lies above 1.0 (a median above 1.0 whose interval holds 1.0 is a tie).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: python bench/bench_onnx.py
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from resgraph.backends.onnx_export import compile_onnx  # noqa: E402
from resgraph.backends.onnx_weights import he_init  # noqa: E402
from resgraph.backends.pytorch import build_module  # noqa: E402
from resgraph.pipeline import compile_spec  # noqa: E402

TORCH = "torch.onnx.export"
CONTROL = "torch.onnx.export (2nd session)"
RESGRAPH = "resgraph"
FOLDED = "resgraph --fold-bn"


def trained_resnet50(folder: Path) -> tuple[Any, torch.nn.Module, Path]:
    """resnet50_v1_5 compiled, its module in eval mode with trained-like BN, and those
    weights saved in `folder`: the network every latency ratio is measured on."""
    compiled = compile_spec(REPO / "specs" / "resnet50_v1_5.yaml")
    torch.manual_seed(0)
    model = build_module(compiled).eval()
    _trained_like(model)
    weights = folder / "resnet50_v1_5.pt"
    torch.save(model.state_dict(), weights)
    return compiled, model, weights


def _trained_like(model: torch.nn.Module) -> None:
    """BN statistics and affine terms away from identity, so BN is real work to fold."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) * 0.5 + 0.25)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def _torch_export(net: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """PyTorch's own ONNX graph of `net`, with the same input/output names and dynamic batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def _options(threads: int, optimized: Path | None = None) -> ort.SessionOptions:
    """The same options for every session: full optimisation, no thread spinning (a spinning
    pool would steal the cores from the session timed after it), and optionally the graph
    that onnxruntime runs written to `optimized`."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, one per core
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3  # its warning that NCHWc graphs are machine-specific
    return options


def _session(path: Path, threads: int, optimized: Path | None = None) -> ort.InferenceSession:
    options = _options(threads, optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _structure(path: Path) -> list[tuple[object, ...]]:
    """Each node of an optimised graph as (domain, op, attributes, producers of its inputs),
    so that two graphs compare equal when they compute the same ops in the same order
    whatever their tensor names; an explicit dilations of 1s is dropped (the default)."""
    model = onnx.load(str(path), load_external_data=False)
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if set(attrs.get("dilations", [])) == {1}:
            del attrs["dilations"]
        inputs = tuple(producer.get(name, "constant" if name else "") for name in node.input)
        nodes.append((node.domain, node.op_type, repr(sorted(attrs.items())), inputs))
    return nodes


def _rounds(
    sessions: dict[str, ort.InferenceSession], x: np.ndarray, rounds: int
) -> dict[str, np.ndarray]:
    """Seconds of each session's run in each round; the order rotates from round to round so
    that no session always follows the same one."""
    names = list(sessions)
    times = {name: np.empty(rounds) for name in names}
    for session in sessions.values():  # warm-up: allocations, NCHWc weight reorders
        session.run(None, {"input": x})
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            sessions[name].run(None, {"input": x})
            times[name][r] = time.perf_counter() - start
    return times


def _median_ci(ratios: np.ndarray, resamples: int = 2000) -> tuple[float, float, float]:
    """The median of paired ratios and a 95% bootstrap interval for it."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(ratios), (resamples, len(ratios)))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


def _latency_verdict(median: float, low: float) -> tuple[str, bool]:
    """(verdict, missed): missed only when the whole interval lies above 1.0."""
    if median <= 1.0:
        return "ok", False
    if low <= 1.0:
        return "ok: tie within noise, the interval holds 1.0", False
    return "MISSED", True


def bench_latency(folder: Path, batch: int, rounds: int, threads: int) -> int:
    """Latency of resgraph's graphs against torch's export of the generated module; misses."""
    compiled, model, weights = trained_resnet50(folder)
    paths = {
        RESGRAPH: folder / "resgraph.onnx",
        FOLDED: folder / "resgraph_fold_bn.onnx",
        TORCH: folder / "torch_export.onnx",
    }
    compile_onnx(compiled, output=paths[RESGRAPH], weights=weights)
    compile_onnx(compiled, output=paths[FOLDED], weights=weights, fold_bn=True)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    _torch_export(model, torch.from_numpy(x), paths[TORCH])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()

    structure = {}
    for name, path in paths.items():
        optimized = folder / f"{path.stem}.optimized.onnx"
        _session(path, threads, optimized)
        structure[name] = _structure(optimized)
    for name in (RESGRAPH, FOLDED):
        same = structure[name] == structure[TORCH]
        print(
            f"graph onnxruntime runs, {name} vs {TORCH}: "
            + (
                f"identical node for node ({len(structure[name])} nodes)"
                if same
                else f"DIFFERENT ({len(structure[name])} vs {len(structure[TORCH])} nodes)"
            )
        )

    sessions = {name: _session(path, threads) for name, path in paths.items()}
    sessions[CONTROL] = _session(paths[TORCH], threads)
    diff = max(
        float(np.abs(s.run(None, {"input": x})[0] - expected).max()) for s in sessions.values()
    )
    times = _rounds(sessions, x, rounds)
    print(
        f"resnet50_v1_5, batch {batch}, {rounds} interleaved rounds, {ort.get_device()}, "
        f"max abs diff from the PyTorch module {diff:.1e}"
    )
    for name, t in times.items():
        print(f"  {name}: {np.median(t) * 1e3:.2f} ms median (min {t.min() * 1e3:.2f})")
    missed = 0
    for name in (CONTROL, RESGRAPH, FOLDED):
        median, low, high = _median_ci(times[name] / times[TORCH])
        line = (
            f"ort latency {name} / {TORCH}: {median:.3f} "
            f"(95% interval {low:.3f}-{high:.3f}, ratio of medians "
            f"{np.median(times[name]) / np.median(times[TORCH]):.3f})"
        )
        if name == CONTROL:
            print(f"{line}: the noise floor, same graph on both sides")
            continue
        verdict, miss = _latency_verdict(median, low)
        missed += miss
        print(f"{line} (target <= 1.0) {verdict}")
    return missed


def _best_interleaved(actions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of `repeats` timed calls of each action, taken in turns so that the disk's
    writeback state weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            start = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def bench_emit(folder: Path, repeats: int) -> int:
    """Emit time against torch.save of the same weights; 1 if the target is missed."""
    compiled = compile_spec(REPO / "specs" / "resnet152.yaml")
    state = {
        k: torch.from_numpy(v) for k, v in he_init(compiled.network, 0).items()
    }
    weights = folder / "resnet152.pt"
    output = folder / "resnet152.onnx"
    torch.save(state, weights)
    best = _best_interleaved(
        {
            "save": lambda: torch.save(state, folder / "resnet152_copy.pt"),
            "emit": lambda: compile_onnx(compiled, output=output, weights=weights),
        },
        repeats,
    )
    save, emit = best["save"], best["emit"]
    size = weights.stat().st_size / 2**20
    print(
        f"resnet152: torch.save {size:.0f} MiB {save:.3f} s, compile_onnx {emit:.3f} s "
        f"(best of {repeats})"
    )
    ok = emit / save < 2.0
    print(
        f"emit time / weights write time: {emit / save:.2f} (target < 2.0) "
        f"{'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks; return the number of targets missed (argv: sys.argv[1:] if None)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, help="latency rounds (300; quick: 60)")
    parser.add_argument("--repeats", type=int, help="emit/save repeats (5; quick: 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads (0: its default); 1 is steadier on a shared machine",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (60 if args.quick else 300)
    repeats = args.repeats or (2 if args.quick else 5)
    print(
        f"onnxruntime {ort.__version__} ({args.threads or 'default'} intra-op threads), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        missed = bench_latency(Path(tmp), args.batch, rounds, args.threads)
        missed += bench_emit(Path(tmp), repeats)
    return missed


if __name__ == "__main__":
    raise SystemExit(1 if main() else 0)
