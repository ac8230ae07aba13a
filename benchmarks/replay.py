"""Study ``replay``: tune once with AutoLRS, replay the exported schedule in fresh runs.

Per task and seed ``s``: AutoLRS (budget variant defaults, ``val_fn`` the task's validation
loss, as in ``autolr bench``) trains the task's budget once; its schedule is exported with
``AutoLRS.export_schedule(steps=budget)`` (the exploited lineage, search steps of discarded
candidates removed, stretched back to the full budget, since a replay has no search to pay
for) and saved as JSON. A plain run then replays it through ``Schedule.scheduler(optimizer)``
on the tuning seed (same initial weights and batches) and on a fresh seed ``s + 100`` (the
"tune once, replay many" case). Every run is compared with the grid-best cosine (``--grid``
log-spaced LRs, 5 % warm-up, decay to 0) of its own seed: final validation loss / the
grid-best cosine's, lower is better.

``autolr bench --study replay [--quick] [--tasks a,b] [--seeds N] [--grid N] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings
from typing import Any

from autolr._jsonio import write_json
from autolr._progress import Progress

from ._parallel import imap_jobs
from ._study import gmean, grid_best, study_meta, study_settings
from .methods import METHODS, _seeded_instance, grid_lrs, run_once
from .tasks import TASKS, Task, get_task

__all__ = ["FRESH_SEED", "replay_once", "run", "tune_once"]

QUICK_TASKS = ("logreg", "mlp")
QUICK_GRID = 4
FULL_GRID = 6
#: A replay on a fresh seed uses seed ``s + FRESH_SEED`` (initial weights and batches).
FRESH_SEED = 100


def tune_once(task: Task, seed: int, budget: int) -> dict[str, Any]:
    """AutoLRS as ``autolr bench`` runs it; returns its final val and exported schedule."""
    from autolr import AutoLRS

    inst = _seeded_instance(task, seed)
    lo, hi = task.lr_range
    opt = task.make_optimizer(inst.model.parameters(), math.sqrt(lo * hi))
    tuner = AutoLRS(
        inst.model, opt, lr_bounds=task.lr_range, max_steps=budget, seed=seed,
        val_fn=inst.val_loss,
    )  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(budget):
        loss = inst.step(opt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuner.step(loss.item())
    final = inst.val_loss()
    lineage = tuner.export_schedule()
    return {
        "final_val": final if math.isfinite(final) else math.inf,
        "train_time": time.perf_counter() - t0,
        "lineage_steps": lineage.n_steps,
        "schedule": lineage.stretch(budget).state_dict(),
    }


def replay_once(task: Task, schedule: Any, seed: int, budget: int) -> dict[str, Any]:
    """A plain run of ``budget`` steps whose LR follows ``schedule`` (a Schedule)."""
    inst = _seeded_instance(task, seed)
    opt = task.make_optimizer(inst.model.parameters(), 1.0)  # the scheduler sets every LR
    sched = schedule.scheduler(opt)
    t0 = time.perf_counter()
    for _ in range(budget):
        loss = inst.step(opt)
        sched.step()
        if not math.isfinite(loss.item()):
            return {"final_val": math.inf, "train_time": time.perf_counter() - t0}
    final = inst.val_loss()
    return {
        "final_val": final if math.isfinite(final) else math.inf,
        "train_time": time.perf_counter() - t0,
    }


def _worker(job: tuple[str, str, int, int, Any]) -> dict[str, Any]:
    import torch

    from autolr import Schedule

    torch.set_num_threads(1)
    tname, kind, seed, budget, extra = job
    task = get_task(tname)
    if kind == "cosine":
        r = run_once(task, METHODS["cosine"], seed, budget, lr=extra)
        out = {"final_val": r["final_val"], "train_time": r["train_time"], "lr": extra}
    elif kind == "tune":
        out = tune_once(task, seed, budget)
    else:  # "replay-same" / "replay-fresh": extra is the schedule's state_dict
        out = replay_once(task, Schedule.from_state_dict(extra), seed, budget)
    return {"task": tname, "kind": kind, "seed": seed, "budget": budget, **out}


def _table(runs: list[dict[str, Any]], tasks: list[str]) -> dict[str, dict[str, Any]]:
    best = grid_best(runs, "kind")
    table: dict[str, dict[str, Any]] = {}
    for t in tasks:
        row: dict[str, Any] = {}
        for kind in ("tune", "replay-same", "replay-fresh"):
            ratios = []
            for r in runs:
                if r["task"] != t or r["kind"] != kind:
                    continue
                base = best.get((t, r["seed"]))
                if base is None or not math.isfinite(base) or base <= 0:
                    continue
                fv = r["final_val"]
                ratios.append(fv / base if math.isfinite(fv) else math.inf)
            row[kind] = {"ratios": ratios, "median": statistics.median(ratios) if ratios else None}
        tuned = [r for r in runs if r["task"] == t and r["kind"] == "tune"]
        row["lineage_frac"] = (
            statistics.median(r["lineage_steps"] / r["budget"] for r in tuned) if tuned else None
        )
        table[t] = row
    return table


def _markdown(table: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Study `replay`: AutoLRS schedules exported and replayed in fresh runs",
        "",
        f"Seeds: {meta['seeds']}; cosine grid of {meta['grid']} LRs per task and seed (the "
        f"reference, run on the tuning seed and on the fresh seed); budgets as in "
        f"`autolr bench`{' (quick)' if meta['quick'] else ''}. Elapsed "
        f"{meta['elapsed_s']:.0f} s on {meta['cpu_count']} CPU cores.",
        "",
        "Cells: final validation loss / the grid-best cosine's of the same seed, median over "
        "seeds (lower is better). `tuned`: the AutoLRS run itself (search steps counted in its "
        "budget). `replay, same seed`: its exported schedule (`export_schedule(steps=budget)`) "
        "replayed by `Schedule.scheduler` from the same initial weights and batches. `replay, "
        f"fresh seed`: replayed on seed + {FRESH_SEED}. `lineage`: steps the exported lineage "
        "kept / budget (before stretching).",
        "",
        "| task | tuned | replay, same seed | replay, fresh seed | lineage |",
        "|---|---|---|---|---|",
    ]

    def cell(x: float | None) -> str:
        return "—" if x is None else ("diverged" if not math.isfinite(x) else f"{x:.3f}")

    for t, row in table.items():
        frac = row["lineage_frac"]
        lines.append(
            f"| {t} | {cell(row['tune']['median'])} | {cell(row['replay-same']['median'])} | "
            f"{cell(row['replay-fresh']['median'])} | {'—' if frac is None else f'{frac:.0%}'} |"
        )
    gm = {k: gmean([x for row in table.values() for x in row[k]["ratios"]]) for k in
          ("tune", "replay-same", "replay-fresh")}  # fmt: skip
    lines.append(
        f"| geometric mean | {cell(gm['tune'])} | {cell(gm['replay-same'])} | "
        f"{cell(gm['replay-fresh'])} | |"
    )
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the study; writes results.json, results.md and the schedules into ``args.out``."""
    from autolr import Schedule

    quick, seeds, grid, tasks = study_settings(
        args, quick_tasks=QUICK_TASKS, tasks=TASKS, quick_grid=QUICK_GRID, full_grid=FULL_GRID
    )
    n_jobs = max(1, getattr(args, "jobs", None) or 1)
    first: list[tuple[str, str, int, int, Any]] = []
    for t in tasks:
        task = get_task(t)
        budget = task.quick_budget if quick else task.budget
        for seed in range(seeds):
            first.append((t, "tune", seed, budget, None))
            for s in (seed, seed + FRESH_SEED):
                first.extend((t, "cosine", s, budget, lr) for lr in grid_lrs(task, grid))
    start = time.perf_counter()
    bar = Progress(len(first) + 2 * len(tasks) * seeds, desc="replay study",
                   enabled=not args.no_progress)  # fmt: skip
    runs: list[dict[str, Any]] = []
    for r in imap_jobs(_worker, first, n_jobs):
        runs.append(r)
        bar.update(1, task=r["task"], kind=r["kind"])
    os.makedirs(args.out, exist_ok=True)
    second: list[tuple[str, str, int, int, Any]] = []
    for r in runs:
        if r["kind"] == "tune":
            Schedule.from_state_dict(r["schedule"]).save(
                os.path.join(args.out, f"schedule-{r['task']}-s{r['seed']}.json")
            )
            second.append((r["task"], "replay-same", r["seed"], r["budget"], r["schedule"]))
            second.append((r["task"], "replay-fresh", r["seed"] + FRESH_SEED, r["budget"],
                           r["schedule"]))  # fmt: skip
    # A fresh-seed replay's "seed" is the fresh one: it is compared with that seed's grid.
    for r in imap_jobs(_worker, second, n_jobs):
        runs.append(r)
        bar.update(1, task=r["task"], kind=r["kind"])
    bar.close()
    for r in runs:
        r.pop("schedule", None)  # saved beside results.json
    meta = study_meta(start, quick=quick, seeds=seeds, grid=grid, tasks=tasks)
    table = _table(runs, tasks)
    write_json(os.path.join(args.out, "results.json"), {"meta": meta, "table": table, "runs": runs})
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(_markdown(table, meta))
    print(f"replay study: {len(runs)} runs in {meta['elapsed_s']:.0f} s; results in {args.out}/")
    return 0


if __name__ == "__main__":  # python -m autolr.bench.replay [--quick] [--tasks a,b] ...
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tasks", type=lambda v: [t for t in v.split(",") if t], default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--grid", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default="bench-results/replay")
    p.add_argument("--no-progress", action="store_true")
    raise SystemExit(run(p.parse_args()))
