"""How the cost of `resgraph validate` and `resgraph compile` grows with depth.

The CIFAR family at n = 3, 18, 200, 2000 blocks per stage (20 to 12,002 layers), each run
as the real command in a fresh process. The n = 3 run stands for the fixed cost (Python
start-up, imports, reading YAML, running ruff); what each larger n adds over it, divided
by the blocks it adds, is the cost of one block. Linear growth keeps that figure flat, so
the target is on its ratio between the two deepest runs (n = 2000 over n = 200).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = "specs/cifar_resnet.yaml"
DEPTHS = (3, 18, 200, 2000)
QUICK_DEPTHS = (3, 18, 200)
STAGES = 3
LINEAR_TARGET = 1.5  # per-block cost at the deepest n over the next deepest


def timed(*args: str) -> float:
    """Wall seconds of one `python -m resgraph ARGS` run from this checkout; it must succeed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "resgraph", *args],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def command(kind: str, n: int, out: Path) -> list[str]:
    """The validate or compile command line for the family at depth n."""
    args = [kind, SPEC, "--set", f"n={n}"]
    return [*args, "-o", str(out / f"n{n}.py")] if kind == "compile" else args


def measure(kind: str, depths: tuple[int, ...], repeats: int, out: Path) -> dict[int, float]:
    """Median wall time per depth."""
    return {
        n: statistics.median(timed(*command(kind, n, out)) for _ in range(repeats)) for n in depths
    }


def report(kind: str, times: dict[int, float]) -> None:
    """Print each depth's time and the start-up-subtracted cost of one block."""
    base_n = min(times)
    per_block: dict[int, float] = {}
    for n, seconds in times.items():
        if n == base_n:
            print(f"{kind} n={n}: {seconds:.2f} s (fixed cost: start-up, imports, one small net)")
            continue
        per_block[n] = (seconds - times[base_n]) / (STAGES * (n - base_n))
        print(
            f"{kind} n={n}: {seconds:.2f} s, {per_block[n] * 1e3:.3f} ms per block "
            "beyond the fixed cost"
        )
    if len(per_block) >= 2:
        shallow, deep = sorted(per_block)[-2:]
        ratio = per_block[deep] / per_block[shallow]
        print(
            f"{kind} per-block cost n={deep} / n={shallow}: {ratio:.2f} "
            f"(target < {LINEAR_TARGET}: linear in depth)"
        )


def main(quick: bool = False) -> None:
    """Time validate and compile at each depth; quick skips n = 2000 and repeats once."""
    depths = QUICK_DEPTHS if quick else DEPTHS
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("validate", "compile"):
            report(kind, measure(kind, depths, repeats, Path(folder)))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
