"""The language's building blocks: names, integer expressions, the strict base model.

Both the spec (resgraph.spec) and the op definitions (resgraph.ops) write their models
with these, so an op's language model can live beside the rest of the op.
"""

from __future__ import annotations

import builtins
import keyword
import re
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
from resgraph.errors import Location, SpecError

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


# Parameters become arguments and locals of the generated `__init__`: a dunder (`__class__`
# breaks super()), a built-in the generated code calls (max, range, isinstance) or a name the
# generated module defines (SqueezeExcite) must not be shadowed there, so every name Python
# or the generated code gives a meaning to is refused.
PYTHON_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("_"))
GENERATED_NAMES = frozenset(
    {
        "SqueezeExcite",
        "ConvClassifier",
        "torch",
        "nn",
        "build_model",
        "fold_batchnorm",
        "ZeroPadShortcut",
        "SPEC_NAME",
        "SPEC_HASH",
        "annotations",
    }
)  # module-level names of every generated file


def _check_param_name(value: str) -> str:
    if value in RESERVED_NAMES or value in GENERATED_NAMES:
        raise ValueError(f"{value!r} is reserved; choose another parameter name")
    if value.startswith("__"):
        raise ValueError(f"{value!r}: names starting with '__' are Python's; choose another")
    if value in PYTHON_NAMES:
        raise ValueError(f"{value!r} is a Python built-in; choose another parameter name")
    return value


ParamName = Annotated[Name, AfterValidator(_check_param_name)]


def _int_expr(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer or an expression such as '2 * n', got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        # isdigit() also holds for '²', which int() refuses; anything else is an expression
        if not re.fullmatch(r"-?[0-9]{1,30}", text):
            try:
                expr.parse(text)
            except expr.ExprError as exc:
                raise ValueError(str(exc)) from None
            return text
        value = int(text)
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


# nn.Module attributes a layer or stage name must not shadow.
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
        "downsample",
        "reset_parameters",
    }
)


def check_attribute(name: str, where: Location | None) -> None:
    """Refuse a name for a generated module attribute (a layer, a stage, the classifier) that
    nn.Module reserves or would shadow, with its location: checked when the IR is built."""
    if name.startswith("_"):
        # nn.Module keeps _names for itself (_modules, ...) and Python mangles __names
        # inside a class, so the state_dict key would not be the graph's name.
        raise SpecError(
            f"the name {name!r} starts with an underscore, which torch.nn.Module reserves; "
            "rename it",
            where,
        )
    if name in MODULE_ATTRIBUTES:
        raise SpecError(f"the name {name!r} would shadow torch.nn.Module.{name}; rename it", where)
