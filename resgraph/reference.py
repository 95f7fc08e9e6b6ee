"""The spec language's reference, rendered as Markdown from the pydantic models themselves.

    python -m resgraph.reference > docs/reference.md

Every model reachable from `Spec`, each field with its type, whether it is required, its
default and its description, the layer ops, the short forms, the built-in block library and
the limits all come from `resgraph.spec` (and the modules that hold the limits), so the page
cannot drift from the checker: `tests/test_docs.py` fails when docs/reference.md differs from
what `render()` gives now. Imports no torch.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import AfterValidator, BaseModel, PlainValidator
from pydantic.fields import FieldInfo

from resgraph import expr, load, spec
from resgraph.expand import DEFAULT_MAX_NODES, library

COMMAND = "python -m resgraph.reference > docs/reference.md"

# Validators that give a plain type its meaning in the language.
_VALIDATED_TYPES = {
    spec._check_param_name: "parameter name",
    spec._check_name: "name",
    spec._int_expr: "integer or expression",
}
# What a field means, for the fields whose model gives no `Field(description=...)`. A test
# keeps this to real fields that still have none: once spec.py describes a field, its note
# here must go (the model's own description wins).
NOTES = {
    "Spec.name": "The network's name; the generated module's class is named after it.",
    "Spec.description": "Free text.",
    "Spec.params": "Named integers usable in counts and sizes; each may use the ones before "
    "it. Settable with `--set NAME=VALUE`.",
    "Spec.input": "The input image's shape.",
    "Spec.shortcut": "The shortcut policy of every stage that does not set its own.",
    "Spec.block": "The block type of every stage that does not name its own; a stage with "
    "neither is an error.",
    "Spec.block_types": "Block types defined by this spec, used like the built-in ones.",
    "Spec.stem": "Layers before the first stage.",
    "Spec.stages": "The stages, in order.",
    "Spec.head": "What follows the last stage.",
    "Spec.init": "How weights are initialised.",
    "Input.channels": "Input channels (3 for RGB).",
    "Input.height": "Input height in pixels.",
    "Input.width": "Input width in pixels.",
    "Shortcut.option": "A: identity, zero-padded and subsampled where the shape changes (no "
    "parameters); B: identity, projection where the shape changes; C: always a projection; "
    "none: no shortcut (plain networks).",
    "BlockUse.type": "A built-in block type or one under `block_types`.",
    "BlockUse.stride_on": "Overrides the block type's `stride_on` (e.g. `conv2` for "
    "torchvision's v1.5 bottleneck).",
    "BlockUse.params": "Values for parameters the block type declares; may use the spec's "
    "`params`. An undeclared name is an error.",
    "BlockType.description": "Free text.",
    "BlockType.layers": "The branch up to `add`, then the layers run on the sum; at most one "
    "`add`. May use `in_channels`, `width`, the block's `params` and `let` values.",
    "Stage.name": "Prefix of the stage's node names; by default `layer1`, `layer2`, ...",
    "Stage.blocks": "Number of blocks, at least 1.",
    "Stage.width": "The stage's width; block layers read it as `width`.",
    "Stage.stride": "The first block's stride; the others use 1.",
    "Stage.block": "This stage's block type; by default the top-level `block`.",
    "Stage.shortcut": "This stage's shortcut policy; by default the top-level `shortcut`.",
    "Head.layers": "Layers after the last stage, before the pool.",
    "Head.pool": "Global average pooling.",
    "Head.classes": "Number of classes: the classifier's outputs.",
    "Head.name": "The classifier's node and module name.",
    "Init.conv": "He (MSRA) normal initialisation of conv weights.",
    "Conv.out": "Output channels.",
    "Conv.kernel": "Kernel size (square).",
    "Conv.stride": "Stride; in a downsampling block the `stride_on` layer's stride is "
    "multiplied by the block's.",
    "Conv.padding": "Zero padding on each side; none means (kernel - 1) // 2.",
    "Conv.groups": "Grouped convolution; must divide both input and output channels.",
    "Conv.bias": "Add a bias (no bias by default: a BN follows).",
    "BatchNorm.eps": "Added to the variance.",
    "BatchNorm.momentum": "Running statistics' update rate, as in PyTorch.",
    "Pool.kernel": "Window size (square).",
    "Pool.stride": "Stride; none means the kernel size.",
    "Pool.padding": "Padding on each side; none means (kernel - 1) // 2.",
    "Pool.ceil_mode": "Round output sizes up, as PyTorch's `ceil_mode`.",
    "AvgPool.count_include_pad": "Count padded positions in the average, as PyTorch's "
    "`count_include_pad`.",
    "Linear.out": "Output features.",
    "Linear.bias": "Add a bias.",
    **{
        f"{model.__name__}.name": "The layer's name; by default its op, numbered when a list "
        "has several (`relu1`, `relu2`). Unique in its list."
        for model in spec.OPS.values()
    },
}
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%"}


def render() -> str:
    """The whole reference page, as Markdown."""
    parts = [
        _intro(),
        _models_section(),
        _layers_section(),
        _short_forms_section(),
        _names_section(),
        _library_section(),
        _limits_section(),
    ]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


# ---------------------------------------------------------------- sections


def _intro() -> str:
    return f"""\
# Spec language reference

<!-- Generated by `{COMMAND}` from the pydantic models in
resgraph/spec.py; do not edit by hand. tests/test_docs.py fails when this file is stale. -->

Every key a spec may write, generated from the models `resgraph validate` checks specs
against (`resgraph/spec.py`). Unknown keys are errors. For a guided tour with examples see
[language.md](language.md); `resgraph schema` prints the same models as JSON Schema.

In the types below, *integer or expression* is an integer or a string such as `"2 * n"`
(see [Expressions](#expressions)); a *name* is letters, digits and `_`, not starting with a
digit and not a Python keyword, at most 64 characters; a *parameter name* is a name that
is not [reserved](#expressions). A field whose default is *none* may
be left out and means what its description says. Descriptions are the models' docstrings and
`Field(description=...)` texts; for a field the model does not describe, the note kept with
the generator (`resgraph.reference.NOTES`)."""


def _models_section() -> str:
    lines = ["## Models", ""]
    ops = {model: op for op, model in spec.OPS.items()}
    for model in _models():
        if model in ops:
            continue  # layer ops have their own section
        lines += _model_block(model, level=3)
    return "\n".join(lines)


def _layers_section() -> str:
    lines = [
        "## Layers",
        "",
        _doc(spec.Layer),
        "",
        "| op | model | settings | bare form |",
        "|---|---|---|---|",
    ]
    for op, model in spec.OPS.items():
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        settings = ", ".join(f"`{name}`" for name in model.model_fields)
        bare = "no (needs " + ", ".join(f"`{n}`" for n in required) + ")" if required else "yes"
        link = f"[{model.__name__}](#{_anchor(_op_title(op))})"
        lines.append(f"| `{op}` | {link} | {settings} | {bare} |")
    lines.append("")
    for op, model in spec.OPS.items():
        lines += _model_block(model, level=3, title=_op_title(op))
    return "\n".join(lines)


def _op_title(op: str) -> str:
    return f"`{op}` ({spec.OPS[op].__name__})"


def _short_forms_section() -> str:
    lines = [
        "## Short forms",
        "",
        "A string may stand for a whole mapping in these places:",
        "",
        "| model | written as | stands for |",
        "|---|---|---|",
    ]
    defs = spec.json_schema()["$defs"]
    for name in sorted(defs):
        alternatives = defs[name].get("anyOf", [])
        shorts = [alt for alt in alternatives if "properties" not in alt]
        if not shorts:
            continue
        short = shorts[0]
        model = getattr(spec, name)
        if model is spec.Layer:  # any op without required settings (the bare form column)
            lines.append(
                "| [Layer](#layer) | `- OP`, for an op whose bare form is yes in "
                "[Layers](#layers) | `- OP: {}` |"
            )
            continue
        example = short["enum"][0] if "enum" in short else "basic"
        field = _short_form_field(model, example)
        written = " or ".join(f"`{v}`" for v in short["enum"]) if "enum" in short else "a name"
        lines.append(f"| [{name}](#{_anchor(name)}) | {written} | `{{{field}: <that value>}}` |")
    return "\n".join(lines)


def _names_section() -> str:
    operators = " ".join(f"`{_OPERATORS.get(op, op.__name__)}`" for op in expr._BINOPS)
    functions = ", ".join(f"`{name}(...)`" for name in expr._FUNCS)
    reserved = ", ".join(f"`{name}`" for name in sorted(spec.RESERVED_NAMES))
    return f"""\
## Expressions

An *integer or expression* field takes an integer or a string holding an expression over
integer literals, names, the operators {operators}, unary minus, parentheses and
{functions} of two or more values. Expressions are at most {expr.MAX_EXPR_LENGTH}
characters; every value, intermediate ones included, must stay within
{expr.MAX_MAGNITUDE:,} in magnitude. Nothing is ever executed.

Names that parameters (`params`, `let`) may not take, because the language or the
generated code uses them: {reserved}."""


def _library_section() -> str:
    lines = [
        "## Built-in block types",
        "",
        "From `resgraph/blocks/library.yaml`, checked against the "
        "[BlockType](#blocktype) model. A spec uses them with `block:` and may define "
        "more under `block_types:`.",
    ]
    for name, source in library().items():
        block = source.block_type
        lines += ["", f"### `{name}`", ""]
        if block.description:
            lines += [" ".join(block.description.split()), ""]
        facts = []
        if block.params:
            facts.append(f"params: `{_flow(block.params)}`")
        if block.let:
            facts.append(f"let: `{_flow(block.let)}`")
        for key in ("stride_on", "projection_from"):
            if getattr(block, key):
                facts.append(f"{key}: `{getattr(block, key)}`")
        lines += [f"- {fact}" for fact in facts]
        lines.append("- layers: " + ", ".join(f"`{_layer_text(layer)}`" for layer in block.layers))
    return "\n".join(lines)


def _limits_section() -> str:
    limits = [
        (
            "channels, spatial sizes, classes, block parameter defaults",
            spec.MAX_SIZE,
            "spec.MAX_SIZE",
        ),
        ("blocks per stage", spec.MAX_BLOCKS, "spec.MAX_BLOCKS"),
        ("magnitude of any expression value", expr.MAX_MAGNITUDE, "expr.MAX_MAGNITUDE"),
        ("expression length (characters)", expr.MAX_EXPR_LENGTH, "expr.MAX_EXPR_LENGTH"),
        ("spec file size (bytes)", load.MAX_FILE_BYTES, "load.MAX_FILE_BYTES"),
        ("YAML nesting depth", load.MAX_DEPTH, "load.MAX_DEPTH"),
        ("YAML nodes, aliases expanded", load.MAX_YAML_NODES, "load.MAX_YAML_NODES"),
        (
            "graph nodes (change with `--max-nodes N`)",
            DEFAULT_MAX_NODES,
            "expand.DEFAULT_MAX_NODES",
        ),
    ]
    lines = ["## Limits", "", "| limit | value | where |", "|---|---:|---|"]
    lines += [f"| {what} | {value:,} | `resgraph.{where}` |" for what, value, where in limits]
    return "\n".join(lines)


# ---------------------------------------------------------------- models and fields


def _models() -> list[type[BaseModel]]:
    """Every model reachable from Spec, in the order first met (Spec first)."""
    seen: list[type[BaseModel]] = []
    queue = [spec.Spec]
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            queue += [m for m in _nested_models(field.annotation) if m not in seen]
    return seen


def _nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        if not isinstance(arg, FieldInfo):
            yield from _nested_models(arg)


def _model_block(model: type[BaseModel], level: int, title: str | None = None) -> list[str]:
    lines = [f"{'#' * level} {title or model.__name__}", ""]
    if model is spec.Spec:
        lines += ["The top level of a spec file.", ""]
    if text := _doc(model):
        lines += [text, ""]
    if model is spec.Spec:
        lines += [
            "A spec with `extends:` takes the keys it leaves out from its parent, so the "
            "required keys below are required of the merged spec.",
            "",
        ]
    if model is spec.Layer:
        ops = ", ".join(f"`{op}`" for op in model.model_fields)
        return [*lines, f"Exactly one key, the op: {ops}. See [Layers](#layers).", ""]
    lines += ["| key | type | required | default | description |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        required = "yes" if field.is_required() else "no"
        default = "" if field.is_required() else _default(field)
        description = _cell(field.description or _note(model, name))
        lines.append(
            f"| `{name}` | {_cell(_field_type(field))} | {required} | {default} | {description} |"
        )
    lines.append("")
    return lines


def _note(model: type[BaseModel], name: str) -> str:
    """The note for a field, looked up on the model and then on the models it inherits from."""
    for cls in model.__mro__:
        if f"{cls.__name__}.{name}" in NOTES:
            return NOTES[f"{cls.__name__}.{name}"]
    return ""


def _doc(model: type[BaseModel]) -> str:
    """The model's docstring, or the nearest spec model's it derives from (AvgPool: Pool's)."""
    for cls in model.__mro__:
        if cls is spec.Model or not issubclass(cls, spec.Model):
            break
        if text := cls.__dict__.get("__doc__"):
            return " ".join(text.split())
    return ""


def _field_type(field: FieldInfo) -> str:
    return _type_text(field.annotation, list(field.metadata))


def _type_text(annotation: Any, metadata: list[Any]) -> str:
    """A readable type: models link to their section, constraints follow in parentheses."""
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        return _type_text(base, [*extra, *metadata])
    validators = {
        item.func for item in metadata if isinstance(item, AfterValidator | PlainValidator)
    }
    for func, meaning in _VALIDATED_TYPES.items():  # the narrowest first: parameter name
        if func in validators:
            return meaning + _constraints(metadata, skip_length=True)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_type_text(option, []) for option in options) + _constraints(metadata)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_text(item, [])}" + _constraints(metadata)
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"mapping of {_type_text(key, [])} to {_type_text(value, [])}" + _constraints(
            metadata
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation.__name__)})"
    names = {int: "integer", float: "number", bool: "boolean", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))) + _constraints(
        metadata
    )


def _constraints(metadata: list[Any], skip_length: bool = False) -> str:
    """Bounds from annotated_types metadata, also inside Field(...) in an Annotated."""
    flat: list[Any] = []
    for item in metadata:
        flat += item.metadata if isinstance(item, FieldInfo) else [item]
    words = {
        annotated_types.Gt: "> {}",
        annotated_types.Ge: ">= {}",
        annotated_types.Lt: "< {}",
        annotated_types.Le: "<= {}",
        annotated_types.MinLen: "at least {}",
        annotated_types.MaxLen: "at most {} characters",
    }
    found = []
    for item in flat:
        for kind, template in words.items():
            if isinstance(item, kind) and not (skip_length and kind is annotated_types.MaxLen):
                value = getattr(item, dataclasses.fields(item)[0].name)
                found.append(template.format(_number(value)))
    return f" ({', '.join(found)})" if found else ""


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    value = field.default if factory is None else factory()  # type: ignore[call-arg]
    if value is None:
        return "none"
    return f"`{_flow(value)}`"


def _short_form_field(model: type[BaseModel], value: str) -> str:
    """The field a short form fills: validate the string alone and see where it went."""
    instance = model.model_validate(value)
    return next(name for name in model.model_fields if getattr(instance, name) == value)


# ---------------------------------------------------------------- YAML flow text


def _flow(value: Any) -> str:
    """A value as YAML flow text, models without their defaults (`{option: B}`)."""
    if isinstance(value, spec.Layer):
        return _flow({value.op: value.args})
    if isinstance(value, BaseModel):
        return _flow(
            {
                name: getattr(value, name)
                for name, field in type(value).model_fields.items()
                if name in value.model_fields_set or field.is_required()
            }
        )
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _layer_text(layer: spec.Layer) -> str:
    settings = {
        name: getattr(layer.args, name)
        for name in type(layer.args).model_fields
        if name in layer.args.model_fields_set
    }
    return f"{layer.op}: {_flow(settings)}" if settings else layer.op


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def main() -> int:
    """Print the reference; `python -m resgraph.reference > docs/reference.md`."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
