"""ForecastPruner's decision rule against hand computations (issue 18, mutation survivors).

A fixed-forecast predictor makes every number of the rule known: the forecast, its std, the
calibration bias and spread, the noise floor, so each test states the decision by hand.
"""

from __future__ import annotations

import math
import re
from statistics import NormalDist

import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from autolr import ConfigError  # noqa: E402
from autolr.integrations.optuna import ForecastPruner  # noqa: E402
from autolr.predictors import Forecast, Predictor  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = FloatDistribution(1e-3, 1.0, log=True)
Z95 = NormalDist().inv_cdf(0.95)  # the one-sided 95 % quantile, 1.6449


class Fixed(Predictor):
    """Forecasts ``value`` with ``std`` whatever the curve; counts its calls."""

    def __init__(self, value: float, std: float = 0.0) -> None:
        self.value, self.std, self.calls = value, std, 0

    def forecast(self, values, target, *, steps=None) -> Forecast:
        self.calls += 1
        return Forecast(self.value, self.std, False, "", None, len(values))

    def state_dict(self) -> dict:
        return {"value": self.value, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.std = state["value"], state["std"]


def _study(finals=(0.5, 0.2, 0.4), n: int = 20, direction: str = "minimize"):
    """Complete trials whose curves are flat at their final value for steps 0..n-1."""
    study = optuna.create_study(direction=direction)
    for final in finals:
        study.add_trial(
            create_trial(
                params={"lr": 0.1},
                distributions={"lr": LR},
                value=final,
                intermediate_values={s: final for s in range(n)},
            )
        )
    return study


def _decide(pruner: ForecastPruner, study, values: dict[int, float]) -> bool:
    """The decision for a running trial that has reported ``values``."""
    trial = study.ask({"lr": LR})
    for s, v in values.items():
        trial.report(v, s)
    out = pruner.prune(study, study._storage.get_trial(trial._trial_id))
    study.tell(trial, state=TrialState.FAIL)
    return out


FIVE = {s: 1.0 for s in range(5)}  # five values, last 1.0 at step 4


def test_threshold_is_z_times_std_and_ties_are_kept():
    # best 0, forecast std 0.25 (exact in binary): prune iff forecast > z·0.25, not at equality
    study = _study(finals=(0.0,))

    def decide(value: float) -> bool:
        pruner = ForecastPruner(
            n_startup_trials=1,
            extrapolation_std=0.0,
            calibrate_forecasts=False,
            predictor=Fixed(value, 0.25),
        )
        return _decide(pruner, study, FIVE)

    assert round(Z95 * 0.25, 5) == 0.41121
    assert not decide(Z95 * 0.25)
    assert decide(math.nextafter(Z95 * 0.25, 1.0))
    assert not decide(math.nextafter(Z95 * 0.25, 0.0))


@pytest.mark.parametrize(
    ("best", "gap_in_floors", "pruned"),
    [
        (0.0, 1.5, True),
        (0.0, 0.5, False),
        (1.5, 1.2, True),
        (1.5, 0.8, False),
        (4.0, 0.5, False),
        (4.0, 1.5, True),
    ],
)
def test_zero_std_noise_floor_is_1e12_times_max_1_best(best, gap_in_floors, pruned):
    # std 0: the threshold is z · 1e-12 · max(1, |best|) (1e-12 at best 0, 1.5e-12 at 1.5)
    floor = 1e-12 * max(1.0, abs(best))
    pruner = ForecastPruner(
        n_startup_trials=1,
        extrapolation_std=0.0,
        calibrate_forecasts=False,
        predictor=Fixed(best + Z95 * gap_in_floors * floor),
    )
    assert _decide(pruner, _study(finals=(best,)), FIVE) is pruned


def test_default_extrapolation_std_is_one_half():
    # uncalibrated: std = 0.5 · |forecast 1.0 - last 0.2| = 0.4, gap 0.8 > z·0.4 = 0.658;
    # with 1.5 the threshold is z·1.2 = 1.97 and the trial is kept
    last02 = {s: 0.2 for s in range(5)}

    def pruner(**kw) -> ForecastPruner:
        return ForecastPruner(calibrate_forecasts=False, predictor=Fixed(1.0), **kw)

    assert _decide(pruner(), _study(), last02)
    assert _decide(pruner(extrapolation_std=0.5), _study(), last02)
    assert not _decide(pruner(extrapolation_std=1.5), _study(), last02)


def test_calibration_is_on_by_default_and_uses_the_complete_trials():
    # Finals 0.5, 0.2, 0.4, forecast always 1.0: errors -0.5, -0.8, -0.6, bias (median) -0.6,
    # spread sqrt((0.1² + 0.2² + 0²) / 3) = 0.1291. Calibrated: 0.4 ± 0.1291, gap 0.2 < z·0.1291
    # = 0.2124, kept. Uncalibrated (last value 1.0, so no extrapolation term): 1.0 ± 0, pruned.
    spread = math.sqrt((0.1**2 + 0.2**2) / 3)
    assert 0.2 < Z95 * spread < 0.2125
    assert not _decide(ForecastPruner(predictor=Fixed(1.0)), _study(), FIVE)
    assert not _decide(
        ForecastPruner(calibrate_forecasts=True, predictor=Fixed(1.0)), _study(), FIVE
    )
    assert _decide(ForecastPruner(calibrate_forecasts=False, predictor=Fixed(1.0)), _study(), FIVE)


def test_calibration_forecasts_of_complete_trials_are_cached_per_pruner():
    study = _study()
    predictor = Fixed(1.0)
    pruner = ForecastPruner(predictor=predictor)
    trial = study.ask({"lr": LR})
    for s, v in FIVE.items():
        trial.report(v, s)
    frozen = study._storage.get_trial(trial._trial_id)
    pruner.prune(study, frozen)
    assert predictor.calls == 1 + 3  # the running trial, then each complete trial's head
    pruner.prune(study, frozen)
    assert predictor.calls == 1 + 3 + 1  # the complete trials' errors came from the cache


def test_target_is_n_steps_when_given_else_the_complete_trials_last_step():
    at_19 = {s: 1.0 for s in range(20)}  # a bad trial that has reached step 19

    def pruner(**kw) -> ForecastPruner:
        return ForecastPruner(
            extrapolation_std=0.0, calibrate_forecasts=False, predictor=Fixed(1.0), **kw
        )

    # complete trials end at step 19: a trial there has nothing left to save
    assert not _decide(pruner(), _study(), at_19)
    assert not _decide(pruner(), _study(), {**at_19, 25: 1.0})
    # n_steps=29 wins over the complete trials' 19: ten steps are left to save
    assert _decide(pruner(n_steps=29), _study(), at_19)
    assert _decide(pruner(), _study(), {s: 1.0 for s in range(19)})  # step 18 < 19


def test_only_complete_trials_set_the_target_and_the_startup_count():
    study = _study()
    # a pruned trial that ran longer (to step 29) neither moves the target past 19 ...
    study.add_trial(
        create_trial(
            params={"lr": 0.1},
            distributions={"lr": LR},
            intermediate_values={s: 0.1 for s in range(30)},
            state=TrialState.PRUNED,
        )
    )
    pruner = ForecastPruner(extrapolation_std=0.0, calibrate_forecasts=False, predictor=Fixed(1.0))
    assert not _decide(pruner, study, {s: 1.0 for s in range(20)})
    # ... nor calibrates: with it the median error would be -0.6 → -0.55, a pruning 0.45
    assert not _decide(ForecastPruner(predictor=Fixed(1.0)), study, FIVE)
    # complete trials without intermediate values give no target: nothing is pruned
    bare = optuna.create_study()
    for final in (0.1, 0.2, 0.3):
        bare.add_trial(create_trial(params={"lr": 0.1}, distributions={"lr": LR}, value=final))
    assert not _decide(ForecastPruner(predictor=Fixed(1.0)), bare, FIVE)


def test_smallest_accepted_arguments_are_used():
    study = _study(finals=(0.2,))
    # one complete trial is enough with n_startup_trials=1, two values with min_points=2
    pruner = ForecastPruner(
        n_startup_trials=1,
        min_points=2,
        extrapolation_std=0.0,
        calibrate_forecasts=False,
        predictor=Fixed(1.0),
    )
    assert not _decide(pruner, study, {0: 1.0})
    assert _decide(pruner, study, {0: 1.0, 1: 1.0})
    assert not _decide(ForecastPruner(predictor=Fixed(1.0), min_points=2), study, {0: 1.0, 1: 1.0})


def test_a_trial_with_no_values_is_kept():
    pruner = ForecastPruner(n_startup_trials=1, min_points=2, predictor=Fixed(1.0))
    assert _decide(pruner, _study(), {}) is False


def test_multi_objective_message_names_the_pruner():
    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    with pytest.raises(ConfigError) as err:
        ForecastPruner().prune(study, study._storage.get_trial(trial._trial_id))
    assert str(err.value) == (
        "ForecastPruner supports single-objective studies only; got 2 objectives. Use "
        "optuna's GPSampler or TPESampler for multi-objective studies."
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 0.5}, "confidence must be a finite float in (0.5, 1), got 0.5"),
        ({"confidence": 1.0}, "confidence must be a finite float in (0.5, 1), got 1.0"),
        ({"n_startup_trials": 0}, "n_startup_trials must be an int >= 1, got 0"),
        ({"n_warmup_steps": -1}, "n_warmup_steps must be an int >= 0, got -1"),
        ({"min_points": 1}, "min_points must be an int >= 2, got 1"),
        ({"extrapolation_std": -0.1}, "extrapolation_std must be a finite float >= 0, got -0.1"),
        ({"n_steps": 0}, "n_steps must be an int >= 1, got 0"),
    ],
)
def test_argument_messages_are_exact(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ForecastPruner(**kwargs)
