"""The short-horizon bias of the budget variant's LR pick, computed exactly on the noisy quadratics.

On a noisy quadratic (``tasks.NQM``: L = ½ Σ h_i θ_i², gradient noise with covariance H/B) the
expected loss of any LR schedule follows a closed recursion of the per-direction second
moments, ``m ← (1 − η h)² m + η² h / B`` (plain SGD), so the questions behind the tuner's
misses can be answered without sampling noise:

* which constant LR a candidate window of τ' steps prefers (from the state after the tuner's
  warm-up, as the budget variant's search starts), with and without a 30 % cooldown, and at
  windows of 2τ' and 4τ';
* which peak LR is best for a whole run of the budget variant's own schedule (warm-up, the
  winner's window, hold, linear decay over the last half; the discarded windows' steps count
  against the budget) and for the bench's cosine;
* what the schedule loses at the window's pick, and at its own best LR, against the best
  cosine.

``python benchmarks/nqm_horizon.py [--points N]`` prints one Markdown table (a few seconds).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from autolr import BudgetPolicy
from autolr._autolrs._policy import cooled_lr, decayed_lrs, warmup_lr

from .methods import _multiplier
from .tasks import NQM, TASKS, get_task, nqm_curvatures

__all__ = ["horizon_table", "main"]

COOLDOWN = 0.3  # the `cooled` variant's cooldown fraction


def _moments(lrs: np.ndarray, h: np.ndarray, batch: int, m: np.ndarray) -> np.ndarray:
    """Second moments after training with ``lrs`` (steps x etas) from ``m`` (etas x dims)."""
    with np.errstate(invalid="ignore", over="ignore"):  # LRs past 2/h diverge: loss inf
        for eta in lrs:
            e = eta[:, None]
            m = (1.0 - e * h) ** 2 * m + e * e * h / batch
    return m


def _loss(m: np.ndarray, h: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        out = 0.5 * (h * m).sum(axis=1)
    return np.where(np.isfinite(out), out, np.inf)


def _schedule(etas: np.ndarray, steps: int, lr_at: Callable[[float, int], float]) -> np.ndarray:
    return np.array([[lr_at(float(e), s) for e in etas] for s in range(steps)])


def horizon_table(points: int = 80, **policy: Any) -> list[dict[str, float | str]]:
    """One row per noisy quadratic: the window picks, the full-run optima and their losses.

    ``policy`` overrides :meth:`BudgetPolicy.for_budget`'s defaults (e.g. ``decay_shape``,
    ``search_frac``) for the tuner's schedule.
    """
    return [_row(name, power, batch, points, policy) for name, (power, batch) in NQM.items()]


def _row(
    name: str, power: float, batch: int, points: int, policy: dict[str, Any]
) -> dict[str, float | str]:
    task = get_task(name)
    budget = task.budget
    lo, hi = task.lr_range
    h = nqm_curvatures(power).double().numpy()
    pol = BudgetPolicy.for_budget(budget, **policy)
    w, k, tp, decay = pol.warmup, pol.ks[0], pol.tau_primes[0], pol.decay
    etas = np.geomspace(lo, hi, points)
    ones = np.ones((points, len(h)))
    # The search starts from the warm-up's end (a ramp to the box's geometric middle).
    lr0 = math.sqrt(lo * hi)
    warm = np.array([[warmup_lr(lr0, s, w)] * points for s in range(w)])
    start = _moments(warm, h, batch, ones)

    def window_pick(length: int, cooled: bool) -> float:
        c = round(COOLDOWN * length) if cooled else 0
        lrs = _schedule(etas, length, lambda e, t: cooled_lr(e, t, length, c))
        return float(etas[np.argmin(_loss(_moments(lrs, h, batch, start), h))])

    # The winner's lineage: warm-up, its window, then the rest of the budget after the k - 1
    # discarded windows, decaying by global step.
    first = w + k * tp
    held = [
        decayed_lrs(
            float(e), first, budget - first, max_steps=budget, decay=decay, shape=pol.decay_shape
        )
        or [float(e)] * (budget - first)
        for e in etas
    ]
    lineage = np.concatenate([warm, np.tile(etas, (tp, 1)), np.array(held).T])
    own = _loss(_moments(lineage, h, batch, ones), h)
    mult = _multiplier("cosine", budget)
    cos = _loss(_moments(_schedule(etas, budget, lambda e, s: e * mult(s)), h, batch, ones), h)
    best_cos = float(cos.min())
    pick = window_pick(tp, cooled=False)
    j = int(np.argmin(np.abs(np.log(etas / pick))))
    return {
        "task": name + ("" if name in TASKS else " (held out)"),
        "cosine_best_lr": float(etas[np.argmin(cos)]),
        "schedule_best_lr": float(etas[np.argmin(own)]),
        "schedule_best_vs_cosine": float(own.min()) / best_cos,
        "pick": pick,
        "pick_cooled": window_pick(tp, cooled=True),
        "pick_2": window_pick(2 * tp, cooled=False),
        "pick_4": window_pick(4 * tp, cooled=False),
        "schedule_at_pick_vs_cosine": float(own[j]) / best_cos,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=80, help="LRs per log-spaced grid")
    args = ap.parse_args(argv)
    head = (
        "| task | best cosine LR | best LR, tuner's schedule (loss ÷ best cosine) | "
        "window pick τ' (cooled) | pick at 2τ' / 4τ' | tuner's schedule at the τ' pick ÷ "
        "best cosine |"
    )
    print(head)
    print("|---|---|---|---|---|---|")
    for r in horizon_table(args.points):
        print(
            f"| {r['task']} | {r['cosine_best_lr']:.3g} | {r['schedule_best_lr']:.3g} "
            f"({r['schedule_best_vs_cosine']:.2f}) | {r['pick']:.3g} ({r['pick_cooled']:.3g}) | "
            f"{r['pick_2']:.3g} / {r['pick_4']:.3g} | {r['schedule_at_pick_vs_cosine']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
