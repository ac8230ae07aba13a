"""Command line: ``autolr demo`` and ``autolr bench`` (also ``python -m autolr ...``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autolr`` console script."""
    parser = argparse.ArgumentParser(prog="autolr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="AutoLRS vs one cosine run at a guessed LR and a grid-tuned cosine, same budget",
    )
    demo.add_argument("--steps", type=int, default=3000, help="optimizer steps per run")
    demo.add_argument("--grid", type=int, default=5, help="LRs in the cosine grid")
    demo.add_argument("--lr-min", type=float, default=1e-3)
    demo.add_argument("--lr-max", type=float, default=1.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu", help="cpu or cuda")
    demo.add_argument("--out", default="autolr-demo", help="output folder")
    demo.add_argument("--no-progress", action="store_true")
    try:
        from .bench import cli as bench_cli  # benchmarks/, mapped as autolr.bench
    except ImportError:  # a build without the benchmark suite
        bench_cli = None
    else:
        bench_cli.add_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from ._demo import DemoConfig, run_demo

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
        return 0
    if args.command == "bench" and bench_cli is not None:
        return int(bench_cli.run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
