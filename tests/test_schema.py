"""`resgraph schema` drives editors: every shipped spec passes it, and real mistakes fail it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import SPECS, run_cli

SHIPPED = sorted(SPECS.glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """The schema exactly as `resgraph schema > resgraph.schema.json` writes it."""
    result = run_cli("schema", timeout=60)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def messages(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [error.message for error in validator.iter_errors(data)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_spec_passes_the_schema(
    validator: jsonschema.Draft202012Validator, path: Path
) -> None:
    assert messages(validator, yaml.safe_load(path.read_text(encoding="utf-8"))) == []


def test_a_spec_without_extends_needs_its_sections(
    validator: jsonschema.Draft202012Validator,
) -> None:
    """Thin specs (`extends:`) may leave sections to their parent; a standalone one may not."""
    data = yaml.safe_load((SPECS / "cifar_resnet20.yaml").read_text(encoding="utf-8"))
    del data["extends"]
    assert sorted(messages(validator, data)) == [
        f"{key!r} is a required property" for key in ("head", "input", "stages")
    ]


def test_mistakes_the_editor_should_underline(validator: jsonschema.Draft202012Validator) -> None:
    data = yaml.safe_load((SPECS / "resnet50.yaml").read_text(encoding="utf-8"))
    data["stages"][0]["widht"] = 64
    data["shortcut"] = "D"
    data["stem"][0]["conv"]["out"] = 6.5
    assert len(messages(validator, data)) == 3


@pytest.mark.parametrize("op", ["bn", "relu", "add", "se"])
def test_every_op_resgraph_takes_bare_the_schema_takes_bare(
    validator: jsonschema.Draft202012Validator, op: str
) -> None:
    data = yaml.safe_load((SPECS / "resnet18.yaml").read_text(encoding="utf-8"))
    data["stem"].append(op)
    assert messages(validator, data) == []


def test_an_op_with_required_settings_is_not_bare(
    validator: jsonschema.Draft202012Validator,
) -> None:
    data = yaml.safe_load((SPECS / "resnet18.yaml").read_text(encoding="utf-8"))
    data["stem"].append("conv")
    assert messages(validator, data) != []
