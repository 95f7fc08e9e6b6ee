"""The language's building blocks: names, integer expressions, the strict base model.

Both the spec (resgraph.spec) and the op definitions (resgraph.ops) write their models
with these, so an op's language model can live beside the rest of the op.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from resgraph import expr

MAX_SIZE = 1 << 16  # channels, spatial sizes, classes: far beyond any real network
MAX_BLOCKS = 1 << 20
RESERVED_NAMES = frozenset(
    {
        "self",
        "x",
        "out",
        "identity",
        "nn",
        "torch",
        "super",
        "in_channels",
        "out_channels",
        "width",
        "stride",
        "dilation",
        "first_dilation",
        "drop_path",
        "downsample",
        "num_classes",
    }
)


def _check_name(value: str) -> str:
    if not value.isidentifier() or not value.isascii() or keyword.iskeyword(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits and _, not starting with a digit"
        )
    if len(value) > 64:
        raise ValueError("names are limited to 64 characters")
    return value


Name = Annotated[str, Field(max_length=64), AfterValidator(_check_name)]


def _check_param_name(value: str) -> str:
    if value in RESERVED_NAMES:
        raise ValueError(f"{value!r} is reserved; choose another parameter name")
    return value


ParamName = Annotated[Name, AfterValidator(_check_param_name)]


def _int_expr(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer or an expression such as '2 * n', got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            expr.parse(text)
        except expr.ExprError as exc:
            raise ValueError(str(exc)) from None
        return text
    if abs(value) > expr.MAX_MAGNITUDE:
        raise ValueError(f"{value:,} is too large")
    return value


IntExpr = Annotated[
    int | str,
    PlainValidator(_int_expr),
    WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string", "description": "an integer expression"}]}
    ),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _short_form(field_name: str) -> Any:
    """Let `key: B` stand for `key: {field_name: B}` in YAML; the schema accepts both."""

    def before(cls: type[Model], data: Any) -> Any:
        return {field_name: data} if isinstance(data, str) else data

    return model_validator(mode="before")(classmethod(before))


LAYER_NAME_HELP = (
    "The layer's name; by default its op, numbered when a list has several (`relu1`, `relu2`). "
    "Unique in its list."
)


def layer_name() -> Any:
    """The optional `name` field every op's settings have."""
    return Field(None, description=LAYER_NAME_HELP)
