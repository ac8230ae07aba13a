"""Methods compared by the benchmark, and the loop that runs one of them once.

A *method* is either a single run (AutoLRS, Prodigy, D-Adaptation, the one-run schedules
``cosine-guess`` and ``wsd-rt``) or a grid of runs over the task's LR range (constant, cosine
with warm-up, linear decay, Schedule-Free). Every run trains exactly the task's step budget;
:func:`run_once` returns its validation-loss trace, LR trace and timings as plain values.

The one-run schedules are what a user does instead of tuning:

* ``cosine-guess``: the ``cosine`` schedule once, at the geometric middle of the task's LR
  range, ``sqrt(lo * hi)`` (:func:`guess_lr`).
* ``wsd-rt``: warmup-stable-decay (5 % linear warm-up, constant, linear decay to 0 over the
  last 20 %) at the peak LR suggested by an LR range test (:func:`range_test`, the rule of
  :func:`autolr._range_test.suggest_lr_from_range_test`). The test ramps a fresh model of the
  same seed from ``lo`` to ``10 * hi`` over :func:`range_test_steps` steps (it may go above
  the grid's range: it stops by itself once the loss diverges); those steps count as compute
  (``range_test_steps`` in the run's record) and their time is in ``train_time``. The WSD run
  then starts from the exact seeding of every other run (same initial weights, same batches).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autolr._range_test import RangeTestResult, lr_range_test

from .tasks import Instance, Task

__all__ = [
    "METHODS",
    "Method",
    "grid_lrs",
    "guess_lr",
    "range_test",
    "range_test_steps",
    "run_once",
]


@dataclass(frozen=True)
class Method:
    """A method of the comparison.

    Attributes:
        name: Id used on the command line.
        kind: ``"autolrs"``, ``"schedule"`` (torch optimizer + LR multiplier), ``"schedulefree"``
            or ``"adaptive"`` (Prodigy / D-Adaptation, LR 1.0 with cosine decay).
        grid: Whether the method is run once per LR of the grid.
        description: One line for the report.
        schedule: LR multiplier of a ``"schedule"`` method (``"constant"``, ``"cosine"``,
            ``"linear"``, ``"wsd"``); empty means the method's name.
        lr_rule: How a one-run ``"schedule"`` method picks its LR: ``"guess"`` (geometric
            middle of the LR range) or ``"range_test"``; empty for grids.
    """

    name: str
    kind: str
    grid: bool
    description: str
    schedule: str = ""
    lr_rule: str = ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "autolrs",
            "autolrs",
            False,
            "AutoLRS, budget variant (the default given max_steps), scored on the validation loss",
        ),
        Method("autolrs-paper", "autolrs", False, "AutoLRS, paper variant, tau = budget/10"),
        Method("constant", "schedule", True, "constant LR, grid"),
        Method("cosine", "schedule", True, "cosine decay to 0 with 5% linear warm-up, grid"),
        Method("linear", "schedule", True, "linear decay to 0, grid"),
        Method("schedulefree", "schedulefree", True, "Schedule-Free SGD/AdamW, eval mode, grid"),
        Method("prodigy", "adaptive", False, "Prodigy (lr=1) with cosine decay"),
        Method("dadapt", "adaptive", False, "D-Adaptation SGD/Adam (lr=1) with cosine decay"),
        Method(
            "cosine-guess",
            "schedule",
            False,
            "one cosine run (5% warm-up) at the geometric middle of the LR range",
            schedule="cosine",
            lr_rule="guess",
        ),
        Method(
            "wsd-rt",
            "schedule",
            False,
            "one WSD run (5% warm-up, 20% linear decay) at the LR range test's pick; "
            "compute includes the test",
            schedule="wsd",
            lr_rule="range_test",
        ),
    ]
}


def grid_lrs(task: Task, n: int) -> list[float]:
    """``n`` log-spaced LRs over the task's range (both ends included)."""
    lo, hi = task.lr_range
    return [float(v) for v in np.geomspace(lo, hi, n)]


def guess_lr(task: Task) -> float:
    """The untuned guess of ``cosine-guess``: the geometric middle of the task's LR range."""
    lo, hi = task.lr_range
    return math.sqrt(lo * hi)


def range_test_steps(budget: int) -> int:
    """Length of ``wsd-rt``'s LR range test: 5 % of the budget, at least 50 steps."""
    return max(50, budget // 20)


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
    if name == "wsd":
        return lambda step: _wsd(step, budget)
    raise ValueError(name)


def _wsd(step: int, budget: int) -> float:
    """Warmup-stable-decay: the cosine's 5 % warm-up, constant, linear to 0 over the last 20 %.

    The last step runs at ``1/decay`` of the peak (the LR reaches 0 just after it), as the
    ``linear`` schedule does.
    """
    warm = max(1, budget // 20)
    decay = max(1, budget // 5)
    if step < warm:
        return (step + 1) / warm
    return min(1.0, (budget - step) / decay)


def _autolrs_kwargs(task: Task, budget: int, method: Method) -> dict[str, Any]:
    """AutoLRS settings of ``method``.

    ``autolrs``: what a user writes, the LR box and the budget (the budget variant plans the
    rest) plus the task's validation loss (``val_fn``, evaluated once at the end of each
    candidate window). ``autolrs-paper``: the paper's stage structure with τ scaled to the
    budget. The paper uses τ = 1000, τ' = τ/10, k = 10 and τ_max = 8000 for runs of
    10⁴–10⁵ steps; here τ = budget/10 (τ' = budget/100), τ doubles while τ' < budget/10, and
    ``max_steps`` is the budget so that search steps count against it.
    """
    if method.name == "autolrs-paper":
        tau = max(20, budget // 10)
        return {
            "variant": "paper",
            "lr_bounds": task.lr_range,
            "tau": tau,
            "tau_prime": max(2, tau // 10),
            "k": 10,
            "tau_max": budget,
            "max_steps": budget,
        }
    return {"lr_bounds": task.lr_range, "max_steps": budget}


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


def _seeded_instance(task: Task, seed: int) -> Instance:
    """A fresh instance with the global RNGs seeded: every run of ``seed`` starts here."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    inst = task.make(seed)
    inst.model.train()
    return inst


def range_test(task: Task, seed: int, budget: int) -> tuple[RangeTestResult, float]:
    """``wsd-rt``'s LR range test on a fresh model of ``seed``: ``lo`` → ``10·hi``.

    Returns ``(result, seconds)``; ``result.steps`` training steps were run. The driver puts
    the global RNGs back as it found them, and :func:`run_once` re-seeds before the real run
    anyway, so the run proper sees exactly the batches of every other method's run.
    """
    inst = _seeded_instance(task, seed)
    lo, hi = task.lr_range
    opt = task.make_optimizer(inst.model.parameters(), lo)
    steps = range_test_steps(budget)
    t0 = time.perf_counter()
    # The grid's range is a guess too: ramp up to 10x its top; divergence ends the ramp.
    res = lr_range_test(
        inst.model, opt, lambda: inst.step(opt), lr_min=lo, lr_max=10 * hi, steps=steps
    )
    return res, time.perf_counter() - t0


def run_once(
    task: Task,
    method: Method,
    seed: int,
    budget: int,
    *,
    lr: float | None = None,
    n_evals: int = 20,
    tuner_kwargs: dict[str, Any] | None = None,
    use_val: bool = True,
) -> dict[str, Any]:
    """Train ``budget`` steps of ``task`` with ``method`` (at grid point ``lr``).

    ``tuner_kwargs`` override the AutoLRS arguments (the ``autolrs`` study's ablations);
    ``use_val=False`` withholds the validation loss from the budget-variant tuner.

    Returns a dict with ``evals`` ([step, val_loss, on_trajectory]), ``lrs`` ([step, lr],
    sub-sampled), ``final_val`` (inf if training diverged), ``train_time`` (seconds in training
    steps, tuner included, evaluation excluded), ``tuner_time`` (seconds inside
    ``AutoLRS.step``) and, for AutoLRS, the stage summaries. One-run schedules (``lr`` None)
    pick their LR by ``method.lr_rule`` and record it as ``lr``; ``wsd-rt`` adds
    ``range_test_steps`` and a ``range_test`` summary, and its ``train_time`` includes the test.
    """
    rt = None
    rt_time = 0.0
    if method.kind == "schedule" and lr is None:
        if method.lr_rule == "guess":
            lr = guess_lr(task)
        elif method.lr_rule == "range_test":
            rt, rt_time = range_test(task, seed, budget)
            lr = rt.lr
        else:
            raise ValueError(f"method {method.name!r} needs a grid LR")
    # Seeded exactly like every other run, whether or not a range test ran before.
    inst = _seeded_instance(task, seed)
    model = inst.model
    if method.kind == "autolrs":
        kw = {**_autolrs_kwargs(task, budget, method), **(tuner_kwargs or {})}
        if use_val and kw.get("variant", "budget") == "budget":
            kw["val_fn"] = inst.val_loss
        lr0 = math.sqrt(kw["lr_bounds"][0] * kw["lr_bounds"][1])
        opt = _make_optimizer(task, method, model.parameters(), lr0)
    else:
        opt = _make_optimizer(task, method, model.parameters(), lr)
    base_lrs = [g["lr"] for g in opt.param_groups]
    mult = None
    if method.kind == "schedule":
        mult = _multiplier(method.schedule or method.name, budget)
    elif method.kind == "adaptive":
        mult = _multiplier("cosine", budget)
    tuner = None
    if method.kind == "autolrs":
        from autolr import AutoLRS
        from autolr.searchers._gp import _load_gp_libs

        # botorch/gpytorch/scipy load on the first GP fit (`import autolr` stays light); that
        # one-time import (~1 s) would land in the first run's tuner time in each process.
        _load_gp_libs()
        tuner = AutoLRS(model, opt, seed=seed, **kw)
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
    train_time = rt_time
    tuner_time = 0.0
    diverged = False
    # The tuner's warnings (budget notes, LR drift...) are silenced for the whole loop: entering
    # catch_warnings around each tuner.step() cost a few µs per step, billed to the tuner.
    quiet = warnings.catch_warnings() if tuner is not None else contextlib.nullcontext()
    with quiet:
        if tuner is not None:
            warnings.simplefilter("ignore")
        for step in range(budget):
            t0 = time.perf_counter()
            if mult is not None:
                m = mult(step)
                for g, b in zip(opt.param_groups, base_lrs):
                    g["lr"] = b * m
            if step % lr_every == 0:
                lrs.append([step, _effective_lr(opt)])
            loss = inst.step(opt)
            value = loss.item()
            if tuner is not None:
                t1 = time.perf_counter()
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
        "kind": method.kind,
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
    if rt is not None:
        out["range_test_steps"] = rt.steps
        out["range_test"] = {
            "steps": rt.steps,
            "suggested_lr": rt.lr,
            "min_loss_lr": rt.min_loss_lr,
            "diverged_lr": rt.diverged_lr,
            "reason": rt.reason,
            "time_s": rt_time,
        }
    if tuner is not None:
        out["stages"] = [
            {"lr": s.winner_lr, "start_step": s.start, "end_step": s.end} for s in tuner.stages
        ]
        out["recoveries"] = tuner.recoveries
    return out
