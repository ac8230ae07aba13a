"""Command line: ``autolr demo`` and ``autolr bench`` (also ``python -m autolr ...``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

__all__ = ["HelpFormatter", "float_above", "int_at_least", "main", "make_out_dir", "out_dir"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already states it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        return str(super()._get_help_string(action))


# Argument types: argparse turns an ArgumentTypeError into the one-line
# "autolr bench: error: argument --seeds: must be an int >= 1, got 0" and exit code 2,
# before any work starts.
def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def float_above(minimum: float) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite floats ``> minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a finite number > {minimum:g}, got {text!r}"
            ) from None
        if not (math.isfinite(value) and value > minimum):
            raise argparse.ArgumentTypeError(f"must be a finite number > {minimum:g}, got {text}")
        return value

    parse.__name__ = f"float > {minimum:g}"
    return parse


def out_dir(text: str) -> str:
    """An argparse ``type`` for an output folder: refused up front if a file is in the way."""
    if not text:
        raise argparse.ArgumentTypeError("must be a folder path, got ''")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return text


def make_out_dir(path: str) -> str | None:
    """Create the output folder ``path`` before any work; the ``--out`` error, or ``None``.

    A folder that cannot be created or written to would otherwise end the command with a
    traceback.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"argument --out: cannot create {path!r}: {exc.strerror or exc}"
    if not os.access(path, os.W_OK):
        return f"argument --out: {path!r} is not writable"
    return None


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"must be a torch device such as cpu or cuda, got {text!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r} was given but torch.cuda.is_available() is False"
        )
    return text


def _add_demo(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        "demo",
        help="AutoLRS vs one cosine run at a guessed LR and a grid-tuned cosine, same budget",
        description="AutoLRS vs one cosine run at a guessed LR and a grid-tuned cosine, "
        "each with the same step budget, on a synthetic 10-class task (nothing downloaded).",
        formatter_class=HelpFormatter,
    )
    demo.add_argument("--steps", type=int_at_least(1), default=3000, help="optimizer steps per run")
    demo.add_argument(
        "--grid", type=int_at_least(2), default=5, help="LRs in the cosine grid (both box ends)"
    )
    demo.add_argument("--lr-min", type=float_above(0.0), default=1e-3, help="low end of the box")
    demo.add_argument("--lr-max", type=float_above(0.0), default=1.0, help="high end of the box")
    demo.add_argument("--seed", type=int_at_least(0), default=0, help="seed of data and weights")
    demo.add_argument("--device", type=_device, default="cpu", help="torch device: cpu, cuda, ...")
    demo.add_argument("--out", type=out_dir, default="autolr-demo", help="output folder")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    return demo


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autolr`` console script."""
    parser = argparse.ArgumentParser(
        prog="autolr", description=__doc__, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = _add_demo(sub)
    try:
        from .bench import cli as bench_cli  # benchmarks/, mapped as autolr.bench
    except ImportError:  # a build without the benchmark suite
        bench_cli = None
    else:
        bench_cli.add_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.lr_min >= args.lr_max:
            demo.error(
                f"argument --lr-min: must be below --lr-max, got {args.lr_min:g} >= {args.lr_max:g}"
            )
        if problem := make_out_dir(args.out):
            demo.error(problem)
        from ._demo import DemoConfig, run_demo
        from ._errors import AutoLRError

        try:
            run_demo(
                DemoConfig(
                    steps=args.steps,
                    grid=args.grid,
                    lr_bounds=(args.lr_min, args.lr_max),
                    seed=args.seed,
                    device=args.device,
                    out=args.out,
                    progress=not args.no_progress,
                )
            )
        except AutoLRError as exc:  # a setting the library refuses: one line, not a traceback
            print(f"autolr demo: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "bench" and bench_cli is not None:
        return int(bench_cli.run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
