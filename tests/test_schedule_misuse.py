"""Misuse of autolr.Schedule and ScheduleLR: each mistake raises an autolr error at the point of
misuse (not NaN weights or a raw torch/Python error later), and a refused load changes nothing.
"""

from __future__ import annotations

import copy
import io
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from autolr import ConfigError, ConfigTypeError, Schedule, ScheduleLR, StateError


def _opt(groups: int = 1) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [{"params": [nn.Parameter(torch.ones(1))]} for _ in range(groups)], lr=1.0
    )


# ---------------------------------------------------------------------- the constructor
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "needle"),
    [
        ((["lr"], [0], [[math.nan]]), {}, ConfigError, "values[0][0] ('lr') must be a finite"),
        ((["lr"], [0, 1], [[0.1], [math.inf]]), {}, ConfigError, "values[1][0] ('lr')"),
        ((["lr"], [0], [["a"]]), {}, ConfigTypeError, "values[0][0] ('lr') must be a finite"),
        ((["lr"], [0], [[True]]), {}, ConfigTypeError, "values[0][0]"),
        ((["lr"], [0], [[10**400]]), {}, ConfigError, "values[0][0]"),
        ((["lr"], [0], [0.1]), {}, ConfigTypeError, "values[0] must be a list of 1 numbers"),
        ((["lr"], [-5, 0], [[1.0], [2.0]]), {}, ConfigError, "steps[0] must be an int >= 0"),
        ((["lr"], [0.5], [[1.0]]), {}, ConfigTypeError, "steps[0] must be an int >= 0"),
        ((["lr"], 0, [[1.0]]), {}, ConfigTypeError, "steps must be a list of int"),
        ((["lr", "lr"], [0], [[1.0, 2.0]]), {}, ConfigError, "names must be unique, ['lr']"),
        (("lr", [0], [[1.0, 2.0]]), {}, ConfigTypeError, "names must be a list of str"),
        (([1], [0], [[1.0]]), {}, ConfigTypeError, "names must be a list of str"),
        ((["lr"], [0], [[1.0]], ["k"]), {}, ConfigError, "discrete names ['k'] that are not"),
        ((["lr"], [0], [[1.0]]), {"source": 3}, ConfigTypeError, "source must be a str, got 3"),
    ],
)
def test_constructor_refuses_what_a_loaded_state_would_not_hold(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as info:
        Schedule(*args, **kwargs)
    assert needle in str(info.value), str(info.value)


def test_constructor_keeps_valid_schedules_as_given() -> None:
    # negative and zero values are fine in a schedule (an STN hyperparameter may be < 0)
    names, steps, values = ["wd", "k"], [0, 0, 3], [[-1.0, 2], [0.5, 3], [0, 4.0]]
    s = Schedule(names, steps, values, ["k"], length=5, source="STNTuner")
    assert s.names is names and s.steps is steps and s.values is values
    assert s.values[2][0] == 0 and type(s.values[2][0]) is int  # digests stay as before
    # numpy steps and values become plain ints and floats (saved, hashed and replayed alike)
    n = Schedule(["lr"], np.array([0, 2]), [[np.float32(0.5)], [np.float64(0.25)]])
    assert n.steps == [0, 2] and all(type(v) is int for v in n.steps)
    assert n.values == [[0.5], [0.25]] and all(type(r[0]) is float for r in n.values)
    assert n == Schedule(["lr"], [0, 2], [[0.5], [0.25]])
    assert n.digest() == Schedule(["lr"], [0, 2], [[0.5], [0.25]]).digest()
    assert Schedule([], [], []).n_steps == 0


# ---------------------------------------------------------------------- files and states
def test_load_refuses_non_finite_values_and_non_text_files(tmp_path) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        path = tmp_path / "s.json"
        path.write_text(f'{{"version":1,"names":["lr"],"steps":[0],"values":[[{literal}]]}}')
        with pytest.raises(StateError, match=r"Schedule\.load: values\[0\] must be a finite"):
            Schedule.load(path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00 not json")
    with pytest.raises(StateError, match="is not JSON"):
        Schedule.load(tmp_path / "bin.json")


def test_state_checks_match_the_constructor_and_change_nothing() -> None:
    s = Schedule.from_lrs([0.3, 0.2])
    before = copy.deepcopy(s)
    good = s.state_dict()
    cases = [
        ({**good, "values": [[math.nan], [0.2]]}, "values[0] must be a finite number"),
        ({**good, "names": ["lr", "lr"], "values": [[1, 2], [1, 2]]}, "'names' must be unique"),
        ({**good, "values": [[10**400], [0.2]]}, "an int beyond float range"),
        ({**good, "steps": [-1, 1]}, "'steps' must be an int >= 0, got -1"),
    ]
    for bad, needle in cases:
        with pytest.raises(StateError) as info:
            Schedule.from_state_dict(bad)
        assert needle in str(info.value), str(info.value)
        with pytest.raises(StateError):
            s.load_state_dict(bad)
        assert s == before


# ---------------------------------------------------------------------- replay
def test_scheduler_refuses_a_value_that_is_no_lr() -> None:
    s = Schedule(["lr", "wd"], [0, 4], [[0.1, 1e-4], [0.05, -0.5]])
    with pytest.raises(ConfigError, match=r"'wd' is replayed as the LR.*-0\.5 at step 4"):
        s.scheduler(_opt(), name="wd")
    s.scheduler(_opt())  # "lr" is fine
    s.values[1][0] = math.nan  # edited after construction: still refused at the scheduler
    with pytest.raises(ConfigError, match=r"'lr' is replayed as the LR.*nan at step 4"):
        s.scheduler(_opt())


def test_a_schedule_edited_under_a_running_scheduler_stops_it() -> None:
    s = Schedule.from_lrs([0.3, 0.2, 0.1])
    opt = _opt()
    p = opt.param_groups[0]["params"][0]
    sched = s.scheduler(opt)
    s.values[1][0] = math.nan
    opt.step()
    with pytest.raises(ConfigError, match="'lr' is nan at step 1"):
        sched.step()
    assert torch.isfinite(p).all()


def test_scheduler_arguments_are_checked() -> None:
    s = Schedule.from_lrs([0.3, 0.2, 0.1])
    with pytest.raises(ConfigTypeError, match="last_epoch must be an int >= -1, got '3'"):
        s.scheduler(_opt(), last_epoch="3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="last_epoch must be an int >= -1, got -2"):
        s.scheduler(_opt(), last_epoch=-2)
    with pytest.raises(
        ConfigError, match=r"last_epoch=3 resumes a run, but param group\(s\) \[0\]"
    ):
        s.scheduler(_opt(), last_epoch=3)
    # a true resume (groups carry initial_lr from the first scheduler) still works
    opt = _opt()
    first = s.scheduler(opt)
    opt.step()
    first.step()
    resumed = s.scheduler(opt, last_epoch=1)
    assert resumed.last_epoch == 2 and opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(ConfigTypeError, match=r"Schedule\.at: step must be an int, got '3'"):
        s.at("3")  # type: ignore[arg-type]
    assert s.at(np.int64(1)) == {"lr": 0.2} and s.at(-1) == {"lr": 0.3}


def test_a_group_added_after_the_scheduler_is_named() -> None:
    opt = _opt()
    sched = Schedule.from_lrs([0.3, 0.2]).scheduler(opt)
    opt.add_param_group({"params": [nn.Parameter(torch.ones(1))], "lr": 0.5})
    opt.step()
    with pytest.raises(ConfigError, match=r"has 2 param groups .* built for 1.*add_param_group"):
        sched.step()


# ---------------------------------------------------------------------- scheduler state
def _state(sched: ScheduleLR) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_scheduler_load_checks_everything_and_changes_nothing() -> None:
    s = Schedule(["lr", "momentum"], [0, 1], [[0.1, 0.9], [0.05, 0.8]])
    opt = _opt()
    sched = s.scheduler(opt)
    good = _state(sched)
    lam = torch.optim.lr_scheduler.LambdaLR(_opt(), lambda e: 0.5).state_dict()
    cases = [
        (lam, "got a dict with keys [_get_lr_called_within_step"),
        ({**good, "schedule_digest": None}, "with schedule_digest=None"),
        ({k: v for k, v in good.items() if k != "schedule_digest"}, "schedule_digest=None"),
        (_state(s.scheduler(_opt(), name="momentum")), "replaying 'momentum', this one replays"),
        ({**good, "optimizer": "not an optimizer"}, "entries ['optimizer'] that"),
        (_state(s.scheduler(_opt(2))), "'base_lrs' must be a list of 1 LRs"),
        ({**good, "base_lrs": ["1.0"]}, "'base_lrs' must hold finite LRs >= 0, got '1.0'"),
        ({**good, "base_lrs": [math.nan]}, "'base_lrs' must hold finite LRs >= 0, got nan"),
        ({**good, "base_lrs": [0.0]}, "'base_lrs' must hold a positive LR"),
        ({**good, "_last_lr": [0.1, 0.1]}, "'_last_lr' must be a list of 1 LRs"),
        ({**good, "_step_count": -1}, "'_step_count' must be an int >= 0, got -1"),
        ({**good, "_get_lr_called_within_step": "no"}, "must be a bool, got 'no'"),
        ({**good, "_ratios": "x"}, "'_ratios' must be a list or None"),
        ({**good, "last_epoch": "3"}, "last_epoch must be an int, got '3'"),
    ]
    opt.step()
    sched.step()
    before = sched.state_dict()
    for bad, needle in cases:
        with pytest.raises(StateError) as info:
            sched.load_state_dict(bad)
        assert str(info.value).startswith("ScheduleLR.load_state_dict: ")
        assert needle in str(info.value), str(info.value)
        assert sched.state_dict() == before and sched.optimizer is opt
    sched.load_state_dict(good)  # the valid state still loads: back to its position
    assert sched.last_epoch == 0 and sched.name == "lr"
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.05


def test_scheduler_state_with_tensor_lrs_loads() -> None:
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=torch.tensor(1.0))
    sched = Schedule.from_lrs([0.3, 0.2]).scheduler(opt)
    state = sched.state_dict()
    assert isinstance(state["base_lrs"][0], torch.Tensor)
    again = Schedule.from_lrs([0.3, 0.2]).scheduler(
        torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=torch.tensor(1.0))
    )
    again.load_state_dict(json.loads(json.dumps({**state, "base_lrs": [1.0], "_last_lr": [0.3]})))
    again.load_state_dict(state)
    assert again.last_epoch == 0
