"""ForecastPruner: prunes a trial whose forecast final value is worse than the best."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist
from typing import TYPE_CHECKING

from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from autolr._errors import ConfigError
from autolr._validate import check_float, check_int
from autolr.predictors import ForecastCache, Predictor, final_step, forecast_run

from ._common import (
    _check_single_objective,
    _references,
    _sign,
    optional_same_step_refs,
    optional_steps,
    past_steps_message,
    predictor_or_default,
)

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["ForecastPruner"]


class ForecastPruner(BasePruner):
    """Prunes a trial whose forecast final value is worse than the best with confidence.

    At each ``should_prune()`` the trial's intermediate values are extrapolated to the final
    step (``n_steps``, or the last step reported by complete trials) with ``predictor``.
    The trial is pruned when ``P(final better than best complete value) < 1 - confidence``
    under a normal forecast. With ``calibrate_forecasts`` and at least 3 complete trials
    that reached the final step, the forecast is shifted by the median error the same
    forecast (from as many values) makes on those trials and its std combines the
    predictor's std with the RMS of the errors; otherwise the std combines the predictor's
    std with ``extrapolation_std`` × (forecast − last value). A trial whose last reported value is
    NaN/inf (diverged) is pruned at once. Nothing is pruned before ``n_startup_trials``
    trials are complete, before step ``n_warmup_steps``, or with fewer than ``min_points``
    finite values. With ``same_step_refs`` (default 6), once that many complete trials
    reported the trial's last step and the final step, the forecast is instead the
    regression of their final values on their values at that step (in logs; std from the
    regression's residuals, :func:`~autolr.predictors.regress_final`).

    Args:
        n_steps: Final step of a complete trial; ``None`` infers it from complete trials.
        confidence: Required confidence that the trial ends worse than the best, in
            ``(0.5, 1)``.
        n_startup_trials: Complete trials needed before anything is pruned (``>= 1``).
        n_warmup_steps: No pruning before this step (below ``n_steps``: else nothing is
            ever pruned, a ``ConfigError``).
        min_points: Fewest finite intermediate values a decision needs (``>= 2``; complete
            trials with fewer before their final step are said once: such trials are never
            pruned).
        extrapolation_std: Forecast noise per unit of extrapolated change (``>= 0``) while
            uncalibrated; larger values prune later.
        calibrate_forecasts: Correct forecasts with their errors on the complete trials
            (``False`` also turns off the same-step regression: both learn from them).
        predictor: Curve forecaster (default :class:`~autolr.predictors.ExponentialPredictor`).
        same_step_refs: Complete trials at a step needed before the same-step regression
            replaces the curve forecast there (``>= 3``; ``None``: never).

    Raises:
        ConfigError, ConfigTypeError: On invalid arguments.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> pruner = ForecastPruner(n_steps=9, n_startup_trials=1, confidence=0.9)
        >>> study = optuna.create_study(pruner=pruner)
        >>> def objective(trial):
        ...     rate = trial.suggest_float("rate", 0.0, 1.0)
        ...     for step in range(10):
        ...         trial.report(1.0 + (1 - rate) ** (step + 1), step)
        ...         if trial.should_prune():
        ...             raise optuna.TrialPruned()
        ...     return 1.0 + (1 - rate) ** 10
        >>> study.enqueue_trial({"rate": 0.9}); study.enqueue_trial({"rate": 0.01})
        >>> study.optimize(objective, n_trials=2)
        >>> study.trials[1].state.name
        'PRUNED'
    """

    def __init__(
        self,
        *,
        n_steps: int | None = None,
        confidence: float = 0.95,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 0,
        min_points: int = 5,
        extrapolation_std: float = 0.5,
        calibrate_forecasts: bool = True,
        predictor: Predictor | None = None,
        same_step_refs: int | None = 6,
    ) -> None:
        self._n_steps = optional_steps(n_steps)
        self._same_step_refs = optional_same_step_refs(same_step_refs)
        self._calibrate = bool(calibrate_forecasts)
        self._cache = ForecastCache()
        self._warned_steps = False  # a report past n_steps is said once
        self._confidence = check_float(
            "confidence",
            confidence,
            minimum=0.5,
            maximum=1.0,
            min_inclusive=False,
            max_inclusive=False,
        )
        self._z = NormalDist().inv_cdf(self._confidence)
        self._n_startup_trials = check_int("n_startup_trials", n_startup_trials, minimum=1)
        self._n_warmup_steps = check_int("n_warmup_steps", n_warmup_steps, minimum=0)
        if self._n_steps is not None and self._n_warmup_steps >= self._n_steps:
            raise ConfigError(
                f"n_warmup_steps={self._n_warmup_steps} is not below n_steps={self._n_steps}: "
                "ForecastPruner would never prune; lower n_warmup_steps (optuna's NopPruner "
                "prunes nothing, if that is the intent)"
            )
        self._min_points = check_int("min_points", min_points, minimum=2)
        self._checked_points = 0  # complete trials checked against min_points (said once)
        self._extrapolation_std = check_float("extrapolation_std", extrapolation_std, minimum=0.0)
        self._predictor = predictor_or_default(predictor)

    def __repr__(self) -> str:
        return (
            f"ForecastPruner(n_steps={self._n_steps}, confidence={self._confidence}, "
            f"n_startup_trials={self._n_startup_trials}, n_warmup_steps={self._n_warmup_steps})"
        )

    def _check_points(self, complete: list[FrozenTrial], target: int) -> None:
        """Warn once if whole trials report fewer than ``min_points`` values (never pruned)."""
        for t in complete[self._checked_points :]:
            values = t.intermediate_values
            before = sum(1 for step in values if step < target)
            if values and max(values) >= target and before < self._min_points:
                self._checked_points = -1  # said
                warnings.warn(
                    f"ForecastPruner(min_points={self._min_points}): trial {t.number} reported "
                    f"only {before} values before its final step {target}, so a trial like it "
                    "is never pruned (a decision needs min_points of them); lower min_points "
                    "or report more often",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return
        self._checked_points = len(complete)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` should stop now (see the class docstring)."""
        _check_single_objective(study, type(self).__name__)
        values = trial.intermediate_values
        if not values:
            return False
        last_step = max(values)
        if self._n_steps is not None and last_step > self._n_steps and not self._warned_steps:
            self._warned_steps = True
            warnings.warn(
                past_steps_message(
                    type(self).__name__,
                    self._n_steps,
                    last_step,
                    trial.number,
                    f"its forecasts aim at step {self._n_steps} and it prunes nothing past it",
                ),
                RuntimeWarning,
                stacklevel=2,
            )
        if not math.isfinite(float(values[last_step])):
            return True  # diverged: nothing useful can come of it
        if last_step < self._n_warmup_steps:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        finite = [float(t.value) for t in complete if t.value is not None]
        finite = [v for v in finite if math.isfinite(v)]
        if len(finite) < self._n_startup_trials:
            return False
        target = final_step((t.intermediate_values for t in complete), self._n_steps)
        if target is None or last_step >= target:
            return False
        if self._checked_points >= 0 and len(complete) > self._checked_points:
            self._check_points(complete, target)
        fc = forecast_run(
            values,
            target,
            self._predictor,
            extrapolation_std=self._extrapolation_std,
            min_points=self._min_points,
            references=_references(study, complete) if self._calibrate else None,
            cache=self._cache,
            same_step_refs=self._same_step_refs,
        )
        if fc is None:
            return False
        sign = _sign(study)
        best = min(sign * v for v in finite)
        gap = sign * fc.value - best  # > 0: forecast worse than the best
        return gap > self._z * max(fc.std, 1e-12 * max(1.0, abs(best)))
