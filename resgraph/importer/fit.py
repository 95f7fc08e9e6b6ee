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
from resgraph.importer.structure import STRIDED, Found, FoundBlock

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

    @property
    def first(self) -> FoundBlock:
        return self.blocks[0]

    @property
    def stride(self) -> int:
        return self.first.stride


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
    for fit in fits:  # a stage that never downsamples places the stride as its kin do
        kin = [f for f in fits if _signature(f.first) == _signature(fit.first)]
        fit.strided = next(
            (p for f in [fit, *kin] if (p := _strided_position(f)) is not None), None
        )
    for fit in fits:
        fit.candidates = [*_library_uses(fit), _own_type(fit, origin)]
    return fits


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
            or block.stride > 1
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
        written.append(_layer_entry(layer, named, width, stride_taken=i == strided, origin=origin))
    own: dict[str, Any] = {"description": f"Written by resgraph import from {origin}."}
    if strided is not None:
        own["stride_on"] = names[strided]
    if point is not None:
        own["projection_from"] = names[point]
    own["layers"] = unnamed_defaults(written)
    return "", width, own


def _strided_position(fit: StageFit) -> int | None:
    """Where a downsampling block of the stage has its one strided layer, if it has one."""
    for block in fit.blocks:
        if block.stride > 1:
            strided = [
                i
                for i, layer in enumerate(block.layers)
                if layer.kind in STRIDED and layer.stride > 1
            ]
            return strided[0] if len(strided) == 1 else None
    return None


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


def _size(value: int, width: int) -> int | str:
    """`value` as an expression over `width` where it is a multiple or a fraction of it."""
    if value == width:
        return "width"
    if width and value % width == 0:
        return f"width * {value // width}"
    if value and width % value == 0:
        return f"width // {width // value}"
    return value


def _layer_entry(
    layer: Layer, name: str | None, width: int, *, stride_taken: bool, origin: str
) -> Any:
    """One layer of a block type: sizes over `width`, the block's stride left to stride_on."""
    settings = layer_settings(layer, origin)
    if layer.kind == "conv":
        settings["out"] = _size(layer.attrs["out"], width)
    if stride_taken:
        settings.pop("stride", None)
    return entry(layer.kind, settings, name)


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
