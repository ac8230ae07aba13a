"""autolr._statecheck._state_optimizer: the torch optimizer state check shared by HD and STN."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from autolr import StateError
from autolr._statecheck import _state_optimizer


def _state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    w = opt.param_groups[0]["params"][0]
    for _ in range(2):
        opt.zero_grad()
        w.pow(2).sum().backward()
        opt.step()
    return copy.deepcopy(opt.state_dict())


def _check(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    _state_optimizer("Owner", "opt", opt, state)


def test_every_optimizer_gets_numbers_checked_where_it_has_numbers() -> None:
    opt = torch.optim.RMSprop([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.5)
    state = _state(opt)
    _check(opt, state)
    for key, value, message in (
        ("lr", "fast", r"opt\['param_groups'\]\[0\]\['lr'\] must be a number, got 'fast'$"),
        ("alpha", None, r"opt\['param_groups'\]\[0\]\['alpha'\] must be a number, got None$"),
        ("momentum", True, r"opt\['param_groups'\]\[0\]\['momentum'\] must be a number, got True$"),
    ):
        bad = copy.deepcopy(state)
        bad["param_groups"][0][key] = value
        with pytest.raises(StateError, match=r"^Owner\.load_state_dict: " + message):
            _check(opt, bad)
    # what torch itself accepts passes: a tensor LR, an int, flags and None of any type
    ok = copy.deepcopy(state)
    ok["param_groups"][0].update(lr=torch.tensor(0.1), weight_decay=0, foreach=True)
    _check(opt, ok)
    # the per-parameter entries of optimizers other than SGD and Adam(W) are left to torch
    del ok["state"][0]["square_avg"]
    _check(opt, ok)


def test_adam_and_sgd_entries_torch_reads_are_checked() -> None:
    adam = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1, amsgrad=True)
    state = _state(adam)
    _check(adam, state)
    bad = copy.deepcopy(state)
    bad["param_groups"][0]["amsgrad"] = False  # the saved flag decides: max_exp_avg_sq unused
    del bad["state"][0]["max_exp_avg_sq"]
    _check(adam, bad)
    bad["param_groups"][0]["amsgrad"] = True
    with pytest.raises(StateError, match=r"opt\['state'\]\[0\] lacks \['max_exp_avg_sq'\]"):
        _check(adam, bad)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    state = _state(sgd)
    state["state"][0]["momentum_buffer"] = None  # what torch stores before its first step
    _check(sgd, state)
    state["state"][0] = "x"
    with pytest.raises(StateError, match=r"opt\['state'\]\[0\] must be a dict, got 'x'$"):
        _check(sgd, state)
