"""Forecasting an Optuna trial's final value from its intermediate values (shared helpers).

Used by :class:`~autolr.integrations.optuna.AutoLRSSampler` (forecasts enter the GP) and
:class:`~autolr.integrations.optuna.ForecastPruner` (forecasts decide pruning). Nothing here
keeps state beyond an in-memory cache of forecasts of *finished* trials, whose curves can no
longer change; everything else is recomputed from the storage on each call.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from autolr._errors import ConfigError, ConfigTypeError
from autolr.predictors import ExponentialPredictor, Predictor

__all__ = [
    "FinalForecast",
    "ForecastCache",
    "adjust",
    "calibrate",
    "check_n_steps",
    "final_step",
    "forecast_final",
]

# Forecasts of finished trials kept per process (a trial's curve is immutable once finished).
_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class FinalForecast:
    """Forecast of a trial's objective at the final step, in the objective's own units.

    Attributes:
        value: Forecast objective at the final step (``nan`` when the curve diverged).
        std: Uncertainty of ``value``: the predictor's std combined with the extrapolation
            error term (a fraction of the distance between the last value and the forecast).
        last_step: Last reported step.
        last_value: Value reported at ``last_step``.
        degenerate: The predictor did not trust its fit (fallback: smoothed last value).
        diverged: The last reported value is non-finite.
    """

    value: float
    std: float
    last_step: int
    last_value: float
    degenerate: bool
    diverged: bool


def check_n_steps(n_steps: Any) -> int | None:
    """Validates the ``n_steps`` argument (final step of a trial, or ``None`` to infer it)."""
    if n_steps is None:
        return None
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise ConfigTypeError(f"n_steps must be an int or None, got {n_steps!r}")
    if n_steps < 1:
        raise ConfigError(f"n_steps must be >= 1, got {n_steps!r}")
    return n_steps


def check_predictor(predictor: Any) -> Predictor:
    """The predictor to use (``ExponentialPredictor()`` by default)."""
    if predictor is None:
        return ExponentialPredictor()
    if not isinstance(predictor, Predictor):
        raise ConfigTypeError(
            f"predictor must be an autolr.predictors.Predictor, got {type(predictor).__name__}"
        )
    return predictor


def check_fraction(x: Any, name: str, *, low: float = 0.0, high: float = math.inf) -> float:
    """A finite float in ``[low, high]`` or a ConfigError naming ``name``."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ConfigTypeError(f"{name} must be a number, got {x!r}")
    x = float(x)
    if not (math.isfinite(x) and low <= x <= high):
        raise ConfigError(f"{name} must be in [{low}, {high}], got {x!r}")
    return x


def final_step(trials: Any, n_steps: int | None) -> int | None:
    """The step a finished trial reports last: ``n_steps`` or the largest last step reported
    by a COMPLETE trial (``None`` when no complete trial reported anything)."""
    if n_steps is not None:
        return n_steps
    best: int | None = None
    for t in trials:
        if t.intermediate_values:
            last = max(t.intermediate_values)
            best = last if best is None else max(best, last)
    return best


def forecast_final(
    intermediate: dict[int, float],
    target: int,
    predictor: Predictor,
    *,
    extrapolation_std: float,
    min_points: int,
) -> FinalForecast | None:
    """Forecasts the value at ``target`` from ``{step: value}``; ``None`` if unusable.

    ``None`` when there are fewer than ``min_points`` finite values (and the curve did not
    diverge). A curve whose last value is non-finite is reported as ``diverged``. The std
    combines the predictor's std with ``extrapolation_std`` x the extrapolated change.
    """
    if not intermediate:
        return None
    steps = sorted(intermediate)
    last_step = steps[-1]
    last_value = float(intermediate[last_step])
    if not math.isfinite(last_value):
        return FinalForecast(math.nan, 0.0, last_step, last_value, True, True)
    values = [float(intermediate[s]) for s in steps]
    n_finite = sum(math.isfinite(v) for v in values)
    if n_finite < min_points:
        return None
    if last_step >= target:  # nothing to extrapolate
        fc_value, fc_std, degenerate = last_value, 0.0, False
    else:
        fc = predictor.forecast(values, float(target), steps=[float(s) for s in steps])
        if not math.isfinite(fc.value):
            return None
        fc_value, fc_std, degenerate = fc.value, fc.std, fc.degenerate
    std = math.hypot(fc_std, extrapolation_std * abs(fc_value - last_value))
    return FinalForecast(fc_value, std, last_step, last_value, degenerate, False)


def adjust(
    raw: FinalForecast | None,
    calibration: tuple[float, float] | None,
    extrapolation_std: float,
) -> FinalForecast | None:
    """Applies a calibration (or the extrapolation rule) to a raw forecast (see
    :func:`forecast_final`; raw = ``extrapolation_std=0`` and no calibration)."""
    if raw is None or raw.diverged:
        return raw
    if calibration is not None:
        bias, spread = calibration
        return replace(raw, value=raw.value + bias, std=math.hypot(raw.std, spread))
    extra = extrapolation_std * abs(raw.value - raw.last_value)
    return replace(raw, std=math.hypot(raw.std, extra))


def calibrate(
    study_id: int,
    complete: Any,
    n_points: int,
    target: int,
    predictor: Predictor,
    cache: ForecastCache,
    *,
    min_points: int,
    min_trials: int = 3,
) -> tuple[float, float] | None:
    """Forecast error of this study's own complete trials, truncated to ``n_points`` values.

    For every COMPLETE trial that reported more than ``n_points`` values and reached
    ``target``, its first ``n_points`` values are forecast to ``target`` and compared with the
    trial's objective value. Returns ``(bias, spread)``: the median error (objective minus
    forecast; corrects e.g. the late drop of a decaying LR schedule, or an objective that is
    not the last reported value) and the root-mean-square deviation from it. ``None`` with
    fewer than ``min_trials`` such trials. Errors of finished trials are cached.
    """
    errors = []
    for t in complete:
        iv = t.intermediate_values
        if t.value is None or not math.isfinite(t.value) or len(iv) <= n_points:
            continue
        steps = sorted(iv)
        if steps[-1] < target:
            continue
        key = ("calibration", study_id, t._trial_id, n_points, target)
        hit, err = cache.get(key)
        if not hit:
            head = {s: iv[s] for s in steps[:n_points]}
            fc = forecast_final(
                head, target, predictor, extrapolation_std=0.0, min_points=min_points
            )
            err = None
            if fc is not None and not fc.diverged and math.isfinite(fc.value):
                err = FinalForecast(float(t.value) - fc.value, 0.0, 0, 0.0, False, False)
            cache.put(key, err)
        if err is not None:
            errors.append(err.value)
    if len(errors) < min_trials:
        return None
    errors.sort()
    mid = len(errors) // 2
    bias = errors[mid] if len(errors) % 2 else 0.5 * (errors[mid - 1] + errors[mid])
    spread = math.sqrt(sum((e - bias) ** 2 for e in errors) / len(errors))
    return bias, spread


class ForecastCache:
    """Thread-safe LRU of forecasts of finished trials, keyed by everything they depend on."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._data: OrderedDict[tuple, FinalForecast | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[bool, FinalForecast | None]:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return True, self._data[key]
        return False, None

    def put(self, key: tuple, value: FinalForecast | None) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
