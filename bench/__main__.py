"""Run every benchmark (bench/bench_*.py) in one process and summarise: `python -m bench`.

Each module's `main()` prints its figures as `name: value (target ...)` lines. `--quick`
is passed on to the modules whose `main` takes a `quick` argument; names select modules.
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


def run(name: str, quick: bool) -> tuple[bool, float, list[str]]:
    """Run one module's main(); return whether it finished, its seconds and its target lines."""
    tee = _Tee(sys.stdout)
    start = time.perf_counter()
    ok = True
    with contextlib.redirect_stdout(tee):
        try:
            main = importlib.import_module(f"bench.{name}").main
            if "quick" in inspect.signature(main).parameters:
                main(quick=quick)
            else:
                main()
        except Exception:
            traceback.print_exc()
            ok = False
    figures = [line for line in tee.copy.getvalue().splitlines() if "(target" in line]
    return ok, time.perf_counter() - start, figures


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
    for name, (ok, seconds, figures) in results.items():
        print(f"{name}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s")
        for line in figures:
            print(f"  {line}")
    return 0 if all(ok for ok, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
