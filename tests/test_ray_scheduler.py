"""AutoLRSScheduler: unit tests with a fake controller, integration tests with Tuner.fit."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.tune")

from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial

from autolr import AutoLRS, BudgetPolicy, ConfigError, StageRecord, StateError
from autolr._autolrs._race import RacerView, pick_racer
from autolr.integrations import _ray_compat as compat
from autolr.integrations.ray import (
    SCHEDULE_KEY,
    STATE_FILE,
    STATE_FINITE_KEY,
    AutoLRSScheduler,
    TuneCheckpointer,
    lr_at,
    scheduled_lr,
)
from autolr.searchers import GPSearcher, Param

PAUSE, CONTINUE, STOP = "PAUSE", "CONTINUE", "STOP"


# ---------------------------------------------------------------------- fake controller
class FakeController:
    """The controller surface the scheduler uses; trials report in rounds, by hand."""

    def __init__(self, n: int, sched: AutoLRSScheduler, root: str = "/ckpt") -> None:
        self.sched = sched
        self.root = root  # where checkpoints are "written" (folders only when not /ckpt)
        self.reports = 0
        self.trials = [
            Trial("__fake", config={"lr": 0.01}, trial_id=f"t{i}", stub=True) for i in range(n)
        ]
        self.iters = dict.fromkeys((t.trial_id for t in self.trials), 0)
        self.starts = dict.fromkeys((t.trial_id for t in self.trials), 0)
        for t in self.trials:
            sched.on_trial_add(self, t)

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return {t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)}

    def start(self, trial: Trial) -> None:
        """Ray starts a trial: from its latest checkpoint, with its config."""
        ck = trial.latest_checkpoint_result
        self.iters[trial.trial_id] = ck.metrics["training_iteration"] if ck else 0
        self.starts[trial.trial_id] += 1
        trial.set_status(Trial.RUNNING)

    def stop_trial(self, trial: Trial) -> None:
        if trial.status in (Trial.PAUSED, Trial.PENDING):
            self.sched.on_trial_remove(self, trial)
        trial.set_status(Trial.TERMINATED)

    def lr(self, trial: Trial) -> float:
        """The LR the trainable uses for its next iteration (TuneCheckpointer's rule)."""
        return scheduled_lr(trial.config, self.iters[trial.trial_id])

    def report(self, trial: Trial, loss: float, **extra) -> str:
        self.iters[trial.trial_id] += 1
        self.reports += 1
        it = self.iters[trial.trial_id]
        result = {"training_iteration": it, "loss": loss, "trial_id": trial.trial_id, **extra}
        result["should_checkpoint"] = True  # what Ray sets for a report with a checkpoint
        decision = self.sched.on_trial_result(self, trial, result)
        # Every report carries a checkpoint (TuneCheckpointer), registered after the result.
        path = f"{self.root}/{trial.trial_id}/{it}"
        if self.root != "/ckpt":  # a real folder, to count what pruning leaves
            os.makedirs(path)
        trial.run_metadata.checkpoint_manager.register_checkpoint(
            _TrainingResult(compat.checkpoint_from_path(trial, path), {"training_iteration": it})
        )
        if decision == PAUSE:
            trial.set_status(Trial.PAUSED)
        elif decision == STOP:
            trial.set_status(Trial.TERMINATED)
        return decision

    def round(self, loss_fn, trials=None) -> dict[str, str]:
        """Every running trial reports one loss ``loss_fn(lr, iteration)``."""
        out = {}
        for t in trials or self.trials:
            if t.status == Trial.RUNNING:
                out[t.trial_id] = self.report(t, loss_fn(self.lr(t), self.iters[t.trial_id]))
        return out

    def rounds(self, n: int, loss_fn) -> None:
        for _ in range(n):
            self.round(loss_fn)

    def resume_all(self) -> list[Trial]:
        """Start every trial the scheduler chooses (as Ray's loop would)."""
        started = []
        while (t := self.sched.choose_trial_to_run(self)) is not None:
            self.start(t)
            started.append(t)
        return started

    def start_all(self) -> None:
        for t in self.trials:
            self.start(t)


def curve(best: float):
    """Loss decays fastest for LRs near ``best`` (log distance), never below 0.1."""

    def loss(lr: float, it: int) -> float:
        rate = 0.3 * math.exp(-((math.log10(lr) - math.log10(best)) ** 2))
        return 0.1 + 2.0 * math.exp(-rate * it)

    return loss


def make(n: int = 4, **kw) -> tuple[AutoLRSScheduler, FakeController]:
    kw.setdefault("lr_bounds", (1e-3, 1.0))
    if "policy" not in kw and kw.get("variant") != "budget":
        kw.setdefault("variant", "paper")
        kw.setdefault("tau", 20)
        kw.setdefault("tau_prime", 5)
    sched = AutoLRSScheduler(metric="loss", mode="min", seed=0, **kw)
    sched.set_search_properties("loss", "min", num_samples=n)
    return sched, FakeController(n, sched)


def searched(n: int = 4, **kw) -> tuple[AutoLRSScheduler, FakeController, str]:
    """A paper-variant scheduler whose stage-0 search has just been decided."""
    sched, tc = make(n, **kw)
    tc.start_all()
    tc.rounds(5, curve(0.05))
    return sched, tc, sched.stage_trials[0]["winner_trial"]


# ---------------------------------------------------------------------- unit tests
def test_first_stage_candidates_are_distinct_and_in_bounds():
    sched, tc = make()
    lrs = [t.config["lr"] for t in tc.trials]
    assert len(set(lrs)) == 4
    assert all(1e-3 <= lr <= 1.0 for lr in lrs)
    assert sched.phase == "search" and sched.stage == 0
    assert sched.stages == [StageRecord(0, 0, 20, 5, 4)]


def test_winner_continues_without_a_restart_and_the_next_stage_starts_from_it():
    sched, tc, owner = searched()
    loss = curve(0.05)
    assert sched.phase == "exploit"
    rec = sched.stages[0]
    best = min(rec.candidates, key=lambda c: c.forecast)
    assert sched.winner_lr == rec.winner_lr == best.lr and len(rec.candidates) == 4
    # Closest candidate (log distance) to the optimum of the synthetic curves wins.
    lrs = [c.lr for c in rec.candidates]
    assert best.lr == min(lrs, key=lambda v: abs(math.log10(v / 0.05)))
    w = next(t for t in tc.trials if t.trial_id == owner)
    assert w.config["lr"] == best.lr
    # The others stop at their next report; the winner trains on (no pause, no restart).
    decisions = tc.round(loss)
    assert decisions.pop(owner) == CONTINUE and set(decisions.values()) == {PAUSE}
    for _ in range(13):
        assert tc.report(w, loss(tc.lr(w), tc.iters[owner])) == CONTINUE
    assert tc.report(w, loss(tc.lr(w), tc.iters[owner])) == PAUSE  # iteration tau = 20
    assert tc.starts[owner] == 1
    assert sched.stages[0].end == 20 and sched.stage_trials[0]["leader"] == owner
    # Next stage: tau, tau' doubled, every trial starts from the winner's iteration 20.
    started = tc.resume_all()
    assert len(started) == 4 and sched.stage == 1 and sched.phase == "search"
    assert (sched.search.tau, sched.search.tau_prime) == (40, 10)
    assert sched.stages[1].start == 20 and len({t.config["lr"] for t in tc.trials}) == 4
    assert all(tc.iters[t.trial_id] == 20 for t in tc.trials)
    assert all(t.checkpoint.path == f"/ckpt/{owner}/20" for t in tc.trials if t is not w)
    assert sched.schedule == [best.lr] * 20


def test_a_late_decision_finds_the_winner_at_the_next_stage_without_a_restart():
    sched, tc = make()
    loss = curve(0.05)
    best = min(tc.trials, key=lambda t: abs(math.log10(t.config["lr"] / 0.05)))
    late = next(t for t in tc.trials if t is not best)
    tc.start_all()
    for t in tc.trials:  # the others finish their window and train on to the next stage
        while t is not late and t.status == Trial.RUNNING:
            tc.report(t, loss(tc.lr(t), tc.iters[t.trial_id]))
    assert all(tc.iters[t.trial_id] == 20 for t in tc.trials if t is not late)
    for _ in range(5):  # the last candidate's window ends: the winner already stands at tau
        tc.report(late, loss(tc.lr(late), tc.iters[late.trial_id]))
    assert late.status == Trial.PAUSED and sched.stage == 1
    assert sched.stage_trials[0] == {"winner_trial": best.trial_id, "leader": best.trial_id}
    assert sched.stages[0].end == 20
    tc.resume_all()
    assert sched.phase == "search" and all(tc.iters[t.trial_id] == 20 for t in tc.trials)
    assert tc.starts[best.trial_id] == 2  # its first start and the next stage's, no other


def test_nonfinite_losses_are_penalised_and_never_chosen():
    sched, tc = make()
    tc.start_all()
    bad = tc.trials[0]
    bad_lr = bad.config["lr"]
    assert tc.report(bad, 1.0) == CONTINUE
    assert tc.report(bad, float("nan")) == PAUSE  # abandoned at once
    tc.rounds(5, curve(0.05))
    res = {c.lr: c for c in sched.stages[0].candidates}
    assert res[bad_lr].penalised and res[bad_lr].forecast == math.inf
    assert sum(not c.penalised for c in res.values()) == 3
    assert sched.winner_lr != bad_lr and sched.phase == "exploit"


def test_divergence_rule_penalises_a_rising_loss_relative_to_the_stage_start():
    sched, tc = make(divergence_factor=3.0, divergence_patience=2)
    tc.start_all()
    bad = tc.trials[2]
    assert [tc.report(bad, v) for v in (1.0, 2.5, 3.5)] == [CONTINUE] * 3  # one loss over
    assert tc.report(bad, 4.0) == PAUSE  # two in a row over 3x the first loss
    tc.rounds(5, curve(0.05))
    res = {c.lr: c for c in sched.stages[0].candidates}[bad.config["lr"]]
    assert res.penalised and "diverged" in res.reason and res.steps == 4


def test_all_penalised_searches_again_lower_in_the_same_record():
    sched, tc = make()
    first = [t.config["lr"] for t in tc.trials]
    tc.start_all()
    with pytest.warns(RuntimeWarning, match="every candidate diverged"):
        for t in tc.trials:
            assert tc.report(t, float("inf")) == PAUSE
    tc.resume_all()
    assert sched.phase == "search" and sched.stage == 0
    assert len(sched.stages) == 1 and sched.stages[0].note == "retry"
    lo, hi = sched.search.lr_bounds
    assert hi <= min(first) / 3 * 1.0001
    assert all(lo <= t.config["lr"] <= hi for t in tc.trials)
    # Restarted from the initial state (no stage checkpoint yet).
    assert all(t.latest_checkpoint_result is None for t in tc.trials)


def test_errored_trial_leaves_the_stage_to_the_others():
    sched, tc = make()
    tc.start_all()
    dead = tc.trials[1]
    tc.report(dead, 1.0)
    sched.on_trial_error(tc, dead)
    dead.set_status(Trial.ERROR)
    tc.rounds(5, curve(0.05))
    assert sched.phase == "exploit"
    cands = sched.stages[0].candidates
    assert len(cands) == 3 and dead.config["lr"] not in [c.lr for c in cands]
    assert any("errored" in e for e in sched.events)


def test_more_candidates_than_trials_reuses_trials_from_the_stage_checkpoint():
    sched, tc = make(n=2, k=4)
    loss = curve(0.05)
    first = {t.trial_id: t.config["lr"] for t in tc.trials}
    tc.start_all()
    tc.rounds(5, loss)
    assert all(t.status == Trial.PAUSED for t in tc.trials)  # no continuation: more to try
    tc.resume_all()
    assert sched.phase == "search"  # two more candidates, from the initial state
    assert all(t.config["lr"] != first[t.trial_id] for t in tc.trials)
    assert all(tc.iters[t.trial_id] == 0 for t in tc.trials)
    tc.rounds(5, loss)
    assert sched.phase == "exploit" and len(sched.stages[0].candidates) == 4


def test_exploit_false_starts_next_search_from_the_winner():
    sched, tc, owner = searched(exploit=False)
    assert all(t.status == Trial.PAUSED for t in tc.trials)  # nothing to continue into
    tc.resume_all()
    assert sched.stage == 1 and sched.phase == "search" and sched.stages[1].start == 5
    assert all(t.checkpoint.path == f"/ckpt/{owner}/5" for t in tc.trials)


def test_exploit_nonfinite_searches_the_stage_again_below_that_lr():
    sched, tc, owner = searched()
    w = next(t for t in tc.trials if t.trial_id == owner)
    tc.round(curve(0.05))  # the losers pause
    lr = sched.winner_lr
    with pytest.warns(RuntimeWarning, match="non-finite"):
        assert tc.report(w, float("nan")) == PAUSE
    tc.resume_all()
    assert sched.phase == "search" and sched.stage == 0 and sched.recoveries == 1
    assert sched.search.lr_bounds[1] <= lr / 3 * 1.0001
    assert all(tc.iters[t.trial_id] == 0 for t in tc.trials)  # from the stage start
    assert sched.schedule == []
    with pytest.raises(StateError, match="no lineage iteration"):
        sched.export_schedule()


def test_final_phase_when_no_search_fits_continues_the_winner_and_stops_the_rest():
    sched, tc, owner = searched(max_t=30, final="clone")
    w = next(t for t in tc.trials if t.trial_id == owner)
    loss = curve(0.05)
    for _ in range(25):  # to 30: stage 0 ends at 20, then no search fits (10 < 2 * 10)
        tc.round(loss)
    assert sched.phase == "final" and tc.iters[owner] == 30 and tc.starts[owner] == 1
    assert sched.stages[0].end == 20 and len(sched.stages) == 1
    sched.on_trial_complete(tc, w, {"training_iteration": 30, "loss": 0.5})
    w.set_status(Trial.TERMINATED)
    assert tc.resume_all() == []
    assert all(t.status == Trial.TERMINATED for t in tc.trials)
    assert len(sched.schedule) == 30 and set(sched.schedule) == {sched.winner_lr}
    # The lineage exports as an autolr.Schedule: per iteration, then stretched to 60 steps.
    exported = sched.export_schedule()
    assert exported.per_step() == sched.schedule and exported.source == "AutoLRSScheduler"
    assert exported.stretch(60).per_step() == [sched.winner_lr] * 60
    assert sched.export_schedule(60).per_step() == [sched.winner_lr] * 60
    with pytest.raises(ConfigError, match="kind must be one of"):
        sched.export_schedule(kind="cubic")  # checked even without steps
    with pytest.raises(ConfigError, match=r"^steps must be an int >= 1"):
        sched.export_schedule(0)


def _complete(tc: FakeController, trial: Trial, loss: float) -> None:
    """The stopper ends a trial: its last result reaches only on_trial_complete."""
    tc.iters[trial.trial_id] += 1
    trial.set_status(Trial.TERMINATED)
    result = {"training_iteration": tc.iters[trial.trial_id], "loss": loss}
    tc.sched.on_trial_complete(tc, trial, result)


def _to_last_stage(**kw) -> tuple[AutoLRSScheduler, FakeController]:
    """Stage 0 (search + exploit) of a 40-iteration run; stage 1 is the last one."""
    sched, tc, _ = searched(max_t=40, double=False, **kw)
    for _ in range(15):
        tc.round(curve(0.05))
    tc.resume_all()
    return sched, tc


def test_last_stage_races_each_candidate_to_the_end():
    sched, tc = _to_last_stage()
    assert sched.stage == 1 and sched.phase == "race" and sched.stages[1].note == "race"
    leader = sched.stage_trials[0]["leader"]
    lrs = [t.config["lr"] for t in tc.trials]
    assert len(set(lrs)) == 4  # distinct candidates, all from the stage-0 lineage's end
    assert all(t.checkpoint.path == f"/ckpt/{leader}/20" for t in tc.trials)
    # No barrier: racers continue past tau' (scored there for the record) to max_t.
    # (Losses stay below 3x the stage-start loss, ~0.1: above, a racer would diverge.)
    finals = {"t0": 0.20, "t1": 0.10, "t2": 0.15, "t3": 0.125}
    for i in range(19):
        for t in tc.trials:
            v = 0.25 if i < 15 else finals[t.trial_id]  # ranked on the last tau' = 5 losses
            assert tc.report(t, v) == CONTINUE
        if i == 4:
            assert len(sched.stages[1].candidates) == 4
    for t in tc.trials:
        _complete(tc, t, finals[t.trial_id])
    # The exposed lineage is the racer with the lowest real final losses.
    best = tc.trials[1]
    assert sched.stage_trials[1]["winner_trial"] == "t1" and sched.winner_lr == best.config["lr"]
    assert sched.stages[1].winner_lr == best.config["lr"] and sched.stages[1].end == 40
    assert sched.stage_trials[1]["final_loss"] == pytest.approx(0.10)
    assert len(sched.schedule) == 40 and sched.schedule[20:] == [best.config["lr"]] * 20
    assert sched.schedule[:20] == [sched.stages[0].winner_lr] * 20
    assert tc.resume_all() == []  # nothing left to schedule


def test_race_select_metric_picks_the_racer_by_another_reported_metric():
    sched, tc = _to_last_stage(select_metric="val")
    vals = {"t0": 0.3, "t1": 0.5, "t2": 0.1, "t3": 0.2}  # t2 best by val, t0 best by loss
    for i in range(19):
        for t in tc.trials:
            extra = {"val": vals[t.trial_id] if i > 10 else math.nan} if i % 5 == 4 else {}
            assert tc.report(t, 0.05 * (1 + int(t.trial_id[1])), **extra) == CONTINUE
    info = sched.stage_trials[1]
    assert info["winner_trial"] == "t2" and info["select_value"] == 0.1
    for t in tc.trials:
        _complete(tc, t, 0.1)
    assert sched.stage_trials[1]["winner_trial"] == "t2"
    assert sched.schedule[20:] == [tc.trials[2].config["lr"]] * 20
    with pytest.raises(TypeError):
        AutoLRSScheduler(select_metric=3)


def test_clone_option_and_k_keep_a_searched_last_stage():
    for kw in ({"final": "clone"}, {"k": 4}):
        sched, tc = _to_last_stage(**kw)
        assert sched.stage == 1 and sched.phase == "search" and sched.stages[1].note == ""
        tc.rounds(5, curve(0.05))
        assert sched.phase == "exploit"
        assert sched.stages[1].winner_lr == sched.winner_lr


def test_first_stage_races_when_it_is_the_only_stage():
    sched, tc = make(max_t=20, double=False)
    assert sched.phase == "race" and len({t.config["lr"] for t in tc.trials}) == 4
    tc.start_all()
    for i in range(20):
        for t in tc.trials:
            assert tc.report(t, 1.0 / (1 + i) + 0.001 * int(t.trial_id[1])) == CONTINUE
    assert sched.stage_trials[0]["winner_trial"] == "t0" and len(sched.schedule) == 20


def test_race_divergence_stops_racers_and_all_diverged_searches_again_lower():
    sched, tc = _to_last_stage()
    t0, t1, t2, t3 = tc.trials
    for t in tc.trials:
        tc.report(t, 0.1)
    assert tc.report(t0, math.nan) == STOP  # others still race: this run is over
    assert sched.winner_lr != t0.config["lr"]
    assert any("non-finite" in e for e in sched.events)
    assert tc.report(t1, math.inf) == STOP
    assert [tc.report(t2, v) for v in (5.0, 5.0, 5.0)] == [CONTINUE, CONTINUE, STOP]  # 3x
    hi_before = sched.search.lr_bounds[1]
    assert tc.report(t3, math.nan) == PAUSE  # the last racer: nothing healthy is left
    with pytest.warns(RuntimeWarning, match="every racer diverged"):
        tc.resume_all()
    assert sched.phase == "race" and len(sched.stages) == 2 and sched.stages[1].note == "retry"
    assert sched.search.lr_bounds[1] < hi_before
    assert t3.status == Trial.RUNNING and t3.checkpoint.path.endswith("/20")
    assert sched.stages[1].start == 20 and sched.schedule == sched.schedule[:20]


# ---------------------------------------------------------------------- budget variant
def test_budget_variant_when_max_t_is_known_with_one_candidate_per_trial():
    sched = AutoLRSScheduler(lr_bounds=(1e-3, 1.0), metric="loss", mode="min")
    assert sched.variant == "paper"
    sched.set_search_properties("loss", "min", num_samples=3, stop={"training_iteration": 300})
    assert sched.variant == "budget" and sched.max_t == 300
    assert sched.search.policy == BudgetPolicy.for_budget(300, parallel=True, k=3, k_later=3)
    # A population's plan: uncooled windows and a linear decay (the core's defaults for it).
    assert (sched.search.policy.cooldown_frac, sched.search.policy.decay_shape) == (0.0, "linear")
    assert AutoLRSScheduler(max_t=100).variant == "budget"
    assert AutoLRSScheduler(max_t=100, variant="paper", tau=20).variant == "paper"
    # A wide box does not add candidates to a population: its k is the trials.
    wide = AutoLRSScheduler(lr_bounds=(1e-6, 1.0), metric="loss", mode="min")
    wide.set_search_properties("loss", "min", num_samples=3, stop={"training_iteration": 3000})
    assert wide.search.policy.ks == (3,)


def test_paper_structure_with_the_budget_variant_raises():
    for kw in ({"tau": 100}, {"k": 4}, {"tau_prime": 5}, {"double": False}, {"tau_max": 800}):
        with pytest.raises(ConfigError, match="variant='paper'"):
            AutoLRSScheduler(variant="budget", **kw)
        with pytest.raises(ConfigError, match="variant='paper'"):
            AutoLRSScheduler(max_t=500, **kw)
    sched = AutoLRSScheduler(tau=100, metric="loss")  # paper until Ray reports a budget...
    with pytest.raises(ConfigError, match="variant='paper'"):
        sched.set_search_properties("loss", "min", num_samples=4, stop={"training_iteration": 500})
    with pytest.raises(ConfigError, match="parallel=True"):
        AutoLRSScheduler(policy=BudgetPolicy.for_budget(100))
    with pytest.raises(ConfigError, match="exploit"):
        AutoLRSScheduler(max_t=100, exploit=False)


def test_budget_schedule_is_warm_up_candidates_and_decay_in_the_trial_config():
    pol = BudgetPolicy.for_budget(200, parallel=True, k=4, k_later=4, searches=2)
    sched, tc = make(policy=pol)
    w, start1 = pol.starts
    assert sched.variant == "budget" and sched.stages[0].start == w == pol.warmup
    assert sched.stages[0].tau_prime == pol.tau_primes[0]
    peak = sched.search.initial_lr
    for t in tc.trials:
        c = t.config["lr"]
        assert t.config[SCHEDULE_KEY]["points"] == [[w, c]]
        assert scheduled_lr(t.config, 0) == pytest.approx(peak / w)  # warm-up ramp
        assert scheduled_lr(t.config, w - 1) == pytest.approx(peak)
        assert scheduled_lr(t.config, w) == c  # the candidate from the stage start
        for i in (w, 150, 170, 199):  # the decay is the core's, iteration by iteration
            assert scheduled_lr(t.config, i) == pol.exploit_lr(c, i)
    # Warm-up and the first candidates run without a barrier; the winner continues.
    loss = curve(0.05)
    tc.start_all()
    tc.rounds(w + pol.tau_primes[0], loss)
    owner = sched.stage_trials[0]["winner_trial"]
    assert sched.phase == "exploit" and sched.stages[0].note == ""
    while tc.iters[owner] < start1:
        tc.round(loss)
    assert all(t.status == Trial.PAUSED for t in tc.trials) and tc.starts[owner] == 1
    tc.resume_all()
    # The last search races, in a trust region around the winner, to the end.
    assert sched.phase == "race" and sched.stages[1].start == start1
    win = sched.stages[0].winner_lr
    assert all(win / pol.trust <= t.config["lr"] <= win * pol.trust for t in tc.trials)
    while any(t.status == Trial.RUNNING for t in tc.trials):
        for t in tc.trials:
            if tc.iters[t.trial_id] == 199:
                _complete(tc, t, 0.1)
        tc.round(loss)
    lineage = sched.schedule
    last = sched.stages[1].winner_lr
    assert len(lineage) == 200 and lineage[-1] == pol.exploit_lr(last, 199) < 0.02 * last
    assert lineage[0] == pytest.approx(peak / w) and lineage[w] == win


def test_budget_variant_skips_a_bad_batch_that_left_the_state_finite_as_in_loop():
    # The trials restore their RNG with the stage checkpoint, so a bad batch comes back in
    # every candidate's window: penalising it failed every candidate alike and cut the box.
    # The core's rule (StageSearch.skips_nonfinite) is the in-loop AutoLRS's: skip up to two
    # in a row when the trial says its state stayed finite.
    pol = BudgetPolicy.for_budget(200, parallel=True, k=4, k_later=4, searches=2)
    w = pol.starts[0]
    sched, tc = make(policy=pol)
    tc.start_all()
    loss = curve(0.05)
    finite = {STATE_FINITE_KEY: True}

    def step(bad_at: set[int]) -> None:
        for t in tc.trials:
            if t.status == Trial.RUNNING:
                i = tc.iters[t.trial_id]
                if i in bad_at:
                    tc.report(t, math.nan, **finite)
                else:
                    tc.report(t, loss(tc.lr(t), i), **finite)

    with pytest.warns(RuntimeWarning, match="left the trial's weights and optimizer state finite"):
        for _ in range(w + pol.tau_primes[0]):
            step({2, w + 1, w + 3})  # once in warm-up, twice in every window (not in a row)
    cands = sched.stages[0].candidates
    assert len(cands) == 4 and not any(c.penalised for c in cands), cands
    assert sched.phase == "exploit" and sched.skipped_losses == 3 * len(tc.trials)
    assert sched.recoveries == 0 and sched.search.lr_bounds == (1e-3, 1.0)
    # While exploiting: one skipped, then three in a row are divergence (a provisional cut).
    owner = next(t for t in tc.trials if t.trial_id == sched.stage_trials[0]["winner_trial"])
    at = tc.iters[owner.trial_id]
    tc.report(owner, math.nan, **finite)
    assert sched.recoveries == 0 and sched.skipped_losses == 3 * len(tc.trials) + 1
    tc.report(owner, loss(tc.lr(owner), at + 1), **finite)
    with pytest.warns(RuntimeWarning, match="searching again"):
        for _ in range(3):
            tc.report(owner, math.nan, **finite)
    assert sched.recoveries == 1 and sched.search.pending_restore is not None
    # Without the key (a trainable that does not say), nothing is skipped: as before.
    sched2, tc2 = make(policy=pol)
    tc2.start_all()
    tc2.rounds(w, loss)
    assert tc2.report(tc2.trials[0], math.nan) == PAUSE
    assert sched2.skipped_losses == 0


def test_budget_race_skips_a_bad_batch_and_stops_a_racer_on_a_third_in_a_row():
    # The final race follows the same core rule: a racer whose state stayed finite loses
    # nothing to a bad batch (its losses around it still rank it); a longer streak stops it.
    pol = BudgetPolicy.for_budget(200, parallel=True, k=4, k_later=4, searches=2)
    sched, tc = make(policy=pol)
    loss = curve(0.05)
    tc.start_all()
    tc.rounds(pol.warmup + pol.tau_primes[0], loss)
    owner = sched.stage_trials[0]["winner_trial"]
    while tc.iters[owner] < pol.starts[1]:
        tc.round(loss)
    tc.resume_all()
    assert sched.phase == "race"
    finite = {STATE_FINITE_KEY: True}
    t0, t1 = tc.trials[:2]
    with pytest.warns(RuntimeWarning, match="left the trial's weights and optimizer state finite"):
        assert tc.report(t0, math.nan, **finite) == CONTINUE
    assert tc.report(t0, loss(tc.lr(t0), tc.iters[t0.trial_id]), **finite) == CONTINUE
    assert sched.skipped_losses == 1 and not sched._jobs[t0.trial_id].penalised
    decisions = [tc.report(t1, math.nan, **finite) for _ in range(3)]
    assert decisions == [CONTINUE, CONTINUE, STOP] and sched.skipped_losses == 3
    assert sched._jobs[t1.trial_id].penalised
    # Without the key a racer's non-finite loss stops it at once, as before.
    assert tc.report(tc.trials[2], math.nan) == STOP


def test_lr_at_follows_the_core_policy():
    pol = BudgetPolicy.for_budget(100, parallel=True, cooldown_frac=0.5, decay_shape="linear")
    sch = {"points": [[0, 0.2], [30, 0.1]], "decay": [pol.max_steps, pol.decay, "linear"]}
    assert [lr_at(sch, i) for i in range(100)] == [
        pol.exploit_lr(0.2 if i < 30 else 0.1, i) for i in range(100)
    ]
    win = {"points": [[10, 0.1]], "window": [10, 8, 4]}
    assert [lr_at(win, 10 + t) for t in range(8)] == [
        pol.candidate_lr(0.1, t, 8, 4) for t in range(8)
    ]
    assert scheduled_lr({"lr": 0.3}, 7) == 0.3


def test_checkpointer_outside_tune_applies_lr_and_schedule():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.2}], lr=0.1
    )
    TuneCheckpointer(model, opt, {"lr": 0.05})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1])
    sch = {"points": [[4, 0.08]], "warmup": [4, 0.04]}
    ckpt = TuneCheckpointer(model, opt, {"lr": 0.08, SCHEDULE_KEY: sch})
    assert ckpt.lr == pytest.approx(0.01) and opt.param_groups[1]["lr"] == pytest.approx(0.02)
    with pytest.raises(ConfigError):
        TuneCheckpointer(model, opt, {"learning_rate": 0.1})
    with pytest.raises(ConfigError):
        TuneCheckpointer(model, opt, {"lr": float("nan")})
    with pytest.raises(ConfigError):
        TuneCheckpointer(model, opt, {"lr": 0.1, SCHEDULE_KEY: {"points": []}})


def test_pick_racer_prefers_progress_then_level_or_select():
    a = RacerView.from_losses("a", [3.0, 1.0, 1.0], window=2)
    b = RacerView.from_losses("b", [3.0, 2.0, 0.5], window=2)
    c = RacerView.from_losses("c", [3.0, 2.0], window=2, select=0.1)
    assert (a.level, b.level, b.iterations) == (1.0, 1.25, 3)
    assert pick_racer([a, b, c]).key == "a" and pick_racer([]) is None
    d = RacerView("d", 3, 9.0, select=0.2)
    assert pick_racer([a, d], by_select=True).key == "d"  # a has no select value: last
    assert RacerView.from_losses("e", [math.nan], window=2) is None


# ---------------------------------------------------------------------- state
def _paper_scheduler(**kw) -> AutoLRSScheduler:
    """A paper-variant scheduler (τ=20, τ'=5 on [1e-3, 1] unless ``kw`` says otherwise)."""
    args = {"lr_bounds": (1e-3, 1.0), "tau": 20, "tau_prime": 5, **kw}
    return AutoLRSScheduler(metric="loss", mode="min", variant="paper", **args)


def test_state_dict_roundtrip_weights_only_with_records(tmp_path):
    sched, _, _ = searched()
    path = tmp_path / "s.pt"
    sched.save(str(path))
    state = torch.load(path, weights_only=True)
    assert state["search"]["records"][0]["winner_lr"] == sched.winner_lr
    other = _paper_scheduler()
    other.restore(str(path))
    assert other.stages == sched.stages and isinstance(other.stages[0], StageRecord)
    assert other.stage_trials == sched.stage_trials
    assert other.state_dict()["jobs"] == sched.state_dict()["jobs"]
    assert other.winner_lr == sched.winner_lr and other.phase == "exploit"
    assert other.schedule == sched.schedule
    with pytest.raises(StateError):
        other.load_state_dict({"version": 1})
    budget = AutoLRSScheduler(metric="loss", max_t=100)
    with pytest.raises(StateError, match="variant"):
        budget.load_state_dict(state)


def test_race_state_roundtrip_weights_only(tmp_path):
    sched, tc = _to_last_stage()
    for i in range(8):
        for t in tc.trials:
            tc.report(t, 0.1 - 0.001 * i * int(t.trial_id[1]))
    path = tmp_path / "race.pt"
    sched.save(str(path))
    other = _paper_scheduler(double=False)  # the run's arguments
    other.restore(str(path))
    assert other.phase == "race" and other.schedule == sched.schedule
    assert other.stages == sched.stages and other.stage_trials[1]["winner_trial"] == "t3"


def test_restored_trials_are_resynced_to_the_saved_decisions():
    sched, tc = _to_last_stage()  # race jobs: every trial resumes from the leader's checkpoint
    leader = sched.stage_trials[0]["leader"]
    state = sched.state_dict()
    # Ray restored the trials from an experiment snapshot taken before the decision: each has
    # its own older checkpoint and an old LR.
    restored = [
        Trial("__fake", config={"lr": 0.5}, trial_id=t.trial_id, stub=True) for t in tc.trials
    ]
    for t in restored:
        ck = compat.checkpoint_from_path(t, f"/ckpt/{t.trial_id}/6")
        t.run_metadata.checkpoint_manager.register_checkpoint(
            _TrainingResult(ck, {"training_iteration": 6})
        )
        t.set_status(Trial.PAUSED)
    fresh = _paper_scheduler(double=False)  # the run's arguments
    fresh.load_state_dict(state)
    fresh._state_trial = restored[0]  # the state is loaded already (no storage here)
    for t in restored:
        fresh.on_trial_add(tc, t)
    assert [t.config["lr"] for t in restored] == [t.config["lr"] for t in tc.trials]
    assert all(
        t.config[SCHEDULE_KEY] == o.config[SCHEDULE_KEY] for t, o in zip(restored, tc.trials)
    )
    assert all(t.checkpoint.path == f"/ckpt/{leader}/20" for t in restored)
    assert fresh.stage == 1 and fresh.phase == "race"


def test_bad_configuration_raises():
    with pytest.raises(ConfigError):
        AutoLRSScheduler(mode="max")
    with pytest.raises(ConfigError):
        AutoLRSScheduler(lr_bounds=(1.0, 0.1))
    with pytest.raises(ConfigError):
        AutoLRSScheduler(k=0)
    with pytest.raises(ConfigError):
        AutoLRSScheduler(tau=10, tau_prime=10)
    with pytest.raises(ConfigError, match="final"):
        AutoLRSScheduler(final="best")
    with pytest.raises(ConfigError, match="variant"):
        AutoLRSScheduler(variant="fast")
    sched = AutoLRSScheduler()
    with pytest.raises(ConfigError, match="metric"):
        sched.on_trial_add(None, Trial("__fake", config={"lr": 0.1}, trial_id="x", stub=True))


def test_private_ray_access_is_pinned_to_the_installed_ray():
    import ray

    # The private write in _ray_compat was checked against this version: re-check on upgrade.
    assert ray.__version__ == compat.TESTED_RAY_VERSION
    t = Trial("__fake", config={"lr": 0.1}, trial_id="p", stub=True)
    manager = t.run_metadata.checkpoint_manager
    assert hasattr(manager, "_latest_checkpoint_result")
    compat.set_trial_checkpoint(t, ("/some/ckpt", {"training_iteration": 7}))
    # ...and it is what Ray restores a trial from.
    assert t.latest_checkpoint_result.checkpoint.path == "/some/ckpt"
    assert t.latest_checkpoint_result.metrics["training_iteration"] == 7
    compat.set_trial_checkpoint(t, None)
    assert t.checkpoint is None
    for it in (3, 4):
        manager.register_checkpoint(
            _TrainingResult(compat.checkpoint_from_path(t, f"/c/{it}"), {"training_iteration": it})
        )
    assert compat.checkpoint_at(t, "training_iteration", 3)[0] == "/c/3"
    assert compat.checkpoint_at(t, "training_iteration", 9) is None


# ---------------------------------------------------------------------- integration (Tuner.fit)
# A stage barrier pauses the trials; Ray then starts a fresh actor per trial (it does not cache
# actors of paused trials once the search algorithm is done), so a barrier costs about one
# actor start: 3-5 s on an idle 2-core machine, up to ~30 s when it is overloaded.
def _train(config):
    """Tiny linear regression; trial ``fail_trial`` raises past ``fail_after``.

    With ``fail_once`` (a folder) it raises only the first time, as a flaky node would.
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)  # identical initial weights and batches in every trial
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    ckpt = TuneCheckpointer(model, opt, config)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    name = tune.get_context().get_trial_name()
    while ckpt.iteration < config["iters"]:
        failing = config.get("fail_trial") and name.endswith(config["fail_trial"])
        if failing and ckpt.iteration >= config["fail_after"]:
            once = config.get("fail_once")
            if not once or not os.path.exists(os.path.join(once, name)):
                if once:
                    open(os.path.join(once, name), "w").close()
                raise RuntimeError("injected failure")
        x = torch.randn(16, 4)
        loss = ((model(x) - x @ w) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ckpt.report(loss)


class _Scalar(torch.nn.Module):
    """The whole training state: one number that grows by ``_rate(lr)`` per step."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))


def _rate(lr: float) -> float:
    return 0.3 * math.exp(-((math.log10(lr) - math.log10(0.05)) ** 2)) if lr > 0 else 0.0


def _scripted_step(model: _Scalar, opt: torch.optim.Optimizer) -> float:
    """Loss of the current state (a function of the LRs trained so far), then one step."""
    loss = 0.1 + 2.0 * math.exp(-model.p.item())
    lr = float(opt.param_groups[0]["lr"])
    opt.zero_grad()
    model.p.grad = torch.full_like(model.p, -_rate(lr) / lr if lr > 0 else 0.0)
    opt.step()
    return loss


def _scripted(config):
    model = _Scalar()
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    ckpt = TuneCheckpointer(model, opt, config, rng=False)
    while ckpt.iteration < config["iters"]:
        ckpt.report(_scripted_step(model, opt))


def _tuner(path, sched, config, name, callbacks=(), trainable=_train, max_failures=0):
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0.5}),
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=4, scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(path),
            verbose=0,
            stop={"training_iteration": config["iters"]},
            callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )


class _Starts(tune.Callback):
    """Counts trial (re)starts."""

    def __init__(self) -> None:
        self.n = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.n += 1


def _gp() -> GPSearcher:
    # n_initial >= k: every proposal of a stage is quasi-random, whether the candidates are
    # proposed one after another (in-loop) or side by side (Ray).
    return GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, n_initial=4)


@pytest.mark.slow
def test_in_loop_and_ray_take_the_same_stage_decisions(ray_session, tmp_path):
    """Same scripted loss curves, same seeded searcher: the same StageRecords.

    The in-loop tuner trains its k candidates one after another, so its ``start``/``end``
    count every optimizer step, the discarded candidate windows included; the scheduler's
    count lineage iterations (the candidates run side by side and the winner's window is kept,
    as with ``continue_from="best"``). Subtracting the (k - 1) * τ' discarded steps of each
    earlier stage maps one onto the other; the candidates are compared as sets because Ray
    scores them in the order they finish.
    """
    model = _Scalar()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loop = AutoLRS(
        model,
        opt,
        lr_bounds=(1e-3, 1.0),
        variant="paper",
        tau=20,
        tau_prime=5,
        k=4,
        continue_from="best",
        searcher=_gp(),
    )
    for _ in range(4 * 5 + 15 + 4 * 10 + 30):
        loop.step(_scripted_step(model, opt))
    sched = AutoLRSScheduler(
        lr_bounds=(1e-3, 1.0),
        variant="paper",
        tau=20,
        tau_prime=5,
        final="clone",
        searcher=_gp(),
        metric="loss",
        mode="min",
    )
    starts = _Starts()
    config = {"lr": 0.01, "iters": 60}
    grid = _tuner(tmp_path, sched, config, "same", [starts], trainable=_scripted).fit()
    assert all(r.error is None for r in grid)
    assert len(sched.stages) == 2 and len(loop.stages) >= 2
    shift = 0
    for a, b in zip(loop.stages[:2], sched.stages):
        same = ("stage", "tau", "tau_prime", "k", "note", "winner_lr")
        assert [getattr(a, f) for f in same] == [getattr(b, f) for f in same]
        ca, cb = (sorted(r.candidates, key=lambda c: c.lr) for r in (a, b))
        assert [(c.lr, c.penalised, c.steps) for c in ca] == [
            (c.lr, c.penalised, c.steps) for c in cb
        ]
        fa, fb = ([c.forecast for c in cands] for cands in (ca, cb))
        assert fa == pytest.approx(fb, rel=1e-9)
        assert b.start == a.start - shift
        shift += (a.k - 1) * a.tau_prime
        assert b.end == a.end - shift
    # One barrier (stage 1's start): 4 starts, then 4 restarts from the winner's checkpoint.
    assert starts.n == 8
    assert sched.schedule[:20] == [sched.stages[0].winner_lr] * 20


@pytest.mark.slow
def test_budget_run_decays_the_lr_to_zero_at_max_t(ray_session, tmp_path):
    sched = AutoLRSScheduler(lr_bounds=(1e-3, 1.0), metric="loss", mode="min")
    config = {"lr": 0.01, "iters": 40}
    grid = _tuner(tmp_path, sched, config, "decay", trainable=_scripted).fit()
    assert sched.variant == "budget" and sched.max_t == 40
    pol = sched.search.policy
    assert pol.decay > 0 and all(r.error is None for r in grid)
    finished = [r for r in grid if r.metrics["training_iteration"] == 40]
    assert finished
    for r in finished:
        df = r.metrics_dataframe.drop_duplicates("training_iteration", keep="last")
        lrs = dict(zip(df.training_iteration, df.lr))
        base = r.config["lr"]
        assert lrs[40] <= base / pol.decay * 1.0001  # the last iteration trains at ~0
        decayed = range(pol.max_steps - pol.decay + 1, 41)  # iteration i is step i - 1
        assert [lrs[i] for i in decayed] == pytest.approx(
            [pol.exploit_lr(base, i - 1) for i in decayed]
        )
        assert lrs[pol.max_steps - pol.decay] == pytest.approx(base)
    assert len(sched.schedule) == 40
    assert sched.schedule[-1] <= sched.winner_lr / pol.decay * 1.0001


@pytest.mark.slow
def test_tuner_fit_stages_lineage_race_and_erroring_trial(ray_session, tmp_path):
    sched = _paper_scheduler(lr_bounds=(1e-3, 0.3), tau=6, tau_prime=3, tau_max=6)
    config = {"lr": 0.01, "iters": 12, "fail_trial": "00001", "fail_after": 7}
    grid = _tuner(tmp_path, sched, config, "fit").fit()
    errored = [r for r in grid if r.error is not None]
    ok = [r for r in grid if r.error is None]
    assert len(errored) == 1 and len(ok) == 3  # the experiment went on without it
    assert sched.stage == 1 and len(sched.stages) == 2 and sched.phase == "race"
    assert [s.note for s in sched.stages] == ["", "race"]
    winners = [s.winner_lr for s in sched.stages]
    # Stage 0 was searched; the last stage raced: each survivor ran its own candidate to the
    # end, so the population ends with different LRs and weights.
    assert {r.metrics["training_iteration"] for r in ok} == {12}
    cands = [{c.lr for c in s.candidates} for s in sched.stages]
    assert len(cands[0]) == 4 and len(cands[1]) >= 3 and not cands[0] & cands[1]
    assert {r.config["lr"] for r in ok} <= cands[1] and len({r.config["lr"] for r in ok}) == 3
    assert len({round(r.metrics["loss"], 12) for r in ok}) == 3
    # The exposed lineage is the survivor with the lowest mean of its last tau' losses.
    best = min(ok, key=lambda r: r.metrics_dataframe["loss"].iloc[-3:].mean())
    assert winners[1] == best.config["lr"]
    assert sched.schedule == [winners[0]] * 6 + [winners[1]] * 6
    assert any("errored" in e for e in sched.events)


@pytest.mark.slow
@pytest.mark.parametrize("fail_after", [2, 9])  # a candidate window; a later stage
def test_trial_retried_by_ray_keeps_its_job_and_fit_finishes(ray_session, tmp_path, fail_after):
    """FailureConfig(max_failures=1): Ray retries a trial that failed once.

    The scheduler used to mark it dead, so the retried trial paused with no work for ever and
    ``Tuner.fit`` never returned. Ray restarts it from its latest checkpoint, inside its job,
    so it now goes on with that job: no candidate is dropped, every racer finishes.
    """
    sched = _paper_scheduler(lr_bounds=(1e-3, 0.3), tau=10, tau_prime=3, tau_max=10)
    once = tmp_path / "once"
    once.mkdir()
    config = {"lr": 0.01, "iters": 30, "fail_trial": "00001", "fail_after": fail_after}
    grid = _tuner(
        tmp_path, sched, {**config, "fail_once": str(once)}, "retry", max_failures=1
    ).fit()
    assert list(once.iterdir())  # it did fail once
    assert all(r.error is None for r in grid)
    retried = [e for e in sched.events if "Ray retries it from training_iteration" in e]
    assert len(retried) == 1 and not any("errored" in e for e in sched.events)
    assert [len(s.candidates) for s in sched.stages] == [4, 4, 4]  # none dropped
    assert len(sched.schedule) == 30
    assert all(r.metrics["training_iteration"] == 30 for r in grid)  # every racer finished


class _Crash(RuntimeError):
    pass


class _Interrupt(tune.Callback):
    """Stops the driver (as a crash would) once the scheduler is in its second stage."""

    def __init__(self, sched: AutoLRSScheduler, marker: str) -> None:
        self.sched = sched
        self.marker = marker  # Tuner.restore brings the callback back: crash only once

    def on_trial_result(self, iteration, trials, trial, result, **info):
        second = self.sched.stage >= 1 and self.sched.phase in ("search", "race")
        if second and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise _Crash("driver crash")


@pytest.mark.slow
def test_restore_after_interruption_continues_the_search(ray_session, tmp_path):
    def make_sched():
        return AutoLRSScheduler(
            lr_bounds=(1e-3, 0.3),
            variant="paper",
            tau=4,
            tau_prime=2,
            tau_max=4,
            metric="loss",
            mode="min",
        )

    sched = make_sched()
    config = {"lr": 0.01, "iters": 8}
    with pytest.raises((_Crash, tune.TuneError)):
        _tuner(
            tmp_path,
            sched,
            config,
            "restore",
            callbacks=[_Interrupt(sched, str(tmp_path / "crashed"))],
        ).fit()
    assert len(sched.stages) == 2
    path = tmp_path / "restore"
    assert (path / "autolrs_scheduler_state.pt").exists()
    grid = tune.Tuner.restore(
        str(path), tune.with_resources(_train, {"cpu": 0.5}), resume_unfinished=True
    ).fit()
    assert all(r.error is None for r in grid)
    state = torch.load(path / "autolrs_scheduler_state.pt", weights_only=True)
    records = [StageRecord.from_state(r) for r in state["search"]["records"]]
    # The restored scheduler went on from stage 1 instead of starting a new stage 0.
    assert [r.stage for r in records] == [0, 1] and records[1].start == 4
    assert state["phase"] == "race" and records[1].note == "race"  # raced across the restore
    assert records[1].winner_lr == state["segments"][-1][2]
    assert state["segments"][-1][1] == 8
    assert {r.metrics["training_iteration"] for r in grid} == {8}
    # Each trial finished its own stage-1 candidate (no clone), from where it was stopped.
    cands = {c.lr for c in records[1].candidates}
    assert {r.config["lr"] for r in grid} == cands and len(cands) == 4
    # Ray ran its own copy of the scheduler: the README's way to get the run's records back.
    again = make_sched()
    again.restore(str(path / STATE_FILE))
    assert again.stages == records and again.phase == "race"
    assert len(again.schedule) == 8 and again.schedule[4:] == [records[1].winner_lr] * 4
    assert again.stage_trials[1]["winner_trial"] in {r.metrics["trial_id"] for r in grid}
