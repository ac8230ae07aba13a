"""AutoLRSSampler data and behaviour, ForecastPruner decisions, schedule search helpers."""

from __future__ import annotations

import copy
import io
import json
import math
import statistics
import threading
import warnings

import pytest
import torch

optuna = pytest.importorskip("optuna")

from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from autolr import ConfigError, ConfigTypeError  # noqa: E402
from autolr.integrations.optuna import (  # noqa: E402
    AutoLRSSampler,
    ForecastPruner,
    LRSchedule,
    suggest_lr_schedule,
    suggest_lr_scheduler,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = FloatDistribution(1e-3, 1.0, log=True)
N_STEPS = 20


def curve(floor: float, rate: float = 0.3, amp: float = 1.0, n: int = N_STEPS) -> dict[int, float]:
    """Exponentially decaying learning curve reaching ~``floor`` at the last step."""
    return {s: floor + amp * math.exp(-rate * s) for s in range(n)}


def add(study, lr: float, values: dict[int, float], state=TrialState.COMPLETE, value=None):
    if state == TrialState.COMPLETE and value is None:
        value = values[max(values)]
    study.add_trial(
        create_trial(
            params={"lr": lr},
            distributions={"lr": LR},
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values=values,
            state=state,
        )
    )


def running(study, values: dict[int, float]):
    """A RUNNING trial (lr drawn by the study's sampler) that has reported ``values``."""
    trial = study.ask({"lr": LR})
    for s, v in values.items():
        trial.report(v, s)
    return trial


# ------------------------------------------------------------------ GP data from forecasts
def test_pruned_trials_enter_the_gp_as_forecasts_with_larger_noise():
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4)]:
        add(study, lr, curve(floor))
    # pruned after 8 of 20 steps; its curve would end at ~0.1 (better than all complete ones)
    pruned = {s: v for s, v in curve(0.1).items() if s < 8}
    add(study, 0.2, pruned, state=TrialState.PRUNED)

    # uncalibrated: the forecast's noise grows with the extrapolated change
    data = AutoLRSSampler(seed=0, calibrate_forecasts=False).gp_data(study)
    kinds = [r["kind"] for r in data]
    assert kinds == ["complete", "complete", "complete", "forecast"]
    fc = data[-1]
    # extrapolated to step 19: far below the last reported value (0.1 + e^-2.1 ≈ 0.22)
    assert fc["value"] < pruned[7] - 0.05
    assert abs(fc["value"] - 0.1) < 0.05
    assert fc["noise"] > 2 * max(r["noise"] for r in data[:3])
    assert fc["params"] == {"lr": 0.2}
    # calibrated on the complete trials, whose curves this shape forecasts exactly
    cal = AutoLRSSampler(seed=0).gp_data(study)[-1]
    assert abs(cal["value"] - 0.1) < 0.02
    assert cal["noise"] >= max(r["noise"] for r in data[:3])

    # without forecasts the pruned trial is ignored, as GPSampler does
    plain = AutoLRSSampler(seed=0, use_forecasts=False).gp_data(study)
    assert [r["kind"] for r in plain] == ["complete"] * 3


def test_running_trials_are_forecast_or_pending_and_diverged_ones_penalised():
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2)]:
        add(study, lr, curve(floor))
    add(study, 0.9, {0: 1.0, 1: 3.0, 2: 50.0, 3: math.inf}, state=TrialState.PRUNED)
    long_run = running(study, {s: v for s, v in curve(0.3).items() if s < 10})
    short_run = running(study, {0: 1.0, 1: 0.9})
    by_number = {r["number"]: r for r in AutoLRSSampler(seed=0).gp_data(study)}
    assert by_number[2]["kind"] == "failed" and math.isnan(by_number[2]["value"])
    assert by_number[long_run.number]["kind"] == "forecast"
    assert abs(by_number[long_run.number]["value"] - 0.3) < 0.1
    assert by_number[short_run.number]["kind"] == "pending"


def late_drop(floor: float, drop: float = 0.3) -> dict[int, float]:
    """A curve whose loss falls by ``drop`` over the last 5 steps (LR decay at the end)."""
    return {s: v - drop * max(0, s - 14) / 5 for s, v in curve(floor + drop).items()}


def test_calibration_learns_the_late_drop_from_complete_trials():
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4), (0.05, 0.3)]:
        add(study, lr, late_drop(floor))
    pruned = {s: v for s, v in late_drop(0.1).items() if s < 8}
    add(study, 0.2, pruned, state=TrialState.PRUNED)
    plain = AutoLRSSampler(seed=0, calibrate_forecasts=False).gp_data(study)[-1]["value"]
    cal = AutoLRSSampler(seed=0).gp_data(study)[-1]["value"]
    # the truncated curve extrapolates to ~0.4; the complete trials say 0.3 more comes off
    assert abs(plain - 0.4) < 0.05
    assert abs(cal - 0.1) < 0.05


def test_final_step_is_n_steps_when_given():
    study = optuna.create_study()
    add(study, 0.01, curve(0.5))
    add(study, 0.1, curve(0.2))
    add(study, 0.2, {s: v for s, v in curve(0.1, rate=0.05).items() if s < 10}, TrialState.PRUNED)
    near = AutoLRSSampler(seed=0).gp_data(study)[-1]["value"]
    far = AutoLRSSampler(seed=0, n_steps=200).gp_data(study)[-1]["value"]
    assert far < near  # a slowly decaying curve keeps falling after step 19


def test_forecasts_steer_the_search():
    """A pruned trial forecast to be the best pulls the next GP suggestion towards it."""

    def study_with(pruned_state: bool):
        study = optuna.create_study()
        for lr, floor in [(0.002, 0.9), (0.005, 0.8), (0.3, 0.6), (0.6, 0.7), (0.95, 0.9)]:
            add(study, lr, curve(floor))
        if pruned_state:
            add(study, 0.03, {s: v for s, v in curve(0.0).items() if s < 8}, TrialState.PRUNED)
        return study

    def next_lr(study) -> float:
        sampler = AutoLRSSampler(seed=3, n_startup_trials=3)
        study.sampler = sampler
        trial = study.ask({"lr": LR})
        assert sampler.last_info["source"] == "gp"
        return trial.params["lr"]

    with_fc = next_lr(study_with(True))
    without = next_lr(study_with(False))
    assert abs(math.log10(with_fc) - math.log10(0.03)) < abs(math.log10(without) - math.log10(0.03))
    assert abs(math.log10(with_fc) - math.log10(0.03)) < 0.5


# ------------------------------------------------------------------ sampler behaviour
def _quadratic(trial):
    x = trial.suggest_float("x", -2.0, 2.0)
    n = trial.suggest_int("n", 1, 8)
    return (x - 0.7) ** 2 + 0.05 * (n - 5) ** 2


def test_minimize_and_maximize_find_the_optimum():
    study = optuna.create_study(sampler=AutoLRSSampler(seed=0))
    study.optimize(_quadratic, n_trials=16)
    assert study.best_value < 0.05
    neg = optuna.create_study(direction="maximize", sampler=AutoLRSSampler(seed=0))
    neg.optimize(lambda t: -_quadratic(t), n_trials=16)
    assert neg.best_value > -0.05
    assert isinstance(neg.best_params["n"], int)


def test_seeded_runs_are_identical_and_reseed_changes_them():
    def run(sampler):
        study = optuna.create_study(sampler=sampler, pruner=ForecastPruner(n_startup_trials=2))
        study.optimize(_quadratic, n_trials=8)
        return [t.params for t in study.trials]

    assert run(AutoLRSSampler(seed=5)) == run(AutoLRSSampler(seed=5))
    reseeded = AutoLRSSampler(seed=5)
    reseeded.reseed_rng()
    assert run(reseeded) != run(AutoLRSSampler(seed=5))


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=2))
    study.optimize(_quadratic, n_trials=4)
    assert torch.equal(torch.rand(3), expected)


def test_threads_with_pruner_finish_without_errors():
    threads_before = threading.active_count()

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        floor = (math.log10(lr) + 1.0) ** 2
        for step in range(10):
            trial.report(floor + math.exp(-0.5 * step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return floor + math.exp(-4.5)

    study = optuna.create_study(
        sampler=AutoLRSSampler(seed=0, n_startup_trials=3), pruner=ForecastPruner()
    )
    study.optimize(objective, n_trials=12, n_jobs=2, catch=())
    states = {t.state for t in study.trials}
    assert states <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.params["lr"] for t in study.trials}) == 12
    assert threading.active_count() <= threads_before  # optuna's workers are joined
    # Which trials finish first depends on the threads, but a pruned trial must never be one
    # that would have beaten the best complete value (its curve is exact: forecasts are too).
    complete = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(complete) >= 3 and pruned
    for t in pruned:
        true_final = (math.log10(t.params["lr"]) + 1.0) ** 2 + math.exp(-4.5)
        assert true_final > min(complete), t.params
        assert max(t.intermediate_values) < 9


def test_failed_trials_are_penalised():
    study = optuna.create_study()
    add(study, 0.01, curve(0.5))
    add(study, 0.1, curve(0.2))
    study.add_trial(
        create_trial(params={"lr": 0.9}, distributions={"lr": LR}, state=TrialState.FAIL)
    )
    kinds = [r["kind"] for r in AutoLRSSampler(seed=0).gp_data(study)]
    assert kinds == ["complete", "complete", "failed"]
    kinds = [r["kind"] for r in AutoLRSSampler(seed=0, penalize_failed=False).gp_data(study)]
    assert kinds == ["complete", "complete"]


def _gp_inputs(monkeypatch, study, **kwargs) -> list[tuple[float, float | None]]:
    """``(value, noise)`` of every observation the sampler's GP step gives the GP."""
    from autolr.searchers import GPSearcher

    seen: list[tuple[float, float | None]] = []
    observe = GPSearcher.observe

    def spy(self, config, value, *, noise=None):
        seen.append((value, noise))
        return observe(self, config, value, noise=noise)

    monkeypatch.setattr(GPSearcher, "observe", spy)
    sampler = AutoLRSSampler(seed=0, n_startup_trials=2, **kwargs)
    study.sampler = sampler
    study.ask({"lr": LR})
    assert sampler.last_info["source"] == "gp"
    return seen


def test_gp_models_log_values_while_every_value_is_positive(monkeypatch):
    finals = [0.5, 0.2, 0.4, 0.06]
    study = optuna.create_study()
    for lr, floor in zip([0.01, 0.1, 0.5, 0.2], finals):
        add(study, lr, curve(floor))
    values = [study.trials[i].value for i in range(4)]
    logs = [math.log(v) for v in values]

    seen = _gp_inputs(monkeypatch, study)
    assert study.sampler.last_info["log_values"] is True
    assert [v for v, _ in seen] == pytest.approx(logs)
    # complete values are trusted up to min_noise x the spread of what the GP models
    assert [n for _, n in seen] == pytest.approx([0.01 * statistics.stdev(logs)] * 4)

    seen = _gp_inputs(monkeypatch, study, log_values=False, min_noise=0.02)
    assert study.sampler.last_info["log_values"] is False
    assert [v for v, _ in seen] == pytest.approx(values)
    assert [n for _, n in seen] == pytest.approx([0.02 * statistics.stdev(values)] * 4)
    # gp_data stays in the study's units either way
    assert [r["value"] for r in AutoLRSSampler(seed=0).gp_data(study)][:4] == values


def test_log_values_fall_back_to_raw_values_unless_all_are_positive(monkeypatch):
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, -0.3)]:
        add(study, lr, curve(floor))
    values = [t.value for t in study.trials]
    seen = _gp_inputs(monkeypatch, study)
    assert study.sampler.last_info["log_values"] is False
    assert [v for v, _ in seen] == pytest.approx(values)
    # maximising positive values means minimising negative ones: raw values too
    study = optuna.create_study(direction="maximize")
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.3)]:
        add(study, lr, curve(floor))
    values = [t.value for t in study.trials]
    seen = _gp_inputs(monkeypatch, study)
    assert study.sampler.last_info["log_values"] is False
    assert [v for v, _ in seen] == pytest.approx([-v for v in values])


def test_a_zero_or_a_negative_forecast_keeps_raw_values(monkeypatch):
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2)]:
        add(study, lr, curve(floor))
    add(study, 0.5, curve(0.0), value=0.0)  # log(0) is not a number
    values = [t.value for t in study.trials]
    seen = _gp_inputs(monkeypatch, study)
    assert study.sampler.last_info["log_values"] is False
    assert [v for v, _ in seen] == pytest.approx(values)

    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4)]:
        add(study, lr, curve(floor))
    # complete values are positive, but this pruned curve is forecast below zero
    add(study, 0.2, {s: v for s, v in curve(-0.3).items() if s < 8}, state=TrialState.PRUNED)
    fc = AutoLRSSampler(seed=0).gp_data(study)[-1]
    assert fc["kind"] == "forecast" and fc["value"] < 0
    seen = _gp_inputs(monkeypatch, study)
    assert study.sampler.last_info["log_values"] is False
    assert seen[-1][0] == pytest.approx(fc["value"])


def test_noise_floor_of_two_values_and_of_one(monkeypatch):
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2)]:
        add(study, lr, curve(floor))
    logs = [math.log(t.value) for t in study.trials]
    seen = _gp_inputs(monkeypatch, study)
    assert [n for _, n in seen] == pytest.approx([0.01 * statistics.stdev(logs)] * 2)
    # one complete value has no spread: it is trusted up to 1e-6 (not 0, not min_noise)
    study = optuna.create_study()
    add(study, 0.01, curve(0.5))
    add(study, 0.2, {s: v for s, v in curve(0.1).items() if s < 8}, state=TrialState.PRUNED)
    seen = _gp_inputs(monkeypatch, study)
    assert seen[0][1] == 1e-6
    assert seen[1][1] > 1e-3  # the forecast keeps its own (relative) std


def test_forecasts_enter_the_log_model_with_relative_noise(monkeypatch):
    study = optuna.create_study()
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4)]:
        add(study, lr, curve(floor))
    add(study, 0.2, {s: v for s, v in curve(0.1).items() if s < 8}, state=TrialState.PRUNED)
    raw = AutoLRSSampler(seed=0, calibrate_forecasts=False).gp_data(study)[-1]
    assert raw["kind"] == "forecast"
    seen = _gp_inputs(monkeypatch, study, calibrate_forecasts=False)
    value, noise = seen[-1]
    assert value == pytest.approx(math.log(raw["value"]))
    logs = [math.log(t.value) for t in study.trials[:3]]
    # the forecast's std relative to its value (delta method), never below the floor
    assert noise == pytest.approx(max(raw["noise"] / raw["value"], 0.01 * statistics.stdev(logs)))
    assert noise > 0.01 * statistics.stdev(logs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_startup_trials": 0},
        {"n_steps": 0},
        {"min_points": 1},
        {"extrapolation_std": -1.0},
        {"min_noise": math.nan},
        {"seed": -1},
        {"raw_samples": 1, "num_restarts": 4},
    ],
)
def test_sampler_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        AutoLRSSampler(**kwargs)


def test_sampler_rejects_bad_types():
    with pytest.raises(ConfigTypeError):
        AutoLRSSampler(independent_sampler=object())
    with pytest.raises(ConfigTypeError):
        AutoLRSSampler(predictor="exp")
    with pytest.raises(ConfigTypeError):
        AutoLRSSampler(n_steps=2.5)
    with pytest.raises(ConfigTypeError, match="log_values"):
        AutoLRSSampler(log_values="yes")


def test_repr_names_the_modelling_choices():
    assert repr(AutoLRSSampler(seed=3, n_steps=20, log_values=False)) == (
        "AutoLRSSampler(seed=3, n_startup_trials=5, n_steps=20, use_forecasts=True, "
        "log_values=False)"
    )


def test_multi_objective_is_refused_clearly():
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=AutoLRSSampler())
    with pytest.raises(ValueError, match="single-objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=1)


def test_int_and_step_params_stay_on_their_grid():
    study = optuna.create_study(sampler=AutoLRSSampler(seed=1, n_startup_trials=2))

    def objective(trial):
        a = trial.suggest_int("a", 2, 20, step=3)
        b = trial.suggest_float("b", 0.0, 1.0, step=0.25)
        c = trial.suggest_int("c", 1, 64, log=True)
        return (a - 11) ** 2 + b + math.log(c)

    study.optimize(objective, n_trials=8)
    for t in study.trials:
        assert (t.params["a"] - 2) % 3 == 0 and 2 <= t.params["a"] <= 20
        assert t.params["b"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert isinstance(t.params["c"], int) and 1 <= t.params["c"] <= 64


# ------------------------------------------------------------------ pruner
def _pruner_study(direction="minimize", best_floor=0.2):
    study = optuna.create_study(direction=direction)
    sign = 1.0 if direction == "minimize" else -1.0
    for lr, floor in [(0.01, 0.5), (0.1, best_floor), (0.5, 0.4)]:
        values = {s: sign * v for s, v in curve(floor).items()}
        add(study, lr, values)
    return study


def _decisions(pruner, study, values: dict[int, float]) -> list[bool]:
    """Pruning decision after each reported value of a fresh running trial."""
    trial = study.ask({"lr": LR})
    out = []
    for s, v in values.items():
        trial.report(v, s)
        out.append(pruner.prune(study, study._storage.get_trial(trial._trial_id)))
    study.tell(trial, state=TrialState.PRUNED)
    return out


def test_pruner_prunes_a_clearly_worse_curve_after_min_points():
    study = _pruner_study()
    decisions = _decisions(ForecastPruner(), study, curve(1.0))
    assert not any(decisions[:4])  # fewer than min_points values
    assert decisions[4]  # forecast ~1.0 vs best 0.2


def test_pruner_keeps_a_curve_heading_below_the_best():
    study = _pruner_study()
    # starts higher (amp 3) but decays to 0.05 < best 0.2
    assert not any(_decisions(ForecastPruner(), study, curve(0.05, amp=3.0)))


def test_pruner_confidence_and_warmup():
    study = _pruner_study()
    slightly_worse = curve(0.25, rate=0.15)  # ends 0.05 above the best, still far from flat
    # uncalibrated: the uncertainty comes from the extrapolation rule alone
    loose = ForecastPruner(confidence=0.6, extrapolation_std=0.0, calibrate_forecasts=False)
    strict = ForecastPruner(confidence=0.999, calibrate_forecasts=False)
    loose = _decisions(loose, study, slightly_worse)
    strict = _decisions(strict, study, slightly_worse)
    # loose prunes as soon as it may (min_points=5 values); strict waits for more evidence
    assert loose.index(True) == 4
    assert not any(strict[:10]) and any(strict)
    assert sum(strict) < sum(loose)
    late = _decisions(ForecastPruner(n_warmup_steps=12), study, curve(1.0))
    assert not any(late[:12]) and late[12]


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_pruner_compares_with_the_best_complete_final_value(direction):
    # Complete finals 0.5, 0.2, 0.4 and 0.45 (that last trial dipped to 0.1 on its way). Exact
    # curves, no calibration, no extrapolation noise: the forecast is the curve's final value,
    # so a trial is pruned exactly when that is worse than the best final (0.2), not the
    # median/mean of the finals, the worst, or the best intermediate value (0.1).
    sign = 1.0 if direction == "minimize" else -1.0
    study = _pruner_study(direction=direction)
    dip = {s: 0.45 + (0.5 if s < 5 else 0.0) for s in range(N_STEPS)}
    dip[5] = 0.1
    add(study, 0.7, {s: sign * v for s, v in dip.items()})
    pruner = ForecastPruner(extrapolation_std=0.0, calibrate_forecasts=False)

    def decide(floor: float) -> list[bool]:
        return _decisions(pruner, study, {s: sign * v for s, v in curve(floor).items()})

    assert curve(0.3)[N_STEPS - 1] == pytest.approx(0.3033, abs=1e-4)
    assert any(decide(0.3)[5:])  # final 0.303: worse than 0.2, better than the rest
    assert not any(decide(0.15))  # final 0.153: better than 0.2, worse than the dip's 0.1


def test_pruner_needs_startup_trials_and_prunes_divergence():
    study = optuna.create_study()
    add(study, 0.1, curve(0.2))
    pruner = ForecastPruner(n_startup_trials=2)
    assert not any(_decisions(pruner, study, curve(5.0)))
    assert _decisions(pruner, study, {0: 1.0, 1: math.nan}) == [False, True]


def test_pruner_maximize_mirrors_minimize():
    study = _pruner_study(direction="maximize")
    worse = {s: -v for s, v in curve(1.0).items()}
    better = {s: -v for s, v in curve(0.05, amp=3.0).items()}
    assert any(_decisions(ForecastPruner(), study, worse))
    assert not any(_decisions(ForecastPruner(), study, better))


def test_pruner_with_study_optimize_saves_steps():
    steps = {"n": 0}

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        floor = (math.log10(lr) + 1.0) ** 2
        for step in range(N_STEPS):
            steps["n"] += 1
            trial.report(floor + math.exp(-0.3 * step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return floor + math.exp(-0.3 * (N_STEPS - 1))

    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=ForecastPruner()
    )
    study.optimize(objective, n_trials=20)
    n_pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    assert n_pruned >= 5
    assert steps["n"] < 0.8 * 20 * N_STEPS


@pytest.mark.parametrize(
    "kwargs",
    [{"confidence": 0.5}, {"confidence": 1.0}, {"n_startup_trials": 0}, {"min_points": 1}],
)
def test_pruner_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        ForecastPruner(**kwargs)


def test_pruner_that_could_never_prune_is_said():
    # No pruning before n_warmup_steps, none at the final step: at or past n_steps, never.
    with pytest.raises(ConfigError, match="n_warmup_steps=19 is not below n_steps=19"):
        ForecastPruner(n_steps=19, n_warmup_steps=19)
    ForecastPruner(n_steps=19, n_warmup_steps=18)
    # Whole trials with fewer values before their final step than min_points: never pruned.
    study = _pruner_study()  # three complete trials with 19 values before step 19
    never = ForecastPruner(min_points=20)
    with pytest.warns(RuntimeWarning, match=r"min_points=20\): trial 0 reported only 19 values"):
        assert not any(_decisions(never, study, curve(1.0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        _decisions(never, study, curve(1.0))
        assert any(_decisions(ForecastPruner(min_points=19), study, curve(1.0)))


# ------------------------------------------------------------ same-step regression
def _late_winners_study(n_complete: int):
    """Complete trials flat at x until the last step, then ending at 1/x: the higher a
    trial's curve, the better its final (a late anneal), which no curve fit can see."""
    study = optuna.create_study()
    for i, x in enumerate([1.0, 1.1, 1.2, 1.3, 1.4, 1.5][:n_complete]):
        add(study, 0.01 * (i + 1), {**{s: x for s in range(N_STEPS - 1)}, N_STEPS - 1: 1 / x})
    return study


FLAT = {s: 2.0 for s in range(8)}  # worse than every complete trial so far; its final: 0.5


def test_pruner_keeps_a_late_winner_once_the_same_step_regression_applies():
    study = _late_winners_study(6)
    assert not any(_decisions(ForecastPruner(), study, FLAT))  # 0.5 < the best final, 1/1.5
    assert any(_decisions(ForecastPruner(same_step_refs=None), study, FLAT))
    assert any(_decisions(ForecastPruner(same_step_refs=7), study, FLAT))  # 6 of 7 references
    # calibrate_forecasts=False turns it off too: both learn from the complete trials
    assert any(_decisions(ForecastPruner(calibrate_forecasts=False), study, FLAT))
    assert any(_decisions(ForecastPruner(), _late_winners_study(5), FLAT))


def test_sampler_forecasts_pruned_trials_by_the_same_step_regression():
    study = _late_winners_study(6)
    add(study, 0.5, FLAT, state=TrialState.PRUNED)
    fc = AutoLRSSampler(seed=0).gp_data(study)[-1]
    assert fc["kind"] == "forecast" and fc["value"] == pytest.approx(0.5, rel=1e-9)
    old = AutoLRSSampler(seed=0, same_step_refs=None).gp_data(study)[-1]
    assert old["kind"] == "forecast" and old["value"] > 1.0
    assert AutoLRSSampler(seed=0, same_step_refs=7).gp_data(study)[-1] == old


@pytest.mark.parametrize("cls", [AutoLRSSampler, ForecastPruner])
def test_same_step_refs_is_validated(cls):
    with pytest.raises(ConfigError, match="same_step_refs"):
        cls(same_step_refs=2)
    with pytest.raises(ConfigTypeError, match="same_step_refs"):
        cls(same_step_refs="6")
    cls(same_step_refs=None)


# ------------------------------------------------------------------ schedules
def test_schedule_shapes_and_warmup():
    s = LRSchedule(peak_lr=0.1, total_steps=101, warmup_frac=0.1, shape="cosine")
    assert s.warmup_steps == 10
    assert s.lr_at(0) == pytest.approx(0.01)
    assert s.lr_at(9) == pytest.approx(0.1)
    assert s.lr_at(10) == pytest.approx(0.1)
    assert s.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    lin = LRSchedule(peak_lr=1.0, total_steps=11, shape="linear", final_frac=0.1)
    assert [round(lin.lr_at(i), 6) for i in (0, 5, 10)] == [1.0, 0.55, 0.1]
    exp = LRSchedule(peak_lr=1.0, total_steps=11, shape="exponential", final_frac=0.01)
    assert exp.lr_at(5) == pytest.approx(0.1)
    assert LRSchedule(peak_lr=0.3, total_steps=5, shape="constant").lr_at(4) == 0.3


def test_scheduler_drives_the_optimizer_and_keeps_group_ratios():
    w1 = torch.zeros(2, requires_grad=True)
    w2 = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([{"params": [w1], "lr": 1.0}, {"params": [w2], "lr": 0.5}], lr=1.0)
    sched = LRSchedule(peak_lr=0.2, total_steps=4, shape="linear").scheduler(opt)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx([0.2, 0.1])
    assert seen[-1] == pytest.approx([0.0, 0.0], abs=1e-12)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["last_epoch"] == 4


def test_suggest_lr_schedule_registers_params():
    study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=2))
    trial = study.ask()
    s = suggest_lr_schedule(
        trial,
        500,
        peak_lr=(1e-3, 0.3),
        warmup_frac=(0.0, 0.2),
        shape=("cosine", "linear"),
        final_frac=(1e-3, 0.5),
        prefix="enc_",
    )
    assert set(trial.params) == {"enc_peak_lr", "enc_warmup_frac", "enc_shape", "enc_final_frac"}
    assert s.peak_lr == trial.params["enc_peak_lr"]
    assert s.shape == trial.params["enc_shape"]
    fixed = suggest_lr_schedule(study.ask(), 100, peak_lr=0.1, warmup_frac=0.0)
    assert fixed == LRSchedule(peak_lr=0.1, total_steps=100)
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = suggest_lr_scheduler(study.ask(), opt, 100, peak_lr=(0.01, 0.1), warmup_frac=0.0)
    assert 0.01 <= sched.get_last_lr()[0] <= 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"peak_lr": (0.1, 0.01)},
        {"peak_lr": -1.0},
        {"warmup_frac": (0.0, 0.95)},
        {"shape": "step"},
        {"shape": ()},
        {"final_frac": (0.0, 0.5)},
    ],
)
def test_suggest_lr_schedule_rejects_bad_arguments(kwargs):
    with pytest.raises((ConfigError, ConfigTypeError)):
        suggest_lr_schedule(optuna.create_study().ask(), 100, **kwargs)


def test_schedule_rejects_bad_values():
    with pytest.raises(ConfigError):
        LRSchedule(peak_lr=0.0, total_steps=10)
    with pytest.raises(ConfigError):
        LRSchedule(peak_lr=0.1, total_steps=10, shape="exponential", final_frac=0.0)
    with pytest.raises(ConfigTypeError):
        LRSchedule(peak_lr=0.1, total_steps=10.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError):
        LRSchedule(peak_lr=0.1, total_steps=10).scheduler("adam")  # type: ignore[arg-type]


def test_point_taken_by_another_worker_meanwhile_is_not_duplicated(monkeypatch):
    """Two workers whose GP steps overlap can pick the same argmax; the later one notices (its
    fresh read of the storage shows the other's shared params) and takes its Sobol point."""
    import autolr.integrations.optuna as mod

    study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=2))
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4)]:
        add(study, lr, curve(floor))
    other = study.ask({"lr": LR})  # "another worker": running, params shared via system attrs
    assert study.sampler.last_info["source"] == "gp"
    taken = {"lr": other.params["lr"]}
    monkeypatch.setattr(mod.GPSearcher, "suggest", lambda self, n=1, pending=(): [dict(taken)])
    trial = study.ask({"lr": LR})
    assert trial.params["lr"] != taken["lr"]
    assert study.sampler.last_info["source"] == "sobol-dedup"


def test_gp_step_stays_on_cpu_when_another_default_device_is_set():
    # "meta" stands in for an accelerator here: tensors on it hold no data, so a GP step
    # that leaked onto the default device would fail (and fall back to Sobol points).
    study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=2))
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4)]:
        add(study, lr, curve(floor))
    torch.set_default_device("meta")
    try:
        trial = study.ask({"lr": LR})
        assert torch.get_default_device().type == "meta"
    finally:
        torch.set_default_device(None)
    assert study.sampler.last_info["source"] == "gp"
    assert 1e-3 <= trial.params["lr"] <= 1.0


def test_gp_warm_start_comes_from_the_storage_so_a_fresh_sampler_decides_the_same():
    def objective(trial):
        x = trial.suggest_float("x", -1.0, 1.0)
        y = trial.suggest_float("y", 0.0, 2.0)
        return (x - 0.3) ** 2 + (y - 1.2) ** 2

    warm = AutoLRSSampler(seed=3, n_startup_trials=3)
    study = optuna.create_study(sampler=warm)
    study.optimize(objective, n_trials=7)
    assert warm.last_info["source"] == "gp"
    assert warm.last_info["warm_start_from"] == 5  # the previous GP step's fit
    # the fit is stored with the trial (per-process caches hold nothing the decision needs)
    assert study.trials[-1].system_attrs["autolr:gp_hypers:0"].startswith('{"space"')

    fresh = optuna.create_study(sampler=AutoLRSSampler(seed=3, n_startup_trials=3))
    for t in study.trials:
        fresh.add_trial(t)
    space = {"x": FloatDistribution(-1.0, 1.0), "y": FloatDistribution(0.0, 2.0)}
    here, there = study.ask(space), fresh.ask(space)
    assert here.params == there.params
    assert fresh.sampler.last_info["warm_start_from"] == warm.last_info["warm_start_from"] == 6

    # fits stored for another search box do not apply: the GP starts from its defaults
    other = optuna.create_study(sampler=AutoLRSSampler(seed=3, n_startup_trials=3))
    for t in study.trials[:7]:
        t = copy.deepcopy(t)
        for key, text in list(t.system_attrs.items()):
            if key.startswith("autolr:gp_hypers"):
                t.system_attrs[key] = text.replace('["x", -1.0, 1.0', '["x", -2.0, 1.0')
        other.add_trial(t)
    trial = other.ask(space)
    assert other.sampler.last_info["source"] == "gp"
    assert other.sampler.last_info["warm_start_from"] is None
    assert -1.0 <= trial.params["x"] <= 1.0

    # a stored fit this GP does not take (another release's names, or edited) is not used
    # either: sampling goes on from the defaults instead of raising
    odd = optuna.create_study(sampler=AutoLRSSampler(seed=3, n_startup_trials=3))
    for t in study.trials[:7]:
        t = copy.deepcopy(t)
        for key, text in list(t.system_attrs.items()):
            if key.startswith("autolr:gp_hypers"):
                stored = json.loads(text)
                stored["hypers"] = {"renamed.lengthscale": [0.5, 0.5]}
                t.system_attrs[key] = json.dumps(stored)
        odd.add_trial(t)
    trial = odd.ask(space)
    assert odd.sampler.last_info["source"] == "gp"
    assert odd.sampler.last_info["warm_start_from"] is None


def test_twin_claimed_while_this_worker_writes_its_claim_is_not_duplicated(monkeypatch):
    """The race a read-then-write check misses: the other worker claims the same point after
    this worker's GP step but before this worker's claim is visible. Claim-then-read sees it."""
    import autolr.integrations.optuna as mod

    study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=2))
    for lr, floor in [(0.01, 0.5), (0.1, 0.2), (0.5, 0.4)]:
        add(study, lr, curve(floor))
    other = study.ask()  # another worker's trial, not yet sampled: no claim to see yet
    point = {"lr": 0.0314}
    monkeypatch.setattr(mod.GPSearcher, "suggest", lambda self, n=1, pending=(): [dict(point)])
    share = mod.AutoLRSSampler._share

    def racing_share(self, study, trial, params, source, overwrite=False):
        share(self, study, trial, params, source, overwrite)
        if not overwrite:  # the other worker's claim lands right after ours
            frozen = study._storage.get_trial(other._trial_id)
            mod._write_chunked(study, frozen, mod._RELATIVE_PARAMS_KEY, dict(point))

    monkeypatch.setattr(mod.AutoLRSSampler, "_share", racing_share)
    trial = study.ask({"lr": LR})
    assert trial.params["lr"] != point["lr"]
    assert study.sampler.last_info["source"] == "sobol-dedup"
    # The rewritten claim reads back as the new point (no stale chunk of the first one).
    mine = study._storage.get_trial(trial._trial_id)
    assert mod._trial_params(mine)["lr"] == trial.params["lr"]


def test_rewritten_chunked_value_does_not_read_stale_chunks():
    import autolr.integrations.optuna as mod

    study = optuna.create_study()
    trial = study.ask()
    mod._write_chunked(study, trial, "k", "x" * 5000)  # three chunks
    mod._write_chunked(study, trial, "k", "short", terminate=True)
    assert mod._read_chunked(study._storage.get_trial(trial._trial_id), "k") == "short"


# ------------------------------------------------------------- n_steps in the wrong unit
def test_reports_past_n_steps_are_said_once_by_sampler_and_pruner():
    # A common slip: n_steps counted in evaluations while trial.report's step is the
    # optimizer step. Forecasts then aim at the wrong step and nothing is pruned past it.
    study = optuna.create_study()
    long = {s * 10: v for s, v in curve(0.2).items()}  # steps 0, 10, ..., 190
    add(study, 0.1, long)
    sampler, pruner = AutoLRSSampler(seed=0, n_steps=N_STEPS), ForecastPruner(n_steps=N_STEPS)
    with pytest.warns(RuntimeWarning, match=r"AutoLRSSampler\(n_steps=20\): trial 0 reported"):
        sampler.gp_data(study)
    with pytest.warns(RuntimeWarning, match=r"ForecastPruner\(n_steps=20\).*step 30, past"):
        _decisions(pruner, study, {0: 1.0, 10: 0.9, 20: 0.8, 30: 0.7})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once each
        sampler.gp_data(study)
        _decisions(pruner, study, {0: 1.0, 10: 0.9, 20: 0.8, 30: 0.7})
        # n_steps=None takes the final step from the complete trials: nothing to say
        AutoLRSSampler(seed=0).gp_data(study)
        _decisions(ForecastPruner(), study, long)
        # reports up to n_steps are what n_steps means
        short = optuna.create_study()
        add(short, 0.1, curve(0.2))
        AutoLRSSampler(seed=0, n_steps=N_STEPS - 1).gp_data(short)
        _decisions(ForecastPruner(n_steps=N_STEPS - 1), short, curve(0.3))


def test_sampler_survives_objective_values_past_the_float_square_range():
    # Values the GP cannot log (negative) went through (y - mean) ** 2, which raises
    # OverflowError past ~1e154: the first GP step ended study.optimize.
    study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the GP step falls back (said once)
        study.optimize(lambda t: -1e200 * (1 + (t.suggest_float("x", 0, 1) - 0.3) ** 2), n_trials=6)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6


def test_calibration_survives_curves_past_the_float_square_range():
    # Calibration errors (final minus forecast) are raw values: their spread raised
    # OverflowError past ~1e154 and ended study.optimize.
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for s in range(N_STEPS):
            trial.report(1e200 * ((x - 0.3) ** 2 + 1 + 5 * math.exp(-0.3 * s)), s)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1e200 * ((x - 0.3) ** 2 + 0.5)  # not the last report: the forecasts are biased

    sampler = AutoLRSSampler(seed=0, n_steps=N_STEPS - 1, n_startup_trials=3)
    study = optuna.create_study(sampler=sampler, pruner=ForecastPruner(n_steps=N_STEPS - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        study.optimize(objective, n_trials=8)
    assert all(t.state != TrialState.FAIL for t in study.trials) and len(study.trials) == 8
