"""Every mistake in a spec: one line `file:line:col: message`, exit 1, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli

WriteSpec = Callable[..., Path]

BASE = """\
name: net
input: {channels: 3, height: 32, width: 32}
shortcut: A
stem:
  - conv: {out: 16, kernel: 3}
  - bn
  - relu
block: basic
stages:
  - {blocks: 2, width: 16}
  - {blocks: 2, width: 32, stride: 2}
head: {classes: 10}
"""


def at(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first occurrence of `needle` in `text`."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def error_line(path: Path, *args: str, prefix: str | None = None) -> str:
    """Validate `path` through the real CLI and return its one error line, checking the basics."""
    result = run_cli("validate", str(path), *args, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    if prefix is not None:
        assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def expect(path: Path, where: tuple[int, int], *fragments: str, args: tuple[str, ...] = ()) -> None:
    """The error is at `path:line:col:` and mentions every fragment."""
    line = error_line(path, *args, prefix=f"{path}:{where[0]}:{where[1]}: ")
    for fragment in fragments:
        assert fragment in line, line


@dataclass(frozen=True)
class Case:
    """A broken spec, where its error must point (a needle in the text, or line and column), and
    fragments the one-line message must contain."""

    text: str | bytes
    where: str | tuple[int, int]
    fragments: tuple[str, ...]
    shift: int = 0  # columns from the start of the needle

    def position(self) -> tuple[int, int]:
        if isinstance(self.where, tuple):
            return self.where
        text = self.text if isinstance(self.text, str) else self.text.decode("latin-1")
        line, column = at(text, self.where)
        return line, column + self.shift


def case(text: str | bytes, where: str | tuple[int, int], *fragments: str, shift: int = 0) -> Case:
    return Case(text, where, fragments, shift)


def replaced(old: str, new: str, text: str = BASE) -> str:
    """BASE with one change, which must apply."""
    assert old in text
    return text.replace(old, new, 1)


def bomb() -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n" + BASE


USER_BLOCK = """\
block_types:
  mine:
    stride_on: conv1
    layers:
      - conv: {name: conv1, out: width, kernel: 3}
      - bn
      - relu
      - conv: {name: conv2, out: width, kernel: 3}
      - bn: {name: bn2}
      - add
      - relu
"""
MINE = replaced("block: basic", "block: mine") + USER_BLOCK
PROJECTION = (
    "shortcut:\n  option: B\n  projection:\n"
    "    - conv: {out: in_channels, kernel: 1, stride: stride}\n    - bn\n"
)
STEM_POOLS = "".join("  - maxpool: {kernel: 2, padding: 0}\n" for _ in range(4))
WITH_N = replaced("blocks: 2, width: 16", "blocks: n, width: 16") + "params: {n: 2}\n"

# Every case here goes through one `resgraph validate` run over all of them (a process each
# would cost ~0.4 s); the module's other tests run the CLI once per spec.
CASES: dict[str, Case] = {
    # YAML and files
    "yaml_syntax": case(
        replaced("width: 32}\n", "width: 32}}\n"), "}}\n", "YAML syntax error", shift=1
    ),
    "tab_indent": case(replaced("  - bn\n", "\t- bn\n"), "\t", "YAML syntax error", "tab"),
    "non_utf8": case(
        replaced("name: net", "name: net  # café").encode("latin-1"),
        "é",
        "not valid UTF-8 (byte 0xe9); save the file as UTF-8",
    ),
    "empty": case("", (1, 1), "the file is empty"),
    "only_comments": case("# nothing but a comment\n\n", (1, 1), "the file is empty"),
    "a_list": case("- conv\n- bn\n", (1, 1), "a spec must be a YAML mapping"),
    "duplicate_key": case(
        BASE + "shortcut: B\n", (13, 1), "duplicate key 'shortcut'", "first given at line 3"
    ),
    # a4 is the first anchor whose expansion (10^5 nodes) passes the cap
    "alias_bomb": case(bomb(), "&a4", "more than 50,000 nodes", "aliases"),
    # the root mapping is a level: the 32nd bracket is the 33rd level
    "deep_flow": case(
        "name: deep\nparams: " + "[" * 40 + "]" * 40 + "\n",
        (2, 9 + 31),
        "nested deeper than 32 levels",
    ),
    "deep_block": case(
        "name: deep\nparams:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(40)),
        (34, 65),
        "nested deeper than 32 levels",
    ),
    "python_tag_scalar": case(
        replaced("  - relu\n", "  - !!python/name:os.system relu\n"),
        "!!python",
        "could not determine a constructor",
    ),
    "python_tag_list": case(
        replaced("  - relu\n", "  - !!python/object/apply:os.system [echo pwned]\n"),
        "!!python",
        "the YAML tag",
        "is not allowed",
    ),
    # types and keys
    "wrong_type": case(
        replaced("channels: 3", "channels: three"), "three", "input.channels", "valid integer"
    ),
    "not_a_list": case(
        replaced(
            "stages:\n  - {blocks: 2, width: 16}\n  - {blocks: 2, width: 32, stride: 2}\n",
            "stages: 5\n",
        ),
        "5\n",
        "stages",
        "valid list",
    ),
    "blocks_float": case(
        replaced("blocks: 2,", "blocks: 1.5,"), "1.5", "stages.0.blocks", "expected an integer"
    ),
    "blocks_bool": case(
        replaced("blocks: 2,", "blocks: true,"), "true", "stages.0.blocks", "expected an integer"
    ),
    "unknown_key": case(
        replaced("width: 32, stride: 2", "width: 32, strid: 2"),
        "strid:",
        "unknown key 'strid' in stages.1 (did you mean 'stride'?)",
    ),
    "unknown_top_key": case(
        BASE + "shortcuts: B\n",
        "shortcuts:",
        "unknown key 'shortcuts' in spec (did you mean 'shortcut'?)",
    ),
    "unknown_op": case(
        replaced("  - conv: {out: 16", "  - comv: {out: 16"),
        "comv",
        "unknown key 'comv' in stem.0 (did you mean 'conv'?)",
    ),
    "unknown_layer_key": case(
        replaced("kernel: 3}", "kernel: 3, strde: 2}"),
        "strde",
        "unknown key 'strde' in stem.0.conv (did you mean 'stride'?)",
    ),
    "misspelt_required_key": case(
        replaced("kernel: 3}", "kernal: 3}"),
        "kernal",
        "unknown key 'kernal' in stem.0.conv (did you mean 'kernel'?)",
    ),
    "misspelt_required_head_key": case(
        replaced("head: {classes: 10}", "head: {clases: 10}"),
        "clases",
        "unknown key 'clases' in head (did you mean 'classes'?)",
    ),
    "two_ops": case(replaced("  - bn\n", "  - {bn: {}, relu: {}}\n"), "{bn", "a layer is one op"),
    "missing_key": case(
        replaced(", width: 32}", "}"), "{channels", "input: missing required key 'width'"
    ),
    "missing_layer_key": case(
        replaced("kernel: 3}", "stride: 1}"),
        "{out: 16",
        "stem.0.conv: missing required key 'kernel'",
    ),
    "missing_head": case(
        replaced("head: {classes: 10}\n", ""), (1, 1), "missing required key 'head'"
    ),
    "bad_option": case(
        replaced("shortcut: A", "shortcut: D"), "D\n", "shortcut.option", "'A', 'B', 'C' or 'none'"
    ),
    "no_stages": case(
        replaced(
            "stages:\n  - {blocks: 2, width: 16}\n  - {blocks: 2, width: 32, stride: 2}\n",
            "stages: []\n",
        ),
        "[]",
        "at least 1 item",
    ),
    # names and expressions: nothing a spec says is ever executed
    "code_in_name": case(
        replaced("name: net", "name: \"__import__('os').system('x')\""),
        '"__import__',
        "is not a valid name",
    ),
    "code_in_layer_name": case(
        replaced("  - bn\n", "  - bn: {name: 'x; import os'}\n"),
        "'x; import",
        "is not a valid name",
    ),
    "keyword_name": case(replaced("name: net", "name: lambda"), "lambda", "is not a valid name"),
    "injection_call": case(
        replaced("width: 16}", "width: \"__import__('os')\"}"),
        '"__import__',
        "stages.0.width",
        "__import__('os')",
        "is not allowed: only integers, names",
    ),
    "injection_attribute": case(
        replaced("width: 16}", "width: '().__class__'}"), "'()", "'().__class__'", "is not allowed"
    ),
    "injection_power": case(
        replaced("width: 16}", "width: '2 ** 100'}"), "'2 **", "'2 ** 100'", "is not allowed"
    ),
    "injection_comprehension": case(
        replaced("width: 16}", "width: '[x for x in n]'}"), "'[x", "is not allowed"
    ),
    "reserved_param": case("params: {width: 3}\n" + BASE, "width: 3", "'width' is reserved"),
    "unknown_name": case(
        replaced("blocks: n,", "blocks: m,", WITH_N),
        "m, width",
        "stages[0].blocks: unknown name 'm' in 'm' (known here: n)",
    ),
    "division_by_zero": case(
        replaced("width: 16", "width: 16 // 0"), "16 // 0", "division by zero"
    ),
    "overflow": case(
        replaced("width: 16", "width: n * n * n") + "params: {n: 1000000000}\n",
        "n * n * n",
        "overflows",
    ),
    # sizes
    "width_zero": case(
        replaced("width: 16", "width: 0"), "0}", "stages[0].width must be at least 1, got 0"
    ),
    "blocks_negative": case(
        replaced("blocks: 2,", "blocks: -1,"), "-1", "stages[0].blocks must be at least 1, got -1"
    ),
    "stride_zero": case(
        replaced("stride: 2", "stride: 0"), "0}", "stages[1].stride must be at least 1, got 0"
    ),
    "classes_zero": case(
        replaced("classes: 10", "classes: 0"), "0}", "head.classes must be at least 1"
    ),
    "out_expression_zero": case(
        replaced("out: 16", "out: 16 - 16"),
        "16 - 16",
        "out must be at least 1, got 0 (16 - 16 = 0)",
    ),
    "channels_negative": case(
        replaced("channels: 3", "channels: -3"), "-3", "input.channels", "greater than 0"
    ),
    "absurd_blocks": case(
        replaced("blocks: 2,", "blocks: 1000000000,"),
        "1000000000",
        "stages[0].blocks is 1,000,000,000; the limit is",
    ),
    "node_limit": case(
        replaced("blocks: 2,", "blocks: 500000,"),
        "500000",
        "over 250,000 graph nodes",
        "raise --max-nodes",
    ),
    # block types
    "unknown_block_type": case(
        replaced("block: basic", "block: basci"),
        "basci",
        "unknown block type 'basci' (did you mean 'basic'?)",
        "known: basic, bottleneck, plain_basic, plain_bottleneck",
    ),
    "unknown_block_param": case(
        replaced("block: basic", "block: {type: bottleneck, params: {expnsion: 2}}"),
        "expnsion",
        "has no parameter 'expnsion'",
        "did you mean 'expansion'?",
    ),
    "stride_on_missing": case(
        replaced("block: basic", "block: {type: basic, stride_on: conv9}"),
        "conv9",
        "layer1.0 (basic): stride_on names 'conv9', which is not "
        "a layer of the residual branch (layers: conv1, bn1, relu1, conv2, "
        "bn2)",
    ),
    "stride_on_bn": case(
        replaced("block: basic", "block: {type: basic, stride_on: bn1}"),
        "bn1}",
        "stride_on names 'bn1', a bn layer, which has no stride",
    ),
    "stride_on_in_block_type": case(
        replaced("stride_on: conv1", "stride_on: conv_1", MINE),
        "conv_1",
        "stride_on names 'conv_1'",
    ),
    "no_stride_on": case(
        replaced("    stride_on: conv1\n", "", MINE),
        "2}\nhead",
        "layer2.0 (mine): stride 2, but block type 'mine' has no stride_on",
    ),
    "built_in_block_error": case(
        replaced("block: basic", "block: {type: bottleneck, params: {base_width: 1}}"),
        "{blocks: 2, width: 16}",
        "layer1.0 (bottleneck): mid must be at least 1, got 0",
        "built-in block type 'bottleneck'",
    ),
    "two_adds": case(
        replaced("      - add\n", "      - add\n      - add: {name: add2}\n", MINE),
        "add: {name: add2}",
        "block type 'mine' has 2 adds",
    ),
    "duplicate_layer_name": case(
        replaced("- bn: {name: bn2}", "- bn: {name: conv1}", MINE),
        "conv1}\n      - add",
        "the name 'conv1' is used twice",
    ),
    "duplicate_stage_name": case(
        replaced("{blocks: 2, width: 32", "{name: layer1, blocks: 2, width: 32"),
        "- {blocks",
        "names must be unique",
    ),
    # shapes
    "add_spatial_mismatch": case(
        replaced(
            "width, kernel: 3}\n      - bn: {name: bn2}",
            "width, kernel: 3, padding: 0}\n      - bn: {name: bn2}",
            MINE,
        ),
        "add\n",
        "layer1.0 (mine): add: the residual branch gives 16x30x30 but the shortcut gives 16x32x32",
        "e.g. convs with padding (kernel - 1) // 2",
    ),
    "projection_channels": case(
        replaced("shortcut: A\n", PROJECTION),
        "- conv: {out: in_ch",
        "layer2.0 (basic): the projection shortcut gives 16 channels but "
        "the residual branch gives 32",
    ),
    "option_a_shrinks": case(
        replaced("width: 32, stride: 2", "width: 8, stride: 2"),
        "A\n",
        "layer2.0 (basic): option A pads channels with zeros, so it cannot "
        "take 16 channels down to 8; use shortcut B or C",
    ),
    "kernel_too_large": case(
        replaced(
            "height: 32, width: 32",
            "height: 8, width: 8",
            replaced("kernel: 3}", "kernel: 11, padding: 1}"),
        ),
        "conv: {out: 16",
        "kernel 11 is larger than its input (height 8, 10 padded)",
    ),
    # Sizes cannot reach zero: floor((H + 2p - k) / s) + 1 >= 1 once the kernel fits, so a map
    # that shrinks too far is caught at the layer whose kernel no longer fits.
    "size_runs_out": case(
        replaced(
            "height: 32, width: 32",
            "height: 8, width: 8",
            replaced("  - relu\n", "  - relu\n" + STEM_POOLS),
        ),
        (11, 5),
        "maxpool4 (maxpool): kernel 2 is larger than its input (height 1, 1 padded)",
    ),
    "head_named_like_its_pool": case(
        replaced("head: {classes: 10}", "head: {classes: 10, name: avgpool}"),
        "avgpool}",
        "stage and head names must be unique",
    ),
    "block_layer_named_like_the_shortcut": case(
        replaced(
            "stride_on: conv1",
            "stride_on: downsample",
            replaced("{name: conv1, out: width", "{name: downsample, out: width", MINE),
        ),
        "downsample, out: width",  # refused where it is written, before the graph is built
        "the name 'downsample' would shadow torch.nn.Module.downsample",
    ),
    "add_in_the_stem": case(
        replaced("  - bn\n", "  - add\n"),
        "add\n",
        "add: add joins a block's shortcut to its branch, so it belongs in a block type's layers",
    ),
    "add_in_the_head": case(
        replaced("head: {classes: 10}\n", "head:\n  classes: 10\n  layers:\n    - add\n"),
        "add\n",
        "add: add joins a block's shortcut",
    ),
    "add_in_a_projection": case(
        replaced("shortcut: A\n", "shortcut: {option: C, projection: [add]}\n"),
        "add]",
        "layer1.0.downsample.0: add joins a block's shortcut",
    ),
    "groups": case(
        replaced("kernel: 3}", "kernel: 3, groups: 5}"),
        "conv: {out: 16",
        "groups=5 must divide both its input channels (3) and out (16)",
    ),
}


@pytest.fixture(scope="module")
def batch(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
    """One `resgraph validate` run over every case: its result and each case's path."""
    folder = tmp_path_factory.mktemp("cases")
    paths = {}
    for name, item in CASES.items():
        paths[name] = folder / f"{name}.yaml"
        data = item.text.encode() if isinstance(item.text, str) else item.text
        paths[name].write_bytes(data)
    return run_cli("validate", *map(str, paths.values()), timeout=120), paths


def test_every_case_fails_with_one_line_and_no_traceback(batch) -> None:
    result, paths = batch
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert len(result.stderr.splitlines()) == len(paths)


@pytest.mark.parametrize("name", CASES)
def test_error_points_at_the_mistake(batch, name: str) -> None:
    result, paths = batch
    path = paths[name]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert len(lines) == 1, result.stderr
    line, column = CASES[name].position()
    assert lines[0].startswith(f"{path}:{line}:{column}: "), lines[0]
    for fragment in CASES[name].fragments:
        assert fragment in lines[0], lines[0]


def test_the_base_spec_is_valid(write_spec: WriteSpec) -> None:
    result = run_cli("validate", str(write_spec(BASE)), str(write_spec(MINE, "mine.yaml")))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["yaml_syntax", "unknown_key", "option_a_shrinks"])
def test_one_invalid_spec_alone(write_spec: WriteSpec, name: str) -> None:
    item = CASES[name]
    assert isinstance(item.text, str)
    line, column = item.position()
    expect(write_spec(item.text), (line, column), *item.fragments)


def test_nesting_that_used_to_overflow_the_c_stack(write_spec: WriteSpec) -> None:
    text = "name: deep\nparams: " + "[" * 100_000 + "]" * 100_000 + "\n"
    expect(write_spec(text), (2, 9 + 31), "nested deeper than 32 levels")


def test_eight_by_eight_with_many_stride_2_stages_is_valid(write_spec: WriteSpec) -> None:
    stages = "".join("  - {blocks: 1, width: 16, stride: 2}\n" for _ in range(5))
    text = replaced(
        "height: 32, width: 32",
        "height: 8, width: 8",
        replaced("  - {blocks: 2, width: 32, stride: 2}\n", stages),
    )
    result = run_cli("summary", str(write_spec(text)), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row["output_shape"] for row in json.loads(result.stdout)["layers"]}
    assert rows["layer3.0.relu"] == [16, 2, 2]
    assert rows["layer4.0.relu"] == rows["layer6.0.relu"] == [16, 1, 1]


# ---------------------------------------------------------------- extends


def test_missing_extends_file(write_spec: WriteSpec) -> None:
    text = "extends: nope.yaml\n" + BASE
    expect(write_spec(text), at(text, "nope.yaml"), "extends 'nope.yaml'", "does not exist")


def test_extends_cycle(write_spec: WriteSpec) -> None:
    first = write_spec("extends: b.yaml\nname: a\n", "a.yaml")
    second = write_spec("extends: a.yaml\nname: b\n", "b.yaml")
    line = error_line(first, prefix=f"{second}:1:10: ")
    assert "extends cycle: a.yaml -> b.yaml -> a.yaml" in line


def test_extends_itself(write_spec: WriteSpec) -> None:
    path = write_spec("extends: spec.yaml\n" + BASE)
    expect(path, (1, 10), "extends cycle: spec.yaml -> spec.yaml")


def test_error_in_a_parent_points_into_the_parent(write_spec: WriteSpec) -> None:
    parent = write_spec(WITH_N, "family.yaml")
    child = write_spec("extends: family.yaml\nname: child\nparams: {n: 0}\n", "child.yaml")
    line, column = at(WITH_N, "n, width")
    message = error_line(child, prefix=f"{parent}:{line}:{column}: ")
    assert "stages[0].blocks must be at least 1, got 0 (n = 0)" in message


# ---------------------------------------------------------------- --set and --max-nodes


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("n", "expected NAME=VALUE"),
        ("nn=3", "nn: no such parameter or field (did you mean 'n'?); parameters: n"),
        ("stages.7.blocks=3", "stages.7: index 7 out of range (the list has 2)"),
        ("stages.x.blocks=3", "stages.x: a list position must be a number"),
        ("stages.0.strid=2", "unknown key 'strid' in stages.0 (did you mean 'stride'?)"),
        ("n=abc", "params.n: unknown name 'abc'"),
        ("input.channels=0", "input.channels: Input should be greater than 0"),
    ],
)
def test_bad_set_names_the_spec_and_the_override(
    write_spec: WriteSpec, override: str, fragment: str
) -> None:
    path = write_spec(WITH_N)
    message = error_line(path, "--set", override, prefix=f"{path}: --set {override}: ")
    assert fragment in message, message


def test_a_set_value_wrong_where_it_is_used_points_at_the_use(write_spec: WriteSpec) -> None:
    expect(
        write_spec(WITH_N),
        at(WITH_N, "n, width"),
        "stages[0].blocks must be at least 1, got 0 (n = 0)",
        args=("--set", "n=0"),
    )


def test_max_nodes_is_configurable(write_spec: WriteSpec) -> None:
    text = replaced("blocks: 2,", "blocks: 100,")
    path = write_spec(text)
    expect(path, at(text, "100"), "over 500 graph nodes", args=("--max-nodes", "500"))
    assert run_cli("validate", str(path), "--max-nodes", "2000").returncode == 0


def test_summary_and_graph_report_errors_the_same_way(write_spec: WriteSpec) -> None:
    text = CASES["unknown_key"].text
    assert isinstance(text, str)
    path = write_spec(text)
    line, col = at(text, "strid:")
    for args in (
        ["summary", str(path)],
        ["summary", str(path), "--json"],
        ["graph", str(path), "--format", "mermaid"],
    ):
        result = run_cli(*args)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith(f"{path}:{line}:{col}: unknown key 'strid'")
        assert len(result.stderr.splitlines()) == 1


def test_missing_file() -> None:
    result = run_cli("validate", "no/such/spec.yaml")
    assert result.returncode == 1
    assert result.stderr == "no/such/spec.yaml: no such file\n"


def test_a_directory_is_not_a_spec(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"{tmp_path}: is a directory, not a spec file\n"


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("frobnicate",),
        ("validate",),
        ("validate", "--bogus", "specs/resnet18.yaml"),
        ("validate", "--max-nodes", "many", "specs/resnet18.yaml"),
        ("graph", "--format", "png", "specs/resnet18.yaml"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage: resgraph" in result.stderr
    assert "Traceback" not in result.stderr
