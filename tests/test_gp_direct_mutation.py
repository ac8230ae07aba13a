"""GPSearcher's cached-Cholesky posterior, its warm-start state and the sampler's lookup.

Written for the survivors of the mutation run of issue 18 over the code of commits 64cd24a
and 5a096d9 (mutation/README.md). The oracles are botorch's own analytic acquisitions on
the same fitted model, the interpreter's own error for each malformed entry, and the
records the sampler stored in the study.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import pytest
import torch

import autolr.searchers._gp as gp_module
from autolr._errors import StateError
from autolr.searchers import GPSearcher, Param

F64 = torch.float64


def _fitted(dim: int, noise: float | None) -> tuple[GPSearcher, Any, torch.Tensor]:
    params = [Param(f"x{i}", 0.0, 1.0) for i in range(dim)]
    s = GPSearcher(params, seed=3, num_restarts=2, raw_samples=8)
    g = torch.Generator().manual_seed(10 + dim)
    for _ in range(9):
        c = {p.name: float(torch.rand((), generator=g)) for p in params}
        s.observe(c, sum((v - 0.4) ** 2 for v in c.values()), noise=noise)
    x = s.configs_to_unit([c for c, _ in s.observations])
    return s, s._fit_model(x), x


@pytest.mark.parametrize("noise", [None, 2e-3], ids=["inferred", "small-fixed"])
@pytest.mark.parametrize("dim", [1, 3])
def test_direct_mean_and_sigma_defaults_are_botorchs(dim: int, noise: float | None) -> None:
    """Called with its defaults (sigma computed, ``min_var`` 1e-12) and with an explicit
    floor, the direct posterior returns what botorch's ``_mean_and_sigma`` returns for the
    same model; at the training points too."""
    _, model, x = _fitted(dim, noise)
    direct = gp_module._DirectPosterior(model, x)
    reference = gp_module.UpperConfidenceBound(model, beta=1.0)  # botorch's own
    g = torch.Generator().manual_seed(dim)
    at = torch.cat([torch.rand(7, 1, dim, generator=g, dtype=F64), x[:, None]])
    with torch.no_grad():
        mean, sigma = direct.mean_and_sigma(at)
        want_mean, want_sigma = reference._mean_and_sigma(at)
        assert sigma is not None and sigma.shape == want_sigma.shape == (len(at), 1)
        assert torch.allclose(mean, want_mean, rtol=1e-6, atol=1e-9)
        assert torch.allclose(sigma, want_sigma, rtol=1e-5, atol=1e-9)
        # A floor above every posterior variance here (outcomes are below 1): sigma = 0.9.
        _, floored = direct.mean_and_sigma(at, True, 0.81)
        _, want_floored = reference._mean_and_sigma(at, min_var=0.81)
        assert torch.allclose(floored, want_floored, atol=1e-12)
        assert torch.allclose(floored, torch.full_like(floored, 0.9), atol=1e-12)


def _error_of(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:  # any error: its repr is the expected text
        return repr(exc)
    raise AssertionError("no error")


def _state_with(warm: Any) -> dict[str, Any]:
    s = GPSearcher([Param("a", 0.0, 1.0)], seed=1)
    s.observe({"a": 0.25}, 1.0)
    return {**s.state_dict(), "gp_warm_start": warm}


def test_malformed_warm_start_state_messages_name_each_problem() -> None:
    """Every kind of malformed ``gp_warm_start`` entry is a StateError naming the entry and
    the underlying problem (a missing key, a non-number, a non-mapping, a non-list), and
    nothing is loaded."""
    # The underlying problem as the interpreter words it (the message holds its repr).
    cases = [
        ({"fit_n": 1, "cold_n": 0}, "KeyError('hypers')"),
        ({"hypers": {}, "cold_n": 0}, "KeyError('fit_n')"),
        ({"hypers": {}, "fit_n": 1}, "KeyError('cold_n')"),
        ({"hypers": [], "fit_n": 1, "cold_n": 0}, _error_of(lambda: [].items())),  # type: ignore[attr-defined]
        ({"hypers": {"a": 1.0}, "fit_n": 1, "cold_n": 0}, _error_of(lambda: list(1.0))),  # type: ignore[call-overload]
        ({"hypers": {"a": ["x"]}, "fit_n": 1, "cold_n": 0}, _error_of(lambda: float("x"))),
        ({"hypers": {}, "fit_n": None, "cold_n": 0}, _error_of(lambda: int(None))),  # type: ignore[arg-type]
        ({"hypers": {}, "fit_n": 1, "cold_n": "2.5"}, _error_of(lambda: int("2.5"))),
        ("hypers", _error_of(lambda: operator.getitem("hypers", "hypers"))),
    ]
    for warm, problem in cases:
        target = GPSearcher([Param("a", 0.0, 1.0)], seed=2)
        with pytest.raises(StateError) as info:
            target.load_state_dict(_state_with(warm))
        assert str(info.value) == f"state gp_warm_start is not valid: {problem}", warm
        assert type(info.value) is StateError
        assert target.observations == [] and target.state_dict()["gp_warm_start"] is None


def test_warm_start_state_is_restored_as_plain_data_and_replaced_or_cleared() -> None:
    params = [Param("a", 0.0, 1.0)]
    loose = {"hypers": {7: (1, True), "b": []}, "fit_n": 5.0, "cold_n": "3", "extra": 1}
    clean = {"hypers": {"7": [1.0, 1.0], "b": []}, "fit_n": 5, "cold_n": 3}
    s = GPSearcher(params, seed=2)
    s._warm_covar = object()  # type: ignore[assignment]
    s.load_state_dict(_state_with(loose))
    assert s.observations == [({"a": 0.25}, 1.0)]
    got = s.state_dict()["gp_warm_start"]
    assert got == clean and s._warm_covar is None
    assert [type(v) for v in got["hypers"]["7"]] == [float, float]
    assert type(got["fit_n"]) is int and type(got["cold_n"]) is int
    # Handed out as copies: changing them does not change the searcher.
    got["hypers"]["7"].append(2.0)
    assert s.state_dict()["gp_warm_start"] == clean
    # Another one replaces it; a state without one (an older version, another searcher)
    # or with None clears it.
    s.load_state_dict(_state_with({"hypers": {"h": [0.5]}, "fit_n": 6, "cold_n": 2}))
    assert s.state_dict()["gp_warm_start"] == {"hypers": {"h": [0.5]}, "fit_n": 6, "cold_n": 2}
    older = {k: v for k, v in _state_with(None).items() if k != "gp_warm_start"}
    s.load_state_dict(older)
    assert s.state_dict()["gp_warm_start"] is None
    s.load_state_dict(_state_with(clean))
    s.load_state_dict(_state_with(None))
    assert s.state_dict()["gp_warm_start"] is None


def test_direct_posterior_is_used_only_for_one_point_without_pending() -> None:
    """The analytic acquisition reads the cached factor for one point without pending points;
    with pending points or a batch it is botorch's Monte-Carlo one on the model (and its
    incumbent is still the best posterior mean at the training points)."""
    s, model, x = _fitted(2, None)
    empty = torch.empty(0, 2, dtype=F64)
    one = s._make_acquisition(model, x, 1, empty)
    assert type(one).__name__ == "DirectLogExpectedImprovement"
    assert isinstance(one.direct, gp_module._DirectPosterior)
    with torch.no_grad():
        best = model.posterior(x).mean.max()
    for n, pending in ((1, x[:1] * 0.5), (2, empty)):
        acqf = s._make_acquisition(model, x, n, pending)
        assert type(acqf).__name__ == "qLogExpectedImprovement"
        assert float(acqf.best_f) == pytest.approx(float(best), abs=1e-9)
    s.acquisition = "ucb"
    assert type(s._make_acquisition(model, x, 1, empty)).__name__ == "DirectUpperConfidenceBound"
    batch = s._make_acquisition(model, x, 2, empty)
    assert type(batch).__name__ == "qUpperConfidenceBound"
    assert math.isclose(batch.beta_prime, math.sqrt(s.beta * math.pi / 2))


def _sampler_study(n_trials: int) -> Any:
    optuna = pytest.importorskip("optuna")
    from autolr.integrations.optuna import AutoLRSSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=AutoLRSSampler(seed=1, n_startup_trials=3))
    study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.3) ** 2, n_trials=n_trials)
    return study


def test_sampler_gathers_the_fit_of_the_latest_other_trial() -> None:
    """``_gather`` hands the GP the hyperparameters stored by the most recent *other* trial
    over the same box (a record of the asking trial itself is skipped) and reports none,
    under the same two keys, before any GP step."""
    import json

    from optuna.distributions import FloatDistribution

    space = {"x": FloatDistribution(-1.0, 1.0)}
    signature = [["x", -1.0, 1.0, False]]
    early = _sampler_study(3)  # Sobol points only: nothing stored yet
    _, info = early.sampler._gather(early, None, space, signature)
    assert info["warm_start_from"] is None and info["_hypers"] is None
    assert {k for k in info if k.startswith("_") or "warm" in k} == {"warm_start_from", "_hypers"}

    study = _sampler_study(5)
    study.ask(space)  # trial 5's GP step stores its own fit
    own, previous = study.trials[5], study.trials[4]
    key = "autolr:gp_hypers:0"
    assert key in own.system_attrs
    _, info = study.sampler._gather(study, own, space, signature)
    assert info["warm_start_from"] == 4
    assert info["_hypers"] == json.loads(previous.system_attrs[key])["hypers"]


def test_sampler_gp_step_starts_from_the_stored_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GP step's searcher starts its fit from the hyperparameters the previous trial
    stored (``init_hyperparameters``), and stores its own fit for the next one."""
    import json

    from optuna.distributions import FloatDistribution

    study = _sampler_study(5)
    seen: list[Any] = []
    real = GPSearcher.suggest

    def spy(self: GPSearcher, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.init_hyperparameters)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GPSearcher, "suggest", spy)
    study.ask({"x": FloatDistribution(-1.0, 1.0)})
    key = "autolr:gp_hypers:0"
    previous, own = (json.loads(study.trials[i].system_attrs[key]) for i in (4, 5))
    assert seen == [previous["hypers"]] and previous["hypers"]
    assert set(own) == {"space", "hypers"} and own["space"] == [["x", -1.0, 1.0, False]]
    assert study.sampler.last_info["warm_start_from"] == 4
    assert "_hypers" not in study.sampler.last_info
