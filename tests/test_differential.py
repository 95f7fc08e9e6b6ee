"""Differential testing (issue 12, item 6): random specs across the whole language, and every
spec that validates must compile to a module, a --fold-bn module and ONNX models that agree
with each other and with the passes. See tests/differential.py for what is compared and
docs/fuzzing.md for campaigns.

    python -m pytest tests/test_differential.py                                  # CI: 200 specs
    RESGRAPH_DIFF_EXAMPLES=20000 python -m pytest tests/test_differential.py     # a campaign

Specs that failed once are kept under tests/differential_regressions/, one per mechanism.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, seed, settings

from tests.differential import Disagreement, check_spec
from tests.spec_strategy import specs

EXAMPLES = int(os.environ.get("RESGRAPH_DIFF_EXAMPLES", "200"))
REGRESSIONS = Path(__file__).parent / "differential_regressions"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny networks: threads cost more than they give, and CI machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@seed(12)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)
@given(spec=specs())
def test_random_specs_are_rejected_or_agree_everywhere(spec: dict[str, Any]) -> None:
    try:
        event(check_spec(spec))
    except Disagreement as exc:
        event("disagreement: " + str(exc).splitlines()[0].split(":")[0])
        raise


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.yaml")), ids=lambda p: p.stem)
def test_regression(path: Path) -> None:
    """Every spec a campaign (or the issue) found failing: rejected or agreeing, now."""
    check_spec(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", ["cifar_resnet", "preact_resnet18", "resnet18"])
def test_shipped_specs_agree(name: str) -> None:
    """The oracle's control: shipped networks (at 32x32, n=1) pass every check today."""
    spec = yaml.safe_load((REGRESSIONS.parent.parent / "specs" / f"{name}.yaml").read_text())
    spec["input"] = {**spec["input"], "height": 32, "width": 32}
    if "n" in spec.get("params", {}):
        spec["params"]["n"] = 1
    assert check_spec(spec) == "ok"
