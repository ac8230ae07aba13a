"""Searcher misuse and extreme-value bugs found by probing: a huge finite observation (1e200)
that turned GPSearcher into random search, load_state_dict accepting what observe() refuses,
and constructor arguments whose bad contents raised raw errors (or were taken as truthy)."""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import pytest
import torch

import autolr.searchers._gp as gp_module
from autolr import ConfigError, ConfigTypeError, StateError
from autolr.searchers import GPSearcher, Param, RandomSearcher

FAST = {"num_restarts": 2, "raw_samples": 32}
LIN_1D = [Param("x", 0.0, 1.0)]
LIN_2D = [Param("x", 0.0, 1.0), Param("y", 0.0, 1.0)]


def _bowl(cfg: dict[str, float]) -> float:
    return sum((v - 0.3) ** 2 for v in cfg.values())


# ------------------------------------------------------------ huge finite values (GP)
def _run(
    params: list[Param], value_at: dict[int, float], steps: int, noise: float | None, **kw
) -> tuple[GPSearcher, list[dict[str, float]]]:
    s = GPSearcher(params, seed=0, n_initial=3, **{**FAST, **kw})
    cfgs = []
    for k in range(steps):
        (c,) = s.suggest()
        cfgs.append(c)
        s.observe(c, value_at.get(k, _bowl(c)), noise=noise)
    return s, cfgs


@pytest.mark.parametrize("params", [LIN_1D, LIN_2D], ids=["1d", "2d"])
@pytest.mark.parametrize("noise", [None, 0.01])
@pytest.mark.parametrize("huge", [1e200, -1e200, 1e308])
def test_one_huge_finite_value_keeps_the_gp_working(params, noise, huge) -> None:
    """Before: every GP step after one 1e200 observation fell back to quasi-random points
    (the standardisation squared it to inf); nan, a failure, was handled fine."""
    s, cfgs = _run(params, {1: huge}, 8, noise)
    assert s.n_fallbacks == 0, s._gp_error
    assert all(p.low <= c[p.name] <= p.high for c in cfgs for p in params)
    assert s.observations[1][1] == huge  # what is observed stays raw


def test_huge_value_and_a_failure_whose_penalty_would_overflow() -> None:
    """The penalty of a failure beside 1e308 (worst + range) overflowed to inf."""
    s, _ = _run(LIN_1D, {0: 1e308, 1: -1e308, 2: math.nan}, 6, None)
    assert s.n_fallbacks == 0, s._gp_error
    assert s.observations[2][1] == sys.float_info.max


@pytest.mark.parametrize(
    ("params", "kw"), [(LIN_1D, {}), (LIN_1D, {"fit_min_obs": 5}), (LIN_2D, {})]
)
def test_huge_values_are_modelled_as_the_same_data_scaled_by_a_power_of_two(params, kw) -> None:
    """The fallback divides values and noises by 2**k: a run with 1e200 suggests exactly what
    a run observing the pre-scaled values (an ordinary run) suggests."""
    huge = 1e200
    k = math.frexp(huge)[1]
    noise = 0.01

    def run(scale: int) -> list[dict[str, float]]:
        s = GPSearcher(params, seed=3, n_initial=3, **{**FAST, **kw})
        out = []
        for i in range(7):
            (c,) = s.suggest()
            out.append(c)
            v = huge if i == 0 else _bowl(c)
            s.observe(c, math.ldexp(v, -scale), noise=math.ldexp(noise, -scale))
        assert s.n_fallbacks == 0, s._gp_error
        return out

    assert run(0) == run(k)


def test_the_rescaling_fallback_never_runs_on_ordinary_values(monkeypatch) -> None:
    """Values up to 1e150 (variance up to 1e300) take the ordinary path, unchanged."""

    def boom(*args, **kwargs):
        raise AssertionError("fallback ran")

    monkeypatch.setattr(gp_module, "_scaled_down", boom)
    for big, noise in ((1e150, None), (1e3, 0.1), (-1e100, 0.01)):
        s, _ = _run(LIN_1D, {1: big}, 6, noise)
        assert s.n_fallbacks == 0
    s, _ = _run(LIN_2D, {1: 1e150}, 5, 0.01)
    assert s.n_fallbacks == 0
    monkeypatch.undo()
    s, _ = _run(LIN_1D, {1: 1e160}, 5, None)  # variance 1e320: the fallback
    assert s.n_fallbacks == 0


# -------------------------------------------------------- load_state_dict validation
def _observed() -> GPSearcher:
    s = GPSearcher(LIN_2D, seed=0, n_initial=2)
    for v in (1.0, 2.0, 0.5):
        (c,) = s.suggest()
        s.observe(c, v, noise=0.1)
    return s


def _set(state: dict, key: str, index: tuple[int, ...], value: float) -> dict:
    state = copy.deepcopy(state)
    state[key][index] = value
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda st: _set(st, "configs", (0, 0), math.nan), "state configs must be finite"),
        (lambda st: _set(st, "configs", (2, 1), math.inf), "state configs must be finite"),
        (lambda st: _set(st, "noises", (1,), -5.0), "state noises must be nan (none given)"),
        (lambda st: _set(st, "noises", (1,), math.inf), "state noises must be nan (none given)"),
        (lambda st: {**st, "n_suggest_calls": "3"}, "state 'n_suggest_calls' is not valid"),
        (lambda st: {**st, "n_suggest_calls": 3.0}, "state 'n_suggest_calls' is not valid"),
        (lambda st: {**st, "n_suggest_calls": True}, "state 'n_suggest_calls' is not valid"),
        (lambda st: {**st, "n_sobol_drawn": "2"}, "state 'n_sobol_drawn' is not valid"),
        (lambda st: {**st, "n_sobol_drawn": 2.5}, "state 'n_sobol_drawn' is not valid"),
        (lambda st: {**st, "seed": "5"}, "state 'seed' is not valid"),
        (lambda st: {**st, "seed": 5.0}, "state 'seed' is not valid"),
        (lambda st: {**st, "seed": None}, "state 'seed' is not valid"),
    ],
)
def test_load_state_dict_refuses_what_observe_refuses_and_changes_nothing(change, message):
    good = _observed().state_dict()
    target = GPSearcher(LIN_2D, seed=7, n_initial=2)
    target.observe({"x": 0.9, "y": 0.9}, 3.0)
    before = target.state_dict()
    with pytest.raises(StateError) as info:
        target.load_state_dict(change(good))
    assert str(info.value).startswith(message), str(info.value)
    after = target.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value.nan_to_num(-1.0), after[key].nan_to_num(-1.0)), key
        else:
            assert after[key] == value, key


def test_load_state_dict_still_takes_valid_variants() -> None:
    good = _observed().state_dict()
    s = RandomSearcher(LIN_2D, seed=1)
    state = _set(_set(good, "noises", (0,), math.nan), "noises", (1,), 0.0)
    state = {**state, "n_suggest_calls": np.int64(4), "seed": np.int64(11)}
    state = _set(state, "configs", (0, 0), 7.0)  # out of the box: clipped, as observe does
    state = _set(state, "values", (2,), math.nan)  # a failure, as observe accepts
    s.load_state_dict(state)
    assert s.noises == [None, 0.0, 0.1] and s.seed == 11
    assert s.observations[0][0]["x"] == 1.0 and s.failed == [False, False, True]
    assert type(s.state_dict()["n_suggest_calls"]) is int


# ---------------------------------------------------------------- constructor checks
LS = "covar_module.base_kernel.raw_lengthscale"


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        (
            {"init_hyperparameters": {"a": 1.0}},
            ConfigError,
            "init_hyperparameters has an unknown name 'a'",
        ),
        (
            {"init_hyperparameters": {LS: 1.0}},
            ConfigTypeError,
            f"init_hyperparameters[{LS!r}] must be a flat list",
        ),
        (
            {"init_hyperparameters": {LS: "ab"}},
            ConfigTypeError,
            f"init_hyperparameters[{LS!r}] must be a flat list",
        ),
        (
            {"init_hyperparameters": {LS: ["a", "b"]}},
            ConfigTypeError,
            f"init_hyperparameters[{LS!r}][0] must be a finite float",
        ),
        (
            {"init_hyperparameters": {LS: [1.0, math.nan]}},
            ConfigError,
            f"init_hyperparameters[{LS!r}][1] must be a finite float",
        ),
        (
            {"init_hyperparameters": {LS: [1.0]}},
            ConfigError,
            f"init_hyperparameters[{LS!r}] must have 2 value(s), got 1",
        ),
        (
            {"init_hyperparameters": {"mean_module.raw_constant": [1.0, 2.0]}},
            ConfigError,
            "init_hyperparameters['mean_module.raw_constant'] must have 1 value(s)",
        ),
        (
            {"fit_options": {"maxiter": "100"}},
            ConfigTypeError,
            "fit_options['maxiter'] must be an int >= 1, got '100'",
        ),
        (
            {"fit_options": {"maxiter": 0}},
            ConfigError,
            "fit_options['maxiter'] must be an int >= 1, got 0",
        ),
        (
            {"fit_options": {"maxfun": 10.0}},
            ConfigTypeError,
            "fit_options['maxfun'] must be an int >= 1",
        ),
        (
            {"fit_options": {"ftol": -1e-3}},
            ConfigError,
            "fit_options['ftol'] must be a finite float >= 0",
        ),
        (
            {"fit_options": {"gtol": math.nan}},
            ConfigError,
            "fit_options['gtol'] must be a finite float >= 0",
        ),
        (
            {"fit_options": {"ftol": "tight"}},
            ConfigTypeError,
            "fit_options['ftol'] must be a finite float",
        ),
        (
            {"fit_options": {"tol": 1e-3}},
            ConfigError,
            "fit_options has unknown keys 'tol'; allowed: maxiter",
        ),
        ({"fast_1d": "no"}, ConfigTypeError, "fast_1d must be a bool or numpy.bool, got str"),
        ({"fast_1d": 0}, ConfigTypeError, "fast_1d must be a bool or numpy.bool, got int"),
    ],
)
def test_gp_constructor_refuses_bad_contents(kw, error, message) -> None:
    with pytest.raises(error) as info:
        GPSearcher(LIN_2D, **kw)
    assert str(info.value).startswith(message), str(info.value)


def test_gp_constructor_takes_valid_contents_as_plain_data() -> None:
    init = {
        LS: np.array([0.5, -1.0]),  # raw values: any sign
        "covar_module.raw_outputscale": torch.tensor([-2.0]),
        "mean_module.raw_constant": (0,),
        "likelihood.noise_covar.raw_noise": [3],
    }
    s = GPSearcher(
        LIN_2D, init_hyperparameters=init, fit_options={"maxiter": np.int64(7), "ftol": 0}
    )
    assert s.init_hyperparameters == {
        LS: [0.5, -1.0],
        "covar_module.raw_outputscale": [-2.0],
        "mean_module.raw_constant": [0.0],
        "likelihood.noise_covar.raw_noise": [3.0],
    }
    assert all(type(x) is float for v in s.init_hyperparameters.values() for x in v)
    assert s.fit_options == {"maxiter": 7, "ftol": 0.0}
    assert type(s.fit_options["maxiter"]) is int
    all_opts = {"maxiter": 5, "maxfun": 50, "maxcor": 5, "maxls": 10, "ftol": 1e-6, "gtol": 1e-4}
    assert GPSearcher(LIN_1D, fit_options=all_opts).fit_options == all_opts


def test_gp_runs_with_every_fit_option_and_the_fitted_names_are_the_known_ones() -> None:
    """The allowed options reach scipy without error, and the names init_hyperparameters
    accepts are those of both models the searcher builds (given and inferred noise)."""
    opts = {"maxiter": 5, "maxfun": 50, "maxcor": 5, "maxls": 10, "ftol": 1e-6, "gtol": 1e-4}
    names: set[str] = set()
    for params in (LIN_1D, LIN_2D):
        for noise in (None, 0.05):
            s, _ = _run(params, {}, 5, noise, fit_options=opts)
            assert s.n_fallbacks == 0, s._gp_error
            fitted = s.fitted_hyperparameters
            assert fitted is not None
            for name, v in fitted.items():
                size = gp_module._HYPER_SIZES[name]
                assert len(v) == (len(params) if size is None else size), name
            names |= set(fitted)
            # a fit's own values are a valid warm start
            GPSearcher(params, init_hyperparameters=fitted)
    assert names == set(gp_module._HYPER_SIZES)


@pytest.mark.parametrize("cls", [GPSearcher, RandomSearcher])
def test_params_must_be_a_sequence_of_param(cls) -> None:
    for bad in (Param("x", 0.0, 1.0), 5, None, "x"):
        with pytest.raises(ConfigTypeError) as info:
            cls(bad)
        assert str(info.value).startswith("params must be a sequence of Param"), str(info.value)
    assert cls(iter([Param("x", 0.0, 1.0)])).names == ("x",)  # any iterable of Param
