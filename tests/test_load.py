"""resgraph.load: located YAML, the guards against hostile input, extends and --set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from resgraph import load
from resgraph.errors import Location, SpecError

WriteSpec = Callable[..., Path]
TEXT = "name: x\ninput: {channels: 3, height: 32}\nstages:\n  - {blocks: 2}\n  - blocks: 3\n"


def test_every_value_and_key_is_located() -> None:
    doc = load.parse_yaml(TEXT, "f.yaml")
    assert doc.data == {
        "name": "x",
        "input": {"channels": 3, "height": 32},
        "stages": [{"blocks": 2}, {"blocks": 3}],
    }
    assert doc.values[()] == Location("f.yaml", 1, 1)
    assert doc.values[("input", "height")] == Location("f.yaml", 2, 30)
    assert doc.values[("stages", 1, "blocks")] == Location("f.yaml", 5, 13)
    assert doc.keys[("input", "height")] == Location("f.yaml", 2, 22)
    assert doc.keys[("stages", 1, "blocks")] == Location("f.yaml", 5, 5)


def test_locate_falls_back_to_the_deepest_known_part() -> None:
    doc = load.parse_yaml(TEXT, "f.yaml")
    assert doc.locate(("stages", 1, "blocks", "more")) == Location("f.yaml", 5, 13)
    assert doc.locate(("stages", 7)) == Location("f.yaml", 4, 3)
    assert doc.locate(("nothing",)) == Location("f.yaml", 1, 1)
    assert doc.locate_key(("stages", 0, "blocks")) == Location("f.yaml", 4, 6)
    assert doc.locate_key(("stages", 0)) == Location("f.yaml", 4, 5)  # no key: its value
    assert str(Location("f.yaml", 5, 13)) == "f.yaml:5:13"
    assert str(Location("f.yaml")) == "f.yaml"


def test_merge_keys_are_flattened() -> None:
    doc = load.parse_yaml("base: &b {channels: 3, height: 8}\ninput: {<<: *b, width: 8}\n", "f")
    assert doc.data["input"] == {"channels": 3, "height": 8, "width": 8}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: 1\na: 2\n", (2, 1), "duplicate key 'a' (first given at line 1)"),
        ("1: x\n", (1, 1), "mapping key 1 must be a name, not a int"),
        ("? [a, b]\n: 1\n", (1, 3), "mapping keys must be plain names"),
        ("a: !!python/name:os.system x\n", (1, 4), "could not determine a constructor"),
        ("a: !!set {x}\n", (1, 4), "the YAML tag 'tag:yaml.org,2002:set' is not allowed"),
        ("a: [1, 2\n", (2, 1), "YAML syntax error"),
        ("", (1, 1), "the file is empty"),
    ],
)
def test_parse_errors_are_located(text: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(SpecError) as info:
        load.parse_yaml(text, "f.yaml")
    assert info.value.location == Location("f.yaml", *where)
    assert message in info.value.message


def test_alias_expansion_is_counted_before_building() -> None:
    anchors = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1]"]
    anchors += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]" for i in range(1, 8)]
    text = "\n".join(anchors) + "\n"
    with pytest.raises(SpecError, match="more than 50,000 nodes"):
        load.parse_yaml(text, "f.yaml")
    small = "a: &a [1, 2]\nb: [*a, *a]\n"
    assert load.parse_yaml(small, "f.yaml").data == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


def test_nesting_limit_counts_the_root() -> None:
    ok = "a: " + "[" * (load.MAX_DEPTH - 1) + "]" * (load.MAX_DEPTH - 1) + "\n"
    assert load.parse_yaml(ok, "f.yaml").data["a"] is not None
    deep = "a: " + "[" * load.MAX_DEPTH + "]" * load.MAX_DEPTH + "\n"
    with pytest.raises(SpecError, match="nested deeper than 32 levels"):
        load.parse_yaml(deep, "f.yaml")


def test_read_text_guards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 10)
    monkeypatch.setattr(load, "MAX_FILE_BYTES", 20)
    with pytest.raises(SpecError, match="over 20 bytes; a spec file is limited to 20"):
        load.read_text(big)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(SpecError) as info:
        load.read_text(bad)
    assert info.value.location == Location(str(bad), 2, 4)
    assert "not valid UTF-8 (byte 0xff)" in info.value.message
    with pytest.raises(SpecError, match="no such file"):
        load.read_text(tmp_path / "missing.yaml")


def test_a_spec_is_a_mapping(write_spec: WriteSpec) -> None:
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load.load_file(write_spec("- a\n"))


# ---------------------------------------------------------------- extends


def test_extends_merges_mappings_and_replaces_everything_else(write_spec: WriteSpec) -> None:
    write_spec(
        "name: base\ninput: {channels: 3, height: 32, width: 32}\n"
        "stages:\n  - {blocks: 1}\n  - {blocks: 2}\nhead: {classes: 10, name: fc}\n",
        "base.yaml",
    )
    child = write_spec(
        "extends: base.yaml\nname: child\ninput: {height: 64}\n"
        "stages:\n  - {blocks: 5}\nhead: {classes: 100}\n",
        "child.yaml",
    )
    doc = load.load_spec(child)
    assert doc.data == {
        "name": "child",
        "input": {"channels": 3, "height": 64, "width": 32},
        "stages": [{"blocks": 5}],
        "head": {"classes": 100, "name": "fc"},
    }
    assert list(doc.data) == ["name", "input", "stages", "head"]


def test_extends_keeps_each_value_located_in_its_own_file(write_spec: WriteSpec) -> None:
    base = write_spec("name: base\ninput: {channels: 3, height: 32, width: 32}\n", "base.yaml")
    child = write_spec("extends: base.yaml\nname: child\ninput: {height: 64}\n", "child.yaml")
    doc = load.load_spec(child)
    assert doc.locate(("input", "height")) == Location(str(child), 3, 17)
    assert doc.locate(("input", "width")) == Location(str(base), 2, 41)
    assert doc.locate_key(("input", "channels")) == Location(str(base), 2, 9)
    assert doc.locate(("name",)) == Location(str(child), 2, 7)
    assert doc.locate(()) == Location(str(child), 1, 1)


def test_extends_chains_through_folders(tmp_path: Path) -> None:
    (tmp_path / "family").mkdir()
    (tmp_path / "family" / "root.yaml").write_text("name: root\nparams: {n: 1, k: 2}\n")
    (tmp_path / "mid.yaml").write_text("extends: family/root.yaml\nname: mid\nparams: {n: 3}\n")
    (tmp_path / "leaf").mkdir()
    leaf = tmp_path / "leaf" / "leaf.yaml"
    leaf.write_text("extends: ../mid.yaml\nname: leaf\n")
    doc = load.load_spec(leaf)
    assert doc.data == {"name": "leaf", "params": {"n": 3, "k": 2}}
    assert doc.locate(("params", "k")).file == str(tmp_path / "family" / "root.yaml")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "extends must be a path to another spec file"),
        ("''", "extends must be a path to another spec file"),
        ("missing.yaml", "extends 'missing.yaml', but"),
        ("spec.yaml", "extends cycle: spec.yaml -> spec.yaml"),
    ],
)
def test_bad_extends(write_spec: WriteSpec, value: str, message: str) -> None:
    path = write_spec(f"name: x\nextends: {value}\n")
    with pytest.raises(SpecError) as info:
        load.load_spec(path)
    assert info.value.location == Location(str(path), 2, 10)
    assert message in info.value.message


def test_extends_cycle_through_three_files(write_spec: WriteSpec) -> None:
    write_spec("extends: b.yaml\n", "a.yaml")
    write_spec("extends: c.yaml\n", "b.yaml")
    c = write_spec("extends: a.yaml\n", "c.yaml")
    with pytest.raises(SpecError) as info:
        load.load_spec(c.parent / "a.yaml")
    assert info.value.message == "extends cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml"
    assert info.value.location == Location(str(c), 1, 10)


# ---------------------------------------------------------------- --set


def overridden(*overrides: str) -> load.Document:
    doc = load.parse_yaml(
        "name: x\nparams: {n: 3}\nstages:\n  - {blocks: n, width: 16}\nhead: {classes: 10}\n",
        "f.yaml",
    )
    return load.apply_overrides(doc, overrides)


def test_set_a_parameter() -> None:
    doc = overridden("n=18")
    assert doc.data["params"] == {"n": 18}
    assert doc.values[("params", "n")] == Location("f.yaml", via="--set n=18")


def test_set_a_field_path_with_yaml_values() -> None:
    doc = overridden(
        "stages.0.blocks=5",
        "head.classes=100",
        "stages.0.stride=2",
        "head={classes: 7, name: out}",
        "stages.0.width= 2 * n",
    )
    assert doc.data["stages"] == [{"blocks": 5, "width": "2 * n", "stride": 2}]
    assert doc.data["head"] == {"classes": 7, "name": "out"}
    assert ("head", "classes") not in doc.values  # locations of the replaced subtree are gone
    assert doc.values[("head",)].via == "--set head={classes: 7, name: out}"


def test_set_creates_sections_the_spec_leaves_to_defaults() -> None:
    doc = overridden("init.zero_init_residual=true", "stages.0.shortcut.option=B")
    assert doc.data["init"] == {"zero_init_residual": True}
    assert doc.data["stages"][0]["shortcut"] == {"option": "B"}
    assert doc.values[("init", "zero_init_residual")].via == "--set init.zero_init_residual=true"


def test_a_name_that_is_both_a_parameter_and_a_field_is_the_parameter() -> None:
    doc = load.apply_overrides(
        load.parse_yaml("name: x\nparams: {name: 3}\n", "f.yaml"), ["name=4"]
    )
    assert doc.data == {"name": "x", "params": {"name": 4}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n", "expected NAME=VALUE"),
        (" =1", "expected NAME=VALUE"),
        ("nn=1", "nn: no such parameter or field (did you mean 'n'?); parameters: n"),
        ("stages.1.blocks=1", "stages.1: index 1 out of range (the list has 1)"),
        ("stages.-1.blocks=1", "stages.-1: index -1 out of range"),
        ("stages.first.blocks=1", "stages.first: a list position must be a number"),
        ("name.first=1", "name.first: name is the single value 'x'; set it whole"),
        ("n=" + "1" * 1001, "value longer than 1,000 characters"),
        ("n={a", "cannot read value '{a'"),
        ("n=!!python/object/apply:os.system [ls]", "is not allowed in a spec"),
        ("n=" + "[" * 200 + "]" * 200, "YAML nested deeper than"),
        (
            "params={z: [&a [1,1,1,1,1,1,1,1,1], "
            + ", ".join(
                f"&{c} [" + ",".join([f"*{b}"] * 9) + "]"
                for b, c in zip("abcdefgh", "bcdefghi", strict=True)
            )
            + "]}",
            "YAML expands to more than 50,000 nodes",
        ),
    ],
)
def test_bad_set(override: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        overridden(override)
    assert message in info.value.message
    assert info.value.message.startswith(f"--set {override}: ")
    assert info.value.location == Location("f.yaml", via=f"--set {override}")
    assert str(info.value) == f"f.yaml: {info.value.message}"


def test_set_creates_a_missing_section_located_at_the_override(tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nstages:\n  - {blocks: 1}\n")
    doc = load.apply_overrides(load.load_spec(spec), ["stages.0.shortcut.option=A"])
    assert doc.data["stages"][0]["shortcut"] == {"option": "A"}
    assert doc.locate_key(("stages", 0, "shortcut")).via == "--set stages.0.shortcut.option=A"


def test_extends_a_folder_says_so(tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("extends: .\nname: x\n")
    with pytest.raises(SpecError) as info:
        load.load_spec(spec)
    assert str(info.value) == (
        f"{spec}:1:10: extends '.', but {tmp_path.resolve()} is a directory, not a spec file"
    )
