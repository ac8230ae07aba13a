"""The budget variant of AutoLRS and the shared decision core (policies, records, rules)."""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from autolr import (
    AutoLRS,
    BudgetPolicy,
    ConfigError,
    DivergenceRule,
    StageRecord,
    StageSearch,
    StateError,
)
from autolr.searchers import Param, RandomSearcher

from .conftest import make_regression, scripted_losses, tiny_mlp

X, Y = make_regression()
GOLDEN = os.path.join(os.path.dirname(__file__), "data", "autolrs_paper_golden.json")


def loop(tuner: AutoLRS, model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    used = []
    for _ in range(steps):
        idx = torch.randint(0, X.shape[0], (32,))
        loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        tuner.step(loss.item())
    return used


def budget_tuner(
    max_steps: int = 400, **kw: Any
) -> tuple[AutoLRS, nn.Module, torch.optim.Optimizer]:
    model = tiny_mlp()
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kw.setdefault("searcher", RandomSearcher([Param("lr", 1e-3, 0.3, log=True)], seed=0))
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 0.3), max_steps=max_steps, **kw)
    return tuner, model, opt


# ---------------------------------------------------------------------- paper, bit for bit
def _paper_case(name: str) -> dict[str, list[Any]]:
    """Replays the scenario that produced the golden file (see its ``generated_by``)."""
    cont = "best" if name.startswith("best") else "start"
    nan_at = (2, 30, 31, 60, 100) if name.endswith("nan") else ()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    w = torch.randn(8, 1)
    searcher = RandomSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=3)
    xv = torch.randn(64, 8)
    yv = xv @ w
    val_fn = (lambda: (model(xv) - yv).pow(2).mean()) if name.endswith("val") else None
    t = AutoLRS(
        model, opt, variant="paper", lr_bounds=(1e-3, 1.0), tau=20, tau_prime=4, k=3,
        tau_max=80, warmup_steps=5, max_steps=170, continue_from=cont, searcher=searcher,
        seed=1, val_fn=val_fn, val_every=2,
    )  # fmt: skip
    lrs, phases, stages = [], [], []
    for i in range(170):
        x = torch.randn(16, 8)
        loss = (model(x) - x @ w).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        v = float("nan") if i in nan_at else loss.item()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t.step(v)
        lrs.append(t.lr)
        phases.append(t.phase)
        stages.append(t.stage)
    fc = [
        r.forecast if r.forecast is None or math.isfinite(r.forecast) else "inf" for r in t.history
    ]
    return {"lrs": lrs, "phases": phases, "stages": stages, "history_lr": t.schedule,
            "forecasts": fc}  # fmt: skip


@pytest.mark.parametrize(
    "name", ["start-random", "best-random", "start-random-nan", "best-random-val"]
)
def test_paper_variant_is_bit_for_bit_unchanged(name: str) -> None:
    with open(GOLDEN) as fh:
        want = json.load(fh)["cases"][name]
    got = _paper_case(name)
    for key in ("phases", "stages", "lrs", "history_lr"):
        assert got[key] == want[key], key  # exact floats: the same decisions, step by step
    # The forecasts' curve fits run through BLAS, whose last bits differ between CPUs (the
    # same code gives 2.212646763324061 on one machine, 2.21264681211668 on another).
    fc_got, fc_want = got["forecasts"], want["forecasts"]
    assert [type(x) for x in fc_got] == [type(x) for x in fc_want], "forecasts"
    for a, b in zip(fc_got, fc_want):
        assert a == b if not isinstance(a, float) else a == pytest.approx(b, rel=1e-6, abs=0)


# ---------------------------------------------------------------------- the plan
@pytest.mark.parametrize("budget", [100, 400, 1500, 20_000])
@pytest.mark.parametrize("searches", [1, 3])
def test_budget_plan_bounds_search_cost(budget: int, searches: int) -> None:
    pol = BudgetPolicy.for_budget(budget, searches=searches)
    discarded = sum((k - 1) * tp for k, tp in zip(pol.ks, pol.tau_primes))
    assert discarded <= 0.2 * budget + 1e-9
    assert pol.starts and pol.starts[0] == pol.warmup == round(0.05 * budget)
    # Every search ends before the next one starts, and all before the final decay.
    ends = [s + k * tp for s, k, tp in zip(pol.starts, pol.ks, pol.tau_primes)]
    assert all(e <= s for e, s in zip(ends, pol.starts[1:]))
    assert ends[-1] <= budget - pol.decay
    assert min(pol.tau_primes) >= 5


def test_budget_plan_too_small_says_why() -> None:
    pol = BudgetPolicy.for_budget(30)
    assert pol.starts == () and "too small" in pol.note
    assert BudgetPolicy.for_budget(100, searches=3).note == "budget holds 1 of 3 searches"
    with pytest.raises(ConfigError, match="decay_shape"):
        BudgetPolicy.for_budget(100, decay_shape="cosine")
    with pytest.raises(ConfigError, match="search_frac"):
        BudgetPolicy.for_budget(100, search_frac=2.0)


def test_exploit_lr_decays_linearly_to_zero() -> None:
    pol = BudgetPolicy.for_budget(1000, decay_frac=0.5, decay_shape="linear")
    assert pol.exploit_lr(0.1, 499) == pol.exploit_lr(0.1, 500) == 0.1
    assert pol.exploit_lr(0.1, 501) == pytest.approx(0.1 * (1 - 1 / 500))
    assert pol.exploit_lr(0.1, 750) == pytest.approx(0.05)
    assert pol.exploit_lr(0.1, 999) == pytest.approx(0.1 / 500)
    sq = BudgetPolicy.for_budget(1000, decay_frac=0.5, decay_shape="sqrt")
    assert sq.exploit_lr(0.1, 625) == pytest.approx(0.05)  # 1 - sqrt(1/4) = 1/2


def test_divergence_rule() -> None:
    rule = DivergenceRule(factor=3.0, patience=2)
    assert rule.update(0, 2.9, ref=1.0) == (0, False)
    assert rule.update(0, 3.1, ref=1.0) == (1, False)
    assert rule.update(1, 3.1, ref=1.0) == (2, True)
    assert rule.update(1, 2.0, ref=1.0) == (0, False)  # resets
    assert rule.update(0, math.nan, ref=1.0) == (1, True)  # non-finite: at once
    assert rule.update(0, 100.0, ref=None) == (0, False)  # no reference yet
    assert "3x stage-start loss 1" in rule.reason(3.5, 1.0)


def test_stage_record_round_trip() -> None:
    s = StageSearch(lr_bounds=(1e-3, 1.0), tau=40, k=2, searcher=RandomSearcher(
        [Param("lr", 1e-3, 1.0, log=True)], seed=0))  # fmt: skip
    s.plan(0)
    s.open_record(0)
    s.begin_stage()
    for lr in s.propose(1), s.propose(1):
        s.score(lr[0], [1.0, 0.9, 0.8, 0.75])
    win = s.choose()
    rec = s.update_record(end=44)
    assert rec.winner_lr == win.lr and rec.end == 44 and len(rec.candidates) == 2
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    s2 = StageSearch(lr_bounds=(1e-3, 1.0), tau=40, k=2)
    s2.load_state_dict(state)
    assert s2.records == [rec] and isinstance(s2.records[0], StageRecord)
    with pytest.raises(StateError, match="variant"):
        StageSearch(lr_bounds=(1e-3, 1.0), variant="budget", max_steps=100).load_state_dict(state)


# ---------------------------------------------------------------------- the tuner
def test_budget_is_the_default_and_follows_its_plan() -> None:
    tuner, model, opt = budget_tuner(400)
    assert tuner.variant == "budget" and tuner.continue_from == "best"
    pol = tuner.search.policy
    used = loop(tuner, model, opt, 400)
    assert tuner.done
    hist = tuner.history
    w = pol.warmup
    # Linear warm-up to the middle of the box.
    mid = math.sqrt(1e-3 * 0.3)
    assert used[:w] == pytest.approx([mid * (i + 1) / w for i in range(w)])
    assert [r.phase for r in hist[:w]] == ["warmup"] * w
    # One search of k windows of tau_prime steps each, then no more search steps.
    k, tp = pol.ks[0], pol.tau_primes[0]
    n_search = sum(r.phase == "search" for r in hist)
    assert n_search == k * tp == sum(len(st.candidates) * st.tau_prime for st in tuner.stages)
    # Discarded search steps within the 20 % budget.
    assert (k - 1) * tp <= 0.2 * 400
    # The winner's LR until the decay, then as 1 - sqrt(x) to (almost) zero.
    win = tuner.stages[0].winner_lr
    start = 400 - pol.decay
    assert used[start - 1] == pytest.approx(win)
    assert used[-1] == pytest.approx(win * (1 - math.sqrt(1 - 1 / pol.decay)))
    assert all(a >= b for a, b in zip(used[start:], used[start + 1 :]))


def test_a_wide_box_gets_more_candidates_and_tries_them_all() -> None:
    """The plan's k follows the box (one candidate per 0.75 decades, at least 4)."""
    model = tiny_mlp()
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # The default searcher: 3 stratified points, then 4 GP steps (fitted from the 6th).
    tuner = AutoLRS(model, opt, lr_bounds=(1e-6, 1.0), max_steps=800)
    assert tuner.search.policy == BudgetPolicy.for_budget(800, lr_bounds=(1e-6, 1.0))
    assert tuner.search.policy.ks == (7,)  # 8 asked, 7 windows of 26 steps fit
    loop(tuner, model, opt, 800)
    (stage,) = tuner.stages
    assert stage.k == 7 and len(stage.candidates) == 7 and tuner.done
    lrs = [c.lr for c in stage.candidates]
    assert len(set(lrs)) == 7 and all(1e-6 <= lr <= 1.0 for lr in lrs)
    assert stage.winner_lr in lrs
    # The tuner's default box keeps the plan it had.
    small, _, _ = budget_tuner(800)
    assert small.search.policy.ks == (4,)


def test_a_wide_box_checkpoint_with_four_candidates_resumes_with_k_spelled_out() -> None:
    # Before 2026-12-07 every box planned 4 candidates; a checkpoint fixes its plan.
    def wide(**kw: Any) -> AutoLRS:
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        return AutoLRS(model, opt, lr_bounds=(1e-6, 1.0), max_steps=2000, **kw)

    four = {"policy": BudgetPolicy.for_budget(2000, k=4)}
    state = wide(**four).state_dict()
    with pytest.raises(StateError, match=r"policy\.ks: saved \[4\], given \[8\]"):
        wide().load_state_dict(state)
    wide(**four).load_state_dict(state)


def test_budget_arguments_are_checked() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ConfigError, match="variant='paper'"):
        AutoLRS(model, opt, max_steps=300, tau=60, k=3)
    with pytest.raises(ConfigError, match="pass max_steps"):
        AutoLRS(model, opt, variant="budget")
    with pytest.raises(ConfigError, match="needs variant='budget'"):
        AutoLRS(model, opt, variant="paper", policy=BudgetPolicy.for_budget(100))
    with pytest.raises(ConfigError, match="variant"):
        AutoLRS(model, opt, variant="fast")


def test_budget_too_small_trains_with_warmup_and_decay_and_says_so() -> None:
    with pytest.warns(RuntimeWarning, match="too small for any search") as rec:
        tuner, model, opt = budget_tuner(30)
        used = loop(tuner, model, opt, 30)
    assert len([w for w in rec if "too small" in str(w.message)]) == 1
    assert tuner.stages == [] and all(r.phase in ("warmup", "final") for r in tuner.history)
    mid = math.sqrt(1e-3 * 0.3)
    pol = tuner.search.policy
    assert used[pol.warmup] == pytest.approx(mid)
    assert used[-1] == pytest.approx(mid * (1 - math.sqrt(1 - 1 / pol.decay)))


def test_cooled_windows_continue_from_before_the_cooldown() -> None:
    pol = BudgetPolicy.for_budget(400, cooldown_frac=0.5)
    tuner, model, opt = budget_tuner(400, policy=pol, compare="cooled")
    w, k, tp = pol.warmup, pol.ks[0], pol.tau_primes[0]
    cool = round(0.5 * tp)
    used = loop(tuner, model, opt, w)
    snaps = []
    for _ in range(k):
        used += loop(tuner, model, opt, tp - cool)
        snaps.append([p.detach().clone() for p in model.parameters()])
        used += loop(tuner, model, opt, cool)
    # Inside each window the LR decays over its last `cool` steps.
    lr0 = used[w]
    window = used[w : w + tp]
    assert window[: tp - cool] == [lr0] * (tp - cool)
    assert window[-1] == pytest.approx(lr0 / (cool + 1))
    # After the search the run continues from the winner's pre-cooldown weights.
    res = tuner.stages[0].candidates
    best = min(range(k), key=lambda i: res[i].forecast)
    for p, q in zip(model.parameters(), snaps[best]):
        assert torch.equal(p, q)
    assert tuner.phase == "exploit" and tuner.lr == res[best].lr


COOLED = {"policy": BudgetPolicy.for_budget(300, cooldown_frac=0.5), "compare": "cooled"}


# Cut mid-search; with cooled windows, inside the winner's cooldown (15 warm-up steps, 20-step
# windows whose last 10 cool): its pre-cooldown state is then in flight in the checkpoint.
@pytest.mark.parametrize(("kw", "cut"), [({}, 40), (COOLED, None)])
def test_budget_resume_equals_uninterrupted(kw: dict[str, Any], cut: int | None) -> None:
    torch.manual_seed(5)
    t_a, m_a, o_a = budget_tuner(300, **kw)
    torch.manual_seed(7)
    used_a = loop(t_a, m_a, o_a, 300)
    if cut is None:
        res = t_a.stages[0].candidates
        best = min(range(len(res)), key=lambda i: res[i].forecast)
        cut = 15 + 20 * best + 15

    torch.manual_seed(5)
    t_b, m_b, o_b = budget_tuner(300, **kw)
    torch.manual_seed(7)
    used_b = loop(t_b, m_b, o_b, cut)
    buf = io.BytesIO()
    torch.save(
        {"m": m_b.state_dict(), "o": o_b.state_dict(), "t": t_b.state_dict(),
         "rng": torch.get_rng_state()}, buf,
    )  # fmt: skip
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    torch.manual_seed(5)
    t_c, m_c, o_c = budget_tuner(300, **kw)
    m_c.load_state_dict(ck["m"])
    o_c.load_state_dict(ck["o"])
    t_c.load_state_dict(ck["t"])
    torch.set_rng_state(ck["rng"])
    used_c = used_b + loop(t_c, m_c, o_c, 300 - cut)
    assert used_c == used_a
    assert t_c.stages == t_a.stages
    for p, q in zip(m_c.parameters(), m_a.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(StateError, match="variant"):
        model = tiny_mlp()
        AutoLRS(
            model, torch.optim.SGD(model.parameters(), lr=0.1), variant="paper"
        ).load_state_dict(ck["t"])


@scripted_losses
def test_budget_all_diverged_searches_lower_and_keeps_training() -> None:
    # Every LR of the first box blows up (a loss that grows with the LR): the stage is
    # searched again below the box, and training goes on without an exception.
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tuner = AutoLRS(
        model, opt, lr_bounds=(1.0, 10.0), max_steps=400,
        searcher=RandomSearcher([Param("lr", 1.0, 10.0, log=True)], seed=0),
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="every candidate diverged"):
        for _ in range(400):
            loss = 1.0 if tuner.lr < 0.3 else (1e9 if tuner.phase == "search" else 1.0)
            tuner.step(loss)
    st = tuner.stages[0]
    assert st.note == "retry" or st.winner_lr is not None
    assert tuner.search.lr_bounds[1] < 1.0
    assert tuner.done


def test_a_checkpoint_of_the_previous_defaults_resumes_with_them_spelled_out() -> None:
    # The defaults changed on 2026-12-07 (cooled windows, 1 - sqrt decay). A checkpoint fixes
    # its plan: a new-default tuner refuses the old one, naming what differs, and a tuner
    # built with the previous defaults written out takes it.
    previous = {
        "policy": BudgetPolicy.for_budget(400, cooldown_frac=0.0, decay_shape="linear"),
        "compare": "window",
    }
    tuner, model, opt = budget_tuner(400, **previous)
    loop(tuner, model, opt, 150)
    state = tuner.state_dict()
    fresh, _, _ = budget_tuner(400)
    with pytest.raises(StateError, match=r"policy.*compare|compare.*policy") as info:
        fresh.load_state_dict(state)
    assert "'cooled'" in str(info.value) and "'window'" in str(info.value)
    again, _, _ = budget_tuner(400, **previous)
    again.load_state_dict(state)
    assert again.global_step == 150 and again.search.compare == "window"
