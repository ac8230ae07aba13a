"""The stage policies (autolr/_autolrs/_policy.py) against hand-computed plans and LRs."""

from __future__ import annotations

import math

import pytest

from autolr import BudgetPolicy, ConfigError
from autolr._autolrs._policy import (
    MIN_TAU_PRIME,
    DivergenceRule,
    PaperPolicy,
    StagePlan,
    candidates_for_box,
    cooled_lr,
    decayed_lr,
    warmup_lr,
)


# --------------------------------------------------------------------- LR shapes
def test_warmup_lr_is_a_linear_ramp_ending_at_the_peak():
    assert [warmup_lr(2.0, s, 4) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]


def test_decayed_lr_linear_and_sqrt_by_hand():
    # Budget 10, decay over the last 4: steps 0..5 at lr, then 1 - x with x = (step - 6) / 4.
    lin = [decayed_lr(2.0, s, max_steps=10, decay=4, shape="linear") for s in range(12)]
    assert lin[:7] == [2.0] * 7
    assert lin[7:] == pytest.approx([1.5, 1.0, 0.5, 0.0, 0.0])
    sq = [decayed_lr(2.0, s, max_steps=10, decay=4, shape="sqrt") for s in (6, 7, 8, 10)]
    assert sq == pytest.approx([2.0, 2.0 * (1 - 0.5), 2.0 * (1 - math.sqrt(0.5)), 0.0])
    # No decay: the LR itself, at every step.
    assert decayed_lr(3.0, 99, max_steps=10, decay=0, shape="linear") == 3.0


def test_cooled_lr_by_hand():
    # Window of 10 steps, cooldown over the last 4 (steps 6..9): lr * (1 - j / 5), j = 1..4.
    got = [cooled_lr(1.0, t, 10, 4) for t in range(10)]
    assert got[:6] == [1.0] * 6
    assert got[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert [cooled_lr(1.0, t, 10, 0) for t in range(10)] == [1.0] * 10


# --------------------------------------------------------------------- divergence
def test_divergence_rule_threshold_patience_and_reason():
    rule = DivergenceRule(factor=3.0, patience=2)
    # Threshold: ref + (factor - 1) * |ref| = 3 for ref 1 (strictly above counts).
    assert not rule.over(3.0, 1.0) and rule.over(3.0001, 1.0)
    assert rule.over(-0.9, -1.0) is False and rule.over(-0.9 + 2.0 + 1e-9, -1.0)
    assert not rule.over(1e9, None) and not rule.over(1e9, math.inf)
    assert rule.over(math.nan, 1.0)
    assert rule.update(0, 5.0, 1.0) == (1, False)
    assert rule.update(1, 5.0, 1.0) == (2, True)
    assert rule.update(1, 2.0, 1.0) == (0, False)  # a loss under the threshold resets
    assert rule.update(0, math.inf, 1.0) == (1, True)  # non-finite: at once
    assert rule.reason(math.nan, 1.0) == "non-finite training loss"
    assert rule.reason(5.0, 1.0) == "diverged: loss 5 > 3x stage-start loss 1"


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"factor": 1.0}, "divergence_factor"),
        ({"factor": 0.5}, "divergence_factor"),
        ({"factor": math.nan}, "divergence_factor"),
        ({"patience": 0}, "divergence_patience"),
        ({"patience": 1.5}, "divergence_patience"),
    ],
)
def test_divergence_rule_checks_its_arguments(kw, name):
    with pytest.raises(ConfigError, match=name):
        DivergenceRule(**kw)


def test_divergence_rule_accepts_inf_factor():
    rule = DivergenceRule(factor=math.inf, patience=1)
    assert not rule.over(1e300, 1.0) and rule.over(math.inf, 1.0)


# --------------------------------------------------------------------- paper policy
def _paper(step, **kw):
    args = dict(tau=100, tau_prime=10, k=4, max_steps=None, has_winner=False, winner_lr=None,
                continue_best=True)  # fmt: skip
    args.update(kw)
    return PaperPolicy().plan(step, **args)


def test_paper_plan_without_budget():
    assert _paper(0) == StagePlan("search", k=4, tau=100, tau_prime=10, exploit=90)
    assert _paper(0, continue_best=False).exploit == 100
    assert PaperPolicy().exploit_lr(0.3, 12345) == 0.3


def test_paper_plan_shrinks_k_to_half_of_what_is_left():
    # remaining 50 < k*τ' + τ' = 50? no: equal is enough for the full search.
    assert _paper(950, max_steps=1000).k == 4
    # remaining 49: k = min(4, 49 // 20) = 2.
    assert _paper(951, max_steps=1000, has_winner=True).k == 2
    # remaining 39: 39 // 20 = 1 < 2 with a winner -> final at the winner's LR.
    assert _paper(961, max_steps=1000, has_winner=True, winner_lr=0.1) == StagePlan(
        "final", exploit=None, lr=0.1
    )
    # ... but before any winner one candidate is still searched.
    assert _paper(961, max_steps=1000).k == 1


def test_paper_plan_parallel_final_only_with_a_winner():
    # Parallel: a search costs τ' of the run; fewer than 2τ' left ends the search phase.
    assert _paper(981, max_steps=1000, parallel=True, has_winner=True, winner_lr=0.2).kind == (
        "final"
    )
    assert _paper(980, max_steps=1000, parallel=True, has_winner=True).kind == "search"
    assert _paper(981, max_steps=1000, parallel=True).kind == "search"


# --------------------------------------------------------------------- budget policy
def test_for_budget_one_search_by_hand():
    p = BudgetPolicy.for_budget(1000)
    # warm-up 5 % = 50, decay 50 % = 500, waste 20 % = 200 over k - 1 = 3 discarded windows.
    assert (p.max_steps, p.warmup, p.decay) == (1000, 50, 500)
    assert (p.starts, p.ks, p.tau_primes) == ((50,), (4,), (66,))
    assert p.note == "" and p.parallel is False
    # The defaults: windows cool down over their last 30 %, the final decay is 1 - sqrt(x).
    assert (p.cooldown_frac, p.decay_shape) == (0.3, "sqrt")


def test_candidates_for_box_one_per_three_quarter_decade_at_least_four():
    assert candidates_for_box(None) == 4
    # Up to ~3.4 decades (every bench task's box, the tuner's default box): 4.
    assert candidates_for_box((1e-4, 1e-1)) == 4
    assert candidates_for_box((1.0, 10**3.37)) == 4
    assert candidates_for_box((1.0, 10**3.38)) == 5  # 3.38 / 0.75 = 4.51
    assert candidates_for_box((1e-6, 1.0)) == 8
    assert candidates_for_box((1e-5, 3.0)) == 7  # 5.48 decades
    with pytest.raises(ConfigError, match="lr_bounds"):
        candidates_for_box((1e-2, 1e-3))


def test_for_budget_k_follows_the_box_unless_given():
    # A 6-decade box: 8 candidates, the same discarded share over 7 windows.
    wide = BudgetPolicy.for_budget(2000, lr_bounds=(1e-6, 1.0))
    assert (wide.ks, wide.tau_primes) == ((8,), (57,))  # int(400 / 7)
    # A box of up to ~3.4 decades, or none, plans exactly what it did.
    for box in (None, (1e-4, 1e-1), (0.02, 1.9)):
        assert BudgetPolicy.for_budget(2000, lr_bounds=box) == BudgetPolicy.for_budget(2000)
    assert BudgetPolicy.for_budget(2000).ks == (4,)
    # A given k wins over the box.
    assert BudgetPolicy.for_budget(2000, k=3, lr_bounds=(1e-6, 1.0)).ks == (3,)
    # Later searches keep k_later.
    three = BudgetPolicy.for_budget(4000, searches=3, lr_bounds=(1e-6, 1.0))
    assert three.ks[0] > 4 and three.ks[1:] == (3, 3)


def test_for_budget_box_candidates_give_way_to_windows_of_25_steps():
    box = (1e-6, 1.0)  # asks for 8
    # 800 steps: 160 discarded steps hold 7 windows of 26 (8 would be 22).
    assert BudgetPolicy.for_budget(800, lr_bounds=box).ks == (7,)
    assert BudgetPolicy.for_budget(800, lr_bounds=box).tau_primes == (26,)
    # 400 steps: even 5 windows would be 20 steps: back to 4, as without the box.
    assert BudgetPolicy.for_budget(400, lr_bounds=box) == BudgetPolicy.for_budget(400)
    # Too small for any search: the same note as without the box.
    assert BudgetPolicy.for_budget(60, lr_bounds=box) == BudgetPolicy.for_budget(60)
    # A given k is not reduced for the window length.
    assert BudgetPolicy.for_budget(400, k=8, lr_bounds=box).ks == (8,)


def test_for_budget_defaults_differ_by_mode_and_give_way_to_given_values():
    """A population (Ray) decays linearly and does not cool its windows: measured there."""
    pop = BudgetPolicy.for_budget(1000, parallel=True)
    assert (pop.cooldown_frac, pop.decay_shape) == (0.0, "linear")
    given = BudgetPolicy.for_budget(1000, parallel=True, cooldown_frac=0.3, decay_shape="sqrt")
    assert (given.cooldown_frac, given.decay_shape) == (0.3, "sqrt")
    one = BudgetPolicy.for_budget(1000, cooldown_frac=0.0, decay_shape="linear")
    assert (one.cooldown_frac, one.decay_shape) == (0.0, "linear")
    tiny = BudgetPolicy.for_budget(8, parallel=True)  # no search fits: the same defaults
    assert tiny.starts == () and (tiny.cooldown_frac, tiny.decay_shape) == (0.0, "linear")


def test_for_budget_three_searches_by_hand():
    p = BudgetPolicy.for_budget(1000, searches=3)
    # shares 0.4 / 0.3 / 0.3 of 200: first k=4 -> int(80/3)=26; later k=3 -> int(60/2)=30;
    # searches spaced every (1000 - 50 - 500) / 3 = 150 steps after the warm-up.
    assert (p.starts, p.ks, p.tau_primes) == ((50, 200, 350), (4, 3, 3), (26, 30, 30))
    assert p.note == ""


def test_for_budget_parallel_by_hand():
    p = BudgetPolicy.for_budget(1000, searches=2, parallel=True)
    # Parallel: each window is search_frac / searches of the run: int(200 / 2) = 100.
    assert (p.starts, p.ks, p.tau_primes) == ((50, 275), (4, 3), (100, 100))
    assert p.parallel is True


def test_for_budget_drops_later_searches_first_and_says_so():
    # 200 steps: w 10, d 100, free 90, waste 40. Three searches: first window int(16/3)=5,
    # later int(12/2)=6, gap 30: 4*5=20 < 30, 3*6=18 < 30 -> all three fit.
    assert BudgetPolicy.for_budget(200, searches=3).ks == (4, 3, 3)
    # 150 steps: w 8 (round(7.5) = 8), d 75, free 67, waste 30. Three: first int(12/3)=4 < 5;
    # two: first int(12/3)=4 < 5; one: int(30/3)=10, 40 < 67 -> one search.
    p = BudgetPolicy.for_budget(150, searches=3)
    assert (p.starts, p.ks, p.tau_primes) == ((8,), (4,), (10,))
    assert p.note == "budget holds 1 of 3 searches"


def test_for_budget_too_small_names_the_smallest_budget_that_works():
    p = BudgetPolicy.for_budget(40)
    assert p.starts == p.ks == p.tau_primes == ()
    assert (p.warmup, p.decay) == (2, 20)
    # One window needs int(0.2 b / 3) >= 5, i.e. b >= 75 (and 4 * 5 < 0.45 * 75 holds).
    assert p.note == (
        f"budget of 40 steps is too small for any search (each candidate needs at least "
        f"{MIN_TAU_PRIME} steps; a budget of 75 steps or more holds one)"
    )
    assert BudgetPolicy.for_budget(75).ks == (4,)
    assert BudgetPolicy.for_budget(74).ks == ()
    none = BudgetPolicy.for_budget(40, searches=0)
    assert none.starts == () and "or more holds one" not in none.note


def test_for_budget_explicit_warmup_and_decay():
    p = BudgetPolicy.for_budget(1000, warmup=0, decay_frac=0.2, decay_shape="sqrt")
    # free = 1000 - 0 - 200 = 800; window int(200 / 3) = 66.
    assert (p.warmup, p.decay, p.starts, p.tau_primes) == (0, 200, (0,), (66,))
    assert p.decay_shape == "sqrt"


def test_budget_plan_by_hand():
    p = BudgetPolicy.for_budget(1000, searches=3, cooldown_frac=0.5)
    # Stage 0 at step 50: k=4, τ'=26, search ends at 50 + 104 = 154, next start 200 ->
    # exploit 46; compared at τ = 26 + 46 = 72; cooldown round(0.5 * 26) = 13.
    assert p.plan(50, stage=0, winner_lr=None) == StagePlan(
        "search", k=4, tau=72, tau_prime=26, cooldown=13, exploit=46
    )
    # Last stage: exploit None (to the end), compared at the rest of the budget:
    # search ends at 350 + 90 = 440 -> τ = 30 + (1000 - 440) = 590.
    assert p.plan(350, stage=2, winner_lr=0.1) == StagePlan(
        "search", k=3, tau=590, tau_prime=30, cooldown=15, exploit=None
    )
    # Past the last search, or inside the decay: final at the winner's LR.
    assert p.plan(400, stage=3, winner_lr=0.1) == StagePlan("final", exploit=None, lr=0.1)
    assert p.plan(500, stage=1, winner_lr=0.1) == StagePlan("final", exploit=None, lr=0.1)


def test_budget_plan_shrinks_a_late_search():
    p = BudgetPolicy.for_budget(1000, searches=3)
    # A retry pushed stage 2 to step 440: 500 - 440 = 60 left, k = min(3, 60 // 30) = 2.
    assert p.plan(440, stage=2, winner_lr=0.1).k == 2
    # 31 left: 31 // 30 = 1 < 2 with a winner -> final.
    assert p.plan(469, stage=2, winner_lr=0.1).kind == "final"
    # ... but 1 candidate is still searched before any winner.
    assert p.plan(469, stage=2, winner_lr=None).k == 1


def test_budget_plan_parallel_window_must_fit():
    p = BudgetPolicy.for_budget(1000, searches=2, parallel=True, cooldown_frac=0.3)
    # Window 100; at step 401 only 99 steps are left before the decay -> final.
    assert p.plan(401, stage=1, winner_lr=0.3).kind == "final"
    plan = p.plan(275, stage=1, winner_lr=0.3)
    # Parallel: the search costs one window, so τ = 100 + (1000 - 375); cooldown 30 % of 100
    # (as given: a population's default is none).
    assert plan == StagePlan("search", k=3, tau=725, tau_prime=100, cooldown=30, exploit=None)


def test_budget_exploit_and_candidate_lr_delegate_to_the_shapes():
    p = BudgetPolicy.for_budget(1000)
    assert p.exploit_lr(0.4, 499) == 0.4
    assert p.exploit_lr(0.4, 750) == pytest.approx(0.4 * (1 - math.sqrt(250 / 500)))
    assert p.candidate_lr(0.4, 9, 10, 4) == pytest.approx(0.4 * 0.2)
    linear = BudgetPolicy.for_budget(1000, decay_shape="linear")
    assert linear.exploit_lr(0.4, 750) == pytest.approx(0.4 * (1 - 250 / 500))


def test_trust_box_by_hand():
    p = BudgetPolicy.for_budget(1000, trust=4.0)
    assert p.trust_box(None, (1e-3, 1.0)) is None
    assert p.trust_box(0.04, (1e-3, 1.0)) == pytest.approx((0.01, 0.16))
    assert p.trust_box(0.5, (1e-3, 1.0)) == pytest.approx((0.125, 1.0))  # clipped above
    assert p.trust_box(0.002, (1e-3, 1.0)) == pytest.approx((1e-3, 0.008))  # clipped below
    # A winner outside the box leaves no room: None, the full box is searched.
    assert p.trust_box(100.0, (1e-3, 1.0)) is None


# --------------------------------------------------------------------- edges (mutation round 2)
def test_lr_shapes_at_their_edges():
    # A one-step decay: the last step of the budget trains at lr, the step after at 0.
    assert decayed_lr(2.0, 9, max_steps=10, decay=1, shape="linear") == 2.0
    assert decayed_lr(2.0, 10, max_steps=10, decay=1, shape="linear") == 0.0
    # No cooldown: constant at every step, also past the window.
    assert cooled_lr(1.0, 10, 10, 0) == 1.0


def test_divergence_threshold_scales_with_the_reference():
    rule = DivergenceRule(factor=3.0, patience=1)
    # ref 2: threshold 2 + 2 * 2 = 6; ref 0.5: 0.5 + 2 * 0.5 = 1.5 (not 0.5 + 2 / 0.5).
    assert not rule.over(5.9, 2.0) and rule.over(6.1, 2.0)
    assert rule.over(2.0, 0.5) and not rule.over(1.4, 0.5)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_steps": 0}, "max_steps must be an int >= 1, got 0"),
        ({"searches": -1}, "searches must be an int >= 0, got -1"),
        ({"k": 0}, "k must be an int >= 1, got 0"),
        ({"k_later": 0}, "k_later must be an int >= 1, got 0"),
        ({"search_frac": 0.95}, "search_frac must be a finite float in [0, 0.9], got 0.95"),
        ({"first_share": 1.5}, "first_share must be a finite float in [0, 1], got 1.5"),
        ({"decay_frac": 1.5}, "decay_frac must be a finite float in [0, 1], got 1.5"),
        ({"decay_frac": -0.1}, "decay_frac must be a finite float in [0, 1], got -0.1"),
        ({"cooldown_frac": 0.95}, "cooldown_frac must be a finite float in [0, 0.9], got 0.95"),
        ({"decay_shape": "x"}, "decay_shape must be one of 'linear', 'sqrt', got 'x'"),
        ({"trust": 1.0}, "trust must be a float > 1, got 1.0"),
        ({"warmup": -1}, "warmup_steps must be an int >= 0, got -1"),
    ],
)
def test_for_budget_messages_name_the_argument(kw, message):
    args = {"max_steps": 1000, **kw}
    with pytest.raises(ConfigError) as info:
        BudgetPolicy.for_budget(args.pop("max_steps"), **args)
    assert str(info.value) == message


def test_for_budget_accepts_its_boundary_values():
    assert BudgetPolicy.for_budget(1).max_steps == 1
    assert BudgetPolicy.for_budget(1000, decay_frac=1.0).decay == 1000
    assert BudgetPolicy.for_budget(1000, trust=1.5).trust == 1.5
    assert BudgetPolicy.for_budget(1000, trust=math.inf).trust == math.inf
    d = BudgetPolicy.for_budget(1000)
    assert (d.trust, d.cooldown_frac) == (4.0, 0.3)
    assert BudgetPolicy.for_budget(1000, cooldown_frac=0.0).cooldown_frac == 0.0


def test_for_budget_single_candidate_and_two_candidates_by_hand():
    # k = 1: the one window is not discarded, so it takes the whole search share: 200.
    assert BudgetPolicy.for_budget(1000, k=1).tau_primes == (200,)
    # k = 2: one discarded window: int(200 / 1) = 200; 2 * 200 < 450 fits.
    assert BudgetPolicy.for_budget(1000, k=2).tau_primes == (200,)


def test_for_budget_free_steps_and_spacing_with_a_long_warmup():
    # free = 1000 - 200 - 500 = 300. Three searches (gap 100): 4 * 26 = 104 >= 100, no; two
    # (gap 150): the second's 3 * int(120 / 2) = 180 >= 150, no; one: 4 * 66 = 264 < 300.
    p = BudgetPolicy.for_budget(1000, warmup=200, searches=3)
    assert (p.starts, p.ks, p.tau_primes) == ((200,), (4,), (66,))
    assert p.note == "budget holds 1 of 3 searches"


def test_for_budget_two_searches_fall_back_to_one():
    # 150 steps: with two searches the first window is int(12 / 3) = 4 < 5; one fits.
    p = BudgetPolicy.for_budget(150, searches=2)
    assert (p.ks, p.note) == ((4,), "budget holds 1 of 2 searches")


def test_for_budget_window_must_fit_its_gap():
    # search_frac 0.5, one search: window int(500 / 3) = 166, and 4 * 166 = 664 >= 450 steps
    # between warm-up and decay: no search fits (a window alone would).
    p = BudgetPolicy.for_budget(1000, search_frac=0.5)
    # Windows and gap both grow with the budget: no budget holds it, so the note names the
    # fractions rather than a budget.
    assert p.starts == () and p.note == (
        "the plan leaves no room for a search at any budget: the windows of k=4 candidates "
        "(search_frac=0.5) do not fit between the warm-up and the final decay (decay_frac=0.5); "
        "lower search_frac or decay_frac"
    )
    zero = BudgetPolicy.for_budget(1000, search_frac=0.0)
    assert (
        zero.note
        == "the plan leaves no room for a search: search_frac=0 gives its candidates no steps"
    )
    # Parallel: a window costs itself only: 300 < 450 fits (2 * 300 would not).
    q = BudgetPolicy.for_budget(1000, search_frac=0.3, parallel=True)
    assert (q.starts, q.tau_primes) == ((50,), (300,))


def test_for_budget_too_small_keeps_every_other_setting():
    # Parallel, 20 steps: window int(0.2 * 20) = 4 < 5.
    p = BudgetPolicy.for_budget(
        20, cooldown_frac=0.3, decay_shape="sqrt", trust=3.0, parallel=True, warmup=3
    )
    assert (p.max_steps, p.warmup, p.decay, p.starts) == (20, 3, 10, ())
    assert (p.cooldown_frac, p.decay_shape, p.trust, p.parallel) == (0.3, "sqrt", 3.0, True)
    assert p.note.endswith("steps or more holds one)")
    # No search asked for: nothing was dropped, so nothing to say (at any budget).
    assert BudgetPolicy.for_budget(40, searches=0).note == ""
    assert BudgetPolicy.for_budget(4000, searches=0).note == ""


def test_budget_final_plans_carry_the_winner_lr():
    p = BudgetPolicy.for_budget(1000, searches=3)
    assert p.plan(469, stage=2, winner_lr=0.1) == StagePlan("final", exploit=None, lr=0.1)
    q = BudgetPolicy.for_budget(1000, searches=2, parallel=True)
    assert q.plan(401, stage=1, winner_lr=0.3) == StagePlan("final", exploit=None, lr=0.3)
    # Exactly one window left before the decay still holds the parallel search.
    assert q.plan(400, stage=1, winner_lr=0.3).kind == "search"


def test_budget_plan_of_a_late_search_has_no_negative_exploit():
    p = BudgetPolicy.for_budget(1000, searches=3)
    # Stage 0 pushed to step 190: its search ends at 294, after the next start (200):
    # exploit 0, compared at τ = max(26 + 0, 26 + 1) = 27; cooldown round(0.3 * 26) = 8.
    assert p.plan(190, stage=0, winner_lr=None) == StagePlan(
        "search", k=4, tau=27, tau_prime=26, cooldown=8, exploit=0
    )


def test_paper_parallel_final_carries_the_winner_lr():
    assert _paper(981, max_steps=1000, parallel=True, has_winner=True, winner_lr=0.2) == (
        StagePlan("final", exploit=None, lr=0.2)
    )


def test_trust_box_needs_room_above_one_part_in_ten_thousand():
    p = BudgetPolicy.for_budget(1000, trust=4.0)
    assert p.trust_box(1.0, (1.0, 1.0001)) is None
    assert p.trust_box(1.0, (1.0, 1.00005)) is None
    assert p.trust_box(1.0, (1.0, 1.5)) == pytest.approx((1.0, 1.5))


def test_smallest_budget_search_is_exact():
    from autolr._autolrs._policy import _smallest

    # A predicate that holds from 1000 on: found from 10 by doubling then bisection.
    assert _smallest(lambda b: b if b >= 1000 else None, 10) == 1000
    assert _smallest(lambda b: b if b >= 1001 else None, 10) == 1001
    assert _smallest(lambda b: None, 10, limit=1000) is None


def test_divergence_rule_messages_and_boundary():
    with pytest.raises(ConfigError) as info:
        DivergenceRule(factor=1.0)
    assert str(info.value) == "divergence_factor must be a float > 1, got 1.0"
    with pytest.raises(ConfigError) as info:
        DivergenceRule(patience=0)
    assert str(info.value) == "divergence_patience must be an int >= 1, got 0"
    assert DivergenceRule(factor=1.5).factor == 1.5


def test_for_budget_single_candidate_searches_split_the_share():
    # k = 1 everywhere: each window is its whole share of 200: 0.4 -> 80, 0.6 -> 120.
    assert BudgetPolicy.for_budget(1000, k=1, k_later=1, searches=2).tau_primes == (80, 120)


def test_for_budget_windows_must_fit_strictly_inside_their_gap():
    # 600 steps, no warm-up, decay 300: gap 300; window int(0.375 * 600 / 3) = 75 and
    # 4 * 75 = 300 is not < 300, so no search fits.
    assert BudgetPolicy.for_budget(600, warmup=0, search_frac=0.375).starts == ()
