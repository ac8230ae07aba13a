"""AutoLRSSampler: GP Bayesian optimisation that also learns from pruned and running trials."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from autolr._errors import ConfigError, ConfigTypeError
from autolr._stats import std_dev
from autolr._validate import check_float, check_instance, check_int
from autolr.predictors import (
    FinalForecast,
    ForecastCache,
    Predictor,
    ReferenceRun,
    final_step,
    forecast_run,
)
from autolr.searchers import GPSearcher
from autolr.searchers._base import _cpu_default_device
from autolr.searchers._gp import log_scaled

from ._base import _NumericSampler
from ._common import (
    _check_single_objective,
    _derive_seed,
    _from_param,
    _references,
    _sign,
    _to_param,
    optional_same_step_refs,
    optional_steps,
    past_steps_message,
    predictor_or_default,
    seed_or_random,
)
from ._storage import _GP_HYPERS_KEY, _read_chunked, _trial_params, _write_chunked

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["AutoLRSSampler"]

# L-BFGS-B tolerance of the GP hyperparameter fit: botorch's default (ftol ~2e-9) spends most
# iterations on digits that do not move the acquisition argmax (same suggestions on the
# benchmark's timing objectives, ~2x cheaper fit at 200 trials).
_FIT_OPTIONS = {"ftol": 1e-5}

_KINDS = ("complete", "forecast", "failed", "pending")


class _Record(NamedTuple):
    """One row of the GP's data: ``value`` is minimised (direction sign applied)."""

    number: int
    kind: str
    config: dict[str, float]
    value: float
    noise: float | None


def _logged(record: _Record) -> _Record:
    value, noise = log_scaled(record.value, record.noise)
    return record._replace(value=value, noise=noise)


def _model_values(
    records: list[_Record], min_noise: float, log_values: bool
) -> tuple[list[_Record], bool]:
    """The records as the GP sees them: values optionally logged, noise floors applied.

    With ``log_values`` and every complete/forecast value positive, values and forecast stds
    go to the log scale (``searchers._gp.log_scaled``, the scale ``GPSearcher`` models with
    ``log_values=True``).
    Complete values are trusted up to ``min_noise`` x their spread; forecasts never more.
    Returns the records and whether the values were logged.
    """
    ys = [r.value for r in records if r.kind in ("complete", "forecast")]
    logged = log_values and bool(ys) and min(ys) > 0.0
    if logged:
        records = [_logged(r) if r.kind in ("complete", "forecast") else r for r in records]
    ys = [r.value for r in records if r.kind == "complete"]
    if len(ys) > 1:
        mean = sum(ys) / len(ys)
        spread = std_dev(ys, mean, len(ys) - 1)
    else:
        spread = 0.0
    floor = min_noise * spread if spread > 0 else 1e-6
    out = []
    for r in records:
        if r.kind == "complete":
            r = r._replace(noise=floor)
        elif r.kind == "forecast":
            r = r._replace(noise=max(float(r.noise or 0.0), floor))
        out.append(r)
    return out, logged


class AutoLRSSampler(_NumericSampler):
    """GP Bayesian optimisation that also learns from pruned and running trials.

    Numeric parameters (float/int, linear or log, with or without ``step``) found in every
    trial so far (Optuna's intersection search space, pruned trials included) are searched by
    the shared :class:`~autolr.searchers.GPSearcher` (Matérn-5/2 GP, LogEI; qLogEI with the
    running trials as pending points). Categorical parameters and parameters outside that
    space go to ``independent_sampler``.

    The GP's data are derived from the storage on every call (several processes sharing one
    storage work; in-memory caches only speed things up):

    * COMPLETE trials: their value, with noise ``min_noise`` × std of the complete values;
    * PRUNED and RUNNING trials with at least ``min_points`` intermediate values: the
      value forecast at the final step (``n_steps``, or the last step reported by complete
      trials) by ``predictor``. With ``calibrate_forecasts`` and at least 3 complete trials,
      the forecast is corrected by the median error the same forecast (from as many
      values) makes on the complete trials' curves, and its noise combines the predictor's
      std with the RMS of those errors -- this learns, e.g., the late loss drop of a
      decaying LR schedule. Otherwise the noise combines the predictor's std with
      ``extrapolation_std`` × (forecast − last value). Once ``same_step_refs`` complete
      trials reported the trial's last step, the forecast is instead the regression of
      their final values on their values at that step (in logs; noise from the
      regression's residuals, :func:`~autolr.predictors.regress_final`);
    * trials whose last intermediate value is non-finite (diverged) and, with
      ``penalize_failed``, FAIL trials: scored with the searcher's failure penalty (worse
      than every finite value), which steers the search away from diverging LRs;
    * RUNNING trials without a usable forecast: pending points (the GP avoids them).

    With ``log_values`` (default) and every such value positive, the GP models their logarithm.

    The fit of the GP's hyperparameters starts from those fitted for the most recent other
    trial over the same search box; they are stored in that trial's system attrs
    (``autolr:gp_hypers:<k>``), not in memory, so a fresh process decides exactly as a warm one.

    The first ``n_startup_trials`` observations come from a scrambled Sobol sequence indexed
    by the trial number. ``direction="maximize"`` is supported (values are negated
    internally); multi-objective studies raise :class:`~autolr.ConfigError` (a ValueError).

    Seeding rule: every random choice for trial ``i`` derives from ``(seed, i)`` -- its Sobol
    point, its GP step and its independent draws (the first trial's parameters,
    categoricals) -- never from a stream each process starts afresh. Trial numbers are unique
    in a study, so workers sharing a study *and* a seed propose distinct configurations,
    while one worker with a seed replays its study exactly. With several workers, which
    worker runs which trial number depends on timing, so a concurrent study as a whole is
    not reproducible.

    Args:
        seed: Seed of all randomness (``None``: drawn from the OS); see the seeding rule.
        n_startup_trials: Observations (complete trials and usable forecasts) before the GP
            takes over.
        n_steps: The final step a complete trial reports (``trial.report(value, step)``);
            ``None`` infers it as the largest last step of the complete trials.
        predictor: Curve forecaster (default :class:`~autolr.predictors.ExponentialPredictor`).
        min_points: Fewest finite intermediate values a forecast needs (``>= 2``).
        extrapolation_std: Extra forecast noise per unit of extrapolated change (``>= 0``),
            used while no calibration is available: forecasts far from the last value are
            trusted less.
        min_noise: Noise std of complete trials relative to the std of the complete values.
        use_forecasts: ``False`` fits complete (and failed) trials only, like GPSampler.
        calibrate_forecasts: Correct forecasts with their errors on the complete trials
            (``False`` also turns off the same-step regression: both learn from them).
        penalize_failed: Score FAIL trials (with all searched params) as failures.
        independent_sampler: Sampler of categorical/other params. Default: uniform draws
            seeded by ``(seed, trial number, parameter name)``. A sampler given here keeps
            its own seeding: give each worker a different seed (or ``None``), or workers
            may draw the same values from it.
        num_restarts: Restarts of the acquisition optimiser.
        raw_samples: Random samples that pick the restart points.
        log_values: Model the logarithm of the values (forecast stds become relative) while
            every value the GP sees (direction applied, complete trials and forecasts) is
            positive, as losses are; otherwise, and with ``False``, the values themselves.
            A loss of 2.3 beside 0.06 and 0.08 makes the last two look alike to a GP on raw
            values, while the search is decided among the good ones.
        same_step_refs: Complete trials at a step needed before the same-step regression
            replaces the curve forecast there (``>= 3``; ``None``: never). Use the same
            value as the :class:`ForecastPruner` beside it.

    Raises:
        ConfigError, ConfigTypeError: On invalid arguments.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(sampler=AutoLRSSampler(seed=0, n_startup_trials=2))
        >>> study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=4)
        >>> len(study.trials)
        4
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 5,
        n_steps: int | None = None,
        predictor: Predictor | None = None,
        min_points: int = 5,
        extrapolation_std: float = 0.25,
        min_noise: float = 0.01,
        use_forecasts: bool = True,
        calibrate_forecasts: bool = True,
        penalize_failed: bool = True,
        independent_sampler: BaseSampler | None = None,
        num_restarts: int = 4,
        raw_samples: int = 256,
        log_values: bool = True,
        same_step_refs: int | None = 6,
    ) -> None:
        self._seed = seed_or_random(seed)
        self._same_step_refs = optional_same_step_refs(same_step_refs)
        self._n_startup_trials = check_int("n_startup_trials", n_startup_trials, minimum=1)
        self._n_steps = optional_steps(n_steps)
        self._predictor = predictor_or_default(predictor)
        self._min_points = check_int("min_points", min_points, minimum=2)
        self._extrapolation_std = check_float("extrapolation_std", extrapolation_std, minimum=0.0)
        self._min_noise = check_float("min_noise", min_noise, minimum=0.0)
        self._use_forecasts = bool(use_forecasts)
        self._calibrate = bool(calibrate_forecasts)
        self._penalize_failed = bool(penalize_failed)
        self._log_values = check_instance("log_values", log_values, bool)
        self._num_restarts = check_int("num_restarts", num_restarts, minimum=1)
        self._raw_samples = check_int("raw_samples", raw_samples, minimum=self._num_restarts)
        # The GP step needs no lock: GPSearcher takes the searchers' process-wide RNG lock.
        self._init_space(independent_sampler)
        self._cache = ForecastCache()
        self._warned_steps = False  # a complete trial's report past n_steps is said once
        #: Diagnostics of the last ``sample_relative`` call (not state; per process).
        self.last_info: dict[str, Any] = {}

    def __repr__(self) -> str:
        return (
            f"AutoLRSSampler(seed={self._seed}, n_startup_trials={self._n_startup_trials}, "
            f"n_steps={self._n_steps}, use_forecasts={self._use_forecasts}, "
            f"log_values={self._log_values})"
        )

    def _check_steps(self, complete: list[FrozenTrial]) -> None:
        """Warn once if a complete trial reported past ``n_steps`` (forecasts aim there)."""
        assert self._n_steps is not None
        for t in complete:
            if t.intermediate_values and (last := max(t.intermediate_values)) > self._n_steps:
                self._warned_steps = True
                effect = (
                    f"it forecasts pruned and running trials at step {self._n_steps}, not at "
                    "the step whose values it compares them with"
                )
                msg = past_steps_message(type(self).__name__, self._n_steps, last, t.number, effect)
                warnings.warn(msg, RuntimeWarning, stacklevel=4)
                return

    # -------------------------------------------------------------- sampling
    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Samples all numeric parameters of ``trial`` jointly (Sobol start, then GP)."""
        _check_single_objective(study, type(self).__name__)
        if not search_space:
            return {}
        space, extra = self._split(study, trial, search_space)
        if not space:
            return extra
        params = [_to_param(n, d) for n, d in space.items()]
        signature = [[p.name, p.low, p.high, p.log] for p in params]
        records, info = self._gather(study, trial, space, signature)
        records, info["log_values"] = _model_values(records, self._min_noise, self._log_values)
        hypers = info.pop("_hypers", None)
        seed = _derive_seed(self._seed, trial.number)
        with _cpu_default_device():
            if info["n_observations"] < self._n_startup_trials:
                x = self._sobol_point(len(params), trial.number)
                values = {p.name: p.from_unit(float(u)) for p, u in zip(params, x)}
                info["source"] = "sobol"
            else:
                gp = {
                    "seed": seed,
                    "n_initial": 1,
                    "num_restarts": self._num_restarts,
                    "raw_samples": self._raw_samples,
                    "fit_options": _FIT_OPTIONS,
                }
                try:
                    searcher = GPSearcher(params, init_hyperparameters=hypers, **gp)
                except (ConfigError, ConfigTypeError):
                    # A warm start read from the storage that this GP does not take (written
                    # by another release, or edited): start the fit from the defaults.
                    searcher = GPSearcher(params, **gp)
                    info["warm_start_from"] = None
                pending = []
                for r in records:
                    if r.kind == "pending":
                        pending.append(r.config)
                    else:  # failures (nan) get the searcher's penalty
                        searcher.observe(r.config, r.value, noise=r.noise)
                (values,) = searcher.suggest(1, pending=pending)
                info["source"] = "gp" if searcher.n_fallbacks == 0 else "gp-fallback"
                if searcher.fitted_hyperparameters is not None:
                    _write_chunked(
                        study,
                        trial,
                        _GP_HYPERS_KEY,
                        {"space": signature, "hypers": searcher.fitted_hyperparameters},
                    )
        self.last_info = info
        out = {n: _from_param(values[n], d) for n, d in space.items()}
        # Claim the point first, then look for the same point elsewhere. Two workers fitting
        # near-identical data at the same time find the same argmax (often a corner); with
        # write-then-read at least one of them sees the other's claim (a read-then-write check
        # misses the case where both read before either writes). Whoever sees a twin takes
        # this trial's own Sobol point, so no configuration is evaluated twice.
        self._share(study, trial, out, info["source"])
        if info["source"] != "sobol" and self._taken(study, trial, out):
            x = self._sobol_point(len(params), trial.number)
            out = {
                p.name: _from_param(p.from_unit(float(u)), space[p.name]) for p, u in zip(params, x)
            }
            info["source"] = "sobol-dedup"
            self._share(study, trial, out, info["source"], overwrite=True)
        return {**out, **extra}

    @staticmethod
    def _taken(study: Study, trial: FrozenTrial, params: dict[str, Any]) -> bool:
        """Whether another trial (fresh read of the storage) already has exactly ``params``."""
        for t in study.get_trials(deepcopy=False):
            if t.number == trial.number or t.state == TrialState.WAITING:
                continue
            p = _trial_params(t)
            if all(n in p and p[n] == v for n, v in params.items()):
                return True
        return False

    def _sobol_point(self, dim: int, index: int) -> torch.Tensor:
        engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=self._seed % (2**31))
        if index:
            engine.fast_forward(index)
        return engine.draw(1, dtype=torch.float64)[0]

    def gp_data(self, study: Study) -> list[dict[str, Any]]:
        """The data the GP would be fitted to for the study's next trial (diagnostics).

        Returns:
            One dict per observation: ``number`` (trial), ``kind`` (``"complete"``,
            ``"forecast"``, ``"failed"`` or ``"pending"``), ``params``, ``value`` (in the
            study's direction; ``nan`` for failures and pending trials) and ``noise``
            (std; ``None`` for failures and pending trials).

        Example:
            >>> import optuna
            >>> study = optuna.create_study()
            >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
            >>> [r["kind"] for r in AutoLRSSampler(seed=0).gp_data(study)]
            ['complete', 'complete']
        """
        _check_single_objective(study, type(self).__name__)
        space = self.infer_relative_search_space(study, None)  # type: ignore[arg-type]
        if not space:
            return []
        records, _ = self._gather(study, None, dict(sorted(space.items())))
        records, _ = _model_values(records, self._min_noise, log_values=False)
        sign = _sign(study)
        return [
            {
                "number": r.number,
                "kind": r.kind,
                "params": dict(r.config),
                "value": sign * r.value,
                "noise": r.noise,
            }
            for r in records
        ]

    def _gather(
        self,
        study: Study,
        trial: FrozenTrial | None,
        space: dict[str, BaseDistribution],
        signature: list | None = None,
    ) -> tuple[list[_Record], dict[str, Any]]:
        """GP records (values minimised, i.e. multiplied by the direction sign) and counts.

        With ``signature`` (the GP's search box), ``info`` also names the most recent other
        trial whose GP step stored hyperparameters for that box (``warm_start_from``) and
        carries them under ``"_hypers"``.
        """
        sign = _sign(study)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        target = final_step((t.intermediate_values for t in complete), self._n_steps)
        if self._n_steps is not None and not self._warned_steps:
            self._check_steps(complete)
        refs = _references(study, complete) if self._calibrate else None

        records: list[_Record] = []
        for t, cfg in self._configs(trials, trial, space):
            if t.state == TrialState.COMPLETE:
                v = t.value
                if v is None or not math.isfinite(v):
                    records.append(_Record(t.number, "failed", cfg, math.nan, None))
                else:
                    records.append(_Record(t.number, "complete", cfg, sign * float(v), None))
            elif t.state == TrialState.FAIL:
                if self._penalize_failed:
                    records.append(_Record(t.number, "failed", cfg, math.nan, None))
            elif t.state in (TrialState.PRUNED, TrialState.RUNNING):
                fc = self._forecast(study, t, target, refs) if self._use_forecasts else None
                if fc is not None and fc.diverged:
                    records.append(_Record(t.number, "failed", cfg, math.nan, None))
                elif fc is not None:
                    records.append(_Record(t.number, "forecast", cfg, sign * fc.value, fc.std))
                elif t.state == TrialState.RUNNING:
                    records.append(_Record(t.number, "pending", cfg, math.nan, None))
        counts = {k: sum(r.kind == k for r in records) for k in _KINDS}
        info = {
            **{f"n_{k}": v for k, v in counts.items()},
            "n_observations": counts["complete"] + counts["forecast"],
            "final_step": target,
        }
        if signature is not None:
            info["warm_start_from"], info["_hypers"] = None, None
            for t in sorted(trials, key=lambda t: t.number, reverse=True):
                if trial is not None and t.number == trial.number:
                    continue
                stored = _read_chunked(t, _GP_HYPERS_KEY)
                if (
                    isinstance(stored, dict)
                    and stored.get("space") == signature
                    and isinstance(stored.get("hypers"), dict)
                ):
                    info["warm_start_from"], info["_hypers"] = t.number, stored["hypers"]
                    break
        return records, info

    def _forecast(
        self,
        study: Study,
        t: FrozenTrial,
        target: int | None,
        refs: list[ReferenceRun] | None,
    ) -> FinalForecast | None:
        if target is None or not t.intermediate_values:
            return None
        return forecast_run(
            t.intermediate_values,
            target,
            self._predictor,
            extrapolation_std=self._extrapolation_std,
            min_points=self._min_points,
            references=refs,
            cache=self._cache,
            # A finished trial's curve is final: its raw forecast is cached.
            key=(study._study_id, t._trial_id) if t.state.is_finished() else None,
            same_step_refs=self._same_step_refs,
        )
