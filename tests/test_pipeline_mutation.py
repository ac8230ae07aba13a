"""Fast unit tests of the forecast pipeline (``predictors/_pipeline.py``) against hand values.

Issue 18: the pipeline was tested only through the Optuna sampler and pruner. Here each step
(:func:`forecast_final`, :func:`calibrate`, :func:`adjust`, :func:`forecast_run`) and the
:class:`ForecastCache` are pinned one by one. The curves are forecast by :class:`_Line`, a
real (if simple) predictor whose forecast is computable by hand: the straight line through
the last two points. Every test runs in milliseconds, so mutation testing can run them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from autolr.predictors import ExponentialPredictor, Forecast, Predictor
from autolr.predictors import _pipeline as pl


class _Line(Predictor):
    """The line through the last two points, evaluated at ``target``; records its calls.

    ``std`` and ``degenerate`` are reported as given; ``value`` (when set) replaces the
    extrapolation (e.g. a non-finite forecast).
    """

    def __init__(self, std: float = 0.0, degenerate: bool = False, value: float | None = None):
        self.std, self.degenerate, self.value = std, degenerate, value
        self.calls: list[tuple[list[float], float, list[float] | None]] = []

    def forecast(
        self, values: Sequence[float] | Any, target: float, *, steps: Any = None
    ) -> Forecast:
        self.calls.append((list(values), target, None if steps is None else list(steps)))
        (s0, s1), (v0, v1) = steps[-2:], values[-2:]
        value = v1 + (v1 - v0) / (s1 - s0) * (target - s1) if self.value is None else self.value
        return Forecast(value, self.std, self.degenerate, "", None, len(values))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def line(slope: float, start: float, steps: Sequence[int]) -> dict[int, float]:
    return {s: start + slope * s for s in steps}


# ------------------------------------------------------------------------------ cache
def test_cache_hit_miss_and_a_stored_none() -> None:
    cache = pl.ForecastCache(size=3)
    fc = pl.FinalForecast(1.0, 0.1, 3, 1.5, False, False)
    assert cache.get(("a",)) == (False, None)
    cache.put(("a",), fc)
    cache.put(("b",), None)
    assert cache.get(("a",)) == (True, fc)
    assert cache.get(("b",)) == (True, None)  # a stored None is a hit, not a miss
    cache.clear()
    assert cache.get(("a",)) == (False, None) and cache.get(("b",)) == (False, None)


def test_cache_keeps_exactly_size_entries_least_recently_used_out() -> None:
    cache = pl.ForecastCache(size=2)
    cache.put(("a",), None)
    cache.put(("b",), None)
    assert cache.get(("a",))[0] and cache.get(("b",))[0]  # exactly `size` fit
    assert cache.get(("a",))[0]  # a is now the most recently used
    cache.put(("c",), None)
    assert [cache.get((k,))[0] for k in "abc"] == [True, False, True]
    # A put of an existing key refreshes it too (and replaces its value).
    cache.put(("a",), pl.FinalForecast(2.0, 0.0, 0, 0.0, False, False))
    cache.put(("d",), None)
    assert [cache.get((k,))[0] for k in "acd"] == [True, False, True]
    assert cache.get(("a",))[1].value == 2.0


def test_cache_default_size_is_20000() -> None:
    cache = pl.ForecastCache()
    for i in range(20_000):
        cache.put((i,), None)
    assert cache.get((0,))[0]  # 20 000 fit (and 0 is now the most recently used)
    cache.put((20_000,), None)
    assert not cache.get((1,))[0] and cache.get((0,))[0] and cache.get((2,))[0]


# ------------------------------------------------------------------------- final_step
def test_final_step_is_n_steps_or_the_largest_last_step() -> None:
    curves = [{0: 1.0, 9: 0.5}, {5: 1.0, 4: 0.7}, {}, {2: 0.1}]
    assert pl.final_step(curves, None) == 9  # the largest last step, not the last curve's
    assert pl.final_step([{3: 1.0}, {1: 1.0}], None) == 3
    assert pl.final_step([{1: 1.0}, {3: 1.0}], None) == 3
    assert pl.final_step(curves, 0) == 0  # n_steps wins, even 0
    assert pl.final_step(curves, 40) == 40
    assert pl.final_step([{}, {}], None) is None and pl.final_step([], None) is None


# ---------------------------------------------------------------------- forecast_final
def test_forecast_final_extrapolates_with_sorted_float_steps() -> None:
    p = _Line(std=0.3)
    curve = {4: 1.2, 0: 2.0, 2: 1.6}  # unsorted on purpose; slope -0.2 per step
    fc = pl.forecast_final(curve, 6, p, extrapolation_std=0.5, min_points=3)
    assert p.calls == [([2.0, 1.6, 1.2], 6.0, [0.0, 2.0, 4.0])]
    assert all(isinstance(x, float) for x in [p.calls[0][1], *p.calls[0][2]])
    # value 1.2 - 0.2 * 2 = 0.8; std = hypot(0.3, 0.5 * |0.8 - 1.2|) = hypot(0.3, 0.2)
    assert fc == pl.FinalForecast(
        pytest.approx(0.8), pytest.approx(math.hypot(0.3, 0.2)), 4, 1.2, False, False
    )
    assert pl.forecast_final(
        curve, 6, _Line(degenerate=True), extrapolation_std=0.5, min_points=3
    ).degenerate
    # extrapolation_std 0: the predictor's std alone
    assert pl.forecast_final(curve, 6, _Line(std=0.3), extrapolation_std=0.0, min_points=3).std == (
        pytest.approx(0.3)
    )


def test_forecast_final_counts_finite_points_against_min_points() -> None:
    curve = {0: 2.0, 1: math.nan, 2: 1.6, 3: math.inf, 4: 1.2}  # 3 finite values
    assert pl.forecast_final(curve, 9, _Line(), extrapolation_std=0.0, min_points=4) is None
    fc = pl.forecast_final(curve, 9, _Line(value=1.0), extrapolation_std=0.0, min_points=3)
    assert fc is not None and fc.value == 1.0 and fc.std == 0.0
    assert pl.forecast_final({}, 9, _Line(), extrapolation_std=0.0, min_points=0) is None


def test_forecast_final_diverged_curve_whatever_its_length() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        fc = pl.forecast_final({0: 1.0, 7: bad}, 20, _Line(), extrapolation_std=1.0, min_points=5)
        assert fc is not None and fc.diverged and fc.degenerate
        assert math.isnan(fc.value) and fc.std == 0.0 and fc.last_step == 7
        assert fc.last_value == bad or (math.isnan(bad) and math.isnan(fc.last_value))


def test_forecast_final_at_or_past_the_target_returns_the_last_value() -> None:
    p = _Line(std=5.0, degenerate=True)
    for target in (4, 3):
        fc = pl.forecast_final(
            line(-0.2, 2.0, range(5)), target, p, extrapolation_std=9.0, min_points=2
        )
        assert fc == pl.FinalForecast(pytest.approx(1.2), 0.0, 4, pytest.approx(1.2), False, False)
    assert p.calls == []  # nothing to extrapolate
    fc = pl.forecast_final(line(-0.2, 2.0, range(5)), 5, p, extrapolation_std=0.0, min_points=2)
    assert fc.value == pytest.approx(1.0) and fc.std == 5.0 and fc.degenerate


def test_forecast_final_non_finite_forecast_is_none() -> None:
    for v in (math.nan, math.inf):
        curve = line(-0.2, 2.0, range(5))
        assert (
            pl.forecast_final(curve, 9, _Line(value=v), extrapolation_std=0.0, min_points=2) is None
        )


# ----------------------------------------------------------------------------- adjust
def test_adjust_calibrated_and_uncalibrated_by_hand() -> None:
    raw = pl.FinalForecast(1.0, 0.3, 5, 1.5, True, False)
    cal = pl.adjust(raw, (0.25, 0.4), extrapolation_std=7.0)  # extrapolation ignored
    assert cal == pl.FinalForecast(1.25, pytest.approx(0.5), 5, 1.5, True, False)
    unc = pl.adjust(raw, None, extrapolation_std=0.8)  # extra = 0.8 * |1.0 - 1.5| = 0.4
    assert unc == pl.FinalForecast(1.0, pytest.approx(0.5), 5, 1.5, True, False)
    up = pl.adjust(pl.FinalForecast(2.0, 0.0, 5, 1.5, False, False), None, extrapolation_std=0.8)
    assert up.std == pytest.approx(0.4)
    assert pl.adjust(None, (1.0, 1.0), 1.0) is None
    div = pl.FinalForecast(math.nan, 0.0, 5, math.inf, True, True)
    assert pl.adjust(div, (1.0, 1.0), 1.0) is div and pl.adjust(div, None, 1.0) is div


# -------------------------------------------------------------------------- calibrate
def refs_with_errors(errors: Sequence[float], n: int = 6) -> list[pl.ReferenceRun]:
    """Straight-line references (forecast exactly by _Line) whose final value is off the
    line's value at step ``n - 1`` by ``errors``."""
    out = []
    for i, e in enumerate(errors):
        curve = line(-0.1 * (i + 1), 3.0, range(n))
        out.append(pl.ReferenceRun(("r", i), curve, curve[n - 1] + e))
    return out


def test_calibrate_median_and_rms_spread_by_hand() -> None:
    # odd: errors 0.3, -0.1, 0.2 -> median 0.2, spread sqrt((0.01 + 0.09 + 0) / 3)
    bias, spread = pl.calibrate(
        refs_with_errors([0.3, -0.1, 0.2]), 3, 5, _Line(), pl.ForecastCache(), min_points=2
    )
    assert bias == pytest.approx(0.2) and spread == pytest.approx(math.sqrt(0.1 / 3))
    # even: errors -0.4, 0.1, 0.3, 0.5 -> median (0.1 + 0.3) / 2 = 0.2
    errs = [0.5, -0.4, 0.3, 0.1]
    bias, spread = pl.calibrate(
        refs_with_errors(errs), 3, 5, _Line(), pl.ForecastCache(), min_points=2
    )
    assert bias == pytest.approx(0.2)
    assert spread == pytest.approx(math.sqrt(sum((e - 0.2) ** 2 for e in errs) / 4))


def test_calibrate_forecasts_the_first_n_points_to_the_target() -> None:
    p = _Line()
    curve = {5: 0.5, 0: 3.0, 1: 2.0, 2: 1.5, 3: 1.0, 4: 0.8}
    refs = [pl.ReferenceRun(i, curve, 0.0) for i in range(3)]
    bias, spread = pl.calibrate(refs, 3, 5, p, pl.ForecastCache(), min_points=2)
    # head {0: 3, 1: 2, 2: 1.5}: the line 1.5 - 0.5 * 3 = 0.0 at step 5, final 0.0
    assert p.calls[0] == ([3.0, 2.0, 1.5], 5.0, [0.0, 1.0, 2.0])
    assert bias == pytest.approx(0.0) and spread == pytest.approx(0.0)


def test_calibrate_min_runs_and_which_references_count() -> None:
    ok = refs_with_errors([0.1, 0.2, 0.3])
    kw: dict[str, Any] = {"min_points": 2}
    assert pl.calibrate(ok[:2], 3, 5, _Line(), pl.ForecastCache(), **kw) is None  # default 3 runs
    assert pl.calibrate(ok[:2], 3, 5, _Line(), pl.ForecastCache(), min_runs=2, **kw) is not None
    assert pl.calibrate(ok, 3, 5, _Line(), pl.ForecastCache(), min_runs=4, **kw) is None
    short = pl.ReferenceRun("short", line(-0.1, 3.0, range(3)), 0.0)  # len == n_points
    early = pl.ReferenceRun("early", line(-0.1, 3.0, range(5)), 0.0)  # ends at step 4 < 5
    for final in (None, math.nan, math.inf):
        bad = pl.ReferenceRun("bad", line(-0.1, 3.0, range(6)), final)
        assert pl.calibrate([*ok[:2], bad], 3, 5, _Line(), pl.ForecastCache(), **kw) is None
    assert pl.calibrate([*ok[:2], short], 3, 5, _Line(), pl.ForecastCache(), **kw) is None
    assert pl.calibrate([*ok[:2], early], 3, 5, _Line(), pl.ForecastCache(), **kw) is None
    # n_points values that do reach the target are still too few (nothing left to compare)
    exact = pl.ReferenceRun("exact", {0: 3.0, 1: 2.9, 5: 2.5}, 2.5)
    assert pl.calibrate([*ok[:2], exact], 3, 5, _Line(), pl.ForecastCache(), **kw) is None
    # A skipped reference does not end the scan.
    for skipped in (short, early, exact, pl.ReferenceRun("none", ok[0].curve, None)):
        assert pl.calibrate([skipped, *ok], 3, 5, _Line(), pl.ForecastCache(), **kw) is not None
    # One more point than n_points, ending exactly at the target: it counts (error 0.6:
    # the head's line reaches 2.5 at step 5), so the median of 0.1, 0.2, 0.6 is 0.2.
    edge = pl.ReferenceRun("edge", {0: 3.0, 1: 2.9, 2: 2.8, 5: 2.5}, 2.5 + 0.6)
    bias, _ = pl.calibrate([*ok[:2], edge], 3, 5, _Line(), pl.ForecastCache(), **kw)
    assert bias == pytest.approx(0.2)


def test_calibrate_skips_references_whose_head_cannot_be_forecast() -> None:
    ok = refs_with_errors([0.1, 0.2, 0.3])
    curve = line(-0.1, 3.0, range(6))
    nan_head = pl.ReferenceRun("nan", {**curve, 2: math.nan}, 0.0)  # head diverged
    thin = pl.ReferenceRun("thin", {**curve, 0: math.nan}, 0.0)  # 2 finite < min_points 3
    inf_fc = pl.ReferenceRun("x", curve, 0.0)
    cache = pl.ForecastCache()
    for ref in (nan_head, thin):
        assert pl.calibrate([*ok[:2], ref], 3, 5, _Line(), cache, min_points=3) is None
        assert cache.get(("calibration", ref.key, 3, 5)) == (True, None)  # cached as unusable
    assert pl.calibrate([inf_fc] * 3, 3, 5, _Line(value=math.inf), cache, min_points=2) is None


def test_calibrate_caches_errors_by_reference_key_n_points_and_target() -> None:
    cache = pl.ForecastCache()
    refs = refs_with_errors([0.1, 0.2, 0.3])
    p = _Line()
    first = pl.calibrate(refs, 3, 5, p, cache, min_points=2)
    assert len(p.calls) == 3
    hit, err = cache.get(("calibration", ("r", 0), 3, 5))
    assert hit and err.value == pytest.approx(0.1)
    # The same keys again: no forecast at all, even with changed curves (finished runs).
    moved = [pl.ReferenceRun(r.key, r.curve, r.value + 5.0) for r in refs]
    assert pl.calibrate(moved, 3, 5, p, cache, min_points=2) == first and len(p.calls) == 3
    # Another n_points or target is another entry.
    pl.calibrate(refs, 4, 5, p, cache, min_points=2)
    assert len(p.calls) == 6
    pl.calibrate(refs_with_errors([0.1, 0.2, 0.3], n=7), 4, 6, p, cache, min_points=2)
    assert len(p.calls) == 9


# ------------------------------------------------------------------------ forecast_run
def test_forecast_run_uncalibrated_std_counts_the_extrapolation_once() -> None:
    curve = {0: 2.0, 1: 1.8, 2: 1.6}
    fc = pl.forecast_run(curve, 5, _Line(std=0.3), extrapolation_std=0.5, min_points=3)
    # 1.6 - 0.2 * 3 = 1.0; std = hypot(0.3, 0.5 * 0.6)
    assert fc == pl.FinalForecast(
        pytest.approx(1.0), pytest.approx(math.hypot(0.3, 0.3)), 2, 1.6, False, False
    )
    assert pl.forecast_run(curve, 5, _Line(), extrapolation_std=0.5, min_points=4) is None
    div = pl.forecast_run({0: 1.0, 1: math.nan}, 5, _Line(), extrapolation_std=0.5, min_points=3)
    assert div.diverged and div.std == 0.0


def test_forecast_run_calibrates_on_references_truncated_to_its_length() -> None:
    curve = {0: 2.0, 1: 1.8, 2: 1.6}
    refs = refs_with_errors([0.1, 0.2, 0.4])
    p = _Line(std=0.3)
    fc = pl.forecast_run(curve, 5, p, extrapolation_std=9.0, min_points=3, references=refs)
    # heads of 3 points (n_points = len(curve)); bias 0.2, spread sqrt((0.01 + 0 + 0.04) / 3)
    assert [c[0] for c in p.calls[1:]] == [[3.0 - 0.1 * k * s for s in range(3)] for k in (1, 2, 3)]
    assert fc.value == pytest.approx(1.2)
    assert fc.std == pytest.approx(math.hypot(0.3, math.sqrt(0.05 / 3)))  # no extrapolation term
    # Fewer than 3 usable references: the extrapolation rule instead (min_runs is 3).
    fc = pl.forecast_run(
        curve, 5, _Line(std=0.3), extrapolation_std=0.5, min_points=3, references=refs[:2]
    )
    assert fc.value == pytest.approx(1.0) and fc.std == pytest.approx(math.hypot(0.3, 0.3))
    # min_points reaches the references' heads: with a NaN in each head (2 finite of 3) no
    # reference counts, so the extrapolation rule applies.
    holed = [pl.ReferenceRun(r.key, {**r.curve, 1: math.nan}, r.value) for r in refs]
    fc = pl.forecast_run(
        curve, 5, _Line(std=0.3), extrapolation_std=0.5, min_points=3, references=holed
    )
    assert fc.value == pytest.approx(1.0) and fc.std == pytest.approx(math.hypot(0.3, 0.3))


def test_forecast_run_caches_a_finished_runs_raw_forecast_by_key() -> None:
    cache = pl.ForecastCache()
    curve = {0: 2.0, 1: 1.8, 2: 1.6}
    a = pl.forecast_run(
        curve, 5, _Line(), extrapolation_std=0.0, min_points=3, cache=cache, key="k"
    )
    assert cache.get(("raw", "k", 3, 2, 5)) == (True, a)
    # A hit: the other predictor is not asked.
    p = _Line(value=7.0)
    b = pl.forecast_run(curve, 5, p, extrapolation_std=0.0, min_points=3, cache=cache, key="k")
    assert b == a and p.calls == []
    # A longer curve, another last step or target, or no key: forecast afresh.
    for c, t, k in (
        ({**curve, 3: 1.4}, 5, "k"),
        ({0: 2.0, 1: 1.8, 4: 1.6}, 5, "k"),
        (curve, 6, "k"),
        (curve, 5, None),
    ):
        p = _Line(value=7.0)
        assert (
            pl.forecast_run(c, t, p, extrapolation_std=0.0, min_points=3, cache=cache, key=k).value
            == 7.0
        )
        assert len(p.calls) == 1
    assert (
        pl.forecast_run({}, 5, _Line(), extrapolation_std=0.0, min_points=0, cache=cache, key="e")
        is None
    )
    # A cached None (too short) and a cached diverged forecast are returned as they are.
    assert (
        pl.forecast_run(
            {0: 1.0}, 5, _Line(), extrapolation_std=0.0, min_points=3, cache=cache, key="s"
        )
        is None
    )
    assert cache.get(("raw", "s", 1, 0, 5)) == (True, None)


def test_forecast_run_with_the_exponential_predictor() -> None:
    curve = {s: 1.0 + 2.0 * 0.7**s for s in range(8)}
    fc = pl.forecast_run(curve, 40, ExponentialPredictor(), extrapolation_std=0.5, min_points=5)
    assert fc.value == pytest.approx(1.0 + 2.0 * 0.7**40, abs=1e-3) and fc.last_step == 7
    # std >= the extrapolation term 0.5 * |forecast - last|
    assert fc.std >= 0.5 * abs(fc.value - curve[7]) - 1e-12


# ---------------------------------------------------------------------- regress_final
def _ref(key: str, at: dict[int, float], final: float | None, last: int = 9) -> pl.ReferenceRun:
    """A finished run reporting ``at`` and ``final`` at step ``last`` (its final value)."""
    return pl.ReferenceRun(key, {**at, last: final if final is not None else math.nan}, final)


def test_regress_final_by_hand() -> None:
    # log(final) = log(value at step 2) + log(0.5) on every reference: slope 1, no residuals.
    refs = [_ref(f"r{i}", {2: 2 * v}, v) for i, v in enumerate([1.0, 2.0, 4.0, 8.0])]
    fc = pl.regress_final({0: 9.0, 2: 6.0}, 9, refs, min_runs=3)
    assert fc == pl.FinalForecast(pytest.approx(3.0), pytest.approx(0.0, abs=1e-12), 2, 6.0,
                                  False, False)  # fmt: skip
    # With residuals: least squares on the logs, std = exp(fit) * prediction error.
    pts = [(1.0, 0.5), (2.0, 0.6), (4.0, 1.5), (8.0, 2.0)]
    refs = [_ref(f"r{i}", {2: x}, y) for i, (x, y) in enumerate(pts)]
    xs, ys = [math.log(x) for x, _ in pts], [math.log(y) for _, y in pts]
    n, xm, ym = 4, sum(xs) / 4, sum(ys) / 4
    sxx = sum((x - xm) ** 2 for x in xs)
    b = sum((x - xm) * (y - ym) for x, y in zip(xs, ys)) / sxx
    a = ym - b * xm
    s = math.sqrt(sum((y - a - b * x) ** 2 for x, y in zip(xs, ys)) / (n - 2))
    x0 = math.log(3.0)
    value = math.exp(a + b * x0)
    se = s * math.sqrt(1 + 1 / n + (x0 - xm) ** 2 / sxx)
    fc = pl.regress_final({2: 3.0}, 9, refs, min_runs=4)
    assert fc.value == pytest.approx(value, rel=1e-12)
    assert fc.std == pytest.approx(value * se, rel=1e-12)
    assert (fc.last_step, fc.last_value, fc.degenerate, fc.diverged) == (2, 3.0, False, False)
    # The std grows with the distance from the references' mean (leverage).
    far = pl.regress_final({2: 100.0}, 9, refs, min_runs=4)
    assert far.std / far.value > fc.std / fc.value


def test_regress_final_which_references_count() -> None:
    good = [_ref(f"g{i}", {2: 2 * v}, v) for i, v in enumerate([1.0, 2.0, 4.0])]
    skipped = [
        _ref("no-step", {1: 5.0}, 1.0),  # did not report the curve's last step
        _ref("short", {2: 5.0}, 1.0, last=8),  # did not reach the target
        _ref("no-value", {2: 5.0}, None),
        _ref("nan", {2: 5.0}, math.nan),
        _ref("zero", {2: 5.0}, 0.0),  # logs need positive values
        _ref("neg-at-step", {2: -1.0}, 1.0),
        _ref("inf-at-step", {2: math.inf}, 1.0),
    ]
    curve = {2: 6.0}
    assert pl.regress_final(curve, 9, good + skipped, min_runs=3).value == pytest.approx(3.0)
    assert pl.regress_final(curve, 9, good[:2] + skipped, min_runs=3) is None
    # Nothing to forecast, or nothing to fit.
    assert pl.regress_final({}, 9, good, min_runs=3) is None
    assert pl.regress_final({9: 1.0}, 9, good, min_runs=3) is None  # reached the target
    assert pl.regress_final({2: 0.0}, 9, good, min_runs=3) is None
    assert pl.regress_final({2: math.nan}, 9, good, min_runs=3) is None
    same = [_ref(f"s{i}", {2: 5.0}, v) for i, v in enumerate([1.0, 2.0, 3.0])]
    assert pl.regress_final(curve, 9, same, min_runs=3) is None  # no spread at the step


def test_forecast_run_prefers_the_same_step_regression_once_it_has_enough_references() -> None:
    curve = {0: 3.0, 1: 2.5, 2: 2.0}
    refs = [_ref(f"r{i}", {0: 4 * v, 1: 3 * v, 2: 2 * v}, v) for i, v in enumerate([1.0, 2.0, 4.0])]
    kw = dict(extrapolation_std=0.0, min_points=3)
    plain = pl.forecast_run(curve, 9, _Line(), references=refs, **kw)
    assert plain.value != pytest.approx(1.0)  # the line (and its calibration) say otherwise
    assert pl.forecast_run(curve, 9, _Line(), references=refs, same_step_refs=None, **kw) == plain
    fc = pl.forecast_run(curve, 9, _Line(), references=refs, same_step_refs=3, **kw)
    assert fc == pl.regress_final(curve, 9, refs, min_runs=3)
    assert fc.value == pytest.approx(1.0)
    # An iterator of references works as a list does.
    assert pl.forecast_run(curve, 9, _Line(), references=iter(refs), same_step_refs=3, **kw) == fc
    # Too few references at the step: the calibrated forecast, as without the option.
    assert pl.forecast_run(curve, 9, _Line(), references=refs, same_step_refs=4, **kw) == plain
    # No references, a curve too short, or a diverged one: as before.
    assert pl.forecast_run(curve, 9, _Line(), same_step_refs=3, **kw) == pl.forecast_run(
        curve, 9, _Line(), **kw
    )
    assert pl.forecast_run({2: 2.0}, 9, _Line(), references=refs, same_step_refs=3, **kw) is None
    diverged = pl.forecast_run(
        {0: 3.0, 1: 2.5, 2: math.inf}, 9, _Line(), references=refs, same_step_refs=3, **kw
    )
    assert diverged.diverged


def test_regress_final_caches_the_fit_by_reference_keys_step_and_target() -> None:
    refs = [_ref(f"r{i}", {1: 3 * v, 2: 2 * v}, v) for i, v in enumerate([1.0, 2.0, 4.0])]
    cache = pl.ForecastCache()
    fc = pl.regress_final({2: 6.0}, 9, refs, min_runs=3, cache=cache)
    assert fc.value == pytest.approx(3.0)
    # Same keys (finished runs cannot change): the fit is not redone, even from other data.
    lies = [r._replace(value=100 * r.value, curve={**r.curve, 9: 100 * r.value}) for r in refs]
    assert pl.regress_final({2: 8.0}, 9, lies, min_runs=3, cache=cache).value == pytest.approx(4.0)
    assert pl.regress_final({2: 8.0}, 9, iter(lies), min_runs=3, cache=cache).value == (
        pytest.approx(4.0)
    )
    # Another step, another target or another set of references: fitted afresh.
    assert pl.regress_final({1: 6.0}, 9, lies, min_runs=3, cache=cache).value == pytest.approx(200)
    two = pl.regress_final({2: 8.0}, 9, lies[:2], min_runs=2, cache=cache)
    assert two.value == pytest.approx(400.0)
    # The cached fit still answers min_runs for each call.
    assert pl.regress_final({2: 8.0}, 9, lies, min_runs=4, cache=cache) is None
