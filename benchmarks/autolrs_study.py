"""Study ``autolrs``: which mechanisms of the budget-aware AutoLRS earn their place.

Per task and seed, the cosine grid (``FULL_GRID`` log-spaced LRs over the task's box, 5 %
warm-up, decay to 0) gives the reference: its best final validation loss. Then AutoLRS runs
once per *variant*: the default budget variant, and the default with one mechanism changed
(an ablation), plus the paper variant. Every run trains the task's full budget with search
steps counted. Figure of merit: final validation loss / the grid-best cosine's (lower is
better), reported per task (median over seeds), as a geometric mean over the bench tasks and,
separately, over the held-out tasks (``tasks.HOLDOUT``), which were never used to choose the
defaults; the five held-out tasks added after the last default was chosen (``tasks.FRESH``)
have a column of their own.

``autolr bench --study autolrs [--quick] [--seeds N] [--jobs N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any

from autolr._jsonio import write_json
from autolr._progress import Progress

from ._parallel import imap_jobs
from ._study import gmean, grid_best, study_meta, study_settings
from .methods import METHODS, Method, grid_lrs, run_once
from .tasks import FRESH, HOLDOUT, TASKS, get_task

__all__ = ["HOLDOUT_TASKS", "TASKS_FULL", "VARIANTS", "run"]

TASKS_FULL = tuple(TASKS)
HOLDOUT_TASKS = tuple(HOLDOUT)
QUICK_TASKS = ("logreg", "softmax")
FULL_GRID = 6
QUICK_GRID = 4
WITHIN = 1.05  # the target: final val <= 1.05x the grid-best cosine's

#: variant -> (description, BudgetPolicy.for_budget overrides, AutoLRS overrides, use val_fn)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any], bool]] = {
    "default": (
        "budget variant defaults (windows end in a 30 % cooldown, cooled losses compared; "
        "1 - sqrt final decay)",
        {},
        {},
        True,
    ),
    "window-linear": (
        "uncooled windows compared on the level reached, linear final decay (the default "
        "until 2026-12-07)",
        {"cooldown_frac": 0.0, "decay_shape": "linear"},
        {"compare": "window"},
        True,
    ),
    "no-cooldown": (
        "uncooled windows compared on the level reached",
        {"cooldown_frac": 0.0},
        {"compare": "window"},
        True,
    ),
    "linear-decay": ("linear final decay", {"decay_shape": "linear"}, {}, True),
    "no-val": ("scored on training losses (no val_fn)", {}, {}, False),
    "decay-0.2": ("final decay over the last 20 % (WSD-style)", {"decay_frac": 0.2}, {}, True),
    "no-decay": ("no final decay", {"decay_frac": 0.0}, {}, True),
    "3-searches": ("three searches, trust region x4", {"searches": 3}, {}, True),
    "forecast": (
        "exponential forecast of training losses to the horizon (paper scoring)",
        {},
        {"compare": "forecast"},
        False,
    ),
    "restart": ("winner restarts from the stage start", {}, {"continue_from": "start"}, True),
    "sobol-init": (
        "scrambled Sobol initial candidates instead of stratified ones",
        {},
        {"design": "sobol"},
        True,
    ),
    "gp-fit-3": (
        "GP hyperparameters fitted from the first GP step (3 points) instead of from 6",
        {},
        {"fit_min_obs": 0},
        True,
    ),
    "gp-raw": (
        "the GP models raw window scores instead of their logarithm (the default until the "
        "GP's log values)",
        {},
        {"log_values": False},
        True,
    ),
    "box-x3": (
        "the LR box 3x wider on each side (a user's looser guess; the cosine grid keeps the "
        "task's box)",
        {},
        {"box_scale": 3.0},
        True,
    ),
    "box-x10": ("the LR box 10x wider on each side", {}, {"box_scale": 10.0}, True),
    "paper": ("paper variant (tau = budget/10, k = 10)", {}, {}, False),
}


def _worker(job: tuple[str, str, int, int, float | None]) -> dict[str, Any]:
    import torch

    from autolr import BudgetPolicy

    torch.set_num_threads(1)
    tname, variant, seed, budget, lr = job
    task = get_task(tname)
    if variant == "cosine":
        r = run_once(task, METHODS["cosine"], seed, budget, lr=lr)
    else:
        _, pol, kw, use_val = VARIANTS[variant]
        if variant == "paper":
            r = run_once(task, METHODS["autolrs-paper"], seed, budget, use_val=False)
        else:
            kw = dict(kw)
            if "box_scale" in kw:
                m, (lo, hi) = kw.pop("box_scale"), task.lr_range
                kw["lr_bounds"] = (lo / m, hi * m)
            changes = {k: kw.pop(k) for k in ("design", "fit_min_obs", "log_values") if k in kw}
            if changes:
                from autolr._autolrs._stage import _default_searcher

                # The budget variant's default searcher with one setting changed.
                lo, hi = task.lr_range
                kw["searcher"] = _default_searcher(lo, hi, seed, "budget", **changes)
            if pol:
                kw["policy"] = BudgetPolicy.for_budget(budget, **pol)
            method = Method(f"autolrs[{variant}]", "autolrs", False, VARIANTS[variant][0])
            r = run_once(task, method, seed, budget, tuner_kwargs=kw, use_val=use_val)
    return {
        "task": tname,
        "variant": variant,
        "seed": seed,
        "lr": lr,
        "budget": budget,
        "final_val": r["final_val"],
        "train_time": r["train_time"],
        "tuner_time": r["tuner_time"],
        "winners": [s["lr"] for s in r.get("stages", [])],
    }


def _ratio_table(runs: list[dict[str, Any]], tasks: list[str], variants: list[str]) -> dict:
    ref = grid_best(runs, "variant")
    table: dict[str, dict[str, Any]] = {}
    for v in variants:
        per_task: dict[str, list[float]] = {}
        overhead: dict[str, list[float]] = {}
        for r in runs:
            if r["variant"] != v:
                continue
            base = ref.get((r["task"], r["seed"]))
            if base is None or not math.isfinite(base) or base <= 0:
                continue
            fv = r["final_val"]
            ratio = fv / base if fv is not None and math.isfinite(fv) else math.inf
            per_task.setdefault(r["task"], []).append(ratio)
            if r["train_time"] > 0:
                overhead.setdefault(r["task"], []).append(r["tuner_time"] / r["train_time"])
        table[v] = {
            "median_ratio": {t: statistics.median(x) for t, x in per_task.items()},
            "ratios": per_task,
            "overhead": {t: statistics.median(x) for t, x in overhead.items()},
        }
    return table


def _markdown(table: dict, tasks: list[str], meta: dict[str, Any]) -> str:
    bench = [t for t in tasks if t in TASKS]
    held = [t for t in tasks if t in HOLDOUT and t not in FRESH]
    fresh = [t for t in tasks if t in FRESH]
    lines = [
        "# Study `autolrs`: ablation of the budget-aware AutoLRS",
        "",
        f"Seeds: {meta['seeds']}; cosine grid of {meta['grid']} LRs per task and seed "
        f"(the reference); budgets as in `autolr bench`{' (quick)' if meta['quick'] else ''}. "
        f"Elapsed {meta['elapsed_s']:.0f} s on {meta['cpu_count']} CPU cores.",
        "",
        "Cells: final validation loss / the grid-best cosine's, median over seeds (lower is "
        f"better; ≤ {WITHIN} is the issue's target). `bench` and `held-out`: geometric mean over "
        "tasks and seeds; `≤1.05`: task-seeds within target. Held-out tasks "
        f"({', '.join(held) or 'none'}) were not used to choose the defaults; `fresh`: the "
        f"held-out tasks added after the last default was chosen ({', '.join(fresh) or 'none'}).",
        "",
    ]
    head = ["variant", *tasks, "bench", "held-out", "fresh", "≤1.05", "overhead (median)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for v, row in table.items():
        cells = [f"`{v}`"]
        for t in tasks:
            x = row["median_ratio"].get(t)
            cells.append("—" if x is None else ("diverged" if not math.isfinite(x) else f"{x:.3f}"))
        allb = [x for t in bench for x in row["ratios"].get(t, [])]
        allh = [x for t in held for x in row["ratios"].get(t, [])]
        allf = [x for t in fresh for x in row["ratios"].get(t, [])]
        for group in (allb, allh, allf):
            cells.append(f"{gmean(group):.3f}" if group else "—")
        every = allb + allh + allf
        cells.append(f"{sum(x <= WITHIN for x in every)}/{len(every)}")
        ovs = list(row["overhead"].values())
        cells.append(f"{statistics.median(ovs):.1%}" if ovs else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Variants:", ""]
    for v, (desc, pol, kw, use_val) in VARIANTS.items():
        if v in table:
            extra = "" if use_val else " (training losses only)"
            lines.append(f"- `{v}`: {desc}{extra}; policy {pol or '{}'}, tuner {kw or '{}'}")
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the study; writes results.json and results.md into ``args.out``."""
    quick, seeds, grid, tasks = study_settings(
        args,
        quick_tasks=QUICK_TASKS,
        tasks=(*TASKS_FULL, *HOLDOUT_TASKS),
        quick_grid=QUICK_GRID,
        full_grid=FULL_GRID,
    )
    variants = list(VARIANTS)
    only = getattr(args, "variants", None)
    if only:
        variants = [v for v in variants if v in only]
    jobs: list[tuple[str, str, int, int, float | None]] = []
    for t in tasks:
        task = get_task(t)
        budget = task.quick_budget if quick else task.budget
        for seed in range(seeds):
            jobs.extend((t, "cosine", seed, budget, lr) for lr in grid_lrs(task, grid))
            jobs.extend((t, v, seed, budget, None) for v in variants)
    start = time.perf_counter()
    bar = Progress(len(jobs), desc="autolrs study", enabled=not args.no_progress)
    runs = []
    for r in imap_jobs(_worker, jobs, max(1, args.jobs)):
        runs.append(r)
        bar.update(1, task=r["task"], variant=r["variant"])
    bar.close()
    meta = study_meta(start, quick=quick, seeds=seeds, grid=grid, tasks=tasks, variants=variants)
    table = _ratio_table(runs, tasks, variants)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "results.json"), {"meta": meta, "table": table, "runs": runs})
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(_markdown(table, tasks, meta))
    print(f"autolrs study: {len(runs)} runs in {meta['elapsed_s']:.0f} s; results in {args.out}/")
    return 0
