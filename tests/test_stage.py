"""StageSearch's and the final race's decisions, called directly with hand-computed oracles.

The in-loop tests (test_autolrs.py, test_budget.py) exercise these rules through training
runs; here each rule is pinned on values small enough to work out by hand (issue 18: the
mutants that survived those runs, see mutation/README.md).
"""

from __future__ import annotations

import math

import pytest

from autolr import BudgetPolicy, ConfigError, StageSearch, StateError
from autolr._autolrs._policy import StagePlan
from autolr._autolrs._race import RacerView, pick_racer
from autolr._autolrs._stage import MAX_RETRIES, CandidateResult
from autolr.predictors import Forecast, Predictor


def _search(lo: float = 0.25, hi: float = 4.0, **kw) -> StageSearch:
    kw.setdefault("tau", 100)
    kw.setdefault("k", 3)
    s = StageSearch(lr_bounds=(lo, hi), seed=0, **kw)
    s.begin_stage()
    return s


# ---------------------------------------------------------------------- the final race
def test_racer_view_from_losses_keeps_the_finite_tail() -> None:
    v = RacerView.from_losses(5, [3.0, 2.0, math.nan, 1.0, math.inf], window=2, select=0.7)
    assert v == RacerView("5", 3, 1.5, 0.7)  # finite: 3, 2, 1; the last two average 1.5
    assert RacerView.from_losses("a", [3.0, 2.0, 1.0], window=10).level == 2.0  # all of them
    assert RacerView.from_losses("a", [3.0, 2.0, 1.0], window=0).level == 1.0  # at least one
    assert RacerView.from_losses("a", [3.0, 2.0, 1.0], window=1.9).level == 1.0  # int(window)
    assert RacerView.from_losses("a", [math.nan, -math.inf], window=2) is None
    assert RacerView.from_losses("a", [], window=2) is None


def test_pick_racer_orders_by_progress_then_level_and_keeps_the_first_on_ties() -> None:
    a, b, c = RacerView("a", 10, 0.5), RacerView("b", 10, 0.4), RacerView("c", 11, 0.9)
    assert pick_racer([]) is None
    assert pick_racer([a]) is a
    assert pick_racer([a, b]) is b and pick_racer([b, a]) is b  # same progress: lower level
    assert pick_racer([a, b, c]) is c and pick_racer([c, a, b]) is c  # furthest along first
    twin = RacerView("twin", 10, 0.4)
    assert pick_racer([b, twin]) is b and pick_racer([twin, b]) is twin  # tie: the first
    # by level, the selection values are ignored
    assert pick_racer([RacerView("x", 4, 1.0, 0.1), RacerView("y", 4, 2.0, 0.0)]).key == "x"


def test_pick_racer_by_select_ranks_missing_values_last_within_equal_progress() -> None:
    x, y = RacerView("x", 4, 1.0, select=0.3), RacerView("y", 4, 2.0, select=0.2)
    none = RacerView("n", 4, 0.0, select=None)
    assert pick_racer([x, y], by_select=True) is y  # lower select, despite a higher level
    assert pick_racer([none, x], by_select=True) is x  # no value: last, despite level 0
    assert pick_racer([none, RacerView("m", 4, 5.0)], by_select=True).key == "n"  # tie: first
    far = RacerView("far", 5, 9.0, select=None)
    assert pick_racer([x, y, far], by_select=True) is far  # progress still comes first


# ---------------------------------------------------------------------- failures
def test_resolve_failure_without_results_cuts_below_the_box_top_then_falls_back() -> None:
    s = _search(0.25, 4.0)
    action, lr, msg = s.resolve_failure()
    # nothing tried: the box top (4) counts as the bad LR, so the new top is 4 / 3
    assert (action, lr) == ("retry", pytest.approx(4.0 / 3.0))
    assert msg == "stage 0: every candidate diverged; searching again in [0.25, 1.33]"
    assert s.lr_bounds == (0.25, pytest.approx(4.0 / 3.0))
    for _ in range(MAX_RETRIES - 2):
        assert s.resolve_failure()[0] == "retry"
    action, lr, msg = s.resolve_failure("racer")
    assert action == "fallback" and lr == s.lr_bounds[0]
    assert msg.startswith("stage 0: every racer diverged; training at the lowest LR ")


def test_a_failed_stage_makes_a_pending_cut_permanent() -> None:
    s = _search(0.25, 4.0)
    s.recover(3.0, transient=True)
    assert s.pending_restore == (0.25, 4.0)
    s.resolve_failure()
    assert s.pending_restore is None
    s.end_stage()  # healthy, but the cut stays: every candidate failed
    assert s.lr_bounds[1] < 1.0 and s.restored == 0


def test_recover_is_permanent_unless_called_transient() -> None:
    s = _search(0.25, 4.0)
    assert s.recover(3.0) == (0.25, 1.0)
    assert s.pending_restore is None
    s.end_stage()
    assert s.lr_bounds == (0.25, 1.0) and s.restored == 0


def test_a_chosen_winner_resets_the_retry_count() -> None:
    s = _search(0.25, 4.0)
    s.resolve_failure()
    assert s.retries == 1
    s.begin_stage()
    s.score(0.5, [2.0 - 0.1 * i for i in range(10)])
    assert s.choose().lr == 0.5 and s.retries == 0 and s.winner_lr == 0.5


def test_records_and_winners_are_asked_for_in_order() -> None:
    s = _search()
    with pytest.raises(StateError, match=r"^no stage record is open$"):
        s.update_record(note="x")
    s.score(0.5, [1.0, math.nan])  # penalised: no winner
    with pytest.raises(
        StateError, match=r"^choose\(\) needs a winner; call resolve_failure\(\) first$"
    ):
        s.choose()


# ---------------------------------------------------------------------- stage growth
def test_paper_stages_double_while_tau_prime_is_below_a_tenth_of_tau_max() -> None:
    s = _search(tau=400, tau_prime=95, tau_max=1000)
    s.end_stage()  # 95 < 1000 / 10 and 2 · 400 <= 1000: both double
    assert (s.tau, s.tau_prime) == (800, 190)
    s.end_stage()  # 190 >= 100: no more growth
    assert (s.tau, s.tau_prime) == (800, 190)
    s = _search(tau=600, tau_prime=50, tau_max=1000)
    s.end_stage()  # τ' is small, but 2 · 600 > τ_max: no growth
    assert (s.tau, s.tau_prime) == (600, 50)
    s = _search(tau=100, tau_prime=10, tau_max=1000, double=False)
    s.end_stage()
    assert (s.tau, s.tau_prime) == (100, 10)


def test_budget_stages_keep_the_planned_windows() -> None:
    policy = BudgetPolicy(
        max_steps=1000, warmup=0, decay=100, starts=(0, 400), ks=(3, 3), tau_primes=(20, 20)
    )
    s = StageSearch(lr_bounds=(0.25, 4.0), variant="budget", max_steps=1000, policy=policy)
    s.plan(0)
    windows = (s.tau, s.tau_prime)
    assert windows[1] == 20
    s.end_stage()  # the plan fixes the windows: no doubling, whatever tau_max allows
    assert (s.tau, s.tau_prime) == windows


# ---------------------------------------------------------------------- the budget plan
def _budget(starts: tuple[int, ...] = (0, 300), compare: str | None = None, **kw) -> StageSearch:
    """A budget-variant search on an explicit plan (not BudgetPolicy.for_budget's)."""
    n = len(starts)
    fields = dict(max_steps=1000, warmup=0, decay=200, starts=starts, ks=(3, 2, 2)[:n],
                  tau_primes=(20, 10, 10)[:n], cooldown_frac=0.25, trust=2.0)  # fmt: skip
    fields.update(kw)
    policy = BudgetPolicy(**fields)
    return StageSearch(
        lr_bounds=(0.25, 4.0),
        variant="budget",
        max_steps=1000,
        policy=policy,
        seed=0,
        compare=compare,
    )


def _first_winner(s: StageSearch, lr: float) -> None:
    """Plan and search stage 0 with a single (winning) candidate at ``lr``."""
    s.plan(0)
    s.begin_stage()
    s.score(lr, [1.0] * 20)
    s.choose()


def test_budget_plan_sets_the_windows_and_the_candidates_cool_down() -> None:
    s = _budget()
    p = s.plan(0)
    # 3 candidates of 20 steps end at 60; the winner trains to the next search at 300,
    # so candidates are compared 20 + 240 steps out; 25 % of 20 steps cool down
    assert p == StagePlan("search", k=3, tau=260, tau_prime=20, cooldown=5, exploit=240)
    assert (s.tau, s.tau_prime, s.cooldown_start) == (260, 20, 15)
    lrs = [s.candidate_lr(1.0, t) for t in range(20)]
    assert lrs[:15] == [1.0] * 15
    assert lrs[15:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])  # 1 - j / 6
    assert s.exploit_length(60, 0) == 240  # up to the next search
    # the largest of the last τ' = 20 (the paper's rule, a median of the last 2, says 1)
    assert s.reference_loss([1.0] * 18 + [5.0, 1.0, 1.0]) == 5.0
    assert s.reference_loss([9.0] + [1.0] * 20) == 1.0  # 9 lies before the last 20
    assert s.reference_loss([]) is None


def test_budget_exploitation_decays_over_the_last_steps_and_runs_to_the_end() -> None:
    s = _budget()
    _first_winner(s, 1.0)
    # The default 1 - sqrt(x) decay over the last 200 steps.
    want = [1, 1, 1 - math.sqrt(100 / 200), 1 - math.sqrt(199 / 200)]
    assert [s.exploit_lr(t) for t in (100, 800, 900, 999)] == pytest.approx(want)
    s.end_stage()
    assert s.exploit_length(330, 0) is None  # the last search: exploit to the end
    s = _budget(starts=(0, 800))  # a next search inside the final decay never happens
    s.plan(0)
    assert s.exploit_length(60, 0) is None
    s = _budget(starts=(0, 300, 500))
    s.plan(0)
    assert s.exploit_length(60, 0) == 240  # to the next start (300), not a later one
    assert s.exploit_length(320, 0) == 0  # a search that ran late leaves no exploitation


def test_budget_reference_loss_before_any_plan_uses_the_constructed_tau_prime() -> None:
    policy = BudgetPolicy(
        max_steps=1000, warmup=0, decay=200, starts=(0,), ks=(3,), tau_primes=(20,)
    )
    s = StageSearch(
        lr_bounds=(0.25, 4.0), tau=10, tau_prime=1, variant="budget", max_steps=1000, policy=policy
    )
    assert s.reference_loss([5.0, 1.0]) == 1.0  # the largest of the last τ' = 1


def test_budget_search_squeezed_by_the_end_needs_two_candidates_after_a_winner() -> None:
    s = _budget()
    _first_winner(s, 1.0)
    s.end_stage()
    # at 790, 10 steps are left before the decay: one 10-step candidate fits, but a lone
    # candidate cannot beat a winner (nothing to compare it with), so the stage is final
    assert s.plan(790).kind == "final"
    s = _budget()
    s.plan(0)
    s.end_stage()  # no winner yet: one candidate is still a search
    p = s.plan(790)
    assert (p.kind, p.k) == ("search", 1)


def test_a_one_step_cooldown_halves_the_last_candidate_step() -> None:
    s = _budget(cooldown_frac=0.05)  # round(0.05 · 20) = 1 cooled step
    s.plan(0)
    assert [s.candidate_lr(1.0, t) for t in (0, 18, 19)] == [1.0, 1.0, 0.5]


def test_budget_later_stages_search_a_trust_region_around_the_winner() -> None:
    s = _budget()
    s.plan(0)
    s.begin_stage()
    assert s.lr_bounds == (0.25, 4.0)  # the first search: the whole box
    s.score(1.0, [1.0] * 20)
    s.choose()
    s.end_stage()
    s.plan(300)
    s.begin_stage()
    assert s.lr_bounds == (0.5, 2.0)  # winner / 2 .. winner · 2
    assert s.results == [] and len(s.searcher) == 0  # the last stage's candidates are gone


def test_peek_plan_shows_the_next_stage_and_changes_nothing() -> None:
    s = _budget()
    now = s.plan(0)
    # the next stage from step 60: 2 candidates of 10 steps, then the rest of the budget
    nxt = s.peek_plan(60)
    assert (nxt.kind, nxt.k, nxt.tau_prime, nxt.tau, nxt.exploit) == ("search", 2, 10, 930, None)
    assert (s.stage, s.tau_prime, s.plan_now, s.winner_lr) == (0, 20, now, None)
    p = _search(tau=100, tau_prime=10, max_steps=1000)
    p.plan(0)
    assert (p.peek_plan(30).tau, p.peek_plan(30).tau_prime) == (200, 20)  # after doubling
    assert (p.tau, p.tau_prime, p.stage) == (100, 10, 0)
    # by the next stage a winner exists: 60 steps left hold one 20-step candidate, which
    # cannot beat a winner, so the next stage is final (this stage, without one, searches)
    assert p.peek_plan(940).kind == "final" and p.winner_lr is None


def test_a_stage_searched_again_after_a_recovery_searches_the_whole_lowered_box() -> None:
    s = _budget()
    _first_winner(s, 0.3)
    s.recover(3.0)  # NaN while exploiting stage 0: the stage is searched again
    s.begin_stage()
    assert s.lr_bounds == (0.25, 1.0)  # not a trust region around 0.3 (0.25 .. 0.6)


def test_final_plan_trains_at_the_winner_or_the_box_middle() -> None:
    s = _budget(starts=(0,))
    s.plan(0)
    final = s.plan(850)  # inside the final decay: no search
    assert (final.kind, final.lr) == ("final", 1.0)  # sqrt(0.25 · 4), no winner yet
    s.begin_stage()
    s.score(2.0, [1.0] * 20)
    s.choose()
    s.end_stage()
    assert s.plan(100).lr == 2.0 and s.tau_prime == 20  # a final plan leaves the windows


def test_paper_plan_shrinks_the_last_search_to_half_of_what_is_left() -> None:
    s = _search(tau=100, tau_prime=10, max_steps=1000)
    assert s.plan(0) == StagePlan("search", k=3, tau=100, tau_prime=10, exploit=100)
    # 30 steps left < k·τ' + τ' = 40: as many candidates as fit in half of them (1)
    assert s.plan(970) == StagePlan("search", k=1, tau=100, tau_prime=10, exploit=100)
    assert s.plan(990) == StagePlan("final", exploit=None, lr=1.0)  # none fit: box middle
    s.score(2.0, [1.0] * 10)
    s.choose()
    assert s.plan(970) == StagePlan("final", exploit=None, lr=2.0)  # one cannot beat a winner
    assert _search(tau=100, tau_prime=10).plan(10**9).kind == "search"  # no budget
    kept = _search(tau=100, tau_prime=10, max_steps=1000, continue_best=True)
    assert kept.plan(0).exploit == 90  # the winner's window continues into the stage


def test_paper_plan_of_parallel_candidates_needs_two_windows_after_a_winner() -> None:
    s = _search(tau=100, tau_prime=10, max_steps=1000, parallel=True)
    assert s.plan(985) == StagePlan("search", k=3, tau=100, tau_prime=10, exploit=100)
    s.score(2.0, [1.0] * 10)
    s.choose()
    # 20 steps left = 2·τ': all k side by side (in sequence only one would fit, then none)
    assert s.plan(980) == StagePlan("search", k=3, tau=100, tau_prime=10, exploit=100)
    assert s.plan(985) == StagePlan("final", exploit=None, lr=2.0)  # 15 < 2·τ'


def test_paper_exploitation_is_tau_minus_the_kept_steps_within_the_budget() -> None:
    s = _search(tau=100, tau_prime=10, max_steps=1000)
    assert s.exploit_length(30, 0) == 100
    assert s.exploit_length(30, 10) == 90  # the winner's window continues into the stage
    assert s.exploit_length(950, 0) == 50  # cut at the budget
    assert _search(tau=100, tau_prime=10).exploit_length(10**6, 0) == 100  # no budget
    s.score(0.5, [1.0] * 10)
    s.choose()
    assert s.exploit_lr(999) == 0.5  # the paper trains at a constant LR
    assert s.candidate_lr(0.5, 9) == 0.5


def test_paper_reference_loss_is_the_median_of_the_last_tenth_of_tau_prime() -> None:
    recent = [9.0, 1.0, 5.0, 7.0, 3.0]
    assert _search(tau=100, tau_prime=30).reference_loss(recent) == 5.0  # median of 5, 7, 3
    assert _search(tau=100, tau_prime=40).reference_loss(recent) == 5.0  # upper of 1 3 5 7
    assert _search(tau=100, tau_prime=10).reference_loss(recent) == 3.0  # the last one
    assert _search(tau=100, tau_prime=5).reference_loss(recent) == 3.0  # at least one
    assert _search().reference_loss([]) is None


# ---------------------------------------------------------------------- scoring
def test_window_and_cooled_scores_are_tail_means_with_their_standard_error() -> None:
    s = _search(compare="window")
    r = s.score(0.5, [4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 0.5, 1.5])
    # the last quarter (0.5, 1.5): mean 1, sample variance 0.5, standard error sqrt(0.5 / 2)
    assert (r.forecast, r.std, r.penalised, r.steps) == (1.0, pytest.approx(0.5), False, 8)
    assert s.searcher.observations == [({"lr": 0.5}, 1.0)]
    assert s.searcher.noises == [pytest.approx(0.5)]
    r = s.score(0.25, [4.0, 3.0, 2.0])  # under four values: the last one
    assert (r.forecast, r.std) == (2.0, 0.0)
    s = _budget(compare="cooled")
    s.plan(0)
    s.begin_stage()
    r = s.score(1.0, [9.0] * 15 + [1.0, 2.0, 3.0, 4.0, 5.0])  # the 5 cooled steps
    assert (r.forecast, r.std) == (3.0, pytest.approx(math.sqrt(2.5 / 5)))
    r = s.score(1.0, [9.0, 9.0, 1.0])  # a window shorter than the cooldown: all of it
    assert r.forecast == pytest.approx(19.0 / 3.0)


def test_forecast_score_extrapolates_to_tau_minus_one() -> None:
    s = _search(tau=100, tau_prime=30)
    curve = [0.5 + 1.5 * math.exp(-0.05 * t) for t in range(30)]
    r = s.score(0.5, curve)
    assert r.forecast == pytest.approx(0.5 + 1.5 * math.exp(-0.05 * 99), rel=1e-4)
    assert not r.penalised and r.steps == 30
    assert s.target_step == 99.0


def test_forecast_score_places_the_losses_at_their_steps() -> None:
    s = _search(tau=100, tau_prime=30)
    steps = [3.0 * i for i in range(10)]  # e.g. a validation loss every 3 steps
    curve = [0.5 + 1.5 * math.exp(-0.05 * t) for t in steps]
    r = s.score(0.5, curve, steps=steps)
    assert r.forecast == pytest.approx(0.5 + 1.5 * math.exp(-0.05 * 99), rel=1e-4)
    assert r.reason == "" and r.steps == 10


def test_scores_pick_the_window_or_the_cooled_steps_as_asked() -> None:
    vals = [9.0] * 15 + [1.0, 2.0, 3.0, 4.0, 8.0]
    window = _budget(compare="window", cooldown_frac=0.1)  # 2 cooled steps, quarter = 5
    window.plan(0)
    assert window.score(1.0, vals).forecast == pytest.approx(18.0 / 5.0)
    cooled = _budget(compare="cooled", cooldown_frac=0.1)
    cooled.plan(0)
    r = cooled.score(1.0, vals)
    assert (r.forecast, r.std, r.reason, r.penalised) == (6.0, pytest.approx(2.0), "", False)
    one = _budget(compare="cooled", cooldown_frac=0.05)  # 1 cooled step
    one.plan(0)
    assert one.score(1.0, vals).forecast == 8.0


class _NoForecast(Predictor):
    """A predictor that cannot forecast (a custom one may return a non-finite value)."""

    def forecast(self, values, target, *, steps=None) -> Forecast:
        return Forecast(math.nan, 0.0, True, "too short" if len(values) < 3 else "", None, 0)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_a_candidate_without_a_finite_forecast_is_penalised_with_the_reason() -> None:
    s = StageSearch(lr_bounds=(0.25, 4.0), tau=100, k=3, seed=0, predictor=_NoForecast())
    s.begin_stage()
    assert s.score(0.5, [1.0, 1.0]) == CandidateResult(0.5, math.inf, 0.0, True, "too short", 2)
    r = s.score(0.7, [1.0, 1.0, 1.0])
    assert (r.forecast, r.std, r.penalised, r.reason) == (math.inf, 0.0, True, "no forecast")
    assert s.searcher.observations[0][0] == {"lr": 0.5} and s.searcher.failed == [True, True]
    assert s.winner() is None


def test_penalised_scores_record_the_reason_and_tell_the_searcher_inf() -> None:
    s = _search()
    r = s.score(0.5, [1.0, math.nan, 1.0])
    assert r == type(r)(0.5, math.inf, 0.0, True, "non-finite loss", 3)
    why = "diverged: loss 9 > 3 x 1"
    r = s.score(0.6, [1.0, 2.0], penalised=True, reason=why, trained_steps=7)
    assert (r.penalised, r.reason, r.steps, r.forecast) == (True, why, 7, math.inf)
    assert s.score(0.7, [1.0], penalised=True).reason == "penalised"
    assert s.searcher.failed == [True, True, True]
    assert s.winner() is None


def test_only_a_non_finite_loss_keeps_a_provisional_cut() -> None:
    for losses, reason, restored in (
        ([1.0, 2.0], "diverged", True),  # a finite divergence says nothing about the glitch
        ([1.0, math.inf], "", False),
        ([1.0, 2.0], "non-finite loss in the validation", False),
    ):
        s = _search(0.25, 4.0)
        s.recover(3.0, transient=True)
        s.score(0.5, losses, penalised=bool(reason), reason=reason)
        _search(0.25, 4.0).load_state_dict(s.state_dict())  # the flag is saved as a bool
        s.end_stage()
        assert (s.lr_bounds == (0.25, 4.0)) is restored, (losses, reason)
        assert s.restored == int(restored)


# ---------------------------------------------------------------------- the box
def test_lower_upper_bound_keeps_the_low_end_while_above_it() -> None:
    s = _search(0.25, 4.0)
    assert s.lower_upper_bound(1.5) == (0.25, 0.5)  # 1.5 / 3 is above the low end: cut only
    s = _search(0.25, 4.0)
    # 0.375 = 1.5 × low: far enough above it to stay a cut
    assert s.lower_upper_bound(3 * 0.375) == (0.25, 0.375)


def test_lower_upper_bound_shifts_at_the_low_end_within_its_tolerance() -> None:
    s = _search(0.25, 4.0)
    edge = 0.25 * 1.0001  # a new top this close to the low end leaves no box: shift
    assert 3 * edge / 3 == edge
    assert s.lower_upper_bound(3 * edge) == (edge / 16, edge)


def test_lower_upper_bound_shifts_the_box_keeping_its_log_width() -> None:
    s = _search(0.25, 4.0)
    # 0.75 / 3 is exactly the low end: the box (width 16) shifts down to end there
    assert s.lower_upper_bound(0.75) == (0.25 / 16, 0.25)
    s = _search(0.25, 1.0)
    # a box narrower than a decade shifts by a decade, not its own width (4)
    assert s.lower_upper_bound(0.75) == (0.025, 0.25)
    assert s.lower_upper_bound(0.3, factor=2.0) == (0.025, 0.15)


def test_lower_upper_bound_lowers_the_outer_box_not_to_a_trust_region() -> None:
    s = _search(1e-3, 1.0)
    s.searcher.set_bounds("lr", 0.01, 0.05)  # a budget-variant trust region inside the box
    assert s.lower_upper_bound(0.09) == (0.01, pytest.approx(0.03))
    # the outer box keeps its low end (1e-3) and takes the new top
    assert s.state_dict()["box"] == [1e-3, pytest.approx(0.03)]
    assert s.initial_lr == pytest.approx(math.sqrt(1e-3 * 0.03))


def test_state_round_trip_keeps_the_outer_box_apart_from_the_search_box() -> None:
    s = _search(1e-3, 1.0)
    s.searcher.set_bounds("lr", 0.01, 0.05)
    t = StageSearch(lr_bounds=(1e-3, 1.0), tau=100, k=3, seed=0)
    t.load_state_dict(s.state_dict())
    assert t.lr_bounds == (0.01, 0.05)
    assert t.initial_lr == pytest.approx(math.sqrt(1e-3 * 1.0))  # the box, not the region


def test_budget_variant_starts_at_the_box_middle_then_its_quarters() -> None:
    s = StageSearch(lr_bounds=(1e-4, 1.0), variant="budget", max_steps=10_000, seed=0)
    s.begin_stage()
    # the stratified design: van der Corput 1/2, 1/4, 3/4 of the log box
    assert s.propose(3) == pytest.approx([1e-2, 1e-3, 1e-1])
    assert s.searcher.design == "stratified"
    assert StageSearch(lr_bounds=(1e-4, 1.0)).searcher.design == "sobol"  # the paper's
    s = StageSearch(lr_bounds=(1e-4, 1.0), variant="budget", max_steps=10_000, seed=0)
    s.begin_stage()
    # a candidate still running at the middle: the next point of the design instead
    assert s.propose(1, pending=[1e-2]) == pytest.approx([1e-3])
    assert s.propose() == pytest.approx([1e-1])  # one by default
    with pytest.raises(ConfigError, match=r"^n must be an int >= 1, got 0$"):
        s.propose(0)


def test_budget_variant_plans_its_candidates_from_its_box() -> None:
    wide = StageSearch(lr_bounds=(1e-6, 1.0), variant="budget", max_steps=2000, seed=0)
    assert wide.policy == BudgetPolicy.for_budget(2000, lr_bounds=(1e-6, 1.0))
    assert wide.policy.ks == (8,)
    narrow = StageSearch(lr_bounds=(1e-4, 1e-1), variant="budget", max_steps=2000, seed=0)
    assert narrow.policy.ks == (4,)


# ---------------------------------------------------------------------- state
def _saved() -> dict:
    """A state with a scored candidate, a record, a retry and a pending provisional cut."""
    s = _search(0.25, 4.0)
    s.plan(0)
    s.open_record(0)
    s.score(1.0, [2.0 - 0.1 * i for i in range(10)])
    s.resolve_failure()  # one retry on the books
    s.recover(0.9, transient=False)
    return s.state_dict()


def _decisions(s: StageSearch) -> tuple:
    """Everything a StageSearch decides from, but the searcher's and predictor's states."""
    state = s.state_dict()
    return tuple(v for k, v in sorted(state.items()) if k not in ("searcher", "predictor"))


def _with(path: tuple, value: object) -> dict:
    state = _saved()
    *head, last = path
    node = state
    for key in head:
        node = node[key]
    node[last] = value
    return state


BAD_STATES = [
    # (path, value, the whole message after "...: " or a part naming the entry)
    (("lr_bounds",), [0.0, 1.0], "lr_bounds must be a pair (low, high) with 0 < low < high"),
    (("box",), [-1.0, 1.0], "box must be a pair (low, high) with 0 < low < high"),
    (("tau",), 0, "tau=0 is not an int >= 1"),
    (("tau_prime",), 0, "tau_prime=0 is not an int >= 1"),
    (("stage",), -1, "stage=-1 is not an int >= 0"),
    (("retries",), -1, "retries=-1 is not an int >= 0"),
    (("retries",), True, "retries=True is not an int >= 0"),
    (("results",), "x", "results is a str, not a list"),
    (("records",), 5, "records is a int, not a list"),
    (("winner_lr",), "a", "winner_lr='a' is not a number"),
    (("winner_lr",), True, "winner_lr=True is not a number"),
    (("results", 0, "forecast"), "x", "candidate forecast='x' is not a number"),
    (("results", 0, "std"), None, "candidate std=None is not a number"),
    (("results", 0, "penalised"), 1, "has a non-bool penalised or a non-str reason"),
    (("results", 0, "reason"), 1, "has a non-bool penalised or a non-str reason"),
    (("results", 0, "steps"), -1, "candidate steps=-1 is not an int >= 0"),
    (("records", 0, "start"), -1, "record start=-1 is not an int >= 0"),
    (("records", 0, "k"), 1.5, "record k=1.5 is not an int >= 0"),
    (("records", 0, "winner_lr"), "w", "record winner_lr='w' is not a number"),
    (("records", 0, "end"), -2, "record end=-2 is not an int >= 0"),
    (("recovery", "restore_box"), [0.0, 1.0], "restore_box must be a pair (low, high)"),
    (("recovery", "restored"), -1, "restored=-1 is not an int >= 0"),
    (("recovery", "healthy"), "yes", "healthy='yes' is not a bool"),
]


@pytest.mark.parametrize(("path", "value", "needle"), BAD_STATES, ids=lambda v: str(v)[:20])
def test_each_bad_state_entry_is_refused_by_name_and_nothing_changes(
    path: tuple, value: object, needle: str
) -> None:
    s = _search(0.25, 4.0)
    before = _decisions(s)
    with pytest.raises(StateError) as err:
        s.load_state_dict(_with(path, value))
    assert needle in str(err.value)
    assert str(err.value).startswith(
        "StageSearch state_dict: bad 'recovery' entry: "
        if path[0] == "recovery"
        else "not a valid StageSearch state_dict: "
    )
    assert _decisions(s) == before


def test_a_state_that_is_not_one_says_what_it_lacks() -> None:
    s = _search()
    with pytest.raises(StateError, match=r"^not a StageSearch state_dict: got list$"):
        s.load_state_dict([])
    state = _saved()
    del state["tau"], state["predictor"]
    with pytest.raises(
        StateError, match=r"^not a StageSearch state_dict: it lacks tau, predictor$"
    ):
        s.load_state_dict(state)


def test_a_searcher_state_that_does_not_load_is_named_with_its_error() -> None:
    s = _search()
    state = _saved()
    state["searcher"] = {"x": 1}
    with pytest.raises(
        StateError, match=r"searcher or predictor state does not load \(StateError: "
    ):
        s.load_state_dict(state)


def test_optional_entries_of_an_old_state_take_their_first_values() -> None:
    state = _saved()
    assert state["retries"] == 1 and state["records"] and state["recovery"]["restored"] == 0
    for key in ("box", "retries", "records", "variant", "winner_lr", "plan", "recovery"):
        del state[key]
    s = _search(0.25, 4.0)
    s.load_state_dict(state)
    assert s.retries == 0 and s.records == [] and s.winner_lr is None and s.plan_now is None
    assert s.pending_restore is None and s.restored == 0
    assert s.initial_lr == pytest.approx(math.sqrt(0.25 * 0.3))  # box = lr_bounds


def test_state_round_trip_restores_every_decision_input() -> None:
    s = _search(0.25, 4.0)
    s.plan(0)
    s.open_record(0)
    s.score(1.0, [2.0 - 0.1 * i for i in range(10)])
    s.resolve_failure()
    s.recover(0.9, transient=True)
    t = _search(0.25, 4.0)
    t.load_state_dict(s.state_dict())
    assert _decisions(t) == _decisions(s)
    assert (t.retries, t.pending_restore, t.restored) == (1, s.pending_restore, 0)
    assert t.records == s.records and t.results == s.results and t.plan_now == s.plan_now
