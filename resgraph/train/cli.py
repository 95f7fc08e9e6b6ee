"""The trainer's commands: `train`, `evaluate`, `plot` and `analyze responses`.

resgraph/cli.py adds them to the `resgraph` command with `add_parsers(subparsers)`; each
sets `func` to its `run_*` function.
"""

from __future__ import annotations

import argparse
from typing import Any

from resgraph.argtypes import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_SIDE,
    MAX_WORKERS,
    in_range,
    sizes,
)
from resgraph.train import TEST_MODES, user_path

DEVICES = ("cpu", "cuda")


def add_train_parser(subparsers: Any) -> None:
    """Add `train SPEC` to an argparse subparsers object."""
    p = subparsers.add_parser("train", help="train the network of a spec (digits data by default)")
    p.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (optional with --resume)")
    p.add_argument(
        "--data",
        metavar="SOURCE",
        help="digits (default), synthetic[:N], cifar10:DIR or imagefolder:DIR",
    )
    p.add_argument(
        "--recipe",
        metavar="NAME",
        help="cifar10-paper, imagenet-paper, quick (default) or a recipe .yaml file",
    )
    p.add_argument(
        "--epochs",
        type=in_range(1, MAX_EPOCHS),
        metavar="N",
        help="total epochs (overrides the recipe's length)",
    )
    p.add_argument(
        "--seed",
        type=in_range(0, MAX_SEED),
        metavar="N",
        help="seed for initialisation, order and augmentation (default 0)",
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<spec name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt")
    p.add_argument(
        "--force",
        action="store_true",
        help="start a new run in a non-empty --out folder, replacing its run files",
    )
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="override a recipe value (lr=0.05, recipe.warmup.lr=0.01) or a spec "
        "value (n=5, spec.input.height=16); repeatable",
    )
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision")
    p.add_argument(
        "--channels-last", action="store_true", help="NHWC memory layout (faster on GPUs)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the module")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the metrics to RUN/tensorboard (needs resgraph[tensorboard])",
    )
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume) and print where the results are."""
    from resgraph.train.loop import Speed
    from resgraph.train.run import Request, train

    request = Request(
        spec=args.spec,
        data=args.data,
        recipe=args.recipe,
        epochs=args.epochs,
        seed=args.seed,
        out=args.out,
        resume=args.resume,
        device=args.device,
        overrides=args.overrides,
        speed=Speed(args.amp, args.channels_last, args.compile),
        tensorboard=args.tensorboard,
        force=args.force,
    )
    outcome = train(request)
    last = outcome.last
    if last is not None:
        print(
            f"{outcome.run}: iteration {last['iteration']}, "
            f"train error {last['train_error']:.2%}, test error {last['test_error']:.2%}"
        )
    elif outcome.note is not None:
        print(outcome.note)
    return 0


def add_plot_parser(subparsers: Any) -> None:
    """Add `plot RUN... -o FILE` to an argparse subparsers object."""
    p = subparsers.add_parser("plot", help="training and test error curves of runs in one PNG")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    """Draw the runs' error curves."""

    from resgraph.train.plot import plot_errors

    output = user_path(args.output, "-o")
    plot_errors([user_path(r, "RUN") for r in args.runs], output)
    return 0


def add_analyze_parser(subparsers: Any) -> None:
    """Add `analyze responses RUN... -o FILE` to an argparse subparsers object."""
    p = subparsers.add_parser("analyze", help="analyses of trained runs")
    kinds = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    r = kinds.add_parser("responses", help="std of each 3x3 layer's response (the paper's Fig. 7)")
    r.add_argument("runs", nargs="+", metavar="RUN")
    r.add_argument("-o", "--output", required=True, metavar="FILE")
    r.add_argument("--checkpoint", choices=("best", "last"), default="best")
    r.add_argument("--device", choices=DEVICES, default="cpu")
    r.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    """Measure and plot layer responses, printing each run's numbers."""
    from pathlib import Path

    from resgraph.train.analyze import plot_responses, responses

    output = user_path(args.output, "-o")
    measured = {
        Path(run).name: responses(user_path(run, "RUN"), f"{args.checkpoint}.pt", args.device)
        for run in args.runs
    }
    plot_responses(measured, output)
    for name, stds in measured.items():
        print(
            f"{name}: {len(stds)} layers, std mean {sum(stds.values()) / len(stds):.3f}, "
            f"min {min(stds.values()):.3f}, max {max(stds.values()):.3f}"
        )
    return 0


def add_evaluate_parser(subparsers: Any) -> None:
    """Add `evaluate RUN --test MODE` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate",
        help="top-1/top-5 error of a trained run: centre crop, 10-crop or multi-scale",
    )
    p.add_argument("run", metavar="RUN", help="a training run's folder")
    p.add_argument("--data", metavar="SOURCE", help="test data (default: the run's --data)")
    p.add_argument(
        "--test",
        choices=TEST_MODES,
        default="center",
        help="center crop; 10crop (corners, centre and their flips); multiscale (fully "
        "convolutional over --scales)",
    )
    p.add_argument(
        "--scales",
        type=sizes,
        metavar="S,S,...",
        help="shorter sides for multiscale (default: the paper's 224,256,384,480,640 scaled "
        "by the run's input size / 224)",
    )
    p.add_argument(
        "--test-size",
        type=in_range(1, MAX_SIDE),
        metavar="N",
        help="shorter side before center/10-crop (default: the recipe's test_size)",
    )
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument(
        "--batch-size", type=in_range(1, MAX_BATCH), metavar="N", help="images per batch"
    )
    p.add_argument(
        "--workers", type=in_range(0, MAX_WORKERS), metavar="N", help="data loader processes"
    )
    p.add_argument(
        "--onnx",
        metavar="FILE",
        help="also score this ONNX file (fp32, fp16 or int8) with onnxruntime on the same "
        "views, beside the checkpoint",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="JSON result (default RUN/evaluate-<test>.json)"
    )
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate, print a table, and write the JSON result."""
    import json

    from resgraph.output import write_atomic
    from resgraph.train.evaluate import Request, evaluate, table

    run = user_path(args.run, "RUN")
    output = user_path(args.output or str(run / f"evaluate-{args.test}.json"), "-o")
    request = Request(
        run=run,
        data=args.data,
        test=args.test,
        scales=args.scales,
        test_size=args.test_size,
        checkpoint=args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        onnx=None if args.onnx is None else user_path(args.onnx, "--onnx"),
    )
    result = evaluate(request)
    write_atomic(output, json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"-> {output}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Add train, evaluate, plot and analyze to an argparse subparsers object."""
    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_plot_parser(subparsers)
    add_analyze_parser(subparsers)
