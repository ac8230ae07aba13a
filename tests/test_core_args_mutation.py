"""Argument checks, defaults and budget messages of the AutoLRS core, pinned exactly.

Found unpinned by mutation testing (issue 18) of ``StageSearch.__init__``, ``for_variant``,
``budget_report``, ``open_record`` and ``AutoLRS.__init__``: a rule, a default or a message
could change with every other test still green. Each message is matched in full and each
``budget_report`` text is computed by hand from the paper rule (a search needs
``(k + 1)·τ'`` steps left, else ``remaining // (2·τ')`` candidates; τ, τ' double after a
stage while ``τ' < τ_max / 10``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from torch import nn

from autolr import AutoLRS, BudgetPolicy, ConfigError, ConfigTypeError, StageSearch
from autolr._autolrs._policy import DivergenceRule, PaperPolicy, StagePlan
from autolr.predictors import ExponentialPredictor
from autolr.searchers import GPSearcher, Param

MID = f"lr={math.sqrt(1e-4 * 1e-1):.3g} (the middle of lr_bounds)"  # lr=0.00316


def raises(err: type, message: str) -> Any:
    """``pytest.raises`` matching the whole message."""
    return pytest.raises(err, match=f"^{re.escape(message)}$")


# ---------------------------------------------------------------------- StageSearch
def test_stage_search_defaults_by_value() -> None:
    s = StageSearch()
    assert (s.variant, s.max_steps, s.compare) == ("paper", None, "forecast")
    assert (s.tau, s.tau_prime, s.k, s.tau_max) == (1000, 100, 10, 8000)
    assert s.double is True and s.continue_best is False and s.parallel is False
    assert s.divergence == DivergenceRule(factor=3.0, patience=3)
    assert isinstance(s.policy, PaperPolicy)
    assert isinstance(s.predictor, ExponentialPredictor)
    assert s.lr_bounds == (1e-4, 1e-1) and s._box == (1e-4, 1e-1)
    assert s.initial_lr == pytest.approx(math.sqrt(1e-5))
    g = s.searcher
    assert isinstance(g, GPSearcher)
    assert g.params == (Param("lr", 1e-4, 1e-1, log=True),)
    assert (g._seed, g.design, g.fit_min_obs) == (0, "sobol", 0)
    # Run state starts empty.
    assert (s.stage, s.results, s.records, s.plan_now) == (0, [], [], None)
    assert (s.retries, s.winner_lr, s.restored) == (0, None, 0)
    assert s._restore_box is None and s._healthy is True


def test_stage_search_budget_defaults_by_value() -> None:
    s = StageSearch(variant="budget", max_steps=400, seed=5)
    assert s.compare == "cooled"  # the budget variant's default
    assert s.policy == BudgetPolicy.for_budget(400)
    g = s.searcher
    assert (g._seed, g.design, g.fit_min_obs) == (5, "stratified", 6)
    par = StageSearch(variant="budget", max_steps=400, parallel=True)
    assert par.parallel is True and par.policy == BudgetPolicy.for_budget(400, parallel=True)
    assert par.policy != s.policy
    mine = BudgetPolicy.for_budget(400, searches=2)
    assert StageSearch(variant="budget", max_steps=400, policy=mine).policy is mine


def test_stage_search_flags_and_arguments_are_kept() -> None:
    rule = DivergenceRule(factor=5.0, patience=1)
    pred = ExponentialPredictor(min_points=6)
    s = StageSearch(
        lr_bounds=(1e-3, 0.5), tau=40, tau_prime=7, k=3, tau_max=80, double=0,
        predictor=pred, divergence=rule, continue_best=1, parallel=1, max_steps=500,
        compare="window",
    )  # fmt: skip
    assert (s.tau, s.tau_prime, s.k, s.tau_max, s.max_steps) == (40, 7, 3, 80, 500)
    assert s.double is False and s.continue_best is True and s.parallel is True
    assert s.predictor is pred and s.divergence is rule and s.compare == "window"
    assert s.lr_bounds == (1e-3, 0.5) and s._box == (1e-3, 0.5)
    assert s.searcher.params == (Param("lr", 1e-3, 0.5, log=True),)


@pytest.mark.parametrize(("tau", "tau_prime"), [(5, 1), (15, 1), (20, 2), (25, 2), (1000, 100)])
def test_default_tau_prime_is_a_tenth_of_tau_at_least_one(tau: int, tau_prime: int) -> None:
    s = StageSearch(tau=tau, tau_max=tau)
    assert s.tau_prime == tau_prime and isinstance(s.tau_prime, int)


def test_smallest_allowed_values_pass() -> None:
    s = StageSearch(tau=2, tau_prime=1, k=1, tau_max=2, max_steps=1)
    assert (s.tau, s.tau_prime, s.k, s.tau_max, s.max_steps) == (2, 1, 1, 2, 1)
    assert StageSearch(tau=100, tau_prime=99, tau_max=100).tau_prime == 99


def test_a_given_searcher_is_kept_and_narrowed_to_lr_bounds() -> None:
    same = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=1)
    assert StageSearch(lr_bounds=(1e-3, 1.0), searcher=same).searcher is same
    assert same.bounds["lr"] == (1e-3, 1.0)
    other = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=1)
    s = StageSearch(lr_bounds=(1e-2, 0.5), searcher=other)
    assert s.searcher is other and other.bounds["lr"] == (1e-2, 0.5)
    assert s.lr_bounds == (1e-2, 0.5) and s._box == (1e-2, 0.5)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr_bounds": (0.1, 0.01)},
         "lr_bounds must be a pair (low, high) with 0 < low < high, both finite, got (0.1, 0.01)"),
        ({"lr_bounds": (0.0, 1.0)},
         "lr_bounds must be a pair (low, high) with 0 < low < high, both finite, got (0.0, 1.0)"),
        ({"variant": "fast"}, "variant must be one of 'paper', 'budget', got 'fast'"),
        ({"max_steps": 0}, "max_steps must be an int >= 1, got 0"),
        ({"variant": "budget"}, "variant='budget' plans the run from its budget: pass max_steps"),
        ({"compare": "x"}, "compare must be one of 'forecast', 'window', 'cooled', got 'x'"),
        ({"tau": 0}, "tau must be an int >= 1, got 0"),
        ({"tau_prime": 0}, "tau_prime must be an int >= 1, got 0"),
        ({"k": 0}, "k must be an int >= 1, got 0"),
        ({"tau_max": 0}, "tau_max must be an int >= 1, got 0"),
        ({"tau": 100, "tau_prime": 100},
         "tau_prime must be smaller than tau (candidates are short trials of a stage), got "
         "tau_prime=100, tau=100"),
        ({"tau": 1, "tau_max": 1},
         "tau_prime must be smaller than tau (candidates are short trials of a stage), got "
         "tau_prime=1, tau=1"),
        ({"tau_max": 999}, "tau_max must be >= tau, got tau_max=999, tau=1000"),
        ({"variant": "budget", "max_steps": 100, "policy": BudgetPolicy.for_budget(200)},
         "policy plans 200 steps but max_steps=100"),
        ({"searcher": GPSearcher([Param("x", 1e-3, 1.0, log=True)])},
         "searcher must search exactly one parameter named 'lr', got ['x']"),
    ],
)  # fmt: skip
def test_stage_search_argument_messages_are_exact(kw: dict, message: str) -> None:
    with raises(ConfigError, message):
        StageSearch(**kw)


def test_max_steps_of_the_wrong_type_names_it() -> None:
    with raises(ConfigTypeError, "max_steps must be an int >= 1, got 1.5"):
        StageSearch(max_steps=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- for_variant
_NONE = {"tau": None, "tau_prime": None, "k": None, "tau_max": None, "double": None}


def test_for_variant_paper_fills_the_missing_structure_from_the_paper() -> None:
    s = StageSearch.for_variant("paper", max_steps=None, structure=_NONE, policy=None)
    assert (s.variant, s.max_steps) == ("paper", None)
    assert (s.tau, s.tau_prime, s.k, s.tau_max, s.double) == (1000, 100, 10, 8000, True)
    s = StageSearch.for_variant(
        "paper", max_steps=900, structure={"tau": 40, "k": 3, "double": False}, policy=None,
        lr_bounds=(1e-3, 0.5), seed=4, continue_best=True,
    )  # fmt: skip
    assert (s.tau, s.tau_prime, s.k, s.tau_max, s.double) == (40, 4, 3, 8000, False)
    assert (s.max_steps, s.lr_bounds, s.continue_best, s.searcher._seed) == (
        900, (1e-3, 0.5), True, 4)  # fmt: skip
    s = StageSearch.for_variant(
        "paper", max_steps=None, structure={"tau_prime": 7, "tau_max": 3000}, policy=None
    )
    assert (s.tau, s.tau_prime, s.k, s.tau_max) == (1000, 7, 10, 3000)


def test_for_variant_budget_passes_budget_policy_and_common() -> None:
    mine = BudgetPolicy.for_budget(300, searches=2)
    s = StageSearch.for_variant(
        "budget", max_steps=300, structure=_NONE, policy=mine, lr_bounds=(1e-3, 0.5), seed=3
    )
    assert (s.variant, s.max_steps, s.policy, s.lr_bounds) == ("budget", 300, mine, (1e-3, 0.5))
    assert s.searcher._seed == 3
    s = StageSearch.for_variant("budget", max_steps=300, structure={}, policy=None)
    assert s.policy == BudgetPolicy.for_budget(300)


@pytest.mark.parametrize(
    ("variant", "kw", "message"),
    [
        ("fast", {}, "variant must be one of 'paper', 'budget', got 'fast'"),
        ("budget", {"structure": {"tau": 40, "tau_prime": None, "k": 3}},
         "tau, k set the paper's stage structure; variant='budget' plans its stages from max_t "
         "(customise them with policy=BudgetPolicy.for_budget(...)), or pass variant='paper'"),
        ("budget", {"structure": {"double": False}},
         "double set the paper's stage structure; variant='budget' plans its stages from max_t "
         "(customise them with policy=BudgetPolicy.for_budget(...)), or pass variant='paper'"),
        ("budget", {"max_steps": None},
         "variant='budget' plans the run from its budget: pass max_t"),
        ("paper", {"policy": BudgetPolicy.for_budget(100)},
         "policy= plans a budget; it needs variant='budget'"),
    ],
)  # fmt: skip
def test_for_variant_messages_are_exact(variant: str, kw: dict, message: str) -> None:
    args: dict[str, Any] = {"max_steps": 100, "structure": _NONE, "policy": None, **kw}
    with raises(ConfigError, message):
        StageSearch.for_variant(variant, budget_name="max_t", **args)


def test_for_variant_names_max_steps_by_default() -> None:
    with raises(ConfigError, "variant='budget' plans the run from its budget: pass max_steps"):
        StageSearch.for_variant("budget", max_steps=None, structure=_NONE, policy=None)
    with raises(
        ConfigError,
        "k set the paper's stage structure; variant='budget' plans its stages from max_steps "
        "(customise them with policy=BudgetPolicy.for_budget(...)), or pass variant='paper'",
    ):
        StageSearch.for_variant("budget", max_steps=100, structure={"k": 3}, policy=None)


# ---------------------------------------------------------------------- budget_report
# Paper variant, tau=100 (tau_prime=10), k=3: a full search needs (3 + 1)·10 = 40 steps left,
# one whole stage 3·10 + 100 = 130 steps (120 when the winner's 10-step window is kept).
_NO_SEARCH = (
    "{b}=15 is too small for any search of variant='paper' (a candidate needs "
    "2*tau_prime=20 of the steps{after}); the run trains at " + MID + " for all of its "
    "steps. To search k=3 candidates, raise {b} to at least {full} (one whole stage), or "
    "lower tau or k"
)
_CUT = (
    "{b}=30 cannot hold one full search of variant='paper' (k=3 candidates of "
    "tau_prime=10 steps): the first stage tries 1 of its k=3 candidates, and {share} train "
    "candidates that are discarded. To search all k, raise {b} to at least {full} (one whole "
    "stage), or lower tau or k"
)


@pytest.mark.parametrize(
    ("max_steps", "keep", "start", "name", "share", "full"),
    [
        # 15 < 40 left: 15 // 20 = 0 candidates, no search.
        (15, False, 0, "max_steps", None, 130),
        (15, False, 5, "max_t", None, 135),
        (15, True, 0, "max_steps", None, 120),
        # 30 < 40 left: 30 // 20 = 1 candidate (10 steps discarded), then 20 steps at it;
        # with its window kept nothing is discarded.
        (30, False, 0, "max_steps", "10 of its steps (33%)", 130),
        (30, False, 5, "max_t", "10 of its steps (33%)", 135),
        (30, True, 0, "max_steps", "0 of its steps (0%)", 120),
    ],
)
def test_paper_budget_report_by_hand(
    max_steps: int, keep: bool, start: int, name: str, share: str | None, full: int
) -> None:
    s = StageSearch(tau=100, k=3, max_steps=max_steps, continue_best=keep)
    if share is None:
        after = f" left after the {start}-step warm-up" if start else ""
        message = _NO_SEARCH.format(b=name, after=after, full=full)
    else:
        message = _CUT.format(b=name, share=share, full=full)
    assert s.budget_report(start, budget_name=name) == message


def test_paper_budget_report_of_mostly_discarded_steps_by_hand() -> None:
    # tau=20, tau_prime=10, k=3, no doubling (tau_max=20): [0, 30) search, [30, 50) stage,
    # [50, 80) search, [80, 100) stage: 60 of the 100 steps train discarded candidates.
    kw: dict[str, Any] = {"tau": 20, "tau_prime": 10, "k": 3, "tau_max": 20, "max_steps": 100}
    s = StageSearch(**kw)
    assert s.budget_report() == (
        "with max_steps=100, 60 of its steps (60%) train candidates that are discarded "
        "(variant='paper': k=3 candidates of tau_prime=10 steps per stage, doubling); lower "
        "k, or raise max_steps so that whole stages fit"
    )
    assert s.budget_report(budget_name="max_t").startswith("with max_t=100, 60 of its steps")
    # Keeping the winner's window: 20 + 20 discarded, then 20 left < 40 and 20 // 20 = 1 < 2
    # candidates (a winner exists): 40 of 100 is not more than half.
    assert StageSearch(**kw, continue_best=True).budget_report() == ""
    # Side by side a search costs tau_prime steps: never more than half, never cut.
    assert StageSearch(**kw, parallel=True).budget_report() == ""
    # A winner needs 2 candidates to search again: [0, 30) search, [30, 50) stage, then 20 <
    # 40 left and 20 // 20 = 1 < 2: the rest trains at the winner, 30 of 70 (43 %).
    assert StageSearch(**{**kw, "max_steps": 70}).budget_report() == ""
    # Exactly half is not reported: [0, 30) search, [30, 50) stage, then 30 < 40 left and
    # 30 // 20 = 1 < 2 candidates: 30 of 60.
    assert StageSearch(**{**kw, "max_steps": 60}).budget_report() == ""
    # Doubling after the first stage (tau_max=110: 10 < 11): [0, 30) search, [30, 50) stage,
    # then tau=40, tau_prime=20: 50 < 80 left, 50 // 40 = 1 < 2: 30 of 100, not reported.
    assert StageSearch(**{**kw, "tau_max": 110}).budget_report() == ""


def test_budget_report_defaults_to_the_first_step_and_max_steps() -> None:
    s = StageSearch(tau=100, k=3, max_steps=15)
    assert s.budget_report() == _NO_SEARCH.format(b="max_steps", after="", full=130)


def test_a_later_stage_shrinking_at_the_end_is_not_a_cut() -> None:
    # tau=20, tau_prime=10, k=4, no doubling: [0, 40) search, [40, 60) stage, then 40 < 50
    # left: 40 // 20 = 2 candidates, [60, 80) search, [80, 100) stage. Only a first search
    # with fewer candidates is reported as cut; here 40 + 20 of 100 steps are discarded.
    s = StageSearch(tau=20, tau_prime=10, k=4, tau_max=20, max_steps=100)
    assert s.budget_report() == (
        "with max_steps=100, 60 of its steps (60%) train candidates that are discarded "
        "(variant='paper': k=4 candidates of tau_prime=10 steps per stage, doubling); lower "
        "k, or raise max_steps so that whole stages fit"
    )


def test_budget_report_is_empty_without_a_budget_or_with_room() -> None:
    assert StageSearch(tau=100, k=3).budget_report() == ""
    assert StageSearch(tau=100, k=3, max_steps=130).budget_report() == ""
    assert StageSearch(variant="budget", max_steps=400).budget_report() == ""


def test_a_warmup_that_takes_the_whole_budget_leaves_no_search() -> None:
    # Side by side, a first search is planned whenever steps are left (no winner yet); with
    # none left after the warm-up there is none.
    s = StageSearch(tau=100, k=3, max_steps=15, parallel=True)
    assert s.budget_report(15) == _NO_SEARCH.format(
        b="max_steps", after=" left after the 15-step warm-up", full=145
    )


def test_budget_report_plans_from_the_start_whatever_the_run_state() -> None:
    s = StageSearch(tau=100, k=3, max_steps=30)
    want = s.budget_report()
    s.winner_lr = 0.01  # with a winner, 1 candidate would not be searched at all
    s.stage = 3
    assert s.budget_report() == want
    assert s.winner_lr == 0.01 and s.stage == 3 and s.records == []
    b = StageSearch(
        variant="budget", max_steps=100, policy=BudgetPolicy.for_budget(100, searches=3)
    )
    b.stage = 5  # past every planned search
    assert b.budget_report() == (
        "max_steps=100 budget holds 1 of 3 searches; raise max_steps, or pass fewer searches "
        "to policy"
    )


def test_budget_variant_budget_report_texts() -> None:
    pol = BudgetPolicy.for_budget(100, searches=3)
    s = StageSearch(variant="budget", max_steps=100, policy=pol)
    assert s.budget_report(budget_name="max_t") == (
        f"max_t=100 {pol.note}; raise max_t, or pass fewer searches to policy"
    )
    assert pol.note == "budget holds 1 of 3 searches"
    s = StageSearch(variant="budget", max_steps=60)
    note = s.policy.note
    assert note.startswith("budget of 60 steps is too small for any search")
    assert s.budget_report(budget_name="max_t") == (
        f"{note}; the run trains at {MID} with the planned warm-up and decay. Raise max_t, or "
        "plan fewer/smaller candidates with policy=BudgetPolicy.for_budget(...)"
    )


# ---------------------------------------------------------------------- open_record
def test_open_record_by_hand() -> None:
    s = StageSearch(tau=40, k=3, max_steps=1000)
    rec = s.open_record(7.0, note="retry")  # type: ignore[arg-type]
    assert rec.k == 0  # nothing planned: no candidates
    assert (rec.stage, rec.start, rec.tau, rec.tau_prime, rec.note) == (0, 7, 40, 4, "retry")
    assert type(rec.start) is int and s.records == [rec]
    assert (rec.candidates, rec.winner_lr, rec.end) == ((), None, None)
    s.plan(0)
    s.stage = 2
    rec2 = s.open_record(12)
    assert (rec2.stage, rec2.start, rec2.k, rec2.note) == (2, 12, 3, "")
    assert s.records == [rec, rec2]
    s.plan_now = StagePlan("final", exploit=None, lr=0.01)
    assert s.open_record(30).k == 0
    s.plan_now = StagePlan("search", k=2, tau=40, tau_prime=4, exploit=40)
    assert s.open_record(31).k == 2


# ---------------------------------------------------------------------- AutoLRS.__init__
def _model_opt() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(2, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_autolrs_paper_defaults_by_value() -> None:
    model, opt = _model_opt()
    t = AutoLRS(model, opt)
    assert t.model is model and t.optimizer is opt
    assert (t.variant, t.max_steps, t.continue_from, t.warmup_steps) == ("paper", None, "start", 0)
    assert (t.val_fn, t.val_every, t.sync_every, t.scaler, t._sync) == (None, None, 1, None, None)
    assert t.warmup_lr == math.sqrt(1e-5) and type(t.warmup_lr) is float
    s = t.search
    assert (s.variant, s.tau, s.tau_prime, s.k, s.tau_max, s.double) == (
        "paper", 1000, 100, 10, 8000, True)  # fmt: skip
    assert (s.lr_bounds, s.compare, s.continue_best) == ((1e-4, 1e-1), "forecast", False)
    assert s.divergence == DivergenceRule(factor=3.0, patience=3)
    assert s.searcher._seed == 0 and isinstance(s.predictor, ExponentialPredictor)
    # No warm-up: the first stage is planned at once.
    assert (t.phase, t.global_step, t._warmup_start) == ("search", 0, 0)
    assert [r.start for r in s.records] == [0] and s.records[0].k == 10
    assert t._config == {
        "variant": "paper", "max_steps": None, "lr_bounds": [1e-4, 1e-1], "tau": 1000,
        "tau_prime": 100, "k": 10, "tau_max": 8000, "double": True, "policy": None,
        "compare": "forecast", "continue_from": "start", "warmup_steps": 0,
        "warmup_lr": math.sqrt(1e-5),
    }  # fmt: skip
    for snap in (t._snapshot, t._best_snapshot, t._cand_snapshot):
        assert snap.model is model and snap.optimizer is opt
        assert (snap.extras, snap.offload, snap.rng) == ({}, None, True)
    assert len({id(t._snapshot), id(t._best_snapshot), id(t._cand_snapshot)}) == 3


def test_autolrs_budget_defaults_by_value() -> None:
    model, opt = _model_opt()
    t = AutoLRS(model, opt, max_steps=400)
    pol = BudgetPolicy.for_budget(400)
    assert (t.variant, t.max_steps, t.continue_from) == ("budget", 400, "best")
    assert t.search.policy == pol and t.warmup_steps == pol.warmup == 20
    assert (t.search.compare, t.search.continue_best) == ("cooled", True)
    assert (pol.cooldown_frac, pol.decay_shape) == (0.3, "sqrt")  # cooled windows, 1 - √x
    assert t.phase == "warmup" and t.search.records == []
    # The warm-up's first step ramps to the middle of the box: (0 + 1) / 20 of it.
    assert opt.param_groups[0]["lr"] == pytest.approx(math.sqrt(1e-5) / 20)
    assert t._config["policy"]["warmup"] == 20 and t._config["warmup_steps"] == 20


def test_autolrs_arguments_reach_the_search_and_the_snapshots() -> None:
    model, opt = _model_opt()
    searcher = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=9)
    pred = ExponentialPredictor(min_points=6)
    extra = torch.optim.lr_scheduler.StepLR(opt, step_size=5)

    def val_fn() -> float:
        return 1.0

    t = AutoLRS(
        model, opt, lr_bounds=(1e-2, 0.5), tau=40, tau_prime=7, k=3, tau_max=90, double=False,
        compare="window", searcher=searcher, predictor=pred, seed=4, val_fn=val_fn,
        val_every=6, warmup_steps=4, warmup_lr=2, continue_from="best", divergence_factor=5.0,
        divergence_patience=2, restore_rng=False, extras={"sched": extra}, sync_every=3,
        offload="cpu",
    )  # fmt: skip
    s = t.search
    assert (s.tau, s.tau_prime, s.k, s.tau_max, s.double) == (40, 7, 3, 90, False)
    assert s.searcher is searcher and searcher.bounds["lr"] == (1e-2, 0.5)
    assert s.predictor is pred and s.compare == "window" and s.continue_best is True
    assert s.divergence == DivergenceRule(factor=5.0, patience=2)
    assert (t.val_fn, t.val_every, t.sync_every, t.continue_from) == (val_fn, 6, 3, "best")
    assert t.warmup_lr == 2.0 and type(t.warmup_lr) is float and t.warmup_steps == 4
    assert t.phase == "warmup" and opt.param_groups[0]["lr"] == pytest.approx(2.0 / 4)
    for snap in (t._snapshot, t._best_snapshot, t._cand_snapshot):
        assert snap.extras == {"sched": extra} and snap.rng is False and snap.offload == "cpu"
    assert AutoLRS(model, opt, seed=4).search.searcher._seed == 4
    assert AutoLRS(model, opt, lr_bounds=(1e-2, 0.5)).search.lr_bounds == (1e-2, 0.5)


def test_one_warmup_step_is_a_warmup() -> None:
    model, opt = _model_opt()
    t = AutoLRS(model, opt, variant="paper", warmup_steps=1, warmup_lr=0.03)
    assert t.phase == "warmup" and t.warmup_steps == 1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03) and t.search.records == []


def test_autolrs_budget_warmup_and_policy_arguments() -> None:
    model, opt = _model_opt()
    t = AutoLRS(model, opt, max_steps=400, warmup_steps=7)
    assert t.search.policy == BudgetPolicy.for_budget(400, warmup=7) and t.warmup_steps == 7
    t = AutoLRS(model, opt, max_steps=400, warmup_steps=0)
    assert t.warmup_steps == 0 and t.search.policy.warmup == 0 and t.phase == "search"
    mine = BudgetPolicy.for_budget(400, warmup=11)
    t = AutoLRS(model, opt, max_steps=400, policy=mine, warmup_steps=3)
    assert t.search.policy is mine and t.warmup_steps == 11  # the policy's plan wins
    t = AutoLRS(model, opt, max_steps=400, continue_from="start")
    assert t.continue_from == "start" and t.search.continue_best is False
    with pytest.warns(RuntimeWarning, match="budget of 1 steps is too small"):
        t = AutoLRS(model, opt, max_steps=1)
    assert t.max_steps == 1 and t.search.policy == BudgetPolicy.for_budget(1)


def test_autolrs_paper_with_a_budget_keeps_it() -> None:
    model, opt = _model_opt()
    t = AutoLRS(model, opt, variant="paper", max_steps=5000, tau=40, k=3)
    assert (t.variant, t.max_steps, t.search.max_steps, t.warmup_steps) == (
        "paper", 5000, 5000, 0)  # fmt: skip
    assert isinstance(t.search.policy, PaperPolicy) and t._config["max_steps"] == 5000


@pytest.mark.parametrize("name", ["tau", "tau_prime", "k", "tau_max", "double"])
def test_each_paper_structure_argument_is_named_with_the_budget_variant(name: str) -> None:
    model, opt = _model_opt()
    with raises(
        ConfigError,
        f"{name} set the paper's stage structure; variant='budget' plans its stages from "
        "max_steps (customise them with policy=BudgetPolicy.for_budget(...)), or pass "
        "variant='paper'",
    ):
        AutoLRS(model, opt, max_steps=400, **{name: 5})


@pytest.mark.parametrize(
    ("kw", "err", "message"),
    [
        ({"continue_from": "end"}, ConfigError,
         "continue_from must be one of 'start', 'best', got 'end'"),
        ({"sync_every": 0}, ConfigError, "sync_every must be an int >= 1, got 0"),
        ({"variant": "budget"}, ConfigError,
         "variant='budget' plans the run from its budget: pass max_steps"),
        ({"variant": "paper", "policy": BudgetPolicy.for_budget(100)}, ConfigError,
         "policy= plans a budget; it needs variant='budget'"),
        ({"variant": "fast"}, ConfigError, "variant must be one of 'paper', 'budget', got 'fast'"),
        ({"max_steps": 400, "warmup_steps": 2.5}, ConfigTypeError,
         "warmup_steps must be an int >= 0, got 2.5"),
        ({"warmup_lr": "a"}, ConfigTypeError, "warmup_lr must be a finite float > 0, got 'a'"),
        ({"scaler": type("S", (), {"get_scale": lambda self: 1.0})()}, ConfigTypeError,
         "scaler must be a torch.amp.GradScaler (anything with get_scale() and is_enabled()), "
         "got S"),
        ({"scaler": type("S", (), {"get_scale": 1.0, "is_enabled": lambda self: True})()},
         ConfigTypeError,
         "scaler must be a torch.amp.GradScaler (anything with get_scale() and is_enabled()), "
         "got S"),
        ({"scaler": type("S", (), {"is_enabled": lambda self: True})()}, ConfigTypeError,
         "scaler must be a torch.amp.GradScaler (anything with get_scale() and is_enabled()), "
         "got S"),
    ],
)  # fmt: skip
def test_more_constructor_messages_are_exact(kw: dict, err: type, message: str) -> None:
    model, opt = _model_opt()
    with raises(err, message):
        AutoLRS(model, opt, **kw)


def test_max_steps_is_checked_before_the_budget_arguments() -> None:
    model, opt = _model_opt()
    for kw in ({"warmup_steps": -1}, {"policy": 3}):
        with raises(ConfigError, "max_steps must be an int >= 1, got 0"):
            AutoLRS(model, opt, max_steps=0, **kw)


def test_a_grad_scaler_is_accepted_and_kept() -> None:
    model, opt = _model_opt()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert AutoLRS(model, opt, scaler=scaler).scaler is scaler


def test_the_budget_report_is_warned_once_at_construction_from_after_the_warmup() -> None:
    model, opt = _model_opt()
    with pytest.warns(RuntimeWarning) as seen:
        AutoLRS(model, opt, variant="paper", tau=100, k=3, max_steps=15, warmup_steps=5)
    assert [str(w.message) for w in seen] == [
        "AutoLRS: "
        + _NO_SEARCH.format(b="max_steps", after=" left after the 5-step warm-up", full=135)
    ]
    assert seen[0].category is RuntimeWarning


def test_a_fresh_tuner_state_by_value() -> None:
    """Every run counter starts at zero (before the warm-up nothing has run)."""
    model, opt = _model_opt()
    t = AutoLRS(model, opt, max_steps=400)
    state = t.state_dict()
    mid = math.sqrt(1e-5)
    want = {
        "global_step": 0, "phase": "warmup", "lr": mid / 20, "stage_k": 10, "phase_steps": 0,
        "phase_len": 0, "cand_lr": 0.0, "cand_losses": [], "val_losses": [], "val_steps": [],
        "over": 0, "ref_loss": None, "recent": [], "best_forecast": math.inf, "recoveries": 0,
        "warmup_start": 0, "warmup_lr": mid, "variant": "budget", "val_broken": False,
        "nonfinite_skipped": 0, "nonfinite_streak": 0, "skipped_steps": 0, "scale_seen": None,
        "lineage": {"current": [], "snapshot": [], "best_snapshot": None, "cand_snapshot": None},
    }  # fmt: skip
    assert {k: state[k] for k in want} == want
    hist = state["history"]
    columns = {k: v.tolist() for k, v in hist.items() if k != "forecast"}
    assert columns == {k: [] for k in ("step", "stage", "phase", "lr", "loss")}
    assert {k: v.tolist() for k, v in hist["forecast"].items()} == {"index": [], "value": []}
    assert (t.recoveries, t.skipped_losses, t.skipped_steps, t._restores) == (0, 0, 0, 0)
    assert t._pending == [] and t._lr_warned is False
