"""Misuse of the in-loop AutoLRS tuner is loud (issue 12, items 1-3).

1. An LR changed behind the tuner's back (a torch LR scheduler, a ``param_group['lr']``
   write, one group or all): one warning, the tuner's LR is written back, and ``history``
   records the LR each step really ran with.
2. ``load_state_dict`` checks the whole state before changing anything: structure, another
   tuner class, snapshots of another model, other constructor arguments.
3. A parameter group built with ``lr=0`` stays frozen; ratios that cannot be kept raise.

Each test also checks that no training work is lost: after the misuse the run continues
exactly as a twin run that never saw it.
"""

from __future__ import annotations

import copy
import math
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import autolr._autolrs._tuner as tuner_module
from autolr import (
    AutoLRS,
    BudgetPolicy,
    ConfigError,
    ConfigTypeError,
    HypergradientLR,
    Snapshot,
    StageSearch,
    StateError,
)
from autolr._autolrs._lr import GroupLRs
from autolr.searchers import Param, RandomSearcher

from .conftest import make_regression, round_trip, tiny_mlp

X, Y = make_regression()
LR_MSG = "changed outside the tuner"


def make(
    model: nn.Module | None = None,
    opt: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    **kw: Any,
) -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS]:
    """A small paper-variant tuner (stages of 3 candidates x 4 steps + 20) unless overridden."""
    model = model if model is not None else tiny_mlp()
    optim = opt(model) if opt else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    bounds = kw.setdefault("lr_bounds", (1e-3, 0.3))
    kw.setdefault("searcher", RandomSearcher([Param("lr", *bounds, log=True)], seed=0))
    if kw.get("variant", "paper") == "paper" and "max_steps" not in kw:
        kw.update(variant="paper", tau=kw.get("tau", 20), tau_prime=4, k=kw.get("k", 3))
    return model, optim, AutoLRS(model, optim, **kw)


def train(
    tuner: AutoLRS,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    *,
    before: Callable[[int], None] | None = None,
    after: Callable[[int], None] | None = None,
    group: int = 0,
) -> list[float]:
    """A user's loop; returns the LR of ``group`` that each optimizer.step() really used."""
    used = []
    start = tuner.global_step
    for i in range(start, start + steps):
        idx = torch.randint(0, X.shape[0], (32,))
        loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        if before:
            before(i)
        used.append(float(opt.param_groups[group]["lr"]))
        opt.step()
        if after:
            after(i)
        tuner.step(loss.item())
    return used


def lr_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if LR_MSG in str(w.message)]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ---------------------------------------------------------------------- 1. LR behind its back
@pytest.mark.parametrize(
    "make_sched",
    [
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 60),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    ],
    ids=["cosine", "step"],
)
def test_scheduler_after_optimizer_step_is_undone_and_warned_once(make_sched: Any) -> None:
    # The usual order o.step(); sched.step(): the scheduler's LR would only be used at the
    # next step, and the tuner writes its own back first. The run equals one without it.
    torch.manual_seed(3)
    m_a, o_a, t_a = make()
    used_a = train(t_a, m_a, o_a, 60)

    torch.manual_seed(3)
    m_b, o_b, t_b = make()
    sched = make_sched(o_b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used_b = train(t_b, m_b, o_b, 1, after=lambda i: sched.step())
        assert len(lr_warnings(caught)) == 1  # at the first misuse already
        used_b += train(t_b, m_b, o_b, 59, after=lambda i: sched.step())
    msgs = lr_warnings(caught)
    assert len(msgs) == 1
    assert "param group 0" in msgs[0] and "LR scheduler" in msgs[0]
    assert "after optimizer.step()" in msgs[0]
    assert used_b == used_a == t_b.schedule == t_a.schedule
    assert t_b.stages == t_a.stages
    assert same_weights(m_a, m_b)


def test_a_hypergradient_lr_optimizer_is_refused_at_construction() -> None:
    # Two LR controllers fought, then the first restore crashed with a raw KeyError.
    model = nn.Linear(2, 1)
    hd = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match=r"HypergradientLR.*\(hd\.optimizer\)"):
        AutoLRS(model, hd, lr_bounds=(1e-3, 1.0), max_steps=100)
    AutoLRS(model, hd.optimizer, lr_bounds=(1e-3, 1.0), max_steps=100)  # the wrapped one works


def test_scheduler_before_optimizer_step_is_recorded_as_used() -> None:
    # sched.step(); o.step(): the scheduler's LR really trains each step. The history must
    # say so (it used to report the tuner's LR), and the warning comes once.
    torch.manual_seed(3)
    m_a, o_a, t_a = make()
    first_a = train(t_a, m_a, o_a, 1)[0]

    torch.manual_seed(3)
    m_b, o_b, t_b = make()
    sched = torch.optim.lr_scheduler.ExponentialLR(o_b, gamma=0.5)
    meant: list[float] = []

    def step_sched(i: int) -> None:
        meant.append(t_b.lr)  # the LR the tuner set for this step
        sched.step()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used = train(t_b, m_b, o_b, 50, before=step_sched)
    msgs = lr_warnings(caught)
    assert len(msgs) == 1 and "at optimizer.step()" in msgs[0]
    assert t_b.schedule == used  # what really ran, step by step
    assert used[0] == 0.5 * first_a  # the tuner's first LR, halved by the scheduler
    # The tuner wrote its LR back after every step, so each step ran at half of it
    # (ExponentialLR multiplies the group's current LR).
    assert used == [0.5 * lr for lr in meant]
    assert t_b.global_step == 50 and all(math.isfinite(r.loss) for r in t_b.history)


@pytest.mark.parametrize("when", ["before", "after"])
def test_manual_write_of_one_group_is_warned_and_recorded(when: str) -> None:
    # One write to one group's LR at step 15 (exploitation, where the tuner writes no LR
    # of its own), before or after optimizer.step().
    def two_groups(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [{"params": m[0].parameters(), "lr": 0.1}, {"params": m[3].parameters(), "lr": 0.05}]
        )

    torch.manual_seed(3)
    m_a, o_a, t_a = make(opt=two_groups)
    used_a = train(t_a, m_a, o_a, 30)

    torch.manual_seed(3)
    m_b, o_b, t_b = make(opt=two_groups)
    g1: list[float] = []

    def write(i: int) -> None:
        if i == 15:
            o_b.param_groups[1]["lr"] = 0.2

    def before(i: int) -> None:
        if when == "before":
            write(i)
        g1.append(o_b.param_groups[1]["lr"])  # what group 1 runs this step with

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used_b = train(t_b, m_b, o_b, 30, before=before, after=write if when == "after" else None)
    msgs = lr_warnings(caught)
    assert len(msgs) == 1 and "param group 1" in msgs[0]
    # Group 0 was never touched: its schedule and the history are the twin's.
    assert used_b == used_a == t_b.schedule
    assert t_b.history[15].phase == t_b.history[16].phase == "exploit"
    # Group 1 ran at 0.2 at step 15 only if written before the step; then the ratio is back.
    assert g1[15] == (0.2 if when == "before" else 0.5 * used_a[15])
    assert g1[16] == 0.5 * used_a[16]
    if when == "after":  # the write never ran: the whole run is the twin's
        assert same_weights(m_a, m_b)


def test_tensor_lrs_round_off_is_not_a_change_but_a_scheduler_is() -> None:
    # A float32 tensor LR holds the tuner's float rounded: no warning for that.
    def tensor_lr(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(m.parameters(), lr=torch.tensor(0.01), foreach=False)

    torch.manual_seed(3)
    m, o, t = make(opt=tensor_lr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(t, m, o, 40)
    assert lr_warnings(caught) == []
    first = t.schedule[0]
    assert float(o.param_groups[0]["lr"]) == pytest.approx(t.lr, rel=1e-6)

    torch.manual_seed(3)
    m, o, t = make(opt=tensor_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.1)  # x0.1 already at creation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used = train(t, m, o, 40, after=lambda i: sched.step())
    assert len(lr_warnings(caught)) == 1
    assert used[0] == pytest.approx(0.1 * first, rel=1e-6)  # LambdaLR's x0.1 of the tuner's
    # The history holds what ran (float32 tensors round the tuner's LR to ~1e-8).
    assert t.schedule == pytest.approx(used, rel=1e-6)
    assert float(o.param_groups[0]["lr"]) == pytest.approx(t.lr, rel=1e-6)  # written back


# ---------------------------------------------------------------------- 2. load_state_dict
def _twin_runs(cut: int, **kw: Any) -> tuple[Any, Any]:
    """Two identical tuners trained ``cut`` steps (one keeps going untouched)."""
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        m, o, t = make(**kw)
        train(t, m, o, cut)
        out.append((m, o, t))
    return out[0], out[1]


def _continues_like_twin(a: tuple[Any, ...], b: tuple[Any, ...], steps: int) -> None:
    """After a rejected load, ``b`` goes on exactly like ``a``: no work was lost."""
    rng = torch.get_rng_state()
    train(a[2], a[0], a[1], steps)
    torch.set_rng_state(rng)
    train(b[2], b[0], b[1], steps)
    assert b[2].schedule == a[2].schedule and b[2].stages == a[2].stages
    assert same_weights(a[0], b[0])


def _other_model_state(cut: int, **kw: Any) -> dict[str, Any]:
    torch.manual_seed(4)
    m, o, t = make(model=tiny_mlp(d=5), **kw)  # the same layers on 5 inputs instead of 8
    used = []
    for _ in range(cut):
        x = torch.randn(32, 5)
        loss = (m(x) - x.sum(1, keepdim=True)).pow(2).mean()
        o.zero_grad()
        loss.backward()
        used.append(o.param_groups[0]["lr"])
        o.step()
        t.step(loss.item())
    return round_trip(t.state_dict())


@pytest.mark.parametrize(
    ("cut", "kw", "phase"),
    [
        (6, {}, "search"),
        (20, {}, "exploit"),
        (90, {"max_steps": 120, "variant": "budget"}, "exploit"),
    ],
)
def test_state_of_another_model_is_refused_naming_the_parameter(
    cut: int, kw: dict[str, Any], phase: str
) -> None:
    state = _other_model_state(cut, **kw)
    assert state["phase"] == phase
    a, b = _twin_runs(cut, **kw)
    with pytest.raises(StateError, match=r"'0\.weight' is shape \(16, 5\) float32 in the state, "
                       r"shape \(16, 8\) float32 in this model"):  # fmt: skip
        b[2].load_state_dict(state)
    _continues_like_twin(a, b, 30)


def test_state_of_another_tuner_class_says_what_it_is() -> None:
    _, _, tuner = make()
    hd_opt = torch.optim.SGD(tiny_mlp().parameters(), lr=0.1)
    hd_match = "not an AutoLRS state_dict: it (is|looks like) a '?HypergradientLR'? state_dict"
    with pytest.raises(StateError, match=hd_match):
        tuner.load_state_dict(HypergradientLR(hd_opt).state_dict())
    from .test_stn import _tuner as stn_tuner

    with pytest.raises(
        StateError, match=r"not an AutoLRS state_dict: it (is a|looks like an) STNTuner"
    ):
        tuner.load_state_dict(stn_tuner()[0].state_dict())
    with pytest.raises(StateError, match="not an AutoLRS state_dict: it is a FedHyper state_dict"):
        tuner.load_state_dict({**tuner.state_dict(), "kind": "FedHyper"})
    with pytest.raises(StateError, match="got a list"):
        tuner.load_state_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.pop("snapshot"), r"it lacks 'snapshot'"),
        (lambda s: s.update(global_step="abc"), r"global_step='abc' is not an int >= 0"),
        (lambda s: s.update(phase="train"), r"phase='train' is not one of"),
        (
            lambda s: s["history"].update(lr=s["history"]["lr"][:-1]),
            r"history columns have different lengths",
        ),
        (lambda s: s["history"].update(lr=["x"]), r"history\.lr is list, not a tensor"),
        (lambda s: s.update(version=7), r"unknown version 7"),
        (lambda s: s["search"].update(tau="abc"), r"StageSearch.*tau='abc'"),
        (lambda s: s["search"].update(searcher={"nonsense": 1}), r"searcher or predictor"),
        (lambda s: s["snapshot"].update(devices=[]), r"snapshot: .*tensors but 0 device"),
        (lambda s: s["snapshot"]["state"]["extras"].update(ema={}), r"extras \['ema'\]"),
        (
            lambda s: s["snapshot"]["state"]["optimizer"]["param_groups"].append({"params": [99]}),
            r"parameter groups hold \[4, 1\] parameters, this optimizer's \[4\]",
        ),
    ],
)
def test_malformed_state_is_refused_atomically(edit: Any, match: str) -> None:
    a, b = _twin_runs(8)  # stage 0: 3 candidates x 4 steps, then 20 exploitation steps
    state = round_trip(b[2].state_dict())  # mid-search
    _continues_like_twin(a, b, 6)  # both exploit now: a partial load would show
    assert state["version"] == 3 and state["phase"] == "search" and b[2].phase == "exploit"
    edit(state)
    with pytest.raises(StateError, match=match):
        b[2].load_state_dict(state)
    _continues_like_twin(a, b, 30)


def test_changed_arguments_are_listed_with_both_values() -> None:
    _, _, t = make()
    state = round_trip(t.state_dict())
    _, _, other = make(tau=30, k=4, lr_bounds=(1e-3, 0.1))
    with pytest.raises(StateError) as err:
        other.load_state_dict(state)
    msg = str(err.value)
    for part in ("tau: saved 20, given 30", "k: saved 3, given 4",
                 "lr_bounds: saved [0.001, 0.3], given [0.001, 0.1]"):  # fmt: skip
        assert part in msg, msg
    assert "variant" not in msg and "max_steps" not in msg and "tau_prime" not in msg

    _, _, budget = make(max_steps=200, variant="budget")
    state = round_trip(budget.state_dict())
    _, _, longer = make(max_steps=300, variant="budget", warmup_steps=10)
    with pytest.raises(StateError) as err:
        longer.load_state_dict(state)
    msg = str(err.value)
    assert "max_steps: saved 200, given 300" in msg and "warmup_steps" not in msg
    assert "policy.max_steps: saved 200, given 300" in msg
    # The same arguments load (and the rejected loads changed nothing).
    _, _, same = make(max_steps=200, variant="budget")
    same.load_state_dict(state)


def test_version_2_state_still_resumes_bit_for_bit() -> None:
    torch.manual_seed(3)
    m_a, o_a, t_a = make()
    train(t_a, m_a, o_a, 60)

    torch.manual_seed(3)
    m_b, o_b, t_b = make()
    train(t_b, m_b, o_b, 17)
    state = t_b.state_dict()
    del state["kind"], state["config"]
    state["version"] = 2
    ck = round_trip({"m": m_b.state_dict(), "o": o_b.state_dict(), "t": state,
                     "rng": torch.get_rng_state()})  # fmt: skip
    torch.manual_seed(99)
    m_c, o_c, t_c = make()
    m_c.load_state_dict(ck["m"])
    o_c.load_state_dict(ck["o"])
    t_c.load_state_dict(ck["t"])
    torch.set_rng_state(ck["rng"])
    train(t_c, m_c, o_c, 43)
    assert t_c.schedule == t_a.schedule and t_c.stages == t_a.stages
    assert same_weights(m_a, m_c)
    # Version 2 carries only the variant of the configuration.
    _, _, budget = make(max_steps=100, variant="budget")
    with pytest.raises(StateError, match="variant: saved 'paper', given 'budget'"):
        budget.load_state_dict(ck["t"])


def test_stage_search_load_is_atomic() -> None:
    s = StageSearch(lr_bounds=(1e-3, 1.0), tau=40, k=2, seed=0)
    s.plan(0)
    s.open_record(0)
    s.begin_stage()
    s.score(s.propose(1)[0], [1.0, 0.9, 0.8])
    good = round_trip(s.state_dict())
    t = StageSearch(lr_bounds=(1e-2, 0.5), tau=40, k=2, seed=1)
    before = repr(t.state_dict())
    for bad in (
        {**good, "searcher": {"nonsense": 1}},
        {**good, "predictor": "x"},
        {**good, "tau": "abc"},
        {**good, "results": [{"lr": "fast"}]},
        {**good, "lr_bounds": [1.0, 0.1]},
        {k: v for k, v in good.items() if k != "stage"},
    ):
        with pytest.raises(StateError):
            t.load_state_dict(bad)
        assert repr(t.state_dict()) == before
    t.load_state_dict(good)
    assert repr(t.state_dict()) == repr(good)


def test_snapshot_of_another_model_is_refused_and_keeps_its_capture() -> None:
    small, big = nn.Linear(3, 2), nn.Linear(4, 2)
    o_small = torch.optim.Adam(small.parameters(), lr=0.1)
    o_big = torch.optim.Adam(big.parameters(), lr=0.1)
    for m, o, d in ((small, o_small, 3), (big, o_big, 4)):
        m(torch.ones(1, d)).sum().backward()
        o.step()
    saved = Snapshot(small, o_small)
    saved.capture()
    snap = Snapshot(big, o_big)
    snap.capture()
    w0 = big.weight.detach().clone()
    with pytest.raises(StateError, match=r"'weight' is shape \(2, 3\) float32 in the state, "
                       r"shape \(2, 4\) float32 in this model"):  # fmt: skip
        snap.load_state_dict(round_trip(saved.state_dict()))
    # Same shapes, other dtype.
    small64 = copy.deepcopy(small).double()
    snap64 = Snapshot(small64, torch.optim.Adam(small64.parameters(), lr=0.1))
    with pytest.raises(StateError, match=r"'weight' is shape \(2, 3\) float32 in the state, "
                       r"shape \(2, 3\) float64"):  # fmt: skip
        snap64.load_state_dict(saved.state_dict())
    assert snap64.empty
    with torch.no_grad():
        big.weight.add_(1.0)
    snap.restore()  # the capture survived the rejected load
    assert torch.equal(big.weight, w0)


# ---------------------------------------------------------------------- 3. frozen groups
def test_frozen_group_stays_at_zero_and_ratios_are_kept() -> None:
    def groups(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [
                {"params": m[0].parameters(), "lr": 0.0},
                {"params": m[3].parameters(), "lr": 0.1},
            ],
            momentum=0.9,
        )

    torch.manual_seed(3)
    model, opt, tuner = make(opt=groups)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    live = [p.detach().clone() for p in model[3].parameters()]
    lrs0: list[float] = []
    used = train(tuner, model, opt, 40, group=1,
                 before=lambda i: lrs0.append(opt.param_groups[0]["lr"]))  # fmt: skip
    assert lrs0 == [0.0] * 40  # exactly 0 at every step: search, restores, exploitation
    assert all(torch.equal(p, q) for p, q in zip(model[0].parameters(), frozen))
    assert not all(torch.equal(p, q) for p, q in zip(model[3].parameters(), live))
    assert used == tuner.schedule  # the first trainable group is the one the tuner reports
    assert {r.phase for r in tuner.history} >= {"search", "exploit"}

    # Three groups: the 0 stays 0, the other two keep their 2:1 ratio.
    def three(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [
                {"params": m[0].weight, "lr": 0.0},
                {"params": m[0].bias, "lr": 0.2},
                {"params": m[3].parameters(), "lr": 0.1},
            ]
        )

    m, opt3, t3 = make(opt=three)
    train(t3, m, opt3, 40)
    assert opt3.param_groups[0]["lr"] == 0.0
    assert opt3.param_groups[2]["lr"] == 0.5 * opt3.param_groups[1]["lr"] == 0.5 * t3.lr


@pytest.mark.parametrize(
    ("lrs", "match"),
    [
        ([0.0, 0.0], "every parameter group has lr=0"),
        ([0.1, math.nan], "param group 1 has lr=nan"),
        ([0.1, math.inf], "param group 1 has lr=inf"),
        ([-0.1, 0.1], "param group 0 has lr=-0.1"),
        ([5e-324, 1.0], "not finite"),  # a ratio that overflows
    ],
)
def test_group_ratios_that_cannot_be_kept_raise(lrs: list[float], match: str) -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.SGD([{"params": m[0].parameters()}, {"params": m[1].parameters()}], lr=0.1)
    for g, lr in zip(opt.param_groups, lrs):
        g["lr"] = lr  # torch refuses some of these in the constructor; a write does not
    with pytest.raises(ConfigError, match=match):
        AutoLRS(m, opt, max_steps=100)
    with pytest.raises(ConfigError, match=match):
        GroupLRs(opt)  # what Ray's TuneCheckpointer uses as well


def test_group_lrs_hook_holds_the_tuner_weakly() -> None:
    m = nn.Linear(2, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    g = GroupLRs(opt)
    g.watch()
    m(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert g.take_used() == [0.1] and g.take_used() is None
    n = len(opt._optimizer_step_pre_hooks)
    del g
    opt.step()  # the dead watcher's hook does nothing; the next watch removes it
    GroupLRs(opt).watch()
    assert len(opt._optimizer_step_pre_hooks) == n


def _warnings_of_one_run(
    n: int, *, bad: Callable[[AutoLRS], bool], poison: bool = False, drift_at: int = -1,
    val_fn_nan_at: int = -1, no_step_at: int = -1, **kw: Any,
) -> list[warnings.WarningMessage]:  # fmt: skip
    """Train a tiny model ``n`` steps; every warning raised inside ``tuner.step``."""
    torch.manual_seed(0)
    m = nn.Linear(4, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    calls = [0]

    def val_fn() -> float:
        calls[0] += 1
        return math.nan if calls[0] == val_fn_nan_at else 1.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner = AutoLRS(m, opt, lr_bounds=(1e-3, 0.3), seed=0, **kw,
                        val_fn=val_fn if val_fn_nan_at > 0 else None)  # fmt: skip
    seen: list[warnings.WarningMessage] = []
    for i in range(n):
        x = torch.randn(8, 4, generator=g)
        loss = (m(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if i == drift_at:
            opt.param_groups[0]["lr"] = 0.5
        if i != no_step_at:
            opt.step()
        value = loss.item()
        if bad(tuner):
            value = math.nan
            if poison:
                with torch.no_grad():
                    m.weight.fill_(math.nan)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            tuner.step(value)
        seen += w
    return seen


@pytest.mark.parametrize(
    "case",
    ["recover", "harmless", "warmup", "all-diverged", "drift", "after-max-steps", "val_fn",
     "no-step"],
)  # fmt: skip
def test_every_step_warning_points_at_the_callers_line(case: str) -> None:
    """A warning raised however deep inside ``tuner.step`` names the line that called it."""
    kw: dict[str, Any] = {"max_steps": 100, "bad": lambda t: False}
    if case == "recover":
        kw = {"max_steps": 40, "policy": BudgetPolicy.for_budget(40, searches=0), "poison": True,
              "bad": lambda t: t.global_step == 20}  # fmt: skip
    elif case == "harmless":
        kw["bad"] = lambda t: t.global_step == 50
    elif case == "warmup":
        kw.update(poison=True, bad=lambda t: t.global_step == 2)
    elif case == "all-diverged":
        kw["bad"] = lambda t: t.phase == "search"
    elif case == "drift":
        kw["drift_at"] = 30
    elif case == "val_fn":
        kw["val_fn_nan_at"] = 1
    elif case == "no-step":
        kw["no_step_at"] = 30
    n = 45 if case == "after-max-steps" else 60
    if case == "after-max-steps":
        kw["max_steps"] = 40
    seen = _warnings_of_one_run(n, **kw)
    assert seen, case
    tuner_dir = os.path.dirname(os.path.abspath(tuner_module.__file__))
    for w in seen:
        where = (case, w.filename, w.lineno, str(w.message)[:80])
        assert os.path.dirname(os.path.abspath(w.filename)) != tuner_dir, where
        if "mutmut" not in w.filename:  # under `make mutate` its trampoline calls the tuner
            assert w.filename == __file__, where


# ---------------------------------------------------------------------- 4. one call per step
UNSTEPPED = "without an optimizer.step"


def test_a_call_per_micro_batch_is_warned_once() -> None:
    """Gradient accumulation with ``tuner.step`` per micro-batch spends the budget k times too
    fast and moves the LR between micro-batches: said once, at the first such call."""
    model, opt, tuner = make(max_steps=200, variant="budget")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(40):
            idx = torch.randint(0, X.shape[0], (16,))
            loss = nn.functional.mse_loss(model(X[idx]), Y[idx]) / 2
            loss.backward()
            if i % 2 == 1:  # two micro-batches per optimizer step
                opt.step()
                opt.zero_grad()
            tuner.step(loss.item())
    said = [str(w.message) for w in caught if UNSTEPPED in str(w.message)]
    assert len(said) == 1 and said[0].startswith("AutoLRS.step() at step 0 came without"), said
    assert "right after each optimizer.step()" in said[0] and "skipped=True" in said[0]
    assert tuner.global_step == 40  # still counted: the warning changes nothing else


def test_tuner_step_before_optimizer_step_is_warned_once() -> None:
    model, opt, tuner = make(max_steps=200, variant="budget")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(30):
            idx = torch.randint(0, X.shape[0], (16,))
            loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            tuner.step(loss.item())  # the wrong order: the LR it sets comes one step late
            opt.step()
    said = [str(w.message) for w in caught if UNSTEPPED in str(w.message)]
    assert len(said) == 1 and "at step 0" in said[0], said


def test_no_step_warning_for_real_steps_skipped_steps_and_non_finite_losses() -> None:
    model, opt, tuner = make(max_steps=200, variant="budget")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tuner, model, opt, 10)
        tuner.step(1.0, skipped=True)  # a GradScaler skipped the optimizer step: told so
        tuner.step(math.nan)  # a loop that skips a non-finite update: handled as such
        train(tuner, model, opt, 10)
        train(tuner, model, opt, 200 - tuner.global_step - 1)
        tuner.step(math.nan)  # the budget's last step skipped its update
        train(tuner, model, opt, 2)  # past the budget: said by the done warning alone
    assert tuner.done
    assert not [w for w in caught if UNSTEPPED in str(w.message)]


@pytest.mark.parametrize("steps", [30, 150])  # inside a candidate's window; exploiting
def test_a_param_group_added_later_is_refused_at_the_next_step(steps: int) -> None:
    """A group added after the tuner was built could not be restored by its snapshots (torch
    would raise inside load_state_dict at the next candidate switch): said at once."""
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model[0].parameters(), lr=0.01, momentum=0.9)
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 0.3), max_steps=200, seed=0)
    train(tuner, model, opt, steps)
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.005})
    before = (tuner.global_step, tuner.phase, tuner.lr)  # (reading history would end a fast run)
    idx = torch.randint(0, X.shape[0], (32,))
    loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    with pytest.raises(ConfigError, match=r"now has 2 parameter group\(s\); it had 1 .*"
                       r"requires_grad=False"):  # fmt: skip
        tuner.step(loss.item())
    assert (tuner.global_step, tuner.phase, tuner.lr) == before and len(tuner.history) == steps


_B = {"lr_bounds": (1e-3, 0.1)}


@pytest.mark.parametrize(
    ("kw", "err", "message"),
    [
        ({**_B, "max_steps": 100, "warmup_steps": -1}, ConfigError,
         "warmup_steps must be an int >= 0, got -1"),
        ({**_B, "variant": "paper", "warmup_steps": -1}, ConfigError,
         "warmup_steps must be an int >= 0, got -1"),
        ({**_B, "max_steps": 100, "val_every": 0, "val_fn": lambda: 1.0}, ConfigError,
         "val_every must be an int >= 1, got 0"),
        ({**_B, "max_steps": 100, "val_fn": 3}, ConfigTypeError,
         "val_fn must be callable, got int 3"),
        ({**_B, "max_steps": 100, "warmup_lr": 0.0}, ConfigError,
         "warmup_lr must be a finite float > 0, got 0.0"),
        ({**_B, "max_steps": 0}, ConfigError, "max_steps must be an int >= 1, got 0"),
        ({**_B, "max_steps": 100, "scaler": object()}, ConfigTypeError,
         "scaler must be a torch.amp.GradScaler (anything with get_scale() and is_enabled()), "
         "got object"),
        ({**_B, "max_steps": 100, "policy": 3}, ConfigTypeError,
         "policy must be an autolr.BudgetPolicy, got int"),
    ],
)  # fmt: skip
def test_constructor_argument_messages_are_exact(kw: dict, err: type, message: str) -> None:
    """Each argument check names the argument, the rule and the value (found unpinned by a
    mutation sample of ``AutoLRS.__init__``: a negative ``warmup_steps`` or ``val_every=0``
    passed with the rule removed)."""
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(err, match=f"^{re.escape(message)}$"):
        AutoLRS(model, opt, **kw)
