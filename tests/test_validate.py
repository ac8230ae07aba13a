"""Tests of the shared argument checks in :mod:`autolr._validate`."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from autolr import AutoLRS, ConfigError, ConfigTypeError, HypergradientLR
from autolr._validate import (
    check_bounds,
    check_callable,
    check_choice,
    check_float,
    check_instance,
    check_int,
)
from autolr.federated import FedHyperClient, FedHyperServer


def test_check_int_accepts_and_canonicalises() -> None:
    assert check_int("n", 3, minimum=1) == 3
    out = check_int("n", np.int64(4), minimum=0, maximum=4)
    assert out == 4 and type(out) is int


@pytest.mark.parametrize(
    ("value", "kw", "exc", "msg"),
    [
        (True, {"minimum": 0}, ConfigTypeError, "n must be an int >= 0, got True"),
        (1.0, {"minimum": 0}, ConfigTypeError, "n must be an int >= 0, got 1.0"),
        ("2", {}, ConfigTypeError, "n must be an int, got '2'"),
        (0, {"minimum": 1}, ConfigError, "n must be an int >= 1, got 0"),
        (6, {"maximum": 5}, ConfigError, "n must be an int <= 5, got 6"),
        (6, {"minimum": 1, "maximum": 5}, ConfigError, "n must be an int in [1, 5], got 6"),
    ],
)
def test_check_int_rejects(value: object, kw: dict, exc: type, msg: str) -> None:
    with pytest.raises(exc) as info:
        check_int("n", value, **kw)
    assert str(info.value) == msg


def test_check_int_errors_are_builtin_compatible() -> None:
    with pytest.raises(TypeError):
        check_int("n", "x")
    with pytest.raises(ValueError):
        check_int("n", -1, minimum=0)


def test_check_float_accepts_and_canonicalises() -> None:
    out = check_float("lr", 1, minimum=0, min_inclusive=False)
    assert out == 1.0 and type(out) is float
    assert check_float("p", np.float32(0.5), minimum=0, maximum=1) == 0.5
    assert check_float("p", 1.0, minimum=0, maximum=1) == 1.0  # inclusive edge
    assert check_float("x", math.inf, finite=False) == math.inf
    assert check_float("x", torch.tensor(0.25)) == 0.25  # one-element tensors read as floats
    with pytest.raises(ConfigTypeError, match="x must be a finite float"):
        check_float("x", torch.ones(2))


@pytest.mark.parametrize(
    ("value", "kw", "exc", "msg"),
    [
        (True, {}, ConfigTypeError, "lr must be a finite float, got True"),
        ("0.1", {}, ConfigTypeError, "lr must be a finite float, got '0.1'"),
        (math.nan, {}, ConfigError, "lr must be a finite float, got nan"),
        (math.inf, {"minimum": 0}, ConfigError, "lr must be a finite float >= 0, got inf"),
        (
            0.0,
            {"minimum": 0, "min_inclusive": False},
            ConfigError,
            "lr must be a finite float > 0, got 0.0",
        ),
        (
            1.0,
            {"minimum": 0, "maximum": 1, "max_inclusive": False},
            ConfigError,
            "lr must be a finite float in [0, 1), got 1.0",
        ),
        (2.0, {"maximum": 1}, ConfigError, "lr must be a finite float <= 1, got 2.0"),
        (
            math.nan,
            {"minimum": 0, "finite": False},
            ConfigError,
            "lr must be a float >= 0, got nan",
        ),
    ],
)
def test_check_float_rejects(value: object, kw: dict, exc: type, msg: str) -> None:
    with pytest.raises(exc) as info:
        check_float("lr", value, **kw)
    assert str(info.value) == msg


def test_check_bounds() -> None:
    assert check_bounds("lr_bounds", [1e-4, 1]) == (1e-4, 1.0)
    assert check_bounds("b", (-1, 2)) == (-1.0, 2.0)
    for bad in [(1, 1), (2, 1), (0, 1), (1e-3, math.inf), (1,), (1, 2, 3), 5, ("a", 1), (True, 2)]:
        with pytest.raises(ConfigError, match=r"lr_bounds must be a pair \(low, high\)"):
            check_bounds("lr_bounds", bad, positive=True)
    with pytest.raises(ConfigError, match="with 0 < low < high"):
        check_bounds("lr_bounds", (0, 1), positive=True)


def test_check_choice() -> None:
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ConfigError) as info:
        check_choice("mode", "c", ["a", "b"])
    assert str(info.value) == "mode must be one of 'a', 'b', got 'c'"
    with pytest.raises(ValueError):
        check_choice("mode", 1, iter(["a"]))


def test_check_callable_and_instance() -> None:
    assert check_callable("fn", len) is len
    with pytest.raises(ConfigTypeError, match="fn must be callable, got int 3"):
        check_callable("fn", 3)
    assert check_instance("x", 3, (int, float)) == 3
    with pytest.raises(ConfigTypeError) as info:
        check_instance("x", "s", (int, float))
    assert str(info.value) == "x must be an int or float, got str"


def test_wrong_type_is_also_a_config_error() -> None:
    # the replaced checkers raised ConfigError (ValueError) for a non-int count
    for call in (lambda: check_int("k", 1.5, minimum=1), lambda: check_float("x", "a")):
        with pytest.raises(ConfigError):
            call()
        with pytest.raises(ConfigTypeError):
            call()


# ---------------------------------------------------------------------- renamed names
# Every old name works for one release with exactly one DeprecationWarning naming the new one.


def _one_deprecation(record: list[warnings.WarningMessage], new: str) -> None:
    deps = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert len(deps) == 1, [str(w.message) for w in deps]
    assert repr(new) in str(deps[0].message) or new in str(deps[0].message)
    assert deps[0].filename == __file__  # points at the caller's line


def _sgd(*groups: float) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    ps = [torch.nn.Parameter(torch.zeros(2)) for _ in groups]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, groups)])
    return ps, opt


@pytest.mark.parametrize(
    ("build", "old", "new", "value"),
    [
        (lambda **kw: FedHyperClient(_sgd(0.1)[1], **kw), "hyper_lr", "hypergrad_lr", 0.5),
        (lambda **kw: FedHyperServer([torch.zeros(2)], **kw), "hyper_lr", "hypergrad_lr", 0.5),
        (
            lambda **kw: FedHyperServer([torch.zeros(2)], **kw),
            "local_hyper_lr",
            "local_hypergrad_lr",
            0.25,
        ),
    ],
)
def test_renamed_constructor_arguments(build: Any, old: str, new: str, value: float) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        obj = build(**{old: value})
    _one_deprecation(record, new)
    assert getattr(obj, new) == value  # the old name set the new argument
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert getattr(obj, old) == value  # old attribute still reads it
    _one_deprecation(record, new)
    with pytest.raises(ConfigError, match=f"got both {new}="):
        build(**{old: value, new: value * 3})
    with pytest.raises(TypeError, match="unexpected keyword argument 'hyper_lrr'"):
        build(hyper_lrr=1.0)


def test_renamed_argument_error_names_the_name_used() -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match=r"^hyper_lr must"):
        FedHyperClient(_sgd(0.1)[1], hyper_lr=-1.0)


def test_hypergradient_lr_min_max_become_lr_bounds() -> None:
    _, opt = _sgd(0.1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        hd = HypergradientLR(opt, lr_min=0.01, lr_max=1.0)
    _one_deprecation(record, "lr_bounds")
    assert hd.lr_bounds == (0.01, 1.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert (hd.lr_min, hd.lr_max) == (0.01, 1.0)
    assert len([w for w in record if issubclass(w.category, DeprecationWarning)]) == 2  # 1 each
    with pytest.warns(DeprecationWarning):
        assert HypergradientLR(_sgd(0.1)[1], lr_max=2.0).lr_bounds == (0.0, 2.0)
    with pytest.raises(ConfigError, match="got both lr_bounds"):
        HypergradientLR(_sgd(0.1)[1], lr_bounds=(0, 1), lr_max=2.0)
    with pytest.raises(ConfigError, match=r"lr_bounds\[1\] must be a float > 0.5"):
        HypergradientLR(_sgd(0.1)[1], lr_bounds=(0.5, 0.5))
    # the state format is unchanged: a state saved before the rename loads
    state = HypergradientLR(_sgd(0.1)[1], lr_bounds=(0.01, 1.0)).state_dict()
    assert (state["hypergrad"]["lr_min"], state["hypergrad"]["lr_max"]) == (0.01, 1.0)


def test_renamed_counters_read_the_new_ones() -> None:
    cases = [
        (HypergradientLR(_sgd(0.1)[1]), "nonfinite", "skipped_hyper_steps"),
        (FedHyperClient(_sgd(0.1)[1]), "steps_skipped", "skipped_hyper_steps"),
        (FedHyperServer([torch.zeros(2)]), "rounds_skipped", "skipped_rounds"),
        (FedHyperServer([torch.zeros(2)]), "updates_dropped", "dropped_updates"),
    ]
    for obj, old, new in cases:
        setattr(obj, new, 7)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert getattr(obj, old) == 7
        _one_deprecation(record, new)


def test_stn_warmup_steps_becomes_hyper_delay_steps() -> None:
    from autolr.stn import HyperSpace, STNTuner, convert

    space = HyperSpace()
    space.add("drop", init=0.2, low=0.0, high=1.0)
    model = convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)), space)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tuner = STNTuner(model, space, torch.nn.functional.mse_loss, opt, warmup_steps=3)
    _one_deprecation(record, "hyper_delay_steps")
    assert tuner.hyper_delay_steps == 3
    tuner.skipped_steps = 2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert (tuner.skipped_train_steps,) == (2,)
    _one_deprecation(record, "skipped_steps")


def test_autolrs_nonfinite_skipped_becomes_skipped_losses() -> None:
    model = torch.nn.Linear(2, 1)
    tuner = AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.1), max_steps=200)
    tuner.skipped_losses = 4
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert tuner.nonfinite_skipped == 4
    _one_deprecation(record, "skipped_losses")
    assert tuner.state_dict()["nonfinite_skipped"] == 4  # state key unchanged


# ---------------------------------------------------------------------- one LR-setting rule


def test_fedhyper_client_keeps_group_ratios_and_frozen_groups() -> None:
    ps, opt = _sgd(0.1, 0.02, 0.0)
    client = FedHyperClient(opt, hypergrad_lr=10.0)
    assert client.base_lr == 0.1  # the reference group is the first with a positive LR
    client.begin_round(0.2, [torch.ones(2), torch.ones(2), torch.ones(2)])
    assert [g["lr"] for g in opt.param_groups] == [0.2, pytest.approx(0.04), 0.0]
    for _ in range(2):
        opt.zero_grad()
        sum(-p.sum() for p in ps).backward()
        opt.step()
        client.step()
    # every step agrees with the previous direction: s grows by γ_max = 1.1 per step
    assert client.scale == pytest.approx(1.21)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == [pytest.approx(0.2 * 1.21), pytest.approx(0.04 * 1.21), 0.0]
