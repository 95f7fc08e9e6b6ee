"""Fuzzing the front end: mutated shipped specs end valid or with a located SpecError, quickly.

Every input goes through compile_spec (load, spec, expand, graph, passes) and, when valid,
summary_dict and, half the time, the PyTorch backend with drawn options (it runs ruff).
Anything but a SpecError with a file location is a bug, as is taking over the time bound.

CI runs a short campaign; a long one by hand:
    RESGRAPH_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SPECS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resgraph.backends.onnx_export import emit
from resgraph.backends.onnx_weights import he_init
from resgraph.backends.pytorch import Options, render_module
from resgraph.errors import SpecError
from resgraph.pipeline import compile_spec
from resgraph.spec import all_field_names
from resgraph.summary import summary_dict

EXAMPLES = int(os.environ.get("RESGRAPH_FUZZ_EXAMPLES", "600"))
CPU_SECONDS = 2.0  # per input, in this process (ruff aside): a busy machine does not count
WALL_SECONDS = 30.0  # a hang (a blocking read, an endless loop) fails instead of stalling CI
# Time grows about linearly with graph size (bench/bench_scaling.py: ~0.4 ms a block); a cap
# below the default keeps the largest accepted input (~1 s) inside the bound.
MAX_NODES = 20_000
ONNX_PARAMS = 2_000_000  # valid inputs this small are also emitted as ONNX (He-init from seed 0)

SHIPPED = sorted(SPECS.glob("*.yaml"))
FIELDS = sorted(all_field_names() | {"extends", "params", "block_types", "layers", "let"})

CODE_LIKE = [
    "__import__('os').system('true')",
    "n ** 1000",
    "lambda: 0",
    "(1).__class__",
    "9" * 400,
    "-" + "9" * 30,
    "2 ** 63",
    "width * 4 // 0",
    "n % 0",
    "max()",
    "min(n)",
    "in_channels",
    "{{ 7 * 7 }}",
    "${HOME}",
    '"""',
    "\\",
    "x\u0000y",
    "\u202e\u2066evil",
    "\ufeffname",
    "\uff4e",  # a fullwidth n
    "../" * 8 + "etc/passwd",
    "/dev/zero",
    "/proc/self/environ",
    ".",
    "",
]
YAML_DAMAGE = [
    "[",
    "]",
    "{",
    "}",
    "\t",
    ": ",
    "- ",
    "&a ",
    "*a",
    "*nosuch",
    "<<: *a\n",
    "!!python/object/apply:os.system ['true'] ",
    "!!binary aGk= ",
    "!!set ",
    "!!timestamp 2001-12-14 ",
    "!custom ",
    "? ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "'",
    '"',
    "#",
    "|\n",
    ">-\n",
    "\r",
    "\x85",
    "\u2028",
    "\x00",
    "\ufeff",
]

scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**40, 2**40 + 1, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    st.sampled_from(CODE_LIKE),
    st.sampled_from(FIELDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
keys = st.sampled_from(FIELDS) | st.text(max_size=12)
# Plausible values: they keep a spec close to valid, so the later passes see it.
VOCABULARY = [
    *("basic", "bottleneck", "plain_basic", "plain_bottleneck", "preact_basic"),
    *("preact_bottleneck", "se_bottleneck", "A", "B", "C", "none", "end", "split"),
    *("conv1", "conv2", "conv3", "bn1", "relu", "add", "se", "fc", "layer1"),
    *("n", "width", "in_channels", "out_channels", "stride", "width * 4", "n - 3", "mid"),
]
plausible_ints = st.integers(-2, 600) | st.sampled_from([2**16, 2**16 + 1, 2**20])


def _containers(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every dict and list in `data` with its path, the root first."""
    if isinstance(data, dict | list):
        yield path, data
        items = data.items() if isinstance(data, dict) else enumerate(data)
        for key, child in items:
            yield from _containers(child, (*path, key))


@st.composite
def tweak_tree(draw: st.DrawFn, data: Any) -> Any:
    """One plausible change to a scalar (a number, a name, a flag), keeping the structure."""
    leaves = [
        (container, slot)
        for _, container in _containers(data)
        for slot in (container if isinstance(container, dict) else range(len(container)))
        if not isinstance(container[slot], dict | list)
    ]
    if not leaves:
        return data
    container, slot = draw(st.sampled_from(leaves))
    value = container[slot]
    if isinstance(value, bool):
        container[slot] = not value
    elif isinstance(value, int):
        container[slot] = draw(plausible_ints)
    else:
        container[slot] = draw(st.sampled_from(VOCABULARY) | plausible_ints.map(str))
    return data


@st.composite
def mutate_tree(draw: st.DrawFn, data: Any) -> Any:
    """One change to parsed spec data: insert, delete, rename or replace a key or item."""
    containers = list(_containers(data))
    _, target = draw(st.sampled_from(containers))
    action = draw(st.sampled_from(["insert", "delete", "rename", "replace", "nest", "swap"]))
    slots = list(target) if isinstance(target, dict) else list(range(len(target)))
    if action == "insert" or not slots:
        if isinstance(target, dict):
            target[draw(keys)] = draw(values)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(values))
        return data
    slot = draw(st.sampled_from(slots))
    if action == "delete":
        del target[slot]
    elif action == "rename" and isinstance(target, dict):
        target[draw(keys)] = target.pop(slot)
    elif action == "nest":
        for _ in range(draw(st.integers(1, 40))):
            target[slot] = [target[slot]] if draw(st.booleans()) else {"x": target[slot]}
    elif action == "swap":
        value = target[slot]
        target[slot] = str(value) if not isinstance(value, str) else draw(scalars)
    else:
        target[slot] = draw(values)
    return data


@st.composite
def mutate_text(draw: st.DrawFn, text: str) -> str:
    """One change to YAML text: damaging tokens, random text, cut or duplicated lines."""
    action = draw(st.sampled_from(["insert", "cut", "duplicate", "indent"]))
    at = draw(st.integers(0, len(text)))
    if action == "insert":
        piece = draw(st.sampled_from(YAML_DAMAGE) | st.text(max_size=20))
        return text[:at] + piece + text[at:]
    if action == "cut":
        return text[:at] + text[at + draw(st.integers(1, 40)) :]
    lines = text.splitlines(keepends=True) or [""]
    i = draw(st.integers(0, len(lines) - 1))
    if action == "duplicate":
        return "".join(lines[: i + 1] + lines[i:])
    lines[i] = draw(st.sampled_from(["\t", " ", "   ", "- "])) + lines[i]
    return "".join(lines)


@st.composite
def mutate_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """One change to the file's bytes: random bytes (often invalid UTF-8) spliced in."""
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]


@st.composite
def fuzzed_spec(draw: st.DrawFn) -> tuple[Path, bytes]:
    """A shipped spec with one to four mutations: plausible tweaks, data, text or bytes."""
    path = draw(st.sampled_from(SHIPPED))
    text = path.read_text(encoding="utf-8")
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))):
        level = draw(st.sampled_from(["tweak", "tweak", "tree", "tree", "text", "text", "bytes"]))
        if level in ("tweak", "tree"):
            try:
                data = yaml.safe_load(text)
            except (yaml.YAMLError, ValueError, KeyError, AttributeError):
                continue  # PyYAML's own crashes on bad dates and tags: see resgraph/load.py
            if not isinstance(data, dict | list):
                continue
            mutate = tweak_tree if level == "tweak" else mutate_tree
            text = yaml.safe_dump(draw(mutate(data)), allow_unicode=True, sort_keys=False)
        elif level == "text":
            text = draw(mutate_text(text))
        else:
            return path, draw(mutate_bytes(text.encode("utf-8")))
    return path, text.encode("utf-8")


override = st.builds(
    lambda name, value: f"{name}={value}",
    st.sampled_from(["n", "stages.0.blocks", "stages.1", "head.classes", "input", "x.y"])
    | st.text(max_size=10),
    plausible_ints.map(str)
    | st.sampled_from(VOCABULARY + CODE_LIKE + YAML_DAMAGE)
    | st.text(max_size=20),
)
overrides = st.sampled_from([[], [], []]) | st.lists(override, min_size=1, max_size=2)


# Half the valid inputs (a few percent of all) also go through the PyTorch backend.
backends = st.none() | st.builds(Options, fold_bn=st.booleans(), channels_last=st.booleans())


class Hang(Exception):
    """Raised by the wall-clock alarm: the input took longer than WALL_SECONDS."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"over {WALL_SECONDS} s")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of specs/, so a fuzzed spec's `extends:` finds its parent."""
    target = tmp_path_factory.mktemp("fuzz")
    for path in SHIPPED:
        shutil.copy(path, target / path.name)
    return target


def check(path: Path, sets: list[str], backend: Options | None) -> None:
    """The contract for one input: valid, or a SpecError located in a file, within the bounds."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, WALL_SECONDS)
    start = time.process_time()
    try:
        compiled = compile_spec(path, sets, MAX_NODES)
        summary_dict(compiled.graph)
        if backend is not None:
            render_module(compiled, backend, overrides=sets)
            if compiled.graph.graph["params"] <= ONNX_PARAMS:  # the second backend, kept cheap
                emit(
                    compiled,
                    he_init(compiled.network, 0),
                    fold_bn=backend.fold_bn,
                )
                event("onnx")
        event("valid")
    except SpecError as exc:
        assert exc.location is not None and exc.location.file, f"unlocated: {exc}"
        event("SpecError")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.process_time() - start < CPU_SECONDS


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=fuzzed_spec(), sets=overrides, backend=backends)
def test_fuzzed_specs_end_valid_or_located(
    folder: Path, spec: tuple[Path, bytes], sets: list[str], backend: Options | None
) -> None:
    origin, raw = spec
    path = folder / f"fuzzed_{origin.name}"
    path.write_bytes(raw)
    check(path, sets, backend)


NET = """\
name: net
input: {{channels: 3, height: 32, width: 32}}
stem: {stem}
stages: [{{blocks: 1, width: 16}}]
block: basic
head: {head}
"""
# Inputs the fuzzer found (and their relatives, found reading the code it pointed at) that
# once escaped as another exception: spec text, --set overrides, where the error points
# (line and column; 0, 0 for an override) and a fragment of its message.
FOUND: dict[str, tuple[str, list[str], tuple[int, int], str]] = {
    "tag_on_a_key": (
        "!binary aGk= extends: cifar_resnet.yaml\nname: x\n",
        [],
        (1, 1),
        "could not determine a constructor for the tag '!binary'",
    ),
    "timestamp_tag_on_a_key": (
        "!!timestamp 2001-12-14 extends: cifar_resnet.yaml\nname: x\n",
        [],
        (1, 1),
        "cannot read '2001-12-14 extends' as a YAML timestamp",
    ),
    "impossible_date": ("name: x\ndescription: 2001-13-45\n", [], (2, 14), "YAML timestamp"),
    "int_tag_on_text": ("name: !!int abc\n", [], (1, 7), "cannot read 'abc' as a YAML int"),
    "bool_tag_on_text": ("name: x\nb: !!bool maybe\n", [], (2, 4), "as a YAML bool"),
    "int_over_4300_digits": ("name: x\nparams: {n: " + "9" * 5000 + "}\n", [], (2, 13), "int"),
    "add_in_the_stem": (
        NET.format(stem="[add]", head="{classes: 10}"),
        [],
        (3, 8),
        "add: add joins a block's shortcut to its branch",
    ),
    "add_in_the_head": (
        NET.format(stem="[]", head="{classes: 10, layers: [relu, add]}"),
        [],
        (6, 36),
        "add: add joins a block's shortcut to its branch",
    ),
    "add_in_a_projection": (
        "extends: resnet18.yaml\nshortcut: {option: C, projection: [add]}\n",
        [],
        (2, 36),
        "layer1.0.downsample.0: add joins a block's shortcut to its branch",
    ),
    "nul_in_extends": ('extends: "x\\0y"\nname: x\n', [], (1, 10), "it contains a NUL character"),
    "name_too_long_in_extends": (
        f"extends: {'a' * 300}\nname: x\n",
        [],
        (1, 10),
        "unusable path: a name in it is too long",
    ),
    "impossible_date_in_an_override": (
        "extends: cifar_resnet.yaml\nname: x\n",
        ["n=2001-13-45"],
        (0, 0),
        "--set n=2001-13-45: cannot read value '2001-13-45'",
    ),
}


@pytest.mark.parametrize("name", FOUND)
def test_inputs_the_fuzzer_found(folder: Path, name: str) -> None:
    text, sets, where, fragment = FOUND[name]
    path = folder / f"found_{name}.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        compile_spec(path, sets)
    location = caught.value.location
    assert location is not None
    assert (location.file, location.line, location.column) == (str(path), *where)
    assert fragment in caught.value.message


def test_fold_bn_over_two_bn_eps_points_at_the_odd_bn(folder: Path) -> None:
    """Found reading the backend for unlocated errors: --fold-bn refused with no location."""
    path = folder / "found_two_eps.yaml"
    path.write_text(
        "extends: resnet18.yaml\nstem:\n  - conv: {name: conv1, out: 64, kernel: 7, stride: 2}\n"
        "  - bn: {name: bn1, eps: 0.001}\n  - relu\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecError, match="--fold-bn needs one BN eps") as caught:
        render_module(compile_spec(path), Options(fold_bn=True))
    assert caught.value.location is not None
    assert (caught.value.location.file, caught.value.location.line) == (str(path), 4)


def test_names_that_camel_case_to_keywords_give_valid_source(folder: Path) -> None:
    """Found by the fuzzer: `name: none` became `class None(nn.Module)`, which ruff refused."""
    path = folder / "found_keyword_names.yaml"
    path.write_text(
        "extends: cifar_resnet.yaml\nname: none\nblock_types:\n  'true':\n    stride_on: c\n"
        "    layers: [conv: {name: c, out: width, kernel: 3}, bn, add, relu]\nblock: 'true'\n",
        encoding="utf-8",
    )
    source = render_module(compile_spec(path))
    compile(source, str(path), "exec")
    assert "class None_(nn.Module):" in source
    assert "class True_(nn.Module):" in source
