"""The AutoLRS stage search: every decision, no execution.

One stage: propose k candidate LRs, each is trained τ' steps from the same starting state (by
whoever executes the search: the in-loop tuner with snapshots, or a Ray scheduler with
checkpoints), each candidate's losses are forecast to step τ, the lowest forecast wins, the
winner trains the stage, and τ/τ' grow. This object holds that logic so both executors share it.
It knows nothing about models, optimizers or frameworks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autolr.predictors import ExponentialPredictor, Forecast, Predictor
from autolr.searchers import GPSearcher, Param, Searcher

from .._errors import ConfigError, StateError

__all__ = ["CandidateResult", "StageSearch"]


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


class StageSearch:
    """Stage-by-stage LR search of AutoLRS (Jin et al., ICLR 2021), independent of execution.

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

    Raises:
        ConfigError: On invalid bounds or step counts.

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
    ) -> None:
        lo, hi = _check_bounds(lr_bounds)
        tau_prime = max(1, tau // 10) if tau_prime is None else tau_prime
        for name, val in (("tau", tau), ("tau_prime", tau_prime), ("k", k), ("tau_max", tau_max)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {val!r}")
        if tau_prime >= tau:
            raise ConfigError(
                f"tau_prime must be smaller than tau (candidates are short trials of a stage), "
                f"got tau_prime={tau_prime}, tau={tau}"
            )
        if tau_max < tau:
            raise ConfigError(f"tau_max must be >= tau, got tau_max={tau_max}, tau={tau}")
        self.tau = tau
        self.tau_prime = tau_prime
        self.k = k
        self.tau_max = tau_max
        self.double = bool(double)
        self.searcher = searcher if searcher is not None else _default_searcher(lo, hi, seed)
        if [p.name for p in self.searcher.params] != ["lr"]:
            raise ConfigError(
                "searcher must search exactly one parameter named 'lr', got "
                f"{[p.name for p in self.searcher.params]}"
            )
        # The searcher's box is the one source of truth for the bounds (see lr_bounds).
        if self.searcher.bounds["lr"] != (lo, hi):
            self.searcher.set_bounds("lr", lo, hi)
        self.predictor = predictor if predictor is not None else ExponentialPredictor()
        self.stage = 0
        self.results: list[CandidateResult] = []

    # ------------------------------------------------------------------ stage flow
    def begin_stage(self) -> None:
        """Start the search of a new stage (forget the previous stage's candidates)."""
        self.results = []
        self.searcher.reset()

    @property
    def lr_bounds(self) -> tuple[float, float]:
        """The current LR search box (lowered after divergence by :meth:`lower_upper_bound`)."""
        return self.searcher.bounds["lr"]

    def propose(self, n: int = 1, *, pending: Sequence[float] = ()) -> list[float]:
        """Propose ``n`` new candidate LRs, given LRs still being tried (``pending``)."""
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
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
        if penalised:
            # The searcher turns a non-finite value into a finite penalty worse than anything
            # seen, so the GP learns "avoid this region" without being poisoned.
            self.searcher.observe({"lr": lr}, math.inf)
            result = CandidateResult(lr, math.inf, 0.0, True, reason or "penalised", n)
        else:
            fc: Forecast = self.predictor.forecast(vals, self.target_step, steps=steps)
            if math.isfinite(fc.value):
                self.searcher.observe({"lr": lr}, fc.value, noise=max(fc.std, 0.0))
                result = CandidateResult(lr, fc.value, fc.std, False, fc.reason, n)
            else:
                self.searcher.observe({"lr": lr}, math.inf)
                result = CandidateResult(lr, math.inf, 0.0, True, fc.reason or "no forecast", n)
        self.results.append(result)
        return result

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
        """Close the stage: count it and grow τ, τ' (paper rule: double while τ' < τ_max/10)."""
        self.stage += 1
        if self._grows():
            self.tau *= 2
            self.tau_prime *= 2

    def _grows(self) -> bool:
        return self.double and self.tau_prime < self.tau_max / 10 and self.tau * 2 <= self.tau_max

    @property
    def next_tau_prime(self) -> int:
        """τ' of the next stage, i.e. after :meth:`end_stage` (lets executors plan the end)."""
        return self.tau_prime * 2 if self._grows() else self.tau_prime

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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        try:
            lo, hi = (float(v) for v in state["lr_bounds"])
            self.tau = int(state["tau"])
            self.tau_prime = int(state["tau_prime"])
            self.stage = int(state["stage"])
            results = [CandidateResult(**r) for r in state["results"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"not a StageSearch state_dict: {exc}") from exc
        # Bounds are configuration for the searcher, so they go back before its state.
        self.searcher.set_bounds("lr", lo, hi)
        self.searcher.load_state_dict(state["searcher"])
        self.predictor.load_state_dict(state["predictor"])
        self.results = results


def _check_bounds(bounds: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lr_bounds must be a pair (low, high), got {bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        raise ConfigError(f"lr_bounds must satisfy 0 < low < high (finite), got {bounds!r}")
    return lo, hi


def _default_searcher(lo: float, hi: float, seed: int | None) -> Searcher:
    return GPSearcher([Param("lr", lo, hi, log=True)], seed=seed)
