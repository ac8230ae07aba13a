"""GroupLRs (``autolr/_autolrs/_lr.py``) against hand-computed values (issue 18, mutation round).

The in-loop tests exercise GroupLRs through whole AutoLRS runs; these pin its own contract
directly: which group is the reference, the ratios it writes, the exact error messages, the
LRs its step hook records and the tolerance of :meth:`GroupLRs.drift`.
"""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest
import torch
from torch import nn

from autolr import AutoLRS, ConfigError
from autolr._autolrs._lr import GroupLRs


def sgd(*lrs: Any) -> torch.optim.Optimizer:
    """An SGD optimizer with one one-element parameter group per LR (LRs written after)."""
    params = [nn.Parameter(torch.ones(1)) for _ in lrs]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=0.1)
    for g, lr in zip(opt.param_groups, lrs):
        g["lr"] = lr  # torch refuses some values in the constructor; a write does not
    return opt


class _FloatFails:
    """An LR whose ``float()`` raises a RuntimeError (as some tensor conversions do)."""

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __repr__(self) -> str:
        return "<FloatFails>"


def test_reference_is_the_first_positive_group_and_ratios_are_by_hand() -> None:
    opt = sgd(0.0, 0.2, 0.1, 0.05)
    g = GroupLRs(opt)
    assert g.reference == 1 and g.first == 0.2
    assert g.scales == [0.0, 1.0, 0.5, 0.25]
    assert g.written == [0.0, 0.2, 0.1, 0.05]  # before any set(): the LRs it was built with
    assert g.drift([0.0, 0.2, 0.1, 0.05]) == []  # so nothing has drifted yet
    g.set(0.8)
    assert [grp["lr"] for grp in opt.param_groups] == [0.0, 0.8, 0.4, 0.2]
    assert g.written == [0.0, 0.8, 0.4, 0.2]
    assert all(type(grp["lr"]) is float for grp in opt.param_groups)
    g.set(0.0)  # an LR of 0 is written as 0 everywhere, not 0 * scale
    assert [grp["lr"] for grp in opt.param_groups] == [0.0, 0.0, 0.0, 0.0]


def test_a_single_group_is_its_own_reference() -> None:
    g = GroupLRs(sgd(0.3))
    assert (g.reference, g.first, g.scales) == (0, 0.3, [1.0])
    g.set(1.5)
    assert g.optimizer.param_groups[0]["lr"] == 1.5 and g.written == [1.5]
    g.set(math.inf)  # written as given, as the general path writes inf * 1.0
    assert g.optimizer.param_groups[0]["lr"] == math.inf and g.written == [math.inf]


def test_a_single_tensor_lr_is_filled_in_place_too() -> None:
    # set()'s shortcut for one group is for a float LR only: a tensor stays the same object.
    opt = sgd(torch.tensor(0.2))
    held = opt.param_groups[0]["lr"]
    g = GroupLRs(opt)
    g.set(0.5)
    assert opt.param_groups[0]["lr"] is held and held.item() == 0.5
    assert g.written == [0.5]


def test_a_frozen_group_stays_exactly_zero_even_for_an_infinite_lr() -> None:
    # 0 * inf would be nan: a frozen group is written 0 whatever the LR.
    opt = sgd(0.0, 0.1)
    g = GroupLRs(opt)
    g.set(math.inf)
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[1]["lr"] == math.inf


def test_tensor_lrs_are_filled_in_place() -> None:
    opt = sgd(torch.tensor(0.2), torch.tensor(0.1))
    held = [grp["lr"] for grp in opt.param_groups]
    g = GroupLRs(opt)
    assert g.scales == [1.0, 0.5] and g.first == pytest.approx(0.2)
    g.set(0.5)
    assert [grp["lr"] for grp in opt.param_groups] == held  # same tensor objects
    assert [t.item() for t in held] == [0.5, 0.25]
    assert g.written == [0.5, 0.25]
    assert g.read() == [0.5, 0.25] and g.read(sync=False) == [0.5, 0.25]  # CPU: never None
    assert all(type(v) is float for v in g.read())


@pytest.mark.parametrize(
    ("lrs", "message"),
    [
        (
            [0.1, -0.5],
            "param group 1 has lr=-0.5; each group's LR must be a finite number >= 0 (the tuner "
            "keeps the groups' LR ratios; 0 freezes a group)",
        ),
        (
            [math.nan, 0.1],
            "param group 0 has lr=nan; each group's LR must be a finite number >= 0 (the tuner "
            "keeps the groups' LR ratios; 0 freezes a group)",
        ),
        ([0.1, 0.2, -math.inf], "param group 2 has lr=-inf; each group's LR must be"),
        ([0.1, None], "param group 1 has lr=None; each group's LR must be"),
        ([0.1, "fast"], "param group 1 has lr='fast'; each group's LR must be"),
        ([_FloatFails(), 0.1], "param group 0 has lr=<FloatFails>; each group's LR must be"),
        (
            [0.0, 0.0, 0.0],
            "every parameter group has lr=0 (3 group(s)): the tuner scales the groups' LRs "
            "keeping their ratios, so at least one group needs a positive LR (build the "
            "optimizer with e.g. lr=1e-3; a group at lr=0 stays frozen)",
        ),
        (
            [0.0, 5e-324, 1.0],
            "param group 2 has lr=1.0, a ratio to group 1's lr=5e-324 that is not finite; "
            "choose LRs of comparable size",
        ),
    ],
)
def test_lrs_whose_ratios_cannot_be_kept_raise_with_the_exact_message(
    lrs: list[Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        GroupLRs(sgd(*lrs))
    assert str(info.value).startswith(message)


def test_only_the_first_bad_group_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        GroupLRs(sgd(1e-300, 1e10, 1e20))  # ratios 1e310 and 1e320 both overflow
    assert str(info.value).startswith("param group 1 has lr=10000000000.0, a ratio to group 0's")


def test_the_step_hook_records_the_lrs_each_step_ran_with() -> None:
    opt = sgd(0.2, 0.1)
    g = GroupLRs(opt)
    g.watch()
    assert g.take_used() is None  # no step yet
    opt.step()
    opt.param_groups[1]["lr"] = 0.7  # a write after the step: the step ran with 0.1
    assert g.take_used() == [0.2, 0.1]
    assert g.take_used() is None  # taken once
    assert g.read() == [0.2, 0.7]
    opt.param_groups[0]["lr"] = 3  # an int LR is recorded as a float
    opt.step()
    used = g.take_used(sync=False)
    assert used == [3.0, 0.7] and all(type(v) is float for v in used)


def test_the_step_hook_reads_tensor_lrs_as_floats() -> None:
    opt = sgd(torch.tensor(0.25), 0.5)
    g = GroupLRs(opt)
    g.watch()
    opt.step()
    opt.param_groups[0]["lr"].fill_(9.0)  # in place, after the step: the copy is kept
    used = g.take_used()
    assert used == [0.25, 0.5] and all(type(v) is float for v in used)


def test_a_dead_watcher_does_nothing_and_the_next_watch_removes_its_hook() -> None:
    opt = sgd(0.1)
    keep = GroupLRs(opt)
    keep.watch()
    gone = GroupLRs(opt)
    gone.watch()
    assert len(opt._optimizer_step_pre_hooks) == 2
    del gone
    gc.collect()
    opt.step()
    assert keep.take_used() == [0.1]  # the survivor still records
    # Removed by the next watch (outside optimizer.step()), not by the hook itself.
    new = GroupLRs(opt)
    new.watch()
    assert len(opt._optimizer_step_pre_hooks) == 2
    opt.step()
    assert keep.take_used() == [0.1] and new.take_used() == [0.1]


def test_a_new_tuner_on_the_optimizer_of_a_discarded_one_steps() -> None:
    # The discarded watcher's hook, first in torch's hook dict, removed itself while torch
    # iterated over the dict: "OrderedDict mutated during iteration" inside optimizer.step()
    # (a second HF trainer.train(), or any new run on the same optimizer).
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), max_steps=100)
    for _ in range(2):
        for _ in range(3):
            opt.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            tuner.step(loss.item())
        tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), max_steps=100)
        gc.collect()  # the replaced tuner is gone: its hook stays, first in the dict
    assert tuner.global_step == 0
    # Only the live tuner's hook and the one replaced last (removed by the next watch) remain.
    assert len(opt._optimizer_step_pre_hooks) == 2


def test_drift_tolerates_float32_rounding_only() -> None:
    g = GroupLRs(sgd(0.0, 0.3, 0.1))
    g.set(0.3)
    w = g.written
    assert w == [0.0, 0.3, 0.1]
    # float32 rounding of the written LRs is within the 1e-6 relative tolerance.
    f32 = [float(torch.tensor(x, dtype=torch.float32)) for x in w]
    assert f32 != w and g.drift(f32) == []
    assert g.drift([0.0, 0.3 * (1 + 5e-7), 0.1 * (1 - 5e-7)]) == []
    assert g.drift([0.0, 0.3 * (1 + 3e-6), 0.1]) == [(1, 0.3, 0.3 * (1 + 3e-6))]
    assert g.drift([1e-9, 0.3, 0.2]) == [(0, 0.0, 1e-9), (2, 0.1, 0.2)]
    assert g.drift([None, None, 0.5]) == [(2, 0.1, 0.5)]  # None: unchecked, never drifted
    assert g.drift([0.0, 0.3]) == []  # fewer values than groups: compared up to the shorter


def test_take_unchanged_is_true_only_for_exactly_the_written_floats() -> None:
    opt = sgd(0.2, 0.1)
    g = GroupLRs(opt)
    g.watch()
    g.set(0.4)
    assert not g.take_unchanged()  # no step yet: for the caller to judge
    opt.step()
    assert g.take_unchanged()
    assert g.take_used() is None  # the step's record was consumed
    assert not g.take_unchanged()  # and no step since

    opt.step()
    opt.param_groups[1]["lr"] = 0.7  # changed after the step
    assert not g.take_unchanged()
    assert g.take_used() == [0.4, 0.2]  # left for the slow path
    opt.param_groups[1]["lr"] = 0.2

    opt.param_groups[0]["lr"] = 0.4 * (1 + 1e-9)  # within drift's tolerance, not exact
    opt.step()
    assert not g.take_unchanged()
    assert g.drift(g.take_used()) == []
    opt.param_groups[0]["lr"] = 0.4

    opt.param_groups[0]["lr"] = 0.1  # the step runs with another LR ...
    opt.step()
    opt.param_groups[0]["lr"] = 0.4  # ... restored afterwards: the step still counts
    assert not g.take_unchanged()
    assert g.drift(g.take_used()) == [(0, 0.4, 0.1)]

    for odd in (2, math.nan):  # an int, a NaN after a clean step: the slow path reads them
        opt.step()
        opt.param_groups[0]["lr"] = odd
        assert not g.take_unchanged()
        assert g.take_used() == [0.4, 0.2]
        opt.param_groups[0]["lr"] = 0.4
    opt.step()
    assert g.take_unchanged()


def test_take_unchanged_leaves_tensor_lrs_to_the_slow_path() -> None:
    opt = sgd(torch.tensor(0.25), 0.5)
    g = GroupLRs(opt)
    g.watch()
    opt.step()
    assert not g.take_unchanged()
    assert g.take_used() == [0.25, 0.5]


class _NoStep(torch.optim.Optimizer):
    """An optimizer whose step does nothing (its step hooks still run)."""

    def __init__(self, params: list[dict[str, Any]]) -> None:
        super().__init__(params, {"lr": 0.1})

    def step(self, closure: Any = None) -> None:
        return None


def test_an_lr_held_off_the_cpu_is_read_only_when_asked_to_sync() -> None:
    # A "meta" tensor stands in for an LR on an accelerator: not on the CPU, and reading it
    # (what a sync would do) gives no number, so GroupLRs reports it as nan.
    opt = _NoStep(
        [{"params": [nn.Parameter(torch.ones(1))]}, {"params": [nn.Parameter(torch.ones(1))]}]
    )
    opt.param_groups[1]["lr"] = 0.2
    g = GroupLRs(opt)
    g.watch()
    opt.param_groups[0]["lr"] = torch.tensor(0.1, device="meta")

    def shown(values: list[float | None] | None) -> list[str]:
        assert values is not None
        return [repr(v) for v in values]

    assert shown(g.read()) == ["nan", "0.2"]  # sync=True is the default
    assert shown(g.read(sync=False)) == ["None", "0.2"]
    opt.step()
    assert shown(g.take_used(sync=False)) == ["None", "0.2"]
    opt.step()
    assert shown(g.take_used()) == ["nan", "0.2"]
