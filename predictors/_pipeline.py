"""Forecasting a run's final value from its partial curve: forecast -> calibrate -> adjust.

One pipeline for every caller that judges an unfinished run by where its curve is heading
(the Optuna sampler feeds the forecasts to its GP, the Optuna pruner stops runs with them):

1. :func:`forecast_final` extrapolates ``{step: value}`` to the final step with a
   :class:`~autolr.predictors.Predictor`;
2. :func:`calibrate` measures the error the same forecast (from as many values) makes on
   finished reference runs;
3. :func:`adjust` applies that correction, or, without enough references, widens the std by
   a fraction of the extrapolated change.

:func:`forecast_run` chains the three. With ``same_step_refs`` it then prefers
:func:`regress_final` once that many references reported the curve's last step: their finals
regressed on their values at that step rank unfinished runs far better than any curve fit
(`benchmarks/results/optuna/pruning_screen.md`). Nothing here keeps state beyond a
:class:`ForecastCache` of forecasts of *finished* curves, which can no longer change.

Example:
    >>> from autolr.predictors import ExponentialPredictor, forecast_run
    >>> curve = {s: 1.0 + 2.0 * 0.7**s for s in range(8)}
    >>> fc = forecast_run(curve, 40, ExponentialPredictor(), extrapolation_std=0.5, min_points=5)
    >>> round(fc.value, 3), fc.last_step
    (1.0, 7)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from autolr._stats import std_dev

from ._base import Predictor

# Forecasts of finished runs kept per cache (a finished run's curve is immutable).
_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class FinalForecast:
    """Forecast of a run's objective at the final step, in the objective's own units.

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


class ReferenceRun(NamedTuple):
    """A finished run that calibrates forecasts (see :func:`calibrate`).

    Attributes:
        key: Identifies the run in a :class:`ForecastCache` (e.g. ``(study_id, trial_id)``).
        curve: Its ``{step: value}`` intermediate values.
        value: Its final objective value (``None`` or non-finite: not a reference).
    """

    key: Hashable
    curve: Mapping[int, float]
    value: float | None


class ForecastCache:
    """Thread-safe LRU of what finished runs give (forecasts, calibration errors, same-step
    fits), keyed by everything each depends on.

    Example:
        >>> cache = ForecastCache(size=1)
        >>> cache.put(("a",), None); cache.get(("a",)), cache.get(("b",))
        ((True, None), (False, None))
    """

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[bool, Any]:
        """``(hit, value)`` for ``key``; a hit becomes the most recently used entry."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return True, self._data[key]
        return False, None

    def put(self, key: tuple, value: Any) -> None:
        """Stores ``value``, dropping the least recently used entries beyond ``size``."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        """Forgets every entry."""
        with self._lock:
            self._data.clear()


def final_step(curves: Iterable[Mapping[int, float]], n_steps: int | None) -> int | None:
    """The step a finished run reports last: ``n_steps``, or the largest last step of
    ``curves`` (``None`` when none of them reported anything).

    Example:
        >>> final_step([{0: 1.0, 9: 0.5}, {0: 1.0, 4: 0.7}, {}], None)
        9
    """
    if n_steps is not None:
        return n_steps
    best: int | None = None
    for curve in curves:
        if curve:
            last = max(curve)
            best = last if best is None else max(best, last)
    return best


def forecast_final(
    curve: Mapping[int, float],
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
    if not curve:
        return None
    steps = sorted(curve)
    last_step = steps[-1]
    last_value = float(curve[last_step])
    if not math.isfinite(last_value):
        return FinalForecast(math.nan, 0.0, last_step, last_value, True, True)
    values = [float(curve[s]) for s in steps]
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
    references: Iterable[ReferenceRun],
    n_points: int,
    target: int,
    predictor: Predictor,
    cache: ForecastCache,
    *,
    min_points: int,
    min_runs: int = 3,
) -> tuple[float, float] | None:
    """Forecast error on finished reference runs, truncated to ``n_points`` values.

    For every reference that reported more than ``n_points`` values and reached ``target``,
    its first ``n_points`` values are forecast to ``target`` and compared with its final
    value. Returns ``(bias, spread)``: the median error (final minus forecast; corrects e.g.
    the late drop of a decaying LR schedule, or an objective that is not the last reported
    value) and the root-mean-square deviation from it. ``None`` with fewer than ``min_runs``
    such references. Errors are cached under the references' keys.
    """
    errors = []
    for ref in references:
        curve = ref.curve
        if ref.value is None or not math.isfinite(ref.value) or len(curve) <= n_points:
            continue
        steps = sorted(curve)
        if steps[-1] < target:
            continue
        key = ("calibration", ref.key, n_points, target)
        hit, err = cache.get(key)
        if not hit:
            head = {s: curve[s] for s in steps[:n_points]}
            fc = forecast_final(
                head, target, predictor, extrapolation_std=0.0, min_points=min_points
            )
            err = None
            if fc is not None and not fc.diverged and math.isfinite(fc.value):
                err = FinalForecast(float(ref.value) - fc.value, 0.0, 0, 0.0, False, False)
            cache.put(key, err)
        if err is not None:
            errors.append(err.value)
    if len(errors) < min_runs:
        return None
    errors.sort()
    mid = len(errors) // 2
    bias = errors[mid] if len(errors) % 2 else 0.5 * (errors[mid - 1] + errors[mid])
    spread = std_dev(errors, bias, len(errors))  # raw errors: may pass the squares' range
    return bias, spread


class _SameStepFit(NamedTuple):
    """Least-squares line ``log(final) = a + b·log(value)`` over ``n`` references."""

    n: int
    xm: float
    sxx: float
    a: float
    b: float
    s: float


def _fit_same_step(
    references: Iterable[ReferenceRun], step: int, target: int
) -> _SameStepFit | None:
    """The line through the references that reported ``step`` and reached ``target``."""
    pts = []
    for ref in references:
        if ref.value is None or not math.isfinite(ref.value) or ref.value <= 0:
            continue
        if step not in ref.curve or max(ref.curve) < target:
            continue
        rv = float(ref.curve[step])
        if not math.isfinite(rv) or rv <= 0:
            continue
        pts.append((math.log(rv), math.log(float(ref.value))))
    n = len(pts)
    if n == 0:
        return None
    xm = sum(p[0] for p in pts) / n
    ym = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - xm) ** 2 for p in pts)
    if sxx <= 0:  # every reference at the same value: no slope to fit
        return None
    b = sum((p[0] - xm) * (p[1] - ym) for p in pts) / sxx
    a = ym - b * xm
    s = math.sqrt(sum((p[1] - a - b * p[0]) ** 2 for p in pts) / max(1, n - 2))
    return _SameStepFit(n, xm, sxx, a, b, s)


def regress_final(
    curve: Mapping[int, float],
    target: int,
    references: Iterable[ReferenceRun],
    *,
    min_runs: int,
    cache: ForecastCache | None = None,
) -> FinalForecast | None:
    """Forecasts the final value from finished runs' values at the curve's last step.

    Over the references that reported the curve's last step and reached ``target``, fits
    ``log(final) = a + b·log(value at that step)`` by least squares and evaluates it at the
    curve's last value. The std is the prediction error of the regression (residual std,
    leverage included), relative to the forecast. ``None`` with fewer than ``min_runs`` such
    references, when the curve already reached ``target``, or when a value involved is not
    positive (the fit is on logarithms, as for losses). With ``cache``, the fit is kept
    under the references' keys (finished runs: their curves no longer change), so the many
    unfinished runs stopped at one step share it.

    Example:
        >>> refs = [ReferenceRun(i, {0: 2.0 * v, 9: v}, v) for i, v in enumerate([1.0, 2.0, 4.0])]
        >>> round(regress_final({0: 6.0}, 9, refs, min_runs=3).value, 6)
        3.0
    """
    if not curve:
        return None
    last = max(curve)
    v = float(curve[last])
    if not math.isfinite(v) or v <= 0 or last >= target:
        return None
    if cache is None:
        fit = _fit_same_step(references, last, target)
    else:
        refs = references if isinstance(references, (list, tuple)) else list(references)
        key = ("same-step", tuple(ref.key for ref in refs), last, target)
        hit, fit = cache.get(key)
        if not hit:
            fit = _fit_same_step(refs, last, target)
            cache.put(key, fit)
    if fit is None or fit.n < min_runs:
        return None
    x0 = math.log(v)
    se = fit.s * math.sqrt(1 + 1 / fit.n + (x0 - fit.xm) ** 2 / fit.sxx)
    value = math.exp(fit.a + fit.b * x0)
    return FinalForecast(value, value * se, last, v, False, False)


def forecast_run(
    curve: Mapping[int, float],
    target: int,
    predictor: Predictor,
    *,
    extrapolation_std: float,
    min_points: int,
    references: Iterable[ReferenceRun] | None = None,
    cache: ForecastCache | None = None,
    key: Hashable | None = None,
    same_step_refs: int | None = None,
) -> FinalForecast | None:
    """The whole pipeline: :func:`forecast_final`, then :func:`calibrate`, then :func:`adjust`.

    With ``same_step_refs`` and references, :func:`regress_final` replaces the calibrated
    forecast once at least ``same_step_refs`` references qualify for it (a curve too short
    or diverged for :func:`forecast_final` stays ``None`` or diverged).

    Args:
        curve: The run's ``{step: value}`` so far.
        target: Final step to forecast.
        predictor: Curve forecaster.
        extrapolation_std: Noise per unit of extrapolated change while uncalibrated.
        min_points: Fewest finite values a forecast needs.
        references: Finished runs that calibrate the forecast; ``None`` never calibrates.
        cache: Caches calibration errors and, with ``key``, the raw forecast (a fresh
            cache when ``None``).
        key: Identifies ``curve`` when it can no longer change (a finished run), so its
            raw forecast is cached; ``None`` for a running one.
        same_step_refs: Fewest references for the same-step regression (``>= 3``);
            ``None`` never regresses.

    Returns:
        The forecast, a ``diverged`` one when the last value is non-finite, or ``None``
        when the curve is too short to forecast.
    """
    if cache is None:
        cache = ForecastCache()
    raw_key = None if key is None or not curve else ("raw", key, len(curve), max(curve), target)
    hit = False
    if raw_key is not None:
        hit, raw = cache.get(raw_key)
    if not hit:
        raw = forecast_final(curve, target, predictor, extrapolation_std=0.0, min_points=min_points)
        if raw_key is not None:
            cache.put(raw_key, raw)
    if raw is None or raw.diverged:
        return raw
    calibration = None
    if references is not None:
        if same_step_refs is not None:
            if not isinstance(references, (list, tuple)):
                references = list(references)  # an iterator would be spent by the regression
            regressed = regress_final(
                curve, target, references, min_runs=same_step_refs, cache=cache
            )
            if regressed is not None:
                return regressed
        calibration = calibrate(
            references, len(curve), target, predictor, cache, min_points=min_points
        )
    return adjust(raw, calibration, extrapolation_std)
