"""How the cost of `resgraph validate` and `resgraph compile` grows with depth.

The CIFAR family at n = 3, 18, 200, 2000 blocks per stage (20 to 12,002 layers), measured
two ways. The real command in a fresh process gives the time a user waits, start-up
included. The same work in this process (compile_spec, then render_module for compile)
gives the cost without start-up: subtracting a separately timed start-up from a process's
time leaves a difference smaller than the process-to-process noise until n is in the
hundreds. Divided by the number of blocks, that cost stays flat if growth is linear, so
the target is on its ratio between the two deepest runs (n = 2000 over n = 200).

    PYTHONPATH=. python bench/bench_scaling.py [--quick]

`--quick` stops at n = 200. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from resgraph.backends.pytorch import render_module
from resgraph.pipeline import compile_spec

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "specs" / "cifar_resnet.yaml"
DEPTHS = (3, 18, 200, 2000)
QUICK_DEPTHS = (3, 18, 200)
STAGES = 3
LINEAR_TARGET = 1.5  # per-block cost at the deepest n over the next deepest


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Best wall seconds of `repeats` runs: noise from a busy machine only ever adds time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def command(kind: str, n: int, out: Path) -> Callable[[], object]:
    """`python -m resgraph validate|compile` for the family at depth n, in a fresh process."""
    args = [kind, str(SPEC), "--set", f"n={n}"]
    if kind == "compile":
        args += ["-o", str(out / f"n{n}.py")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return lambda: subprocess.run(
        [sys.executable, "-m", "resgraph", *args],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def in_process(kind: str, n: int) -> Callable[[], object]:
    """The same work as `command` without the process: the front end, plus the backend."""
    if kind == "validate":
        return lambda: compile_spec(SPEC, [f"n={n}"])
    return lambda: render_module(compile_spec(SPEC, [f"n={n}"]), overrides=[f"n={n}"])


def report(kind: str, depths: tuple[int, ...], repeats: int, out: Path) -> int:
    """Print each depth's times and per-block cost, then the linearity ratio; 1 if missed."""
    per_block: dict[int, float] = {}
    for n in depths:
        wall = best_of(repeats, command(kind, n, out))
        work = best_of(repeats, in_process(kind, n))
        per_block[n] = work / (STAGES * n)
        print(
            f"{kind} n={n}: {wall:.2f} s as a command, {work:.3f} s without start-up, "
            f"{per_block[n] * 1e3:.3f} ms per block"
        )
    shallow, deep = sorted(per_block)[-2:]
    ratio = per_block[deep] / per_block[shallow]
    ok = ratio < LINEAR_TARGET
    print(
        f"{kind} per-block cost n={deep} / n={shallow}: {ratio:.2f} "
        f"(target < {LINEAR_TARGET}: linear in depth) {'ok' if ok else 'MISSED'}"
    )
    return int(not ok)


def main(argv: list[str] | None = None) -> int:
    """Time validate and compile at each depth; return the number of targets missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip n = 2000")
    quick = parser.parse_args(argv).quick
    depths = QUICK_DEPTHS if quick else DEPTHS
    repeats = 3  # best of 3: cheap below n = 2000, and one run is too noisy to judge
    with tempfile.TemporaryDirectory() as folder:
        return sum(report(kind, depths, repeats, Path(folder)) for kind in ("validate", "compile"))


if __name__ == "__main__":
    raise SystemExit(1 if main() else 0)
