"""A fork server for the CLI fuzz test: imports resgraph (and torch) once, runs each command
line in a forked child, as its own process with capped memory and a time limit.

A fresh `python -m resgraph` costs seconds of imports per example; a fork costs
milliseconds, and the child is still a real process: its own exit status, stdout and
stderr (files, not the test's), its own process group, killed whole on a timeout. No
torch op runs here before a fork, so no thread pool is copied half-started.

Protocol: one JSON object per line on stdin, {"argv", "cwd", "timeout"}; one per line on
stdout, {"code", "out", "err", "timed_out"}.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback

import matplotlib

matplotlib.use("Agg")
import onnx  # noqa: F401  (imported once here, not in every child)
import torch  # noqa: F401

from resgraph.cli import main

MEMORY_HEADROOM = 3 << 30  # address space a child may add to what the server maps


def _mapped() -> int:
    """This process's virtual memory size in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def _child(argv: list[str], cwd: str, out: int, err: int, cap: int) -> None:
    """Run the CLI as the forked child; never returns."""
    code = 99
    try:
        os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        sys.argv = ["resgraph", *argv]
        code = main(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for a usage error
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # an escape from main: the test reports the traceback
        traceback.print_exc()
        code = 99
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a stream the command closed or broke
                stream.flush()
        os._exit(code)


def _run(argv: list[str], cwd: str, timeout: float) -> dict[str, object]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        cap = _mapped() + MEMORY_HEADROOM
        pid = os.fork()
        if pid == 0:
            _child(argv, cwd, out.fileno(), err.fileno(), cap)
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):  # workers the child left behind
            os.killpg(pid, signal.SIGKILL)
        texts = []
        for handle in (out, err):
            handle.seek(0)
            texts.append(handle.read(1 << 20).decode("utf-8", "replace"))
    return {
        "code": os.waitstatus_to_exitcode(status),
        "out": texts[0],
        "err": texts[1],
        "timed_out": timed_out,
    }


def serve() -> None:
    """Answer requests on stdin until it closes."""
    os.environ.pop("RESGRAPH_DEBUG", None)
    for line in sys.stdin:
        request = json.loads(line)
        reply = _run(request["argv"], request["cwd"], request["timeout"])
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
