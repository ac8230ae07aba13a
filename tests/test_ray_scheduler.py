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

from autolr import ConfigError, StateError
from autolr.integrations import _ray_compat as compat
from autolr.integrations.ray import AutoLRSScheduler, TuneCheckpointer

PAUSE, CONTINUE = "PAUSE", "CONTINUE"


# ---------------------------------------------------------------------- fake controller
class FakeController:
    """The controller surface the scheduler uses; pausing is done by hand in the tests."""

    def __init__(self, n: int, sched: AutoLRSScheduler) -> None:
        self.sched = sched
        self.trials = [
            Trial("__fake", config={"lr": 0.01}, trial_id=f"t{i}", stub=True) for i in range(n)
        ]
        self.iters = dict.fromkeys((t.trial_id for t in self.trials), 0)
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
        trial.set_status(Trial.RUNNING)

    def report(self, trial: Trial, loss: float) -> str:
        self.iters[trial.trial_id] += 1
        it = self.iters[trial.trial_id]
        decision = self.sched.on_trial_result(
            self, trial, {"training_iteration": it, "loss": loss, "trial_id": trial.trial_id}
        )
        if decision == PAUSE:  # save (checkpoint of this iteration), then pause
            path = f"/ckpt/{trial.trial_id}/{it}"
            trial.run_metadata.checkpoint_manager.register_checkpoint(
                _TrainingResult(
                    compat.checkpoint_from_path(trial, path), {"training_iteration": it}
                )
            )
            trial.set_status(Trial.PAUSED)
        return decision

    def run_until_pause(self, trial: Trial, loss_fn) -> int:
        """Report losses (``loss_fn(lr, iteration)``) until the scheduler pauses the trial."""
        if trial.status != Trial.RUNNING:
            self.start(trial)
        n = 0
        while True:
            n += 1
            lr = trial.config["lr"]
            if self.report(trial, loss_fn(lr, self.iters[trial.trial_id])) == PAUSE:
                return n
            assert n < 1000

    def resume_all(self) -> list[Trial]:
        """Start every trial the scheduler chooses (as Ray's loop would)."""
        started = []
        while (t := self.sched.choose_trial_to_run(self)) is not None:
            self.start(t)
            started.append(t)
        return started


def curve(best: float):
    """Loss decays fastest for LRs near ``best`` (log distance), never below 0.1."""

    def loss(lr: float, it: int) -> float:
        rate = 0.3 * math.exp(-((math.log10(lr) - math.log10(best)) ** 2))
        return 0.1 + 2.0 * math.exp(-rate * it)

    return loss


def make(n: int = 4, **kw) -> tuple[AutoLRSScheduler, FakeController]:
    kw.setdefault("lr_bounds", (1e-3, 1.0))
    kw.setdefault("tau", 20)
    kw.setdefault("tau_prime", 5)
    sched = AutoLRSScheduler(metric="loss", mode="min", seed=0, **kw)
    sched.set_search_properties("loss", "min", num_samples=n)
    return sched, FakeController(n, sched)


# ---------------------------------------------------------------------- unit tests
def test_first_stage_candidates_are_distinct_and_in_bounds():
    sched, tc = make()
    lrs = [t.config["lr"] for t in tc.trials]
    assert len(set(lrs)) == 4
    assert all(1e-3 <= lr <= 1.0 for lr in lrs)
    assert sched.phase == "search" and sched.stage == 0


def test_search_winner_is_cloned_into_every_trial_then_next_stage():
    sched, tc = make()
    loss = curve(0.05)
    for t in tc.trials:
        assert tc.run_until_pause(t, loss) == 5  # tau' reports, then PAUSE
    started = tc.resume_all()
    assert sched.phase == "exploit" and len(started) == 4
    winner = sched.winner_lr
    cands = sched.stages[0]["candidates"]
    best = min(cands, key=lambda c: c["forecast"])
    assert winner == best["lr"]
    # Closest candidate (log distance) to the optimum of the synthetic curves wins.
    assert winner == min((c["lr"] for c in cands), key=lambda v: abs(math.log10(v / 0.05)))
    owner = sched.stages[0]["winner_trial"]
    for t in tc.trials:
        assert t.config["lr"] == winner
        assert tc.iters[t.trial_id] == 5  # every trial resumes from the winner's iteration
        if t.trial_id != owner:
            assert t.checkpoint.path == f"/ckpt/{owner}/5"
    # Exploitation: tau - tau' more iterations, then a new stage with tau, tau' doubled.
    for t in tc.trials:
        assert tc.run_until_pause(t, loss) == 15
    tc.resume_all()
    assert sched.stage == 1 and sched.phase == "search"
    assert (sched.search.tau, sched.search.tau_prime) == (40, 10)
    lrs = [t.config["lr"] for t in tc.trials]
    assert len(set(lrs)) == 4
    leader = sched.stages[0]["leader"]
    assert all(tc.iters[t.trial_id] == 20 for t in tc.trials)
    assert all(t.checkpoint.path == f"/ckpt/{leader}/20" for t in tc.trials if t.trial_id != leader)
    assert sched.schedule == [winner] * 20


def test_nonfinite_losses_are_penalised_and_never_chosen():
    sched, tc = make()
    loss = curve(0.05)
    bad = tc.trials[0]
    bad_lr = bad.config["lr"]
    tc.start(bad)
    assert tc.report(bad, 1.0) == CONTINUE
    assert tc.report(bad, float("nan")) == PAUSE  # abandoned at once
    for t in tc.trials[1:]:
        tc.run_until_pause(t, loss)
    tc.resume_all()
    res = {c["lr"]: c for c in sched.stages[0]["candidates"]}
    assert res[bad_lr]["penalised"] and res[bad_lr]["forecast"] == math.inf
    assert sum(not c["penalised"] for c in res.values()) == 3
    assert sched.winner_lr != bad_lr
    assert any("non-finite" in e for e in sched.events)


def test_all_penalised_searches_again_lower():
    sched, tc = make()
    first = [t.config["lr"] for t in tc.trials]
    for t in tc.trials:
        tc.start(t)
        assert tc.report(t, float("inf")) == PAUSE
    with pytest.warns(RuntimeWarning, match="penalised"):
        tc.resume_all()
    assert sched.phase == "search" and sched.stage == 0
    lo, hi = sched.search.lr_bounds
    assert hi <= min(first) / 3 * 1.0001
    assert all(lo <= t.config["lr"] <= hi for t in tc.trials)
    # Restarted from the initial state (no stage checkpoint yet).
    assert all(t.latest_checkpoint_result is None for t in tc.trials)


def test_errored_trial_leaves_the_stage_to_the_others():
    sched, tc = make()
    loss = curve(0.05)
    dead = tc.trials[1]
    tc.start(dead)
    tc.report(dead, 1.0)
    sched.on_trial_error(tc, dead)
    dead.set_status(Trial.ERROR)
    for t in tc.trials[2:] + tc.trials[:1]:
        tc.run_until_pause(t, loss)
    tc.resume_all()
    assert sched.phase == "exploit"
    assert len(sched.stages[0]["candidates"]) == 3  # the errored candidate is not scored
    assert dead.config["lr"] not in [c["lr"] for c in sched.stages[0]["candidates"]]
    assert any("errored" in e for e in sched.events)


def test_more_candidates_than_trials_reuses_trials_with_pending_points():
    sched, tc = make(n=2, k=4)
    loss = curve(0.05)
    first = {t.trial_id: t.config["lr"] for t in tc.trials}
    for t in tc.trials:
        tc.run_until_pause(t, loss)
    tc.resume_all()
    assert sched.phase == "search"  # two more candidates, from the initial state
    assert all(t.config["lr"] != first[t.trial_id] for t in tc.trials)
    for t in tc.trials:
        assert tc.run_until_pause(t, loss) == 5
    tc.resume_all()
    assert sched.phase == "exploit"
    assert len(sched.stages[0]["candidates"]) == 4


def test_exploit_false_starts_next_search_from_the_winner():
    sched, tc = make(exploit=False)
    loss = curve(0.05)
    for t in tc.trials:
        tc.run_until_pause(t, loss)
    tc.resume_all()
    assert sched.stage == 1 and sched.phase == "search"
    owner = sched.stages[0]["winner_trial"]
    assert all(t.checkpoint.path == f"/ckpt/{owner}/5" for t in tc.trials)


def test_final_phase_when_no_search_fits():
    sched, tc = make(max_t=30, final="clone")
    loss = curve(0.05)
    for _ in range(2):  # search + exploit of stage 0
        for t in tc.trials:
            tc.run_until_pause(t, loss)
        tc.resume_all()
    assert sched.phase == "final"  # 10 left < 2 * tau'(10)
    assert all(t.config["lr"] == sched.winner_lr for t in tc.trials)
    t = tc.trials[0]
    for _ in range(10):
        assert tc.report(t, 0.5) == CONTINUE
    assert len(sched.schedule) == 30


def _complete(tc: FakeController, trial: Trial, loss: float) -> None:
    """The stopper ends a trial: its last result reaches only on_trial_complete."""
    tc.iters[trial.trial_id] += 1
    trial.set_status(Trial.TERMINATED)
    result = {"training_iteration": tc.iters[trial.trial_id], "loss": loss}
    tc.sched.on_trial_complete(tc, trial, result)


def _to_last_stage(**kw) -> tuple[AutoLRSScheduler, FakeController]:
    """Stage 0 (search + exploit) of a 40-iteration run; stage 1 is the last one."""
    sched, tc = make(max_t=40, double=False, **kw)
    loss = curve(0.05)
    for _ in range(2):
        for t in tc.trials:
            tc.run_until_pause(t, loss)
        tc.resume_all()
    return sched, tc


def test_last_stage_races_each_candidate_to_the_end():
    sched, tc = _to_last_stage()
    assert sched.stage == 1 and sched.phase == "race" and sched.stages[1]["final"] == "race"
    leader = sched.stages[0]["leader"]
    lrs = [t.config["lr"] for t in tc.trials]
    assert len(set(lrs)) == 4  # distinct candidates, all from the stage-0 lineage's end
    assert all(t.checkpoint.path == f"/ckpt/{leader}/20" for t in tc.trials)
    # No barrier: racers continue past tau' (scored there for the record) to max_t.
    finals = {"t0": 0.40, "t1": 0.20, "t2": 0.30, "t3": 0.25}
    for i in range(19):
        for t in tc.trials:
            v = 1.0 if i < 15 else finals[t.trial_id]  # ranked on the last tau' = 5 losses
            assert tc.report(t, v) == CONTINUE
        if i == 4:
            assert len(sched.stages[1]["candidates"]) == 4
    for t in tc.trials:
        _complete(tc, t, finals[t.trial_id])
    # The exposed lineage is the racer with the lowest real final losses.
    best = tc.trials[1]
    assert sched.stages[1]["winner_trial"] == "t1" and sched.winner_lr == best.config["lr"]
    assert sched.stages[1]["final_loss"] == pytest.approx(0.20)
    assert len(sched.schedule) == 40 and sched.schedule[20:] == [best.config["lr"]] * 20
    assert sched.schedule[:20] == [sched.stages[0]["winner_lr"]] * 20
    assert tc.resume_all() == []  # nothing left to schedule


def test_race_select_metric_picks_the_racer_by_another_reported_metric():
    sched, tc = _to_last_stage(select_metric="val")
    vals = {"t0": 0.3, "t1": 0.5, "t2": 0.1, "t3": 0.2}  # t2 best by val, t0 best by loss
    for i in range(19):
        for t in tc.trials:
            it = tc.iters[t.trial_id] + 1
            tc.iters[t.trial_id] = it
            result = {"training_iteration": it, "loss": 0.1 * (1 + int(t.trial_id[1]))}
            if i % 5 == 4:  # validated now and then only
                result["val"] = vals[t.trial_id] if i > 10 else math.nan
            assert sched.on_trial_result(tc, t, result) == CONTINUE
    assert sched.stages[1]["winner_trial"] == "t2" and sched.stages[1]["select_value"] == 0.1
    for t in tc.trials:
        _complete(tc, t, 0.1)
    assert sched.stages[1]["winner_trial"] == "t2"
    assert sched.schedule[20:] == [tc.trials[2].config["lr"]] * 20
    with pytest.raises(TypeError):
        AutoLRSScheduler(select_metric=3)


def test_clone_option_and_k_keep_the_cloning_last_stage():
    for kw in ({"final": "clone"}, {"k": 4}):
        sched, tc = _to_last_stage(**kw)
        assert sched.stage == 1 and sched.phase == "search" and "final" not in sched.stages[1]
        for t in tc.trials:
            assert tc.run_until_pause(t, curve(0.05)) == 5
        tc.resume_all()
        assert sched.phase == "exploit"
        assert {t.config["lr"] for t in tc.trials} == {sched.winner_lr}


def test_stage_search_next_tau_prime_predicts_end_stage():
    from autolr import StageSearch

    for kw in ({"double": True, "tau_max": 8000}, {"double": False}, {"tau_max": 150}):
        s = StageSearch(lr_bounds=(1e-3, 1.0), tau=100, tau_prime=10, **kw)
        for _ in range(3):
            nxt = s.next_tau_prime
            s.end_stage()
            assert s.tau_prime == nxt


def test_first_stage_races_when_it_is_the_only_stage():
    sched, tc = make(max_t=20, double=False)
    assert sched.phase == "race" and len({t.config["lr"] for t in tc.trials}) == 4
    for i in range(20):
        for t in tc.trials:
            assert tc.report(t, 1.0 / (1 + i) + 0.001 * int(t.trial_id[1])) == CONTINUE
    assert sched.stages[0]["winner_trial"] == "t0" and len(sched.schedule) == 20


def test_race_nonfinite_racers_stop_and_all_diverged_searches_again_lower():
    sched, tc = _to_last_stage()
    t0, t1, t2, t3 = tc.trials
    for t in tc.trials:
        tc.report(t, 1.0)
    assert tc.report(t0, math.nan) == "STOP"  # others still race: this run is over
    t0.set_status(Trial.TERMINATED)
    assert sched.winner_lr != t0.config["lr"]
    assert any("non-finite" in e for e in sched.events)
    assert tc.report(t1, math.inf) == "STOP"
    assert tc.report(t2, math.nan) == "STOP"
    t1.set_status(Trial.TERMINATED)
    t2.set_status(Trial.TERMINATED)
    hi_before = sched.search.lr_bounds[1]
    assert tc.report(t3, math.nan) == PAUSE  # the last racer: nothing healthy is left
    with pytest.warns(RuntimeWarning, match="every racer diverged"):
        tc.resume_all()
    assert sched.phase == "race" and len(sched.stages) == 3 and sched.stages[2]["start"] == 20
    assert sched.search.lr_bounds[1] < hi_before
    assert t3.status == Trial.RUNNING and t3.checkpoint.path.endswith("/20")
    assert any("every racer diverged" in e for e in sched.events)


def test_race_state_roundtrip_weights_only(tmp_path):
    sched, tc = _to_last_stage()
    for i in range(8):
        for t in tc.trials:
            tc.report(t, 1.0 - 0.01 * i * int(t.trial_id[1]))
    path = tmp_path / "race.pt"
    sched.save(str(path))
    other = AutoLRSScheduler(metric="loss", mode="min", lr_bounds=(1e-3, 1.0), tau=20, tau_prime=5)
    other.restore(str(path))
    assert other.phase == "race" and other.schedule == sched.schedule
    assert other.stages == sched.stages and other.stages[1]["winner_trial"] == "t3"


def test_state_dict_roundtrip_weights_only(tmp_path):
    sched, tc = make()
    loss = curve(0.05)
    for t in tc.trials:
        tc.run_until_pause(t, loss)
    tc.resume_all()
    path = tmp_path / "s.pt"
    sched.save(str(path))
    other = AutoLRSScheduler(metric="loss", mode="min", lr_bounds=(1e-3, 1.0), tau=20, tau_prime=5)
    other.restore(str(path))
    assert other.state_dict()["jobs"] == sched.state_dict()["jobs"]
    assert other.winner_lr == sched.winner_lr and other.phase == "exploit"
    assert other.schedule == sched.schedule
    with pytest.raises(StateError):
        other.load_state_dict({"version": 99})


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


def test_checkpointer_outside_tune_applies_lr_and_validates():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.2}], lr=0.1
    )
    TuneCheckpointer(model, opt, {"lr": 0.05})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1])
    with pytest.raises(ConfigError):
        TuneCheckpointer(model, opt, {"learning_rate": 0.1})
    with pytest.raises(ConfigError):
        TuneCheckpointer(model, opt, {"lr": float("nan")})


# ---------------------------------------------------------------------- integration (Tuner.fit)
# Each stage barrier pauses every trial; Ray then starts a fresh actor per trial (it does not
# cache actors of paused trials once the search algorithm is done), so a barrier costs about
# one actor start: 3-5 s on an idle 2-core machine, up to ~30 s when it is overloaded.
@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _train(config):
    """Tiny linear regression; trial ``fail_trial`` raises once past ``fail_after``."""
    torch.set_num_threads(1)
    torch.manual_seed(0)  # identical initial weights in every trial
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    ckpt = TuneCheckpointer(model, opt, config)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    name = tune.get_context().get_trial_name()
    while ckpt.iteration < config["iters"]:
        failing = config.get("fail_trial") and name.endswith(config["fail_trial"])
        if failing and ckpt.iteration >= config["fail_after"]:
            raise RuntimeError("injected failure")
        x = torch.randn(16, 4)
        loss = ((model(x) - x @ w) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ckpt.report(loss)


def _tuner(path, sched, config, name, callbacks=()):
    return tune.Tuner(
        tune.with_resources(_train, {"cpu": 0.5}),
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=4, scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(path),
            verbose=0,
            stop={"training_iteration": config["iters"]},
            callbacks=list(callbacks),
        ),
    )


@pytest.mark.slow
def test_tuner_fit_stages_lineage_race_and_erroring_trial(ray_session, tmp_path):
    sched = AutoLRSScheduler(
        lr_bounds=(1e-3, 0.3), tau=6, tau_prime=3, tau_max=6, metric="loss", mode="min"
    )
    config = {"lr": 0.01, "iters": 12, "fail_trial": "00001", "fail_after": 7}
    grid = _tuner(tmp_path, sched, config, "fit").fit()
    errored = [r for r in grid if r.error is not None]
    ok = [r for r in grid if r.error is None]
    assert len(errored) == 1 and len(ok) == 3  # the experiment went on without it
    assert sched.stage == 1 and len(sched.stages) == 2 and sched.phase == "race"
    assert sched.stages[1]["final"] == "race" and "final" not in sched.stages[0]
    winners = [s["winner_lr"] for s in sched.stages]
    # Stage 0 was cloned; the last stage raced: each survivor ran its own candidate to the
    # end, so the population ends with different LRs and weights.
    assert {r.metrics["training_iteration"] for r in ok} == {12}
    cands = [{c["lr"] for c in s["candidates"]} for s in sched.stages]
    assert len(cands[0]) == 4 and len(cands[1]) >= 3 and not cands[0] & cands[1]
    assert {r.config["lr"] for r in ok} <= cands[1] and len({r.config["lr"] for r in ok}) == 3
    assert len({round(r.metrics["loss"], 12) for r in ok}) == 3
    # The exposed lineage is the survivor with the lowest mean of its last tau' losses.
    best = min(ok, key=lambda r: r.metrics_dataframe["loss"].iloc[-3:].mean())
    assert winners[1] == best.config["lr"]
    assert sched.schedule == [winners[0]] * 6 + [winners[1]] * 6
    assert any("errored" in e for e in sched.events)


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
            lr_bounds=(1e-3, 0.3), tau=4, tau_prime=2, tau_max=4, metric="loss", mode="min"
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
    stages_before = len(sched.stages)
    assert stages_before == 2
    path = tmp_path / "restore"
    assert (path / "autolrs_scheduler_state.pt").exists()
    grid = tune.Tuner.restore(
        str(path), tune.with_resources(_train, {"cpu": 0.5}), resume_unfinished=True
    ).fit()
    assert all(r.error is None for r in grid)
    state = torch.load(path / "autolrs_scheduler_state.pt", weights_only=True)
    # The restored scheduler went on from stage 1 instead of starting a new stage 0.
    assert [s["stage"] for s in state["stages"]] == list(range(len(state["stages"])))
    assert len(state["stages"]) == 2 and state["stages"][1]["start"] == 4
    assert state["phase"] == "race"  # the last stage raced across the restore
    assert state["stages"][1]["winner_lr"] == state["segments"][-1][2]
    assert state["segments"][-1][1] == 8
    assert {r.metrics["training_iteration"] for r in grid} == {8}
    # Each trial finished its own stage-1 candidate (no clone), from where it was stopped.
    cands = {c["lr"] for c in state["stages"][1]["candidates"]}
    assert {r.config["lr"] for r in grid} == cands and len(cands) == 4


def test_restored_trials_are_resynced_to_the_saved_decisions():
    sched, tc = make()
    loss = curve(0.05)
    for t in tc.trials:
        tc.run_until_pause(t, loss)
    tc.resume_all()  # exploit jobs: every trial resumes from the winner's checkpoint
    owner = sched.stages[0]["winner_trial"]
    state = sched.state_dict()
    # Ray restored the trials from an experiment snapshot taken before the decision: each has
    # its own candidate checkpoint and its candidate LR.
    restored = [
        Trial("__fake", config={"lr": 0.5}, trial_id=t.trial_id, stub=True) for t in tc.trials
    ]
    for t in restored:
        ck = compat.checkpoint_from_path(t, f"/ckpt/{t.trial_id}/5")
        t.run_metadata.checkpoint_manager.register_checkpoint(
            _TrainingResult(ck, {"training_iteration": 5})
        )
        t.set_status(Trial.PAUSED)
    fresh = AutoLRSScheduler(metric="loss", mode="min", lr_bounds=(1e-3, 1.0), tau=20, tau_prime=5)
    fresh.load_state_dict(state)
    fresh._state_trial = restored[0]  # the state is loaded already (no storage here)
    for t in restored:
        fresh.on_trial_add(tc, t)
    assert all(t.config["lr"] == sched.winner_lr for t in restored)
    assert all(t.checkpoint.path == f"/ckpt/{owner}/5" for t in restored)
    assert fresh.stage == 0 and fresh.phase == "exploit"
