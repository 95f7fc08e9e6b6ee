"""SARIF 2.1.0 output for `resgraph validate`, so code-scanning tools show spec errors inline."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from resgraph import __version__

SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
INFORMATION_URI = "https://pypi.org/project/resgraph/"
RULE_ID = "spec-error"


def sarif_log(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A SARIF log with one run and one result per invalid spec, from validate's result records.

    Each record is `{"file", "valid"}` plus, when invalid, `{"error": {"message", "file",
    "line", "column"}}`. The path stays relative as given, so the scanner resolves it against
    the checkout. Positions are 1-based in SARIF; an error without one (a file that cannot be
    read) points at line 1, column 1.
    """
    rule = {
        "id": RULE_ID,
        "name": "SpecError",
        "shortDescription": {"text": "A resgraph spec is not a valid network."},
        "fullDescription": {
            "text": "The spec does not load, does not match the language, or describes a "
            "network whose shapes, channels or names do not fit together."
        },
        "defaultConfiguration": {"level": "error"},
    }
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "resgraph",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [rule],
                    }
                },
                "results": [_result(r["error"]) for r in results if not r["valid"]],
            }
        ],
    }


def _result(error: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ruleId": RULE_ID,
        "ruleIndex": 0,
        "level": "error",
        "message": {"text": error["message"]},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": quote(PurePath(error["file"]).as_posix())},
                    "region": {
                        "startLine": max(error["line"], 1),
                        "startColumn": max(error["column"], 1),
                    },
                }
            }
        ],
    }
