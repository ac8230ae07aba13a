"""Tests of autolr.predictors: the exponential loss forecaster and its Forecast result."""

from __future__ import annotations

import io
import math
import time
import warnings

import numpy as np
import pytest
import torch

from autolr import StateError
from autolr.predictors import ExponentialPredictor, Forecast, Predictor
from autolr.predictors._exponential import _inliers

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
