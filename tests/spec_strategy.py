"""A hypothesis strategy for spec dicts across the whole spec language.

`specs()` draws small networks (channels <= 32, inputs <= 40 px, <= 3 stages of <= 2 blocks)
that use every feature of the language (resgraph/spec.py, docs/reference.md):

- block types the spec defines, built from any branch layers (conv with groups, padding and
  bias, bn with eps/momentum, relu, max/avg pools with ceil_mode and count_include_pad, se),
  post-activation or pre-activation layouts, layers after the add or none, no add at all;
  `stride_on` and `projection_from` naming ANY branch layer (so some name a bn or relu:
  the compiler must reject those it cannot honour, with a located message);
- `params` and `let` with expressions over `width`, `in_channels` and the params;
- every library block, with BlockUse `params` and `stride_on` overrides;
- shortcut options A (zero_pad end and split), B, C and none; custom projections (ResNet-D
  avgpool then conv, conv only, conv + bn, 3x3 conv + bn + relu, with se);
- per-stage block and shortcut overrides, stage names, strides 1-3;
- odd and non-square inputs; stems (none, conv, ImageNet conv + maxpool with ceil_mode,
  deep stems with groups, avgpool with count_include_pad); head layers; fc and fcn heads,
  with a window; BN eps/momentum; `init.zero_init_residual`; numbers written as ints or as
  expressions;
- backbones (issue 13): conv `dilation` (a number, or the block names `dilation` and
  `first_dilation`), stage `dilation`, top-level `output_stride` 8/16/32, a features head
  returning an ordered subset of the stages (or all), `drop_path_rate`.

Most drawn specs are valid (about 70%); the rest exercise the compiler's rejections.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

LIBRARY_BLOCKS = [
    "basic",
    "bottleneck",
    "plain_basic",
    "plain_bottleneck",
    "preact_basic",
    "preact_bottleneck",
]
# Branch layer names of each library block type (what stride_on may name).
LIBRARY_LAYERS = {
    "basic": ["conv1", "bn1", "relu1", "conv2", "bn2"],
    "bottleneck": ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3"],
    "plain_basic": ["conv1", "bn1", "relu1", "conv2", "bn2"],
    "plain_bottleneck": ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3"],
    "preact_basic": ["bn1", "relu1", "conv1", "bn2", "relu2", "conv2"],
    "preact_bottleneck": ["bn1", "relu1", "conv1", "bn2", "relu2", "conv2", "bn3", "relu3"],
}
USER_BLOCKS = ["u1", "u2"]  # every spec defines two block types of its own
# Identifiers the generated source uses itself: as a block's `let` name, a block type's name
# or a stage's name they must be rejected or renamed, never shadow what the code calls.
RISKY_NAMES = [
    "max",
    "min",
    "SqueezeExcite",
    "ZeroPadShortcut",
    "ConvClassifier",
    "projection",
    "fold_batchnorm",
    "build_model",
    "print",
    "__class__",
    "RandomNet",
]
# Stem and head layer names that the ONNX graph or the generated module also use.
RISKY_LAYER_NAMES = ["logits", "batch", "x", "out", "identity", "stride", "torch", "nn"]
# Stage names a features head returns as dict keys and ONNX outputs: like stem layers, the
# ONNX input and output, generated locals.
RISKY_STAGE_NAMES = ["conv1", "logits", "input", "x", "torch"]


def risky_let(draw: st.DrawFn) -> dict[str, Any]:
    """Rarely, an extra `let` value named like something the generated code calls."""
    if draw(st.integers(0, 7)):
        return {}
    return {draw(st.sampled_from(RISKY_NAMES[:-1])): "1"}


def number(draw: st.DrawFn, value: int) -> int | str:
    """`value` as an int or as an expression equal to it."""
    form = draw(st.integers(0, 5))
    if form == 3:
        return f"{value - 1} + 1"
    if form == 4:
        return f"2 * {value} - {value}"
    if form == 5:
        return f"max({value}, 1)"
    return value


# ---------------------------------------------------------------- layers


def bn_args(draw: st.DrawFn, eps: float) -> dict[str, Any]:
    """A BN's settings: the network's eps (one value, so --fold-bn applies), maybe momentum;
    rarely an eps of its own (then --fold-bn must refuse with a located message)."""
    args: dict[str, Any] = {}
    if eps != 1e-5:
        args["eps"] = eps
    if not draw(st.integers(0, 30)):
        args["eps"] = draw(st.sampled_from([1e-3, 2e-5]))
    if not draw(st.integers(0, 4)):
        args["momentum"] = draw(st.sampled_from([0.01, 0.2]))
    return args


def conv_args(draw: st.DrawFn, out: Any, in_block: bool) -> dict[str, Any]:
    kernel = draw(st.sampled_from([1, 1, 3, 3, 5, 2]))
    args: dict[str, Any] = {"out": out, "kernel": number(draw, kernel)}
    if not draw(st.integers(0, 5)):
        args["stride"] = number(draw, draw(st.sampled_from([1, 2])))
    if not draw(st.integers(0, 5)):
        args["padding"] = draw(st.integers(0, (kernel + 1) // 2))
    if not draw(st.integers(0, 4)):
        args["groups"] = "g" if in_block else draw(st.sampled_from([1, 2]))
    if not draw(st.integers(0, 5)):
        args["bias"] = True
    if not draw(st.integers(0, 6)):  # atrous: a number, or the block's own dilations
        names = ["dilation", "first_dilation"] if in_block else []
        args["dilation"] = draw(st.sampled_from([2, 3, number(draw, 2), *names]))
    return args


def pool_args(draw: st.DrawFn, op: str) -> dict[str, Any]:
    kernel = draw(st.integers(1, 3))
    args: dict[str, Any] = {"kernel": number(draw, kernel)}
    if draw(st.booleans()):
        args["stride"] = draw(st.integers(1, 2))
    if draw(st.booleans()):
        args["padding"] = draw(st.integers(0, max(kernel // 2, draw(st.integers(0, 1)))))
    if not draw(st.integers(0, 3)):
        args["ceil_mode"] = True
    if op == "avgpool" and draw(st.booleans()):
        args["count_include_pad"] = False
    return args


def branch_layer(draw: st.DrawFn, name: str, eps: float, outs: list[Any]) -> dict[str, Any]:
    """One named layer of a block type's branch, of any op a block may hold."""
    op = draw(
        st.sampled_from(["conv", "conv", "conv", "bn", "bn", "relu", "maxpool", "avgpool", "se"])
    )
    if op == "conv":
        args = conv_args(draw, draw(st.sampled_from(outs)), in_block=True)
    elif op == "bn":
        args = bn_args(draw, eps)
    elif op == "relu":
        args = {}
    elif op == "se":
        args = {"reduction": number(draw, draw(st.integers(1, 4)))}
    else:
        args = pool_args(draw, op)
    return {op: {"name": name, **args}}


@st.composite
def free_block(draw: st.DrawFn, eps: float) -> dict[str, Any]:
    """A block type of random layers; stride_on and projection_from name any branch layer."""
    outs = ["width", "width * e", "mid", "in_channels", "max(width // 2, 1)"]
    n = draw(st.integers(1, 5))
    names = [f"l{i}" for i in range(n)]
    branch = [branch_layer(draw, name, eps, outs) for name in names]
    if draw(st.booleans()):  # end the branch on a conv (+ bn) of width channels, as usual
        branch.append({"conv": {"name": "last", **conv_args(draw, "width * e", in_block=True)}})
        names.append("last")
        if draw(st.booleans()):
            branch.append({"bn": {"name": "last_bn", **bn_args(draw, eps)}})
            names.append("last_bn")
    post = draw(
        st.sampled_from(
            [
                [],
                ["relu"],
                [{"bn": bn_args(draw, eps)}, "relu"],
                ["relu", {"se": {"reduction": 2}}],
                # a conv after the add may change the block's output channels
                [{"conv": {"name": "post", "out": "width * 2", "kernel": 1}}, "relu"],
            ]
        )
    )
    has_add = draw(st.integers(0, 6)) > 0
    block: dict[str, Any] = {
        "params": {"e": draw(st.integers(1, 2)), "g": draw(st.sampled_from([1, 2]))},
        "let": {
            "mid": draw(st.sampled_from(["max(width // 2, 1) * g", "width * g", "in_channels"]))
        },
        "layers": [*branch, *(["add"] if has_add else []), *post],
    }
    if draw(st.integers(0, 4)):
        block["stride_on"] = draw(st.sampled_from(names))
    if draw(st.booleans()):
        block["projection_from"] = draw(st.sampled_from(names))
    if draw(st.booleans()):
        block["description"] = draw(st.sampled_from(["Random layers.", 'Quotes " and \\ too.']))
    return block


@st.composite
def classic_block(draw: st.DrawFn, eps: float) -> dict[str, Any]:
    """A familiar block written in the spec: post- or pre-activation, maybe grouped, SE, pools;
    projection_from on any of its branch layers."""
    preact = draw(st.booleans())
    bn = {"bn": {"name": "bn1", **bn_args(draw, eps)}}
    bn2 = {"bn": {"name": "bn2", **bn_args(draw, eps)}}
    conv1 = {"conv": {"name": "conv1", "out": "mid", "kernel": draw(st.sampled_from([1, 3]))}}
    conv2 = {"conv": {"name": "conv2", "out": "width * e", "kernel": 3, "groups": "g"}}
    extra: list[Any] = []
    if draw(st.booleans()):
        pool = draw(st.sampled_from(["maxpool", "avgpool"]))
        extra.append({pool: {"name": "pool", **pool_args(draw, pool)}})
    if draw(st.booleans()):
        extra.append({"se": {"name": "gate", "reduction": number(draw, draw(st.integers(1, 4)))}})
    if preact:
        branch = [bn, {"relu": {"name": "relu1"}}, conv1, bn2, {"relu": {"name": "relu2"}}]
        branch += [*extra[:1], conv2, *extra[1:]]
        post: list[Any] = []
    else:
        branch = [conv1, bn, {"relu": {"name": "relu1"}}, *extra[:1], conv2, bn2, *extra[1:]]
        post = ["relu"]
    names = [next(iter(layer.values()))["name"] for layer in branch]
    block: dict[str, Any] = {
        "params": {"e": draw(st.integers(1, 2)), "g": draw(st.sampled_from([1, 2]))},
        "let": {
            "mid": draw(st.sampled_from(["width", "max(width // g, 1) * g", "in_channels"])),
            **risky_let(draw),
        },
        "stride_on": draw(st.sampled_from([n for n in names if n.startswith(("conv", "pool"))])),
        "layers": [*branch, "add", *post],
    }
    if draw(st.integers(0, 2)):
        block["projection_from"] = draw(st.sampled_from(names))
    return block


@st.composite
def user_block(draw: st.DrawFn, eps: float) -> dict[str, Any]:
    return draw(free_block(eps) | classic_block(eps))


def block_use(draw: st.DrawFn) -> Any:
    """A block reference: a library type or one of the spec's own, maybe with settings."""
    name = draw(st.sampled_from(LIBRARY_BLOCKS + USER_BLOCKS + USER_BLOCKS))
    if not draw(st.integers(0, 2)):
        return name
    use: dict[str, Any] = {"type": name}
    params: dict[str, Any] = {}
    if name in LIBRARY_LAYERS and draw(st.booleans()):
        convs = [n for n in LIBRARY_LAYERS[name] if n.startswith("conv")]
        use["stride_on"] = draw(
            st.sampled_from(LIBRARY_LAYERS[name] if not draw(st.integers(0, 4)) else convs)
        )
    if name in ("bottleneck", "plain_bottleneck"):
        params["expansion"] = draw(st.integers(1, 4))
        params["groups"] = draw(st.sampled_from([1, 2, 4]))
        params["base_width"] = draw(st.sampled_from([32, 64, 128]))
    elif name == "preact_bottleneck":
        params["expansion"] = draw(st.integers(1, 4))
    elif name in USER_BLOCKS:
        params["e"] = number(draw, draw(st.integers(1, 2)))
        params["g"] = draw(st.sampled_from([1, 2, "k"]))
    if params and draw(st.booleans()):
        use["params"] = params
    return use


# ---------------------------------------------------------------- shortcuts


def projection(draw: st.DrawFn, eps: float) -> list[Any]:
    kind = draw(st.sampled_from(["resnet_d", "conv", "conv_bn", "conv3_bn_relu", "conv_bn_se"]))
    bn = {"bn": bn_args(draw, eps)}
    if kind == "resnet_d":  # specs/resnet50_d.yaml
        return [
            {
                "avgpool": {
                    "kernel": "stride",
                    "stride": "stride",
                    "padding": 0,
                    "ceil_mode": draw(st.booleans()),
                    "count_include_pad": draw(st.booleans()),
                }
            },
            {"conv": {"out": "out_channels", "kernel": 1}},
            bn,
        ]
    conv = {"out": "out_channels", "kernel": 1, "stride": "stride"}
    if kind == "conv":  # pre-activation nets (specs/preact_resnet18.yaml)
        return [{"conv": conv}]
    if kind == "conv_bn":
        return [{"conv": {**conv, "bias": draw(st.booleans())}}, bn]
    if kind == "conv3_bn_relu":
        return [{"conv": {**conv, "kernel": 3}}, bn, "relu"]
    return [{"conv": conv}, bn, {"se": {"reduction": 2}}]


def shortcut(draw: st.DrawFn, eps: float) -> Any:
    """A shortcut policy: A (end or split), B or C (maybe with custom layers), none."""
    option = draw(st.sampled_from(["A", "A", "B", "B", "C", "none"]))
    if option == "A" and draw(st.booleans()):
        return {"option": "A", "zero_pad": draw(st.sampled_from(["end", "split"]))}
    if option in ("B", "C") and draw(st.booleans()):
        return {"option": option, "projection": projection(draw, eps)}
    return option


# ---------------------------------------------------------------- network


def stem_layers(draw: st.DrawFn, eps: float) -> list[Any]:
    kind = draw(st.sampled_from(["none", "conv", "conv_bn", "imagenet", "deep", "pool"]))
    if kind == "none":
        return []
    if kind == "pool":
        return [{"avgpool": {"kernel": 2, "stride": 1, "padding": 1, "count_include_pad": False}}]
    if kind != "deep":
        stem: list[Any] = [
            {
                "conv": {
                    "name": draw(st.sampled_from(["conv1"] * 9 + RISKY_LAYER_NAMES)),
                    **conv_args(draw, number(draw, draw(st.integers(2, 12))), in_block=False),
                }
            }
        ]
        if kind != "conv":
            stem += [{"bn": {"name": "bn1", **bn_args(draw, eps)}}, "relu"]
        if kind == "imagenet":
            stem.append({"maxpool": {"kernel": 3, "stride": 2, "ceil_mode": draw(st.booleans())}})
        return stem
    groups = draw(st.sampled_from([1, 2]))
    stem = []
    for i in range(draw(st.integers(2, 3))):
        conv: dict[str, Any] = {
            "out": draw(st.integers(1, 4)) * 2,
            "kernel": 3,
            "stride": draw(st.sampled_from([1, 2])) if i == 0 else 1,
        }
        if i > 0 and groups > 1:
            conv["groups"] = groups
        stem += [{"conv": conv}, {"bn": bn_args(draw, eps)}, "relu"]
    if draw(st.booleans()):
        stem.append({"se": {"reduction": 2}})
    if draw(st.booleans()):
        stem.append({"maxpool": {"kernel": 3, "stride": 2, "padding": 1}})
    return stem


def head(draw: st.DrawFn, eps: float) -> dict[str, Any]:
    result: dict[str, Any] = {"classes": number(draw, draw(st.integers(1, 10)))}
    layers = draw(
        st.sampled_from(
            [
                [],
                [],
                [{"bn": {"name": "norm", **bn_args(draw, eps)}}, "relu"],
                [{"bn": bn_args(draw, eps)}, "relu", {"se": {"reduction": 2}}],
                [{"conv": {"name": "head_conv", "out": 6, "kernel": 1}}, {"bn": {}}, "relu"],
                [{"relu": {"name": draw(st.sampled_from(RISKY_LAYER_NAMES))}}],
                [{"maxpool": {"kernel": 2, "ceil_mode": True}}],
            ]
        )
    )
    if layers:
        result["layers"] = layers
    if not draw(st.integers(0, 3)):
        result["name"] = "classifier"
    if not draw(st.integers(0, 4)):
        result["kind"] = "fcn"
        if draw(st.booleans()):
            result["window"] = draw(st.integers(1, 2))
    return result


def features_head(draw: st.DrawFn, drawn: dict[str, Any], stages: list[str]) -> dict[str, Any]:
    """A backbone's head: all stages, or a subset of them in network order (rarely out of
    order, or naming no stage: refused); sometimes keeping a classifier's settings."""
    result: dict[str, Any] = {"kind": "features"}
    choice = draw(st.integers(0, 9))
    if choice >= 4:
        picked = [name for name in stages if draw(st.booleans())] or stages[-1:]
        result["stages"] = picked
    elif choice == 1:
        result["stages"] = list(reversed(stages))
    elif choice == 2 and draw(st.integers(0, 2)) == 0:
        result["stages"] = []
    if choice == 3:  # settings a backbone ignores or refuses
        result.update({k: v for k, v in drawn.items() if k != "kind"})
    return result


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec as a dict, small enough that one example runs in well under a second."""
    eps = draw(st.sampled_from([1e-5, 1e-5, 1e-3]))
    stages = []
    for i in range(draw(st.integers(1, 3))):
        stage: dict[str, Any] = {
            "blocks": draw(st.sampled_from([1, 2, "n"])),
            "width": draw(st.sampled_from([2, 3, 4, 6, 8, "2 * k", "4 * k", "w"])),
        }
        if draw(st.integers(0, 3)):
            stage["stride"] = draw(st.sampled_from([1, 2, 2, 3]))
        if not draw(st.integers(0, 2)):
            stage["block"] = block_use(draw)
        if not draw(st.integers(0, 3)):
            stage["shortcut"] = shortcut(draw, eps)
        if not draw(st.integers(0, 4)):
            names = [f"stage{i}", f"stage{i}", "layer1", "features"]
            if not draw(st.integers(0, 2)):
                names = RISKY_STAGE_NAMES
            stage["name"] = draw(st.sampled_from(names))
        if not draw(st.integers(0, 5)):
            stage["dilation"] = number(draw, draw(st.integers(1, 3)))
        stages.append(stage)
    the_head = head(draw, eps)
    if not draw(st.integers(0, 3)):
        the_head = features_head(
            draw, the_head, [s.get("name", f"layer{i + 1}") for i, s in enumerate(stages)]
        )
    height = draw(st.integers(5, 40))
    square = the_head.get("kind") == "fcn" and "window" not in the_head
    width = height if square or draw(st.booleans()) else draw(st.integers(5, 40))
    spec: dict[str, Any] = {
        "name": "random_net",
        "params": {"n": draw(st.integers(1, 2)), "k": draw(st.integers(1, 2)), "w": "2 * k + 1"},
        "input": {"channels": draw(st.integers(1, 4)), "height": height, "width": width},
        "shortcut": shortcut(draw, eps),
        "stem": stem_layers(draw, eps),
        "block": block_use(draw),
        "block_types": {"u1": draw(user_block(eps)), "u2": draw(user_block(eps))},
        "stages": stages,
        "head": the_head,
    }
    if draw(st.booleans()):
        spec["init"] = {"zero_init_residual": draw(st.booleans())}
    if not draw(st.integers(0, 4)):
        spec["output_stride"] = draw(st.sampled_from([8, 16, 32]))
        if draw(st.integers(0, 3)):  # strides that pass through it: a stride-4 stem, then 2s
            reach = 4 * 2 ** len(stages)
            spec["output_stride"] = draw(st.sampled_from([s for s in (8, 16, 32) if s <= reach]))
            for stage in stages:
                stage["stride"] = 2
                stage.pop("dilation", None)  # refused: one or the other
            spec["stem"] = [
                {"conv": {"out": draw(st.integers(2, 8)), "kernel": 3, "stride": 2}},
                {"bn": bn_args(draw, eps)},
                "relu",
                {"maxpool": {"kernel": 3, "stride": 2, "padding": 1}},
            ]
    if not draw(st.integers(0, 3)):
        spec["drop_path_rate"] = draw(st.sampled_from([0, 0.1, 0.2, 0.3, 0.4, 0.5]))
    if not draw(st.integers(0, 9)):  # a block type named like a library one, or like code
        rename_block_type(spec, "u1", draw(st.sampled_from(["basic", "bottleneck", *RISKY_NAMES])))
    return spec


def rename_block_type(spec: dict[str, Any], old: str, new: str) -> None:
    """Rename a block type the spec defines, and every use of it."""
    spec["block_types"] = {new if k == old else k: v for k, v in spec["block_types"].items()}
    for owner in [spec, *spec["stages"]]:
        use = owner.get("block")
        if use == old:
            owner["block"] = new
        elif isinstance(use, dict) and use.get("type") == old:
            use["type"] = new
