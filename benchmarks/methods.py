"""Methods compared by the benchmark, and the loop that runs one of them once.

A *method* is either a single run (AutoLRS, Prodigy, D-Adaptation) or a grid of runs over the
task's LR range (constant, cosine with warm-up, linear decay, Schedule-Free). Every run trains
exactly the task's step budget; :func:`run_once` returns its validation-loss trace, LR trace and
timings as plain values.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .tasks import Task

__all__ = ["METHODS", "Method", "grid_lrs", "run_once"]


@dataclass(frozen=True)
class Method:
    """A method of the comparison.

    Attributes:
        name: Id used on the command line.
        kind: ``"autolrs"``, ``"schedule"`` (torch optimizer + LR multiplier), ``"schedulefree"``
            or ``"adaptive"`` (Prodigy / D-Adaptation, LR 1.0 with cosine decay).
        grid: Whether the method is run once per LR of the grid.
        description: One line for the report.
    """

    name: str
    kind: str
    grid: bool
    description: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("autolrs", "autolrs", False, "AutoLRS, paper variant (continue_from='start')"),
        Method("autolrs-best", "autolrs", False, "AutoLRS, continue_from='best'"),
        Method("constant", "schedule", True, "constant LR, grid"),
        Method("cosine", "schedule", True, "cosine decay to 0 with 5% linear warm-up, grid"),
        Method("linear", "schedule", True, "linear decay to 0, grid"),
        Method("schedulefree", "schedulefree", True, "Schedule-Free SGD/AdamW, eval mode, grid"),
        Method("prodigy", "adaptive", False, "Prodigy (lr=1) with cosine decay"),
        Method("dadapt", "adaptive", False, "D-Adaptation SGD/Adam (lr=1) with cosine decay"),
    ]
}


def grid_lrs(task: Task, n: int) -> list[float]:
    """``n`` log-spaced LRs over the task's range (both ends included)."""
    lo, hi = task.lr_range
    return [float(v) for v in np.geomspace(lo, hi, n)]


def _cosine(step: int, budget: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, budget - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _multiplier(name: str, budget: int) -> Callable[[int], float]:
    """LR multiplier for step ``step`` (0-based) of a schedule."""
    if name == "constant":
        return lambda step: 1.0
    if name == "cosine":
        warm = max(1, budget // 20)
        return lambda step: _cosine(step, budget, warm)
    if name == "linear":
        return lambda step: 1.0 - step / budget
    raise ValueError(name)


def _autolrs_kwargs(task: Task, budget: int) -> dict[str, Any]:
    """AutoLRS paper settings with τ scaled to the budget.

    The paper uses τ = 1000, τ' = τ/10, k = 10 and τ_max = 8000 for runs of 10⁴–10⁵ steps;
    here τ = budget/10 (τ' = budget/100), τ doubles while τ' < budget/10, and ``max_steps`` is
    the budget so that search steps count against it.
    """
    tau = max(20, budget // 10)
    return {
        "lr_bounds": task.lr_range,
        "tau": tau,
        "tau_prime": max(2, tau // 10),
        "k": 10,
        "tau_max": budget,
        "max_steps": budget,
    }


def _make_optimizer(task: Task, method: Method, params, lr: float | None):
    if method.kind in ("autolrs", "schedule"):
        assert lr is not None
        return task.make_optimizer(params, lr)
    if method.kind == "schedulefree":
        import schedulefree

        assert lr is not None
        if task.family == "sgd":
            return schedulefree.SGDScheduleFree(
                params, lr=lr, momentum=task.momentum or 0.9, weight_decay=task.weight_decay
            )
        return schedulefree.AdamWScheduleFree(params, lr=lr, weight_decay=task.weight_decay)
    if method.name == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=1.0, weight_decay=task.weight_decay)
    if method.name == "dadapt":
        import dadaptation

        if task.family == "sgd":
            return dadaptation.DAdaptSGD(
                params, lr=1.0, momentum=task.momentum, weight_decay=task.weight_decay
            )
        return dadaptation.DAdaptAdam(params, lr=1.0, weight_decay=task.weight_decay, decouple=True)
    raise ValueError(method.name)


def _effective_lr(opt: torch.optim.Optimizer) -> float:
    g = opt.param_groups[0]
    lr = float(g["lr"])
    if "d" in g:  # Prodigy / D-Adaptation: step size is d * lr
        lr *= float(g["d"])
    return lr


def run_once(
    task: Task,
    method: Method,
    seed: int,
    budget: int,
    *,
    lr: float | None = None,
    n_evals: int = 20,
) -> dict[str, Any]:
    """Train ``budget`` steps of ``task`` with ``method`` (at grid point ``lr``).

    Returns a dict with ``evals`` ([step, val_loss, on_trajectory]), ``lrs`` ([step, lr],
    sub-sampled), ``final_val`` (inf if training diverged), ``train_time`` (seconds in training
    steps, tuner included, evaluation excluded), ``tuner_time`` (seconds inside
    ``AutoLRS.step``) and, for AutoLRS, the stage summaries.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    inst = task.make(seed)
    model = inst.model
    model.train()
    if method.kind == "autolrs":
        kw = _autolrs_kwargs(task, budget)
        lr0 = math.sqrt(kw["lr_bounds"][0] * kw["lr_bounds"][1])
        opt = _make_optimizer(task, method, model.parameters(), lr0)
    else:
        opt = _make_optimizer(task, method, model.parameters(), lr)
    base_lrs = [g["lr"] for g in opt.param_groups]
    mult = None
    if method.kind == "schedule":
        mult = _multiplier(method.name, budget)
    elif method.kind == "adaptive":
        mult = _multiplier("cosine", budget)
    tuner = None
    if method.kind == "autolrs":
        from autolr import AutoLRS

        cont = "best" if method.name == "autolrs-best" else "start"
        tuner = AutoLRS(model, opt, seed=seed, continue_from=cont, **kw)
    sf = method.kind == "schedulefree"
    if sf:
        opt.train()

    eval_every = max(1, budget // n_evals)
    lr_every = max(1, budget // 200)
    evals: list[list[float]] = []
    lrs: list[list[float]] = []

    def evaluate(step: int, on_traj: bool) -> float:
        if sf:
            opt.eval()
        v = inst.val_loss()
        if sf:
            opt.train()
        if not math.isfinite(v):
            v = math.inf
        evals.append([step, v, bool(on_traj)])
        return v

    evaluate(0, True)
    train_time = 0.0
    tuner_time = 0.0
    diverged = False
    for step in range(budget):
        t0 = time.perf_counter()
        if mult is not None:
            m = mult(step)
            for g, b in zip(opt.param_groups, base_lrs):
                g["lr"] = b * m
        if step % lr_every == 0:
            lrs.append([step, _effective_lr(opt)])
        loss = inst.train_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if tuner is not None:
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tuner.step(value)
            tuner_time += time.perf_counter() - t1
        elif not math.isfinite(value):
            diverged = True
        train_time += time.perf_counter() - t0
        if diverged:
            break
        done = step + 1
        if done % eval_every == 0 or done == budget:
            on_traj = tuner is None or tuner.phase != "search"
            evaluate(done, on_traj)
    final = math.inf if diverged else evals[-1][1]
    out: dict[str, Any] = {
        "task": task.name,
        "method": method.name,
        "seed": seed,
        "lr": lr,
        "budget": budget,
        "evals": evals,
        "lrs": lrs,
        "final_val": final,
        "diverged": diverged,
        "train_time": train_time,
        "tuner_time": tuner_time,
    }
    if tuner is not None:
        out["stages"] = [
            {
                "lr": s.get("winner_lr"),
                "start_step": s.get("start_step"),
                "end_step": s.get("end_step"),
            }
            for s in tuner.stages
        ]
        out["recoveries"] = tuner.recoveries
    return out
