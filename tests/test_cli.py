"""The `resgraph` command line: validate, summary, graph, schema, through real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, SPECS, run_cli

from resgraph.load import load_spec
from resgraph.pipeline import compile_spec

SHIPPED = sorted(SPECS.glob("*.yaml"))
BROKEN = (
    "name: broken\ninput: {channels: 3, height: 32, width: 32}\nstages: []\nhead: {classes: 10}\n"
)


def summary_json(*args: str) -> dict[str, Any]:
    """`resgraph summary ARGS --json`, parsed."""
    result = run_cli("summary", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------- validate


def test_validate_every_shipped_spec() -> None:
    assert len(SHIPPED) >= 21
    result = run_cli("validate", *(str(p.relative_to(REPO)) for p in SHIPPED))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == len(SHIPPED)
    for path, line in zip(SHIPPED, lines, strict=True):
        assert line.startswith(f"specs/{path.name}: ok ({path.stem}: ")
    assert "specs/resnet50.yaml: ok (resnet50: 25,557,032 params, 3.86 GMACs)" in lines


def test_validate_the_examples() -> None:
    examples = sorted(str(p.relative_to(REPO)) for p in (SPECS / "examples").glob("*.yaml"))
    assert examples, "specs/examples/ must hold at least one user-defined block example"
    result = run_cli("validate", *examples)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(examples)


def test_wide_resnet_example_matches_the_papers_sizes() -> None:
    # Zagoruyko and Komodakis (2016), Table 1: WRN-28-10 36.5M, WRN-16-4 2.7M parameters
    spec = "specs/examples/wide_resnet_cifar.yaml"
    assert round(summary_json(spec)["params"] / 1e6, 1) == 36.5
    assert round(summary_json(spec, "--set", "n=2", "--set", "k=4")["params"] / 1e6, 1) == 2.7


def test_validate_reports_each_spec_and_fails_if_any_is_invalid(write_spec) -> None:
    broken = write_spec(BROKEN)
    result = run_cli("validate", "specs/resnet18.yaml", str(broken), "specs/cifar_resnet20.yaml")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "specs/resnet18.yaml: ok (resnet18: 11,689,512 params, 1.81 GMACs)",
        "specs/cifar_resnet20.yaml: ok (cifar_resnet20: 269,722 params, 0.04 GMACs)",
    ]
    assert (
        result.stderr == f"{broken}:3:9: stages: List should have at least 1 item after "
        "validation, not 0\n"
    )


def test_validate_json(write_spec) -> None:
    broken = write_spec(BROKEN)
    result = run_cli("validate", "specs/resnet50.yaml", str(broken), "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    good, bad = report["specs"]
    assert good == {
        "file": "specs/resnet50.yaml",
        "valid": True,
        "name": "resnet50",
        "params": 25_557_032,
        "macs": 3_857_973_248,
    }
    assert bad["file"] == str(broken)
    assert bad["valid"] is False
    assert bad["error"]["file"] == str(broken)
    assert (bad["error"]["line"], bad["error"]["column"]) == (3, 9)
    assert bad["error"]["message"].startswith("stages: List should have at least 1 item")
    assert bad["error"]["text"] == f"{broken}:3:9: {bad['error']['message']}"


def test_validate_json_all_valid() -> None:
    result = run_cli("validate", "specs/resnet18.yaml", "--format", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["valid"] is True


def test_validate_github_annotations(write_spec) -> None:
    broken = write_spec(BROKEN)
    result = run_cli("validate", "specs/resnet18.yaml", str(broken), "--format", "github")
    assert result.returncode == 1
    assert result.stdout == (
        f"::error file={broken},line=3,col=9::stages: List should have at "
        "least 1 item after validation, not 0\n"
    )


def test_validate_github_escapes_the_file_name(write_spec) -> None:
    broken = write_spec(BROKEN, name="x,line=9:a.yaml")
    result = run_cli("validate", str(broken), "--format", "github")
    escaped = str(broken).replace(":", "%3A").replace(",", "%2C")
    assert result.stdout.startswith(f"::error file={escaped},line=3,col=9::stages: ")


def test_validate_github_escapes_and_locates_a_set_error() -> None:
    result = run_cli(
        "validate", "specs/cifar_resnet.yaml", "--set", "nn=100%", "--format", "github"
    )
    assert result.returncode == 1
    line = result.stdout.strip()
    assert re.fullmatch(
        r"::error file=specs/cifar_resnet\.yaml,line=1,col=1::--set nn=100%25: "
        r"nn: no such parameter or field.*",
        line,
    ), line


# ---------------------------------------------------------------- summary


@pytest.mark.parametrize("name", ["resnet50", "cifar_resnet20", "plain18"])
def test_summary_json_contract(name: str) -> None:
    summary = summary_json(f"specs/{name}.yaml")
    assert summary["name"] == name
    assert isinstance(summary["params"], int) and isinstance(summary["macs"], int)
    assert summary["input_shape"] == ([3, 224, 224] if "cifar" not in name else [3, 32, 32])
    assert summary["output_shape"] == [10 if "cifar" in name else 1000]
    assert summary["layers"], "no layers"
    for row in summary["layers"]:
        assert {"name", "op", "output_shape", "params", "macs"} <= row.keys()
        assert isinstance(row["name"], str) and isinstance(row["op"], str)
        assert all(isinstance(d, int) and d > 0 for d in row["output_shape"])
        assert isinstance(row["params"], int) and isinstance(row["macs"], int)
    assert sum(row["params"] for row in summary["layers"]) == summary["params"]
    assert sum(row["macs"] for row in summary["layers"]) == summary["macs"]
    assert summary["layers"][-1]["output_shape"] == summary["output_shape"]
    compiled = compile_spec(SPECS / f"{name}.yaml").graph
    assert summary["params"] == compiled.graph["params"]
    assert [row["name"] for row in summary["layers"]] == [n for n in compiled if n != "input"]


def test_summary_text_table() -> None:
    result = run_cli("summary", "specs/resnet18.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "resnet18: input 3x224x224"
    assert lines[1].split() == [
        "name",
        "op",
        "output",
        "params",
        "MACs",
        "RF",
        "jump",
        "activation",
    ]
    assert lines[3].split() == [
        "conv1",
        "conv",
        "64x112x112",
        "9,408",
        "118,013,952",
        "7",
        "2",
        "3.06",
        "MiB",
    ]
    assert "layer2.0.downsample.0  conv" in result.stdout
    assert lines[-1].startswith(
        "total: 11,689,512 params, 1,814,073,344 MACs (1.81 GMACs), 8 blocks,"
    )


def test_set_n_18_gives_the_110_layer_network() -> None:
    summary = summary_json("specs/cifar_resnet.yaml", "--set", "n=18")
    weighted = [row for row in summary["layers"] if row["op"] in ("conv", "linear")]
    assert len(weighted) == 110
    assert summary["params"] == 1_727_962
    assert summary["blocks"] == 54


def test_set_a_field_by_its_path() -> None:
    summary = summary_json("specs/cifar_resnet.yaml", "--set", "stages.0.blocks=5")
    names = {row["name"] for row in summary["layers"]}
    assert "layer1.4.conv2" in names and "layer1.5.conv1" not in names
    assert "layer2.2.conv2" in names and "layer2.3.conv1" not in names
    assert summary["blocks"] == 5 + 3 + 3
    assert summary["params"] == 269_722 + 2 * (2 * 16 * 16 * 9 + 2 * 32)


def test_set_several_and_flow_style() -> None:
    summary = summary_json(
        "specs/resnet18.yaml",
        "--set",
        "head.classes=10",
        "--set",
        "input={channels: 1, height: 64, width: 64}",
    )
    assert summary["input_shape"] == [1, 64, 64]
    assert summary["output_shape"] == [10]
    rows = {row["name"]: row for row in summary["layers"]}
    assert rows["conv1"]["params"] == 64 * 1 * 7 * 7
    assert rows["layer4.1.relu"]["output_shape"] == [512, 2, 2]


# ---------------------------------------------------------------- graph


DOT_NODE = re.compile(r'^\s*("(?:[^"\\]|\\.)*") \[label=("(?:[^"\\]|\\.)*")\];$')
DOT_EDGE = re.compile(r'^\s*("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*");$')


@pytest.mark.parametrize("name", ["cifar_resnet20", "resnet50_v1_5"])
def test_graph_dot_has_every_node_and_edge(name: str) -> None:
    result = run_cli("graph", f"specs/{name}.yaml", "--format", "dot")
    assert result.returncode == 0, result.stderr
    graph = compile_spec(SPECS / f"{name}.yaml").graph
    lines = result.stdout.splitlines()
    assert lines[0] == f'digraph "{name}" {{' and lines[-1] == "}"
    nodes = {}
    edges = set()
    for line in lines:
        if match := DOT_NODE.match(line):
            nodes[json.loads(match[1])] = json.loads(match[2])
        elif match := DOT_EDGE.match(line):
            edges.add((json.loads(match[1]), json.loads(match[2])))
    assert set(nodes) == set(graph.nodes)
    assert edges == set(graph.edges)
    assert nodes["layer1.0.conv1"].startswith("layer1.0.conv1\nconv ")
    # DOT's line break in a label is the two characters \n; \\n would show a backslash
    assert '[label="layer1.0.conv1\\nconv ' in result.stdout
    clusters = re.findall(r'subgraph "cluster_([^"]+)"', result.stdout)
    assert clusters == list(graph.graph["blocks"])
    assert result.stdout.count("{") == result.stdout.count("}")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graph_dot_renders_with_graphviz(tmp_path: Path) -> None:
    out = tmp_path / "g.dot"
    assert run_cli("graph", "specs/cifar_resnet20.yaml", "-o", str(out)).returncode == 0
    rendered = subprocess.run(
        ["dot", "-Tsvg", str(out)], capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "<svg" in rendered.stdout


def test_graph_mermaid_has_every_node_and_edge() -> None:
    result = run_cli("graph", "specs/cifar_resnet20.yaml", "--format", "mermaid")
    assert result.returncode == 0, result.stderr
    graph = compile_spec(SPECS / "cifar_resnet20.yaml").graph
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"

    def ident(name: str) -> str:
        return "n_" + re.sub(r"\W", "_", name)

    assert len({ident(n) for n in graph}) == graph.number_of_nodes()
    declared = dict(re.findall(r'^\s*(n_\w+)\["([^"]*)"\]$', result.stdout, re.M))
    assert set(declared) == {ident(n) for n in graph}
    for name in graph:
        assert declared[ident(name)].startswith(f"{name}<br/>{graph.nodes[name]['op']} ")
    edges = set(re.findall(r"^\s*(n_\w+) --> (n_\w+)$", result.stdout, re.M))
    assert edges == {(ident(a), ident(b)) for a, b in graph.edges}
    assert result.stdout.count("subgraph ") == result.stdout.count("\n  end\n")


def test_graph_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "g.mmd"
    result = run_cli("graph", "specs/cifar_resnet20.yaml", "--format", "mermaid", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text().startswith("flowchart TD\n")
    assert [p.name for p in out.parent.iterdir()] == ["g.mmd"]  # no temp file left behind


# ---------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """`resgraph schema`, parsed."""
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_schema_structure(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert {
        "name",
        "input",
        "stages",
        "head",
        "shortcut",
        "params",
        "extends",
        "block_types",
    } <= schema["properties"].keys()
    assert schema["else"] == {"required": ["name", "input", "stages", "head"]}
    refs = set(re.findall(r'"#/\$defs/(\w+)"', json.dumps(schema)))
    assert refs <= schema["$defs"].keys()


def test_schema_is_valid_json_schema_and_accepts_every_shipped_spec(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SHIPPED:
        raw = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(raw)) == [], path.name
        merged = load_spec(path).data
        assert list(validator.iter_errors(merged)) == [], path.name


def test_schema_rejects_what_the_language_rejects(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    spec = yaml.safe_load((SPECS / "resnet18.yaml").read_text())
    assert validator.is_valid(spec)
    assert not validator.is_valid({**spec, "stagez": []})
    assert not validator.is_valid({k: v for k, v in spec.items() if k != "head"})
    assert not validator.is_valid({**spec, "shortcut": "D"})
    assert not validator.is_valid(
        {**spec, "stem": [{"conv": {"out": 64, "kernel": 7, "strid": 2}}]}
    )
    assert not validator.is_valid({**spec, "stem": [{"conv": {"out": 64}}]})
    assert validator.is_valid({"extends": "resnet18.yaml", "name": "thin"})


# ---------------------------------------------------------------- process-level


def test_front_end_commands_never_import_torch() -> None:
    code = """
import runpy, sys
for argv in ({commands}):
    sys.argv = ["resgraph", *argv]
    try:
        runpy.run_module("resgraph", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
heavy = sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules)
assert not heavy, heavy
print("clean")
"""
    commands = [
        ["validate", "specs/resnet152.yaml", "specs/cifar_resnet20.yaml"],
        ["summary", "specs/resnet50.yaml", "--json"],
        ["summary", "specs/resnet18.yaml"],
        ["graph", "specs/resnet18.yaml", "--format", "dot"],
        ["graph", "specs/resnet18.yaml", "--format", "mermaid"],
        ["schema"],
        ["compile", "--check", "specs/resnet152.yaml"],
        ["diff", "specs/resnet50.yaml", "specs/resnet50_v1_5.yaml"],
        ["sweep", "specs/cifar_resnet.yaml", "--set", "n=3,5"],
        ["evaluate", "--help"],
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code.format(commands=repr(commands))],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.rstrip().endswith("clean")


@pytest.mark.skipif(shutil.which("resgraph") is None, reason="the console script is not installed")
def test_installed_console_script() -> None:
    script = shutil.which("resgraph")
    assert script is not None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RESGRAPH_DEBUG", None)
    result = subprocess.run(
        [script, "validate", "specs/resnet18.yaml", "specs/cifar_resnet56.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("specs/cifar_resnet56.yaml: ok (")
    bad = subprocess.run(
        [script, "validate", "specs/resnet18.yaml", "--set", "nn=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1
    # this checkout's message (naming the spec), so the script ran this checkout's code
    assert bad.stderr.startswith("specs/resnet18.yaml: --set nn=1: nn: no such parameter")
    usage = subprocess.run(
        [script, "frobnicate"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: resgraph")


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"resgraph \d+\.\d+\.\d+\n", result.stdout)


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_max_nodes_must_be_positive(value: str) -> None:
    result = run_cli("validate", "specs/resnet18.yaml", "--max-nodes", value)
    assert result.returncode == 2 and "argument --max-nodes" in result.stderr
