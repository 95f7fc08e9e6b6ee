"""The design-space specs against published numbers and references; `diff` and `sweep`."""

from __future__ import annotations

import csv
import importlib
import io
import json
from pathlib import Path

import pytest
import torch

from bench.reference_resnet import reference
from resgraph.backends.pytorch import build_module
from resgraph.design import diff, diff_text, parse_grid, parts, split_values, sweep
from resgraph.errors import SpecError
from resgraph.pipeline import compile_spec
from tests.conftest import SPECS, run_cli
from tests.test_pytorch_backend import _randomise_bn

# Exact counts; the published figures are 4.23e9 and 11.40e9 MACs, and timm
# lists resnet50d at 25,576,264 parameters.
DESIGN_SPECS = {
    "resnext50_32x4d": (25_028_904, 4_230_479_872),
    "wide_resnet50_2": (68_883_240, 11_398_021_120),
    "resnet50_d": (25_576_264, 4_328_824_832),
}
TORCHVISION_SPECS = ["resnext50_32x4d", "wide_resnet50_2"]
# timm nests the deep stem in a Sequential named conv1; the language names stem layers flat.
RESNET_D_STEM = {
    "conv1.0.": "conv1.",
    "conv1.1.": "bn1.",
    "conv1.3.": "conv2.",
    "conv1.4.": "bn2.",
    "conv1.6.": "conv3.",
    "bn1.": "bn3.",
}


def _renamed(key: str, prefixes: dict[str, str]) -> str:
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


# ---------------------------------------------------------------- the specs


@pytest.mark.parametrize("spec,expected", sorted(DESIGN_SPECS.items()))
def test_params_and_macs(spec: str, expected: tuple[int, int]) -> None:
    compiled = compile_spec(SPECS / f"{spec}.yaml")
    assert (compiled.graph.graph["params"], compiled.graph.graph["macs"]) == expected
    model = build_module(compiled)
    assert sum(p.numel() for p in model.parameters()) == expected[0]


@pytest.mark.parametrize("spec", TORCHVISION_SPECS)
def test_state_dict_and_function_match_torchvision(spec: str) -> None:
    theirs = reference(spec).eval()
    _randomise_bn(theirs)
    ours = importlib.import_module(f"generated.{spec}").build_model().eval()
    expected = theirs.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in expected.items()
    }
    assert list(ours.state_dict()) == list(expected)
    ours.load_state_dict(expected, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_resnet50_d_is_timms_resnet50d_with_flat_stem_names() -> None:
    theirs = reference("resnet50d").eval()
    _randomise_bn(theirs)
    ours = importlib.import_module("generated.resnet50_d").build_model().eval()
    weights = {_renamed(k, RESNET_D_STEM): v for k, v in theirs.state_dict().items()}
    assert list(weights) == list(ours.state_dict())
    ours.load_state_dict(weights, strict=True)
    x = torch.randn(2, 3, 65, 65)  # odd sizes: the ceil-mode pools see partial windows
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_resnet50_d_pools_only_where_it_downsamples() -> None:
    model = importlib.import_module("generated.resnet50_d").build_model()
    x = torch.randn(1, 64, 7, 7)
    torch.testing.assert_close(model.layer1[0].downsample[0](x), x)
    pooled = model.layer2[0].downsample[0](x)
    assert pooled.shape == (1, 64, 4, 4)
    torch.testing.assert_close(pooled[..., -1, -1], x[..., -1, -1])  # a 1x1 corner window


# ---------------------------------------------------------------- diff


def test_parts_add_up_to_the_totals() -> None:
    for path in sorted(SPECS.glob("*.yaml")):
        graph = compile_spec(path).graph
        found = parts(graph)
        assert sum(p.params for p in found) == graph.graph["params"], path.name
        assert sum(p.macs for p in found) == graph.graph["macs"], path.name


def test_diff_v1_5_moves_the_stride_and_adds_macs_only() -> None:
    result = run_cli("diff", "specs/resnet50.yaml", "specs/resnet50_v1_5.yaml", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["params_change"], report["macs_change"]) == (0, 231_211_008)
    stages = {p["name"]: p for p in report["parts"]}
    assert [p["name"] for p in report["parts"]] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "head",
    ]
    assert [stages[f"layer{i}"]["macs_change"] for i in range(1, 5)] == [0, *[77_070_336] * 3]
    assert all(
        stages[f"layer{i}"]["changes"] == {"stride_on": ["conv1", "conv2"]} for i in range(1, 5)
    )
    assert stages["stem"]["changes"] == stages["head"]["changes"] == {}

    text = run_cli("diff", "specs/resnet50.yaml", "specs/resnet50_v1_5.yaml").stdout
    assert "layer2: stride_on conv1 -> conv2" in text
    total = text.splitlines()[-1].split()
    assert total[:4] == ["total", "25,557,032", "25,557,032", "+0"]
    assert total[-2:] == ["+231,211,008", "(+6.0%)"]


def test_diff_cifar_depth_changes_only_block_counts() -> None:
    a = compile_spec(SPECS / "cifar_resnet20.yaml").graph
    b = compile_spec(SPECS / "cifar_resnet56.yaml").graph
    changes = {d.name: d.changes for d in diff(a, b)}
    assert changes == {
        "stem": {},
        "layer1": {"blocks": (3, 9)},
        "layer2": {"blocks": (3, 9)},
        "layer3": {"blocks": (3, 9)},
        "head": {},
    }
    assert "total    269,722   853,018  +583,296 (+216.3%)" in diff_text(a, b)


def test_diff_names_the_resnet_d_changes() -> None:
    a = compile_spec(SPECS / "resnet50_v1_5.yaml").graph
    b = compile_spec(SPECS / "resnet50_d.yaml").graph
    changes = {d.name: d.changes for d in diff(a, b)}
    assert changes["stem"]["layers"] == (
        "conv 7x7/2 64, bn, relu, maxpool 3x3/2",
        "conv 3x3/2 32, bn, relu, conv 3x3 32, bn, relu, conv 3x3 64, bn, relu, maxpool 3x3/2",
    )
    assert changes["layer2"] == {
        "shortcut": (
            "projection(conv+bn), identity",
            "projection(avgpool+conv+bn), identity",
        )
    }


def test_diff_reports_added_stages_and_block_type_changes(write_spec) -> None:
    deeper = write_spec(
        f"""
extends: {SPECS / "resnet18.yaml"}
name: resnet18_plus
stages:
  - {{blocks: 2, width: 64}}
  - {{blocks: 2, width: 128, stride: 2}}
  - {{blocks: 2, width: 256, stride: 2}}
  - {{blocks: 2, width: 512, stride: 2}}
  - {{name: extra, blocks: 1, width: 512, block: bottleneck}}
"""
    )
    a = compile_spec(SPECS / "resnet18.yaml").graph
    b = compile_spec(deeper).graph
    found = {d.name: d for d in diff(a, b)}
    assert found["extra"].a is None and found["extra"].b is not None
    text = diff_text(a, b)
    assert "extra: added (1 x bottleneck, width 512, output 2048x7x7)" in text
    assert "layer1:" not in text.split("\n\n")[1]
    assert found["head"].changes == {}  # the fc grows with its input, not with its spec
    b_to_a = {d.name: d.changes for d in diff(compile_spec(SPECS / "resnet50.yaml").graph, a)}
    assert b_to_a["layer1"]["block"] == ("bottleneck", "basic")
    assert not any(k.startswith("block.") for k in b_to_a["layer1"])


# ---------------------------------------------------------------- sweep


def test_sweep_text_matches_the_papers_cifar_counts() -> None:
    result = run_cli("sweep", "specs/cifar_resnet.yaml", "--set", "n=3,5,7,9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["n", "params", "MACs", "GMACs", "output", "stage", "outputs"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["3", "269,722"],
        ["5", "464,154"],
        ["7", "658,586"],
        ["9", "853,018"],
    ]
    assert all(line.endswith("16x32x32 32x16x16 64x8x8") for line in lines[1:])


def test_sweep_csv_is_the_cartesian_grid_with_errors_in_place() -> None:
    result = run_cli(
        "sweep",
        "specs/cifar_resnet.yaml",
        "--set",
        "n=0,1",
        "--set",
        "stages.0.width=16,24",
        "--format",
        "csv",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["n"], r["stages.0.width"]) for r in rows] == [
        ("0", "16"),
        ("0", "24"),
        ("1", "16"),
        ("1", "24"),
    ]
    assert all("blocks must be at least 1" in r["error"] and not r["params"] for r in rows[:2])
    assert rows[2]["params"] == "75290" and rows[2]["error"] == ""
    assert rows[3]["stage_shapes"] == "24x32x32 32x16x16 64x8x8"
    assert int(rows[3]["params"]) > int(rows[2]["params"])


def test_sweep_json_and_an_invalid_point_in_text(tmp_path: Path) -> None:
    result = run_cli(
        "sweep", "specs/resnet50.yaml", "--set", "input.height=224,32", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["grid"] == {"input.height": ["224", "32"]}
    first, second = report["points"]
    assert (first["params"], first["macs"], first["error"]) == (25_557_032, 3_857_973_248, None)
    assert first["stage_shapes"]["layer4"] == [2048, 7, 7]
    assert second["error"] is None and second["stage_shapes"]["layer4"] == [2048, 1, 7]

    result = run_cli("sweep", "specs/cifar_resnet.yaml", "--set", "n=2,x")
    assert result.returncode == 0, result.stderr
    bad = result.stdout.splitlines()[-1]
    assert bad.startswith("x  error: ") and "unknown name 'x'" in bad


def test_sweep_points_compile_like_compile_spec() -> None:
    points = sweep(SPECS / "cifar_resnet.yaml", {"n": ["2"], "shortcut": ["A", "B"]})
    expected = [
        compile_spec(SPECS / "cifar_resnet.yaml", ["n=2", f"shortcut={s}"]).graph.graph["params"]
        for s in "AB"
    ]
    assert [p.measured.params for p in points if p.measured] == expected
    assert expected[0] < expected[1]  # B's projections have weights, A's padding has none


def test_values_split_on_top_level_commas_only() -> None:
    assert split_values("3, 5,7") == ["3", "5", "7"]
    assert split_values("A,{option: A, zero_pad: split},B") == [
        "A",
        "{option: A, zero_pad: split}",
        "B",
    ]
    assert split_values("[1, 2],'a,b'") == ["[1, 2]", "'a,b'"]


@pytest.mark.parametrize(
    "settings,message",
    [
        (["n"], "expected NAME=V1,V2"),
        (["n=1", "n=2"], "set twice"),
        (["n=1,,2"], "empty value"),
        (["n=" + ",".join(map(str, range(40))), "m=" + ",".join(map(str, range(40)))], "1,600"),
    ],
)
def test_bad_grids_are_refused(settings: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_grid(settings)


@pytest.mark.parametrize(
    "args",
    [
        ("diff", "specs/resnet50.yaml", "specs/nope.yaml"),
        ("sweep", "specs/nope.yaml", "--set", "n=1,2"),
    ],
)
def test_a_missing_spec_is_one_line_and_exit_1(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "specs/nope.yaml: no such file"


def test_bad_grid_is_one_line_and_exit_1() -> None:
    result = run_cli("sweep", "specs/cifar_resnet.yaml", "--set", "n=1", "--set", "n=2")
    assert result.returncode == 1
    assert result.stderr.strip() == "--set n=2: 'n' is set twice; give all its values in one --set"
