"""The AutoLRS stage search: every decision, no execution.

One stage: propose k candidate LRs, each is trained τ' steps from the same starting state (by
whoever executes the search: the in-loop tuner with snapshots, or a Ray scheduler with
checkpoints), each candidate's losses are forecast to step τ, the lowest forecast wins, the
winner trains the stage, and τ/τ' grow. This object holds that logic so both executors share it.
It knows nothing about models, optimizers or frameworks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from autolr.predictors import ExponentialPredictor, Forecast, Predictor
from autolr.searchers import GPSearcher, Param, Searcher

from .._errors import ConfigError, StateError
from .._stats import std_dev
from .._validate import check_bounds, check_choice, check_instance, check_int
from ._policy import NO_ROOM, BudgetPolicy, DivergenceRule, PaperPolicy, StagePlan

__all__ = ["CandidateResult", "StageRecord", "StageSearch"]

#: Non-finite losses in a row that leave the state finite and are skipped (a bad batch); the
#: next one is divergence (see :meth:`StageSearch.skips_nonfinite`).
MAX_SKIPPED_IN_A_ROW = 2

_VARIANTS = ("paper", "budget")
#: The paper variant's stage structure where an executor's caller gives none.
PAPER_STRUCTURE = {"tau": 1000, "tau_prime": None, "k": 10, "tau_max": 8000, "double": True}
_COMPARES = ("forecast", "window", "cooled")
# Consecutive all-penalised searches of one stage before settling on the box's low end.
MAX_RETRIES = 4
#: How a penalty ``reason`` for a non-finite loss starts (executors and DivergenceRule).
NONFINITE = "non-finite"


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate LR achieved in a stage.

    Attributes:
        lr: The candidate learning rate.
        forecast: Forecast loss at step τ of the stage (``inf`` when penalised).
        std: Forecast uncertainty.
        penalised: True when the candidate diverged or produced non-finite losses.
        reason: Why it was penalised, or the forecaster's note ("" if none).
        steps: Steps the candidate actually trained (fewer than τ' when abandoned).
    """

    lr: float
    forecast: float
    std: float
    penalised: bool
    reason: str
    steps: int


@dataclass(frozen=True)
class StageRecord:
    """One stage as every executor records it (in-loop tuner and Ray scheduler alike).

    Attributes:
        stage: Stage index (0-based; a retried stage keeps its index).
        start: Step at which the stage began (the state its candidates start from).
        tau: Horizon candidates were compared at.
        tau_prime: Steps per candidate.
        k: Candidates planned.
        candidates: What each candidate achieved, in the order they were scored.
        winner_lr: The LR that trained the stage (``None`` until chosen).
        end: Step at which the stage ended (``None`` while it runs).
        note: ``"retry"`` (searched again below a diverged box), ``"fallback"``
            (every retry diverged: the box's low end), ``"final"`` (no search fitted),
            ``"race"`` (the Ray scheduler's raced last stage), or ``""``.
    """

    stage: int
    start: int
    tau: int
    tau_prime: int
    k: int
    candidates: tuple[CandidateResult, ...] = ()
    winner_lr: float | None = None
    end: int | None = None
    note: str = ""

    def to_state(self) -> dict[str, Any]:
        """Plain values (survive ``torch.load(weights_only=True)`` and JSON)."""
        d = asdict(self)
        d["candidates"] = [asdict(c) for c in self.candidates]
        return d

    @classmethod
    def from_state(cls, d: Any) -> StageRecord:
        """Inverse of :meth:`to_state`."""
        d = dict(d)
        d["candidates"] = tuple(CandidateResult(**c) for c in d["candidates"])
        return cls(**d)


class StageSearch:
    """Stage-by-stage LR search of AutoLRS (Jin et al., ICLR 2021), independent of execution.

    Every decision of a stage lives here; an executor (the in-loop :class:`AutoLRS`, the Ray
    scheduler) only carries them out: at a stage boundary it calls :meth:`plan`, trains the
    proposed candidates (:meth:`propose`, :meth:`candidate_lr`), reports them
    (:meth:`score`), asks :meth:`winner` (or :meth:`resolve_failure` when every candidate
    diverged), fixes it with :meth:`choose`, trains :meth:`exploit_length` steps at
    :meth:`exploit_lr` and closes the stage with :meth:`end_stage`. Each stage leaves one
    :class:`StageRecord` in :attr:`records`.

    Args:
        lr_bounds: ``(low, high)`` search box for the LR, searched in log space.
        tau: Steps per stage trained with the winning LR (paper: 1000).
        tau_prime: Steps each candidate is trained (default ``tau // 10``).
        k: Candidates per stage (paper: 10).
        tau_max: Cap on τ; τ and τ' double after each stage while ``tau_prime < tau_max / 10``.
        double: Whether τ and τ' grow at all.
        searcher: Proposes candidate LRs; default a seeded :class:`GPSearcher` over ``lr``.
            Its observations are reset at the start of every stage (forecasts of different
            stages are not comparable: the loss level moves).
        predictor: Forecasts a candidate's loss at step τ; default :class:`ExponentialPredictor`.
        seed: Seed of the default searcher.
        variant: ``"paper"`` (:class:`PaperPolicy`: τ, τ', k as given, doubling) or
            ``"budget"`` (:class:`BudgetPolicy`: the run planned from ``max_steps``; τ,
            τ', k come from the plan).
        max_steps: The step budget (required by ``"budget"``; the paper variant stops
            searching when a search no longer fits).
        policy: A custom :class:`BudgetPolicy` for the budget variant.
        compare: How candidates are scored: ``"forecast"`` (exponential forecast to τ, the
            paper's and its default), ``"window"`` (the level reached: mean of the last
            quarter of the window) or ``"cooled"`` (mean of the cooldown steps, the budget
            variant's default; the window's level when the policy does not cool windows).
        divergence: The :class:`DivergenceRule` executors apply to candidates.
        continue_best: The executor continues from the winning candidate's state (the
            exploitation is then shorter by the winner's kept steps).
        parallel: Candidates run side by side (Ray trials): a search costs τ' steps.

    Raises:
        ConfigError: On invalid bounds, step counts, variants or modes.
        ConfigTypeError: ``searcher`` is not a :class:`~autolr.searchers.Searcher` or
            ``predictor`` not a :class:`~autolr.predictors.Predictor`.

    Example:
        >>> search = StageSearch(lr_bounds=(1e-4, 1e-1), tau=100, k=3, seed=0)
        >>> search.begin_stage()
        >>> lr = search.propose()[0]
        >>> search.score(lr, [2.0 - 0.01 * i for i in range(10)])  # doctest: +ELLIPSIS
        CandidateResult(...)
    """

    def __init__(
        self,
        *,
        lr_bounds: tuple[float, float] = (1e-4, 1e-1),
        tau: int = 1000,
        tau_prime: int | None = None,
        k: int = 10,
        tau_max: int = 8000,
        double: bool = True,
        searcher: Searcher | None = None,
        predictor: Predictor | None = None,
        seed: int | None = 0,
        variant: str = "paper",
        max_steps: int | None = None,
        policy: BudgetPolicy | None = None,
        compare: str | None = None,
        divergence: DivergenceRule | None = None,
        continue_best: bool = False,
        parallel: bool = False,
    ) -> None:
        lo, hi = check_bounds("lr_bounds", lr_bounds, positive=True)
        check_choice("variant", variant, _VARIANTS)
        if max_steps is not None:
            check_int("max_steps", max_steps, minimum=1)
        if variant == "budget" and max_steps is None:
            raise ConfigError("variant='budget' plans the run from its budget: pass max_steps")
        compare = compare or ("forecast" if variant == "paper" else "cooled")
        check_choice("compare", compare, _COMPARES)
        tau_prime = max(1, tau // 10) if tau_prime is None else tau_prime
        for name, val in (("tau", tau), ("tau_prime", tau_prime), ("k", k), ("tau_max", tau_max)):
            check_int(name, val, minimum=1)
        if tau_prime >= tau:
            raise ConfigError(
                f"tau_prime must be smaller than tau (candidates are short trials of a stage), "
                f"got tau_prime={tau_prime}, tau={tau}"
            )
        if tau_max < tau:
            raise ConfigError(f"tau_max must be >= tau, got tau_max={tau_max}, tau={tau}")
        if searcher is not None:
            check_instance("searcher", searcher, Searcher)
        if predictor is not None:
            check_instance("predictor", predictor, Predictor)
        self.variant = variant
        self.max_steps = max_steps
        self.compare = compare
        self.continue_best = bool(continue_best)
        self.parallel = bool(parallel)
        self.divergence = divergence if divergence is not None else DivergenceRule()
        self.policy: PaperPolicy | BudgetPolicy
        if variant == "budget":
            assert max_steps is not None
            self.policy = (
                policy
                if policy is not None
                else BudgetPolicy.for_budget(max_steps, parallel=self.parallel, lr_bounds=(lo, hi))
            )
            if self.policy.max_steps != max_steps:
                raise ConfigError(
                    f"policy plans {self.policy.max_steps} steps but max_steps={max_steps}"
                )
        else:
            self.policy = PaperPolicy()
        self.tau = tau
        self.tau_prime = tau_prime
        self.k = k
        self.tau_max = tau_max
        self.double = bool(double)
        self.searcher = (
            searcher if searcher is not None else _default_searcher(lo, hi, seed, variant)
        )
        if [p.name for p in self.searcher.params] != ["lr"]:
            raise ConfigError(
                "searcher must search exactly one parameter named 'lr', got "
                f"{[p.name for p in self.searcher.params]}"
            )
        # The searcher's box is the one source of truth for the bounds (see lr_bounds).
        if self.searcher.bounds["lr"] != (lo, hi):
            self.searcher.set_bounds("lr", lo, hi)
        # The searcher's one-time imports (botorch for the GP) happen here, before training,
        # not inside the step (or Ray barrier) that makes the first GP suggestion.
        self.searcher._preload()
        # The box the user gave, lowered only by divergence; trust regions narrow a copy.
        self._box = (lo, hi)
        self.predictor = predictor if predictor is not None else ExponentialPredictor()
        self.stage = 0
        self.results: list[CandidateResult] = []
        self.records: list[StageRecord] = []
        self.plan_now: StagePlan | None = None
        self.retries = 0
        self.winner_lr: float | None = None
        # One non-finite event cuts the box provisionally (see recover): the box before the
        # cut, given back by end_stage once a stage ends with finite losses since the event.
        self._restore_box: tuple[float, float] | None = None
        self._healthy = True  # no non-finite loss since the last cut or stage end
        self.restored = 0  # cuts given back (at most one per run)

    @classmethod
    def for_variant(
        cls,
        variant: str,
        *,
        max_steps: int | None,
        structure: Mapping[str, Any],
        policy: BudgetPolicy | None,
        budget_name: str = "max_steps",
        **common: Any,
    ) -> StageSearch:
        """Build the search an executor's arguments ask for, with the one set of rules.

        ``structure`` holds the paper's stage arguments as the user gave them (``None``:
        not given; keys among ``tau``, ``tau_prime``, ``k``, ``tau_max``, ``double``). The
        budget variant plans those itself, so any given one raises; the paper variant fills
        the missing ones from :data:`PAPER_STRUCTURE` and refuses a ``policy``.

        Raises:
            ConfigError: Structure with the budget variant, a budget variant without a
                budget, or a policy with the paper variant.
        """
        check_choice("variant", variant, _VARIANTS)
        given = [n for n, v in structure.items() if v is not None]
        if variant == "budget":
            if given:
                raise ConfigError(
                    f"{', '.join(given)} set the paper's stage structure; variant='budget' "
                    f"plans its stages from {budget_name} (customise them with "
                    "policy=BudgetPolicy.for_budget(...)), or pass variant='paper'"
                )
            if max_steps is None:
                raise ConfigError(
                    f"variant='budget' plans the run from its budget: pass {budget_name}"
                )
            return cls(variant="budget", max_steps=max_steps, policy=policy, **common)
        if policy is not None:
            raise ConfigError("policy= plans a budget; it needs variant='budget'")
        paper = {n: structure.get(n, d) for n, d in PAPER_STRUCTURE.items()}
        paper = {n: PAPER_STRUCTURE[n] if v is None else v for n, v in paper.items()}
        return cls(variant="paper", max_steps=max_steps, **paper, **common)

    # ------------------------------------------------------------------ planning
    @property
    def initial_lr(self) -> float:
        """The LR before any winner: the geometric middle of the box."""
        lo, hi = self._box
        return math.sqrt(lo * hi)

    @property
    def lr(self) -> float:
        """The LR the run trains at between searches: the last winner's, else :attr:`initial_lr`."""
        return self.winner_lr if self.winner_lr is not None else self.initial_lr

    @property
    def warmup_steps(self) -> int:
        """Warm-up steps the plan asks for (0 in the paper variant)."""
        return self.policy.warmup if isinstance(self.policy, BudgetPolicy) else 0

    def plan(self, step: int) -> StagePlan:
        """Decide what the stage starting at global ``step`` does, and open its record.

        Returns a :class:`StagePlan`: ``"search"`` with ``k``, ``tau_prime``, ``cooldown``
        and the exploitation length, or ``"final"`` when no search fits (the rest of the
        budget trains at the last winner's LR, or the initial LR before any winner).
        """
        pol = self.policy
        if isinstance(pol, BudgetPolicy):
            p = pol.plan(step, stage=self.stage, winner_lr=self.winner_lr)
            if p.kind == "search":
                self.tau, self.tau_prime = p.tau, p.tau_prime
        else:
            p = pol.plan(
                step,
                tau=self.tau,
                tau_prime=self.tau_prime,
                k=self.k,
                max_steps=self.max_steps,
                has_winner=self.winner_lr is not None,
                winner_lr=self.winner_lr,
                continue_best=self.continue_best,
                parallel=self.parallel,
            )
        if p.kind == "final":
            p = replace(p, lr=self.lr)
        self.plan_now = p
        return p

    def peek_plan(self, step: int) -> StagePlan:
        """The plan the stage after this one would get at global ``step``; changes nothing.

        Lets a parallel executor tell whether the search it starts now is the last one.
        """
        probe = self._probe()
        if probe.winner_lr is None:
            probe.winner_lr = probe.initial_lr  # by then a winner exists
        probe.end_stage()
        return probe.plan(step)

    def _probe(self) -> StageSearch:
        """A copy to plan ahead with: plan/end_stage only rebind its scalars."""
        probe = copy.copy(self)
        probe.records, probe.results = list(self.records), list(self.results)
        probe._restore_box = None  # restoring the box would touch the shared searcher
        return probe

    def budget_report(self, start: int = 0, *, budget_name: str = "max_steps") -> str:
        """What the step budget allows, when it is less than what was asked for.

        Plans the whole run from global step ``start`` (after any warm-up), assuming no
        candidate diverges, and returns one message ("" when the budget holds the searches
        asked for): no search at all, a first search with fewer than ``k`` candidates, later
        searches dropped (budget variant), or more than half of the budget spent training
        candidates that are then discarded (paper variant). Executors warn with it once, at
        construction, where the plan is first known.
        """
        if self.max_steps is None:
            return ""
        budget = f"{budget_name}={self.max_steps}"
        probe = self._probe()
        probe.stage, probe.winner_lr = 0, None
        step, cut, discarded, searches = start, [], 0, 0
        while step < self.max_steps:
            p = probe.plan(step)
            if p.kind == "final":
                break
            searches += 1
            if searches == 1 and p.k < self.k and not isinstance(self.policy, BudgetPolicy):
                cut.append(p.k)  # later stages shrinking at the end of the budget is the rule
            kept = p.tau_prime - p.cooldown if self.continue_best else 0
            cost = p.tau_prime if self.parallel else p.k * p.tau_prime
            discarded += (p.k - 1) * p.tau_prime if self.parallel else cost - kept
            step += cost
            if probe.winner_lr is None:
                probe.winner_lr = probe.initial_lr
            length = probe.exploit_length(step, kept)
            if length is None:
                break
            step += length
            probe.end_stage()
        lr = f"lr={self.initial_lr:.3g} (the middle of lr_bounds)"
        if isinstance(self.policy, BudgetPolicy):
            note = self.policy.note
            if not note:
                return ""
            if searches == 0 and note.startswith(NO_ROOM):
                return f"{note}; the run trains at {lr} with the planned warm-up and decay"
            if searches == 0:
                return (
                    f"{note}; the run trains at {lr} with the planned warm-up and decay. Raise "
                    f"{budget_name}, or plan fewer/smaller candidates with "
                    "policy=BudgetPolicy.for_budget(...)"
                )
            return f"{budget} {note}; raise {budget_name}, or pass fewer searches to policy"
        # One whole stage: k candidates, then tau steps at the winner (its window kept).
        kept = self.tau_prime if self.continue_best else 0
        full = start + self.k * self.tau_prime + self.tau - kept
        fix = f"raise {budget_name} to at least {full} (one whole stage), or lower tau or k"
        if searches == 0:
            after = f" left after the {start}-step warm-up" if start else ""
            return (
                f"{budget} is too small for any search of variant='paper' (a candidate needs "
                f"2*tau_prime={2 * self.tau_prime} of the steps{after}); the run trains at "
                f"{lr} for all of its steps. To search k={self.k} candidates, {fix}"
            )
        share = f"{discarded} of its steps ({discarded / self.max_steps:.0%}) train candidates"
        if cut:
            return (
                f"{budget} cannot hold one full search of variant='paper' (k={self.k} "
                f"candidates of tau_prime={self.tau_prime} steps): the first stage tries "
                f"{cut[0]} of its k={self.k} candidates, and {share} that are discarded. To "
                f"search all k, {fix}"
            )
        if not self.parallel and discarded > self.max_steps / 2:
            return (
                f"with {budget}, {share} that are discarded (variant='paper': k={self.k} "
                f"candidates of tau_prime={self.tau_prime} steps per stage, doubling); lower k, "
                f"or raise {budget_name} so that whole stages fit"
            )
        return ""

    def exploit_lr(self, step: int) -> float:
        """LR of an exploitation (or final) step at global ``step``."""
        return self.policy.exploit_lr(self.lr, step)

    def exploit_lrs(self, first: int, n: int) -> list[float] | None:
        """:meth:`exploit_lr` at ``n`` steps from ``first`` (``None``: the winner's LR at each)."""
        return self.policy.exploit_lrs(self.lr, first, n)

    def candidate_lr(self, lr: float, t: int) -> float:
        """LR of a candidate at step ``t`` (0-based) of its window."""
        p = self.plan_now
        if p is None or p.cooldown <= 0 or not isinstance(self.policy, BudgetPolicy):
            return lr
        return self.policy.candidate_lr(lr, t, p.tau_prime, p.cooldown)

    @property
    def cooldown_start(self) -> int | None:
        """Window step at which candidates start to cool down (``None``: no cooldown)."""
        p = self.plan_now
        if p is None or p.cooldown <= 0:
            return None
        return p.tau_prime - p.cooldown

    def exploit_length(self, step: int, kept: int) -> int | None:
        """Steps the winner trains after the search ends at global ``step``.

        Args:
            step: Global step at which exploitation begins.
            kept: Steps of the winner's window that continue into the run (0 when the
                stage start was restored).

        Returns ``None`` for "until the budget ends".
        """
        pol = self.policy
        if isinstance(pol, BudgetPolicy):
            nxt = pol.starts[self.stage + 1] if self.stage + 1 < len(pol.starts) else None
            if nxt is None or nxt >= pol.max_steps - pol.decay:
                return None
            return max(0, nxt - step)
        length = self.tau - kept
        if self.max_steps is not None:
            length = min(length, self.max_steps - step)
        return length

    def reference_loss(self, recent: Sequence[float]) -> float | None:
        """The stage-start loss level that :attr:`divergence` compares candidates with.

        Paper variant: the median of the last ``max(1, τ'/10)`` losses. Budget variant: the
        largest of the last τ' losses, so that late in training, when single mini-batch
        losses scatter by several times their median, noise is not taken for divergence.
        """
        if not recent:
            return None
        if self.variant == "budget":
            return max(recent[-max(1, self.tau_prime) :])
        window = sorted(recent[-max(1, self.tau_prime // 10) :])
        return window[len(window) // 2]

    # ------------------------------------------------------------------ records
    def open_record(self, start: int, *, note: str = "") -> StageRecord:
        """Record that the planned stage began at ``start``."""
        p = self.plan_now
        k = p.k if p is not None and p.kind == "search" else 0
        rec = StageRecord(self.stage, int(start), self.tau, self.tau_prime, k, note=note)
        self.records.append(rec)
        return rec

    def update_record(self, **changes: Any) -> StageRecord:
        """Replace fields of the current record (records are immutable)."""
        if not self.records:
            raise StateError("no stage record is open")
        self.records[-1] = replace(self.records[-1], **changes)
        return self.records[-1]

    # ------------------------------------------------------------------ failures
    def resolve_failure(self, what: str = "candidate") -> tuple[str, float, str]:
        """Every candidate of this stage was penalised: decide what happens.

        Records the candidates, lowers the box below the lowest LR tried and returns
        ``(action, lr, message)``: ``("retry", high, ...)`` to search the stage again in the
        lowered box (``high``: its new upper end; the record is noted ``"retry"``), or, after
        :data:`MAX_RETRIES` consecutive failures, ``("fallback", lr, ...)``: train the stage
        at the lowered box's low end. ``message`` is the one warning executors give
        (``what`` names the candidates: "candidate", "racer").
        """
        tried = min(r.lr for r in self.results) if self.results else self.lr_bounds[1]
        lo, hi = self.lower_upper_bound(tried)
        self._restore_box = None  # every candidate failed: a pending cut was no glitch
        self.retries += 1
        action = "retry" if self.retries < MAX_RETRIES else "fallback"
        if self.records:
            self.update_record(candidates=tuple(self.results), note=action)
        head = f"stage {self.stage}: every {what} diverged; "
        if action == "retry":
            return action, hi, head + f"searching again in [{lo:.3g}, {hi:.3g}]"
        return action, lo, head + f"training at the lowest LR {lo:.3g}"

    def choose(self, win: CandidateResult | None = None) -> CandidateResult:
        """Fix the stage's winner (``win``, or :meth:`winner`) and record it."""
        win = win if win is not None else self.winner()
        if win is None:
            raise StateError("choose() needs a winner; call resolve_failure() first")
        self.retries = 0
        self.winner_lr = float(win.lr)
        if self.records:
            self.update_record(candidates=tuple(self.results), winner_lr=float(win.lr))
        return win

    def recover(self, bad_lr: float, *, transient: bool = False) -> tuple[float, float]:
        """A non-finite loss while training at ``bad_lr``: lower the box below it.

        ``transient``: the executor found the training state still finite (the non-finite
        loss poisoned nothing: a bad batch, a step a ``GradScaler`` skipped). The first such
        cut of a run is then provisional: once a stage ends with no non-finite loss since
        the cut, :meth:`end_stage` gives the box back as it was (see
        :attr:`pending_restore`). A cut from a non-finite state, a second cut before the
        box came back, a stage whose every candidate fails, or any cut after one was given
        back, stays.
        """
        if transient and self._restore_box is None and self.restored == 0:
            self._restore_box = self._box
        else:
            self._restore_box = None  # not a one-off: the cut stays
        self._healthy = True  # training after the cut is judged from here
        return self.lower_upper_bound(bad_lr)

    @property
    def pending_restore(self) -> tuple[float, float] | None:
        """The box a provisional cut gives back once training is healthy (None: none)."""
        return self._restore_box

    # ------------------------------------------------------------------ stage flow
    def begin_stage(self) -> None:
        """Start the search of a new stage (forget the previous stage's candidates).

        In the budget variant, a stage after the first searches a trust region around
        the last winner (within the box).
        """
        self.results = []
        self.searcher.reset()
        if isinstance(self.policy, BudgetPolicy):
            box = self.policy.trust_box(self.winner_lr, self._box) if self.stage > 0 else None
            lo, hi = box if box is not None else self._box
            if self.searcher.bounds["lr"] != (lo, hi):
                self.searcher.set_bounds("lr", lo, hi)

    @property
    def lr_bounds(self) -> tuple[float, float]:
        """The current LR search box (lowered after divergence by :meth:`lower_upper_bound`)."""
        return self.searcher.bounds["lr"]

    def propose(self, n: int = 1, *, pending: Sequence[float] = ()) -> list[float]:
        """Propose ``n`` new candidate LRs, given LRs still being tried (``pending``)."""
        check_int("n", n, minimum=1)
        configs = self.searcher.suggest(n, pending=[{"lr": float(p)} for p in pending])
        lo, hi = self.lr_bounds
        return [float(min(max(c["lr"], lo), hi)) for c in configs]

    def score(
        self,
        lr: float,
        losses: Sequence[float],
        *,
        steps: Sequence[float] | None = None,
        penalised: bool = False,
        reason: str = "",
        trained_steps: int | None = None,
    ) -> CandidateResult:
        """Forecast a candidate's loss at step τ, tell the searcher, and record the result.

        Args:
            lr: The candidate's LR.
            losses: Its observed losses (training losses per step, or validation losses).
            steps: Step of each loss since the candidate started (default ``0..n-1``).
            penalised: Mark the candidate as failed (diverged, non-finite, errored trial).
            reason: Why it was penalised.
            trained_steps: Steps it trained (default ``len(losses)``).
        """
        n = len(losses) if trained_steps is None else int(trained_steps)
        if not penalised:
            vals = [float(v) for v in losses]
            if any(not math.isfinite(v) for v in vals):
                penalised, reason = True, reason or "non-finite loss"
            elif not vals:  # every loss of its window was skipped (non-finite, state finite)
                penalised, reason = True, reason or "no finite loss in its window"
        if penalised and (reason.startswith(NONFINITE) or not all(map(math.isfinite, losses))):
            self._healthy = False  # keeps a provisional cut (see recover)
        if penalised:
            # The searcher turns a non-finite value into a finite penalty worse than anything
            # seen, so the GP learns "avoid this region" without being poisoned.
            self.searcher.observe({"lr": lr}, math.inf)
            result = CandidateResult(lr, math.inf, 0.0, True, reason or "penalised", n)
        else:
            fc = self._forecast(vals, steps)
            if math.isfinite(fc.value):
                self.searcher.observe({"lr": lr}, fc.value, noise=max(fc.std, 0.0))
                result = CandidateResult(lr, fc.value, fc.std, False, fc.reason, n)
            else:
                self.searcher.observe({"lr": lr}, math.inf)
                result = CandidateResult(lr, math.inf, 0.0, True, fc.reason or "no forecast", n)
        self.results.append(result)
        return result

    def _forecast(self, vals: list[float], steps: Sequence[float] | None) -> Forecast:
        """The comparison value of one candidate (see ``compare``)."""
        if self.compare == "forecast":
            return self.predictor.forecast(vals, self.target_step, steps=steps)
        if self.compare == "cooled" and self.plan_now is not None and self.plan_now.cooldown:
            tail = vals[-max(1, min(self.plan_now.cooldown, len(vals))) :]
        else:
            # "window": the level the candidate reached, from the last quarter of its window.
            # Every candidate saw the same batches (restored RNG), so levels are paired.
            tail = vals[-max(1, len(vals) // 4) :]
        mean = sum(tail) / len(tail)
        std = std_dev(tail, mean, max(1, len(tail) - 1), len(tail))
        return Forecast(mean, std, False, "", None, len(tail))

    def skips_nonfinite(self, streak: int) -> bool:
        """Whether a non-finite loss that left the weights and optimizer state finite is
        skipped, after ``streak`` such losses in a row.

        Such a loss is a bad batch the loop skipped, not the LR's fault, and the same batch
        comes back after every restore (RNG restored). The budget variant skips up to
        :data:`MAX_SKIPPED_IN_A_ROW` in a row; the paper variant, and a longer streak, treat
        it as divergence. Every executor asks this (the in-loop tuner, the Ray scheduler).
        """
        return self.variant == "budget" and streak < MAX_SKIPPED_IN_A_ROW

    @property
    def target_step(self) -> float:
        """The step (from the candidate's start) at which candidates are compared: τ - 1."""
        return float(self.tau - 1)

    @property
    def search_complete(self) -> bool:
        """Whether k candidates have been scored in this stage."""
        return len(self.results) >= self.k

    def winner(self) -> CandidateResult | None:
        """Lowest forecast among the candidates tried (not the GP's posterior minimum).

        Returns ``None`` when every candidate was penalised.
        """
        ok = [r for r in self.results if not r.penalised]
        return min(ok, key=lambda r: r.forecast) if ok else None

    def end_stage(self) -> None:
        """Close the stage: count it, grow τ, τ' (paper rule: double while τ' < τ_max/10).

        Gives back a provisionally cut box (see :meth:`recover`) when no loss since the cut
        was non-finite.
        """
        self.stage += 1
        if self._restore_box is not None and self._healthy:
            # A stage ended with finite losses since a one-off non-finite event: the cut it
            # caused was a glitch, so the next stages search the box as it was.
            self._box = self._restore_box
            self.searcher.set_bounds("lr", *self._box)
            self._restore_box = None
            self.restored += 1
        self._healthy = True
        if self._grows():
            self.tau *= 2
            self.tau_prime *= 2

    def _grows(self) -> bool:
        if self.variant == "budget":
            return False  # the budget plan fixes every stage's windows
        return self.double and self.tau_prime < self.tau_max / 10 and self.tau * 2 <= self.tau_max

    def lower_upper_bound(self, bad_lr: float, factor: float = 3.0) -> tuple[float, float]:
        """Shrink the search box below an LR that made training diverge.

        The new upper bound is ``bad_lr / factor``; if that falls to the lower bound, the box
        shifts down keeping its log width. Returns the new bounds.
        """
        lo, hi = self.lr_bounds
        new_hi = min(hi, bad_lr / factor)
        if new_hi <= lo * 1.0001:
            width = hi / lo
            lo = new_hi / max(width, 10.0)
        self.searcher.set_bounds("lr", lo, new_hi)
        # Later stages (trust regions) stay below the LR that diverged too.
        self._box = (min(self._box[0], lo), min(self._box[1], new_hi))
        return self.lr_bounds

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (survives ``torch.load(weights_only=True)``)."""
        return {
            "lr_bounds": list(self.lr_bounds),
            "tau": self.tau,
            "tau_prime": self.tau_prime,
            "stage": self.stage,
            "results": [asdict(r) for r in self.results],
            "searcher": self.searcher.state_dict(),
            "predictor": self.predictor.state_dict(),
            "variant": self.variant,
            "box": list(self._box),
            "records": [r.to_state() for r in self.records],
            "retries": self.retries,
            "winner_lr": self.winner_lr,
            "plan": None if self.plan_now is None else asdict(self.plan_now),
            "recovery": self._recovery_state(),
        }

    def _recovery_state(self) -> dict[str, Any]:
        """The provisional-cut bookkeeping of :meth:`recover` (part of :meth:`state_dict`)."""
        box = self._restore_box
        return {"restore_box": None if box is None else list(box), "healthy": self._healthy,
                "restored": self.restored}  # fmt: skip

    @staticmethod
    def _parse_recovery_state(entry: Any) -> tuple[tuple[float, float] | None, bool, int]:
        """Check the ``"recovery"`` entry of a state; ``None`` (saved before it existed): none.

        Returns ``(restore_box, healthy, restored)`` for :meth:`_set_recovery_state`.

        Raises:
            StateError: On a malformed entry.
        """
        if entry is None:
            return None, True, 0
        try:
            box = entry["restore_box"]
            restore = None if box is None else check_bounds("restore_box", box, positive=True)
            healthy, restored = entry["healthy"], _int(entry["restored"], "restored", 0)
            if not isinstance(healthy, bool):
                raise TypeError(f"healthy={healthy!r} is not a bool")
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"StageSearch state_dict: bad 'recovery' entry: {exc}") from exc
        return restore, healthy, restored

    def _set_recovery_state(self, parsed: tuple[tuple[float, float] | None, bool, int]) -> None:
        """Apply what :meth:`_parse_recovery_state` returned."""
        self._restore_box, self._healthy, self.restored = parsed

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        The whole state is checked first (keys, types, bounds, variant, the searcher's and
        predictor's states); on an error nothing changes.

        Raises:
            StateError: If ``state`` is not a StageSearch state of this variant.
        """
        if not isinstance(state, Mapping):
            raise StateError(f"not a StageSearch state_dict: got {type(state).__name__}")
        missing = [k for k in ("lr_bounds", "tau", "tau_prime", "stage", "results",
                               "searcher", "predictor") if k not in state]  # fmt: skip
        if missing:
            raise StateError(f"not a StageSearch state_dict: it lacks {', '.join(missing)}")
        try:
            lo, hi = check_bounds("lr_bounds", state["lr_bounds"], positive=True)
            box_lo, box_hi = check_bounds("box", state.get("box", (lo, hi)), positive=True)
            tau = _int(state["tau"], "tau", 1)
            tau_prime = _int(state["tau_prime"], "tau_prime", 1)
            stage = _int(state["stage"], "stage", 0)
            retries = _int(state.get("retries", 0), "retries", 0)
            results = [_candidate(r) for r in _list(state["results"], "results")]
            records = [_record(r) for r in _list(state.get("records", []), "records")]
            variant = state.get("variant", "paper")
            winner = state.get("winner_lr")
            winner_lr = None if winner is None else _real(winner, "winner_lr")
            plan = state.get("plan")
            plan_now = None if plan is None else StagePlan(**plan)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"not a valid StageSearch state_dict: {exc}") from exc
        recovery = self._parse_recovery_state(state.get("recovery"))
        if variant != self.variant:
            raise StateError(
                f"state is from a variant={variant!r} search, this one is {self.variant!r}"
            )
        # Searcher and predictor check their own states; undo them if either refuses.
        old = (self.searcher.bounds["lr"], self.searcher.state_dict(), self.predictor.state_dict())
        try:
            # Bounds are configuration for the searcher, so they go back before its state.
            self.searcher.set_bounds("lr", lo, hi)
            self.searcher.load_state_dict(state["searcher"])
            self.predictor.load_state_dict(state["predictor"])
        except Exception as exc:
            self.searcher.set_bounds("lr", *old[0])
            self.searcher.load_state_dict(old[1])
            self.predictor.load_state_dict(old[2])
            raise StateError(
                f"StageSearch state_dict: its searcher or predictor state does not load "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.tau, self.tau_prime, self.stage = tau, tau_prime, stage
        self.results = results
        self._box = (box_lo, box_hi)
        self.records = records
        self.retries = retries
        self.winner_lr = winner_lr
        self.plan_now = plan_now
        self._set_recovery_state(recovery)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} is not a number")
    return float(value)


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TypeError(f"{name}={value!r} is not an int >= {minimum}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} is a {type(value).__name__}, not a list")
    return list(value)


def _candidate(d: Any) -> CandidateResult:
    r = CandidateResult(**d)
    for name in ("lr", "forecast", "std"):
        _real(getattr(r, name), f"candidate {name}")
    if not isinstance(r.penalised, bool) or not isinstance(r.reason, str):
        raise TypeError(f"candidate {d!r} has a non-bool penalised or a non-str reason")
    _int(r.steps, "candidate steps", 0)
    return r


def _record(d: Any) -> StageRecord:
    r = StageRecord.from_state(d)
    for name in ("stage", "start", "tau", "tau_prime", "k"):
        _int(getattr(r, name), f"record {name}", 0)
    if r.winner_lr is not None:
        _real(r.winner_lr, "record winner_lr")
    if r.end is not None:
        _int(r.end, "record end", 0)
    return r


# The budget variant's GP step keeps fixed hyperparameters until a fit has this many points
# to go on: a fit on 3 cost ~70 ms, most of the tuner's overhead on a sub-second run, and
# picked no better on synthetic 1-D searches. The paper variant fits from the start (golden
# test).
BUDGET_FIT_MIN_OBS = 6


def _default_searcher(
    lo: float, hi: float, seed: int | None, variant: str, **changes: Any
) -> Searcher:
    """The variant's default searcher; ``changes`` override its ``GPSearcher`` arguments
    (the ``autolrs`` study's ablations)."""
    # The budget variant's first search has only a few candidates: a stratified start
    # (the box's middle, then its quarter points) covers the box evenly.
    budget = variant == "budget"
    settings = {
        "design": "stratified" if budget else "sobol",
        "fit_min_obs": BUDGET_FIT_MIN_OBS if budget else 0,
        # Window scores are losses: the GP models their logarithm (the `gp-raw` ablation;
        # the paper variant keeps raw forecasts, bit for bit).
        "log_values": budget,
        **changes,
    }
    return GPSearcher([Param("lr", lo, hi, log=True)], seed=seed, **settings)
