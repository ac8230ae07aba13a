"""HypergradientLR's constructor and export_schedule: every argument check by its whole message.

Written for the mutation run of issue 18 (mutation/README.md): each test pins a value the
mutants changed (message text, argument names, defaults, edges), against values written out
by hand rather than read back from the module.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from typing import Any

import pytest
import torch

from autolr import ConfigError, ConfigTypeError, HypergradientLR


def _sgd(*lrs: float) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.full((2,), 0.5 + i))], "lr": lr}
              for i, lr in enumerate(lrs)]  # fmt: skip
    return torch.optim.SGD(groups)


def _stepped(steps: int, trace: bool | int = True) -> HypergradientLR:
    """Two groups on ``0.5 * |w|^2``: deterministic, and every step moves both LRs."""
    opt = HypergradientLR(_sgd(0.1, 0.02), trace=trace, hypergrad_lr=0.3)
    for _ in range(steps):
        opt.zero_grad()
        sum(0.5 * (p**2).sum() + p.sum() for g in opt.param_groups for p in g["params"]).backward()
        opt.step()
    return opt


def _raises(exc: type[Exception], message: str, optimizer: Any, **kw: Any) -> None:
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        HypergradientLR(optimizer, **kw)


# ---------------------------------------------------------------------- __init__
def test_every_constructor_message_in_full() -> None:
    cases: list[tuple[type[Exception], str, Any, dict[str, Any]]] = [
        (ConfigTypeError, "optimizer must be a torch.optim.SGD, Adam or AdamW instance, got int",
         5, {}),
        (ConfigTypeError, "optimizer must be a torch.optim.SGD, Adam or AdamW instance, got list",
         [], {}),
        (ConfigError, "rule must be one of 'additive', 'multiplicative', 'rms', got 'sign'",
         _sgd(0.1), {"rule": "sign"}),
        (ConfigError, "hypergrad_lr must be a finite float >= 0, got -0.1",
         _sgd(0.1), {"hypergrad_lr": -0.1}),
        (ConfigTypeError, "hypergrad_lr must be a finite float >= 0, got 'x'",
         _sgd(0.1), {"hypergrad_lr": "x"}),
        (ConfigError, "the rms rule needs hypergrad_lr < 1 (LR factor per step ≈ 1 ± β), got 1.0",
         _sgd(0.1), {"rule": "rms", "hypergrad_lr": 1}),
        (ConfigError, "the multiplicative rule needs hypergrad_lr < 1 (LR factor per step ≈ 1 ± "
         "β), got 2.5", _sgd(0.1), {"hypergrad_lr": 2.5}),
        (ConfigError, "rms_decay must be a finite float in [0, 1), got 1.0",
         _sgd(0.1), {"rms_decay": 1.0}),
        (ConfigError, "rms_decay must be a finite float in [0, 1), got -0.5",
         _sgd(0.1), {"rms_decay": -0.5}),
        (ConfigError, "boost must be a finite float >= 1, got 0.5", _sgd(0.1), {"boost": 0.5}),
        (ConfigError, "boost needs a normalised rule ('multiplicative' or 'rms')",
         _sgd(0.1), {"rule": "additive", "boost": 2.0}),
        (ConfigError, "the multiplicative rule needs hypergrad_lr * boost < 1, got 0.5 * 2.0",
         _sgd(0.1), {"hypergrad_lr": 0.5, "boost": 2}),
        (ConfigError, "warmup_steps must be an int >= 0, got -1",
         _sgd(0.1), {"warmup_steps": -1}),
        (ConfigTypeError, "warmup_steps must be an int >= 0, got 1.5",
         _sgd(0.1), {"warmup_steps": 1.5}),
        (ConfigTypeError, "trace must be a bool or an int >= 0, got 1.5",
         _sgd(0.1), {"trace": 1.5}),
        (ConfigTypeError, "trace must be a bool or an int >= 0, got '5'",
         _sgd(0.1), {"trace": "5"}),
        (ConfigError, "trace must be a bool or an int >= 0 (steps kept), got -1",
         _sgd(0.1), {"trace": -1}),
    ]  # fmt: skip
    for exc, message, optimizer, kw in cases:
        _raises(exc, message, optimizer, **kw)
    w, v = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    tensor_lr = torch.optim.SGD([{"params": [w]}, {"params": [v], "lr": torch.tensor(0.01)}], 0.1)
    _raises(ConfigTypeError, "param_groups[1]['lr'] is a Tensor; HypergradientLR needs float LRs "
            "(capturable/graph-captured optimizers are not supported)", tensor_lr)  # fmt: skip


def test_default_hypergrad_lr_per_rule_and_family() -> None:
    # The reference run.sh values (additive) and 0.02 for the normalised rules, by hand.
    expected = {
        ("additive", torch.optim.SGD): 1e-3,
        ("additive", torch.optim.Adam): 1e-7,
        ("additive", torch.optim.AdamW): 1e-7,
        ("multiplicative", torch.optim.SGD): 0.02,
        ("multiplicative", torch.optim.Adam): 0.02,
        ("rms", torch.optim.SGD): 0.02,
        ("rms", torch.optim.AdamW): 0.02,
    }
    for (rule, cls), beta in expected.items():
        opt = HypergradientLR(cls([torch.nn.Parameter(torch.zeros(2))], lr=0.1), rule=rule)
        assert (opt.rule, opt.hypergrad_lr) == (rule, beta)
        assert opt.family == ("sgd" if cls is torch.optim.SGD else "adam")
    assert HypergradientLR(_sgd(0.1)).rule == "multiplicative"


def test_constructor_edges_that_must_pass_and_what_is_stored() -> None:
    # Edges on the allowed side of every check above.
    assert HypergradientLR(_sgd(0.1), rule="additive", hypergrad_lr=5).hypergrad_lr == 5.0
    assert HypergradientLR(_sgd(0.1), rule="rms", hypergrad_lr=0.999).hypergrad_lr == 0.999
    rms = HypergradientLR(_sgd(0.1), rule="rms", hypergrad_lr=0.5, boost=3, rms_decay=0)
    assert (rms.boost, rms.rms_decay) == (3.0, 0.0)  # β·boost ≥ 1 is fine for rms
    assert HypergradientLR(_sgd(0.1), hypergrad_lr=0.4, boost=2.4).boost == 2.4  # 0.96 < 1
    assert HypergradientLR(_sgd(0.1), rule="additive", boost=1.0).boost == 1.0
    assert HypergradientLR(_sgd(0.1), hypergrad_lr=0).hypergrad_lr == 0.0
    opt = HypergradientLR(_sgd(0.1, 0.02), warmup_steps=3, lr_bounds=(0.01, 2))
    assert (opt.warmup_steps, opt.rms_decay, opt.boost, opt.lr_bounds) == (3, 0.99, 1.0, (0.01, 2))
    assert (opt.steps, opt.skipped_hyper_steps, opt.trace) == (0, 0, 10_000)
    assert opt.scales == [1.0, 1.0] and opt.last_hypergradients == [None, None]
    assert opt.lrs == [0.1, 0.02] and opt.lr_trace == []
    assert [g["hd_lr"] for g in opt.param_groups] == [0.1, 0.02]
    assert all(type(g["hd_lr"]) is float for g in opt.param_groups)
    assert HypergradientLR(_sgd(0.1), trace=False).trace == 0
    assert HypergradientLR(_sgd(0.1), trace=0).trace == 0
    assert len(_stepped(9, trace=7).lr_trace) == 7


# ---------------------------------------------------------------------- export_schedule
def test_export_refuses_each_bad_call_by_its_whole_message() -> None:
    opt = _stepped(3)
    for group in (True, 1.0, -1, 2, "0"):
        with pytest.raises(ConfigError) as info:
            opt.export_schedule(group=group)  # type: ignore[arg-type]
        assert str(info.value) == f"group must be an int in [0, 2), got {group!r}"
    with pytest.raises(ConfigError) as info:
        _stepped(2, trace=False).export_schedule()
    assert str(info.value) == (
        "HypergradientLR.export_schedule: built with trace=0, so no LR was recorded; "
        "build it with trace=True (the last 10 000 steps) or trace=<steps>"
    )
    with pytest.raises(ConfigError) as info:
        _stepped(0).export_schedule()
    assert str(info.value) == "HypergradientLR.export_schedule: no step was taken yet"


def test_export_of_each_group_and_a_stretch_of_each_kind() -> None:
    opt = _stepped(4)
    trace = opt.lr_trace
    lrs = [[row[g] for row in trace] for g in (0, 1)]
    assert len(set(lrs[1])) == 4 and lrs[0] != lrs[1]
    for g in (0, 1):
        assert opt.export_schedule(group=g).per_step() == lrs[g]
    # stretch 4 → 7: step j reads position j/2; "previous" holds, "linear" takes midpoints
    a, b, c, d = lrs[1]
    held = opt.export_schedule(7, group=1, kind="previous").per_step()
    assert held == [a, a, b, b, c, c, d]
    mid = opt.export_schedule(7, group=1).per_step()
    assert mid == pytest.approx([a, (a + b) / 2, b, (b + c) / 2, c, (c + d) / 2, d], rel=1e-12)


def test_export_warns_only_when_steps_were_dropped_and_points_at_the_caller() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _stepped(3, trace=3).export_schedule().n_steps == 3  # start 0: every step kept
    opt = _stepped(3, trace=2)  # start 1: one step dropped
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        sched = opt.export_schedule()
    (w,) = record
    assert w.category is RuntimeWarning
    assert str(w.message) == (
        "HypergradientLR.export_schedule: lr_trace kept only the last 2 of 3 steps (trace=2); "
        "the schedule starts at step 1 and earlier steps hold its first LR. Build with "
        "trace=3 or more to export the whole run"
    )
    if "MUTANT_UNDER_TEST" in os.environ:  # `make mutate`: its trampoline is the caller
        assert w.filename.endswith("trampoline.py"), (w.filename, w.lineno)
    else:
        assert (w.filename, w.lineno) == (__file__, line)
    kept = [row[0] for row in opt.lr_trace]
    assert sched.steps[0] == 1 and sched.per_step() == [kept[0], *kept]
