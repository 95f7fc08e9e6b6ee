"""Benchmark the ONNX backend; every ratio is measured within this one run.

1. onnxruntime CPU latency of resgraph's resnet50_v1_5 graph against the graph
   torch.onnx.export (TorchScript exporter) makes of a torch module with the same weights
   (target <= 1.0). The torch module is the tests' torch.nn.functional reference until
   the PyTorch backend's generated module is available on this branch.
2. Time to emit resnet152 with a weights file (compile_onnx: load, check, build, write)
   against the time torch.save takes to write the same weights to disk (target < 2x).

Run from the repository root: python bench/bench_onnx.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx_reference import ReferenceNet, trained_like_weights  # noqa: E402

from resgraph.backends.onnx_export import build_model, compile_onnx  # noqa: E402
from resgraph.backends.onnx_weights import he_init  # noqa: E402
from resgraph.pipeline import compile_spec  # noqa: E402


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


def _latencies(
    sessions: dict[str, ort.InferenceSession], x: np.ndarray, runs: int
) -> dict[str, float]:
    """Median seconds per run of each session, runs interleaved so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(None, {"input": x})
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"input": x})
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_latency(folder: Path, batch: int, runs: int) -> None:
    compiled = compile_spec(REPO / "specs/resnet50_v1_5.yaml")
    weights = trained_like_weights(compiled.graph, seed=0)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    exported = folder / "torch_export.onnx"
    _torch_export(ReferenceNet(compiled.graph, weights).eval(), torch.from_numpy(x), exported)
    models = {
        "resgraph": build_model(compiled, weights).SerializeToString(),
        "resgraph --fold-bn": build_model(compiled, weights, fold_bn=True).SerializeToString(),
        "torch.onnx.export": str(exported),
    }
    sessions = {
        k: ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for k, m in models.items()
    }
    outputs = {k: s.run(None, {"input": x})[0] for k, s in sessions.items()}
    agree = max(np.abs(v - outputs["torch.onnx.export"]).max() for v in outputs.values())
    median = _latencies(sessions, x, runs)
    print(f"resnet50_v1_5, batch {batch}, {runs} runs, max abs diff between graphs {agree:.1e}")
    for name, seconds in median.items():
        print(f"  {name}: {seconds * 1e3:.2f} ms median")
    base = median["torch.onnx.export"]
    for name in ("resgraph", "resgraph --fold-bn"):
        print(f"ort latency {name} / torch.onnx.export: {median[name] / base:.3f} (target <= 1.0)")


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


def bench_emit(folder: Path, repeats: int) -> None:
    compiled = compile_spec(REPO / "specs/resnet152.yaml")
    state = {
        k: torch.from_numpy(v) for k, v in he_init(compiled.graph, compiled.spec.init, 0).items()
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
    print(f"emit time / weights write time: {emit / save:.2f} (target < 2.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        bench_latency(Path(tmp), args.batch, args.runs)
        bench_emit(Path(tmp), args.repeats)


if __name__ == "__main__":
    main()
