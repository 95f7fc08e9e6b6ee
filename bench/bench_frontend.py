"""Front-end speed, as ratios measured in one run on this machine (issue 2's targets).

    python bench/bench_frontend.py [--quick] [--runs 7]

Each figure is the median wall time of several runs of a whole process, so interpreter
start-up and imports count, as they do for a user:

- `resgraph validate specs/resnet152.yaml` vs `python -c "import yaml, pydantic, jinja2,
  networkx"` (target <= 2x), and specs/cifar_resnet1202.yaml (target <= 3x);
- linear growth: cifar_resnet.yaml with n = 3, 18, 200, 2000 blocks per stage and a
  10,000-block network (target: well under 10 s), with the cost per added block between
  sizes (linear growth keeps those costs about equal).

`--quick` takes 3 runs per figure and 1 per size of the growth series (7 and 3 otherwise).
Not a test: timings depend on the machine. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = ["-c", "import yaml, pydantic, jinja2, networkx"]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def run_once(args: list[str]) -> float:
    """Seconds of one `python ARGS` process, which must succeed."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: python {' '.join(args)}\n{result.stderr}")
    return elapsed


def medians(commands: list[list[str]], runs: int) -> list[float]:
    """Median seconds of each command over `runs` rounds, interleaved so that the machine's
    load changes alike for all; one warm-up round first (file cache, .pyc files)."""
    times: list[list[float]] = [[] for _ in commands]
    for round_ in range(runs + 1):
        for i, args in enumerate(commands):
            elapsed = run_once(args)
            if round_:
                times[i].append(elapsed)
    return [statistics.median(t) for t in times]


def validate(*args: str) -> list[str]:
    return ["-m", "resgraph", "validate", *args]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    """Measure every figure; return the number of targets missed (argv: sys.argv[1:] if None)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke run")
    parser.add_argument("--runs", type=int, help="runs per figure, median (7; quick: 3)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    growth_runs = 1 if args.quick else max(3, runs // 2)
    missed = 0

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {runs} runs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    specs = [("specs/resnet152.yaml", 2.0), ("specs/cifar_resnet1202.yaml", 3.0)]
    base, *seconds = medians([BASELINE, *(validate(spec) for spec, _ in specs)], runs)
    print(f"baseline  python -c 'import yaml, pydantic, jinja2, networkx': {base:.3f} s")
    for (spec, target), spent in zip(specs, seconds, strict=True):
        ratio = spent / base
        missed += ratio > target
        print(
            f"validate {spec}: {spent:.3f} s = {ratio:.2f}x baseline "
            f"(target <= {target:g}x) {verdict(ratio <= target)}"
        )

    print("growth    cifar_resnet.yaml, 3 stages of n blocks:")
    ten_thousand = [
        "--set",
        "stages.0.blocks=3334",
        "--set",
        "stages.1.blocks=3333",
        "--set",
        "stages.2.blocks=3333",
    ]
    commands = [validate("specs/cifar_resnet.yaml", "--set", f"n={n}") for n in (3, 18, 200, 2000)]
    commands.append(validate("specs/cifar_resnet.yaml", *ten_thousand))
    blocks = [9, 54, 600, 6000, 10_000]
    sizes = list(zip(blocks, medians(commands, growth_runs), strict=True))
    previous: tuple[int, float] | None = None
    marginal = []
    for blocks, seconds in sizes:
        line = f"  {blocks:>6,} blocks: {seconds:.3f} s"
        if previous is not None:
            per_block = (seconds - previous[1]) / (blocks - previous[0])
            line += f", {per_block * 1e3:.3f} ms per added block since {previous[0]:,}"
            if blocks - previous[0] >= 1000:  # small steps are within timing noise
                marginal.append(per_block)
        print(line)
        previous = (blocks, seconds)
    largest = sizes[-1][1]
    missed += largest >= 10
    spread = max(marginal) / min(marginal)
    print(
        f"10,000 blocks in {largest:.2f} s (target well under 10 s) {verdict(largest < 10)}; "
        f"cost per added block 600->6,000 vs 6,000->10,000: {marginal[0] * 1e3:.3f} vs "
        f"{marginal[1] * 1e3:.3f} ms, ratio {spread:.2f} (linear: about 1)"
    )
    return missed


if __name__ == "__main__":
    raise SystemExit(1 if main() else 0)
