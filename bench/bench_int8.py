"""Benchmark int8 ONNX: onnxruntime CPU latency of resgraph's int8 ResNet-50 in one run.

resnet50_v1_5 with BN statistics away from identity (bench_onnx's `trained_resnet50`), its
state_dict saved once and given to every exporter, batch 8 at 224x224:

- int8: `resgraph compile --target onnx --int8`, calibrated on 64 digits training images
  (`--calibrate digits`: real images, fitted to 3x224x224 as the trainer fits them; a
  benchmark cannot download data, and latency does not depend on what the ranges are);
- fp32: resgraph's own float graph with BN folded (`--fold-bn`), the graph int8 quantizes;
- torch.onnx.export's float graph of the generated module;
- for reference, `--int8-symmetric` (zero-point-0 activations, the form TensorRT takes).

Sessions run interleaved in rotating order; each round gives one paired ratio, and each
figure is the median of those ratios with a 95% bootstrap interval (bench_onnx's method).
The target: int8 at least 2x faster than fp32 (its interval wholly below 0.5 counts as
met, wholly above as missed, otherwise a tie within noise). The CPU's int8 dot-product
instructions are printed beside it: onnxruntime's int8 convs gain most with VNNI.

    python bench/bench_int8.py [--quick] [--rounds 40] [--threads 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: python bench/bench_int8.py
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from bench.bench_onnx import (  # noqa: E402
    _median_ci,
    _rounds,
    _session,
    _torch_export,
    trained_resnet50,
)
from resgraph.backends.onnx_export import compile_onnx  # noqa: E402
from resgraph.backends.onnx_int8 import compile_int8  # noqa: E402
from resgraph.train.calibration import read_calibration  # noqa: E402

BATCH = 8
CALIBRATION_IMAGES = 64
INT8 = "resgraph --int8"
SYMMETRIC = "resgraph --int8 --int8-symmetric"
FP32 = "resgraph --fold-bn (fp32)"
TORCH = "torch.onnx.export (fp32)"
TARGET = 0.5  # int8 latency over fp32: at least 2x faster


def _int8_instructions() -> str:
    """The CPU's int8 dot-product extensions onnxruntime can use, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = set(text.partition("flags")[2].partition("\n")[0].split())
    found = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2") if f in flags]
    vnni = any("vnni" in f or "amx" in f for f in found)
    return f"{', '.join(found) or 'none of avx2/avx512/vnni'}{'' if vnni else ' (no VNNI)'}"


def _verdict(median: float, low: float, high: float) -> tuple[str, bool]:
    """(verdict, missed) for a ratio whose target is <= TARGET."""
    if high <= TARGET:
        return "ok", False
    if low > TARGET:
        return "MISSED", True
    return ("ok" if median <= TARGET else "tie within noise, the interval holds 0.5"), False


def bench_int8(folder: Path, rounds: int, threads: int) -> int:
    """Latency ratios of the int8 graph; the number of targets missed."""
    compiled, model, weights = trained_resnet50(folder)
    paths = {
        INT8: folder / "int8.onnx",
        SYMMETRIC: folder / "int8_symmetric.onnx",
        FP32: folder / "fp32.onnx",
        TORCH: folder / "torch.onnx",
    }
    calibration = read_calibration("digits", compiled, CALIBRATION_IMAGES)
    for name, symmetric in ((INT8, False), (SYMMETRIC, True)):
        compile_int8(
            compiled,
            output=paths[name],
            batches=calibration.batches,
            weights=weights,
            symmetric=symmetric,
        )
    compile_onnx(compiled, output=paths[FP32], weights=weights, fold_bn=True)
    x = next(calibration.batches(BATCH))
    _torch_export(model, torch.from_numpy(x), paths[TORCH])
    sessions = {name: _session(path, threads) for name, path in paths.items()}
    logits = {name: s.run(None, {"input": x})[0] for name, s in sessions.items()}
    agree = (logits[INT8].argmax(1) == logits[FP32].argmax(1)).mean()
    times = _rounds(sessions, x, rounds)
    print(
        f"resnet50_v1_5, batch {BATCH}, 224x224, {rounds} interleaved rounds, "
        f"calibrated on {CALIBRATION_IMAGES} digits images; int8 top-1 agrees with fp32 on "
        f"{agree:.0%} of this batch"
    )
    for name, t in times.items():
        print(f"  {name}: {np.median(t) * 1e3:.1f} ms median (min {t.min() * 1e3:.1f})")
    missed = 0
    for name, other in ((INT8, FP32), (INT8, TORCH), (SYMMETRIC, FP32)):
        median, low, high = _median_ci(times[name] / times[other])
        line = (
            f"ort latency {name} / {other}: {median:.3f} ({1 / median:.2f}x faster; 95% "
            f"interval {low:.3f}-{high:.3f})"
        )
        if (name, other) != (INT8, FP32):
            print(f"{line} (target none: shown for reference)")
            continue
        verdict, miss = _verdict(median, low, high)
        missed += miss
        print(f"{line} (target <= {TARGET}) {verdict}")
    return missed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the number of targets missed (argv: sys.argv[1:] if None)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--rounds", type=int, help="latency rounds (40; quick: 8)")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (8 if args.quick else 40)
    print(
        f"onnxruntime {ort.__version__} ({args.threads or 'default'} intra-op threads); "
        f"CPU int8 instructions: {_int8_instructions()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        return bench_int8(Path(tmp), rounds, args.threads)


if __name__ == "__main__":
    raise SystemExit(1 if main() else 0)
