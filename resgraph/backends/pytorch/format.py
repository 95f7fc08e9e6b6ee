"""Formatting generated source with ruff, so generated files are ruff-format clean."""

from __future__ import annotations

import subprocess


def format_source(source: str) -> str:
    """Format with ruff (a dependency), so generated files are ruff-format clean."""
    from ruff.__main__ import find_ruff_bin

    result = subprocess.run(
        [
            find_ruff_bin(),
            "format",
            "--isolated",
            "--line-length",
            "100",
            "--stdin-filename",
            "generated.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ruff could not format the generated source: {result.stderr.strip()}")
    return result.stdout
