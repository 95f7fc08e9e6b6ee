"""Integer expressions in specs (`blocks: n`, `out: width * 4`), parsed to a whitelisted AST.

Only integer literals, names, + - * // %, unary minus, parentheses and min()/max() of two or
more values are accepted, so an expression can be evaluated here and rendered into generated Python
without ever executing anything a spec author wrote.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping

MAX_EXPR_LENGTH = 200
MAX_MAGNITUDE = 2**40

_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_FUNCS = {"min": min, "max": max}


class ExprError(ValueError):
    """An expression that does not parse, names an unknown variable, or overflows."""


def parse(text: str) -> ast.expr:
    """Parse and whitelist an expression; raise ExprError naming the offending part."""
    if len(text) > MAX_EXPR_LENGTH and not isinstance(text, Source):
        raise ExprError(f"expression longer than {MAX_EXPR_LENGTH} characters")
    return _parse(str(text))


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        _check_node(node, text)
    return tree.body


def _check_node(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Expression | ast.Load):
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return
    if isinstance(node, ast.operator) and type(node) in _BINOPS:
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return
    if isinstance(node, ast.unaryop) and isinstance(node, ast.USub | ast.UAdd):
        return
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return
    if isinstance(node, ast.Name):
        return
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and len(node.args) >= 2
        and not node.keywords
    ):
        return
    part = ast.get_source_segment(text.strip(), node) if hasattr(node, "lineno") else None
    shown = f" {part!r}" if part else ""
    raise ExprError(
        f"expression {text!r} uses{shown}, which is not allowed: only integers, names, "
        "+ - * // %, parentheses, and min() or max() of two or more values"
    )


def names(text: str) -> set[str]:
    """The variable names an expression reads."""
    tree = parse(text)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def evaluate(value: int | str, scope: Mapping[str, int]) -> int:
    """Evaluate an int or an expression over `scope`; raise ExprError on unknown names."""
    if isinstance(value, int):
        return value
    return _eval(parse(value), scope, value)


def _eval(node: ast.expr, scope: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant):
        result = node.value
    elif isinstance(node, ast.Name):
        if node.id not in scope:
            known = ", ".join(sorted(scope)) or "none"
            raise ExprError(f"unknown name {node.id!r} in {text!r} (known here: {known})")
        result = scope[node.id]
    elif isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, scope, text)
        result = -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp):
        left, right = _eval(node.left, scope, text), _eval(node.right, scope, text)
        if isinstance(node.op, ast.FloorDiv | ast.Mod) and right == 0:
            raise ExprError(f"division by zero in {text!r}")
        result = _BINOPS[type(node.op)](left, right)
    else:
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        result = _FUNCS[node.func.id](_eval(arg, scope, text) for arg in node.args)
    if abs(result) > MAX_MAGNITUDE:
        raise ExprError(f"{text!r} overflows: values are limited to {MAX_MAGNITUDE:,}")
    return result


def render(value: int | str, rename: Mapping[str, str] | None = None) -> str:
    """Render an int or a whitelisted expression as Python source, optionally renaming names."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Source) and not rename:
        return str(value)
    tree = parse(value)
    if rename:
        tree = _Rename(rename).visit(ast.parse(ast.unparse(tree), mode="eval")).body
    return ast.unparse(tree)


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(ast.Name(self.mapping.get(node.id, node.id), node.ctx), node)


class Source(str):
    """An expression resgraph composed from rendered parts (a default padding, a scaled
    stride): evaluated like a spec's expression, rendered exactly as written."""


Dim = int | str  # a size: a number, or an expression over a block's names


def operand(value: Dim) -> str:
    """A size as source, bracketed unless it is a name, a number or a call, so that it keeps
    its value as an operand of `*` or `//` (`1 + 1` as a divisor is `(1 + 1)`)."""
    source = render(value)
    node = parse(source) if not isinstance(value, int) else None
    atomic = node is None and value >= 0
    atomic = atomic or isinstance(node, ast.Name | ast.Call)
    atomic = atomic or (isinstance(node, ast.Constant) and not source.startswith("-"))
    return source if atomic else f"({source})"


def times(value: Dim, factor: Dim) -> Dim:
    """value * factor, folded to a number when both are numbers and to `factor` when value is 1."""
    if isinstance(value, int) and isinstance(factor, int):
        return value * factor
    if value == 1:
        return factor
    return Source(f"{operand(value)} * {operand(factor)}")


def halved_less_one(kernel: Dim) -> Dim:
    """(kernel - 1) // 2: the padding that keeps an odd kernel's output size."""
    if isinstance(kernel, int):
        return (kernel - 1) // 2
    return Source(f"({render(kernel)} - 1) // 2")


def divided(value: Dim, divisor: Dim) -> Dim:
    """value // divisor, folded to a number when both are numbers."""
    if isinstance(value, int) and isinstance(divisor, int):
        return value // divisor
    return Source(f"{operand(value)} // {operand(divisor)}")
