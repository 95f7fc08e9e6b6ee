"""Emission: the IR rendered as one readable module, layout in templates/module.py.jinja.

Block types become one nn.Module class each, written from the IR's block templates over
their constructor arguments (in_channels, width, stride, block params), so the file's length
depends on the block types, not the depth. Each instance's call passes the IR's
per-instance facts. Constructors come from each op's definition (resgraph.ops); the fold
decisions from the fold pass.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from resgraph import __version__, expr
from resgraph.backends.pytorch.format import format_source
from resgraph.backends.pytorch.names import MODULE_NAMES, camel, comment, docstring
from resgraph.errors import SpecError
from resgraph.graph import DILATION, FIRST_DILATION
from resgraph.ir import INPUT, Block, BlockTemplate, LayerTemplate, Network, Node
from resgraph.ops import OPS
from resgraph.ops.base import rendered
from resgraph.ops.bn import DEFAULT_EPS
from resgraph.ops.drop_path import ARGUMENT as DROP_PATH
from resgraph.ops.drop_path import DropPathAttrs
from resgraph.pipeline import Compiled

SHORTCUT_LINE = "identity = x if self.downsample is None else self.downsample({})"


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
    zero_bn: str | None  # the attribute zero_init_residual zeroes


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
    helpers: list[str]
    classes: list[BlockClass]
    projections: list[tuple[str, str, list[str]]]
    fcn: bool
    init: list[str]
    forward: list[str]
    zero_init: list[tuple[str, str]]
    num_classes: int
    feature_info: list[str] | None  # a features head's entries, as dict literals
    returns: str  # forward's return annotation
    channels_last: bool
    fold_bn: bool
    bn_eps: float | None


def _constructor(layer: LayerTemplate | Node, channels: str, biased: bool, inplace: bool) -> str:
    """A layer's constructor from its op's definition, sizes as source (names or numbers)."""
    return OPS[layer.op].torch(rendered(layer.attrs), channels, biased=biased, inplace=inplace)


class _Renderer:
    def __init__(
        self, compiled: Compiled, options: Options, source: str, overrides: list[str]
    ) -> None:
        self.compiled = compiled
        self.network: Network = compiled.network
        self.options = options
        self.source = source
        self.overrides = overrides
        self.folds = dict(self.network.folds) if options.fold_bn else {}
        self.folded = set(self.folds)
        self.biased = set(self.folds.values())  # convs that take a folded BN's shift as bias
        self.by_block: dict[str, set[str]] = {}  # block -> its folded BNs and biased convs
        for name in (*self.folds, *self.biased):
            block = self.network.nodes[name].block
            if block is not None:
                self.by_block.setdefault(block, set()).add(name)
        self.taken: set[str] = set(MODULE_NAMES)
        self.classes: dict[tuple[object, ...], BlockClass] = {}
        self.projections: dict[tuple[object, ...], tuple[str, str, list[str]]] = {}
        self.ops_used: set[str] = set()

    def unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{name}{n}"
        self.taken.add(candidate)
        return candidate

    def local(self, block: Block, names: set[str], part: str = "") -> frozenset[str]:
        """Those of `names` in `block` (in its `part`: "downsample." for the projection),
        by their layer names."""
        prefix = f"{block.name}.{part}"
        found = self.by_block.get(block.name, set()) & names
        local = {n.removeprefix(prefix) for n in found if n.startswith(prefix)}
        return frozenset(n for n in local if "." not in n)

    def layer_lines(
        self,
        layers: tuple[LayerTemplate, ...],
        folded: frozenset[str],
        biased: frozenset[str],
        init: list[str],
        forward: list[str],
        current: str,
        after: dict[str, str],
        first: bool,
    ) -> str:
        """Constructor and forward lines of block layers; `after[name]` follows that layer."""
        shared = False  # the previous output is also read elsewhere: no in-place op on it
        for i, layer in enumerate(layers):
            if layer.name not in folded:
                inplace = not (first and i == 0) and not shared
                channels = expr.render(layer.channels)
                ctor = _constructor(layer, channels, layer.name in biased, inplace)
                self.ops_used.add(layer.op)
                init.append(f"self.{layer.name} = {ctor}")
                forward.append(f"out = self.{layer.name}({current})")
                current = "out"
            shared = layer.name in after
            if shared:
                forward.append(after[layer.name].format(current))
        return current

    # ---------------------------------------------------------------- blocks
    def block_class(self, block: Block) -> BlockClass:
        template = block.template
        folded = self.local(block, self.folded)
        biased = self.local(block, self.biased)  # a conv may take the next block's BN
        key = (template.type_name, template.stride_on, block.residual, folded, biased)
        if key in self.classes:
            return self.classes[key]
        base = camel(template.type_name)
        if not block.residual and template.add is not None:
            base += "NoShortcut"
        if any(
            k[0] == template.type_name and k[2] == block.residual and k[1] != template.stride_on
            for k in self.classes
        ):
            base += "StrideOn" + camel(template.stride_on or "none")
        cls = self._render_block(self.unique(base), block, folded, biased)
        self.classes[key] = cls
        return cls

    def _render_block(
        self, name: str, block: Block, folded: frozenset[str], biased: frozenset[str]
    ) -> BlockClass:
        template = block.template
        residual = block.residual
        sig = ["in_channels: int", "width: int", "stride: int = 1"]
        sig += [f"{name}: int = 1" for name in _dilation_names(template)]
        drop_path = residual and template.drop_path
        if drop_path:
            sig.append(f"{DROP_PATH}: float = 0.0")
        if residual:
            sig.append("downsample: nn.Module | None = None")
        sig += [f"{p}: int = {expr.render(v)}" for p, v in template.params.items()]
        init: list[str] = ["super().__init__()"]
        init += [f"{n} = {expr.render(value)}" for n, value in template.let.items()]
        forward: list[str] = []
        after: dict[str, str] = {}
        if residual:
            if template.projection_from is None:
                forward.append(SHORTCUT_LINE.format("x"))
            else:
                after[template.projection_from] = SHORTCUT_LINE
        current = self.layer_lines(template.branch, folded, biased, init, forward, "x", after, True)
        if drop_path:
            self.ops_used.add("drop_path")
            ctor = OPS["drop_path"].torch(DropPathAttrs(DROP_PATH), "", biased=False, inplace=False)
            init.append(f"self.drop_path = {ctor}")
            forward.append(
                f"{current} = {current} if self.drop_path is None else self.drop_path({current})"
            )
        if residual:
            forward.append(f"{current} = {current} + identity")
        current = self.layer_lines(template.post, folded, biased, init, forward, current, {}, False)
        if residual:
            init.append("self.downsample = downsample")
        forward.append(f"return {current}")
        zero_bn = None
        if residual and block.residual_bn and block.residual_bn not in self.folds:
            zero_bn = block.residual_bn.removeprefix(f"{block.name}.")
        return BlockClass(
            name, docstring(_block_doc(template), indent=4), ", ".join(sig), init, forward, zero_bn
        )

    def projection(self, block: Block) -> str:
        shortcut = block.shortcut
        assert shortcut.projection is not None
        layers = shortcut.projection.layers
        folded = self.local(block, self.folded, "downsample.")
        biased = self.local(block, self.biased, "downsample.")
        key = (tuple((la.name, la.op, la.attrs, la.channels) for la in layers), folded)
        if key not in self.projections:
            lines = []
            kept = [i for i, layer in enumerate(layers) if layer.name not in folded]
            for i, layer in enumerate(layers):
                if layer.name in folded:
                    if kept and i < kept[-1]:  # hold its index: later keys keep their numbers
                        lines.append("nn.Identity()")
                    continue
                channels = expr.render(layer.channels)
                lines.append(_constructor(layer, channels, layer.name in biased, inplace=i > 0))
                self.ops_used.add(layer.op)
            signature = "in_channels: int, out_channels: int, stride: int"
            self.projections[key] = (self.unique("projection"), signature, lines)
        return self.projections[key][0]

    def block_call(self, block: Block, index: str) -> str:
        """The block's constructor call; `index`: its position in the network's blocks, as
        source (the generated drop_path schedule's index)."""
        cls = self.block_class(block)
        args = [str(block.in_channels), str(block.width)]
        if block.stride != 1:
            args.append(f"stride={block.stride}")
        values = {FIRST_DILATION: block.first_dilation, DILATION: block.dilation}
        args += [f"{n}={values[n]}" for n in _dilation_names(block.template) if values[n] != 1]
        shortcut = block.shortcut
        if shortcut.kind == "zero_pad":
            self.ops_used.add("zero_pad")
            node = self.network.nodes[f"{block.name}.downsample"]
            args.append(f"downsample={_constructor(node, '', False, False)}")
        elif shortcut.kind == "projection":
            fname = self.projection(block)
            args.append(
                f"downsample={fname}({shortcut.in_channels}, {shortcut.out_channels}, "
                f"stride={shortcut.stride})"
            )
        if block.residual and block.template.drop_path and self.network.drop_path_blocks > 1:
            args.append(f"{DROP_PATH}={DROP_PATH}[{index}]")
        defaults = block.template.params
        args += [f"{p}={v}" for p, v in block.params.items() if defaults.get(p) != v]
        return f"{cls.name}({', '.join(args)})"

    # ---------------------------------------------------------------- network
    def top_layers(self, names: tuple[str, ...], init: list[str], forward: list[str]) -> None:
        """Stem or head layers: concrete modules on the network itself."""
        for name in names:
            node = self.network.nodes[name]
            if name in self.folds:
                continue
            inplace = node.inputs[0] != INPUT
            channels = str(node.in_shape[0])
            init.append(
                f"self.{name} = {_constructor(node, channels, name in self.biased, inplace)}"
            )
            self.ops_used.add(node.op)
            forward.append(f"x = self.{name}(x)")

    def head(self, init: list[str], forward: list[str]) -> None:
        """Pool and classifier; the fcn classifier is a 1x1 conv loading fc weights."""
        net = self.network
        name = net.output
        channels = net.nodes[name].in_shape[0]
        if net.head_kind == "fc":
            init += [
                "self.avgpool = nn.AdaptiveAvgPool2d(1)",
                f"self.{name} = nn.Linear({channels}, num_classes)",
            ]
            forward += [
                "x = self.avgpool(x)",
                "x = torch.flatten(x, 1)",
                f"x = self.{name}(x)",
                "return x",
            ]
            return
        window = net.nodes["avgpool"].attrs.kernel
        init += [
            f"self.avgpool = nn.AvgPool2d(kernel_size={window}, stride=1)",
            f"self.{name} = ConvClassifier({channels}, num_classes)",
        ]
        forward += ["x = self.avgpool(x)", f"return self.{name}(x)"]

    def fold_eps(self) -> float | None:
        """The one eps every folded BN shares; fold_batchnorm is written with it."""
        eps = {self.network.nodes[bn].attrs.eps: bn for bn in self.folds}
        if len(eps) > 1:
            # Point at a BN whose eps the spec set: with two values, one is not the default.
            value, name = next((e, n) for e, n in eps.items() if e != DEFAULT_EPS)
            raise SpecError(
                f"--fold-bn needs one BN eps across the folded BNs; {name} has {value}",
                self.network.nodes[name].loc,
            )
        return next(iter(eps), None)

    def render(self) -> ModuleView:
        net = self.network
        init: list[str] = ["super().__init__()"]
        forward: list[str] = []
        features = {f.name for f in net.features}
        if features:
            forward.append("features: dict[str, torch.Tensor] = {}")
        self.top_layers(net.stem, init, forward)
        counted = 0  # blocks so far
        rate, blocks = net.drop_path_rate, net.drop_path_blocks
        if rate and blocks > 1:
            init.append(
                f"{DROP_PATH} = [round({rate!r} * i / {blocks - 1}, 6) for i in range({blocks})]"
                "  # timm's stochastic depth rule"
            )
        for stage in net.stages:
            calls = [self.block_call(net.blocks[b], "{}") for b in stage.blocks]
            runs: list[tuple[str, int, int]] = []  # call, first block's index, count
            for call in calls:
                if runs and runs[-1][0] == call:
                    runs[-1] = (call, runs[-1][1], runs[-1][2] + 1)
                else:
                    runs.append((call, counted, 1))
                counted += 1
            items = [
                call.format(first)
                if n == 1
                else f"*({call.format('i')} for i in range({first}, {first + n}))"
                if "{}" in call
                else f"*({call} for _ in range({n}))"
                for call, first, n in runs
            ]
            init.append(f"self.{stage.name} = nn.Sequential(" + ", ".join(items) + ",)")
            forward.append(f"x = self.{stage.name}(x)")
            if stage.name in features:
                forward.append(f"features[{stage.name!r}] = x")
        if features:
            forward.append("return features")
        else:
            self.top_layers(net.head_layers, init, forward)
            self.head(init, forward)
        zero_init = []
        if net.zero_init_residual and not self.options.fold_bn:
            zero_init = [(c.name, c.zero_bn) for c in self.classes.values() if c.zero_bn]
        bn_eps = self.fold_eps()
        shape = "x".join(map(str, net.input.shape))
        return ModuleView(
            title=docstring(net.description or f"The {net.name} network."),
            source=comment(self.source),
            version=__version__,
            spec_name=net.name,
            content_hash=self.compiled.content_hash,
            overrides=[comment(text) for text in self.overrides],
            class_name=self.unique(camel(net.name)),
            doc=docstring(
                f"{net.name}: {net.params:,} parameters, {net.macs:,} multiply-accumulates at "
                f"{shape}.",
                4,
            ),
            helpers=[
                OPS[op].torch_helper for op in OPS if op in self.ops_used and OPS[op].torch_helper
            ],
            classes=list(self.classes.values()),
            projections=list(self.projections.values()),
            fcn=net.head_kind == "fcn",
            init=init,
            forward=forward,
            zero_init=zero_init,
            num_classes=net.classes,
            feature_info=[
                repr({"module": f.name, "num_chs": f.channels, "reduction": f.reduction})
                for f in net.features
            ]
            or None,
            returns="dict[str, torch.Tensor]" if features else "torch.Tensor",
            channels_last=self.options.channels_last,
            fold_bn=self.options.fold_bn,
            bn_eps=bn_eps,
        )


def _dilation_names(template: BlockTemplate) -> list[str]:
    """The block dilations a template's layers or lets read: constructor arguments."""
    used: set[str] = set()
    for layer in (*template.branch, *template.post):
        for f in dataclasses.fields(layer.attrs):
            if "minimum" in f.metadata:
                used |= expr.names(expr.render(getattr(layer.attrs, f.name)))
    for value in template.let.values():
        used |= expr.names(expr.render(value))
    return [name for name in (FIRST_DILATION, DILATION) if name in used]


def _block_doc(template: BlockTemplate) -> str:
    """The block type's description, unless its stride moved: then what this class does."""
    if template.stride_on == template.declared_stride_on:
        return template.description or f"The {template.type_name} block."
    layers = ", ".join(layer.name for layer in template.branch)
    carrier = next(layer for layer in template.branch if layer.name == template.stride_on)
    kernel = carrier.attrs.kernel
    what = f"a {kernel}x{kernel} {carrier.op}" if isinstance(kernel, int) else f"a {carrier.op}"
    return (
        f"The {template.type_name} block type with its stride in {template.stride_on}, {what} "
        f"(stride_on: {template.stride_on}; the type declares "
        f"{template.declared_stride_on or 'none'}). Branch: {layers}."
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
    return Path(__file__).resolve().parents[3] / "templates"


def render_module(
    compiled: Compiled,
    options: Options = Options(),
    source: str | None = None,
    overrides: list[str] | None = None,
    formatted: bool = True,
) -> str:
    """The generated module's source for a compiled spec; `formatted=False` skips the
    formatter (the same code, laid out as the template writes it) for in-process builds."""
    view = _Renderer(compiled, options, source or compiled.path.name, overrides or []).render()
    text = _environment().get_template("module.py.jinja").render(v=view)
    return format_source(text) if formatted else text


def output_name(compiled: Compiled, head: str = "fc") -> str:
    """The default file name under generated/: the spec's name (+ _fcn), an identifier."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", compiled.network.name):
        raise SpecError("spec name is not an identifier", compiled.doc.locate(("name",)))
    return f"{compiled.network.name}{'_fcn' if head == 'fcn' else ''}.py"
