"""``autolr bench``: AutoLRS against the schedules and optimizers users would pick instead.

Runs every (task, method, seed[, grid LR]) combination, then writes ``results.json``,
``results.md`` and one ``<task>.png`` per task into ``--out``. Standalone:
``python -m autolr.bench.cli [--quick] ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

from autolr.__main__ import HelpFormatter, int_at_least, make_out_dir, out_dir
from autolr._jsonio import write_json

from ._parallel import imap_jobs
from .methods import METHODS, grid_lrs, run_once
from .tasks import TASKS

__all__ = ["STUDIES", "USES", "add_parser", "main", "run"]

# ``--study NAME`` runs one of the issue-specific studies instead of the schedule suite. Each is a
# module of this package exposing ``run(args: argparse.Namespace) -> int`` that reads the common
# options (quick, seeds, out, jobs, no_progress, no_plots) and writes results.json, results.md and
# its PNGs into ``args.out``. Modules load lazily so a study's framework (Ray, Optuna) is only
# imported when that study runs.
STUDIES: dict[str, str] = {
    "hd": "hd",  # hypergradient LR robustness to the initial LR
    "fedhyper": "fedhyper",  # FedHyper vs FedAvg over a grid of global x local LRs
    "stn": "stn",  # Self-Tuning Networks vs fixed-regularisation grids
    "ray": "ray_population",  # AutoLRSScheduler vs PBT / PB2 / FIFO
    "optuna": "optuna_search",  # AutoLRSSampler + ForecastPruner vs TPE / GPSampler / random
    "autolrs": "autolrs_study",  # ablation of the budget-aware AutoLRS
    "replay": "replay",  # exported AutoLRS schedules replayed vs the grid-best cosine
    "llm": "llm",  # LLMSearcher (LLAMBO): cost, faults, cache replay; quality with an endpoint
}

QUICK_GRID = 5
FULL_GRID = 6


# Options each study reads; giving another one is refused rather than silently ignored. Every
# study also reads --seeds, --quick, --out, --no-progress and --no-plots.
USES: dict[str, frozenset[str]] = {
    "schedules": frozenset({"tasks", "methods", "grid", "jobs", "rerender"}),
    "autolrs": frozenset({"tasks", "variants", "grid", "jobs"}),
    "fedhyper": frozenset({"jobs", "rerender"}),
    "optuna": frozenset({"tasks", "jobs", "workers"}),
    "hd": frozenset(),
    "stn": frozenset(),
    "ray": frozenset(),
    "replay": frozenset({"tasks", "grid", "jobs"}),
    "llm": frozenset(),
}

# The options whose use depends on the study (checked against USES).
_STUDY_FLAGS = ("tasks", "methods", "variants", "grid", "jobs", "workers", "rerender")


def _csv(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one, got {value!r}")
    return names


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--study",
        choices=["schedules", *STUDIES],
        default="schedules",
        help="which benchmark: the schedule suite or an issue study; "
        "a study writes into bench-results/<study> unless --out is given",
    )
    p.add_argument(
        "--tasks",
        type=_csv,
        default=None,
        help=f"comma-separated tasks (default: all: {','.join(TASKS)}; a study: its own; "
        "--study autolrs and optuna also take the held-out tasks)",
    )
    p.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help=f"comma-separated methods (default: all: {','.join(METHODS)}); "
        "'cosine' is always run as the reference",
    )
    p.add_argument(
        "--variants",
        type=_csv,
        default=None,
        help="--study autolrs: comma-separated variants to run (default: all)",
    )
    p.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=None,
        help="seeds per run (default: 3; --quick: 1; a study: its own)",
    )
    p.add_argument(
        "--quick", action="store_true", help="short budgets, grid of 5, 1 seed (about 3 min)"
    )
    p.add_argument(
        "--grid",
        type=int_at_least(2),
        default=None,
        help=f"LR grid size (default: {FULL_GRID}; --quick: {QUICK_GRID}; "
        "--study autolrs: its own)",
    )
    p.add_argument(
        "--out", type=out_dir, default=None, help="output folder (default: bench-results[/<study>])"
    )
    p.add_argument(
        "--jobs", type=int_at_least(1), default=None, help="worker processes (default: 1)"
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        default=None,
        help="--study optuna: processes sharing each study and its step budget through one "
        "JournalFileStorage, as parallel Optuna workers (default: 1, no storage)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--rerender",
        action="store_true",
        help="rewrite results.md and the plots from --out/results.json without training",
    )


def add_parser(subparsers: Any) -> None:
    """Register ``bench`` on the ``autolr`` command's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark AutoLRS against tuned schedules and adaptive optimizers",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    _configure(p)


def _error(message: str) -> int:
    """Misuse found after parsing: one argparse-style line on stderr, exit code 2."""
    print(f"autolr bench: error: {message}", file=sys.stderr)
    return 2


def _unknown(flag: str, what: str, given: list[str], known: list[str]) -> str | None:
    """The error for the names in ``given`` that ``--flag`` does not know (None: all known)."""
    bad = [name for name in given if name not in known]
    if not bad:
        return None
    return f"argument --{flag}: unknown {what} {', '.join(bad)}; choose from {', '.join(known)}"


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with ``args`` for its study (``None`` when nothing), before any work."""
    study = getattr(args, "study", "schedules")
    given = {name for name in _STUDY_FLAGS if getattr(args, name, None) not in (None, False)}
    for name in sorted(given - USES[study]):
        where = ", ".join(s for s, used in USES.items() if name in used)
        return f"argument --{name}: not used by --study {study} (used by: {where})"
    if (getattr(args, "workers", None) or 1) > 1 and (args.jobs or 1) > 1:
        # A study's workers are processes of their own; the --jobs pool's processes are
        # daemonic and may not start any.
        return (
            f"argument --workers: runs each study on {args.workers} processes, one study at a "
            "time; leave --jobs out (or give --jobs 1)"
        )
    if args.tasks:
        known = list(TASKS)
        if study in ("autolrs", "optuna"):
            from .tasks import HOLDOUT

            known += list(HOLDOUT)
        if study == "optuna":
            # Its trials train with SGD + a searched momentum, in the task's LR range: an
            # AdamW task's range does not fit that optimizer.
            from .tasks import get_task

            sgd = [n for n in known if get_task(n).family == "sgd"]
            if other := [n for n in args.tasks if n in known and n not in sgd]:
                return (
                    f"argument --tasks: --study optuna trains with SGD, and {', '.join(other)} "
                    f"{'is an AdamW task' if len(other) == 1 else 'are AdamW tasks'}; "
                    f"choose from {', '.join(sgd)}"
                )
            known = sgd
        if bad := _unknown("tasks", "task", args.tasks, known):
            return bad
    if args.methods and (bad := _unknown("methods", "method", args.methods, list(METHODS))):
        return bad
    if args.variants:
        from .autolrs_study import VARIANTS

        if bad := _unknown("variants", "variant", args.variants, list(VARIANTS)):
            return bad
    if args.rerender:
        path = os.path.join(args.out, "results.json")
        if not os.path.isfile(path):
            return f"argument --rerender: no {path} to re-render (run without --rerender first)"
    return None


def _worker(job: tuple[str, str, int, int, float | None]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    task, method, seed, budget, lr = job
    return run_once(TASKS[task], METHODS[method], seed, budget, lr=lr)


def _jobs(args: argparse.Namespace) -> list[tuple[str, str, int, int, float | None]]:
    grid = args.grid or (QUICK_GRID if args.quick else FULL_GRID)
    seeds = args.seeds or (1 if args.quick else 3)
    methods = list(args.methods)
    if "cosine" not in methods:
        methods.append("cosine")  # the reference of "compute to target"
    jobs = []
    for tname in args.tasks:
        task = TASKS[tname]
        budget = task.quick_budget if args.quick else task.budget
        for seed in range(seeds):
            for mname in methods:
                m = METHODS[mname]
                lrs = grid_lrs(task, grid) if m.grid else [None]
                jobs.extend((tname, mname, seed, budget, lr) for lr in lrs)
    return jobs


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args`` (from :func:`add_parser`); returns 0 on success."""
    study = getattr(args, "study", "schedules")
    for name in _STUDY_FLAGS:
        if not hasattr(args, name):  # a Namespace built by hand: the parser's defaults
            setattr(args, name, None if name != "rerender" else False)
    if args.out is None:
        args.out = "bench-results" if study == "schedules" else os.path.join("bench-results", study)
    problem = _check(args) or make_out_dir(args.out)  # the folder exists from here on
    if problem is not None:
        return _error(problem)
    args.jobs = args.jobs or 1
    if study == "schedules":
        args.tasks = args.tasks or list(TASKS)
        args.methods = args.methods or list(METHODS)
    if study != "schedules":
        import importlib

        module = importlib.import_module(f".{STUDIES[study]}", __package__)
        return int(module.run(args))
    from autolr._progress import Progress
    from autolr.integrations import require

    # Fail before any training if the bench extra is missing, naming what to install.
    needed = ["sklearn", "prodigyopt", "schedulefree", "dadaptation"]
    if not args.no_plots:
        needed.append("matplotlib")
    for module in needed:
        require(module, "bench")

    from .report import summarise

    if args.rerender:
        return _rerender(args)
    import torch

    torch.set_num_threads(1)
    jobs = _jobs(args)
    start = time.perf_counter()
    bar = Progress(len(jobs), desc="bench", enabled=not args.no_progress)
    runs: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:
        runs.append(r)
        bar.update(1, task=r["task"], method=r["method"], val=f"{r['final_val']:.4g}")

    if args.jobs > 1:  # longest tasks first so the pool drains evenly
        jobs = sorted(jobs, key=lambda j: -TASKS[j[0]].budget * _COST.get(j[0], 1.0))
    for r in imap_jobs(_worker, jobs, args.jobs):
        done(r)
    bar.close()
    elapsed = time.perf_counter() - start
    grid = args.grid or (QUICK_GRID if args.quick else FULL_GRID)
    seeds = args.seeds or (1 if args.quick else 3)
    runs.sort(key=lambda r: (r["task"], r["method"], r["seed"], r["lr"] or 0.0))
    summary = summarise(runs)
    meta = {
        "command": "autolr bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
        "argv": getattr(args, "argv", None),
        "quick": bool(args.quick),
        "seeds": seeds,
        "grid_size": grid,
        "elapsed_s": elapsed,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    if getattr(args, "argv", None) is not None:
        meta["command"] = "autolr bench " + " ".join(args.argv)
    write_json(
        os.path.join(args.out, "results.json"), {"meta": meta, "summary": summary, "runs": runs}
    )
    _render(args, summary, meta, runs)
    print(f"autolr bench: {len(runs)} runs in {elapsed:.0f} s; results in {args.out}/")
    return 0


def _render(args, summary: dict[str, Any], meta: dict[str, Any], runs: list[dict]) -> None:
    from .report import plot_task, to_markdown

    descriptions = {t: TASKS[t].description for t in TASKS}
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(to_markdown(summary, meta, descriptions))
    if not args.no_plots:
        for task in summary:
            plot_task(task, runs, os.path.join(args.out, f"{task}.png"))


def _rerender(args: argparse.Namespace) -> int:
    from .report import summarise

    path = os.path.join(args.out, "results.json")
    with open(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            return _error(f"argument --rerender: {path} is not valid JSON ({exc})")
    if not isinstance(data, dict) or not {"meta", "runs"} <= set(data):
        return _error(f"argument --rerender: {path} was not written by autolr bench")
    runs = data["runs"]
    for r in runs:  # JSON stores non-finite losses as null
        if r["final_val"] is None:
            r["final_val"] = math.inf
        r["evals"] = [[s, math.inf if v is None else v, ok] for s, v, ok in r["evals"]]
        r["lrs"] = [[s, v] for s, v in r["lrs"] if v is not None]
    _render(args, summarise(runs), data["meta"], runs)
    print(f"autolr bench: re-rendered {args.out}/results.md from results.json")
    return 0


# Relative cost of one step (measured on one CPU thread) for job ordering only.
_COST = {"quadratic": 0.1, "logreg": 0.15, "mlp": 0.4, "cnn": 2.0, "charlm": 9.0}


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m autolr.bench.cli [options]``."""
    parser = argparse.ArgumentParser(
        prog="autolr bench", description=__doc__, formatter_class=HelpFormatter
    )
    _configure(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
