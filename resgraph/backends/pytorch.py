"""PyTorch backend: render a compiled spec as standalone, readable PyTorch source.

Decisions live here, layout lives in templates/module.py.jinja. Block types become one
nn.Module class each, written over their constructor arguments (in_channels, width,
stride, block params), so the file's length depends on the block types, not the depth.
Every spec string reaching the source is a validated identifier, an int, or escaped.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from resgraph import __version__, expr
from resgraph.errors import Location, SpecError
from resgraph.expand import BlockPlan
from resgraph.graph import INPUT, BlockInstance
from resgraph.pipeline import Compiled
from resgraph.spec import BlockType, Layer

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
MODULE_NAMES = frozenset(
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
)


@dataclass(frozen=True)
class Options:
    """Backend switches: an inference variant with BN folded, channels_last memory format."""

    fold_bn: bool = False
    channels_last: bool = False


@dataclass
class BlockClass:
    """One generated block class: its signature, constructor lines and forward lines."""

    name: str
    doc: str
    signature: str
    init: list[str]
    forward: list[str]
    residual: bool
    last_bn: str | None


@dataclass
class ModuleView:
    """Everything the template shows, as ready-made strings."""

    title: str
    source: str
    version: str
    spec_name: str
    content_hash: str
    overrides: list[str]
    class_name: str
    doc: str
    classes: list[BlockClass]
    projections: list[tuple[str, str, list[str]]]
    zero_pad: bool
    squeeze_excite: bool
    fcn: bool
    init: list[str]
    forward: list[str]
    zero_init: list[tuple[str, str]]
    num_classes: int
    channels_last: bool
    fold_bn: bool
    bn_eps: float | None
    helpers: list[str] = field(default_factory=list)


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


def _kwargs(**values: Any) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items() if value is not None)


def _operand(source: str) -> str:
    """An expression's source, bracketed unless it is a name, a number or a call, so that it
    keeps its value as an operand of `*` or `//` (`1 + 1` as a divisor is `(1 + 1)`)."""
    node = ast.parse(source, mode="eval").body
    atomic = isinstance(node, ast.Name | ast.Call) or (
        isinstance(node, ast.Constant) and not source.startswith("-")
    )
    return source if atomic else f"({source})"


def _window(args: Any, stride_value: int | str, stride_scale: str | None) -> tuple[str, str, str]:
    """Kernel, stride and padding as source: padding defaults to (kernel - 1) // 2, and the
    block's `stride` multiplies the stride of its stride_on layer."""
    kernel = expr.render(args.kernel)
    stride = expr.render(stride_value)
    if stride_scale:
        stride = stride_scale if stride == "1" else f"{_operand(stride)} * {stride_scale}"
    if args.padding is not None:
        padding = expr.render(args.padding)
    elif isinstance(args.kernel, int):
        padding = str((args.kernel - 1) // 2)
    else:
        padding = f"({kernel} - 1) // 2"
    return kernel, stride, padding


def _layer_ctor(
    layer: Layer, channels: str, stride_scale: str | None, folded: bool, inplace: bool
) -> tuple[str, str]:
    """(constructor source, output channels expression) of a spec layer inside a class."""
    op, args = layer.op, layer.args
    if op == "conv":
        out = expr.render(args.out)
        kernel, stride, padding = _window(args, args.stride, stride_scale)
        groups = expr.render(args.groups)
        kw = _kwargs(
            kernel_size=kernel,
            stride=None if stride == "1" else stride,
            padding=None if padding == "0" else padding,
            groups=None if groups == "1" else groups,
            bias=args.bias or folded,
        )
        return f"nn.Conv2d({channels}, {out}, {kw})", out
    if op == "bn":
        kw = _kwargs(
            eps=None if args.eps == 1e-5 else repr(args.eps),
            momentum=None if args.momentum == 0.1 else repr(args.momentum),
        )
        return f"nn.BatchNorm2d({channels}{', ' + kw if kw else ''})", channels
    if op == "relu":
        return ("nn.ReLU(inplace=True)" if inplace else "nn.ReLU()"), channels
    if op == "se":
        hidden = f"{_operand(channels)} // {_operand(expr.render(args.reduction))}"
        return f"SqueezeExcite({channels}, {hidden})", channels
    if op in ("maxpool", "avgpool"):
        kernel, stride, padding = _window(args, args.stride or args.kernel, stride_scale)
        kw = _kwargs(
            kernel_size=kernel,
            stride=stride,
            padding=None if padding == "0" else padding,
            ceil_mode=True if args.ceil_mode else None,
            count_include_pad=False if op == "avgpool" and not args.count_include_pad else None,
        )
        return f"nn.{'MaxPool2d' if op == 'maxpool' else 'AvgPool2d'}({kw})", channels
    raise SpecError(f"a {op} layer cannot be used inside a block", None)


def _node_ctor(data: dict[str, Any], folded: bool, inplace: bool) -> str:
    """Constructor source for a concrete graph node (stem and head): all numbers known."""
    op, attrs = data["op"], data["attrs"]
    if op == "conv":
        kw = _kwargs(
            kernel_size=attrs["kernel"],
            stride=attrs["stride"] if attrs["stride"] != 1 else None,
            padding=attrs["padding"] or None,
            groups=attrs["groups"] if attrs["groups"] != 1 else None,
            bias=attrs["bias"] or folded,
        )
        return f"nn.Conv2d({data['in_shapes'][0][0]}, {attrs['out']}, {kw})"
    if op == "bn":
        kw = _kwargs(
            eps=None if attrs["eps"] == 1e-5 else repr(attrs["eps"]),
            momentum=None if attrs["momentum"] == 0.1 else repr(attrs["momentum"]),
        )
        return f"nn.BatchNorm2d({data['shape'][0]}{', ' + kw if kw else ''})"
    if op == "relu":
        return "nn.ReLU(inplace=True)" if inplace else "nn.ReLU()"
    if op == "se":
        return f"SqueezeExcite({data['shape'][0]}, {attrs['hidden']})"
    if op in ("maxpool", "avgpool"):
        kw = _kwargs(
            kernel_size=attrs["kernel"],
            stride=attrs["stride"],
            padding=attrs["padding"] or None,
            ceil_mode=True if attrs["ceil_mode"] else None,
            count_include_pad=False if op == "avgpool" and not attrs["count_include_pad"] else None,
        )
        return f"nn.{'MaxPool2d' if op == 'maxpool' else 'AvgPool2d'}({kw})"
    raise SpecError(f"{op} layers cannot be used in the stem", data["loc"])


def _foldable(layers: list[Layer], i: int) -> bool:
    """A BN folds into the conv right before it in the same layer list."""
    return layers[i].op == "bn" and i > 0 and layers[i - 1].op == "conv"


class _Renderer:
    def __init__(
        self, compiled: Compiled, options: Options, source: str, overrides: list[str]
    ) -> None:
        self.compiled = compiled
        self.graph = compiled.graph
        self.options = options
        self.source = source
        self.overrides = overrides
        self.taken: set[str] = set(MODULE_NAMES)
        self.classes: dict[tuple[str, str | None, bool], BlockClass] = {}
        self.projections: dict[str, tuple[str, str, list[str]]] = {}
        self.zero_pad = False
        self.squeeze_excite = False
        self.plans = {b.name: b for s in compiled.plan.stages for b in s.blocks}

    def plan_of(self, block: BlockInstance) -> BlockPlan:
        return self.plans[block.name]

    def unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{name}{n}"
        self.taken.add(candidate)
        return candidate

    def check_attribute(self, name: str, where: Location | None) -> None:
        if name.startswith("_"):
            # nn.Module keeps _names for itself (_modules, ...) and Python mangles __names
            # inside a class, so the state_dict key would not be the graph's name.
            raise SpecError(
                f"the name {name!r} starts with an underscore, which torch.nn.Module reserves; "
                "rename it",
                where,
            )
        if name in MODULE_ATTRIBUTES:
            raise SpecError(
                f"the name {name!r} would shadow torch.nn.Module.{name}; rename it", where
            )

    # ---------------------------------------------------------------- blocks
    def block_class(self, block: BlockInstance) -> BlockClass:
        residual = block.shortcut != "none"
        key = (block.type_name, block.stride_on, residual)
        if key in self.classes:
            return self.classes[key]
        source = self.plan_of(block).source
        block_type: BlockType = source.block_type
        base = camel(block.type_name)
        if not residual and any(layer.op == "add" for layer in block_type.layers):
            base += "NoShortcut"
        if any(k[0] == block.type_name and k[2] == residual for k in self.classes):
            base += "StrideOn" + camel(block.stride_on or "none")
        name = self.unique(base)
        cls = self._render_block(name, block_type, block, residual, source.where)
        self.classes[key] = cls
        return cls

    def _render_block(
        self, name: str, block_type: BlockType, block: BlockInstance, residual: bool, where: Any
    ) -> BlockClass:
        fold = self.options.fold_bn
        params = block_type.params
        sig = ["in_channels: int", "width: int", "stride: int = 1"]
        if residual:
            sig.append("downsample: nn.Module | None = None")
        sig += [f"{p}: int = {expr.render(v)}" for p, v in params.items()]
        layers = block_type.layers
        names = block.layers
        init: list[str] = ["super().__init__()"]
        init += [f"{name} = {expr.render(value)}" for name, value in block_type.let.items()]
        forward: list[str] = []
        shortcut_line = "identity = x if self.downsample is None else self.downsample({})"
        if residual and block_type.projection_from is None:
            forward.append(shortcut_line.format("x"))
        channels = "in_channels"
        current = "x"
        named = iter(names)
        last_bn = None
        for i, layer in enumerate(layers):
            if layer.op == "add":
                if residual:
                    forward.append(f"{current} = {current} + identity")
                continue
            attr = next(named)
            self.check_attribute(attr, where.child("layers", i)())
            folded_away = fold and _foldable(layers, i)
            if layer.op == "bn" and not folded_away:
                last_bn = attr
            if folded_away:
                continue
            conv_folds = fold and i + 1 < len(layers) and _foldable(layers, i + 1)
            scale = "stride" if attr == block.stride_on else None
            ctor, channels = _layer_ctor(layer, channels, scale, conv_folds, inplace=i > 0)
            self.squeeze_excite |= layer.op == "se"
            init.append(f"self.{attr} = {ctor}")
            forward.append(f"out = self.{attr}({current})")
            current = "out"
            if residual and attr == block_type.projection_from:
                forward.append(shortcut_line.format("out"))
        if residual:
            init.append("self.downsample = downsample")
        forward.append(f"return {current}")
        doc = docstring(block_type.description or f"The {block.type_name} block.", indent=4)
        return BlockClass(
            name, doc, ", ".join(sig), init, forward, residual, last_bn if residual else None
        )

    def projection(self, block: BlockInstance) -> str:
        layers = self.plan_of(block).shortcut.projection
        key = repr([layer.model_dump() for layer in layers])
        if key not in self.projections:
            fname = self.unique("projection")
            lines: list[str] = []
            channels = "in_channels"
            for i, layer in enumerate(layers):
                if self.options.fold_bn and _foldable(layers, i):
                    continue
                conv_folds = (
                    self.options.fold_bn and i + 1 < len(layers) and _foldable(layers, i + 1)
                )
                ctor, channels = _layer_ctor(layer, channels, None, conv_folds, inplace=i > 0)
                lines.append(ctor)
            self.projections[key] = (
                fname,
                "in_channels: int, out_channels: int, stride: int",
                lines,
            )
        return self.projections[key][0]

    def block_call(self, block: BlockInstance) -> str:
        cls = self.block_class(block)
        args = [str(block.in_channels), str(block.width)]
        if block.stride != 1:
            args.append(f"stride={block.stride}")
        if block.shortcut == "zero_pad":
            self.zero_pad = True
            a = block.shortcut_attrs
            args.append(
                f"downsample=ZeroPadShortcut({a['stride']}, {a['pad_before']}, {a['pad_after']})"
            )
        elif block.shortcut == "projection":
            fname = self.projection(block)
            args.append(
                f"downsample={fname}({block.in_channels}, {block.out_channels}, "
                f"stride={block.shortcut_attrs['stride']})"
            )
        defaults = self.plan_of(block).source.block_type.params
        args += [f"{p}={v}" for p, v in block.params.items() if defaults.get(p) != v]
        return f"{cls.name}({', '.join(args)})"

    # ---------------------------------------------------------------- network
    def top_layers(
        self, names: list[str], layers: list[Layer], init: list[str], forward: list[str]
    ) -> None:
        """Stem or head layers: concrete modules on the network itself."""
        fold = self.options.fold_bn
        for i, name in enumerate(names):
            data = self.graph.nodes[name]
            self.check_attribute(name, data["loc"])
            if fold and _foldable(layers, i):
                continue
            conv_folds = fold and i + 1 < len(layers) and _foldable(layers, i + 1)
            inplace = data["inputs"][0] != INPUT
            self.squeeze_excite |= data["op"] == "se"
            init.append(f"self.{name} = {_node_ctor(data, conv_folds, inplace)}")
            forward.append(f"x = self.{name}(x)")

    def head_init(self) -> list[str]:
        """Pool and classifier modules; the fcn classifier is a 1x1 conv loading fc weights."""
        g = self.graph
        name = g.graph["output"]
        channels = g.nodes[name]["in_shapes"][0][0]
        if self.compiled.spec.head.kind == "fc":
            return [
                "self.avgpool = nn.AdaptiveAvgPool2d(1)",
                f"self.{name} = nn.Linear({channels}, num_classes)",
            ]
        window = g.nodes["avgpool"]["attrs"]["kernel"]
        return [
            f"self.avgpool = nn.AvgPool2d(kernel_size={window}, stride=1)",
            f"self.{name} = ConvClassifier({channels}, num_classes)",
        ]

    def head_forward(self) -> list[str]:
        name = self.graph.graph["output"]
        if self.compiled.spec.head.kind == "fc":
            return [
                "x = self.avgpool(x)",
                "x = torch.flatten(x, 1)",
                f"x = self.{name}(x)",
                "return x",
            ]
        return ["x = self.avgpool(x)", f"return self.{name}(x)"]

    def render(self) -> ModuleView:
        g = self.graph
        spec = self.compiled.spec
        fold = self.options.fold_bn
        init: list[str] = ["super().__init__()"]
        forward: list[str] = []
        self.top_layers(g.graph["stem"], spec.stem, init, forward)
        blocks: dict[str, BlockInstance] = g.graph["blocks"]
        for (stage, members), plan in zip(
            g.graph["stages"], self.compiled.plan.stages, strict=True
        ):
            self.check_attribute(stage, plan.where("name"))
            calls = [self.block_call(blocks[m]) for m in members]
            runs: list[tuple[str, int]] = []
            for call in calls:
                if runs and runs[-1][0] == call:
                    runs[-1] = (call, runs[-1][1] + 1)
                else:
                    runs.append((call, 1))
            items = [call if n == 1 else f"*({call} for _ in range({n}))" for call, n in runs]
            init.append(f"self.{stage} = nn.Sequential(" + ", ".join(items) + ",)")
            forward.append(f"x = self.{stage}(x)")
        self.top_layers(g.graph["head"], spec.head.layers, init, forward)
        self.check_attribute(g.graph["output"], g.nodes[g.graph["output"]]["loc"])
        init += self.head_init()
        forward += self.head_forward()
        zero_init = []
        if spec.init.zero_init_residual and not fold:
            zero_init = [(c.name, c.last_bn) for c in self.classes.values() if c.last_bn]
        eps = {d["attrs"]["eps"] for _, d in g.nodes(data=True) if d["op"] == "bn"}
        if fold and len(eps) > 1:
            # Point at a BN whose eps the spec set: with two values, one is not the default.
            name, data = next(
                (n, d)
                for n, d in g.nodes(data=True)
                if d["op"] == "bn" and d["attrs"]["eps"] != 1e-5
            )
            raise SpecError(
                f"--fold-bn needs one BN eps across the network; {name} has {data['attrs']['eps']}",
                data["loc"],
            )
        title = spec.description or f"The {spec.name} network."
        return ModuleView(
            title=docstring(title),
            source=comment(self.source),
            version=__version__,
            spec_name=spec.name,
            content_hash=self.compiled.content_hash,
            overrides=[comment(text) for text in self.overrides],
            class_name=self.unique(camel(spec.name)),
            doc=docstring(
                f"{spec.name}: {g.graph['params']:,} parameters, "
                f"{g.graph['macs']:,} multiply-accumulates at "
                f"{spec.input.channels}x{spec.input.height}x{spec.input.width}.",
                4,
            ),
            classes=list(self.classes.values()),
            projections=list(self.projections.values()),
            zero_pad=self.zero_pad,
            squeeze_excite=self.squeeze_excite,
            fcn=spec.head.kind == "fcn",
            init=init,
            forward=forward,
            zero_init=zero_init,
            num_classes=self.compiled.plan.classes,
            channels_last=self.options.channels_last,
            fold_bn=fold,
            bn_eps=next(iter(eps)) if eps else None,
        )


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_folder())),
        autoescape=False,  # Python source, not HTML: every value is escaped where it is built
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def templates_folder() -> Path:
    """templates/ as installed (resgraph/templates in a wheel), else the checkout's."""
    # resgraph.templates is a namespace package (data only): files() gives a MultiplexedPath
    # whose str() is not a path, so ask for the template file and take its folder.
    try:
        template = resources.files("resgraph.templates").joinpath("module.py.jinja")
    except ModuleNotFoundError:
        template = None
    if template is not None and template.is_file():
        return Path(str(template)).parent
    return Path(__file__).resolve().parents[2] / "templates"


def format_source(source: str) -> str:
    """Format with ruff (a dependency), so generated files are ruff-format clean."""
    from ruff.__main__ import find_ruff_bin

    result = subprocess.run(
        [
            find_ruff_bin(),
            "format",
            "--isolated",
            "--line-length",
            "100",
            "--stdin-filename",
            "generated.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ruff could not format the generated source: {result.stderr.strip()}")
    return result.stdout


def render_module(
    compiled: Compiled,
    options: Options = Options(),
    source: str | None = None,
    overrides: list[str] | None = None,
) -> str:
    """The generated module's source for a compiled spec."""
    view = _Renderer(compiled, options, source or compiled.path.name, overrides or []).render()
    text = _environment().get_template("module.py.jinja").render(v=view)
    return format_source(text)


def build_module(
    compiled: Compiled, num_classes: int | None = None, options: Options = Options()
) -> Any:
    """Build the torch.nn.Module of a compiled spec in memory, from the same generated source."""
    source = render_module(compiled, options)
    name = f"resgraph_generated_{compiled.spec.name}_{compiled.content_hash}"
    module = types.ModuleType(name)
    module.__file__ = f"<resgraph {compiled.spec.name}>"
    sys.modules[name] = module  # classes must be importable for pickling and torch.compile
    import linecache

    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module.build_model(num_classes)


def output_name(compiled: Compiled, head: str = "fc") -> str:
    """The default file name under generated/: the spec's name (+ _fcn), an identifier."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", compiled.spec.name):
        raise SpecError("spec name is not an identifier", compiled.doc.locate(("name",)))
    return f"{compiled.spec.name}{'_fcn' if head == 'fcn' else ''}.py"
