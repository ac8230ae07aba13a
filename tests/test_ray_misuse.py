"""Misuse of the Ray integration is loud, and a run keeps and prints only what it needs.

Unit tests drive the scheduler with the fake controller of ``test_ray_scheduler``; the
integration tests run ``Tuner.fit`` in the session's Ray instance.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.tune")

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.trainable import Trainable, wrap_function

from autolr import BudgetPolicy, ConfigError
from autolr.integrations.ray import STATE_FILE, AutoLRSScheduler, TuneCheckpointer

from .test_ray_scheduler import (
    FakeController,
    _Scalar,
    _scripted,
    _scripted_step,
    _tuner,
    curve,
    make,
)


def _folders(root) -> set[str]:
    """Checkpoint folders under ``root`` as ``"trial/iteration"``."""
    return {f"{t}/{i}" for t in os.listdir(root) for i in os.listdir(os.path.join(root, t))}


def _fake(tmp_path, n: int = 4, prune: bool = True, **kw):
    """``make()`` with checkpoint folders written under ``tmp_path``."""
    kw.setdefault("lr_bounds", (1e-3, 1.0))
    if "policy" not in kw:
        kw.update(variant="paper", tau=20, tau_prime=5)
    sched = AutoLRSScheduler(metric="loss", mode="min", seed=0, prune_checkpoints=prune, **kw)
    sched.set_search_properties("loss", "min", num_samples=n)
    return sched, FakeController(n, sched, root=str(tmp_path / "ck"))


# ---------------------------------------------------------------------- trainable contract
class _ClassTrainable(Trainable):
    def step(self):
        return {"loss": 1.0}


def test_a_result_without_a_checkpoint_raises_naming_the_fix(monkeypatch):
    sched, tc = make(2)
    tc.start_all()
    t = tc.trials[0]
    bare = {"training_iteration": 1, "loss": 1.0}
    # A function trainable (a stub trial has no class: treated as one).
    with pytest.raises(ConfigError, match=r"trial t0 reported training_iteration=1 without"):
        sched.on_trial_result(tc, t, dict(bare))
    monkeypatch.setattr(t, "get_trainable_cls", lambda: wrap_function(_scripted))
    with pytest.raises(ConfigError, match=r"checkpoint=\.\.\..*TuneCheckpointer"):
        sched.on_trial_result(tc, t, dict(bare))
    assert sched.stages[0].candidates == () and not sched._jobs["t0"].losses  # nothing taken
    # Ray's end-of-function duplicate repeats the last result: not a report.
    assert sched.on_trial_result(tc, t, {**bare, "__duplicate__": True}) == "CONTINUE"
    # A class trainable is saved by Ray whenever it pauses: no checkpoint needed per report.
    # (Iteration 1 again: the refused reports above were not taken.)
    monkeypatch.setattr(t, "get_trainable_cls", lambda: _ClassTrainable)
    assert sched.on_trial_result(tc, t, dict(bare)) == "CONTINUE"
    assert sched.on_trial_result(tc, t, {**bare, "training_iteration": 2}) == "CONTINUE"


def test_num_to_keep_is_refused_when_the_trial_is_added():
    sched = AutoLRSScheduler(metric="loss", variant="paper", tau=20, tau_prime=5)
    t = Trial(
        "__fake",
        config={"lr": 0.1},
        trial_id="x",
        stub=True,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    with pytest.raises(ConfigError, match=r"num_to_keep=2.*num_to_keep=None"):
        sched.on_trial_add(None, t)


def test_max_concurrent_trials_below_the_population_is_refused():
    """max_concurrent_trials < num_samples: paused trials hold the limit, the run waits for ever."""
    from types import SimpleNamespace

    from ray.tune.search import (
        BasicVariantGenerator,
        ConcurrencyLimiter,
        Searcher,
        SearchGenerator,
    )

    class Fixed(Searcher):
        def suggest(self, trial_id):
            return {"lr": 0.1}

    limited = [
        BasicVariantGenerator(max_concurrent=2),  # TuneConfig(max_concurrent_trials=2)
        SearchGenerator(ConcurrencyLimiter(Fixed(), max_concurrent=3)),  # with a search_alg
    ]
    for alg in limited:
        sched = AutoLRSScheduler(metric="loss", mode="min", variant="paper", tau=20, tau_prime=5)
        sched.set_search_properties("loss", "min", num_samples=4)
        t = Trial("__fake", config={"lr": 0.1}, trial_id="x", stub=True)
        with pytest.raises(ConfigError, match=r"max_concurrent_trials=[23]\) is below num_samp"):
            sched.on_trial_add(SimpleNamespace(search_alg=alg), t)
        assert not sched._jobs  # refused before anything was assigned
    # No limit, or one the population fits in: accepted.
    for alg in (BasicVariantGenerator(), BasicVariantGenerator(max_concurrent=4)):
        sched = AutoLRSScheduler(metric="loss", mode="min", variant="paper", tau=20, tau_prime=5)
        sched.set_search_properties("loss", "min", num_samples=4)
        t = Trial("__fake", config={"lr": 0.1}, trial_id="x", stub=True)
        sched.on_trial_add(SimpleNamespace(search_alg=alg), t)
        assert "x" in sched._jobs


def test_no_budget_warns_once_that_the_paper_variant_runs():
    """A trainable that stops itself, or a Stopper object: Ray shows no budget to schedulers."""
    import warnings

    sched = AutoLRSScheduler(metric="loss", mode="min")
    with pytest.warns(RuntimeWarning, match=r"knows no budget.*paper variant.*max_t=") as rec:
        assert sched.set_search_properties("loss", "min", num_samples=4, stop={})
    assert len(rec) == 1 and sched.variant == "paper"
    quiet = [
        (AutoLRSScheduler(metric="loss", mode="min"), {"training_iteration": 40}),
        (AutoLRSScheduler(metric="loss", mode="min", max_t=40), {}),
        (AutoLRSScheduler(metric="loss", mode="min", variant="paper"), {}),
        (
            AutoLRSScheduler(
                metric="loss", mode="min", policy=BudgetPolicy.for_budget(40, parallel=True, k=4)
            ),
            {},
        ),
    ]
    for sched, stop in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert sched.set_search_properties("loss", "min", num_samples=4, stop=stop)


@pytest.mark.parametrize("variant", ["paper", "budget"])
def test_a_population_of_one_warns_that_nothing_is_compared(variant):
    """TuneConfig's num_samples defaults to 1: one candidate per search compares nothing."""
    import warnings

    kw = {"variant": "paper", "tau": 20, "tau_prime": 5} if variant == "paper" else {}
    sched = AutoLRSScheduler(metric="loss", mode="min", lr_bounds=(1e-3, 1.0), **kw)
    sched.set_search_properties("loss", "min", num_samples=1, stop={"training_iteration": 200})
    with pytest.warns(RuntimeWarning, match=r"one candidate \(a population of num_samples=1"):
        FakeController(1, sched)
    assert sched.stages[0].k == 1 and "nothing is compared" in sched.events[0]
    if variant == "paper":  # k= (paper variant) re-uses the one trial: a search, no warning
        sched = AutoLRSScheduler(metric="loss", mode="min", lr_bounds=(1e-3, 1.0), k=3, **kw)
        sched.set_search_properties("loss", "min", num_samples=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            FakeController(1, sched)
        assert sched.stages[0].k == 3


def test_a_retried_trial_keeps_its_job_and_a_resumed_errored_one_rejoins_idle():
    """Ray's two ways back for a failed trial, as the controller orders the calls."""
    sched, tc = make()
    tc.start_all()
    tc.rounds(2, curve(0.05))  # stage 0's candidates are 2 iterations into their windows
    t = tc.trials[1]
    job = sched._jobs["t1"]
    # FailureConfig(max_failures=1): Ray stops the trial (ERROR) before on_trial_error, then
    # re-adds it as PENDING; it restarts from its latest checkpoint (iteration 2).
    t.run_metadata.num_failures, t.max_failures = 1, 1
    t.set_status(Trial.ERROR)
    sched.on_trial_error(tc, t)
    t.set_status(Trial.PENDING)
    sched.on_trial_add(tc, t)
    assert "t1" not in sched._dead and sched._jobs["t1"] is job and not job.finished
    assert sched.events[-1].endswith("Ray retries it from training_iteration 2")
    tc.start(t)
    tc.rounds(3, curve(0.05))  # its window (5 iterations) ends like the others'
    assert len(sched.stages[0].candidates) == 4 and sched.phase == "exploit"
    # No retry left: on_trial_error comes while it still runs; the trial leaves.
    sched, tc = make()
    tc.start_all()
    tc.rounds(2, curve(0.05))
    t = tc.trials[1]
    sched.on_trial_error(tc, t)
    t.set_status(Trial.ERROR)
    assert sched._dead["t1"] == "errored"
    # Tuner.restore(..., resume_errored=True) brings it back: an idle member, not dead.
    t.set_status(Trial.PENDING)
    sched.on_trial_add(tc, t)
    assert "t1" not in sched._dead and sched._jobs["t1"].kind == "wait"
    assert sched.events[-1].endswith("retried by Ray; it waits")


# ---------------------------------------------------------------------- checkpoint retention
def _through_a_barrier(sched, tc):
    """Stage 0 searched and exploited to tau = 20, stage 1's candidates 3 iterations in."""
    loss = curve(0.05)
    tc.start_all()
    tc.rounds(5, loss)
    owner = sched.stage_trials[0]["winner_trial"]
    w = next(t for t in tc.trials if t.trial_id == owner)
    tc.round(loss)
    while w.status == Trial.RUNNING:
        tc.report(w, loss(tc.lr(w), tc.iters[owner]))
    tc.resume_all()
    tc.rounds(3, loss)
    tc.sched.choose_trial_to_run(tc)  # Ray's loop asks after every event
    return owner


def test_only_checkpoints_the_scheduler_can_need_are_kept(tmp_path):
    sched, tc = _fake(tmp_path, prune=False)
    owner = _through_a_barrier(sched, tc)
    everything = _folders(tc.root)
    # Without pruning, every report's checkpoint stays: 4 candidates x 5, the winner's 15
    # more, the 3 stage-1 iterations of every trial (and a losing candidate that trained on
    # until the decision, 1 more).
    assert len(everything) == tc.reports and 4 * 5 + 15 + 4 * 3 <= tc.reports <= 50

    sched, tc = _fake(tmp_path / "pruned")
    assert _through_a_barrier(sched, tc) == owner  # the same decisions
    kept = _folders(tc.root)
    # Each trial's latest, and the stage checkpoint every stage-1 candidate started from
    # (the stage can be searched again from it until the next stage opens).
    assert kept == {f"t{i}/23" for i in range(4)} | {f"{owner}/20"}
    assert sched._stage_ckpt[0] == os.path.join(tc.root, owner, "20")
    # Every candidate diverges: the stage is searched again from that checkpoint, still there.
    with pytest.warns(RuntimeWarning, match="every candidate diverged"):
        for _ in range(3):
            tc.round(lambda lr, it: 1e3)
    tc.resume_all()
    assert sched.stage == 1 and sched.stages[1].start == 20
    assert {t.checkpoint.path for t in tc.trials} == {os.path.join(tc.root, owner, "20")}
    assert os.path.isdir(os.path.join(tc.root, owner, "20"))


def test_a_cooldown_winner_resumes_from_its_kept_window_checkpoint(tmp_path):
    pol = BudgetPolicy.for_budget(200, parallel=True, k=4, k_later=4, searches=2,
                                  cooldown_frac=0.5)  # fmt: skip
    sched, tc = _fake(tmp_path, policy=pol)
    cool = sched.search.plan_now.cooldown
    w, tp = pol.warmup, pol.tau_primes[0]
    assert cool > 0
    tc.start_all()
    tc.rounds(w + tp, curve(0.05))  # every candidate ends its window (cooling down) and pauses
    tc.sched.choose_trial_to_run(tc)
    owner = sched.stage_trials[0]["winner_trial"]
    keep = w + tp - cool  # where the winner's LR was still its own: the lineage resumes here
    assert sched._wave is None and sched._jobs[owner].kind == "exploit"
    lineage = next(t for t in tc.trials if t.trial_id == owner)
    assert lineage.checkpoint.path == os.path.join(tc.root, owner, str(keep))
    # The others wait at their latest; the winner's own latest is superseded by the window's.
    others = {f"{t.trial_id}/{w + tp}" for t in tc.trials if t is not lineage}
    assert _folders(tc.root) == others | {f"{owner}/{keep}"}


# ---------------------------------------------------------------------- state after restore
def test_scheduler_state_round_trips_through_save_and_restore(tmp_path):
    sched, tc = make()
    tc.start_all()
    tc.rounds(5, curve(0.05))
    path = tmp_path / STATE_FILE
    sched.save(str(path))  # what the scheduler writes into the experiment folder
    other = AutoLRSScheduler(
        metric="loss", mode="min", variant="paper", lr_bounds=(1e-3, 1.0), tau=20, tau_prime=5
    )
    other.restore(str(path))
    assert other.stages == sched.stages and other.stage_trials == sched.stage_trials
    assert other.schedule == sched.schedule and other.winner_lr == sched.winner_lr


# ---------------------------------------------------------------------- Tuner.fit
def _no_checkpoint(config):
    model = _Scalar()
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    for _ in range(config["iters"]):
        tune.report({"loss": _scripted_step(model, opt)})


def _causes(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


@pytest.mark.slow
def test_tuner_fit_stops_at_the_first_report_without_a_checkpoint(ray_session, tmp_path):
    sched = AutoLRSScheduler(lr_bounds=(1e-3, 1.0), metric="loss", mode="min")
    config = {"lr": 0.01, "iters": 40}
    with pytest.raises(Exception) as info:
        _tuner(tmp_path, sched, config, "bare", trainable=_no_checkpoint).fit()
    errors = [e for e in _causes(info.value) if isinstance(e, ConfigError)]
    assert errors and "without a checkpoint" in str(errors[0])
    assert "training_iteration=1 " in str(errors[0])  # at the first report, not at a pause


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _counting_notes(config):
    """``_scripted``, counting Ray's per-checkpoint INFO lines in the worker."""
    log = logging.getLogger("ray.train._internal.storage")
    log.setLevel(logging.INFO)
    seen = _Records()
    log.addHandler(seen)
    model = _Scalar()
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    ckpt = TuneCheckpointer(model, opt, config, rng=False)
    while ckpt.iteration < config["iters"]:
        notes = sum("Checkpoint successfully created" in m for m in seen.messages)
        ckpt.report(_scripted_step(model, opt), notes=notes)


@pytest.mark.slow
def test_tuner_fit_is_quiet_and_keeps_few_checkpoints(ray_session, tmp_path, monkeypatch):
    # Ray uploads the trials' logs only now and then; with this period never before the
    # barrier, so each restart from a checkpoint finds no log in storage unless we upload it.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "100000")
    remote = _Records()
    ray_logger = logging.getLogger("ray.tune.logger.logger")
    ray_logger.addHandler(remote)
    try:
        sched = AutoLRSScheduler(
            lr_bounds=(1e-3, 1.0),
            variant="paper",
            tau=4,
            tau_prime=2,
            tau_max=4,
            final="clone",
            metric="loss",
            mode="min",
        )
        config = {"lr": 0.01, "iters": 10}
        grid = _tuner(tmp_path, sched, config, "quiet", trainable=_counting_notes).fit()
    finally:
        ray_logger.removeHandler(remote)
    assert all(r.error is None for r in grid) and len(sched.stages) >= 2
    assert not [m for m in remote.messages if "Remote file not found" in m]
    assert all(r.metrics_dataframe["notes"].max() == 0 for r in grid)
    # 4 trials x 10 reports; kept: each trial's latest, the last stage checkpoint, and at
    # most one registered after the scheduler's last hook.
    folders = [d for _, dirs, _ in os.walk(tmp_path / "quiet") for d in dirs]
    ckpts = [d for d in folders if d.startswith("checkpoint_")]
    assert 4 <= len(ckpts) <= 6
    assert all(os.path.isdir(r.checkpoint.path) for r in grid)
    # The scheduler's state comes back from the experiment folder (as after Tuner.restore).
    again = AutoLRSScheduler(
        lr_bounds=(1e-3, 1.0), variant="paper", tau=4, tau_prime=2, tau_max=4, final="clone"
    )
    again.restore(str(tmp_path / "quiet" / STATE_FILE))
    assert again.stages == sched.stages and again.schedule == sched.schedule
