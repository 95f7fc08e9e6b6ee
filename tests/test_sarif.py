"""`resgraph validate --format sarif`: a SARIF 2.1.0 log that code-scanning tools accept.

No package on PyPI ships the official schema file, so SARIF_SUBSET below transcribes the
parts of sarif-schema-2.1.0.json that resgraph emits: the same required keys, enums,
minimums and `additionalProperties: false`, with only the properties resgraph uses listed
(so a misspelt key fails here as it would against the full schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from conftest import SPECS, run_cli

from resgraph import __version__
from resgraph.sarif import sarif_log


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


LEVEL = {"enum": ["none", "note", "warning", "error"]}
SARIF_SUBSET: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    **_object(
        ["version", "runs"],
        **{"$schema": {"type": "string"}},
        version={"enum": ["2.1.0"]},
        runs={"type": "array", "items": _ref("run")},
    ),
    "definitions": {
        "run": _object(
            ["tool"], tool=_ref("tool"), results={"type": "array", "items": _ref("result")}
        ),
        "tool": _object(["driver"], driver=_ref("toolComponent")),
        "toolComponent": _object(
            ["name"],
            name={"type": "string"},
            version={"type": "string"},
            informationUri={"type": "string"},
            rules={"type": "array", "items": _ref("reportingDescriptor"), "uniqueItems": True},
        ),
        "reportingDescriptor": _object(
            ["id"],
            id={"type": "string"},
            name={"type": "string"},
            shortDescription=_ref("multiformatMessageString"),
            fullDescription=_ref("multiformatMessageString"),
            defaultConfiguration=_ref("reportingConfiguration"),
        ),
        "multiformatMessageString": _object(["text"], text={"type": "string"}),
        "reportingConfiguration": _object([], level=LEVEL),
        "result": _object(
            ["message"],
            ruleId={"type": "string"},
            ruleIndex={"type": "integer", "minimum": -1},
            level=LEVEL,
            message=_ref("message"),
            locations={"type": "array", "items": _ref("location")},
        ),
        "message": {
            **_object([], text={"type": "string"}, id={"type": "string"}),
            "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
        },
        "location": _object([], physicalLocation=_ref("physicalLocation")),
        "physicalLocation": {
            **_object([], artifactLocation=_ref("artifactLocation"), region=_ref("region")),
            "anyOf": [{"required": ["address"]}, {"required": ["artifactLocation"]}],
        },
        "artifactLocation": _object([], uri={"type": "string"}),
        "region": _object(
            [],
            startLine={"type": "integer", "minimum": 1},
            startColumn={"type": "integer", "minimum": 1},
        ),
    },
}

BROKEN = """\
name: broken
input: {channels: 3, height: 32, width: 32}
stages:
  - {blocks: 2, width: 16, stride: 0}
head: {classes: 10}
"""


def validated(log: dict[str, Any]) -> dict[str, Any]:
    """The log, after checking it against the schema subset."""
    jsonschema.Draft7Validator(SARIF_SUBSET).validate(log)
    return log


def test_the_schema_subset_rejects_what_sarif_rejects() -> None:
    """The subset is not vacuous: a level outside the enum and a 0 line fail it."""
    log = sarif_log([{"file": "a.yaml", "valid": False, "error": _error(3, 4)}])
    for path, bad in ((("level",), "fatal"), (("locations", 0, "physicalLocation"), {})):
        broken = json.loads(json.dumps(log))
        target = broken["runs"][0]["results"][0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        try:
            validated(broken)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"{path} = {bad!r} passed the schema")


def _error(line: int, column: int, file: str = "a.yaml") -> dict[str, Any]:
    return {"message": "stages.0.stride: bad", "file": file, "line": line, "column": column}


def test_one_result_per_invalid_spec_with_its_position() -> None:
    log = validated(
        sarif_log(
            [
                {"file": "ok.yaml", "valid": True},
                {"file": "specs/a.yaml", "valid": False, "error": _error(4, 27, "specs/a.yaml")},
            ]
        )
    )
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "resgraph"
    assert run["tool"]["driver"]["version"] == __version__
    (result,) = run["results"]
    assert result["level"] == "error"
    assert result["ruleId"] == run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"]
    assert result["message"]["text"] == "stages.0.stride: bad"
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "specs/a.yaml"
    assert physical["region"] == {"startLine": 4, "startColumn": 27}


def test_errors_without_a_position_point_at_the_first_line() -> None:
    """An unreadable file has line 0 in validate's records; SARIF regions start at 1."""
    log = validated(sarif_log([{"file": "gone.yaml", "valid": False, "error": _error(0, 0)}]))
    region = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 1, "startColumn": 1}


def test_paths_become_uri_references() -> None:
    error = _error(1, 1, "my specs/a b.yaml")
    log = sarif_log([{"file": "my specs/a b.yaml", "valid": False, "error": error}])
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "my%20specs/a%20b.yaml"


def test_cli_sarif_for_valid_and_broken_specs(write_spec: Callable[..., Path]) -> None:
    broken = write_spec(BROKEN, name="broken.yaml")
    result = run_cli(
        "validate", "--format", "sarif", "specs/resnet18.yaml", str(broken), timeout=60
    )
    assert result.returncode == 1, result.stderr
    log = validated(json.loads(result.stdout))
    (found,) = log["runs"][0]["results"]
    physical = found["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == broken.as_posix()
    column = BROKEN.splitlines()[3].index("0}") + 1
    assert physical["region"] == {"startLine": 4, "startColumn": column}
    assert "stride" in found["message"]["text"]


def test_cli_sarif_for_valid_specs_only() -> None:
    result = run_cli("validate", "--format", "sarif", str(SPECS / "resnet18.yaml"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert validated(json.loads(result.stdout))["runs"][0]["results"] == []
