"""Tests of autolr.predictors: the exponential loss forecaster and its Forecast result."""

from __future__ import annotations

import io
import math
import time
import warnings

import numpy as np
import pytest
import torch

from autolr import ConfigError, StateError
from autolr.predictors import ExponentialPredictor, Forecast, Predictor
from autolr.predictors._base import to_float_array
from autolr.predictors._exponential import _Fit, _forecast_std, _inliers

T100 = np.arange(100.0)


def _curve(a: float, b: float, c: float, t: np.ndarray = T100) -> np.ndarray:
    return a * np.exp(-b * t) + c


def _noisy(a: float, b: float, c: float, sigma: float, seed: int, t: np.ndarray = T100):
    return _curve(a, b, c, t) + np.random.default_rng(seed).normal(0.0, sigma, t.size)


def _check_sane(fc: Forecast) -> None:
    assert isinstance(fc, Forecast)
    assert math.isfinite(fc.std) and fc.std >= 0.0
    assert math.isfinite(fc.value) or (fc.value == math.inf and fc.degenerate)
    assert not fc.degenerate or (fc.params is None and fc.reason)
    assert fc.n_used >= 0


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize(
    ("a", "b", "c"),
    [(2.0, 0.02, 0.5), (1.0, 0.05, 0.3), (0.5, 0.1, 1.0), (3.0, 0.01, 2.0), (-1.0, 0.05, 2.0)],
)
def test_clean_curve_recovers_parameters(a: float, b: float, c: float) -> None:
    fc = ExponentialPredictor().forecast(_curve(a, b, c), 1000)
    assert not fc.degenerate and fc.reason == ""
    assert fc.params is not None
    np.testing.assert_allclose(fc.params, (a, b, c), rtol=1e-6, atol=1e-8)
    assert fc.value == pytest.approx(_curve(a, b, c, np.array(1000.0)), abs=1e-7)
    assert fc.std < 1e-6
    assert fc.n_used == 100


@pytest.mark.parametrize("frac", [0.1, 0.38, 0.5, 0.62, 0.9])
def test_decay_rate_between_grid_points_is_refined(frac: float) -> None:
    # The fit searches beta = b * span on a log grid of 10 points per decade from 1e-3, then
    # refines. Place beta at a fraction of a grid cell on either side of the nearest grid
    # point (frac=0.38 is b = 0.022 with span 99): refining on one side only misses half.
    span = 99.0
    beta = 1e-3 * 10 ** ((33 + frac) / 10)
    b = beta / span
    fc = ExponentialPredictor().forecast(_curve(2.0, b, 0.5), 1000)
    assert fc.params is not None and not fc.degenerate
    np.testing.assert_allclose(fc.params, (2.0, b, 0.5), rtol=1e-6, atol=1e-8)
    assert fc.value == pytest.approx(2.0 * math.exp(-b * 1000) + 0.5, abs=1e-6)


def test_drop_within_a_few_steps_is_fitted() -> None:
    # beta = b * span = 99 is above the grid's default top (50): the grid must reach
    # _STEP_DECAY / (smallest step gap) = 20 * 99 to represent a decay this fast.
    fc = ExponentialPredictor().forecast(_curve(1.0, 1.0, 0.5), 1000)
    assert fc.params is not None and not fc.degenerate
    np.testing.assert_allclose(fc.params, (1.0, 1.0, 0.5), rtol=1e-6, atol=1e-8)


def test_repeated_steps_are_fitted() -> None:
    # Two values at the same step (a zero gap between steps) must not break the grid.
    t = np.concatenate([[0.0], T100])
    fc = ExponentialPredictor().forecast(_curve(2.0, 0.03, 0.5, t), 1000, steps=t)
    assert fc.params is not None and not fc.degenerate, fc.reason
    np.testing.assert_allclose(fc.params, (2.0, 0.03, 0.5), rtol=1e-6, atol=1e-8)


def test_b_0022_asymptote() -> None:
    fc = ExponentialPredictor().forecast(_curve(2.0, 0.022, 0.5), 10_000)
    assert fc.value == pytest.approx(0.5, abs=1e-6)
    assert fc.params is not None and fc.params[1] == pytest.approx(0.022, rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_noisy_curve_recovers_parameters_and_forecast(seed: int) -> None:
    a, b, c = 2.0, 0.02, 0.5
    fc = ExponentialPredictor().forecast(_noisy(a, b, c, 0.05, seed), 1000)
    assert not fc.degenerate and fc.params is not None
    fa, fb, fcc = fc.params
    assert fa == pytest.approx(a, rel=0.1)
    assert fb == pytest.approx(b, rel=0.15)
    assert fcc == pytest.approx(c, abs=0.1)
    assert abs(fc.value - c) < 0.1
    assert 0.0 < fc.std < 0.2


def test_forecast_inside_the_window_interpolates() -> None:
    y = _curve(1.0, 0.05, 0.5)
    assert ExponentialPredictor().forecast(y, 50).value == pytest.approx(y[50], abs=1e-8)


def test_rising_saturating_curve_fits_negative_amplitude() -> None:
    fc = ExponentialPredictor().forecast(_curve(-1.0, 0.05, 2.0), 1000)
    assert fc.params is not None and fc.params[0] < 0
    assert fc.value == pytest.approx(2.0, abs=1e-6)


# ---------------------------------------------------------------------------- robustness
def test_outlier_spikes_are_trimmed() -> None:
    y = _noisy(2.0, 0.02, 0.5, 0.02, seed=3)
    y[[10, 40, 77]] *= 10.0
    fc = ExponentialPredictor().forecast(y, 1000)
    assert not fc.degenerate
    assert fc.n_used <= 97
    assert fc.params is not None
    assert fc.params[1] == pytest.approx(0.02, rel=0.1)
    assert abs(fc.value - 0.5) < 0.05
    untrimmed = ExponentialPredictor(trim=0.0).forecast(y, 1000)
    assert abs(untrimmed.value - 0.5) > abs(fc.value - 0.5)


def test_spike_at_edges_does_not_break_the_fit() -> None:
    y = _noisy(2.0, 0.02, 0.5, 0.02, seed=4)
    y[-1] *= 10.0
    fc = ExponentialPredictor().forecast(y, 1000)
    assert abs(fc.value - 0.5) < 0.05


def test_defect_linear_series_is_not_forecast_negative() -> None:
    # The original forecaster extrapolated this to -3.0 at step 1000.
    y = np.linspace(2.0, 1.505, 100)
    fc = ExponentialPredictor().forecast(y, 1000)
    assert 0.99 <= fc.value <= 1.505
    assert not fc.degenerate and "clamped" in fc.reason
    assert 0.0 < fc.std <= 0.5


@pytest.mark.parametrize("seed", range(10))
def test_defect_noisy_slow_decay_stays_near_truth(seed: int) -> None:
    # The original forecaster gave -1.38 here (truth 0.55). With the default max_drop=1 the
    # forecast cannot fall below last - observed drop (~0.98), so it lands in ~[0.87, 1.17].
    truth = 1.0 * math.exp(-3.0) + 0.5
    fc = ExponentialPredictor().forecast(_noisy(1.0, 0.003, 0.5, 0.05, seed), 1000)
    assert abs(fc.value - truth) < 0.65
    assert fc.value > 0.5
    assert 0.0 < fc.std < 0.6


def test_larger_max_drop_allows_deeper_forecasts() -> None:
    y = _curve(1.0, 0.003, 0.5)
    strict = ExponentialPredictor().forecast(y, 1000)
    loose = ExponentialPredictor(max_drop=3.0).forecast(y, 1000)
    assert "clamped" in strict.reason
    assert loose.reason == ""
    assert loose.value == pytest.approx(math.exp(-3.0) + 0.5, abs=1e-6)


def test_max_drop_zero_forbids_further_decrease() -> None:
    y = _curve(1.0, 0.01, 0.5)
    fc = ExponentialPredictor(max_drop=0.0).forecast(y, 1000)
    assert fc.value == pytest.approx(y[-1], abs=1e-3)


def test_non_negative_losses_give_non_negative_forecasts() -> None:
    y = np.linspace(1.0, 0.01, 50)
    fc = ExponentialPredictor(max_drop=5.0).forecast(y, 5000)
    assert fc.value == 0.0 and "clamped" in fc.reason


def test_negative_losses_are_not_floored_at_zero() -> None:
    fc = ExponentialPredictor().forecast(_curve(1.0, 0.03, -1.0), 1000)
    assert fc.value == pytest.approx(-1.0, abs=1e-6)


NAN, INF = math.nan, math.inf
DEGENERATE_INPUTS = {
    "empty": [],
    "one": [1.0],
    "two": [2.0, 1.0],
    "three": [2.0, 1.5, 1.2],
    "four": [2.0, 1.5, 1.2, 1.1],
    "constant": [1.0] * 50,
    "zeros": [0.0] * 30,
    "all_nan": [NAN] * 10,
    "all_inf": [INF, -INF, INF],
    "flat_noise": list(1.0 + np.random.default_rng(0).normal(0.0, 0.05, 100)),
}
OTHER_INPUTS = {
    "with_inf_and_nan": [2.0, INF, 1.5, 1.3, -INF, 1.2, NAN, 1.1, 1.05],
    "with_none": [1.0, None, 0.5, 0.4, 0.35, 0.33],
    "near_linear_tiny_slope": list(1.0 - 1e-13 * T100),
    "near_linear": list(1.0 - 1e-9 * T100),
    "increasing": list(0.5 + 0.01 * T100),
    "huge": list(1e200 * (np.exp(-0.03 * T100) + 1.0)),
    "near_max_float": list(1e307 * (np.exp(-0.03 * T100) + 1.0)),
    "mixed_huge_signs": [1e308, -1e308, 1e308, -1e308, 1e308, -1e308],
    "tiny": list(1e-300 * np.exp(-0.03 * T100)),
    "negative": list(-np.exp(-0.03 * T100) - 2.0),
    "quantised": list(np.round(np.exp(-0.01 * T100) + 0.5, 1)),
    "v_shape": list(np.abs(T100 - 50) / 50 + 1),
    "concave": list(2.0 - (T100 / 100) ** 2),
    "first_point_spike": [100.0] + [1.0] * 20,
}


@pytest.mark.parametrize("name", sorted(DEGENERATE_INPUTS))
def test_degenerate_inputs_never_raise_and_are_flagged(name: str) -> None:
    fc = ExponentialPredictor().forecast(DEGENERATE_INPUTS[name], 1000)
    _check_sane(fc)
    assert fc.degenerate and fc.reason and fc.params is None


@pytest.mark.parametrize("name", sorted(OTHER_INPUTS))
def test_awkward_inputs_never_raise(name: str) -> None:
    fc = ExponentialPredictor().forecast(OTHER_INPUTS[name], 1000)
    _check_sane(fc)
    assert math.isfinite(fc.value)


@pytest.mark.parametrize("target", [-500.0, 0.0, 50.0, 99.0, 1e6, 1e300])
def test_any_finite_target_gives_a_finite_forecast(target: float) -> None:
    fc = ExponentialPredictor().forecast(_noisy(1.0, 0.05, 0.5, 0.02, 0), target)
    _check_sane(fc)
    assert 0.0 <= fc.value <= 1.6


def test_degenerate_reasons_and_values() -> None:
    p = ExponentialPredictor()
    empty = p.forecast([], 10)
    assert empty.value == math.inf and empty.std == 0.0 and empty.reason == "no finite values"
    nan = p.forecast([NAN, NAN], 10)
    assert nan.value == math.inf and "dropped 2 non-finite values" in nan.reason
    two = p.forecast([2.0, NAN, 1.0], 10)
    assert two.value == 1.0 and two.n_used == 2
    assert two.reason == "dropped 1 non-finite value; too few finite points (2)"
    const = p.forecast([1.5] * 20, 100)
    assert const.value == 1.5 and const.std == 0.0 and "no decrease" in const.reason
    same = p.forecast([1.0, 2.0, 3.0, 4.0, 5.0], 10, steps=[3, 3, 3, 3, 3])
    assert same.degenerate and "same step" in same.reason


def test_dropped_values_are_reported_but_fit_is_kept() -> None:
    y = _curve(1.0, 0.05, 0.5)
    y[[5, 50]] = [NAN, INF]
    fc = ExponentialPredictor().forecast(y, 1000)
    assert not fc.degenerate and fc.reason == "dropped 2 non-finite values"
    assert fc.n_used == 98
    assert fc.params is not None
    np.testing.assert_allclose(fc.params, (1.0, 0.05, 0.5), rtol=1e-6)


def test_rank_deficient_steps_do_not_raise() -> None:
    fc = ExponentialPredictor().forecast([1.0, 1.1, 0.9, 1.0, 1.05, 0.5], 10, steps=[0] * 5 + [1])
    _check_sane(fc)


def test_bad_arguments_raise_value_error() -> None:
    p = ExponentialPredictor()
    with pytest.raises(ValueError, match="steps"):
        p.forecast([1.0, 2.0, 3.0], 5, steps=[0, 1])
    with pytest.raises(ValueError, match="target"):
        p.forecast([1.0, 2.0, 3.0], math.nan)
    with pytest.raises(ValueError, match="values"):
        p.forecast([[1.0, 2.0, 3.0]], 5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_drop": -1.0}, "max_drop"),
        ({"max_drop": math.inf}, "max_drop"),
        ({"max_drop": True}, "max_drop"),
        ({"trim": 0.5}, "trim"),
        ({"trim": -0.1}, "trim"),
        ({"min_points": 3}, "min_points"),
        ({"min_points": 5.0}, "min_points"),
        ({"outlier_k": 0.0}, "outlier_k"),
    ],
)
def test_constructor_validates(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ExponentialPredictor(**kwargs)


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        ExponentialPredictor(1.0)  # type: ignore[misc]


# ------------------------------------------------------------------------- steps / input
def test_non_uniform_steps_validation_mode() -> None:
    steps = np.arange(0.0, 1000.0, 50.0)  # validation every 50 steps
    fc = ExponentialPredictor().forecast(_curve(1.0, 0.002, 0.5, steps), 10_000, steps=steps)
    assert fc.params is not None
    np.testing.assert_allclose(fc.params, (1.0, 0.002, 0.5), rtol=1e-6)
    irregular = np.array([0.0, 50, 100, 200, 400, 450, 700, 1000])
    fc = ExponentialPredictor().forecast(
        _curve(1.0, 0.002, 0.5, irregular), 10_000, steps=irregular
    )
    assert fc.params is not None
    np.testing.assert_allclose(fc.params, (1.0, 0.002, 0.5), rtol=1e-6)
    for seed in range(4):
        y = _noisy(1.0, 0.002, 0.5, 0.02, seed, steps)
        noisy = ExponentialPredictor().forecast(y, 10_000, steps=steps)
        assert abs(noisy.value - 0.5) < 0.1


def test_params_are_relative_to_first_step() -> None:
    steps = np.arange(1000.0, 1100.0)
    fc = ExponentialPredictor().forecast(_curve(1.0, 0.05, 0.5, steps - 1000), 2000, steps=steps)
    assert fc.params is not None
    np.testing.assert_allclose(fc.params, (1.0, 0.05, 0.5), rtol=1e-6)


def test_unsorted_steps_are_sorted() -> None:
    steps = np.arange(0.0, 1000.0, 50.0)
    y = _noisy(1.0, 0.002, 0.5, 0.02, 0, steps)
    perm = np.random.default_rng(1).permutation(steps.size)
    p = ExponentialPredictor()
    assert p.forecast(y[perm], 5000, steps=steps[perm]) == p.forecast(y, 5000, steps=steps)


def test_torch_and_list_inputs() -> None:
    y = _noisy(1.0, 0.05, 0.5, 0.02, 0)
    p = ExponentialPredictor()
    ref = p.forecast(y, 1000)
    assert p.forecast(list(y), 1000) == ref
    assert p.forecast(torch.tensor(y, requires_grad=True), 1000) == ref
    assert p.forecast(torch.tensor(y), torch.tensor(1000), steps=torch.arange(100)) == ref
    assert p.forecast([torch.tensor(v, requires_grad=True) for v in y], 1000) == ref
    low = p.forecast(torch.tensor(y, dtype=torch.bfloat16), 1000)
    assert abs(low.value - ref.value) < 0.05


# --------------------------------------------------------------------- std / determinism
def test_std_is_larger_for_noisy_series() -> None:
    p = ExponentialPredictor()
    clean = p.forecast(_curve(2.0, 0.02, 0.5), 1000)
    noisy = p.forecast(_noisy(2.0, 0.02, 0.5, 0.05, 0), 1000)
    noisier = p.forecast(_noisy(2.0, 0.02, 0.5, 0.15, 0), 1000)
    assert clean.std < noisy.std < noisier.std


def test_std_is_roughly_calibrated() -> None:
    errors, stds = [], []
    for seed in range(20):
        fc = ExponentialPredictor().forecast(_noisy(2.0, 0.02, 0.5, 0.05, seed), 1000)
        errors.append(fc.value - 0.5)
        stds.append(fc.std)
    ratio = math.sqrt(np.mean(np.square(errors))) / np.mean(stds)
    assert 0.33 < ratio < 3.0


def test_deterministic_and_no_global_rng_use() -> None:
    y = _noisy(2.0, 0.02, 0.5, 0.05, 7)
    y[[3, 60]] *= 5
    state = np.random.get_state()
    a = ExponentialPredictor().forecast(y, 1000)
    b = ExponentialPredictor().forecast(y.copy(), 1000)
    after = np.random.get_state()
    assert a == b
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_fast_enough() -> None:
    p = ExponentialPredictor()
    for n, budget_ms in ((100, 5.0), (1000, 20.0)):
        t = np.arange(float(n))
        y = _noisy(2.0, 3.0 / n, 0.5, 0.05, 0, t)
        y[:: n // 10] *= 10
        p.forecast(y, 10 * n)
        start = time.perf_counter()
        for _ in range(10):
            p.forecast(y, 10 * n)
        per_call_ms = (time.perf_counter() - start) / 10 * 1e3
        assert per_call_ms < 4 * budget_ms  # slack for loaded CI machines


# ----------------------------------------------------------------------------------- state
def test_state_dict_round_trip_through_torch_load() -> None:
    p = ExponentialPredictor(max_drop=0.5, trim=0.1, min_points=6, outlier_k=4.0)
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    q = ExponentialPredictor()
    q.load_state_dict(state)
    assert q.state_dict() == p.state_dict()
    assert repr(q) == repr(p)
    y = _noisy(1.0, 0.003, 0.5, 0.05, 0)
    assert q.forecast(y, 1000) == p.forecast(y, 1000)


def test_load_state_dict_validates_atomically() -> None:
    p = ExponentialPredictor()
    with pytest.raises(ValueError, match="unknown"):
        p.load_state_dict({"max_drop": 2.0, "bogus": 1})
    with pytest.raises(ValueError, match="trim"):
        p.load_state_dict({"max_drop": 2.0, "trim": 0.9})
    assert p.state_dict() == ExponentialPredictor().state_dict()
    p.load_state_dict({"max_drop": 2.0})
    assert p.max_drop == 2.0 and p.trim == 0.05


def test_predictor_is_abstract() -> None:
    with pytest.raises(TypeError):
        Predictor()  # type: ignore[abstract]
    assert isinstance(ExponentialPredictor(), Predictor)


# ---------------------------------------------------------------- issue 18: mutation survivors
def test_too_few_points_fall_back_to_the_local_level_and_the_sample_std() -> None:
    p = ExponentialPredictor()
    # line through (0, 2), (1, 1), (2, 3): slope 0.5, level at t = 2 is 2.5; sample std 1
    fc = p.forecast([2.0, 1.0, 3.0], target=100)
    assert (fc.value, fc.std, fc.degenerate, fc.params, fc.n_used) == (2.5, 1.0, True, None, 3)
    assert fc.reason == "too few finite points (3)"
    fc = p.forecast([2.0, 1.0], target=100)  # two points: still their sample std
    assert (fc.value, fc.std) == (1.0, pytest.approx(math.sqrt(0.5)))
    fc = p.forecast([2.0], target=100)  # one point: 10 % of its value
    assert (fc.value, fc.std) == (2.0, pytest.approx(0.2))


def test_fallback_std_that_overflows_is_ten_percent_of_the_level_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fc = ExponentialPredictor().forecast([1.5e308, 1.6e308], target=10)
    # np.std overflows to inf: the one-point rule, 10 % of the level, instead
    assert (fc.value, fc.std) == (1.6e308, pytest.approx(1.6e307))


def test_inliers_flags_residuals_beyond_k_robust_stds_around_the_median() -> None:
    # median 1.05; deviations' median 0.15 → robust std 0.2224; only 6.0 lies beyond 5 of them
    # (the mean deviation, 0.8 → 1.0, would keep it: 4.95 < 5.01)
    resid = np.array([1.0, 1.1, 0.9, 1.2, 0.8, 6.0, 1.05])
    assert _inliers(resid, 2, 5.0).tolist() == [True] * 5 + [False, True]


def test_inliers_drops_only_the_largest_deviations_when_over_budget() -> None:
    resid = np.array([0.0, 0.01, -0.01, 0.02, -0.02, 0.015, -0.015, 3.0, 4.0, 5.0])
    assert _inliers(resid, 1, 5.0).tolist() == [True] * 9 + [False]  # 3 beyond, budget 1
    assert _inliers(resid, 2, 5.0).tolist() == [True] * 8 + [False, False]


def test_repr_and_a_state_that_is_not_a_mapping() -> None:
    p = ExponentialPredictor(max_drop=0.5)
    assert repr(p) == "ExponentialPredictor(max_drop=0.5, trim=0.05, min_points=5, outlier_k=5.0)"
    with pytest.raises(StateError, match=r"^state must be a mapping, got list$"):
        p.load_state_dict([])


# ------------------------------------------------- issue 18: the rest of the forecaster's survivors
def _delta_std_reference(u, amp, beta, sigma2, u_target, scale):
    """Delta-method standard error of ``off + amp·expm1(−beta·u)`` at ``u_target``, written
    in (amp, off, beta) with numpy's inverse (the code uses log beta and an SVD)."""
    jac = np.column_stack([np.expm1(-beta * u), np.ones_like(u), -amp * u * np.exp(-beta * u)])
    grad = np.array(
        [math.expm1(-beta * u_target), 1.0, -amp * u_target * math.exp(-beta * u_target)]
    )
    cov = sigma2 * np.linalg.inv(jac.T @ jac)
    return scale * math.sqrt(grad @ cov @ grad)


def _one_rate_fit(beta: float, amp: float, off: float, sse: float) -> _Fit:
    """A fit whose grid holds only its own rate (so the grid spread is zero)."""
    return _Fit(beta, amp, off, sse, *(np.array([v]) for v in (beta, amp, off, sse)))


@pytest.mark.parametrize(("u_target", "sigma2"), [(1.5, 1.0), (3.0, 0.04), (0.4, 2.5)])
def test_forecast_std_is_the_delta_method_standard_error(u_target: float, sigma2: float) -> None:
    u = np.linspace(0.0, 1.0, 12)
    beta, amp, off, med, scale = 2.0, 0.8, -0.3, 1.0, 2.5
    fit = _one_rate_fit(beta, amp, off, 1.0)  # a single rate: no spread
    value = med + scale * (off + amp * math.expm1(-beta * u_target))
    std = _forecast_std(u, fit, sigma2, u_target, med, scale, -50.0, 50.0, value)
    ref = _delta_std_reference(u, amp, beta, sigma2, u_target, scale)
    assert std == pytest.approx(ref, rel=1e-9)


def _spread_fit(sse: list[float], off: list[float], amp: list[float]) -> _Fit:
    # every rate is ln 2 and u_target is 1, so each forecast is off - amp / 2 (med 0, scale 1)
    n = len(sse)
    beta = np.full(n, math.log(2.0))
    return _Fit(
        math.log(2.0), amp[0], off[0], sse[0], beta, np.array(amp), np.array(off), np.array(sse)
    )


def test_forecast_std_is_half_the_spread_of_the_rates_within_one_noise_variance() -> None:
    u = np.linspace(0.0, 1.0, 13)  # n - 3 = 10: rates with sse <= best · 1.1 count
    # forecasts (off - amp/2):  0.0    0.1    0.4    -0.3   0.8
    sse = [1.0, 1.06, 1.1, 1.105, 1.15]
    fit = _spread_fit(sse, [0.5, 0.1, 0.4, -0.3, 0.8], [1.0, 0.0, 0.0, 0.0, 0.0])
    std = _forecast_std(u, fit, 0.0, 1.0, 0.0, 1.0, -10.0, 10.0, 0.0)  # sigma2 0: delta 0
    assert std == pytest.approx((0.4 - 0.0) / 2, abs=1e-12)
    # an amplitude of 2 at rate ln 2 forecasts off - 1; a zero amplitude forecasts off
    fit = _spread_fit([1.0, 1.0, 1.0], [0.0, 2.0, -0.25], [0.0, 2.0, 0.0])
    std = _forecast_std(u, fit, 0.0, 1.0, 0.0, 1.0, -10.0, 10.0, 0.0)
    assert std == pytest.approx((1.0 - -0.25) / 2, abs=1e-12)
    # forecasts outside [lower, upper] count at the bound they are clipped to
    fit = _spread_fit([1.0, 1.0], [0.0, 5.0], [0.0, 0.0])
    assert _forecast_std(u, fit, 0.0, 1.0, 0.0, 1.0, -0.3, 0.6, 0.0) == pytest.approx(0.3)
    fit = _spread_fit([1.0, 1.0], [0.0, -5.0], [0.0, 0.0])
    assert _forecast_std(u, fit, 0.0, 1.0, 0.0, 1.0, -0.3, 0.6, 0.0) == pytest.approx(0.15)
    fit = _spread_fit([1.0, 1.0, 1.0], [0.0, 5.0, -5.0], [0.0, 0.0, 0.0])
    # ... and the std never exceeds half the clamp interval
    std = _forecast_std(u, fit, 0.0, 1.0, 0.0, 1.0, 0.0, 0.1, 0.0)
    assert std == pytest.approx(0.05, abs=1e-12)
    std = _forecast_std(u, fit, 1.0, 1.0, 0.0, 1.0, 0.0, 0.1, 0.0)  # a delta std above the cap
    assert std == pytest.approx(0.05, abs=1e-12)


def test_error_messages_name_the_argument_and_what_was_given() -> None:
    p = ExponentialPredictor()
    with pytest.raises(ConfigError, match=r"^values must be 1-D, got shape \(1, 3\)$"):
        p.forecast([[1.0, 2.0, 3.0]], 5)
    with pytest.raises(ConfigError, match=r"^steps must be 1-D, got shape \(1, 3\)$"):
        p.forecast([1.0, 2.0, 3.0], 5, steps=[[0, 1, 2]])
    with pytest.raises(ConfigError, match=r"^values must be a 1-D sequence of numbers, got str$"):
        p.forecast("abc", 5)
    with pytest.raises(ConfigError, match=r"^target must be a finite float, got nan$"):
        p.forecast([1.0, 2.0, 3.0], math.nan)


def test_scalars_and_mixed_lists_are_converted_to_float_arrays() -> None:
    assert to_float_array(3.0, "values").tolist() == [3.0]
    assert to_float_array(np.float32(2.5), "values").dtype == np.float64
    mixed = [torch.tensor(2.0, requires_grad=True), 1.5, None]
    arr = to_float_array(mixed, "values")
    assert arr.dtype == np.float64 and arr[:2].tolist() == [2.0, 1.5] and math.isnan(arr[2])
    fc = ExponentialPredictor().forecast(3.0, target=10)
    assert (fc.value, fc.n_used, fc.reason) == (3.0, 1, "too few finite points (1)")


def test_degenerate_reasons_are_exact() -> None:
    p = ExponentialPredictor()
    assert p.forecast([], 10).n_used == 0
    assert p.forecast([1.5] * 20, 100).reason == "no decrease (flat series)"
    same = p.forecast([1.0, 2.0, 3.0, 4.0, 5.0], 10, steps=[3, 3, 3, 3, 3])
    assert (same.value, same.reason) == (4.0, "all points at the same step")
    # one step apart after the first point (or before the last): a window of span 1, fitted
    y = [1.0, 0.8, 0.7, 0.65, 0.6, 0.58]
    assert p.forecast(y, 10, steps=[0, 0, 0, 0, 0, 1]).reason == "no decrease (flat series)"
    assert p.forecast(y, 10, steps=[0, 1, 1, 1, 1, 1]).reason == "no decrease (flat series)"


def test_fallback_uses_the_last_quarter_of_the_window_but_at_least_three_points() -> None:
    p = ExponentialPredictor()
    fc = p.forecast([5.0, 2.0, 1.0, 3.0], target=100)  # four points: the last three
    assert (fc.value, fc.std) == (2.5, 1.0)
    y = [9.0] * 12 + [1.0, 2.0, 3.0, 4.0, 5.0]  # 17 points at one step: the last ceil(17/4) = 5
    fc = p.forecast(y, 10, steps=[0] * 17)
    assert fc.value == 3.0 and fc.std == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))
    # steps closer than one unit: the local line still has a slope (0.5 per half step)
    fc = p.forecast([2.0, 1.0, 3.0], target=100, steps=[0.0, 0.5, 1.0])
    assert fc.value == 2.5


def test_values_too_large_to_fit_fall_back_without_warnings() -> None:
    big = 1.7e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fc = ExponentialPredictor().forecast([big, -big, -big, -big, -big, 1.0, 2.0], target=10)
        # the median is -big, so big - median overflows: fall back to the last three points,
        # whose line (clipped to their range) ends at 2.0 and whose std overflows (10 % of 2.0)
        assert fc == Forecast(2.0, 0.2, True, "values too large to fit", None, 7)
        # the mean of the last nine values is NaN (inf - inf): the last value, 10 % std
        y = [-big] * 24 + [big, big, -big, -big, 5.0, 6.0, 3.0, 2.0, 1.0]
        fc = ExponentialPredictor().forecast(y, target=100)
        assert fc == Forecast(1.0, 0.1, True, "values too large to fit", None, 33)
        fc = ExponentialPredictor().forecast([2.0], target=100)
        assert fc.std == pytest.approx(0.2)


def test_a_failed_fit_falls_back_to_the_local_level(monkeypatch: pytest.MonkeyPatch) -> None:
    import autolr.predictors._exponential as mod

    def fail(u, y):
        raise FloatingPointError("boom")

    monkeypatch.setattr(mod, "_fit", fail)
    y = [2.0, 1.0, np.nan, 0.5, 0.4, 0.3, 0.2]
    fc = ExponentialPredictor().forecast(y, target=10)
    # last three finite points (steps 4, 5, 6): the line 0.4 - 0.1 (t - 4) ends at 0.2
    assert fc.value == pytest.approx(0.2) and fc.std == pytest.approx(0.1)
    assert (fc.degenerate, fc.params, fc.n_used) == (True, None, 6)
    assert fc.reason == "dropped 1 non-finite value; fit failed: boom"


def test_steps_in_fractions_of_a_unit_are_fitted() -> None:
    steps = np.linspace(0.0, 0.5, 50)
    fc = ExponentialPredictor().forecast(_curve(1.0, 6.0, 0.5, steps), 0.25, steps=steps)
    assert fc.params is not None and fc.degenerate is False
    np.testing.assert_allclose(fc.params, (1.0, 6.0, 0.5), rtol=1e-6)
    assert fc.value == pytest.approx(math.exp(-1.5) + 0.5, abs=1e-8)


def test_forecast_inside_a_window_that_starts_late() -> None:
    steps = np.arange(1000.0, 1100.0)
    y = _curve(1.0, 0.05, 0.5, steps - 1000)
    fc = ExponentialPredictor().forecast(y, 1050, steps=steps)
    assert fc.value == pytest.approx(math.exp(-2.5) + 0.5, abs=1e-8)


def test_a_trend_within_the_noise_is_flat() -> None:
    # the fitted curve must beat the constant by 9 noise variances (sse / (m - 3)); this
    # skewed, weakly decaying series does not (checked with a second implementation of the fit)
    t = np.arange(60.0)
    y = 1.0 + 0.02 * np.exp(-0.05 * t) + np.abs(np.random.default_rng(5).normal(0.0, 0.05, 60))
    sse, sse_const = _best_exp_sse(y, t), float(np.sum((y - y.mean()) ** 2))
    assert sse_const - sse < 0.5 * 9.0 * sse / (60 - 3)
    fc = ExponentialPredictor(trim=0.0).forecast(y, 100)
    assert fc.degenerate and fc.reason == "no decrease (flat series)"


def test_clamp_interval_of_a_straight_falling_line() -> None:
    # first level 2.0, last 1.505 (exact lines), drop 0.495: lower = 1.505 - 0.495 = 1.01;
    # upper = 2.0 + noise, where noise is ~0 for a straight line
    y = np.linspace(2.0, 1.505, 100)
    nan_y = np.concatenate([[np.nan], y])
    fc = ExponentialPredictor().forecast(nan_y, 1000, steps=np.arange(-1.0, 100.0))
    assert fc.value == pytest.approx(1.01, abs=1e-9)
    assert fc.degenerate is False
    assert fc.reason == "dropped 1 non-finite value; forecast clamped"
    assert fc.std == pytest.approx((2.0 - 1.01) / 2, abs=1e-4)  # capped at half the interval
    assert ExponentialPredictor().forecast(y, 1000).reason == "forecast clamped"


def test_clamped_forecast_adds_the_distance_it_was_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    import autolr.predictors._exponential as mod

    monkeypatch.setattr(mod, "_forecast_std", lambda *args: 0.01)
    y = _curve(1.0, 0.003, 0.5)
    target = 260.0  # the raw forecast falls just below lower = last - (first - last)
    fc = ExponentialPredictor().forecast(y, target)
    # first / last: least-squares lines through the first / last 25 points at the window's
    # ends, clipped to those points' range
    first = np.clip(np.polyval(np.polyfit(T100[:25], y[:25], 1), 0.0), y[24], y[0])
    last = np.clip(np.polyval(np.polyfit(T100[-25:], y[-25:], 1), 99.0), y[99], y[75])
    lower = last - (first - last)
    assert fc.reason == "forecast clamped" and fc.value == pytest.approx(lower, abs=1e-9)
    assert fc.params is not None
    a, b, c = fc.params
    raw = a * math.exp(-b * target) + c
    assert fc.std == pytest.approx(math.hypot(0.01, fc.value - raw), rel=1e-6)


def _best_exp_sse(y: np.ndarray, t: np.ndarray) -> float:
    """Least SSE of ``a·exp(−b·t) + c``: plain least squares for (a, c), b by a log grid
    and a bounded refinement (a second implementation of the forecaster's fit)."""
    from scipy.optimize import minimize_scalar

    def sse(log_b: float) -> float:
        design = np.column_stack([np.exp(-math.exp(log_b) * (t - t[0])), np.ones_like(t)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return float(np.sum((design @ coef - y) ** 2))

    grid = np.linspace(math.log(1e-5), math.log(10.0), 400)
    i = int(np.argmin([sse(g) for g in grid]))
    bounds = (grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)])
    return float(
        minimize_scalar(sse, bounds=bounds, method="bounded", options={"xatol": 1e-10}).fun
    )


def test_level_window_is_clamped_by_the_noise_both_ways() -> None:
    # a V (and its mirror) starts and ends at the same level 49.5: drop is exactly 0, so the
    # interval is 49.5 ± noise, noise = sqrt(sse / (m - 3)) of the fit (a large misfit here)
    v = np.abs(T100 - 49.5)
    noise = math.sqrt(_best_exp_sse(v, T100) / (100 - 3))
    down = ExponentialPredictor().forecast(v, 49.5)
    assert down.reason == "forecast clamped"
    assert down.value == pytest.approx(49.5 - noise, abs=1e-6)
    assert down.std == pytest.approx(noise, abs=1e-6)  # half the interval
    up = ExponentialPredictor().forecast(-v, 49.5)
    assert up.reason == "forecast clamped" and up.value == pytest.approx(-49.5 + noise, abs=1e-6)


def test_rising_window_may_forecast_below_its_last_level() -> None:
    y = _curve(-1.0, 0.05, 2.0)
    fc = ExponentialPredictor().forecast(y, 50)
    assert fc.reason == "" and fc.value == pytest.approx(y[50], abs=1e-8)


def test_a_zero_loss_floors_the_forecast_at_zero() -> None:
    y = np.linspace(1.0, 0.0, 50)
    fc = ExponentialPredictor(max_drop=5.0).forecast(y, 5000)
    assert fc.value == 0.0 and fc.reason == "forecast clamped"


def test_far_targets_give_no_warnings() -> None:
    y = _noisy(1.0, 0.05, 0.5, 0.02, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for target in (-1e300, 1e300):
            fc = ExponentialPredictor().forecast(y, target)
            _check_sane(fc)


def test_params_refer_to_the_first_finite_step() -> None:
    y = _curve(1.0, 0.05, 0.5)
    y[:2] = np.nan  # t0 is still 0 (the steps are finite): a = 1, not e^{-0.1}
    fc = ExponentialPredictor().forecast(y, 1000)
    assert fc.params is not None
    np.testing.assert_allclose(fc.params, (1.0, 0.05, 0.5), rtol=1e-6)
    # a fast decay after 100 dropped steps: a = e^{1000}·(...) does not fit a float
    steps = np.concatenate([np.arange(100.0), 100.0 + 0.1 * np.arange(50)])
    y = np.concatenate([np.full(100, np.nan), _curve(1.0, 10.0, 0.5, 0.1 * np.arange(50))])
    fc = ExponentialPredictor().forecast(y, 200.0, steps=steps)
    assert fc.params is None and fc.degenerate is False
    assert fc.value == pytest.approx(0.5, abs=1e-6)


def test_points_at_the_same_step_keep_their_order() -> None:
    # 40 points given out of order, 30 of them at the last step: the fallback of this flat
    # series uses the last ten kept points, which (sorted stably) are the last ten given at
    # that step; an unstable sort picks others among the tied steps
    steps = np.concatenate([np.arange(10.0), np.full(30, 10.0)])[
        np.random.default_rng(0).permutation(40)
    ]
    y = 1.0 + 0.01 * np.random.default_rng(0).normal(size=40)
    fc = ExponentialPredictor(trim=0.0).forecast(y, 20, steps=steps)
    assert fc.reason == "no decrease (flat series)"
    last_ten = y[np.flatnonzero(steps == 10.0)[-10:]]
    assert fc.value == pytest.approx(last_ten.mean(), abs=1e-12)
    assert fc.std == pytest.approx(np.std(last_ten, ddof=1), abs=1e-12)


def _running_median(y: np.ndarray, width: int) -> np.ndarray:
    """Median of each window of ``width`` points, the ends repeated beyond the edges."""
    half = width // 2
    padded = np.concatenate([np.full(half, y[0]), y, np.full(half, y[-1])])
    return np.array([np.median(padded[i : i + width]) for i in range(y.size)])


@pytest.mark.parametrize(
    ("n", "width", "kwargs"),
    [
        (5, 5, {"min_points": 4, "trim": 0.4}),  # budget 1, the whole window
        (6, 5, {"trim": 0.2}),  # budget 1
        (20, 5, {}),  # budget 1
        (30, 5, {}),
        (100, 11, {}),  # n // 10, made odd
        (250, 21, {}),  # at most 21
    ],
)
def test_outlier_screen_is_a_running_median_of_odd_width(
    n: int, width: int, kwargs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autolr.predictors._exponential as mod

    seen = []
    real = mod._inliers

    def spy(resid, budget, k):
        seen.append(resid.copy())
        return real(resid, budget, k)

    monkeypatch.setattr(mod, "_inliers", spy)
    t = np.arange(float(n))
    y = _noisy(1.0, 3.0 / n, 0.5, 0.05, 1, t)
    ExponentialPredictor(**kwargs).forecast(y, 10 * n)
    # the first call screens the normalised values against their running median
    yn = (y - np.median(y)) / np.max(np.abs(y - np.median(y)))
    np.testing.assert_allclose(seen[0], yn - _running_median(yn, width), atol=1e-12)
    # then at least one round on the residuals of the fitted curve
    assert len(seen) >= 2 and not np.allclose(seen[1], seen[0])


def test_trimming_stops_after_four_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import autolr.predictors._exponential as mod

    masks = []
    real = mod._fit

    def spy(u, y):
        masks.append(u.copy())
        return real(u, y)

    monkeypatch.setattr(mod, "_fit", spy)
    rng = np.random.default_rng(34)  # heavy tails: the trimmed set changes at every round
    y = _curve(1.0, 0.05, 0.5) + 0.05 * rng.standard_t(1.5, 100)
    ExponentialPredictor(trim=0.2).forecast(y, 200)
    assert len(masks) == 4  # _MAX_FIT_ROUNDS: the screened fit and three refits
    assert not np.array_equal(masks[-1], masks[-2])  # stopped, not converged


def test_trimming_never_leaves_fewer_than_min_points() -> None:
    # trim 0.3 of 20 would drop 6 points, but min_points 16 allows only 4 of the 5 spikes
    t = np.arange(20.0)
    y = _curve(1.0, 0.15, 0.5, t)
    y[[3, 7, 11, 15, 17]] += 0.5
    fc = ExponentialPredictor(trim=0.3, min_points=16).forecast(y, 100)
    assert not fc.degenerate and fc.n_used == 16


def test_inliers_threshold_is_strict_and_the_floor_uses_the_mean_deviation() -> None:
    # median 0, deviations' median 1: robust std 1.4826...; with k = 2 the threshold is
    # exactly 2 · 1.4826... and a deviation equal to it is kept
    edge = 2 * 1.482602218505602
    resid = np.array([0.0, 1.0, -1.0, 1.0, -1.0, edge, -edge])
    assert _inliers(resid, 2, 2.0).all()
    # a robust std of exactly the floor (1e-10) is not above it: the mean deviation is used
    # (24 d / 7 · 1.2533 = 4.3 d, threshold 21.5 d), so the two 10 d points stay
    d = 1e-10 / 1.482602218505602
    resid = np.array([0.0, d, -d, d, -d, 10 * d, -10 * d])
    assert _inliers(resid, 2, 5.0).all()


def test_inliers_over_budget_drops_the_first_of_tied_deviations() -> None:
    rng = np.random.default_rng(0)
    resid = np.concatenate([0.01 * rng.normal(size=30), np.full(10, 5.0)])[rng.permutation(40)]
    keep = _inliers(resid, 3, 5.0)
    assert np.flatnonzero(~keep).tolist() == np.flatnonzero(resid == 5.0)[:3].tolist()


def test_forecast_std_of_an_unbounded_interval_is_finite() -> None:
    u = np.linspace(0.0, 1.0, 12)
    fit = _one_rate_fit(2.0, 0.8, -0.3, 1.0)
    # a target far before the window: the gradient overflows, the delta std is infinite
    std = _forecast_std(u, fit, 1.0, -1e300, 0.0, 1.0, -math.inf, math.inf, 0.0)
    assert std == 0.0  # never inf: 0.0 stands for "unknown" (Forecast.std is finite)
    # a zero amplitude on the grid times an overflowing decay: no NaN, no warning
    fit = _spread_fit([1.0, 1.0], [0.0, 0.25], [1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        std = _forecast_std(u, fit, 0.0, -1e300, 0.0, 1.0, -1.0, 1.0, 0.0)
    assert std == pytest.approx(0.5)  # the first rate is clipped to 1.0, the second is 0.25


def _fit_of(beta: float, amp: float, off: float) -> _Fit:
    return _one_rate_fit(beta, amp, off, 1e-9)


@pytest.mark.parametrize(
    ("amp", "off", "target"),
    [(1.0, 0.0, 50.0), (0.0, 0.1, 50.0), (0.0, 0.1, -1e300)],
)
def test_forecast_evaluates_the_fitted_curve(
    amp: float, off: float, target: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a hand-made fit in normalised units, y ≈ med + scale · (off + amp · expm1(-beta · u))
    y = _curve(1.0, 0.03, 0.5)
    monkeypatch.setattr(
        ExponentialPredictor,
        "_robust_fit",
        lambda self, u, yn: (np.ones(u.size, dtype=bool), _fit_of(1.0, amp, off)),
    )
    fc = ExponentialPredictor().forecast(y, target)
    med = np.median(y)
    scale = np.max(np.abs(y - med))
    e = math.expm1(-target / 99.0) if amp else 0.0  # a zero amplitude ignores the decay
    assert fc.reason == "" and fc.value == pytest.approx(med + scale * (off + amp * e), abs=1e-12)


def test_a_non_finite_fitted_curve_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    y = _curve(1.0, 0.03, 0.5)
    y[5] = np.nan
    monkeypatch.setattr(
        ExponentialPredictor,
        "_robust_fit",
        lambda self, u, yn: (np.ones(u.size, dtype=bool), _fit_of(1.0, 1.0, math.nan)),
    )
    fc = ExponentialPredictor().forecast(y, 200)
    ok = np.isfinite(y)
    t, v = T100[ok][-25:], y[ok][-25:]  # the last quarter of the 99 kept points
    level = np.clip(np.polyval(np.polyfit(t, v, 1), 99.0), v.min(), v.max())
    assert fc.value == pytest.approx(level, abs=1e-12)
    assert fc.std == pytest.approx(np.std(v, ddof=1), abs=1e-12)
    assert (fc.degenerate, fc.params, fc.n_used) == (True, None, 99)
    assert fc.reason == "dropped 1 non-finite value; fit failed: non-finite forecast"


def test_forecast_of_values_near_the_float_limit_warns_nothing():
    # The median of the two middle values overflowed outside numpy's errstate and leaked a
    # RuntimeWarning; the forecast itself falls back ("values too large").
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fc = ExponentialPredictor().forecast([1.7e308] * 4 + [1.0, 2.0], 10)
    assert "too large" in fc.reason
