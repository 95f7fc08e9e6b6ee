"""The spec language: pydantic models, unknown keys are errors.

Numbers that may depend on parameters (`blocks: n`, `out: width * 4`) are `IntExpr`:
an int, or a whitelisted expression string evaluated later by `resgraph.expr`.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model, model_validator

from resgraph.language import (  # noqa: F401  (re-exported: the language's limits and types)
    MAX_BLOCKS,
    MAX_SIZE,
    RESERVED_NAMES,
    IntExpr,
    Model,
    Name,
    ParamName,
    _short_form,
)
from resgraph.ops import LANGUAGE
from resgraph.ops.bn import BatchNorm
from resgraph.ops.conv import Conv

# ---------------------------------------------------------------- layers

OPS: dict[str, type[Model]] = {name: op.language for name, op in LANGUAGE.items()}  # type: ignore[misc]


class _LayerBase(Model):
    """One op, written as a single-key mapping (`- conv: {out: 64, kernel: 7}`) or a bare name."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {data: {}}
        if isinstance(data, dict):
            if len(data) != 1:
                raise ValueError(
                    f"a layer is one op such as {{conv: {{...}}}}, got keys {sorted(data)}"
                )
            return {key: ({} if value is None else value) for key, value in data.items()}
        return data

    @property
    def op(self) -> str:
        """The op's keyword, e.g. 'conv'."""
        return next(op for op in OPS if getattr(self, op) is not None)

    @property
    def args(self) -> Any:
        """The op's settings."""
        return getattr(self, self.op)


# One optional field per op of resgraph.ops: the language grows with the op registry.
Layer = create_model(
    "Layer",
    __base__=_LayerBase,
    __module__=__name__,
    __doc__=_LayerBase.__doc__,
    **{name: (model | None, None) for name, model in OPS.items()},  # type: ignore[call-overload]
)


# ---------------------------------------------------------------- blocks and shortcuts


def _default_projection() -> list[Layer]:
    return [
        Layer(conv=Conv(out="out_channels", kernel=1, stride="stride")),
        Layer(bn=BatchNorm()),
    ]


class Shortcut(Model):
    """How a block's input reaches its add: A/B/C as in the paper, or none (plain nets)."""

    option: Literal["A", "B", "C", "none"] = Field(
        description=(
            "A: identity, zero-padded and subsampled where the shape changes (no parameters); B: "
            "identity, projection where the shape changes; C: always a projection; none: no "
            "shortcut (plain networks)."
        )
    )
    zero_pad: Literal["end", "split"] = Field(
        "end",
        description="Option A: where zero channels go; 'end' appends them, 'split' puts half "
        "before and half after (the popular CIFAR reproduction).",
    )
    projection: list[Layer] = Field(
        default_factory=_default_projection,
        description="Layers of a projection shortcut (B, C); "
        "may use in_channels, out_channels, stride.",
    )
    _short = _short_form("option")


class BlockType(Model):
    """A residual block type written in the spec language: its layers, with one `add`."""

    description: str | None = Field(None, description="Free text.")
    params: dict[ParamName, Annotated[int, Field(strict=True, ge=-MAX_SIZE, le=MAX_SIZE)]] = Field(
        default_factory=dict,
        description="Parameters with integer defaults, usable in layer fields.",
    )
    let: dict[ParamName, IntExpr] = Field(
        default_factory=dict,
        description="Derived values (mid: width * base_width // 64), "
        "computed in order after params.",
    )
    stride_on: Name | None = Field(
        None, description="Name of the layer that carries the block's stride when it downsamples."
    )
    projection_from: Name | None = Field(
        None,
        description="Feed projection shortcuts from this layer's output instead of the block input "
        "(pre-activation units project the pre-activated input).",
    )
    layers: list[Layer] = Field(
        min_length=1,
        description=(
            "The branch up to `add`, then the layers run on the sum; at most one `add`. May use "
            "`in_channels`, `width`, the block's `params` and `let` values."
        ),
    )


class BlockUse(Model):
    """A reference to a block type, optionally setting its parameters or stride placement."""

    type: Name = Field(description="A built-in block type or one under `block_types`.")
    stride_on: Name | None = Field(
        None,
        description=(
            "Overrides the block type's `stride_on` (e.g. `conv2` for torchvision's v1.5 "
            "bottleneck)."
        ),
    )
    params: dict[ParamName, IntExpr] = Field(
        default_factory=dict,
        description=(
            "Values for parameters the block type declares; may use the spec's `params`. An "
            "undeclared name is an error."
        ),
    )
    _short = _short_form("type")


# ---------------------------------------------------------------- the network


class Input(Model):
    channels: int = Field(gt=0, le=MAX_SIZE, description="Input channels (3 for RGB).")
    height: int = Field(gt=0, le=MAX_SIZE, description="Input height in pixels.")
    width: int = Field(gt=0, le=MAX_SIZE, description="Input width in pixels.")


class Stage(Model):
    """A run of blocks at one width; the first block takes the stage's stride."""

    name: Name | None = Field(
        None, description="Prefix of the stage's node names; by default `layer1`, `layer2`, ..."
    )
    blocks: IntExpr = Field(description="Number of blocks, at least 1.")
    width: IntExpr = Field(description="The stage's width; block layers read it as `width`.")
    stride: IntExpr = Field(1, description="The first block's stride; the others use 1.")
    dilation: IntExpr | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description=(
            "The stage's dilation (atrous rate); by default the previous stage's (1 at first). "
            "Its first block keeps the previous dilation in its first dilated conv "
            "(`first_dilation`), as torchvision's dilated stages do."
        ),
    )
    block: BlockUse | None = Field(
        None, description="This stage's block type; by default the top-level `block`."
    )
    shortcut: Shortcut | None = Field(
        None, description="This stage's shortcut policy; by default the top-level `shortcut`."
    )


class Head(Model):
    """Optional layers (a pre-activation net's final BN-ReLU), global average pool, classifier."""

    layers: list[Layer] = Field(
        default_factory=list, description="Layers after the last stage, before the pool."
    )
    pool: Literal["avg"] = Field("avg", description="Global average pooling.")
    classes: IntExpr | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="Number of classes: the classifier's outputs (fc and fcn heads need it).",
    )
    name: Name = Field("fc", description="The classifier's node and module name.")
    kind: Literal["fc", "fcn", "features"] = Field(
        "fc",
        description="fc: global average pool and a linear layer. fcn: fully convolutional, as in "
        "the Caffe deploy nets: a window x window average pool with stride 1, then the fc as a "
        "1x1 conv, so a larger input gives a map of class scores (same weights). features: a "
        "backbone for detection or segmentation: `forward` returns the `stages`' outputs as a "
        "dict keyed by stage name, with no head layers, pool or classifier.",
    )
    stages: list[Name] | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="features: the stages whose outputs `forward` returns, in network order; "
        "by default all. Stages after the last one named are not built.",
    )
    window: IntExpr | None = Field(
        None,
        description="fcn pool window; by default the final feature map's size at this input "
        "(7 for 224x224 ImageNet nets). Set it when evaluating at other input sizes.",
    )


class Init(Model):
    """Initialisation: He (MSRA) for convs, BN weight 1 and bias 0."""

    conv: Literal["kaiming_normal"] = Field(
        "kaiming_normal", description="He (MSRA) normal initialisation of conv weights."
    )
    zero_init_residual: bool = Field(
        False,
        description="Zero the last BN of each residual branch, so each block starts as identity.",
    )


class Spec(Model):
    """A network: input, stem, stages of blocks, head."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="resgraph spec")

    name: Name = Field(
        description="The network's name; the generated module's class is named after it."
    )
    description: str | None = Field(None, description="Free text.")
    extends: str | None = Field(None, description="Another spec file this one refines.")
    params: dict[ParamName, IntExpr] = Field(
        default_factory=dict,
        description=(
            "Named integers usable in counts and sizes; each may use the ones before it. Settable "
            "with `--set NAME=VALUE`."
        ),
    )
    input: Input = Field(description="The input image's shape.")
    shortcut: Shortcut = Field(
        default_factory=lambda: Shortcut(option="B"),
        description="The shortcut policy of every stage that does not set its own.",
    )
    block: BlockUse | None = Field(
        None,
        description=(
            "The block type of every stage that does not name its own; a stage with neither is an "
            "error."
        ),
    )
    block_types: dict[Name, BlockType] = Field(
        default_factory=dict,
        description="Block types defined by this spec, used like the built-in ones.",
    )
    stem: list[Layer] = Field(default_factory=list, description="Layers before the first stage.")
    stages: list[Stage] = Field(min_length=1, description="The stages, in order.")
    drop_path_rate: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description=(
            "Stochastic depth: the largest drop probability of a residual branch. Block i of N "
            "(over the whole network, from 0) drops its branch with probability "
            "drop_path_rate * i / (N - 1) while training, as timm's ResNets do; the identity in "
            "eval and in ONNX."
        ),
    )
    output_stride: Literal[8, 16, 32] | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description=(
            "Input size over the last feature map's size. Stages whose stride would exceed it "
            "lose their stride and dilate by it instead, as torchvision's "
            "`replace_stride_with_dilation` and timm's `output_stride` do (8 or 16 for "
            "DeepLab-style segmentation)."
        ),
    )
    head: Head = Field(description="What follows the last stage.")
    init: Init = Field(default_factory=Init, description="How weights are initialised.")


def all_field_names() -> set[str]:
    """Every key the language knows, for did-you-mean suggestions."""
    models = [Spec, Input, Stage, Head, Init, BlockType, BlockUse, Shortcut, Layer, *OPS.values()]
    return {name for model in models for name in model.model_fields}


def _bare_ops() -> list[str]:
    """Ops a layer may name bare (`- relu`): those whose settings are all optional."""
    return [
        op
        for op, field in Layer.model_fields.items()
        if not any(f.is_required() for f in _op_model(field).model_fields.values())
    ]


def _op_model(field: Any) -> type[Model]:
    return next(t for t in typing.get_args(field.annotation) if t is not type(None))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec language, with the short forms (`shortcut: B`) allowed."""
    schema = Spec.model_json_schema()
    short_forms = {
        "Shortcut": {"enum": ["A", "B", "C", "none"]},
        "BlockUse": {"type": "string"},
        "Layer": {"enum": _bare_ops()},
    }
    for name, alternative in short_forms.items():
        body = schema["$defs"][name]
        schema["$defs"][name] = {"anyOf": [alternative, body]}
    # A thin spec (`extends:`) takes the required keys from its parent, so require them only
    # without extends; otherwise editors flag every thin spec (cifar_resnet20.yaml) as invalid.
    schema["if"] = {"required": ["extends"]}
    schema["else"] = {"required": schema.pop("required")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
