"""`resgraph import SOURCE -o spec.yaml [--weights-out weights.pt]`."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

from resgraph.errors import SpecError

HELP = "write the spec of an existing network: a torch module, an ONNX file or a prototxt"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("import", help=HELP, description=HELP + ".")
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="package.module:callable returning an nn.Module, a .onnx file or a .prototxt file",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the spec here (default: stdout)")
    p.add_argument(
        "--weights-out",
        metavar="FILE",
        help="write the source's weights as a state_dict of the spec's generated module",
    )
    p.add_argument(
        "--arg",
        dest="kwargs",
        action="append",
        default=[],
        metavar="K=V",
        help="a keyword argument for the callable (YAML value: 10, true, name); repeatable",
    )
    p.add_argument(
        "--input",
        type=input_shape,
        metavar="CxHxW",
        help="the input size a callable's module is traced at (default 3x224x224)",
    )
    p.add_argument("--name", metavar="NAME", help="the spec's name (default: from the source)")
    p.set_defaults(func=cmd_import)


def input_shape(text: str) -> tuple[int, int, int]:
    """`3x224x224` (or `3,224,224`) as three positive sizes."""
    from resgraph.argtypes import positive

    parts = text.replace(",", "x").split("x")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x224x224, got {text!r}")
    c, h, w = (positive(part) for part in parts)
    return c, h, w


def keyword_arguments(pairs: list[str]) -> dict[str, Any]:
    import yaml

    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SpecError(f"--arg {pair}: expected NAME=VALUE, e.g. num_classes=10")
        try:
            kwargs[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            kwargs[key] = value
        if not isinstance(kwargs[key], (int, float, bool, str, type(None))):
            kwargs[key] = value  # lists and mappings stay text: the callable gets what was typed
    return kwargs


def cmd_import(args: argparse.Namespace) -> int:
    """Read the source, write its spec (and weights), after checking both."""
    from resgraph.importer import ImportFailure, import_graph
    from resgraph.importer.sources import default_name, read_source

    try:
        graph = read_source(args.source, keyword_arguments(args.kwargs), args.input)
        if args.weights_out and not graph.has_weights:
            raise ImportFailure(f"{args.source}: --weights-out: a prototxt holds no weights")
        if args.name is not None:
            from resgraph.importer.spec_writer import NAME

            if not NAME.match(args.name):
                raise ImportFailure(f"--name {args.name!r}: letters, digits and _, at most 64")
        imported = import_graph(graph, args.name or default_name(args.source))
        checked = ""
        if args.weights_out:
            from resgraph.importer.check import TOLERANCE, check_function

            check_function(imported, graph)
            checked = (
                "; with these weights its module computes the source's function "
                f"(within {TOLERANCE:g})"
            )
    except ImportFailure as exc:
        print(str(exc), file=sys.stderr)
        return 1
    _write(args, imported)
    for note in graph.notes:
        print(f"{args.source}: {note}", file=sys.stderr)
    network = imported.network
    print(
        f"{args.source}: {network.name}, {len(network.stages)} stages, "
        f"{len(network.blocks)} blocks, {network.params:,} parameters, "
        f"{network.macs:,} MACs{checked}",
        file=sys.stderr,
    )
    return 0


def _write(args: argparse.Namespace, imported: Any) -> None:
    from resgraph.output import write_atomic

    if args.weights_out:
        import torch

        buffer = io.BytesIO()
        torch.save({k: torch.from_numpy(v) for k, v in imported.weights.items()}, buffer)
        write_atomic(Path(args.weights_out), buffer.getvalue())
    if args.output:
        write_atomic(Path(args.output), imported.text)
    else:
        sys.stdout.write(imported.text)
