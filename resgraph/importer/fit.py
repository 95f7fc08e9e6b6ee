"""Found blocks to the spec a careful person would write: stages, block types, shortcuts.

Each stage gets candidate block uses, library types first (with their parameters and
`stride_on` read off the layers) and a block type written from the stage's own layers last.
`spec_for` writes the spec of one choice per stage; the caller compiles it and moves a stage
on to its next candidate where the compiled graph differs from the source.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any

from resgraph.expand import library
from resgraph.importer.layers import Layer
from resgraph.importer.source import ImportFailure
from resgraph.importer.structure import Found, FoundBlock

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
BN_EPS = 1e-5
DEFAULT_PROJECTION = [{"conv": {"out": "out_channels", "kernel": 1, "stride": "stride"}}, "bn"]


@dataclass
class StageFit:
    """A stage's blocks and, once chosen, how the spec writes them."""

    blocks: list[FoundBlock]
    name: str | None  # from the source's module names (layer1, ...), else None
    candidates: list[tuple[Any, int, dict[str, Any] | None]]  # (block use, width, own type)
    choice: int = 0
    strided: int | None = None  # the position of the layer that takes a block's stride
    dilation: int = 1  # the stage's dilation (its later blocks' dilated convs have it)
    # per layer position: the dilation a block type must write there (None: the block's own
    # by the language's rule); all None when every conv follows the rule
    dilations: list[int | None] | None = None

    @property
    def first(self) -> FoundBlock:
        return self.blocks[0]

    stride: int = 1  # the stage's stride: its first block's strided layer's, over the others'


def plain_units() -> list[list[tuple[str, int]]]:
    """The (kind, kernel) lists of the library's plain block types."""
    units = []
    for source in library().values():
        layers = source.block_type.layers
        if all(layer.op != "add" for layer in layers):
            units.append([(layer.op, getattr(layer.args, "kernel", 0) or 0) for layer in layers])
    return units


def stages(found: Found, origin: str) -> list[StageFit]:
    """Blocks grouped into stages: by the source's names where they say (layer1.0, ...),
    else a stage starts where a block downsamples, changes width or changes its layers."""
    groups = _named_stages(found.blocks) or _shaped_stages(found.blocks)
    fits = [StageFit(blocks, name, []) for name, blocks in groups]
    for fit in fits:
        fit.strided, fit.stride = _stage_stride(fit)
    for fit in fits:  # a stage that never downsamples places the stride as its kin do
        kin = [f for f in fits if _signature(f.first) == _signature(fit.first)]
        fit.strided = next((f.strided for f in [fit, *kin] if f.strided is not None), None)
    previous = 1
    for fit in fits:
        _place_dilation(fit, previous)
        previous = fit.dilation
    for fit in fits:
        library = _library_uses(fit) if not any(fit.dilations or ()) else []
        fit.candidates = [*library, _own_type(fit, origin)]
    return fits


def _dilated(block: FoundBlock) -> list[int]:
    """Positions of the convs that take a block's dilation: kernels other than 1, before the
    add; the first of them takes `first_dilation`."""
    end = len(block.pre) + len(block.branch)
    return [
        i
        for i, layer in enumerate(block.layers[:end])
        if layer.kind == "conv" and layer.attrs["kernel"] != 1
    ]


def _place_dilation(fit: StageFit, previous: int) -> None:
    """The stage's dilation, and where its blocks' convs leave the language's rule (a block's
    first dilated conv at the previous stage's dilation in the first block, the stage's
    elsewhere, 1x1 convs at 1)."""
    first = fit.first
    positions = _dilated(first)
    evidence = [b.layers[_dilated(b)[0]].attrs["dilation"] for b in fit.blocks[1:] if _dilated(b)]
    evidence += [first.layers[i].attrs["dilation"] for i in positions[1:]]
    fit.dilation = (
        evidence[0]
        if evidence
        else (first.layers[positions[0]].attrs["dilation"] if positions else previous)
    )
    count = len(first.layers)
    written: list[int | None] = [None] * count
    for i in range(count):
        if first.layers[i].kind != "conv":
            continue
        found = {b.layers[i].attrs["dilation"] for b in fit.blocks if len(b.layers) == count}
        ruled = all(
            b.layers[i].attrs["dilation"]
            == _implied(b, i, fit.dilation, previous if j == 0 else fit.dilation)
            for j, b in enumerate(fit.blocks)
            if len(b.layers) == count
        )
        if not ruled:
            written[i] = found.pop() if len(found) == 1 else first.layers[i].attrs["dilation"]
    fit.dilations = written


def _implied(block: FoundBlock, position: int, dilation: int, first_dilation: int) -> int:
    """The dilation the language gives the conv at `position` when the block type is silent."""
    dilated = _dilated(block)
    if position not in dilated:
        return 1
    return first_dilation if position == dilated[0] else dilation


def _named_stages(blocks: list[FoundBlock]) -> list[tuple[str | None, list[FoundBlock]]] | None:
    """Stages from module paths `stage.index.layer`, if every block names one consistently."""
    groups: list[tuple[str | None, list[FoundBlock]]] = []
    for block in blocks:
        places = {
            tuple(m.split(".")[:2])
            for layer in block.layers + block.shortcut
            if (m := layer.module) and m.count(".") >= 2
        }
        if len(places) != 1:
            return None
        ((stage, index),) = places
        if groups and groups[-1][0] == stage:
            if index != str(len(groups[-1][1])):
                return None
            groups[-1][1].append(block)
        elif index == "0" and all(stage != g[0] for g in groups) and NAME.match(stage):
            groups.append((stage, [block]))
        else:
            return None
    return groups


def _shaped_stages(blocks: list[FoundBlock]) -> list[tuple[str | None, list[FoundBlock]]]:
    groups: list[tuple[str | None, list[FoundBlock]]] = []
    for block in blocks:
        starts = (
            not groups
            or max(block.excess) > 1
            or block.in_shape[0] != block.out_shape[0]
            or _signature(block) != _signature(groups[-1][1][-1])
        )
        if starts:
            groups.append((None, [block]))
        else:
            groups[-1][1].append(block)
    return groups


def _signature(block: FoundBlock) -> list[tuple[Any, ...]]:
    return [(layer.kind, layer.attrs.get("kernel")) for layer in block.layers]


# --- library block types -------------------------------------------------------------------


def _library_uses(fit: StageFit) -> list[tuple[Any, int, dict[str, Any] | None]]:
    """Library types whose layers are the stage's, with parameters read off the layers."""
    sample = _projecting(fit) or fit.first
    kinds = [layer.kind for layer in sample.layers]
    uses = []
    for type_name, source in library().items():
        block_type = source.block_type
        if [layer.op for layer in block_type.layers] != kinds:
            continue
        names = [layer.args.name for layer in block_type.layers]
        if _projection_point(fit, names) != (
            block_type.projection_from if _projecting(fit) else None
        ):
            continue
        found = _parameters(type_name, block_type.params, sample)
        if found is None:
            continue
        width, params = found
        stride_on = names[fit.strided] if fit.strided is not None else None
        use: dict[str, Any] = {"type": type_name}
        if stride_on is not None and stride_on != block_type.stride_on:
            use["stride_on"] = stride_on
        changed = {k: v for k, v in params.items() if block_type.params.get(k) != v}
        if changed:
            use["params"] = changed
        uses.append((use if len(use) > 1 else type_name, width, None))
    return uses


def _projecting(fit: StageFit) -> FoundBlock | None:
    return next((b for b in fit.blocks if b.shortcut_kind in ("projection", "zero_pad")), None)


def _projection_point(fit: StageFit, names: list[str | None]) -> str | None:
    """The name (by position) of the layer a stage's projections read; None: the input."""
    block = _projecting(fit)
    if block is None or not block.pre:
        return None
    return names[len(block.pre) - 1]


def _parameters(
    type_name: str, defaults: dict[str, int], block: FoundBlock
) -> tuple[int, dict[str, int]] | None:
    """The stage width and block parameters that give this block's conv widths, if any."""
    outs = [layer.attrs["out"] for layer in block.layers if layer.kind == "conv"]
    groups = [layer.attrs["groups"] for layer in block.layers if layer.kind == "conv"]
    if "base_width" in defaults:  # bottleneck, plain_bottleneck: mid = width*base//64*groups
        mid, out, g = outs[0], outs[2], groups[1]
        for expansion in dict.fromkeys((defaults["expansion"], out // mid if mid else 0)):
            if expansion <= 0 or out % expansion:
                continue
            width = out // expansion
            if (mid * 64) % (width * g):
                continue
            base_width = mid * 64 // (width * g)
            if width * base_width // 64 * g == mid:
                return width, {"expansion": expansion, "groups": g, "base_width": base_width}
        return None
    if any(g != 1 for g in groups):
        return None
    if "expansion" in defaults:  # preact_bottleneck: width, then width * expansion
        width, out = outs[0], outs[-1]
        if out % width:
            return None
        return width, {"expansion": out // width}
    return outs[0], {}


# --- a block type of the stage's own ------------------------------------------------------


def _own_type(fit: StageFit, origin: str) -> tuple[Any, int, dict[str, Any] | None]:
    """A block type written from the stage's layers, sizes over `width` (its first conv's)."""
    sample = _projecting(fit) or fit.first
    layers = sample.layers
    convs = [layer for layer in layers if layer.kind == "conv"]
    width = convs[0].attrs["out"] if convs else sample.out_shape[0]
    strided = fit.strided
    point = len(sample.pre) - 1 if sample.pre else None
    names = _block_names(layers)
    written = []
    for i, layer in enumerate(layers):
        named = names[i] or (f"{layer.kind}{i + 1}" if i in (strided, point) else None)
        names[i] = named
        dilation = (fit.dilations or [None] * len(layers))[i]
        factor = fit.stride if i == strided and sample is fit.first else 1
        sizes: dict[str, int | str] = {}
        if layer.kind == "conv":
            alike = [b for b in fit.blocks if len(b.layers) == len(layers)]
            ins = [b.in_shape[0] for b in alike]
            for key in ("out", "groups"):
                values = [b.layers[i].attrs[key] for b in alike]
                sizes[key] = 1 if set(values) == {1} else _size(values, width, ins)
        written.append(
            _layer_entry(
                layer,
                named,
                width,
                stride_over=factor,
                origin=origin,
                dilation=dilation,
                sizes=sizes,
            )
        )
    own: dict[str, Any] = {"description": f"Written by resgraph import from {origin}."}
    if strided is not None:
        own["stride_on"] = names[strided]
    if point is not None:
        own["projection_from"] = names[point]
    own["layers"] = unnamed_defaults(written)
    return "", width, own


def _stage_stride(fit: StageFit) -> tuple[int | None, int]:
    """(position of the layer that takes the stage's stride, the stride): where the first
    block's stride exceeds a later block's at the same layer, else where the first block
    strides beyond a layer's default; (None, 1) when it does not downsample."""
    first = fit.first
    later = next((b for b in fit.blocks[1:] if len(b.layers) == len(first.layers)), None)
    if later is not None:
        ratios = [
            a.stride // b.stride if a.stride % b.stride == 0 else 1
            for a, b in zip(first.layers, later.layers, strict=True)
        ]
    else:
        ratios = first.excess
    strided = [i for i, ratio in enumerate(ratios) if ratio > 1]
    branch = len(first.pre) + len(first.branch)  # stride_on names a layer before the add
    if len(strided) != 1 or (first.add is not None and strided[0] >= branch):
        return None, 1
    return strided[0], ratios[strided[0]]


def _block_names(layers: list[Layer]) -> list[str | None]:
    """The source's own names for a block's layers (the part after `stage.index.`), where
    they are valid and unique."""
    names: list[str | None] = []
    for layer in layers:
        module = layer.module or ""
        parts = module.split(".")
        tail = "_".join(parts[2:]) if len(parts) > 2 else ""
        names.append(tail if _valid(tail) and layer.kind != "add" else None)
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            names[i] = None
        elif name:
            seen.add(name)
    return names


def _valid(name: str | None) -> bool:
    return bool(name) and bool(NAME.match(name or "")) and not keyword.iskeyword(name or "")


def _size(values: list[int], width: int, ins: list[int]) -> int | str:
    """An expression that gives each block's value: over `width` (the stage's), over the
    block's `in_channels`, or a number."""
    for name, bases in (("width", [width] * len(values)), ("in_channels", ins)):
        if all(v == b for v, b in zip(values, bases, strict=True)):
            return name
        if all(b and v % b == 0 for v, b in zip(values, bases, strict=True)):
            ratios = {v // b for v, b in zip(values, bases, strict=True)}
            if len(ratios) == 1:
                return f"{name} * {ratios.pop()}"
        if all(v and b % v == 0 for v, b in zip(values, bases, strict=True)):
            ratios = {b // v for v, b in zip(values, bases, strict=True)}
            if len(ratios) == 1:
                return f"{name} // {ratios.pop()}"
    return values[0]


def _layer_entry(
    layer: Layer,
    name: str | None,
    width: int,
    *,
    stride_over: int,
    origin: str,
    dilation: int | None = None,
    sizes: dict[str, int | str] | None = None,
) -> Any:
    """One layer of a block type: sizes over `width`, its stride divided by the block's
    (`stride_over`, on the stride_on layer), its dilation left to the block's unless
    `dilation` says otherwise."""
    settings = layer_settings(layer, origin)
    sizes = sizes or {}
    if "groups" in sizes:
        settings.pop("groups", None)
    if stride_over > 1:
        own = layer.stride // stride_over
        default = layer.attrs["kernel"] if layer.kind in ("maxpool", "avgpool") else 1
        settings.pop("stride", None)
        if own != default:
            settings = _insert_after(settings, "kernel", "stride", own)
    if layer.kind == "conv":
        settings.pop("dilation", None)
        if dilation is not None:
            settings["dilation"] = dilation
    if layer.kind == "conv":
        settings["out"] = sizes.get("out", layer.attrs["out"])
        if "groups" in sizes and sizes["groups"] != 1:
            settings = _insert_after(
                settings,
                "padding" if "padding" in settings else "kernel",
                "groups",
                sizes["groups"],
            )
    return entry(layer.kind, settings, name)


def _insert_after(settings: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in settings.items():
        out[k] = v
        if k == after:
            out[key] = value
    return out


def layer_settings(layer: Layer, origin: str) -> dict[str, Any]:
    """A layer's settings as literal values, leaving out the language's defaults."""
    a = layer.attrs
    if layer.kind == "conv":
        dilation = a["dilation"]
        settings: dict[str, Any] = {"out": a["out"], "kernel": a["kernel"]}
        if a["stride"] != 1:
            settings["stride"] = a["stride"]
        if a["padding"] != dilation * ((a["kernel"] - 1) // 2):
            settings["padding"] = a["padding"]
        if a["groups"] != 1:
            settings["groups"] = a["groups"]
        if a["bias"]:
            settings["bias"] = True
        if dilation != 1:
            settings["dilation"] = dilation
        return settings
    if layer.kind == "bn":
        return {} if a["eps"] == BN_EPS else {"eps": float(a["eps"])}
    if layer.kind in ("maxpool", "avgpool"):
        settings = {"kernel": a["kernel"]}
        if a["stride"] != a["kernel"]:
            settings["stride"] = a["stride"]
        if a["padding"] != (a["kernel"] - 1) // 2:
            settings["padding"] = a["padding"]
        if a["ceil_mode"]:
            settings["ceil_mode"] = True
        if layer.kind == "avgpool" and not a["count_include_pad"]:
            settings["count_include_pad"] = False
        return settings
    if layer.kind == "se":
        return {} if a["reduction"] == 16 else {"reduction": a["reduction"]}
    if layer.kind in ("relu", "add"):
        return {}
    raise ImportFailure(f"{origin}: {layer.describe()}: resgraph cannot place a {layer.kind} here")


def entry(kind: str, settings: dict[str, Any], name: str | None) -> Any:
    """A spec layer: bare (`relu`) when it has nothing to say, else `{kind: {...}}`."""
    if name:
        settings = {"name": name, **settings}
    return {kind: settings} if settings else kind


# --- shortcuts ---------------------------------------------------------------------------


def shortcut(fit: StageFit, origin: str) -> Any:
    """The stage's shortcut policy: A (with its zero placement), B, C or none, and a
    projection's layers when they are not the default 1x1 conv and BN; None when its blocks
    are all identity blocks, which A and B both explain."""
    kinds = {block.shortcut_kind for block in fit.blocks}
    if kinds == {"identity"}:
        return None  # any option but C explains identity shortcuts alone
    if kinds == {"none"}:
        return "none"
    if "none" in kinds:
        raise ImportFailure(f"{origin}: a stage mixes residual and plain blocks")
    if "zero_pad" in kinds:
        if "projection" in kinds:
            raise ImportFailure(f"{origin}: a stage mixes zero-padding and projection shortcuts")
        return _option_a(fit, origin)
    changing = [b for b in fit.blocks if b.in_shape != b.out_shape]
    if any(b.shortcut_kind == "identity" for b in changing):
        block = next(b for b in changing if b.shortcut_kind == "identity")
        raise ImportFailure(
            f"{origin}: {block.add.describe() if block.add else ''}: an identity shortcut "
            "across a change of shape"
        )
    keeping = [b for b in fit.blocks if b.in_shape == b.out_shape]
    option = "C" if any(b.shortcut_kind == "projection" for b in keeping) else "B"
    sample = _projecting(fit)
    if sample is None:
        return option
    layers = _projection_layers(sample, origin)
    return option if layers == DEFAULT_PROJECTION else {"option": option, "projection": layers}


def _option_a(fit: StageFit, origin: str) -> Any:
    placements = set()
    for block in fit.blocks:
        if block.shortcut_kind == "zero_pad":
            pad = block.shortcut[0].attrs
            extra = pad["before"] + pad["after"]
            if pad["before"] == 0:
                placements.add("end")
            elif pad["before"] == extra // 2:
                placements.add("split")
            else:
                placements.add("other")
    if placements - {"end", "split"} or len(placements) > 1:
        raise ImportFailure(
            f"{origin}: option A shortcuts whose zero channels are neither appended nor split "
            "evenly"
        )
    return "A" if placements != {"split"} else {"option": "A", "zero_pad": "split"}


def _projection_layers(block: FoundBlock, origin: str) -> list[Any]:
    written = []
    for layer in block.shortcut:
        settings = layer_settings(layer, origin)
        if layer.kind == "conv":
            settings["out"] = "out_channels"
            if layer.stride == block.stride:
                settings["stride"] = "stride"
        elif layer.kind in ("avgpool", "maxpool") and layer.stride == block.stride:
            kernel = "stride" if layer.attrs["kernel"] == block.stride else layer.attrs["kernel"]
            settings = {"kernel": kernel, "stride": "stride"} | settings
            settings["kernel"] = kernel
            if layer.attrs["padding"] != (layer.attrs["kernel"] - 1) // 2:
                settings["padding"] = layer.attrs["padding"]
        written.append(entry(layer.kind, settings, None))
    return written


def unnamed_defaults(layers: list[Any]) -> list[Any]:
    """Drop a name the language would give anyway: `relu` for the list's only relu."""
    kinds = [next(iter(layer)) if isinstance(layer, dict) else layer for layer in layers]
    out = []
    for kind, layer in zip(kinds, layers, strict=True):
        if isinstance(layer, dict) and layer[kind].get("name") == kind and kinds.count(kind) == 1:
            settings = {k: v for k, v in layer[kind].items() if k != "name"}
            layer = {kind: settings} if settings else kind
        out.append(layer)
    return out
