"""The spec of a found network, as data and as the YAML a person would write."""

from __future__ import annotations

from typing import Any

import yaml

from resgraph.importer.fit import (
    NAME,
    StageFit,
    _valid,
    entry,
    layer_settings,
    shortcut,
    unnamed_defaults,
)
from resgraph.importer.layers import Layer
from resgraph.importer.source import ImportFailure
from resgraph.importer.structure import Found

OWN_TYPE = "imported"  # the name of a block type written from a stage's layers


def spec_data(
    name: str, origin: str, found: Found, fits: list[StageFit], input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """The spec for each stage's current candidate."""
    uses, types = _block_uses(fits)
    policies = _policies(fits, origin)
    spec: dict[str, Any] = {
        "name": name,
        "description": f"Imported from {origin} by resgraph import.",
        "input": dict(zip(("channels", "height", "width"), input_shape, strict=True)),
        "shortcut": policies[0],
        "stem": unnamed_defaults([_literal(layer, origin) for layer in found.stem]),
    }
    if not spec["stem"]:
        del spec["stem"]
    if types:
        spec["block_types"] = types
    spec["block"] = uses[0]
    spec["stages"] = []
    previous = 1
    for i, (fit, use, policy) in enumerate(zip(fits, uses, policies, strict=True)):
        stage: dict[str, Any] = {"blocks": len(fit.blocks), "width": fit.candidates[fit.choice][1]}
        if fit.stride != 1:
            stage["stride"] = fit.stride
        if fit.dilation != previous:  # a stage's dilation is the previous one's unless set
            stage["dilation"] = fit.dilation
        previous = fit.dilation
        if fit.name and fit.name != f"layer{i + 1}":
            stage["name"] = fit.name
        if use != uses[0]:
            stage["block"] = use
        if policy != policies[0]:
            stage["shortcut"] = policy
        spec["stages"].append(stage)
    spec["head"] = _head(found, origin)
    return spec


def _policies(fits: list[StageFit], origin: str) -> list[Any]:
    """Each stage's shortcut policy. A stage without a downsampling block cannot tell
    `stride` from 1, so it takes a downsampling stage's policy when that has its layers."""
    evidence = [shortcut(fit, origin) for fit in fits]
    known = [(fit, p) for fit, p in zip(fits, evidence, strict=True) if p is not None]
    common = next((p for fit, p in known if fit.stride > 1), known[0][1] if known else "B")
    policies = []
    for fit, policy in zip(fits, evidence, strict=True):
        if policy is None:  # identity blocks alone: A and B explain them, C does not
            policy = common if _layout(common)[0] in ("A", "B") else "B"
        elif fit.stride == 1 and _layout(policy) == _layout(common):
            policy = common
        policies.append(policy)
    return policies


def _layout(policy: Any) -> tuple[Any, ...]:
    """A policy's option and its projection's ops, without their sizes."""
    if not isinstance(policy, dict):
        return (policy,)
    layers = policy.get("projection", [])
    ops = tuple(next(iter(layer)) if isinstance(layer, dict) else layer for layer in layers)
    return (policy["option"], ops)


def _block_uses(fits: list[StageFit]) -> tuple[list[Any], dict[str, Any]]:
    """Each stage's block use; own block types shared by stages that write the same one."""
    types: dict[str, Any] = {}
    uses = []
    for fit in fits:
        use, _, own = fit.candidates[fit.choice]
        if own is not None:
            same = next((n for n, t in types.items() if t == own), None)
            if same is None:
                same = OWN_TYPE if not types else f"{OWN_TYPE}{len(types) + 1}"
                types[same] = own
            use = same
        uses.append(use)
    return uses, types


def _literal(layer: Layer, origin: str) -> Any:
    if layer.kind in ("add", "zero_pad", "flatten", "global_avgpool", "linear"):
        raise ImportFailure(
            f"{origin}: {layer.describe()}: a {layer.kind} outside a residual block or the head"
        )
    module = layer.module
    return entry(layer.kind, layer_settings(layer, origin), module if _valid(module) else None)


def _head(found: Found, origin: str) -> dict[str, Any]:
    classifier = found.classifier
    if not classifier.attrs["bias"]:
        raise ImportFailure(f"{origin}: {classifier.describe()}: resgraph's classifier has a bias")
    head: dict[str, Any] = {}
    if found.head_layers:
        head["layers"] = unnamed_defaults([_literal(layer, origin) for layer in found.head_layers])
    head["classes"] = classifier.attrs["out"]
    if _valid(classifier.module) and classifier.module != "fc":
        head["name"] = classifier.module
    return head


def network_name(text: str) -> str:
    """A valid spec name from a file or callable name (resnet50.onnx -> resnet50)."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in text).strip("_")
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"net_{cleaned}"
    cleaned = cleaned[:64]
    return cleaned if NAME.match(cleaned) else "imported"


def to_yaml(spec: dict[str, Any]) -> str:
    """Block style for the top level and the block types, one flow line per layer or stage."""
    lines: list[str] = []
    for key, value in spec.items():
        if key == "block_types":
            lines.append("block_types:")
            for type_name, block_type in value.items():
                lines.append(f"  {type_name}:")
                for field, setting in block_type.items():
                    if field == "layers":
                        lines.append("    layers:")
                        lines += [f"      - {_item(layer)}" for layer in setting]
                    else:
                        lines.append(f"    {field}: {_flow(setting)}")
        elif isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"  - {_item(item)}" for item in value]
        elif key == "head" and "layers" in value:
            lines.append("head:")
            lines.append("  layers:")
            lines += [f"    - {_item(item)}" for item in value["layers"]]
            lines += [f"  {k}: {_flow(v)}" for k, v in value.items() if k != "layers"]
        elif key == "shortcut" and isinstance(value, dict) and "projection" in value:
            lines.append("shortcut:")
            lines.append(f"  option: {value['option']}")
            lines.append("  projection:")
            lines += [f"    - {_item(item)}" for item in value["projection"]]
        else:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def _item(value: Any) -> str:
    """A list item: a layer as `conv: {out: 64, kernel: 3}`, anything else in flow style."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, setting),) = value.items()
        if isinstance(setting, dict) and key not in ("blocks", "width"):
            return f"{key}: {_flow(setting)}"
    return _flow(value)


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    text = text.strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()
