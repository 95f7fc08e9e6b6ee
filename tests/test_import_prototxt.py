"""The protobuf text format parser: every syntax form, located errors, hostile files refused."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from resgraph.importer import prototxt
from resgraph.importer.prototxt import Field, Identifier, Message, parse
from resgraph.importer.source import ImportFailure


def plain(message: Message) -> list[tuple[str, object]]:
    """A message as (name, value) pairs, nested messages likewise: what the text says."""
    return [
        (f.name, plain(f.value) if isinstance(f.value, Message) else f.value)
        for f in message.fields
    ]


def at(text: str, needle: str, occurrence: int = 1) -> str:
    """`line:column` (1-based) of the start of `needle`'s n-th occurrence in `text`."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def refusal(text: str) -> str:
    with pytest.raises(ImportFailure) as caught:
        parse(text, "net.prototxt")
    return str(caught.value)


def test_every_syntax_form() -> None:
    text = (
        "\ufeff# a comment line\n"
        'name: "ResNet-50"  # a comment after a field\n'
        "quoted: 'single' joined: \"ab\" 'cd'\n"
        r'escapes: "tab\tnl\nq\"s\'b\\o\101x\x42u\u00e9?\?"' + "\n"
        "ints: 3 ints: -3 ints: 0x1F ints: 017 ints: 0\n"
        "floats: 1.5 floats: -2.5e-3 floats: 1e5 floats: .5 floats: 5. floats: 1.5f\n"
        "enum: MAX yes: true no: false Yes: True No: False\n"
        "nested { a: 1 inner { b: 2 } }\n"
        "colon: { a: 1 }\n"
        "angle < a: 1 >\n"
        "list: [1, 2, 3] empty: [] messages: [{ a: 1 }, { a: 2 }]\n"
        "sep: 1; sep: 2, sep: 3\n"
    )
    assert plain(parse(text, "f")) == [
        ("name", "ResNet-50"),
        ("quoted", "single"),
        ("joined", "abcd"),
        ("escapes", "tab\tnl\nq\"s'b\\oAxBu\u00e9??"),
        ("ints", 3),
        ("ints", -3),
        ("ints", 31),
        ("ints", 15),
        ("ints", 0),
        ("floats", 1.5),
        ("floats", -2.5e-3),
        ("floats", 1e5),
        ("floats", 0.5),
        ("floats", 5.0),
        ("floats", 1.5),
        ("enum", Identifier("MAX")),
        ("yes", True),
        ("no", False),
        ("Yes", True),
        ("No", False),
        ("nested", [("a", 1), ("inner", [("b", 2)])]),
        ("colon", [("a", 1)]),
        ("angle", [("a", 1)]),
        ("list", 1),
        ("list", 2),
        ("list", 3),
        ("messages", [("a", 1)]),
        ("messages", [("a", 2)]),
        ("sep", 1),
        ("sep", 2),
        ("sep", 3),
    ]


def test_numbers_keep_their_type_and_sign() -> None:
    values = [f.value for f in parse("a: 7 a: 7.0 a: -0x10 a: -inf a: -nan", "f").all("a")]
    assert values[:3] == [7, 7.0, -16]
    assert [type(v) for v in values[:3]] == [int, float, int]
    assert values[3] == -math.inf and math.isnan(values[4])


def test_fields_know_where_they_are_written() -> None:
    text = 'layer {\n\tname: "conv1"\n\tconvolution_param { num_output: 64 }\n}\n'
    layer = parse(text, "net.prototxt").one("layer")
    assert layer is not None and isinstance(layer.value, Message)
    assert str(layer.where) == "net.prototxt:1:1"
    name = layer.value.one("name")
    assert name is not None and str(name.where) == "net.prototxt:2:2"  # a tab is one column
    param = layer.value.get("convolution_param")
    assert isinstance(param, Message)
    assert str(param.where) == f"net.prototxt:{at(text, '{ num_output')}"
    assert [str(f.where) for f in param.fields] == [f"net.prototxt:{at(text, 'num_output')}"]


def test_repeated_and_singular_access() -> None:
    text = 'bottom: "a"\nbottom: "b"\ntop: "c"\n'
    message = parse(text, "f")
    assert [f.value for f in message.all("bottom")] == ["a", "b"]
    assert message.all("missing") == []
    assert message.get("top") == "c"
    assert message.get("missing", 7) == 7
    assert isinstance(message.one("top"), Field)
    with pytest.raises(ImportFailure) as caught:
        message.get("bottom")
    assert str(caught.value) == "f:2:1: 'bottom' is given twice; it takes one value"


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        (
            "layer {\n  name: 'x'\n",
            "",
            "the file ends inside 'layer' (opened at 1:7); '}' is missing",
        ),
        ("a: 1\n}\n", "}", "expected a field name, not '}'"),
        ("a: }", "}", "expected a value for 'a', not '}'"),
        ("a: ", "", "expected a value for 'a', not the end of the file"),
        ("a 1", "1", "expected ':' or '{' after 'a', not '1'"),
        ("a: [1 2]", "2", "expected ',' or ']' in the list of 'a', not '2'"),
        ("a: 'open\n'", "'open", "a string is not closed on its line"),
        (r"a: 'bad \q'", "'bad", r"unknown escape '\\q' in a string"),
        (r"a: '\777'", "'", r"the escape \777 is more than one byte"),
        (r"a: '\xff'", "'", "the string's escapes do not give UTF-8 text"),
        (r"a: '\ud800'", "'", r"the escape \ud800 is not a Unicode character"),
        ("a: 1.2.3", "1.2", "malformed number '1.2.'"),
        ("a: 12abc", "12", "malformed number '12a'"),
        ("a: 09", "09", "malformed octal number '09'"),
        (
            "a: 18446744073709551616",
            "1844",
            "the integer 18446744073709551616 does not fit 64 bits",
        ),
        ("a: -9223372036854775809", "-", "the integer -9223372036854775809 does not fit 64 bits"),
        ("a: - MAX", "MAX", "expected a number after '-', not 'MAX'"),
        ("a: @", "@", "unexpected character '@'"),
        ("a: \x00", "\x00", r"unexpected character '\x00'"),
        ("[ext.field]: 1", "[", "extension and Any fields ([...]) are not supported"),
    ],
)
def test_syntax_errors_are_one_located_line(text: str, needle: str, message: str) -> None:
    where = (
        at(text, needle)
        if needle
        else f"{text.count(chr(10)) + 1}:{len(text.split(chr(10))[-1]) + 1}"
    )
    found = refusal(text)
    assert found == f"net.prototxt:{where}: {message}"
    assert "\n" not in found


def test_nesting_bomb_is_refused_at_the_limit() -> None:
    text = "a {" * 100_000
    start = time.perf_counter()
    found = refusal(text)
    assert time.perf_counter() - start < 2
    column = 3 * prototxt.MAX_DEPTH + 3  # the (MAX_DEPTH + 1)-th '{'
    assert found == f"net.prototxt:1:{column}: nested deeper than {prototxt.MAX_DEPTH} levels"


def test_field_count_bomb_is_refused_at_the_limit() -> None:
    limit = prototxt.MAX_FIELDS
    text = "a: [" + "1," * limit + "1]"
    start = time.perf_counter()
    found = refusal(text)
    assert time.perf_counter() - start < 5
    column = 5 + 2 * limit
    assert found == (
        f"net.prototxt:1:{column}: more than {limit:,} fields; a prototxt is limited to {limit:,}"
    )


def test_oversized_and_special_files_are_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.prototxt"
    big.write_text("#" * (prototxt.MAX_PROTOTXT_BYTES + 1))
    limit = prototxt.MAX_PROTOTXT_BYTES
    with pytest.raises(ImportFailure) as caught:
        prototxt.read(big)
    assert str(caught.value) == f"{big}: over {limit:,} bytes; a prototxt is limited to {limit:,}"
    with pytest.raises(ImportFailure) as caught:
        prototxt.read(Path(os.devnull))
    assert str(caught.value) == f"{os.devnull}: is a character device, not a prototxt"
    latin = tmp_path / "latin.prototxt"
    latin.write_bytes(b'name: "caf\xe9"\n')
    with pytest.raises(ImportFailure) as caught:
        prototxt.read(latin)
    assert str(caught.value) == (
        f"{latin}:1:11: not valid UTF-8 (byte 0xe9); save the file as UTF-8"
    )


def test_a_file_reads_as_its_text_parses(tmp_path: Path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\nlayer { name: "a" }\n', encoding="utf-8")
    message = prototxt.read(path)
    assert plain(message) == [("name", "n"), ("layer", [("name", "a")])]
    layer = message.one("layer")
    assert layer is not None and str(layer.where) == f"{path}:2:1"


def test_names_in_messages_are_clipped() -> None:
    name = "n" * 100_000
    assert (
        refusal(f"{name} 1")
        == f"net.prototxt:1:100002: expected ':' or '{{' after '{'n' * 64}...', not '1'"
    )
