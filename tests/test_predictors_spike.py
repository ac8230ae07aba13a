"""ExponentialPredictor with one huge but finite spike (a loss that blew up for a step).

The series is normalised by its largest deviation before outliers are trimmed; a 1e200 spike
was trimmed, but the kept points, ~1e-200 on that scale, had squares that underflow to 0,
and the forecast turned degenerate ("no decrease (flat series)")."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from autolr.predictors import ExponentialPredictor

BASE = [2.0 * math.exp(-k / 10) + 0.3 + 0.01 * math.sin(1.7 * k) for k in range(40)]


def _spiked(value: float, at: int = 20) -> list[float]:
    return [*BASE[:at], value, *BASE[at + 1 :]]


@pytest.mark.parametrize("spike", [1e160, 1e200, -1e200, 1e308, -1e308])
@pytest.mark.parametrize("at", [1, 20, 38, 39])
def test_a_huge_finite_spike_forecasts_as_an_infinite_one(spike, at) -> None:
    """The trimming budget left after the spike equals the one of the series without it, so
    the forecast is the one for ``inf`` there (dropped as non-finite), field for field; at
    the last step only the normalisation of the steps differs (span 39 instead of 38).

    (A spike at the first step is not trimmed, at any size: the model explains it as a
    steep initial decay.)"""
    p = ExponentialPredictor()
    got = p.forecast(_spiked(spike, at), target=100)
    want = p.forecast(_spiked(math.inf, at), target=100)
    assert not got.degenerate and got.n_used == 39
    assert got.reason == "" and want.reason == "dropped 1 non-finite value"
    if at < 39:
        assert dataclasses.replace(got, reason=want.reason) == want
    else:
        assert got.value == pytest.approx(want.value, rel=1e-8)
        assert got.std == pytest.approx(want.std, rel=1e-6)
    assert got.value == pytest.approx(0.3, abs=2e-3)


def test_constant_series_with_a_huge_spike_is_flat() -> None:
    fc = ExponentialPredictor().forecast([1.0] * 20 + [1e200] + [1.0] * 19, target=100)
    assert fc.degenerate and fc.reason == "no decrease (flat series)"
    assert (fc.value, fc.std, fc.n_used) == (1.0, 0.0, 39)


def test_two_huge_spikes_use_the_whole_trimming_budget() -> None:
    y = _spiked(3e200, 5)
    y[30] = 1e200
    p = ExponentialPredictor(trim=0.05)  # budget 2 of 40
    fc = p.forecast(y, target=100)
    assert not fc.degenerate and fc.n_used == 38
    assert fc.value == pytest.approx(0.3, abs=2e-3)


def test_renormalisation_never_runs_on_ordinary_curves(monkeypatch) -> None:
    """Spikes up to 1e90 times the curve (and curves of any scale) keep the ordinary path:
    the kept points are never below 1e-100 of the normalisation scale there."""

    def boom(*args, **kwargs):
        raise AssertionError("renormalised")

    monkeypatch.setattr(ExponentialPredictor, "_refit_kept", boom)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(8, 60))
        t = np.arange(n, dtype=float)
        y = 2.0 * np.exp(-0.05 * t) + 0.3 + 0.01 * rng.standard_normal(n)
        for _ in range(int(rng.integers(1, 4))):
            y[int(rng.integers(0, n))] = 10.0 ** float(rng.uniform(1, 90)) * rng.choice([-1, 1])
        y = y * 10.0 ** float(rng.uniform(-150, 150))
        ExponentialPredictor(trim=float(rng.choice([0.05, 0.2]))).forecast(y, target=200)
