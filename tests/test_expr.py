"""resgraph.expr: the whitelisted integer expressions of the spec language."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resgraph import expr


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        ("n", 18),
        ("n + 2", 20),
        ("n - 20", -2),
        ("n * 4", 72),
        ("n // 4", 4),
        ("n % 4", 2),
        ("-n", -18),
        ("+n", 18),
        ("(n + 2) * 3", 60),
        ("n + 2 * 3", 24),
        ("-7 // 2", -4),
        ("min(n, 4)", 4),
        ("max(n, 4, 30)", 30),
        ("min(max(n, 1), 10)", 10),
        ("  n*2  ", 36),
        ("width * base_width // 64 * groups", 128),
    ],
)
def test_evaluate(text: str, value: int) -> None:
    scope = {"n": 18, "width": 128, "base_width": 64, "groups": 1}
    assert expr.evaluate(text, scope) == value


def test_an_int_is_its_own_value() -> None:
    assert expr.evaluate(5, {}) == 5


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "().__class__",
        "a.b",
        "a[0]",
        "abs(1)",
        "min()",
        "min(n)",
        "min(1, key=f)",
        "min(*a)",
        "2 ** 10",
        "2 / 3",
        "1 < 2",
        "1 if n else 2",
        "not n",
        "~n",
        "n & 1",
        "n << 2",
        "True",
        "1.5",
        "'a'",
        "lambda: 1",
        "[x for x in n]",
        "(x := 1)",
        "f'{n}'",
        "open('/etc/passwd')",
        "eval('1')",
        "exec('1')",
        "n; n",
        "import os",
        "",
    ],
)
def test_only_the_whitelist_parses(text: str) -> None:
    with pytest.raises(expr.ExprError) as info:
        expr.parse(text)
    assert "not allowed" in str(info.value) or "cannot parse" in str(info.value)


def test_a_rejected_part_is_named() -> None:
    with pytest.raises(
        expr.ExprError,
        match=r"uses '2 \*\* 3', which is not allowed: only "
        r"integers, names, \+ - \* // %",
    ):
        expr.parse("n + 2 ** 3")


def test_length_limit() -> None:
    with pytest.raises(expr.ExprError, match="longer than 200 characters"):
        expr.parse("1 + " * 60 + "1")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(expr.ExprError, match=r"unknown name 'm' in 'm \+ 1' \(known here: k, n\)"):
        expr.evaluate("m + 1", {"n": 1, "k": 2})
    with pytest.raises(expr.ExprError, match=r"known here: none"):
        expr.evaluate("m", {})


@pytest.mark.parametrize("text", ["n // 0", "n % (n - n)"])
def test_division_by_zero(text: str) -> None:
    with pytest.raises(expr.ExprError, match="division by zero"):
        expr.evaluate(text, {"n": 3})


@pytest.mark.parametrize(
    "text",
    [
        "n * n",
        "n * n * n * n * n * n * n * n * n * n * n * n",
        "99999999999999999999",
        "-99999999999999999999",
        "max(n * n, 1)",
        "n + n - n",
    ],
)
def test_overflow_is_caught_at_the_first_step_past_the_limit(text: str) -> None:
    with pytest.raises(expr.ExprError, match="overflows: values are limited to 1,099,511,627,776"):
        expr.evaluate(text, {"n": expr.MAX_MAGNITUDE})


def test_the_limit_itself_is_allowed() -> None:
    assert expr.evaluate("n", {"n": expr.MAX_MAGNITUDE}) == 2**40
    assert expr.evaluate("-n", {"n": expr.MAX_MAGNITUDE}) == -(2**40)


def test_names_excludes_called_functions() -> None:
    assert expr.names("min(n, m) + max(k, 1) * width") == {"n", "m", "k", "width"}
    assert expr.names("12") == set()


def test_render_and_rename() -> None:
    assert expr.render(64) == "64"
    assert expr.render("width*4") == "width * 4"
    assert expr.render("min(n, 4) + width", {"width": "self.width"}) == "min(n, 4) + self.width"
    assert expr.render("(n + 1) * 2") == "(n + 1) * 2"


names = st.sampled_from(["a", "b", "c"])
leaves = st.one_of(st.integers(-50, 50).map(str), names)


def combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "//", "%"]), children).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    calls = st.tuples(
        st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)
    ).map(lambda t: f"{t[0]}({', '.join(t[1])})")
    return st.one_of(binary, calls, children.map(lambda c: f"-{c}"))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(leaves, combine, max_leaves=6).filter(lambda t: len(t) <= 200),
    st.fixed_dictionaries(
        {"a": st.integers(-100, 100), "b": st.integers(1, 100), "c": st.integers(-3, 3)}
    ),
)
def test_evaluate_and_render_agree_with_python(text: str, scope: dict[str, int]) -> None:
    try:
        expected = eval(text, {"__builtins__": {"min": min, "max": max}}, dict(scope))
    except ZeroDivisionError:
        with pytest.raises(expr.ExprError, match="division by zero"):
            expr.evaluate(text, scope)
        return
    assert abs(expected) <= 100**6 < expr.MAX_MAGNITUDE  # no step can overflow with 6 leaves
    assert expr.evaluate(text, scope) == expected
    rendered = expr.render(text)
    assert expr.evaluate(rendered, scope) == expected
    assert expr.names(text) <= set(scope)
