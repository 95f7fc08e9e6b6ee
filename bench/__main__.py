"""Run every benchmark (bench/bench_*.py) in one process and summarise: `python -m bench`.

Each module's `main(argv)` prints its figures as `name: value (target ...)` lines and
returns how many targets it missed; it gets `["--quick"]` with `--quick`, else `[]` (never
this command's own arguments). Names select modules. Exit status 1 if a module raised or
missed a target.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import platform
import sys
import time
import traceback
from pathlib import Path

import bench

FOLDER = Path(bench.__file__).resolve().parent


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy, so the summary can repeat the figures."""

    def __init__(self, out: io.TextIOBase) -> None:
        self.out = out
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def discover() -> list[str]:
    """The benchmark modules' names, bench_*.py in this folder, sorted."""
    return sorted(path.stem for path in FOLDER.glob("bench_*.py"))


def run(name: str, quick: bool) -> tuple[int | None, float, list[str]]:
    """Run one module's main(); return its missed targets (None if it raised), its seconds
    and its target lines."""
    tee = _Tee(sys.stdout)
    start = time.perf_counter()
    missed: int | None = None
    with contextlib.redirect_stdout(tee):
        try:
            main = importlib.import_module(f"bench.{name}").main
            result = (
                main(["--quick"] if quick else []) if inspect.signature(main).parameters else main()
            )
            missed = int(result or 0)
        except (Exception, SystemExit):  # a failed child process or argparse exits
            traceback.print_exc()
    figures = [line for line in tee.copy.getvalue().splitlines() if "(target" in line]
    return missed, time.perf_counter() - start, figures


def outcome(missed: int | None) -> str:
    if missed is None:
        return "FAILED"
    return f"{missed} target{'s' if missed > 1 else ''} MISSED" if missed else "ok"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in turn, then print every figure again with the machine."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="modules to run, e.g. bench_scaling (all)")
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke test")
    args = parser.parse_args(argv)
    names = discover()
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(names)})")
    results = {}
    for name in args.names or names:
        print(f"== {name}", flush=True)
        results[name] = run(name, args.quick)
    print(
        f"\n== summary ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}{', quick' if args.quick else ''})"
    )
    for name, (missed, seconds, figures) in results.items():
        print(f"{name}: {outcome(missed)} in {seconds:.1f} s")
        for line in figures:
            print(f"  {line}")
    return 0 if all(missed == 0 for missed, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
