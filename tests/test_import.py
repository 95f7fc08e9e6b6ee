"""`resgraph import` from PyTorch modules: idiomatic specs, exact counts, the same function.

References are torchvision's documented structure and counts (tests/torchvision_style.py,
DESIGN.md) and the shipped specs themselves (a generated module must import back to the
graph it came from), never the importer's own output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import resgraph
from bench.reference_resnet import reference
from resgraph.cli import main
from resgraph.importer import ImportFailure, import_graph
from resgraph.importer.source import run, shapes
from resgraph.importer.torch_reader import read_module
from resgraph.registry import list_models
from tests import torchvision_style

REPO = Path(__file__).resolve().parents[1]
SMALL = 64  # ImageNet specs are imported at 64x64: every layer still runs, 12x faster
INPUT_KEYS = ("channels", "height", "width")


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Trained-looking BN statistics and affine parameters and conv biases (SE's), so a
    misplaced BN or bias shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            if isinstance(m, torch.nn.BatchNorm2d):
                for tensor in (m.weight, m.bias, m.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return module.eval()


def small(name: str) -> tuple[int, int, int]:
    shape = resgraph.compile(name).network.input.shape
    return (shape[0], min(shape[1], SMALL), min(shape[2], SMALL))


def block_counts(network) -> list[int]:
    return [len(stage.blocks) for stage in network.stages]


SHIPPED = [name for name in list_models() if name != "cifar_resnet1202"]  # 1202: same as 110
# the function is compared on one spec per block type and shortcut kind (the others only
# differ in counts, which every spec checks): building and running modules is the slow part
FUNCTION_CHECKED = {
    "cifar_plain20",
    "cifar_preact_resnet110",
    "cifar_resnet20",
    "preact_resnet18",
    "resnet50_d",
    "resnext50_32x4d",
    "se_resnet50",
}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_module_imports_to_its_own_graph(name: str) -> None:
    shape = small(name)
    original = resgraph.compile(name, {"input": dict(zip(INPUT_KEYS, shape, strict=True))})
    module = randomize(original.to_module())
    imported = import_graph(read_module(module, shape, name), name)
    network = imported.network
    assert (network.params, network.macs) == (original.params, original.macs)
    assert block_counts(network) == block_counts(original.network)
    assert [node.name for node in network.nodes.values() if node.params] == [
        node.name for node in original.network.nodes.values() if node.params
    ]  # the same state_dict keys
    # library block types wherever the shipped spec's block is one in disguise
    assert ("block_types" in imported.spec) == (name == "se_resnet50")
    if name not in FUNCTION_CHECKED:
        return
    x = torch.randn(2, *shape)
    rebuilt = resgraph.compile(imported.text).to_module()
    rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in imported.weights.items()})
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), module(x), atol=1e-4, rtol=1e-4)


def test_the_fx_reader_computes_the_module() -> None:
    module = randomize(torchvision_style.resnet50(num_classes=7))
    graph = read_module(module, (3, 64, 64), "resnet50")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(run(graph, x), module(x), atol=1e-5)
    assert shapes(graph)[graph.output.name] == (7,)
    assert [op.module for op in graph.ops[:4]] == ["conv1", "bn1", "relu", "maxpool"]


TORCHVISION = {  # torchvision's documented parameters, DESIGN.md's MACs at 224x224
    "resnet18": (11_689_512, 1_814_073_344, "basic"),
    "resnet50": (25_557_032, 4_089_184_256, {"type": "bottleneck", "stride_on": "conv2"}),
}
V1_5 = {"type": "bottleneck", "stride_on": "conv2"}
LIBRARY_BLOCKS = {  # the library block each torchvision/timm-style network is
    "resnet34": "basic",
    "resnet101": V1_5,
    "resnext50_32x4d": V1_5 | {"params": {"groups": 32, "base_width": 4}},
    "wide_resnet50_2": V1_5 | {"params": {"base_width": 128}},
    "resnet50d": V1_5,  # timm's: deep stem, avg_down projections, nn.Identity at stride 1
}


@pytest.mark.parametrize("arch", sorted(LIBRARY_BLOCKS))
def test_reference_networks_import_to_library_blocks_and_their_own_counts(arch: str) -> None:
    module = randomize(reference(arch, num_classes=10))
    imported = import_graph(read_module(module, (3, 64, 64), arch), arch)
    assert imported.spec["block"] == LIBRARY_BLOCKS[arch]
    assert "block_types" not in imported.spec
    assert imported.network.params == sum(p.numel() for p in module.parameters())
    rebuilt = resgraph.compile(imported.text).to_module()
    rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in imported.weights.items()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), module(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_a_torchvision_style_module_imports_with_torchvisions_names_and_numbers(
    name: str, tmp_path: Path
) -> None:
    params, macs, block = TORCHVISION[name]
    spec, weights = tmp_path / f"{name}.yaml", tmp_path / f"{name}.pt"
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "resgraph",
            "import",
            f"tests.torchvision_style:{name}",
            "-o",
            str(spec),
            "--weights-out",
            str(weights),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert "computes the source's function" in status.stderr
    data = yaml.safe_load(spec.read_text())
    assert data["block"] == block
    assert data["shortcut"] == "B"
    assert [s["blocks"] for s in data["stages"]] == (
        [2, 2, 2, 2] if name == "resnet18" else [3, 4, 6, 3]
    )
    compiled = resgraph.compile(spec)
    assert (compiled.params, compiled.macs) == (params, macs)
    source = randomize(getattr(torchvision_style, name)())
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(source.state_dict())  # torchvision's own state_dict keys


def test_weights_out_reproduces_a_randomized_module(tmp_path: Path, monkeypatch) -> None:
    """The CLI's weights hold the module's own BN statistics: outputs agree to 1e-4."""
    source = randomize(torchvision_style.resnet18(num_classes=10), seed=3)
    monkeypatch.setattr(torchvision_style, "trained", lambda: source, raising=False)
    spec, weights = tmp_path / "r18.yaml", tmp_path / "r18.pt"
    assert (
        main(
            [
                "import",
                "tests.torchvision_style:trained",
                "--input",
                "3x48x48",
                "-o",
                str(spec),
                "--weights-out",
                str(weights),
            ]
        )
        == 0
    )
    module = resgraph.create_model(str(spec), weights=str(weights)).eval()
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(module(x), source(x), atol=1e-4, rtol=1e-4)


def test_option_a_of_the_cifar_reproduction_is_split_zero_padding() -> None:
    module = randomize(torchvision_style.cifar_resnet20())
    imported = import_graph(read_module(module, (3, 32, 32), "c20"), "c20")
    assert imported.spec["shortcut"] == {"option": "A", "zero_pad": "split"}
    assert imported.spec["block"] == "basic"
    assert imported.network.params == 269_722  # the paper's ResNet-20: 0.27M


class Concat(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), x], 1)


class Gelu(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class TwoBranches(torch.nn.Module):
    """Two convs of the input added, then a third: the add joins no shortcut chain."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 8, 1)
        self.c = torch.nn.Conv2d(3, 8, 5, padding=2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x) + self.b(x) + self.c(x)
        return self.fc(torch.flatten(self.pool(y), 1))


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (Concat(), "x: node 'cat' (cat): resgraph has no op for concatenation (torch.cat)"),
        (Gelu(), "x: node 'act' (nn.GELU): resgraph has no op for nn.GELU"),
        (
            TwoBranches(),
            "x: 'add_1' (add): an add that is not a residual block's (its inputs do not run "
            "back to one point along two chains)",
        ),
    ],
)
def test_what_the_language_cannot_say_is_one_line(module: torch.nn.Module, message: str) -> None:
    with pytest.raises(ImportFailure) as failure:
        import_graph(read_module(module, (3, 16, 16), "x"), "x")
    assert str(failure.value) == message


def test_cli_failures_are_one_line_and_write_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "net.yaml"
    cases = {
        "tests.test_import:Gelu": "tests.test_import:Gelu: node 'act' (nn.GELU): resgraph has no "
        "op for nn.GELU\n",
        "nowhere.at_all:f": "nowhere.at_all:f: cannot import nowhere.at_all: No module named "
        "'nowhere'\n",
        "tests.torchvision_style:nothing": "tests.torchvision_style:nothing: "
        "tests.torchvision_style has no attribute 'nothing'\n",
        "resnet50": "resnet50: name a .onnx file, a .prototxt file or a callable as "
        "package.module:function (e.g. torchvision.models:resnet50)\n",
    }
    for source, message in cases.items():
        assert main(["import", source, "-o", str(out)]) == 1
        assert capsys.readouterr().err == message
    assert (
        main(
            [
                "import",
                "tests.torchvision_style:resnet18",
                "--arg",
                "num_classes=x y",
                "-o",
                str(out),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith(
        "tests.torchvision_style:resnet18: calling it failed: TypeError: "
    )
    assert not out.exists()
