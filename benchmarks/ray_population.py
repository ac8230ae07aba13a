"""Study ``ray``: AutoLRSScheduler against PBT, PB2 and FIFO with random LRs in Ray Tune.

Same task, same population (4 trials) and the same iterations per trial for every method; the
LR is the only hyperparameter. Every method uses the same function trainable (one SGD step and
one report with a checkpoint per iteration, validation loss reported every ``VAL_EVERY``
iterations and at the end). The figure of merit is the best final validation loss in the
population (for AutoLRS every trial ends on the winner's lineage, so all are equal).

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
from typing import Any

import torch

from autolr._jsonio import write_json

from .tasks import TASKS

__all__ = ["METHODS", "autolrs_settings", "run", "run_method"]

TASK = "mlp"
POPULATION = 4
CPU_PER_TRIAL = 0.5  # 4 trials share 2 cores
FULL_ITERS = 200
QUICK_ITERS = 40
VAL_EVERY = 20
METHODS = ("autolrs", "pbt", "pb2", "fifo")


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
        loss = inst.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = float(loss.detach())
        extra = {}
        if (ckpt.iteration + 1) % VAL_EVERY == 0 or ckpt.iteration + 1 == iters:
            val = inst.val_loss()
            extra["val_loss"] = val if math.isfinite(val) else 1e9
        ckpt.report(value if math.isfinite(value) else float("nan"), **extra)


def autolrs_settings(iters: int) -> dict[str, int]:
    """AutoLRSScheduler stage lengths for a run of ``iters`` iterations per trial.

    Two stages of τ = iters/2 with τ' = τ/5 (20 points per candidate at 200 iterations).
    Screening over 16 seeds found τ = iters/5 with τ' = τ/5 (8 points) drifting to small LRs:
    forecasts from a few noisy training losses favour them (short-horizon bias).
    """
    tau = max(8, iters // 2)
    return {"tau": tau, "tau_prime": max(2, tau // 5), "tau_max": iters, "max_t": iters}


def _scheduler(method: str, lo: float, hi: float, iters: int, seed: int) -> Any:
    from ray import tune

    if method == "autolrs":
        from autolr.integrations.ray import AutoLRSScheduler

        return AutoLRSScheduler(lr_bounds=(lo, hi), seed=seed, **autolrs_settings(iters))
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
        ),
    ).fit()
    elapsed = time.perf_counter() - start
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        vals = df.dropna(subset=["val_loss"]) if "val_loss" in df else df.iloc[0:0]
        final = r.metrics.get("val_loss") if r.metrics else None
        ok = r.error is None and r.metrics.get("training_iteration") == iters
        trials.append(
            {
                "final_val": float(final) if ok and final is not None else math.inf,
                "val_curve": [
                    [int(i), float(v)] for i, v in zip(vals.training_iteration, vals.val_loss)
                ],
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
        "trials": trials,
    }
    if method == "autolrs":
        out["schedule"] = sched.schedule
        out["stages"] = [
            {k: v for k, v in s.items() if k != "candidates"}
            | {"candidates": [[c["lr"], c["forecast"]] for c in s.get("candidates", [])]}
            for s in sched.stages
        ]
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for m in METHODS:
        vals = [r["final_val"] for r in runs if r["method"] == m]
        if not vals:
            continue
        per[m] = {
            "median": statistics.median(vals),
            "per_seed": vals,
            "elapsed_s": statistics.median(r["elapsed_s"] for r in runs if r["method"] == m),
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
    return {"methods": per, "targets": targets}


def _markdown(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [
        "# Study `ray`: AutoLRSScheduler vs PBT / PB2 / FIFO (Ray Tune)",
        "",
        f"Task `{meta['task']}` ({TASKS[meta['task']].description}); population {POPULATION} "
        f"trials at {CPU_PER_TRIAL} CPU each; {meta['iters']} iterations per trial for every "
        f"method; seeds {meta['seeds']}; LR box {list(TASKS[meta['task']].lr_range)}.",
        "Figure of merit: best final validation loss in the population (lower is better).",
        "",
        "| method | median final val | per seed | median wall (s) |",
        "|---|---|---|---|",
    ]
    for m, s in summary["methods"].items():
        per = ", ".join(f"{v:.4f}" if math.isfinite(v) else "diverged" for v in s["per_seed"])
        lines.append(f"| {m} | {s['median']:.4f} | {per} | {s['elapsed_s']:.0f} |")
    lines += ["", "## Targets", ""]
    for name, t in summary["targets"].items():
        verdict = "**met**" if t["met"] else "**not met**"
        other = next(v for k, v in t.items() if k.endswith("_median") and k != "autolrs_median")
        lines.append(
            f"- {name.replace('_', ' ')}: {verdict} (median {t['autolrs_median']:.4f} vs "
            f"{other:.4f}; AutoLRS better on {t['seeds_won']}/{t['seeds']} seeds)"
        )
    lines += [
        "",
        f"Settings: AutoLRS τ = iters/2 = {meta['autolrs']['tau']}, τ' = τ/5 = "
        f"{meta['autolrs']['tau_prime']} (two stages of 20 % search + 80 % exploitation; "
        "shorter stages, e.g. τ = iters/5 with τ' = 8, forecast from too few noisy points and "
        "drift to small LRs), one candidate per trial, exploitation by every trial after "
        'the first search; the last stage races (`final="race"`, the default): every trial '
        "trains its own candidate to the end, no clone, so the population ends with 4 "
        "different trajectories as with PBT/PB2. "
        "PBT/PB2: perturbation interval iters/10, "
        "quantile 0.25; PBT resamples/perturbs `lr` on `loguniform`; PB2 bounds are linear "
        "(Ray's PB2 has no log scale). FIFO: 4 log-uniform random LRs, constant.",
        f"Elapsed: {meta['elapsed_s']:.0f} s. Wall times include Ray's pause/restore overhead "
        "on a shared 2-core machine and are not a speed comparison.",
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
            if last.get("final") == "race" and lp:
                # The last stage raced: the best trial ran its own candidate LR to the end.
                start = int(last["start"])
                sched = sched[:start] + [lp[-1][1]] * (r["iters"] - start)
            lp = list(enumerate(sched, start=1))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        "autolrs": autolrs_settings(iters),
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
