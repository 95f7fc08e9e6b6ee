"""The paper's and torchvision's numbers from the shipped specs: params, MACs, names, shapes."""

from __future__ import annotations

import pytest
from conftest import SPECS

from resgraph.pipeline import Compiled, compile_spec

IMAGENET_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet50_v1_5": 25_557_032,
    "resnet101_v1_5": 44_549_160,
    "resnet152_v1_5": 60_192_808,
}
PAPER_MACS = {  # Table 1 of the paper, and torchvision's figures for v1.5
    "resnet18": 1.8e9,
    "resnet34": 3.6e9,
    "resnet50": 3.8e9,
    "resnet101": 7.6e9,
    "resnet152": 11.3e9,
    "resnet50_v1_5": 4.09e9,
    "resnet101_v1_5": 7.80e9,
    "resnet152_v1_5": 11.51e9,
}
EXACT_MACS = {  # DESIGN.md, counted from the Caffe prototxts and torchvision
    "resnet50": 3_857_973_248,
    "resnet101": 7_570_194_432,
    "resnet152": 11_282_415_616,
    "resnet50_v1_5": 4_089_184_256,
    "resnet101_v1_5": 7_801_405_440,
    "resnet152_v1_5": 11_513_626_624,
}
V1_5_EXTRA_MACS_PER_STAGE = 77_070_336
CIFAR_PARAMS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
    1202: 19_421_274,
}
CIFAR_N = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
IMAGENET_BLOCKS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}


def compiled(name: str) -> Compiled:
    """Compile a shipped spec by its name."""
    return compile_spec(SPECS / f"{name}.yaml")


def stage_outputs(result: Compiled) -> list[tuple[int, ...]]:
    """The output shape of each stage: that of the last node of its last block."""
    graph = result.graph
    shapes = []
    for _, blocks in graph.graph["stages"]:
        last = [
            data["shape"] for _, data in graph.nodes(data=True) if data.get("block") == blocks[-1]
        ]
        shapes.append(last[-1])
    return shapes


def block_macs(result: Compiled, block: str) -> int:
    """MACs of every node of one block, its shortcut included."""
    return sum(
        data["macs"] for _, data in result.graph.nodes(data=True) if data.get("block") == block
    )


@pytest.mark.parametrize(("name", "params"), IMAGENET_PARAMS.items())
def test_imagenet_params_match_torchvision_exactly(name: str, params: int) -> None:
    assert compiled(name).graph.graph["params"] == params


@pytest.mark.parametrize(("name", "macs"), PAPER_MACS.items())
def test_imagenet_macs_within_two_percent_of_the_paper(name: str, macs: float) -> None:
    assert compiled(name).graph.graph["macs"] == pytest.approx(macs, rel=0.02)


@pytest.mark.parametrize(("name", "macs"), EXACT_MACS.items())
def test_bottleneck_macs_are_exact(name: str, macs: int) -> None:
    assert compiled(name).graph.graph["macs"] == macs


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_v1_5_adds_the_same_macs_in_the_first_block_of_each_downsampling_stage(depth: int) -> None:
    paper, v1_5 = compiled(f"resnet{depth}"), compiled(f"resnet{depth}_v1_5")
    assert paper.graph.graph["blocks"].keys() == v1_5.graph.graph["blocks"].keys()
    extra = {
        block: block_macs(v1_5, block) - block_macs(paper, block)
        for block in paper.graph.graph["blocks"]
    }
    expected = {block: 0 for block in extra}
    expected.update(
        {
            "layer2.0": V1_5_EXTRA_MACS_PER_STAGE,
            "layer3.0": V1_5_EXTRA_MACS_PER_STAGE,
            "layer4.0": V1_5_EXTRA_MACS_PER_STAGE,
        }
    )
    assert extra == expected
    assert v1_5.graph.graph["macs"] - paper.graph.graph["macs"] == 3 * V1_5_EXTRA_MACS_PER_STAGE


@pytest.mark.parametrize(("layers", "params"), CIFAR_PARAMS.items())
def test_cifar_params_are_exact(layers: int, params: int) -> None:
    result = compiled(f"cifar_resnet{layers}")
    assert result.graph.graph["params"] == params
    assert result.plan.params == {"n": CIFAR_N[layers]}
    convs_and_fc = [n for n, d in result.graph.nodes(data=True) if d["op"] in ("conv", "linear")]
    assert len(convs_and_fc) == layers  # 6n+2 weighted layers: option A adds none


@pytest.mark.parametrize(
    ("layers", "rounded"),
    [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)],
)
def test_cifar_params_round_to_table_6(layers: int, rounded: float) -> None:
    params = compiled(f"cifar_resnet{layers}").graph.graph["params"] / 1e6
    digits = len(str(rounded).split(".")[1])
    assert round(params, digits) == rounded


def test_the_cifar_family_spec_is_resnet20_by_default() -> None:
    assert compiled("cifar_resnet").graph.graph["params"] == CIFAR_PARAMS[20]


@pytest.mark.parametrize("layers", [20, 32, 44, 56])
def test_cifar_plain_nets_equal_their_option_a_counterparts(layers: int) -> None:
    plain, residual = compiled(f"cifar_plain{layers}"), compiled(f"cifar_resnet{layers}")
    assert plain.graph.graph["params"] == residual.graph.graph["params"] == CIFAR_PARAMS[layers]
    assert plain.graph.graph["macs"] == residual.graph.graph["macs"]
    ops = {data["op"] for _, data in plain.graph.nodes(data=True)}
    assert "add" not in ops and "zero_pad" not in ops
    residual_ops = [d["op"] for _, d in residual.graph.nodes(data=True)]
    assert residual_ops.count("add") == 3 * CIFAR_N[layers]
    assert residual_ops.count("zero_pad") == 2  # only where a stage changes width


@pytest.mark.parametrize("depth", [18, 34])
def test_imagenet_plain_nets_are_resnets_without_their_projections(depth: int) -> None:
    plain, residual = compiled(f"plain{depth}"), compiled(f"resnet{depth}")
    projections = sum(
        data["params"] for name, data in residual.graph.nodes(data=True) if ".downsample." in name
    )
    assert projections > 0
    assert plain.graph.graph["params"] == residual.graph.graph["params"] - projections
    assert {n for n in plain.graph if ".downsample" in n} == set()


def torchvision_names(block: str, blocks: list[int]) -> set[str]:
    """The weighted module names of torchvision's resnet: conv1, bn1, layerI.J.convK, ..., fc."""
    convs = 2 if block == "basic" else 3
    names = {"conv1", "bn1", "fc"}
    for i, count in enumerate(blocks, start=1):
        for j in range(count):
            for k in range(1, convs + 1):
                names |= {f"layer{i}.{j}.conv{k}", f"layer{i}.{j}.bn{k}"}
        if i > 1 or block == "bottleneck":  # torchvision projects where shape changes
            names |= {f"layer{i}.0.downsample.0", f"layer{i}.0.downsample.1"}
    return names


@pytest.mark.parametrize(
    "name", [*IMAGENET_BLOCKS, "resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5"]
)
def test_weighted_layers_have_torchvision_names(name: str) -> None:
    block, blocks = IMAGENET_BLOCKS[name.removesuffix("_v1_5")]
    graph = compiled(name).graph
    weighted = {n for n, data in graph.nodes(data=True) if data["params"] > 0}
    assert weighted == torchvision_names(block, blocks)
    assert graph.nodes["layer2.0.downsample.0"]["op"] == "conv"
    assert graph.nodes["layer2.0.downsample.1"]["op"] == "bn"
    assert graph.nodes["fc"]["op"] == "linear"


@pytest.mark.parametrize("name", IMAGENET_PARAMS)
def test_imagenet_stage_outputs_are_56_28_14_7(name: str) -> None:
    result = compiled(name)
    expansion = 4 if IMAGENET_BLOCKS[name.removesuffix("_v1_5")][0] == "bottleneck" else 1
    widths = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
    assert stage_outputs(result) == [
        (w, s, s) for w, s in zip(widths, [56, 28, 14, 7], strict=True)
    ]
    assert result.graph.nodes["conv1"]["shape"] == (64, 112, 112)
    assert result.graph.nodes["maxpool"]["shape"] == (64, 56, 56)
    assert result.graph.nodes["fc"]["shape"] == (1000,)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet110", "cifar_plain56"])
def test_cifar_stage_outputs_are_32_16_8(name: str) -> None:
    result = compiled(name)
    assert stage_outputs(result) == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert result.graph.nodes["fc"]["shape"] == (10,)


def test_v1_5_moves_the_stride_to_the_3x3_conv() -> None:
    paper, v1_5 = compiled("resnet50").graph, compiled("resnet50_v1_5").graph
    assert paper.nodes["layer2.0.conv1"]["attrs"]["stride"] == 2
    assert paper.nodes["layer2.0.conv2"]["attrs"]["stride"] == 1
    assert v1_5.nodes["layer2.0.conv1"]["attrs"]["stride"] == 1
    assert v1_5.nodes["layer2.0.conv2"]["attrs"]["stride"] == 2
    assert paper.nodes["layer2.0.conv1"]["shape"] == (128, 28, 28)
    assert v1_5.nodes["layer2.0.conv1"]["shape"] == (128, 56, 56)


def _readme_table() -> list[tuple[str, int, int]]:
    """(spec, parameters, MACs) from every row of the README's table of the paper's numbers."""
    text = (SPECS.parent / "README.md").read_text(encoding="utf-8")
    table = text.split("| spec | parameters | MACs |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        spec, params, macs = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows.append((spec, int(params.split()[0].replace(",", "")), int(macs.replace(",", ""))))
    return rows


def test_readme_table_is_what_the_cost_pass_counts() -> None:
    rows = _readme_table()
    assert len(rows) == 16
    for spec, params, macs in rows:
        graph = compiled(spec).graph
        assert (graph.graph["params"], graph.graph["macs"]) == (params, macs), spec


@pytest.mark.parametrize(
    ("spec", "params", "macs"),
    [
        ("preact_resnet18", 11_687_720, None),
        ("cifar_preact_resnet110", 1_727_962, None),
        ("se_resnet50", 28_088_024, 4_091_699_200),
    ],
)
def test_readme_numbers_beyond_the_paper(spec: str, params: int, macs: int | None) -> None:
    graph = compiled(spec).graph
    assert graph.graph["params"] == params
    assert macs is None or graph.graph["macs"] == macs
