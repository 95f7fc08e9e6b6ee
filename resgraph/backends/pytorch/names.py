"""Names and escaping: every spec string that reaches generated source passes through here.

Identifiers are validated (nothing a spec names may shadow nn.Module or the module's own
names), free text becomes a safe docstring or comment, class names come from identifiers.
"""

from __future__ import annotations

import keyword
import re
import textwrap

from resgraph.errors import Location, SpecError
from resgraph.language import GENERATED_NAMES

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
MODULE_NAMES = GENERATED_NAMES


def docstring(text: str, indent: int = 0, width: int = 92) -> str:
    """A spec's free text as a safe docstring: whitespace folded, quotes and backslashes escaped."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    clean = " ".join(clean.split()).replace("\\", "\\\\")
    # A quote can only end the docstring as part of a run or at the very end: escape those.
    clean = re.sub(r'"(?=")|"$', '\\\\"', clean)
    # Break only at spaces: never inside a word, so never between a backslash and what it escapes.
    lines = textwrap.wrap(
        clean, width=width - indent, break_long_words=False, break_on_hyphens=False
    ) or [""]
    if len(lines) == 1:
        return f'"""{lines[0]}"""'
    pad = " " * indent
    return (
        '"""' + lines[0] + "\n" + "\n".join(pad + line for line in lines[1:]) + "\n" + pad + '"""'
    )


def comment(text: str) -> str:
    """Text for a `#` comment line: line breaks and other unprintables shown as escapes."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def camel(name: str) -> str:
    """resnet50_v1_5 -> Resnet50V1_5: a class name from an identifier."""
    out = ""
    for part in filter(None, name.split("_")):
        piece = part[:1].upper() + part[1:]
        out += ("_" if out and out[-1].isdigit() and piece[0].isdigit() else "") + piece
    if keyword.iskeyword(out):  # none, true, false are names; None, True, False are not
        return out + "_"
    return out or "Net"


def check_attribute(name: str, where: Location | None) -> None:
    """Refuse a module attribute name nn.Module reserves or would shadow, with its location."""
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
