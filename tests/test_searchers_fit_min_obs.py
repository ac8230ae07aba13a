"""GPSearcher(fit_min_obs=...): fixed hyperparameters while a fit has too few points."""

from __future__ import annotations

import math
import random

import pytest

from autolr import ConfigError
from autolr.searchers import GPSearcher, Param


def _observe(s: GPSearcher, n: int) -> None:
    for _ in range(n):
        (cfg,) = s.suggest()
        s.observe(cfg, (math.log10(cfg["lr"]) + 1.5) ** 2, noise=0.01)


def _count_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import autolr.searchers._gp as gp

    gp._load_gp_libs()
    calls: list[int] = []
    real = gp.fit_gpytorch_mll

    def counting(mll, **kw):
        calls.append(len(mll.model.train_inputs[0]))
        return real(mll, **kw)

    monkeypatch.setattr(gp, "fit_gpytorch_mll", counting)
    return calls


def test_below_fit_min_obs_no_fit_and_prior_hyperparameters(monkeypatch):
    calls = _count_fits(monkeypatch)
    s = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, fit_min_obs=6)
    _observe(s, 3)
    models = []
    real_prior = s._prior_model

    def keep(train_x):
        m = real_prior(train_x)
        models.append(m)
        return m

    s._prior_model = keep  # type: ignore[method-assign]
    s._prior_candidate = lambda train_x: None  # type: ignore[method-assign]  # build the model
    _observe(s, 3)  # GP steps with 3, 4 and 5 observations: none may fit
    assert calls == []
    assert len(models) == 3
    m = models[-1]
    assert float(m.covar_module.base_kernel.lengthscale.detach()) == pytest.approx(1 / 3)
    assert float(m.covar_module.outputscale.detach()) == pytest.approx(1.0)
    assert float(m.mean_module.constant.detach()) == 0.0
    assert s.fitted_hyperparameters is None  # nothing was fitted yet
    _observe(s, 1)  # 6 observations: the first real fit, on all 6
    assert calls == [6]
    assert s.fitted_hyperparameters is not None


def test_at_fit_min_obs_the_gp_step_fits(monkeypatch):
    # The prior shortcut stops where fitting starts: a GP step on exactly fit_min_obs points.
    calls = _count_fits(monkeypatch)
    s = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, fit_min_obs=3)
    _observe(s, 4)  # 3 from the design, then the first GP step, on 3 observations
    assert calls == [3] and s.fitted_hyperparameters is not None


def test_default_fits_from_the_first_gp_step(monkeypatch):
    calls = _count_fits(monkeypatch)
    s = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0)
    _observe(s, 4)
    assert calls == [3]


def test_prior_model_still_finds_the_minimum_side():
    # With the quarter points observed on a bowl whose minimum sits between the two
    # lowest, the fourth point must land between them (the GP, not a random draw).
    s = GPSearcher([Param("x", 0.0, 1.0)], seed=1, design="stratified", fit_min_obs=6)
    for _ in range(3):
        (cfg,) = s.suggest()
        s.observe(cfg, (cfg["x"] - 0.4) ** 2, noise=0.0)
    xs = sorted(c["x"] for c, _ in s.observations)
    (nxt,) = s.suggest()
    assert s.n_fallbacks == 0
    assert xs[0] < nxt["x"] < xs[-1]
    assert abs(nxt["x"] - 0.4) < abs(min(xs, key=lambda x: abs(x - 0.4)) - 0.4) + 0.15


def _cases(n: int) -> list[tuple[list[float], list[float | None]]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        k = rng.choice([1, 2, 3, 3, 4, 5])
        vals = [
            rng.choice([math.inf, math.nan, 1.0]) if rng.random() < 0.15 else rng.uniform(0.01, 3)
            for _ in range(k)
        ]
        noises = [rng.choice([None, 0.0, rng.uniform(0.0, 0.5)]) for _ in range(k)]
        noises[0] = 0.05  # with a given noise the shortcut applies
        out.append((vals, noises))
    return out


@pytest.mark.parametrize("log_values", [True, False])
def test_the_prior_shortcut_suggests_what_the_prior_model_does(log_values):
    """Below ``fit_min_obs`` a LogEI suggestion reads the prior model's posterior without
    building the model (``_prior_candidate``): the same point, bit for bit, on bowls, ties,
    failures (inf, NaN), zero and missing noises and 1-5 observations."""
    built = []

    def suggest(vals, noises, shortcut):
        s = GPSearcher(
            [Param("lr", 1e-3, 1.0, log=True)],
            seed=len(vals),
            design="stratified",
            fit_min_obs=6,
            log_values=log_values,
        )
        for cfg, v, n in zip(s.suggest(len(vals)), vals, noises):
            s.observe(cfg, v, noise=n)
        real = s._prior_model
        s._prior_model = lambda x: built.append(shortcut) or real(x)  # type: ignore[method-assign]
        if not shortcut:
            s._prior_candidate = lambda x: None  # type: ignore[method-assign]
        (cfg,) = s.suggest()
        assert s.n_fallbacks == 0
        return cfg["lr"]

    for vals, noises in _cases(40):
        assert suggest(vals, noises, True) == suggest(vals, noises, False), (vals, noises)
    # Only the model path built one (below n_initial, or with every value failed, the
    # suggestion comes from the design).
    assert len(built) >= 20 and not any(built)


def test_the_prior_shortcut_leaves_other_cases_to_the_model():
    s = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, fit_min_obs=6)
    for cfg in s.suggest(3):
        s.observe(cfg, 1.0 + cfg["lr"])  # no noise given: the model infers it
    built = []
    real = s._prior_model
    s._prior_model = lambda x: built.append(1) or real(x)  # type: ignore[method-assign]
    s.suggest()
    s.suggest(2)  # two points: greedy on the model
    u = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, fit_min_obs=6, acquisition="ucb")
    for cfg in u.suggest(3):
        u.observe(cfg, 1.0 + cfg["lr"], noise=0.1)
    real_u = u._prior_model
    u._prior_model = lambda x: built.append(2) or real_u(x)  # type: ignore[method-assign]
    u.suggest()
    assert built == [1, 1, 2]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_fit_min_obs_is_checked(bad):
    with pytest.raises(ConfigError, match="fit_min_obs"):
        GPSearcher([Param("lr", 1e-3, 1.0, log=True)], fit_min_obs=bad)
