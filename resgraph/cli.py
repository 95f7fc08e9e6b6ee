"""The `resgraph` command line. Every user mistake is one line on stderr and exit 1."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from resgraph import __version__
from resgraph.argtypes import non_negative, opset, positive
from resgraph.errors import SpecError
from resgraph.expand import DEFAULT_MAX_NODES
from resgraph.importer.cli import add_parser as add_import_parser
from resgraph.train.cli import add_parsers as add_training_parsers

if TYPE_CHECKING:
    from resgraph.pipeline import Compiled

Command = Callable[[argparse.Namespace], int]
MAX_GENERATED_BYTES = 64 << 20  # --check reads the current file: far above any generated module


def _spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="override a parameter (n=18) or a field (stages.0.blocks=5); repeatable",
    )
    parser.add_argument(
        "--max-nodes",
        type=positive,
        default=DEFAULT_MAX_NODES,
        metavar="N",
        help=f"refuse graphs over N nodes (default {DEFAULT_MAX_NODES:,})",
    )


def _compile(args: argparse.Namespace, spec: str):
    from resgraph.pipeline import compile_spec

    return compile_spec(spec, args.overrides, args.max_nodes)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check specs; exit 1 if any is invalid."""
    results = []
    for spec in args.specs:
        try:
            graph = _compile(args, spec).graph
            results.append(
                {
                    "file": spec,
                    "valid": True,
                    "name": graph.graph["name"],
                    "params": graph.graph["params"],
                    "macs": graph.graph["macs"],
                }
            )
        except SpecError as exc:
            where = exc.location
            results.append(
                {
                    "file": spec,
                    "valid": False,
                    "error": {
                        "message": exc.message,
                        "file": where.file if where else spec,
                        "line": where.line if where else 0,
                        "column": where.column if where else 0,
                        "text": str(exc),
                    },
                }
            )
    ok = all(r["valid"] for r in results)
    if args.format == "json":
        print(json.dumps({"valid": ok, "specs": results}, indent=2))
    elif args.format == "sarif":
        from resgraph.sarif import sarif_log

        print(json.dumps(sarif_log(results), indent=2))
    elif args.format == "github":
        for r in results:
            if not r["valid"]:
                e = r["error"]
                print(
                    f"::error file={_github_property(e['file'])},line={max(e['line'], 1)},"
                    f"col={max(e['column'], 1)}::{_github_data(e['message'])}"
                )
    else:
        for r in results:
            if r["valid"]:
                print(
                    f"{r['file']}: ok ({r['name']}: {r['params']:,} params, "
                    f"{r['macs'] / 1e9:.2f} GMACs)"
                )
            else:
                print(r["error"]["text"], file=sys.stderr)
    return 0 if ok else 1


def _github_data(text: str) -> str:
    """Escape a workflow command's message, as GitHub's actions toolkit does."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    """Escape a workflow command property (file=...): also ':' and ',', which separate them."""
    return _github_data(text).replace(":", "%3A").replace(",", "%2C")


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the per-layer table (or JSON) of one spec."""
    from resgraph.summary import summary_dict, summary_text

    graph = _compile(args, args.spec).graph
    size = (args.batch, args.dtype)
    print(
        json.dumps(summary_dict(graph, *size), indent=2)
        if args.json
        else summary_text(graph, *size)
    )
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Print or write the graph as DOT, Mermaid or an interactive HTML page."""
    from resgraph.diagram import to_dot, to_mermaid

    compiled = _compile(args, args.spec)
    if args.format == "html":
        from resgraph.html_view import graph_page

        text = graph_page(compiled)
    else:
        text = to_dot(compiled.graph) if args.format == "dot" else to_mermaid(compiled.graph)
    _emit(text, args.output)
    return 0


def _emit(text: str, output: str | None) -> None:
    """Write `text` to the -o file atomically, or to stdout without one."""
    from resgraph.output import write_atomic

    if output is not None:
        write_atomic(Path(output), text)
    else:
        sys.stdout.write(text)


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile specs to PyTorch source or ONNX; with --check, report stale outputs instead."""
    from resgraph.backends.pytorch import output_name
    from resgraph.output import inside

    if args.output is not None and len(args.specs) > 1:
        print("resgraph compile: -o/--output takes a single spec", file=sys.stderr)
        return 2
    onnx_only = [
        flag
        for flag, on in (
            ("--weights", args.weights),
            ("--fp16", args.fp16),
            ("--static-batch", args.static_batch),
            ("--int8", args.int8),
            ("--calibrate", args.calibrate),
            ("--int8-symmetric", args.int8_symmetric),
        )
        if on
    ]
    if args.target == "pytorch" and onnx_only:
        print(f"resgraph compile: {', '.join(onnx_only)}: only with --target onnx", file=sys.stderr)
        return 2
    if args.int8_symmetric and not args.int8:
        print("resgraph compile: --int8-symmetric: only with --int8", file=sys.stderr)
        return 2
    if args.int8 != (args.calibrate is not None):
        print(
            "resgraph compile: --int8 and --calibrate SOURCE go together (the int8 ranges "
            "come from the calibration images)",
            file=sys.stderr,
        )
        return 2
    if args.target == "onnx" and args.check:
        print("resgraph compile: --check compares generated PyTorch source", file=sys.stderr)
        return 2
    if args.target == "onnx" and args.channels_last:
        print(
            "resgraph compile: --channels-last: only with --target pytorch (ONNX runtimes "
            "choose their own memory layout)",
            file=sys.stderr,
        )
        return 2
    if args.head == "fcn":
        args.overrides = ["head.kind=fcn", *args.overrides]
    stale = 0
    for spec in args.specs:
        compiled = _compile(args, spec)
        name = output_name(compiled, args.head)
        if args.target == "onnx":
            name = name.removesuffix(".py") + ".onnx"
        if args.output is not None:
            target = Path(args.output)
        else:
            inside(Path(args.out_dir), name)  # refuses names escaping the folder
            target = Path(args.out_dir) / name
        if args.target == "onnx":
            _write_onnx(args, compiled, target)
        elif _write_pytorch(args, compiled, target):
            stale += 1
            state = "missing" if not target.is_file() else "stale"
            print(f"{target}: {state}; run {_compile_command(args, spec)}", file=sys.stderr)
            continue
        if not args.check:
            print(f"{spec} -> {target}")
    return 1 if stale else 0


def _compile_command(args: argparse.Namespace, spec: str) -> str:
    """The command that rewrites what `--check` compared, with the options that shape it."""
    words = ["resgraph", "compile", spec]
    if args.output is not None:
        words += ["-o", args.output]
    elif args.out_dir != "generated":
        words += ["--out-dir", args.out_dir]
    words += [
        flag
        for flag, on in (("--fold-bn", args.fold_bn), ("--channels-last", args.channels_last))
        if on
    ]
    overrides = list(args.overrides)
    if args.head == "fcn":
        words += ["--head", "fcn"]
        overrides.remove("head.kind=fcn")  # added by --head fcn
    for override in overrides:
        words += ["--set", override]
    return shlex.join(words)


def _write_pytorch(args: argparse.Namespace, compiled: Compiled, target: Path) -> bool:
    """Write (or with --check compare) the PyTorch source; True if --check finds it stale."""
    from resgraph.backends.pytorch import Options, render_module
    from resgraph.load import read_text_bounded
    from resgraph.output import write_atomic
    from resgraph.paths import status

    options = Options(fold_bn=args.fold_bn, channels_last=args.channels_last)
    source = render_module(compiled, options, overrides=args.overrides)
    if args.check:
        if status(target) is None:
            return True
        return read_text_bounded(target, MAX_GENERATED_BYTES, "a generated module") != source
    write_atomic(target, source)
    return False


def _write_onnx(args: argparse.Namespace, compiled: Compiled, target: Path) -> None:
    try:
        from resgraph.backends.onnx_export import compile_onnx
    except ModuleNotFoundError as exc:
        raise SpecError(
            f"--target onnx needs the {exc.name} package: pip install 'resgraph[onnx]'"
        ) from None

    if args.int8:
        _write_int8(args, compiled, target)
        return
    compile_onnx(
        compiled,
        output=target,
        weights=Path(args.weights) if args.weights else None,
        seed=args.seed,
        opset=args.opset,
        fold_bn=args.fold_bn,
        fp16=args.fp16,
        static_batch=args.static_batch,
    )


def _write_int8(args: argparse.Namespace, compiled: Compiled, target: Path) -> None:
    from resgraph.backends.onnx_int8 import check_int8_options, compile_int8

    check_int8_options(args.opset, args.fp16)  # before reading data: a missing runtime, --fp16
    from resgraph.train.calibration import read_calibration

    weights = Path(args.weights) if args.weights else None
    calibration = read_calibration(args.calibrate, compiled, args.calibration_images, weights)
    compile_int8(
        compiled,
        output=target,
        batches=calibration.batches,
        weights=weights,
        seed=args.seed,
        opset=args.opset,
        static_batch=args.static_batch,
        symmetric=args.int8_symmetric,
    )


def cmd_diff(args: argparse.Namespace) -> int:
    """Print what changed from spec A to spec B, stage by stage, with the cost change."""
    from resgraph.design import diff_dict, diff_text
    from resgraph.pipeline import compile_spec

    a, b = compile_spec(args.a), compile_spec(args.b)
    if args.format == "html":
        from resgraph.html_view import diff_page

        text = diff_page(a, b)
    elif args.json or args.format == "json":
        text = json.dumps(diff_dict(a.graph, b.graph), indent=2) + "\n"
    else:
        text = diff_text(a.graph, b.graph) + "\n"
    _emit(text, args.output)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Compile a spec over a grid of --set values and tabulate params, MACs and shapes."""
    from resgraph.design import parse_grid, sweep, sweep_csv, sweep_dict, sweep_text

    grid = parse_grid(args.grid)
    points = sweep(Path(args.spec), grid, args.max_nodes)
    if args.format == "json":
        print(json.dumps(sweep_dict(Path(args.spec), points, grid), indent=2))
    elif args.format == "csv":
        sys.stdout.write(sweep_csv(points, grid))
    else:
        print(sweep_text(points, grid))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the shipped models with their parameters and MACs."""
    from resgraph.registry import model_table, model_table_text

    rows = model_table(args.pattern)
    print(json.dumps(rows, indent=2) if args.json else model_table_text(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a shipped model's YAML, to start a design from."""
    from resgraph.registry import spec_path

    sys.stdout.write(spec_path(args.name).read_text(encoding="utf-8"))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the spec language."""
    from resgraph.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="resgraph",
        description="Compile ResNet-family YAML specs to checked graphs, PyTorch source and ONNX.",
    )
    parser.add_argument("--version", action="version", version=f"resgraph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check specs for shape and channel mistakes")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--format", choices=["text", "json", "github", "sarif"], default="text")
    _spec_options(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("summary", help="per-layer shapes, parameters and MACs")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--batch", type=positive, default=1, help="batch size of the memory estimate (default 1)"
    )
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="activations' precision in the memory estimate (default fp32)",
    )
    _spec_options(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("graph", help="draw the graph as Graphviz DOT, Mermaid or an HTML page")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--format", choices=["dot", "mermaid", "html"], default="dot")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    _spec_options(p)
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("compile", help="generate PyTorch source (or ONNX) from specs")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (one spec only)")
    p.add_argument(
        "--out-dir",
        default="generated",
        metavar="DIR",
        help="folder for <spec name>.py when -o is not given (default: generated)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any output is missing or differs (for CI)",
    )
    p.add_argument(
        "--fold-bn", action="store_true", help="inference variant: fold BN into the preceding conv"
    )
    p.add_argument(
        "--target",
        choices=["pytorch", "onnx"],
        default="pytorch",
        help="pytorch: generated/<name>.py (default); onnx: an ONNX model",
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="onnx: a state_dict or training checkpoint (.pt/.pth) keyed like the "
        "generated module; without it, He-init from --seed",
    )
    p.add_argument(
        "--seed", type=non_negative, default=0, help="onnx: seed of the He-init (default 0)"
    )
    p.add_argument("--opset", type=opset, default=17, help="onnx: opset version (default 17)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="onnx: half-precision weights and activations (input/logits stay fp32)",
    )
    p.add_argument(
        "--static-batch",
        type=positive,
        metavar="N",
        help="onnx: a fixed batch size instead of a dynamic batch axis",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="onnx: int8 weights and activations (QDQ), BN folded; needs --calibrate",
    )
    p.add_argument(
        "--calibrate",
        metavar="SOURCE",
        help="onnx --int8: images for the activation ranges, as train --data takes them "
        "(digits, cifar10:DIR, imagefolder:DIR, ...); their training split is used",
    )
    p.add_argument(
        "--calibration-images",
        type=positive,
        default=512,
        metavar="N",
        help="onnx --int8: calibrate on up to N images (default 512)",
    )
    p.add_argument(
        "--int8-symmetric",
        action="store_true",
        help="onnx --int8: int8 activations with zero point 0, as TensorRT requires "
        "(slower in onnxruntime on CPU)",
    )
    p.add_argument(
        "--head",
        choices=["fc", "fcn"],
        default="fc",
        help="fcn: pool with the training window, then the fc as a 1x1 conv, for "
        "fully-convolutional multi-scale testing (same weights); writes <name>_fcn.py",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="build_model() returns the model in channels_last memory format",
    )
    _spec_options(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("diff", help="what changed between two specs, stage by stage")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print one JSON object")
    how.add_argument(
        "--format",
        choices=["text", "json", "html"],
        default="text",
        help="html: both networks side by side, changed blocks marked",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("sweep", help="params, MACs and shapes over a grid of --set values")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument(
        "--set",
        dest="grid",
        action="append",
        default=[],
        metavar="K=V1,V2",
        help="a parameter or field and its values (n=3,5,7,9); repeat for a cartesian grid",
    )
    p.add_argument("--format", choices=["text", "csv", "json"], default="text")
    p.add_argument(
        "--max-nodes",
        type=positive,
        default=DEFAULT_MAX_NODES,
        metavar="N",
        help=f"refuse graphs over N nodes (default {DEFAULT_MAX_NODES:,})",
    )
    p.set_defaults(func=cmd_sweep)

    add_training_parsers(sub)
    add_import_parser(sub)

    p = sub.add_parser("list", help="the shipped models, with parameters and MACs")
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="a glob, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="print a shipped model's YAML")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec language")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 spec error, 2 usage error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug in resgraph, not the user's spec: say so in one line
        from resgraph.extras import install_hint

        hint = install_hint(exc.name, args.command) if type(exc) is ModuleNotFoundError else None
        if hint is not None:  # an optional extra is missing: say which to install
            print(f"resgraph {args.command}: {hint}", file=sys.stderr)
            return 1
        if os.environ.get("RESGRAPH_DEBUG"):
            raise
        print(
            f"resgraph: internal error: {type(exc).__name__}: {exc} "
            "(set RESGRAPH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 70
