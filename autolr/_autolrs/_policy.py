"""Stage policies: when a search happens, how many candidates for how long, and the LR between.

Two variants share one interface, so every executor (the in-loop tuner, the Ray scheduler)
asks the same questions and gets the same answers:

* :class:`PaperPolicy` -- AutoLRS as published: τ and τ' double after each stage, ``k``
  candidates per stage, the winner trains τ steps at a constant LR. With a step budget, a
  stage whose full search does not fit searches as many candidates as fit in half of what is
  left, and with fewer than two the rest trains at the last winner's LR.
* :class:`BudgetPolicy` -- plans the whole run from the budget alone: a warm-up, a few
  searches spaced over the run whose candidate steps cost at most ``search_frac`` of the
  budget (front-loaded), a trust region around the last winner for later searches, and a
  final decay of the winner's LR to zero over the last ``decay_frac`` of the budget.

Both are frozen descriptions plus pure functions of (step, stage, winner); all run-time state
lives in :class:`~autolr.StageSearch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .._validate import check_bounds, check_choice, check_float, check_int

__all__ = [
    "BudgetPolicy",
    "DivergenceRule",
    "PaperPolicy",
    "StagePlan",
    "cooled_lr",
    "decayed_lr",
    "warmup_lr",
]

# How a plan that no budget can hold says so (the tuner's warning then names the fractions).
NO_ROOM = "the plan leaves no room for a search"

# The smallest candidate window worth forecasting: below this a handful of noisy losses
# ranks candidates no better than chance (measured in the ``autolrs`` study).
MIN_TAU_PRIME = 5

# The first search's candidates for a box of known width: one per 0.75 decades, at least 4
# (every box of up to ~3.4 decades keeps 4). A pre-registered test on 14 tasks (seeds 3-8)
# with boxes 100x wider than the tasks' own: 0.952x the final loss of 4 candidates.
DECADES_PER_CANDIDATE = 0.75
MIN_FIRST_K = 4
# Extra candidates only while each window keeps this many steps (the shortest tested: 26).
BOX_K_MIN_WINDOW = 25


def candidates_for_box(lr_bounds: tuple[float, float] | None) -> int:
    """Candidates of the first search for an LR box: ``max(4, round(decades / 0.75))``.

    Example:
        >>> candidates_for_box((1e-4, 1e-1)), candidates_for_box((1e-6, 1.0))
        (4, 8)
    """
    if lr_bounds is None:
        return MIN_FIRST_K
    lo, hi = check_bounds("lr_bounds", lr_bounds, positive=True)
    return max(MIN_FIRST_K, round(math.log10(hi / lo) / DECADES_PER_CANDIDATE))


def warmup_lr(peak: float, step: int, steps: int) -> float:
    """LR of warm-up step ``step`` (0-based) of a linear ramp to ``peak`` over ``steps``."""
    return peak * (step + 1) / steps


def decayed_lr(lr: float, step: int, *, max_steps: int, decay: int, shape: str) -> float:
    """``lr`` at global ``step`` under a final decay over the last ``decay`` of ``max_steps``.

    Step ``max_steps - decay`` still trains at ``lr`` and the last step at ``lr / decay``
    (``shape="linear"``), as the benchmark's linear and WSD schedules do; ``"sqrt"`` is
    ``1 - sqrt(x)``.
    """
    lrs = decayed_lrs(lr, step, 1, max_steps=max_steps, decay=decay, shape=shape)
    return lr if lrs is None else lrs[0]


def decayed_lrs(
    lr: float, first: int, n: int, *, max_steps: int, decay: int, shape: str
) -> list[float] | None:
    """:func:`decayed_lr` at steps ``first … first + n - 1`` (``None``: all of them ``lr``).

    The tuner plans up to 1024 steps at once; :func:`decayed_lr` is this at one step.
    """
    start = max_steps - decay
    if decay <= 0 or first + n - 1 <= start:
        return None  # at `start` itself the factor is exactly 1.0
    linear = shape == "linear"
    out = []
    for step in range(first, first + n):
        if step < start:
            out.append(lr)
            continue
        x = min(1.0, (step - start) / decay)
        frac = 1.0 - x if linear else 1.0 - math.sqrt(x)
        out.append(lr * max(frac, 0.0))
    return out


def cooled_lr(lr: float, t: int, tau_prime: int, cooldown: int) -> float:
    """LR of a candidate at step ``t`` of its window (linear cooldown over its last steps)."""
    if cooldown <= 0 or t < tau_prime - cooldown:
        return lr
    j = t - (tau_prime - cooldown) + 1
    return lr * max(0.0, 1.0 - j / (cooldown + 1))


@dataclass(frozen=True)
class StagePlan:
    """What an executor does at a stage boundary.

    Attributes:
        kind: ``"search"`` (try ``k`` candidates) or ``"final"`` (no search fits: train the
            rest of the budget at ``lr``, following :meth:`StageSearch.exploit_lr`).
        k: Candidates to try.
        tau: Horizon the candidates are compared at (steps from the stage start).
        tau_prime: Steps each candidate trains.
        cooldown: Last steps of each candidate window in which its LR decays linearly
            towards zero before it is scored (0: constant LR). The winner continues from
            its state before the cooldown.
        exploit: Steps the winner trains after the search before the next stage begins
            (``None``: until the budget ends).
        lr: For ``"final"``: the LR to train at.
    """

    kind: str
    k: int = 0
    tau: int = 0
    tau_prime: int = 0
    cooldown: int = 0
    exploit: int | None = None
    lr: float | None = None


@dataclass(frozen=True)
class DivergenceRule:
    """The one definition of a diverged candidate, shared by every executor.

    A loss is *over* when it is non-finite or exceeds ``factor`` times the reference loss
    (the loss level at the stage start, in absolute terms); a candidate has diverged after
    ``patience`` consecutive over losses, or at once on a non-finite loss.

    Example:
        >>> rule = DivergenceRule(factor=3.0, patience=2)
        >>> rule.update(0, 10.0, ref=1.0), rule.update(1, 10.0, ref=1.0)
        ((1, False), (2, True))
    """

    factor: float = 3.0
    patience: int = 3

    def __post_init__(self) -> None:
        # One check for every executor that builds a rule from its arguments.
        # inf is allowed: no ratio test, only non-finite losses count as over
        check_float("divergence_factor", self.factor, minimum=1, min_inclusive=False, finite=False)
        check_int("divergence_patience", self.patience, minimum=1)

    def threshold(self, ref: float | None) -> float:
        """The finite loss above which a loss is over (``inf`` without a finite ``ref``)."""
        if ref is None or not math.isfinite(ref):
            return math.inf
        return ref + (self.factor - 1.0) * max(abs(ref), 1e-12)

    def over(self, value: float, ref: float | None) -> bool:
        """Whether one loss is over the divergence threshold."""
        return not math.isfinite(value) or value > self.threshold(ref)

    def update(self, over_count: int, value: float, ref: float | None) -> tuple[int, bool]:
        """Count consecutive over losses; returns ``(new count, diverged)``."""
        if not math.isfinite(value):
            return over_count + 1, True
        count = over_count + 1 if self.over(value, ref) else 0
        return count, count >= self.patience

    def reason(self, value: float, ref: float | None) -> str:
        """Human-readable reason for a divergence verdict on ``value``."""
        if not math.isfinite(value):
            return "non-finite training loss"
        return f"diverged: loss {value:.4g} > {self.factor:g}x stage-start loss {ref:.4g}"


@dataclass(frozen=True)
class PaperPolicy:
    """AutoLRS as published (Jin et al., ICLR 2021), with the in-loop tuner's budget rule."""

    def plan(
        self,
        step: int,
        *,
        tau: int,
        tau_prime: int,
        k: int,
        max_steps: int | None,
        has_winner: bool,
        winner_lr: float | None,
        continue_best: bool,
        parallel: bool = False,
    ) -> StagePlan:
        """Plan the stage that starts at global step ``step``.

        ``parallel``: candidates run side by side (a Ray population), so a search costs
        τ' steps of the run instead of ``k·τ'``.
        """
        if max_steps is not None and parallel:
            if max_steps - step < 2 * tau_prime and has_winner:
                return StagePlan("final", exploit=None, lr=winner_lr)
        elif max_steps is not None:
            remaining = max_steps - step
            if remaining < k * tau_prime + tau_prime:
                # The full search does not fit: as many candidates as fit in half of the
                # remaining steps; with fewer than 2 (1 before any winner) train to the end.
                k = min(k, remaining // (2 * tau_prime))
                if k < (2 if has_winner else 1):
                    return StagePlan("final", exploit=None, lr=winner_lr)
        exploit = tau - tau_prime if continue_best else tau
        return StagePlan("search", k=k, tau=tau, tau_prime=tau_prime, exploit=exploit)

    def exploit_lr(self, winner_lr: float, step: int) -> float:
        """The paper trains every stage at a constant LR."""
        return winner_lr

    def exploit_lrs(self, winner_lr: float, first: int, n: int) -> list[float] | None:
        """:meth:`exploit_lr` at ``n`` steps from ``first`` (``None``: all ``winner_lr``)."""
        return None


@dataclass(frozen=True)
class BudgetPolicy:
    """A whole run planned from its budget (the default whenever ``max_steps`` is given).

    Attributes:
        max_steps: The budget in optimizer steps, search steps included.
        warmup: Steps of linear warm-up before the first search.
        decay: Steps of the final decay (the last ``decay`` steps of the budget).
        starts: Global step at which each search begins.
        ks: Candidates of each search (:meth:`for_budget` sizes the first from the LR box).
        tau_primes: Steps per candidate of each search.
        cooldown_frac: Fraction of each candidate window that decays before scoring
            (candidates are then compared on cooled losses, see ``compare``).
            :meth:`for_budget`'s default: 0.3 for one run, 0.0 for a population.
        decay_shape: ``"sqrt"`` (``1 - sqrt(x)``) or ``"linear"`` (to zero).
            :meth:`for_budget`'s default: ``"sqrt"`` for one run, ``"linear"`` for a
            population.
        trust: Later searches look in ``[winner / trust, winner * trust]`` (within the box).
        note: Why the plan has fewer searches than asked (empty when it has them all).
        parallel: Candidates run side by side (a search costs τ' steps of the run).
    """

    max_steps: int
    warmup: int
    decay: int
    starts: tuple[int, ...]
    ks: tuple[int, ...]
    tau_primes: tuple[int, ...]
    cooldown_frac: float = 0.3
    decay_shape: str = "sqrt"
    trust: float = 4.0
    note: str = ""
    parallel: bool = False

    @classmethod
    def for_budget(
        cls,
        max_steps: int,
        *,
        warmup: int | None = None,
        searches: int = 1,
        k: int | None = None,
        k_later: int = 3,
        search_frac: float = 0.2,
        first_share: float = 0.4,
        decay_frac: float = 0.5,
        decay_shape: str | None = None,
        cooldown_frac: float | None = None,
        trust: float = 4.0,
        parallel: bool = False,
        lr_bounds: tuple[float, float] | None = None,
    ) -> BudgetPolicy:
        """Plan a run of ``max_steps`` steps.

        ``k`` (the first search's candidates) defaults to :func:`candidates_for_box` of
        ``lr_bounds``: 4 for a box of up to ~3.4 decades (and without a box), one more per
        0.75 decades beyond, so a wide box is not covered by 4 points far apart. A budget
        that cannot give that many windows of 25 steps takes fewer, down to 4. A given
        ``k`` is used as is.

        With ``parallel=True`` (candidates run side by side, as Ray trials) a search costs
        τ' steps of the run, not ``k·τ'``; ``search_frac`` then bounds each window's share
        of the run (``search_frac / searches`` per search) rather than discarded steps.

        The candidate steps that do not continue into the run (``k - 1`` windows per
        search, the winner's window is kept) cost at most ``search_frac`` of the budget;
        the first search gets ``first_share`` of that, the others share the rest. Searches
        are spaced evenly between the warm-up and the final decay. When the budget cannot
        hold a window of at least 5 steps, later searches are dropped first, then
        candidates; ``note`` says what was dropped.

        ``decay_shape`` and ``cooldown_frac`` default to what was measured for each mode.
        One run (``parallel=False``): ``"sqrt"`` and 0.3, adopted by a pre-registered test
        over 14 tasks. A population (``parallel=True``): ``"linear"`` and 0.0. In the Ray
        study the √ decay ended worse on 4 of 4 seeds (median 0.1064 against 0.0991).
        Cooled windows were not measured there, and a cooled winner costs a population one
        more trial restart per search.

        Raises:
            ConfigError: On invalid fractions, counts or shapes.
        """
        if decay_shape is None:
            decay_shape = "linear" if parallel else "sqrt"
        if cooldown_frac is None:
            cooldown_frac = 0.0 if parallel else 0.3
        check_int("max_steps", max_steps, minimum=1)
        check_int("searches", searches, minimum=0)
        box_k = k is None
        if k is None:
            k = candidates_for_box(lr_bounds)
        check_int("k", k, minimum=1)
        check_int("k_later", k_later, minimum=1)
        for name, v, lo_, hi_ in (
            ("search_frac", search_frac, 0.0, 0.9),
            ("first_share", first_share, 0.0, 1.0),
            ("decay_frac", decay_frac, 0.0, 1.0),
            ("cooldown_frac", cooldown_frac, 0.0, 0.9),
        ):
            check_float(name, v, minimum=lo_, maximum=hi_)
        check_choice("decay_shape", decay_shape, ("linear", "sqrt"))
        check_float("trust", trust, minimum=1, min_inclusive=False, finite=False)
        if warmup is not None:
            check_int("warmup_steps", int(warmup), minimum=0)

        def fit(b: int) -> tuple[int, int, int, list[tuple[int, int]]] | None:
            """The most searches (up to ``searches``) that budget ``b`` holds, or None."""
            w = round(0.05 * b) if warmup is None else int(warmup)
            d = round(decay_frac * b)
            free = b - w - d  # steps between warm-up and decay: searches and exploitation
            waste = search_frac * b
            for n in range(searches, 0, -1):
                shares = [first_share] + [(1 - first_share) / (n - 1)] * (n - 1) if n > 1 else [1.0]
                plan = []
                for i, share in enumerate(shares):
                    kk = k if i == 0 else k_later
                    if parallel:
                        tp = int(waste / n)
                    else:
                        tp = int(waste * share / max(1, kk - 1)) if kk > 1 else int(waste * share)
                    plan.append((kk, tp))
                # A search must fit between its start and the next one.
                gap = free / n
                if all(
                    tp >= MIN_TAU_PRIME and (1 if parallel else kk) * tp < gap for kk, tp in plan
                ):
                    return w, d, n, plan
            return None

        def short(fitted: tuple[int, int, int, list[tuple[int, int]]] | None) -> bool:
            """No plan, or the first search's windows (``plan[0] = (k, τ')``) too short."""
            return fitted is None or fitted[3][0][1] < BOX_K_MIN_WINDOW

        b = max_steps
        got = fit(b)
        while box_k and k > MIN_FIRST_K and short(got):
            k -= 1  # the box asked for more candidates than the budget holds
            got = fit(b)
        if got is not None:
            w, d, n, plan = got
            gap = (b - w - d) / n
            return cls(
                b,
                w,
                d,
                tuple(w + round(i * gap) for i in range(n)),
                tuple(p[0] for p in plan),
                tuple(p[1] for p in plan),
                float(cooldown_frac),
                decay_shape,
                float(trust),
                f"budget holds {n} of {searches} searches" if n < searches else "",
                bool(parallel),
            )
        # Not even one search of two 5-step candidates: train at the initial LR. Name the
        # smallest budget that holds one, so the warning can say what to change; when no
        # budget does, name the fractions that leave no room. No search asked for: nothing
        # was dropped, nothing to say.
        note = ""
        w = round(0.05 * b) if warmup is None else int(warmup)
        d = round(decay_frac * b)
        if searches > 0 and w + d >= b:
            note = (
                f"{NO_ROOM}: the warm-up of {w} steps and the final decay of {d} leave none of "
                f"the {b} steps for one; lower warmup_steps"
                + (" or decay_frac" if decay_frac > 0 else "")
            )
        elif searches > 0:
            need = _smallest(fit, b)
            if need is None and search_frac == 0:
                note = f"{NO_ROOM}: search_frac=0 gives its candidates no steps"
            elif need is None:
                # Windows and gap both scale with the budget: their ratio is the problem.
                note = (
                    f"{NO_ROOM} at any budget: the windows of k={k} candidates (search_frac="
                    f"{search_frac:g}) do not fit between the warm-up and the final decay "
                    f"(decay_frac={decay_frac:g}); lower search_frac or decay_frac"
                )
            else:
                note = (
                    f"budget of {b} steps is too small for any search (each candidate needs "
                    f"at least {MIN_TAU_PRIME} steps; a budget of {need} steps or more holds one)"
                )
        return cls(
            b, w, d, (), (), (), float(cooldown_frac), decay_shape, float(trust), note,
            bool(parallel),
        )  # fmt: skip

    def plan(self, step: int, *, stage: int, winner_lr: float | None) -> StagePlan:
        """Plan the stage that starts at global step ``step`` (``stage``: its index)."""
        if stage >= len(self.starts) or step >= self.max_steps - self.decay:
            return StagePlan("final", exploit=None, lr=winner_lr)
        k, tp = self.ks[stage], self.tau_primes[stage]
        left = self.max_steps - self.decay - step
        if self.parallel:
            if tp > left:
                return StagePlan("final", exploit=None, lr=winner_lr)
        elif k * tp > left:
            # A retry or recovery pushed this search late: shrink it to what is left.
            k = min(k, left // max(tp, 1))
            if k < (2 if winner_lr is not None else 1):
                return StagePlan("final", exploit=None, lr=winner_lr)
        nxt = self.starts[stage + 1] if stage + 1 < len(self.starts) else None
        search_end = step + (1 if self.parallel else k) * tp
        exploit = None if nxt is None else max(0, nxt - search_end)
        # Candidates are compared at the horizon the winner then trains (its window, then
        # the exploitation up to the next search or the end of the budget).
        tau = tp + (self.max_steps - search_end if exploit is None else exploit)
        cool = round(self.cooldown_frac * tp)
        return StagePlan("search", k=k, tau=max(tau, tp + 1), tau_prime=tp, cooldown=cool,
                         exploit=exploit)  # fmt: skip

    def exploit_lr(self, winner_lr: float, step: int) -> float:
        """The winner's LR, decayed to zero over the last ``decay`` steps of the budget."""
        return decayed_lr(
            winner_lr, step, max_steps=self.max_steps, decay=self.decay, shape=self.decay_shape
        )

    def exploit_lrs(self, winner_lr: float, first: int, n: int) -> list[float] | None:
        """:meth:`exploit_lr` at ``n`` steps from ``first`` (``None``: all ``winner_lr``)."""
        return decayed_lrs(
            winner_lr, first, n, max_steps=self.max_steps, decay=self.decay, shape=self.decay_shape
        )

    def candidate_lr(self, lr: float, t: int, tau_prime: int, cooldown: int) -> float:
        """LR of a candidate at step ``t`` of its window (linear cooldown at the end)."""
        return cooled_lr(lr, t, tau_prime, cooldown)

    def trust_box(
        self, winner_lr: float | None, box: tuple[float, float]
    ) -> tuple[float, float] | None:
        """Search box of a later stage: ``[winner / trust, winner * trust]`` within ``box``."""
        if winner_lr is None:
            return None
        lo, hi = box
        new_lo = max(lo, winner_lr / self.trust)
        new_hi = min(hi, winner_lr * self.trust)
        if new_hi <= new_lo * 1.0001:
            return None
        return new_lo, new_hi


def _smallest(fits: Callable[[int], object], budget: int, limit: int = 1 << 40) -> int | None:
    """The smallest budget above ``budget`` for which ``fits`` is not None (it only grows)."""
    hi = budget * 2
    while fits(hi) is None:
        if hi > limit:
            return None
        hi *= 2
    lo = hi // 2  # does not fit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) is not None else (mid, hi)
    return hi
