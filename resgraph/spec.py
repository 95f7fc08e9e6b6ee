"""The spec language: pydantic models, unknown keys are errors.

Numbers that may depend on parameters (`blocks: n`, `out: width * 4`) are `IntExpr`:
an int, or a whitelisted expression string evaluated later by `resgraph.expr`.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Any, Literal

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


# ---------------------------------------------------------------- layers


class Conv(Model):
    """2-D convolution; padding defaults to (kernel - 1) // 2, 'same' for odd kernels."""

    name: Name | None = None
    out: IntExpr
    kernel: IntExpr
    stride: IntExpr = 1
    padding: IntExpr | None = None
    groups: IntExpr = 1
    bias: bool = False


class BatchNorm(Model):
    """Batch normalisation over channels."""

    name: Name | None = None
    eps: float = Field(1e-5, gt=0, lt=1)
    momentum: float = Field(0.1, gt=0, lt=1)


class ReLU(Model):
    """Rectified linear unit."""

    name: Name | None = None


class Pool(Model):
    """Max or average pooling; stride defaults to the kernel, padding to (kernel - 1) // 2."""

    name: Name | None = None
    kernel: IntExpr
    stride: IntExpr | None = None
    padding: IntExpr | None = None
    ceil_mode: bool = False


class AvgPool(Pool):
    count_include_pad: bool = True


class Linear(Model):
    """Fully-connected layer on a flattened input."""

    name: Name | None = None
    out: IntExpr
    bias: bool = True


class Add(Model):
    """The residual addition: where the shortcut joins the branch inside a block."""

    name: Name | None = None


class SqueezeExcite(Model):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from a 2-layer bottleneck MLP."""

    name: Name | None = None
    reduction: IntExpr = Field(16, description="Hidden units are channels // reduction.")


OPS: dict[str, type[Model]] = {
    "conv": Conv,
    "bn": BatchNorm,
    "relu": ReLU,
    "maxpool": Pool,
    "avgpool": AvgPool,
    "linear": Linear,
    "add": Add,
    "se": SqueezeExcite,
}


class Layer(Model):
    """One op, written as a single-key mapping (`- conv: {out: 64, kernel: 7}`) or a bare name."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    conv: Conv | None = None
    bn: BatchNorm | None = None
    relu: ReLU | None = None
    maxpool: Pool | None = None
    avgpool: AvgPool | None = None
    linear: Linear | None = None
    add: Add | None = None
    se: SqueezeExcite | None = None

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
    def args(self) -> Model:
        """The op's settings."""
        return getattr(self, self.op)


# ---------------------------------------------------------------- blocks and shortcuts


def _default_projection() -> list[Layer]:
    return [
        Layer(conv=Conv(out="out_channels", kernel=1, stride="stride")),
        Layer(bn=BatchNorm()),
    ]


class Shortcut(Model):
    """How a block's input reaches its add: A/B/C as in the paper, or none (plain nets)."""

    option: Literal["A", "B", "C", "none"]
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

    description: str | None = None
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
    layers: list[Layer] = Field(min_length=1)


class BlockUse(Model):
    """A reference to a block type, optionally setting its parameters or stride placement."""

    type: Name
    stride_on: Name | None = None
    params: dict[ParamName, IntExpr] = Field(default_factory=dict)
    _short = _short_form("type")


# ---------------------------------------------------------------- the network


class Input(Model):
    channels: int = Field(gt=0, le=MAX_SIZE)
    height: int = Field(gt=0, le=MAX_SIZE)
    width: int = Field(gt=0, le=MAX_SIZE)


class Stage(Model):
    """A run of blocks at one width; the first block takes the stage's stride."""

    name: Name | None = None
    blocks: IntExpr
    width: IntExpr
    stride: IntExpr = 1
    block: BlockUse | None = None
    shortcut: Shortcut | None = None


class Head(Model):
    """Optional layers (a pre-activation net's final BN-ReLU), global average pool, classifier."""

    layers: list[Layer] = Field(default_factory=list)
    pool: Literal["avg"] = "avg"
    classes: IntExpr
    name: Name = "fc"


class Init(Model):
    """Initialisation: He (MSRA) for convs, BN weight 1 and bias 0."""

    conv: Literal["kaiming_normal"] = "kaiming_normal"
    zero_init_residual: bool = Field(
        False,
        description="Zero the last BN of each residual branch, so each block starts as identity.",
    )


class Spec(Model):
    """A network: input, stem, stages of blocks, head."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="resgraph spec")

    name: Name
    description: str | None = None
    extends: str | None = Field(None, description="Another spec file this one refines.")
    params: dict[ParamName, IntExpr] = Field(default_factory=dict)
    input: Input
    shortcut: Shortcut = Field(default_factory=lambda: Shortcut(option="B"))
    block: BlockUse | None = None
    block_types: dict[Name, BlockType] = Field(default_factory=dict)
    stem: list[Layer] = Field(default_factory=list)
    stages: list[Stage] = Field(min_length=1)
    head: Head
    init: Init = Field(default_factory=Init)


def all_field_names() -> set[str]:
    """Every key the language knows, for did-you-mean suggestions."""
    models = [Spec, Input, Stage, Head, Init, BlockType, BlockUse, Shortcut, Layer, *OPS.values()]
    return {name for model in models for name in model.model_fields}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec language, with the short forms (`shortcut: B`) allowed."""
    schema = Spec.model_json_schema()
    short_forms = {
        "Shortcut": {"enum": ["A", "B", "C", "none"]},
        "BlockUse": {"type": "string"},
        "Layer": {"enum": ["bn", "relu", "add"]},
    }
    for name, alternative in short_forms.items():
        body = schema["$defs"][name]
        schema["$defs"][name] = {"anyOf": [alternative, body]}
    # A spec that `extends:` another takes what it leaves out from its parent.
    schema["if"] = {"required": ["extends"]}
    schema["else"] = {"required": schema.pop("required")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
