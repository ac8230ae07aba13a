"""Misuse of the Ray integration, second part: states, arguments, configs and trainables.

Every misuse is refused early with an autolr error; a failed ``load_state_dict`` changes
nothing. Unit tests only (the fake controller of ``test_ray_scheduler``).
"""

from __future__ import annotations

import copy
import math
import os
import shutil

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.tune")

import ray.tune as ray_tune
from ray.tune.experiment import Trial

from autolr import AutoLRS, ConfigError, ConfigTypeError, StageSearch, StateError
from autolr.integrations import _ray_compat as compat
from autolr.integrations.ray import SCHEDULE_KEY, AutoLRSScheduler, TuneCheckpointer, scheduled_lr
from autolr.searchers import GPSearcher, Param

from .test_ray_scheduler import _to_last_stage, curve, make, searched

PAPER = {"variant": "paper", "lr_bounds": (1e-3, 1.0), "tau": 20, "tau_prime": 5}


def _paper(**kw) -> AutoLRSScheduler:
    """A scheduler built with ``searched()``'s arguments (``kw`` changes some)."""
    return AutoLRSScheduler(metric="loss", mode="min", **{**PAPER, **kw})


# ---------------------------------------------------------------------- R1: atomic loads
def test_a_failed_load_changes_nothing():
    sched, _, _ = searched()
    before = copy.deepcopy(sched.state_dict())
    budget = AutoLRSScheduler(metric="loss", max_t=100)
    budget.set_search_properties("loss", "min", num_samples=4)
    with pytest.raises(StateError, match="variant: saved 'budget', given 'paper'"):
        sched.load_state_dict(budget.state_dict())
    assert sched.max_t is None and len(sched.stages) == 1 and sched.winner_lr is not None
    assert repr(sched.state_dict()) == repr(before)
    good = sched.state_dict()
    bad_entries = {
        "phase": "bogus",
        "jobs": [],
        "dead": ["x"],
        "stopping": "t0",
        "stage_ckpt": [1],
        "stage_start": -1,
        "proposed": ["a"],
        "cand_ckpts": [[0.1, "t0"]],
        "wave": {"kind": "nonsense"},
        "started": "yes",
        "warm": [1],
        "recent": [[1]],
        "segments": [[0, 5]],
        "stage_trials": [1],
        "events": [3],
        "recoveries": -2,
        "search": [],
    }
    for key, value in bad_entries.items():
        st = copy.deepcopy(good)
        st[key] = value
        with pytest.raises(StateError, match=key.split("_")[0]):
            sched.load_state_dict(st)
        assert repr(sched.state_dict()) == repr(before), key
    for change in (
        {"kind": "exploded"},
        {"lr": "x"},
        {"start": 1.5},
        {"losses": [[0, "x"]]},
        {"source": ["/p"]},
        {"unknown_field": 1},
        {"finished": "no"},
    ):
        st = copy.deepcopy(good)
        tid = next(iter(st["jobs"]))
        st["jobs"][tid].update(change)
        with pytest.raises(StateError, match="jobs"):
            sched.load_state_dict(st)
    st = copy.deepcopy(good)
    del st["jobs"]
    with pytest.raises(StateError, match="lacks 'jobs'"):
        sched.load_state_dict(st)
    assert repr(sched.state_dict()) == repr(before)
    sched.load_state_dict(good)  # and the good one still loads
    assert repr(sched.state_dict()) == repr(before)


def test_a_failed_load_leaves_a_given_searcher_as_it_was():
    def gp():
        return GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, n_initial=4)

    sched, _, _ = searched(searcher=gp())
    state = sched.state_dict()
    mine = gp()
    other = _paper(searcher=mine, lr_bounds=(1e-2, 0.5))  # another box: refused
    before = (mine.bounds["lr"], repr(mine.state_dict()))
    with pytest.raises(StateError, match="lr_bounds"):
        other.load_state_dict(state)
    assert (mine.bounds["lr"], repr(mine.state_dict())) == before
    st = copy.deepcopy(state)
    st["search"]["searcher"] = {"nonsense": 1}  # the search's own check, after the build
    same = _paper(searcher=mine, lr_bounds=(1e-3, 1.0))
    mine.set_bounds("lr", 1e-3, 0.2)  # e.g. cut by a divergence
    before = (mine.bounds["lr"], repr(mine.state_dict()))
    with pytest.raises(StateError, match="searcher"):
        same.load_state_dict(st)
    assert (mine.bounds["lr"], repr(mine.state_dict())) == before


# ---------------------------------------------------------------------- R2: other arguments
@pytest.mark.parametrize(
    ("kw", "diff"),
    [
        ({"tau": 40, "tau_prime": 10}, "tau: saved 20, given 40"),
        ({"lr_bounds": (1e-5, 1e-2)}, "lr_bounds: saved [0.001, 1.0], given [1e-05, 0.01]"),
        ({"final": "clone"}, "final: saved 'race', given 'clone'"),
        ({"exploit": False}, "exploit: saved True, given False"),
        ({"k": 4}, "k: saved None, given 4"),
        ({"double": False}, "double: saved True, given False"),
        ({"tau_max": 40}, "tau_max: saved 8000, given 40"),
        ({"max_t": 60}, "max_t: saved None, given 60"),
    ],
)
def test_a_state_of_a_scheduler_with_other_arguments_is_refused(kw, diff):
    sched, _, _ = searched()
    state = sched.state_dict()
    other = _paper(**kw)
    before = repr(other.state_dict())
    with pytest.raises(StateError, match="other arguments") as info:
        other.load_state_dict(state)
    assert diff in str(info.value)
    assert repr(other.state_dict()) == before


def test_budget_state_needs_the_same_max_t_and_policy_and_takes_the_states_population(tmp_path):
    b = AutoLRSScheduler(metric="loss", max_t=100)
    b.set_search_properties("loss", "min", num_samples=4)
    path = tmp_path / "b.pt"
    b.save(str(path))
    state = torch.load(path, weights_only=True)  # the config block is plain values
    assert state["config"]["policy"]["max_steps"] == 100
    b2 = AutoLRSScheduler(metric="loss", max_t=200)
    b2.set_search_properties("loss", "min", num_samples=4)
    with pytest.raises(StateError, match="max_t: saved 100, given 200"):
        b2.load_state_dict(state)
    assert b2.max_t == 200 and b2.search.policy.max_steps == 200
    # Tuner.restore tells the scheduler num_samples=1: the state's population counts.
    again = AutoLRSScheduler(metric="loss", max_t=100)
    again.set_search_properties("loss", "min", num_samples=1)
    again.restore(str(path))
    assert again._population == 4 and again.search.policy == b.search.policy
    # A scheduler that knows no budget yet takes the state's (README: restore after a run).
    fresh = AutoLRSScheduler()
    fresh.restore(str(path))
    assert (fresh.variant, fresh.max_t) == ("budget", 100)


def test_states_saved_before_the_config_block_still_load():
    sched, _ = _to_last_stage()
    state = sched.state_dict()
    del state["config"]
    other = _paper(double=False)
    other.load_state_dict(state)
    assert other.stages == sched.stages and other.schedule == sched.schedule
    # ...checked on what they hold: variant and max_t.
    with pytest.raises(StateError, match="max_t: saved 40, given 60"):
        _paper(double=False, max_t=60).load_state_dict(state)


# ---------------------------------------------------------------------- R3: max_t and stop
def test_max_t_and_a_different_stop_are_refused():
    sched = AutoLRSScheduler(lr_bounds=(1e-3, 0.3), max_t=60)
    with pytest.raises(ConfigError, match=r"stops every trial at 30.*max_t=60"):
        sched.set_search_properties("loss", "min", num_samples=2, stop={"training_iteration": 30})
    for bad in ("x", 30.5, 0, None):
        fresh = AutoLRSScheduler(lr_bounds=(1e-3, 0.3))
        with pytest.raises(ConfigError, match="int >= 1"):
            fresh.set_search_properties("loss", "min", stop={"training_iteration": bad})
    same = AutoLRSScheduler(lr_bounds=(1e-3, 0.3), max_t=60)
    assert same.set_search_properties("loss", "min", stop={"training_iteration": 60})
    assert same.max_t == 60
    fresh = AutoLRSScheduler(lr_bounds=(1e-3, 0.3))
    fresh.set_search_properties("loss", "min", num_samples=2, stop={"training_iteration": 30.0})
    assert fresh.max_t == 30 and fresh.variant == "budget"


# ---------------------------------------------------------------------- R4: time_attr
def _with_time(sched, fn):
    """Results carry ``time_attr`` as ``fn(training_iteration)``."""
    orig = sched.on_trial_result

    def on_result(tc, trial, result):
        return orig(tc, trial, {**result, sched.time_attr: fn(result["training_iteration"])})

    sched.on_trial_result = on_result


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda it: it * 0.37, "must count iterations.*reported 0.37"),
        (lambda it: None, "must count iterations.*reported None"),
        (lambda it: it * 64, "grow by one per report.*reported 64 as its first"),
        (lambda it: 2 * it - 1, "grow by one per report.*reported 3 after my_counter=1"),
        (lambda it: 1, "grow by one per report.*reported 1 after my_counter=1"),
    ],
)
def test_a_time_attr_that_does_not_count_iterations_is_refused(fn, match):
    sched, tc = make(time_attr="my_counter")
    _with_time(sched, fn)
    tc.start_all()
    with pytest.raises(ConfigError, match=match):
        for _ in range(3):
            tc.round(curve(0.05))


def test_restarts_from_checkpoints_and_retries_are_not_mistaken_for_bad_counters():
    sched, tc, owner = searched()  # barrier ahead: trials restart from the winner's 20
    w = next(t for t in tc.trials if t.trial_id == owner)
    tc.round(curve(0.05))
    while w.status == Trial.RUNNING:
        tc.report(w, curve(0.05)(tc.lr(w), tc.iters[owner]))
    tc.resume_all()
    loser = next(t for t in tc.trials if t is not w)
    assert tc.iters[loser.trial_id] == 20  # jumped forward from its own 6
    tc.round(curve(0.05))  # 21 after 6: the checkpoint it restarted from
    # Ray retries a failed trial from an older checkpoint: on_trial_error, on_trial_add.
    compat.set_trial_checkpoint(loser, (f"/ckpt/{loser.trial_id}/20", {"training_iteration": 20}))
    sched.on_trial_error(tc, loser)
    loser.set_status(Trial.PENDING)
    sched.on_trial_add(tc, loser)
    tc.start(loser)
    assert tc.report(loser, 1.0) in ("CONTINUE", "PAUSE")  # 21 again: accepted
    # Without a restart the same iteration twice is refused.
    res = {"training_iteration": 21, "loss": 1.0, "should_checkpoint": True}
    with pytest.raises(ConfigError, match="reported 21 after training_iteration=21"):
        sched.on_trial_result(tc, loser, res)


# ---------------------------------------------------------------------- R5, R6: trials
def _trial(tid: str, **config) -> Trial:
    return Trial("__fake", config={"lr": 0.01, **config}, trial_id=tid, stub=True)


class _Opaque:  # compared by identity: Ray copies it into every trial's config
    pass


def test_trials_whose_configs_differ_beyond_the_lr_are_refused():
    sched = _paper()
    sched.set_search_properties("loss", "min", num_samples=4)
    sched.on_trial_add(None, _trial("a", hidden=2, opt={"wd": 0.1, "nest": [1, 2]}))
    with pytest.raises(ConfigError, match=r"trial b's config differs from trial a's.*hidden: 2"):
        sched.on_trial_add(None, _trial("b", hidden=16, opt={"wd": 0.1, "nest": [1, 2]}))
    with pytest.raises(ConfigError, match=r"opt\.nest: \[1, 2\] in the first trial, \[1, 3\]"):
        sched.on_trial_add(None, _trial("c", hidden=2, opt={"wd": 0.1, "nest": [1, 3]}))
    with pytest.raises(ConfigError, match="extra: '<missing>' in the first trial"):
        sched.on_trial_add(None, _trial("d", hidden=2, opt={"wd": 0.1, "nest": [1, 2]}, extra=1))
    assert set(sched._jobs) == {"a"}


def test_same_configs_with_values_that_compare_oddly_are_accepted():
    import numpy as np

    sched = _paper()
    sched.set_search_properties("loss", "min", num_samples=3)
    for i, lr in enumerate((0.01, 0.1, 0.3)):
        t = _trial(
            f"t{i}",
            nan=math.nan,
            arr=np.arange(3),
            ten=torch.ones(2),
            obj=_Opaque(),
            fn=len,
            nested={"x": (1, 2), "y": np.float32("nan")},
        )
        t.config["lr"] = lr
        t.config[SCHEDULE_KEY] = {"points": [[0, lr]]}
        sched.on_trial_add(None, t)
    assert len(sched._jobs) == 3


def test_more_trials_than_num_samples_names_grid_search():
    sched = _paper()
    sched.set_search_properties("loss", "min", num_samples=1)  # grid_search over 4 LRs
    with pytest.warns(RuntimeWarning, match="one candidate"):  # a population of 1
        sched.on_trial_add(None, _trial("a"))
    with pytest.raises(ConfigError, match=r"trial 2 of a population of num_samples=1.*grid_search"):
        sched.on_trial_add(None, _trial("b"))
    assert set(sched._jobs) == {"a"}
    sched.on_trial_add(None, sched._state_trial)  # re-added (a retry): not a new trial


# ---------------------------------------------------------------------- R9, F7: arguments
def test_searcher_and_predictor_of_the_wrong_type_and_non_bool_flags_are_refused():
    with pytest.raises(ConfigTypeError, match="searcher must be"):
        AutoLRSScheduler(searcher="gp")
    with pytest.raises(ConfigTypeError, match="predictor must be"):
        AutoLRSScheduler(predictor="exp", max_t=100)
    with pytest.raises(ConfigTypeError, match="predictor must be"):
        StageSearch(predictor="exp")
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigTypeError, match="searcher must be"):
        AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.1), searcher="gp")
    for kw in ({"exploit": "no"}, {"prune_checkpoints": "false"}, {"double": "yes"}):
        with pytest.raises(ConfigTypeError, match=f"{next(iter(kw))} must be a bool"):
            AutoLRSScheduler(variant="paper", **kw)


# ---------------------------------------------------------------------- TuneCheckpointer
def _model_opt():
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _resume_from(monkeypatch, folder) -> TuneCheckpointer:
    monkeypatch.setattr(ray_tune, "get_checkpoint", lambda: ray_tune.Checkpoint(str(folder)))
    return TuneCheckpointer(*_model_opt(), {"lr": 0.1})


def _write(folder, state) -> None:
    folder.mkdir(exist_ok=True)
    torch.save(state, folder / "autolr_trial.pt")


def _capture_reports(monkeypatch, tmp_path) -> list[dict]:
    """Stand-in for a Tune session's report: keeps the metrics and copies each checkpoint."""
    sent: list[dict] = []

    def report(metrics, checkpoint=None):
        folder = tmp_path / f"ck{len(sent)}"
        shutil.copytree(checkpoint.path, folder)
        sent.append({**metrics, "folder": folder})

    monkeypatch.setattr(ray_tune, "report", report)
    return sent


def test_resuming_from_a_checkpoint_it_did_not_write_raises_state_error(tmp_path, monkeypatch):
    sent = _capture_reports(monkeypatch, tmp_path)
    TuneCheckpointer(*_model_opt(), {"lr": 0.1}).report(1.0)
    good = torch.load(sent[0]["folder"] / "autolr_trial.pt", weights_only=True)
    assert _resume_from(monkeypatch, sent[0]["folder"]).iteration == 1  # its own: resumes
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"model": {}}, foreign / "model.pt")
    with pytest.raises(StateError, match=r"has no autolr_trial\.pt.*model\.pt"):
        _resume_from(monkeypatch, foreign)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "autolr_trial.pt").write_text("x")
    with pytest.raises(StateError, match="does not load"):
        _resume_from(monkeypatch, corrupt)
    cases = {
        "nosnap": ({"version": 1, "iteration": 3}, "holds no training state"),
        "emptysnap": ({**good, "snapshot": {}}, "holds no training state"),
        "iter_x": ({**good, "iteration": "x"}, "iteration='x', not an int >= 0"),
        "iter_neg": ({**good, "iteration": -5}, "iteration=-5, not an int >= 0"),
        "iter_none": ({k: v for k, v in good.items() if k != "iteration"}, "iteration=None"),
    }
    for name, (state, match) in cases.items():
        _write(tmp_path / name, state)
        model, opt = _model_opt()
        w = model.weight.detach().clone()
        monkeypatch.setattr(
            ray_tune, "get_checkpoint", lambda n=name: ray_tune.Checkpoint(str(tmp_path / n))
        )
        with pytest.raises(StateError, match=match):
            TuneCheckpointer(model, opt, {"lr": 0.1})
        assert torch.equal(model.weight, w)  # the model was not touched


def test_report_checks_the_loss_before_changing_anything(tmp_path, monkeypatch):
    sent = _capture_reports(monkeypatch, tmp_path)
    model, opt = _model_opt()
    sched = {"points": [[0, 0.1], [1, 0.05]]}
    ck = TuneCheckpointer(model, opt, {"lr": 0.1, SCHEDULE_KEY: sched})
    for bad in (None, "0.5", [1.0], torch.ones(2), True):
        with pytest.raises(ConfigTypeError, match="loss must be"):
            ck.report(bad)
        assert (ck.iteration, opt.param_groups[0]["lr"], len(sent)) == (0, 0.1, 0)
    ck.report(math.nan)  # a non-finite loss is reported as it is (the scheduler decides)
    ck.report(torch.tensor([0.5]))
    assert ck.iteration == 2 and math.isnan(sent[0]["loss"]) and sent[1]["loss"] == 0.5
    assert opt.param_groups[0]["lr"] == 0.05


def test_checkpointer_arguments_and_hand_written_schedules_are_checked():
    model, opt = _model_opt()
    with pytest.raises(ConfigTypeError, match="config must be"):
        TuneCheckpointer(model, opt, None)
    with pytest.raises(ConfigTypeError, match="extras must be"):
        TuneCheckpointer(model, opt, {"lr": 0.1}, extras=[("scaler", object())])
    for sched, match in [
        ({"points": [[0, -0.1]]}, "not a finite number > 0"),
        ({"points": [[0, 0.1], [5, math.nan]]}, "not a finite number > 0"),
        ({"points": [[0, 0.1]], "warmup": [5, -1.0]}, "'warmup'"),
        ({"points": [["a", 0.1]]}, "first iteration"),
        ({"points": [[0, 0.1]], "decay": [100, 50, "cosine"]}, "'decay'"),
        ({"points": [[0, 0.1]], "window": [0, 5]}, "'window'"),
        ([[0, 0.1]], "not a mapping"),
    ]:
        config = {"lr": 0.1, SCHEDULE_KEY: sched}
        with pytest.raises(ConfigError, match=match):
            TuneCheckpointer(model, opt, config)
        with pytest.raises(ConfigError, match=match):
            scheduled_lr(config, 0)
    for lr in (-0.1, math.nan, "x"):
        with pytest.raises(ConfigError, match="config\\['lr'\\]"):
            scheduled_lr({"lr": lr}, 0)
    with pytest.raises(ConfigError, match="no 'lr' entry"):
        scheduled_lr({}, 0)
    ok = {"points": [[0, 0.1], [5, 0.2]], "warmup": [2, 0.1], "decay": [10, 4, "linear"]}
    assert scheduled_lr({"lr": 0.1, SCHEDULE_KEY: ok}, 9) == pytest.approx(0.2 * 0.25)
