"""Study ``ray``: AutoLRSScheduler against PBT, PB2 and FIFO with random LRs in Ray Tune.

Same task, same population (4 trials) and the same iterations per trial for every method; the
LR is the only hyperparameter. Every method uses the same function trainable (one SGD step and
one report with a checkpoint per iteration, validation loss reported every ``VAL_EVERY``
iterations and at the end). The figures of merit are the best final validation loss in the
population and the wall-clock time of the experiment (the AutoLRS scheduler is run with the
defaults a user gets: the budget variant planned from ``max_t``).

Run: ``autolr bench --study ray [--quick] [--seeds N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

import torch

from autolr._jsonio import write_json

from .report import save_figure
from .tasks import TASKS

__all__ = ["METHODS", "autolrs_plan", "run", "run_method"]

TASK = "mlp"
POPULATION = 4
CPU_PER_TRIAL = 0.5  # 4 trials share 2 cores
FULL_ITERS = 200
QUICK_ITERS = 40
VAL_EVERY = 20
METHODS = ("autolrs", "pbt", "pb2", "fifo")
WALL_TARGET = 1.5  # AutoLRS's median wall-clock at most this many times PBT's


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    from autolr.integrations.ray import TuneCheckpointer

    torch.set_num_threads(1)
    task = TASKS[config["task"]]
    inst = task.make(config["seed"])  # identical initial weights in every trial
    torch.manual_seed(config["seed"])  # identical batch stream (AutoLRS restores it per stage)
    opt = task.make_optimizer(inst.model.parameters(), config["lr"])
    ckpt = TuneCheckpointer(inst.model, opt, config)
    iters = config["iters"]
    del tune  # imported for the session; reporting goes through the checkpointer
    while ckpt.iteration < iters:
        loss = inst.step(opt)
        value = float(loss.detach())
        extra = {}
        if (ckpt.iteration + 1) % VAL_EVERY == 0 or ckpt.iteration + 1 == iters:
            val = inst.val_loss()
            extra["val_loss"] = val if math.isfinite(val) else 1e9
        ckpt.report(value if math.isfinite(value) else float("nan"), **extra)


def autolrs_plan(iters: int) -> dict[str, Any]:
    """The stage plan the AutoLRSScheduler defaults give a run of ``iters`` iterations.

    The study passes no stage settings: ``max_t`` comes from ``RunConfig(stop=...)``, so the
    scheduler runs the budget variant, ``BudgetPolicy.for_budget(iters, parallel=True,
    k=POPULATION, k_later=POPULATION)`` (a population's defaults: uncooled windows, a linear
    final decay).
    """
    from autolr import BudgetPolicy

    pol = BudgetPolicy.for_budget(iters, parallel=True, k=POPULATION, k_later=POPULATION)
    return {"variant": "budget", "policy": asdict(pol)}


def _scheduler(method: str, lo: float, hi: float, iters: int, seed: int) -> Any:
    from ray import tune

    if method == "autolrs":
        from autolr.integrations.ray import AutoLRSScheduler

        return AutoLRSScheduler(lr_bounds=(lo, hi), seed=seed)
    interval = max(4, iters // 10)
    if method == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=interval,
            hyperparam_mutations={"lr": tune.loguniform(lo, hi)},
            quantile_fraction=0.25,
        )
    if method == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        return PB2(
            time_attr="training_iteration",
            perturbation_interval=interval,
            hyperparam_bounds={"lr": [lo, hi]},  # PB2 supports linear bounds only
            quantile_fraction=0.25,
        )
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def run_method(method: str, seed: int, iters: int, storage: str) -> dict[str, Any]:
    """One Tune experiment; returns per-trial curves and the population's best final val."""
    import random

    import numpy as np
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    task = TASKS[TASK]
    lo, hi = task.lr_range
    random.seed(seed)
    np.random.seed(seed)
    sched = _scheduler(method, lo, hi, iters, seed)
    space = {
        "task": TASK,
        "seed": seed,
        "iters": iters,
        "lr": math.sqrt(lo * hi) if method == "autolrs" else tune.loguniform(lo, hi),
    }

    class Starts(tune.Callback):
        """Counts trial (re)starts: every pause and restore of a trial costs one."""

        n = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            self.n += 1

    starts = Starts()
    start = time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": CPU_PER_TRIAL}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            num_samples=POPULATION,
            scheduler=sched,
            search_alg=BasicVariantGenerator(random_state=seed),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{method}-{seed}",
            storage_path=storage,
            verbose=0,
            stop={"training_iteration": iters},
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[starts],
        ),
    ).fit()
    elapsed = time.perf_counter() - start
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        # A trial the scheduler stopped early (it only waited) may never have validated.
        vals = df.dropna(subset=["val_loss"]) if "val_loss" in df else None
        final = r.metrics.get("val_loss") if r.metrics else None
        ok = r.error is None and r.metrics.get("training_iteration") == iters
        trials.append(
            {
                "final_val": float(final) if ok and final is not None else math.inf,
                "val_curve": []
                if vals is None
                else [[int(i), float(v)] for i, v in zip(vals.training_iteration, vals.val_loss)],
                "lr_curve": [[int(i), float(v)] for i, v in zip(df.training_iteration, df.lr)],
                "error": None if r.error is None else str(r.error)[:200],
            }
        )
    best = min(t["final_val"] for t in trials)
    out: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "iters": iters,
        "final_val": best,
        "median_trial_val": statistics.median(t["final_val"] for t in trials),
        "elapsed_s": elapsed,
        "trial_starts": starts.n,
        "trials": trials,
    }
    if method == "autolrs":
        out["schedule"] = sched.schedule
        out["stages"] = [
            {k: v for k, v in r.to_state().items() if k != "candidates"}
            | {"candidates": [[c.lr, c.forecast] for c in r.candidates]}
            | sched.stage_trials[i]
            for i, r in enumerate(sched.stages)
        ]
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for m in METHODS:
        vals = [r["final_val"] for r in runs if r["method"] == m]
        if not vals:
            continue
        mine = [r for r in runs if r["method"] == m]
        per[m] = {
            "median": statistics.median(vals),
            "per_seed": vals,
            "elapsed_s": statistics.median(r["elapsed_s"] for r in mine),
            "elapsed_per_seed": [r["elapsed_s"] for r in mine],
            "trial_starts": statistics.median(r.get("trial_starts", 0) for r in mine),
        }
    seeds = sorted({r["seed"] for r in runs})
    targets = {}
    if "autolrs" in per:
        for other in ("pbt", "pb2"):
            if other in per:
                a = per["autolrs"]["median"]
                wins = sum(
                    x < y for x, y in zip(per["autolrs"]["per_seed"], per[other]["per_seed"])
                )
                targets[f"better_than_{other}"] = {
                    "met": a < per[other]["median"],
                    "autolrs_median": a,
                    f"{other}_median": per[other]["median"],
                    "seeds_won": wins,
                    "seeds": len(seeds),
                }
        if "pbt" in per:
            # Same run, same machine: the ratio of median wall-clock times.
            ratio = per["autolrs"]["elapsed_s"] / max(per["pbt"]["elapsed_s"], 1e-9)
            targets["wall_clock_vs_pbt"] = {
                "met": ratio <= WALL_TARGET,
                "ratio": ratio,
                "target": WALL_TARGET,
                "autolrs_s": per["autolrs"]["elapsed_s"],
                "pbt_s": per["pbt"]["elapsed_s"],
            }
    return {"methods": per, "targets": targets}


def _plan_text(plan: dict[str, Any]) -> str:
    """One sentence on the budget plan the AutoLRS scheduler ran."""
    pol = plan["policy"]
    searches = ", ".join(
        f"iteration {st} ({k} candidates x {tp})"
        for st, k, tp in zip(pol["starts"], pol["ks"], pol["tau_primes"])
    )
    return (
        f"AutoLRS: the scheduler's defaults (`AutoLRSScheduler(lr_bounds=..., seed=...)`, "
        f"`max_t` read from `RunConfig(stop=...)`, so the budget variant): "
        f"{pol['warmup']} warm-up iterations, "
        + (f"searches at {searches}" if searches else "no search (budget too small)")
        + f", final {pol['decay_shape']} decay of the winner's LR over the last "
        f"{pol['decay']} iterations; one candidate per trial; the last search races "
        '(`final="race"`): every trial trains its own candidate to the end, so the population '
        "ends with 4 different trajectories as with PBT/PB2."
    )


def _markdown(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [
        "# Study `ray`: AutoLRSScheduler vs PBT / PB2 / FIFO (Ray Tune)",
        "",
        f"Task `{meta['task']}` ({TASKS[meta['task']].description}); population {POPULATION} "
        f"trials at {CPU_PER_TRIAL} CPU each; {meta['iters']} iterations per trial for every "
        f"method; seeds {meta['seeds']}; LR box {list(TASKS[meta['task']].lr_range)}.",
        "Figures of merit: best final validation loss in the population (lower is better) and "
        "the wall-clock time of the experiment (same machine, methods interleaved per seed).",
        "",
        "| method | median final val | per seed | median wall (s) | wall per seed (s) "
        "| trial starts |",
        "|---|---|---|---|---|---|",
    ]
    for m, s in summary["methods"].items():
        per = ", ".join(f"{v:.4f}" if math.isfinite(v) else "diverged" for v in s["per_seed"])
        walls = ", ".join(f"{v:.0f}" for v in s.get("elapsed_per_seed", []))
        lines.append(
            f"| {m} | {s['median']:.4f} | {per} | {s['elapsed_s']:.0f} | {walls} "
            f"| {s.get('trial_starts', 0):.0f} |"
        )
    lines += ["", "## Targets", ""]
    for name, t in summary["targets"].items():
        verdict = "**met**" if t["met"] else "**not met**"
        if name == "wall_clock_vs_pbt":
            lines.append(
                f"- wall-clock at most {t['target']:g}x PBT's: {verdict} ({t['ratio']:.2f}x: "
                f"median {t['autolrs_s']:.0f} s vs {t['pbt_s']:.0f} s)"
            )
            continue
        other = next(v for k, v in t.items() if k.endswith("_median") and k != "autolrs_median")
        lines.append(
            f"- {name.replace('_', ' ')}: {verdict} (median {t['autolrs_median']:.4f} vs "
            f"{other:.4f}; AutoLRS better on {t['seeds_won']}/{t['seeds']} seeds)"
        )
    lines += [
        "",
        "## Settings",
        "",
        _plan_text(meta["autolrs"]),
        "The first search starts from the seeded initial weights after the warm-up, which "
        "every trial trains identically, so it needs no barrier; the winner's own trial "
        "continues without a restart while the others pause; each later search restarts "
        "every trial once from the winner's checkpoint (one barrier).",
        "PBT/PB2: perturbation interval iters/10, quantile 0.25; PBT resamples/perturbs `lr` "
        "on `loguniform`; PB2 bounds are linear (Ray's PB2 has no log scale). "
        "FIFO: 4 log-uniform random LRs, constant.",
        f"Elapsed: {meta['elapsed_s']:.0f} s on a shared 2-core machine. Trial starts count "
        "every (re)start of a trial; a restart costs an actor start (seconds) whenever Ray "
        "cannot reuse a cached actor.",
        "",
    ]
    return "\n".join(lines)


def _num(v: float | None) -> float:
    return math.inf if v is None else float(v)


def _lineage(curve: list[list[float]]) -> list[tuple[int, float]]:
    """Per iteration, the last reported value: after PBT/PB2 clone a trial, its later rows
    repeat iterations of the lineage it continues, which replace its own earlier ones."""
    last: dict[int, float] = {}
    for i, v in curve:
        last[int(i)] = _num(v)
    return sorted(last.items())


def _plot(runs: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = min(r["seed"] for r in runs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        if r["seed"] != seed:
            continue
        best = min(r["trials"], key=lambda t: _num(t["final_val"]))
        pts = [(i, v) for i, v in _lineage(best["val_curve"]) if math.isfinite(v) and v < 1e8]
        if pts:
            # Markers: Ray keeps only a cloned PBT/PB2 trial's rows after its last clone.
            style = "-" if r["method"] == "autolrs" else "--o"
            ax1.plot(*zip(*pts), style, ms=3, label=r["method"])
        lp = _lineage(best["lr_curve"])
        if r["method"] == "autolrs" and r.get("schedule"):
            sched = list(r["schedule"])
            last = (r.get("stages") or [{}])[-1]
            if last.get("note") == "race" and lp:
                # The last stage raced: the best trial ran its own candidate to the end (its
                # reported LRs include the final decay).
                start = int(last["start"])
                sched = sched[:start] + [v for i, v in lp if i > start]
            lp = list(enumerate(sched, start=1))
        lp = [(i, v) for i, v in lp if v > 0]  # log scale
        if lp:
            ax2.plot(*zip(*lp), "-" if r["method"] == "autolrs" else "--o", ms=2, label=r["method"])
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("validation loss (best trial)")
    ax1.legend()
    ax2.set_yscale("log")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("LR (best trial / AutoLRS lineage)")
    ax2.legend()
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``autolr bench --study ray``; writes results into ``args.out``."""
    from autolr._progress import Progress
    from autolr.integrations import require

    ray = require("ray", "ray")
    require("sklearn", "bench")  # PB2's GP and the task's data
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    torch.set_num_threads(1)
    iters = QUICK_ITERS if args.quick else FULL_ITERS
    seeds = args.seeds or (1 if args.quick else 2)
    jobs = [(m, s) for s in range(seeds) for m in METHODS]
    bar = Progress(len(jobs), desc="bench ray", enabled=not args.no_progress)
    start = time.perf_counter()
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="autolr-ray-") as storage:
            for method, seed in jobs:
                r = run_method(method, seed, iters, storage)
                runs.append(r)
                bar.update(1, method=method, seed=seed, val=f"{r['final_val']:.4g}")
    finally:
        bar.close()
        if started_ray:
            ray.shutdown()
    elapsed = time.perf_counter() - start
    summary = _summary(runs)
    meta = {
        "study": "ray",
        "task": TASK,
        "iters": iters,
        "population": POPULATION,
        "seeds": list(range(seeds)),
        "quick": bool(args.quick),
        "autolrs": autolrs_plan(iters),
        "elapsed_s": elapsed,
        "ray": ray.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    write_json(
        os.path.join(args.out, "results.json"), {"meta": meta, "summary": summary, "runs": runs}
    )
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(_markdown(meta, summary))
    if not args.no_plots:
        _plot(runs, os.path.join(args.out, "ray_population.png"))
    print(f"autolr bench --study ray: {len(runs)} runs in {elapsed:.0f} s; results in {args.out}/")
    return 0
