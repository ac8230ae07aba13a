"""Exponential-decay loss forecaster ``L(t) = a·exp(−b·t) + c`` (AutoLRS, ICLR 2021).

The fit is robust and bounded where the original AutoLRS forecaster was not:

* non-finite values are dropped and a few outliers trimmed (running-median screen, then
  residuals of the fitted curve, at most ``trim`` of the points);
* ``(a, c)`` are solved by linear least squares for each decay rate ``b`` (variable
  projection), ``b`` is searched on a log grid scaled to the window and refined by bounded
  scalar minimisation, so a near-linear series meets the linear limit instead of a singular
  design;
* the forecast is clamped so the loss cannot fall further after the window than it fell
  during it (``max_drop``), nor below zero when every observed loss is ``>= 0``;
* nothing in the data makes it raise: too few points, constant, NaN/inf, increasing, huge
  or negative values give a (possibly degenerate) :class:`~autolr.predictors.Forecast`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autolr._errors import ConfigError, StateError
from autolr._validate import check_float, check_int

from ._base import Forecast, Predictor, to_float_array

__all__ = ["ExponentialPredictor"]

# Decay rates searched, as beta = b·span (span: last step − first step of the window):
# log grid from _BETA_MIN to max(_BETA_MAX, _STEP_DECAY / smallest step gap) (so a drop
# within a single step can be represented), _GRID_PER_DECADE points per decade.
_BETA_MIN = 1e-3
_BETA_MAX = 50.0
_STEP_DECAY = 20.0
_BETA_CAP = 1e5
_GRID_PER_DECADE = 10
_LOG_BETA_TOL = 1e-9  # xatol of the refinement, in log(beta)
_RANK_TOL = 1e-24  # sum of squares of the centred exp column below which it counts as zero
_MAD_TO_STD = 1.482602218505602
_MEAN_AD_TO_STD = 1.2533141373155001  # sqrt(pi / 2)
_RESID_FLOOR = 1e-10  # smallest outlier scale, in units of the (normalised) value range
_MAX_FIT_ROUNDS = 4  # fit / trim / refit rounds
_FLAT_CHI2 = 9.0  # the curve must beat a constant by this many noise variances
_UNKNOWN_REL_STD = 0.1  # std of a one-point forecast, relative to |value|
# Kept points all within this fraction of the normalisation scale (set by trimmed spikes):
# their residuals' squares approach float underflow, so they are normalised again.
_RENORMALISE_BELOW = 1e-100


@dataclass
class _Fit:
    """Fit on normalised data: ``y ≈ off + amp·expm1(−beta·u)`` with ``u`` in [0, 1]."""

    beta: float
    amp: float
    off: float
    sse: float
    grid_beta: np.ndarray
    grid_amp: np.ndarray
    grid_off: np.ndarray
    grid_sse: np.ndarray


class ExponentialPredictor(Predictor):
    """Forecast a loss curve by fitting ``L(t) = a·exp(−b·t) + c`` with ``b > 0``.

    ``a`` may be negative (a rising curve that saturates). The forecast is clamped to
    ``[lower, upper]``, where with ``first``/``last`` the smoothed (local linear) levels at
    the ends of the window and ``drop = first − last``:

    * falling window: ``lower = last − max_drop·drop``, ``upper = first + max_drop·noise``;
    * rising window (symmetric): ``lower = first − max_drop·noise``,
      ``upper = last + max_drop·(−drop)``;
    * ``lower >= 0`` when every observed value is ``>= 0``.

    Clamping adds ``"forecast clamped"`` to :attr:`Forecast.reason` but is not degenerate.
    Degenerate cases (fewer than ``min_points`` finite values, all at one step, no trend
    distinguishable from the noise, failed fit) return the smoothed last value with the
    standard deviation of the recent points as ``std``. A series without any finite value
    returns ``value=math.inf`` (the only non-finite value ever returned: treat it as
    "penalise"), ``std=0.0``.

    ``std`` is the uncertainty of the forecast value: the larger of the delta-method
    standard error of the fit and half the spread of the (clamped) forecasts over the decay
    rates whose residual sum of squares is within one noise variance of the best;
    a clamped forecast adds the distance it was moved; ``std`` never exceeds half the clamp
    interval. Results are deterministic (no randomness).

    ``params`` are ``(a, b, c)`` with ``L(t) = a·exp(−b·(t − t0)) + c``, where ``t0`` is
    the smallest finite step (``0`` with the default ``steps``).

    Args:
        max_drop: How far below the last smoothed level the forecast may go, as a multiple
            of the drop observed over the window (``0`` forbids any further decrease).
        trim: Largest fraction of the points dropped as outliers, in ``[0, 0.5)``.
        min_points: Fewest finite points needed for a fit (``>= 4``).
        outlier_k: A point is an outlier when its residual exceeds ``outlier_k`` robust
            standard deviations (MAD based).

    Example:
        >>> import numpy as np
        >>> t = np.arange(100)
        >>> p = ExponentialPredictor()
        >>> fc = p.forecast(1.0 * np.exp(-0.03 * t) + 0.5, target=1000)
        >>> round(fc.value, 4), fc.degenerate
        (0.5, False)
    """

    def __init__(
        self,
        *,
        max_drop: float = 1.0,
        trim: float = 0.05,
        min_points: int = 5,
        outlier_k: float = 5.0,
    ) -> None:
        self.max_drop = _CHECKS["max_drop"](max_drop)
        self.trim = _CHECKS["trim"](trim)
        self.min_points = int(_CHECKS["min_points"](min_points))
        self.outlier_k = _CHECKS["outlier_k"](outlier_k)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_drop={self.max_drop!r}, trim={self.trim!r}, "
            f"min_points={self.min_points!r}, outlier_k={self.outlier_k!r})"
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Configuration as plain Python types.

        Example:
            >>> ExponentialPredictor(max_drop=0.5).state_dict()["max_drop"]
            0.5
        """
        return {
            "max_drop": self.max_drop,
            "trim": self.trim,
            "min_points": self.min_points,
            "outlier_k": self.outlier_k,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the configuration returned by :meth:`state_dict` (missing keys kept).

        Raises:
            StateError: On unknown keys or invalid values (nothing is changed then).
        """
        if not isinstance(state, Mapping):
            raise StateError(f"state must be a mapping, got {type(state).__name__}")
        checks = _CHECKS
        unknown = sorted(set(state) - set(checks))
        if unknown:
            raise StateError(
                f"unknown ExponentialPredictor state keys {unknown}; allowed {sorted(checks)}"
            )
        try:
            new = {k: checks[k](v) for k, v in state.items()}
        except ConfigError as exc:
            raise StateError(f"invalid ExponentialPredictor state: {exc}") from exc
        for k, v in new.items():
            setattr(self, k, v)

    # --------------------------------------------------------------- forecast
    def forecast(
        self,
        values: Sequence[float] | Any,
        target: float,
        *,
        steps: Sequence[float] | Any | None = None,
    ) -> Forecast:
        """Forecast the loss at step ``target``.

        Args:
            values: 1-D losses (list, numpy array or torch tensor); NaN/inf allowed.
            target: Step to forecast, in the units of ``steps`` (usually past the last).
            steps: Step of each value (default ``0..n-1``); non-uniform allowed, unsorted
                steps are sorted, points with a non-finite step are dropped.

        Returns:
            The :class:`~autolr.predictors.Forecast`.

        Raises:
            ConfigError: Only for malformed arguments (``values`` not 1-D numbers,
                ``steps`` of another length, non-finite ``target``), never for bad data.

        Example:
            >>> fc = ExponentialPredictor().forecast([2.0, 1.5, 1.2, 1.05, 1.0], target=50)
            >>> 0.8 < fc.value < 1.0
            True
        """
        y = to_float_array(values, "values")
        if steps is None:
            t = np.arange(y.size, dtype=float)
        else:
            t = to_float_array(steps, "steps")
            if t.size != y.size:
                raise ConfigError(
                    f"steps must have the same length as values ({y.size}), got {t.size}"
                )
        target = check_float("target", target)

        notes: list[str] = []
        finite_t = np.isfinite(t)
        t0 = float(t[finite_t].min()) if finite_t.any() else 0.0
        ok = np.isfinite(y) & finite_t
        n_bad = int(y.size - ok.sum())
        if n_bad:
            notes.append(f"dropped {n_bad} non-finite value{'s' if n_bad > 1 else ''}")
        y, t = y[ok], t[ok]
        order = np.argsort(t, kind="stable")
        y, t = y[order], t[order]
        n = int(y.size)

        if n == 0:
            return Forecast(math.inf, 0.0, True, _join(notes, "no finite values"), None, 0)
        if n < self.min_points:
            return _fallback(t, y, notes, f"too few finite points ({n})")
        span = float(t[-1] - t[0])
        if not span > 0:
            return _fallback(t, y, notes, "all points at the same step")
        with np.errstate(over="ignore", invalid="ignore"):
            # The median of values near the float limit overflows too (the middle two are
            # summed): caught below as "values too large", without numpy's warning.
            med = float(np.median(y))
            dev = y - med
            scale = float(np.max(np.abs(dev)))
        if scale == 0.0:
            return _fallback(t, y, notes, "no decrease (flat series)")
        if not math.isfinite(scale):
            return _fallback(t, y, notes, "values too large to fit")
        u = (t - t[0]) / span
        yn = dev / scale
        u_target = (target - t[0]) / span

        try:
            keep, fit = self._robust_fit(u, yn)
            if float(np.max(np.abs(yn[keep]))) < _RENORMALISE_BELOW:
                # Trimmed spikes (a loss that blew up to 1e200 for a step) set the scale, and
                # the kept points' squares underflow on it: fit them again on their own
                # scale. Never for ordinary curves: nothing kept is that small then.
                refit = self._refit_kept(u, y, keep)
                if refit is None:
                    return _fallback(t[keep], y[keep], notes, "no decrease (flat series)")
                keep, fit, med, scale = refit
                with np.errstate(over="ignore", invalid="ignore"):
                    yn = (y - med) / scale  # inf at the trimmed spikes, which are not used
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            return _fallback(t, y, notes, f"fit failed: {exc}")
        uk, yk, tk, yr = u[keep], yn[keep], t[keep], y[keep]
        m = int(uk.size)
        sigma2 = fit.sse / (m - 3)
        sse_const = float(np.sum((yk - yk.mean()) ** 2))
        if not sse_const - fit.sse > _FLAT_CHI2 * sigma2:
            return _fallback(tk, yr, notes, "no decrease (flat series)")

        # Clamp interval, in original units, from smoothed levels at both ends.
        n_edge = _edge_count(m)
        first = _local_level(tk[:n_edge], yr[:n_edge], tk[0])
        last = _local_level(tk[-n_edge:], yr[-n_edge:], tk[-1])
        noise = scale * math.sqrt(sigma2)
        drop = first - last
        lower = min(first, last) - self.max_drop * (drop if drop > 0 else noise)
        upper = max(first, last) + self.max_drop * (-drop if drop < 0 else noise)
        if np.all(y >= 0):
            lower = max(lower, 0.0)

        with np.errstate(over="ignore", invalid="ignore"):
            e_target = float(np.expm1(-fit.beta * u_target))
            raw = med + scale * (fit.off + (fit.amp * e_target if fit.amp != 0.0 else 0.0))
        if math.isnan(raw):
            return _fallback(tk, yr, notes, "fit failed: non-finite forecast")
        value = min(max(raw, lower), upper)
        if value != raw:
            notes.append("forecast clamped")

        std = _forecast_std(uk, fit, sigma2, u_target, med, scale, lower, upper, value)
        if value != raw:  # the data asked for more than the bounds allow: widen (still capped)
            std = min(math.hypot(std, value - raw), max((upper - lower) / 2.0, 0.0))

        b = fit.beta / span
        shift = b * (t[0] - t0)  # > 0 only when leading points were dropped
        a = scale * fit.amp * math.exp(shift) if shift < 700.0 else math.inf
        c = med + scale * (fit.off - fit.amp)
        params = (float(a), float(b), float(c))
        if not all(math.isfinite(p) for p in params):
            params = None
        return Forecast(float(value), std, False, "; ".join(notes), params, m)

    # -------------------------------------------------------------- internals
    def _refit_kept(
        self, u: np.ndarray, y: np.ndarray, keep: np.ndarray
    ) -> tuple[np.ndarray, _Fit, float, float] | None:
        """:meth:`_robust_fit` of the kept points normalised on their own (median, scale),
        with what is left of the trimming budget; ``None`` if they are constant.

        Returns the kept-point mask (of all points), the fit, the median and the scale.
        """
        idx = np.flatnonzero(keep)
        med = float(np.median(y[idx]))
        dev = y[idx] - med
        scale = float(np.max(np.abs(dev)))
        if scale == 0.0:
            return None
        n = int(y.size)
        budget = min(int(self.trim * n), n - self.min_points) - (n - idx.size)
        sub_keep, fit = self._robust_fit(u[idx], dev / scale, budget=max(budget, 0))
        new_keep = np.zeros(n, dtype=bool)
        new_keep[idx[sub_keep]] = True
        return new_keep, fit, med, scale

    def _robust_fit(
        self, u: np.ndarray, y: np.ndarray, budget: int | None = None
    ) -> tuple[np.ndarray, _Fit]:
        """Fit with outlier trimming; returns the kept-point mask and the final fit.

        ``budget``: most points to trim (default: ``trim`` of them, leaving ``min_points``).
        """
        n = int(y.size)
        if budget is None:
            budget = min(int(self.trim * n), n - self.min_points)
        keep = np.ones(n, dtype=bool)
        if budget > 0 and n >= 5:
            # Model-free screen so gross spikes cannot steer the first fit.
            width = min(max(5, (n // 10) | 1), 21, n if n % 2 else n - 1)
            # scipy loads on the first fit, not with `import autolr` (~0.4 s of its import).
            from scipy.ndimage import median_filter

            trend = median_filter(y, size=width, mode="nearest")
            keep = _inliers(y - trend, budget, self.outlier_k)
        fit = _fit(u[keep], y[keep])
        if budget > 0:
            for _ in range(_MAX_FIT_ROUNDS - 1):
                resid = y - (fit.off + fit.amp * np.expm1(-fit.beta * u))
                new = _inliers(resid, budget, self.outlier_k)
                if np.array_equal(new, keep):
                    break
                keep = new
                fit = _fit(u[keep], y[keep])
        return keep, fit


# ------------------------------------------------------------------ helpers
def _forecast_std(
    u: np.ndarray,
    fit: _Fit,
    sigma2: float,
    u_target: float,
    med: float,
    scale: float,
    lower: float,
    upper: float,
    value: float,
) -> float:
    """Uncertainty of the forecast (original units), at most half the clamp interval.

    The larger of the delta-method standard error (Jacobian in ``amp``, ``off`` and
    ``log(beta)``) and half the spread of the clamped forecasts over the grid rates whose
    sum of squares is within one noise variance of the best (covers ill-determined ``b``).
    """
    cap = max((upper - lower) / 2.0, 0.0)
    n = int(u.size)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        beta, amp = fit.beta, fit.amp
        decay = np.exp(-beta * u)
        jac = np.column_stack([decay - 1.0, np.ones(n), -amp * beta * u * decay])
        decay_t = math.exp(min(-beta * u_target, 700.0))
        grad = np.array([decay_t - 1.0, 1.0, -amp * beta * u_target * decay_t])
        delta_std = math.inf
        if sigma2 == 0.0:
            delta_std = 0.0
        elif np.all(np.isfinite(jac)) and np.all(np.isfinite(grad)):
            try:
                _, sv, vt = np.linalg.svd(jac, full_matrices=False)
                proj = vt @ grad
                if np.all(sv > 0):
                    delta_std = scale * math.sqrt(sigma2 * float(np.sum((proj / sv) ** 2)))
            except np.linalg.LinAlgError:
                pass
        thresh = fit.sse * (1.0 + 1.0 / (n - 3))
        sel = fit.grid_sse <= thresh
        amps = fit.grid_amp[sel]
        f = fit.grid_off[sel] + np.where(
            amps != 0.0, amps * np.expm1(-fit.grid_beta[sel] * u_target), 0.0
        )
        alt = np.clip(med + scale * f, lower, upper)
    alt = alt[np.isfinite(alt)]
    spread = (max(float(alt.max()), value) - min(float(alt.min()), value)) / 2 if alt.size else 0.0
    std = max(delta_std, spread) if not math.isnan(delta_std) else math.inf
    std = min(std, cap)
    return float(std) if math.isfinite(std) and std >= 0 else 0.0


def _solve(u: np.ndarray, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Least squares of ``y ≈ off + amp·expm1(−beta·u)``: ``(amp, off, sse)``."""
    e = np.expm1(-beta * u)
    e_mean = float(e.mean())
    centred = e - e_mean
    see = float(centred @ centred)
    y_mean = float(y.mean())
    amp = float(centred @ (y - y_mean)) / see if see > _RANK_TOL * u.size else 0.0
    off = y_mean - amp * e_mean
    r = y - off - amp * e
    return amp, off, float(r @ r)


def _beta_grid(u: np.ndarray) -> np.ndarray:
    """Log grid of ``beta`` for points at ``u`` (sorted, in [0, 1])."""
    gaps = np.diff(u)
    gaps = gaps[gaps > 0]
    top = _BETA_MAX
    if gaps.size:
        top = min(max(top, _STEP_DECAY / float(gaps.min())), _BETA_CAP)
    decades = math.log10(top / _BETA_MIN)
    return np.geomspace(_BETA_MIN, top, math.ceil(_GRID_PER_DECADE * decades) + 1)


def _fit(u: np.ndarray, y: np.ndarray) -> _Fit:
    """Variable-projection fit: grid over beta, then bounded refinement in log(beta)."""
    grid = _beta_grid(u)
    e = np.expm1(np.multiply.outer(-grid, u))
    e_mean = e.mean(axis=1)
    centred = e - e_mean[:, None]
    see = np.einsum("ij,ij->i", centred, centred)
    y_mean = float(y.mean())
    full_rank = see > _RANK_TOL * u.size
    amp = np.where(full_rank, (centred @ (y - y_mean)) / np.where(full_rank, see, 1.0), 0.0)
    off = y_mean - amp * e_mean
    resid = y - off[:, None] - amp[:, None] * e
    sse = np.einsum("ij,ij->i", resid, resid)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    i = int(np.argmin(sse))
    if not math.isfinite(sse[i]):
        raise FloatingPointError("non-finite residuals")
    lo = math.log(grid[max(i - 1, 0)])
    hi = math.log(grid[min(i + 1, grid.size - 1)])
    from scipy.optimize import minimize_scalar  # lazily, as in _robust_fit

    res = minimize_scalar(
        lambda lb: _solve(u, y, math.exp(lb))[2],
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": _LOG_BETA_TOL},
    )
    beta = math.exp(float(res.x))
    b_amp, b_off, b_sse = _solve(u, y, beta)
    if not b_sse <= sse[i]:
        beta, b_amp, b_off, b_sse = float(grid[i]), float(amp[i]), float(off[i]), float(sse[i])
    return _Fit(beta, b_amp, b_off, b_sse, grid, amp, off, sse)


def _inliers(resid: np.ndarray, budget: int, k: float) -> np.ndarray:
    """Mask of points whose residual is within ``k`` robust std (at most ``budget`` out)."""
    dev = np.abs(resid - np.median(resid))
    sigma = _MAD_TO_STD * float(np.median(dev))
    if not sigma > _RESID_FLOOR:  # e.g. quantised losses: fall back to the mean deviation
        sigma = _MEAN_AD_TO_STD * float(dev.mean())
    bad = dev > k * max(sigma, _RESID_FLOOR)
    if int(bad.sum()) > budget:
        bad[:] = False
        bad[np.argsort(-dev, kind="stable")[:budget]] = True
    return ~bad


def _edge_count(n: int) -> int:
    """Points used for the smoothed level at each end of the window."""
    return min(n, max(3, math.ceil(n / 4)))


def _local_level(t: np.ndarray, y: np.ndarray, at: float) -> float:
    """Least-squares line through ``(t, y)`` evaluated at ``at``, clipped to ``y``'s range."""
    with np.errstate(over="ignore", invalid="ignore"):
        y_mean = float(y.mean())
        t_mean = float(t.mean())
        tc = t - t_mean
        stt = float(tc @ tc)
        level = y_mean + float(tc @ (y - y_mean)) / stt * (at - t_mean) if stt > 0 else y_mean
    if not math.isfinite(level):
        level = float(y[-1])
    return float(min(max(level, float(y.min())), float(y.max())))


def _fallback(t: np.ndarray, y: np.ndarray, notes: list[str], why: str) -> Forecast:
    """Degenerate forecast: smoothed last value, std of the recent points."""
    m = _edge_count(int(y.size))
    recent = y[-m:]
    value = _local_level(t[-m:], recent, float(t[-1]))
    with np.errstate(over="ignore", invalid="ignore"):
        std = float(np.std(recent, ddof=1)) if m >= 2 else _UNKNOWN_REL_STD * abs(value)
    if not math.isfinite(std):
        std = _UNKNOWN_REL_STD * abs(value)
        if not math.isfinite(std):
            std = 0.0
    return Forecast(value, max(std, 0.0), True, _join(notes, why), None, int(y.size))


def _join(notes: list[str], why: str) -> str:
    return "; ".join([*notes, why])


# One check per configuration value, shared by __init__ and load_state_dict.
_CHECKS: dict[str, Callable[[Any], float]] = {
    "max_drop": lambda x: check_float("max_drop", x, minimum=0),
    "trim": lambda x: check_float("trim", x, minimum=0, maximum=0.5, max_inclusive=False),
    "min_points": lambda x: check_int("min_points", x, minimum=4),
    "outlier_k": lambda x: check_float("outlier_k", x, minimum=0, min_inclusive=False),
}
