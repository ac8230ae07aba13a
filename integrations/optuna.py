"""Optuna adapters: a forecast-aware GP sampler, a forecast pruner and LR-schedule search.

* :class:`AutoLRSSampler` -- GP Bayesian optimisation (the shared
  :class:`~autolr.searchers.GPSearcher`) over a study's numeric parameters that also learns
  from pruned and running trials: their intermediate values are extrapolated to the final
  step with :class:`~autolr.predictors.ExponentialPredictor` and enter the GP with the
  forecast's (larger) noise.
* :class:`ForecastPruner` -- prunes a trial once its forecast final value is worse than the
  best complete trial with a stated confidence.
* :func:`suggest_lr_schedule` / :func:`suggest_lr_scheduler` -- tune a whole LR schedule
  (peak LR, warm-up fraction, decay shape, final LR) in one trial and get a torch scheduler.

Optuna is imported lazily (``pip install "autolr[optuna]"``); ``import autolr`` never does.

Example:
    >>> import optuna
    >>> from autolr.integrations.optuna import AutoLRSSampler, ForecastPruner
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> def objective(trial):
    ...     lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    ...     loss = 1.0
    ...     for step in range(10):
    ...         loss = loss * (1 - min(lr, 0.5)) + 0.01
    ...         trial.report(loss, step)
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return loss
    >>> study = optuna.create_study(
    ...     sampler=AutoLRSSampler(seed=0, n_startup_trials=3), pruner=ForecastPruner())
    >>> study.optimize(objective, n_trials=5)
    >>> len(study.trials)
    5
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import secrets
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from autolr._errors import ConfigError, ConfigTypeError
from autolr.integrations import require
from autolr.predictors import Predictor
from autolr.searchers import GPSearcher, Param

from ._optuna_forecast import (
    FinalForecast,
    ForecastCache,
    adjust,
    calibrate,
    check_fraction,
    check_n_steps,
    check_predictor,
    final_step,
    forecast_final,
)
from ._optuna_schedule import LRSchedule, suggest_lr_schedule, suggest_lr_scheduler

optuna = require("optuna", "optuna")

from optuna.distributions import (  # noqa: E402
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import BasePruner  # noqa: E402
from optuna.samplers import BaseSampler, RandomSampler  # noqa: E402
from optuna.search_space import IntersectionSearchSpace  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = [
    "AutoLRSSampler",
    "ForecastPruner",
    "LLAMBOSampler",  # noqa: F822 -- lazy, see __getattr__
    "LRSchedule",
    "suggest_lr_schedule",
    "suggest_lr_scheduler",
]

# Relative params of a trial, shared with other processes so that they see it as pending
# before its objective has suggested everything (the same idea as GPSampler's system attrs).
_RELATIVE_PARAMS_KEY = "autolr:relative_params"
_SYSTEM_ATTR_MAX_LENGTH = 2045
#: Trial system attr naming how the relative params were drawn ("sobol", "gp", ...).
_SOURCE_KEY = "autolr:source"
# Fitted GP hyperparameters of a trial's GP step (with the search space they belong to): the
# next GP step starts its fit there (a warm start that halves the fit at 200 trials). Kept in
# the storage, not in memory, so every process makes the same decision from the same storage.
_GP_HYPERS_KEY = "autolr:gp_hypers"
# L-BFGS-B tolerance of the GP hyperparameter fit: botorch's default (ftol ~2e-9) spends most
# iterations on digits that do not move the acquisition argmax (same suggestions on the
# benchmark's timing objectives, ~2x cheaper fit at 200 trials).
_FIT_OPTIONS = {"ftol": 1e-5}
_MULTI_OBJECTIVE_MSG = (
    "{cls} supports single-objective studies only; got {n} objectives. Use optuna's "
    "GPSampler or TPESampler for multi-objective studies."
)


def _derive_seed(seed: int, *parts: int | str) -> int:
    """Deterministic 63-bit seed from ``(seed, *parts)``: blake2b of
    ``"autolr-optuna:<seed>:<part>:..."``.

    Not the searchers' derivation (``autolr.searchers`` hashes ``"<seed>:<counter>"``,
    without this prefix), so the same numbers give different seeds there and here.
    """
    key = ":".join(["autolr-optuna", str(seed), *map(str, parts)])
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _per_trial_draw(
    seed: int, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
) -> Any:
    """A uniform draw of ``name`` for ``trial``, seeded by (seed, trial number, name).

    Not one stream per process: workers started with the same seed would all draw that
    stream's first value for their first trial (trials 0 and 1 were identical). Trial numbers
    are unique in a study, so concurrent workers draw distinct values, and one worker
    replays its seed.
    """
    trial_seed = _derive_seed(seed, "independent", trial.number, name) % 2**32
    return RandomSampler(seed=trial_seed).sample_independent(study, trial, name, dist)


def _cpu_default_device() -> contextlib.AbstractContextManager:
    """Keeps the GP on the CPU when the user made another device the default.

    Entered only when needed: a ``torch.device`` context is a torch-function mode that
    intercepts every torch call (~20 % of a GP step at 200 trials).
    """
    if torch.get_default_device().type == "cpu":
        return contextlib.nullcontext()
    return torch.device("cpu")


def _check_single_objective(study: Study, cls: str) -> None:
    if len(study.directions) != 1:
        raise ConfigError(_MULTI_OBJECTIVE_MSG.format(cls=cls, n=len(study.directions)))


def _sign(study: Study) -> float:
    """+1 for minimisation, -1 for maximisation: ``sign * value`` is always minimised."""
    return 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0


def _check_int(x: Any, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ConfigTypeError(f"{name} must be an int, got {x!r}")
    if x < low:
        raise ConfigError(f"{name} must be >= {low}, got {x!r}")
    return x


_KINDS = ("complete", "forecast", "failed", "pending")


class _Record(NamedTuple):
    """One row of the GP's data: ``value`` is minimised (direction sign applied)."""

    number: int
    kind: str
    config: dict[str, float]
    value: float
    noise: float | None


# ------------------------------------------------------------------ search space <-> Param
def _to_param(name: str, dist: BaseDistribution) -> Param:
    """The GP dimension of a numeric distribution; discrete ones get half a step either side
    so every grid value owns an equal share of the continuous box."""
    low, high = float(dist.low), float(dist.high)
    step = getattr(dist, "step", None)
    if isinstance(dist, IntDistribution):
        half = 0.5 * (1 if dist.log else dist.step)
        return Param(name, low - half, high + half, log=dist.log)
    if step is not None:
        return Param(name, low - 0.5 * step, high + 0.5 * step)
    return Param(name, low, high, log=dist.log)


def _from_param(value: float, dist: BaseDistribution) -> float | int:
    """A GP value mapped onto the distribution (rounded to its grid, clipped, plain type)."""
    if isinstance(dist, IntDistribution):
        k = round((value - dist.low) / dist.step)
        out = dist.low + k * dist.step
        return int(min(max(out, dist.low), dist.high))
    if dist.step is not None:
        k = round((value - dist.low) / dist.step)
        out = dist.low + k * dist.step
        # decimals of the step avoid 0.30000000000000004-style representations
        out = round(min(max(out, dist.low), dist.high), 12)
        return float(out)
    return float(min(max(value, dist.low), dist.high))


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (TypeError, ValueError):
        return False


def _read_chunked(trial: FrozenTrial, key: str) -> Any:
    """JSON value stored by :func:`_write_chunked` under ``key`` (``None`` if absent)."""
    chunks = []
    i = 0
    # An empty chunk ends the value early: a rewrite may be shorter than what it replaced.
    while chunk := trial.system_attrs.get(f"{key}:{i}"):
        chunks.append(chunk)
        i += 1
    return json.loads("".join(chunks)) if chunks else None


def _write_chunked(
    study: Study, trial: FrozenTrial, key: str, value: Any, terminate: bool = False
) -> None:
    """Stores ``value`` as JSON in system attrs of at most 2045 characters each (storage limit).

    ``terminate=True`` (rewriting a key) also writes an empty chunk after the last one, so
    stale chunks of a longer previous value are never read back.
    """
    text = json.dumps(value)
    n = 0
    for i in range(0, len(text), _SYSTEM_ATTR_MAX_LENGTH):
        n = i // _SYSTEM_ATTR_MAX_LENGTH
        study._storage.set_trial_system_attr(
            trial._trial_id, f"{key}:{n}", text[i : i + _SYSTEM_ATTR_MAX_LENGTH]
        )
    if terminate:
        study._storage.set_trial_system_attr(trial._trial_id, f"{key}:{n + 1}", "")


def _trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """Params of a trial, including relative params another process stored for it."""
    if trial.state.is_finished():
        return trial.params
    params = _read_chunked(trial, _RELATIVE_PARAMS_KEY)
    if params is None:
        return trial.params
    params.update(trial.params)
    return params


def _raw_forecast(
    study: Study,
    t: FrozenTrial,
    target: int,
    predictor: Predictor,
    cache: ForecastCache,
    *,
    min_points: int,
) -> FinalForecast | None:
    """The predictor's forecast of ``t`` at ``target`` (cached once ``t`` is finished)."""
    key = None
    if t.state.is_finished():
        iv = t.intermediate_values
        key = ("raw", study._study_id, t._trial_id, len(iv), max(iv), target)
        hit, cached = cache.get(key)
        if hit:
            return cached
    fc = forecast_final(
        t.intermediate_values, target, predictor, extrapolation_std=0.0, min_points=min_points
    )
    if key is not None:
        cache.put(key, fc)
    return fc


# ------------------------------------------------------------------------------- sampler
class AutoLRSSampler(BaseSampler):
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
      ``extrapolation_std`` × (forecast − last value);
    * trials whose last intermediate value is non-finite (diverged) and, with
      ``penalize_failed``, FAIL trials: scored with the searcher's failure penalty (worse
      than every finite value), which steers the search away from diverging LRs;
    * RUNNING trials without a usable forecast: pending points (the GP avoids them).

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
        calibrate_forecasts: Correct forecasts with their errors on the complete trials.
        penalize_failed: Score FAIL trials (with all searched params) as failures.
        independent_sampler: Sampler of categorical/other params. Default: uniform draws
            seeded by ``(seed, trial number, parameter name)``. A sampler given here keeps
            its own seeding: give each worker a different seed (or ``None``), or workers
            may draw the same values from it.
        num_restarts: Restarts of the acquisition optimiser.
        raw_samples: Random samples that pick the restart points.

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
    ) -> None:
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63
        ):
            raise ConfigError(f"seed must be None or an int in [0, 2**63), got {seed!r}")
        self._n_startup_trials = _check_int(n_startup_trials, "n_startup_trials", 1)
        self._n_steps = check_n_steps(n_steps)
        self._predictor = check_predictor(predictor)
        self._min_points = _check_int(min_points, "min_points", 2)
        self._extrapolation_std = check_fraction(extrapolation_std, "extrapolation_std")
        self._min_noise = check_fraction(min_noise, "min_noise")
        self._use_forecasts = bool(use_forecasts)
        self._calibrate = bool(calibrate_forecasts)
        self._penalize_failed = bool(penalize_failed)
        self._num_restarts = _check_int(num_restarts, "num_restarts", 1)
        self._raw_samples = _check_int(raw_samples, "raw_samples", self._num_restarts)
        if independent_sampler is not None and not isinstance(independent_sampler, BaseSampler):
            raise ConfigTypeError(
                "independent_sampler must be an optuna BaseSampler, got "
                f"{type(independent_sampler).__name__}"
            )
        self._seed = secrets.randbits(63) if seed is None else int(seed)
        # None: the default, per-trial random draws of _sample_independent.
        self._independent_sampler = independent_sampler
        self._search_space = IntersectionSearchSpace(include_pruned=True)
        # IntersectionSearchSpace caches a cursor into the study's trials and is not
        # thread-safe (n_jobs > 1). The GP step needs no lock here: GPSearcher takes the
        # searchers' process-wide RNG lock itself.
        self._space_lock = threading.Lock()
        self._cache = ForecastCache()
        #: Diagnostics of the last ``sample_relative`` call (not state; per process).
        self.last_info: dict[str, Any] = {}

    def __repr__(self) -> str:
        return (
            f"AutoLRSSampler(seed={self._seed}, n_startup_trials={self._n_startup_trials}, "
            f"n_steps={self._n_steps}, use_forecasts={self._use_forecasts})"
        )

    # ---------------------------------------------------------------- seeding
    def reseed_rng(self) -> None:
        """Draws a fresh seed (Optuna calls this per worker thread when ``n_jobs > 1``)."""
        self._seed = secrets.randbits(63)
        if self._independent_sampler is not None:
            self._independent_sampler.reseed_rng()

    # ----------------------------------------------------------- search space
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Numeric, non-single distributions common to all trials so far."""
        _check_single_objective(study, type(self).__name__)
        with self._space_lock:
            space = self._search_space.calculate(study)
        return {
            name: dist
            for name, dist in space.items()
            if isinstance(dist, (FloatDistribution, IntDistribution)) and not dist.single()
        }

    # -------------------------------------------------------------- sampling
    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Samples all numeric parameters of ``trial`` jointly (Sobol start, then GP)."""
        _check_single_objective(study, type(self).__name__)
        if not search_space:
            return {}
        # infer_relative_search_space only returns numeric distributions, but callers may
        # pass any space: the others are drawn by the independent sampler.
        space = {
            n: search_space[n]
            for n in sorted(search_space)
            if isinstance(search_space[n], (FloatDistribution, IntDistribution))
            and not search_space[n].single()
        }
        extra = {
            n: self._sample_independent(study, trial, n, d)
            for n, d in search_space.items()
            if n not in space
        }
        if not space:
            return extra
        params = [_to_param(n, d) for n, d in space.items()]
        signature = [[p.name, p.low, p.high, p.log] for p in params]
        records, info = self._gather(study, trial, space, signature)
        hypers = info.pop("_hypers", None)
        seed = _derive_seed(self._seed, trial.number)
        with _cpu_default_device():
            if info["n_observations"] < self._n_startup_trials:
                x = self._sobol_point(len(params), trial.number)
                values = {p.name: p.from_unit(float(u)) for p, u in zip(params, x)}
                info["source"] = "sobol"
            else:
                searcher = GPSearcher(
                    params,
                    seed=seed,
                    n_initial=1,
                    num_restarts=self._num_restarts,
                    raw_samples=self._raw_samples,
                    fit_options=_FIT_OPTIONS,
                    init_hyperparameters=hypers,
                )
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

    def _share(
        self,
        study: Study,
        trial: FrozenTrial,
        params: dict[str, Any],
        source: str,
        overwrite: bool = False,
    ) -> None:
        """Stores the relative params so other workers see this trial as pending at once,
        and where they came from (``"sobol"``, ``"gp"``, ``"gp-fallback"``, ``"sobol-dedup"``)."""
        study._storage.set_trial_system_attr(trial._trial_id, _SOURCE_KEY, source)
        _write_chunked(study, trial, _RELATIVE_PARAMS_KEY, params, terminate=overwrite)

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
        target = final_step(complete, self._n_steps)

        def config_of(t: FrozenTrial) -> dict[str, float] | None:
            p = _trial_params(t)
            if not all(n in p and _contains(d, p[n]) for n, d in space.items()):
                return None
            return {n: float(p[n]) for n in space}

        records: list[_Record] = []
        for t in trials:
            if trial is not None and t.number == trial.number:
                continue
            cfg = config_of(t)
            if cfg is None:
                continue
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
                fc = self._forecast(study, t, target, complete) if self._use_forecasts else None
                if fc is not None and fc.diverged:
                    records.append(_Record(t.number, "failed", cfg, math.nan, None))
                elif fc is not None:
                    records.append(_Record(t.number, "forecast", cfg, sign * fc.value, fc.std))
                elif t.state == TrialState.RUNNING:
                    records.append(_Record(t.number, "pending", cfg, math.nan, None))
        ys = [r.value for r in records if r.kind == "complete"]
        if len(ys) > 1:
            mean = sum(ys) / len(ys)
            spread = math.sqrt(sum((y - mean) ** 2 for y in ys) / (len(ys) - 1))
        else:
            spread = 0.0
        # Complete values are trusted up to min_noise x their spread; forecasts never more.
        floor = self._min_noise * spread if spread > 0 else 1e-6
        for i, r in enumerate(records):
            if r.kind == "complete":
                records[i] = r._replace(noise=floor)
            elif r.kind == "forecast":
                records[i] = r._replace(noise=max(float(r.noise or 0.0), floor))
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
        self, study: Study, t: FrozenTrial, target: int | None, complete: list[FrozenTrial]
    ) -> FinalForecast | None:
        if target is None or not t.intermediate_values:
            return None
        raw = _raw_forecast(
            study, t, target, self._predictor, self._cache, min_points=self._min_points
        )
        if raw is None or raw.diverged:
            return raw
        cal = None
        if self._calibrate:
            cal = calibrate(
                study._study_id,
                complete,
                len(t.intermediate_values),
                target,
                self._predictor,
                self._cache,
                min_points=self._min_points,
            )
        return adjust(raw, cal, self._extrapolation_std)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """A random draw for a parameter outside the GP's space (categoricals, dynamic
        spaces, every parameter of the first trials); see ``independent_sampler``."""
        _check_single_objective(study, type(self).__name__)
        return self._sample_independent(study, trial, param_name, param_distribution)

    def _sample_independent(
        self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        if self._independent_sampler is not None:
            return self._independent_sampler.sample_independent(study, trial, name, dist)
        return _per_trial_draw(self._seed, study, trial, name, dist)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self._independent_sampler is not None:
            self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self._independent_sampler is not None:
            self._independent_sampler.after_trial(study, trial, state, values)


# -------------------------------------------------------------------------------- pruner
class ForecastPruner(BasePruner):
    """Prunes a trial whose forecast final value is worse than the best with confidence.

    At each ``should_prune()`` the trial's intermediate values are extrapolated to the final
    step (``n_steps``, or the last step reported by complete trials) with ``predictor``.
    The trial is pruned when ``P(final better than best complete value) < 1 - confidence``
    under a normal forecast. With ``calibrate_forecasts`` and at least 3 complete trials
    that reached the final step, the forecast is shifted by the median error the same
    forecast (from as many values) makes on those trials and its std combines the
    predictor's std with the RMS of the errors; otherwise the std combines the predictor's
    std with ``extrapolation_std`` × (forecast − last value). A trial whose last reported value is
    NaN/inf (diverged) is pruned at once. Nothing is pruned before ``n_startup_trials``
    trials are complete, before step ``n_warmup_steps``, or with fewer than ``min_points``
    finite values.

    Args:
        n_steps: Final step of a complete trial; ``None`` infers it from complete trials.
        confidence: Required confidence that the trial ends worse than the best, in
            ``(0.5, 1)``.
        n_startup_trials: Complete trials needed before anything is pruned (``>= 1``).
        n_warmup_steps: No pruning before this step.
        min_points: Fewest finite intermediate values a decision needs (``>= 2``).
        extrapolation_std: Forecast noise per unit of extrapolated change (``>= 0``) while
            uncalibrated; larger values prune later.
        calibrate_forecasts: Correct forecasts with their errors on the complete trials.
        predictor: Curve forecaster (default :class:`~autolr.predictors.ExponentialPredictor`).

    Raises:
        ConfigError, ConfigTypeError: On invalid arguments.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> pruner = ForecastPruner(n_steps=9, n_startup_trials=1, confidence=0.9)
        >>> study = optuna.create_study(pruner=pruner)
        >>> def objective(trial):
        ...     rate = trial.suggest_float("rate", 0.0, 1.0)
        ...     for step in range(10):
        ...         trial.report(1.0 + (1 - rate) ** (step + 1), step)
        ...         if trial.should_prune():
        ...             raise optuna.TrialPruned()
        ...     return 1.0 + (1 - rate) ** 10
        >>> study.enqueue_trial({"rate": 0.9}); study.enqueue_trial({"rate": 0.01})
        >>> study.optimize(objective, n_trials=2)
        >>> study.trials[1].state.name
        'PRUNED'
    """

    def __init__(
        self,
        *,
        n_steps: int | None = None,
        confidence: float = 0.95,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 0,
        min_points: int = 5,
        extrapolation_std: float = 0.5,
        calibrate_forecasts: bool = True,
        predictor: Predictor | None = None,
    ) -> None:
        self._n_steps = check_n_steps(n_steps)
        self._calibrate = bool(calibrate_forecasts)
        self._cache = ForecastCache()
        conf = check_fraction(confidence, "confidence")
        if not 0.5 < conf < 1.0:
            raise ConfigError(f"confidence must be in (0.5, 1), got {confidence!r}")
        self._confidence = conf
        self._z = _normal_quantile(conf)
        self._n_startup_trials = _check_int(n_startup_trials, "n_startup_trials", 1)
        self._n_warmup_steps = _check_int(n_warmup_steps, "n_warmup_steps", 0)
        self._min_points = _check_int(min_points, "min_points", 2)
        self._extrapolation_std = check_fraction(extrapolation_std, "extrapolation_std")
        self._predictor = check_predictor(predictor)

    def __repr__(self) -> str:
        return (
            f"ForecastPruner(n_steps={self._n_steps}, confidence={self._confidence}, "
            f"n_startup_trials={self._n_startup_trials}, n_warmup_steps={self._n_warmup_steps})"
        )

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` should stop now (see the class docstring)."""
        _check_single_objective(study, type(self).__name__)
        values = trial.intermediate_values
        if not values:
            return False
        last_step = max(values)
        if not math.isfinite(float(values[last_step])):
            return True  # diverged: nothing useful can come of it
        if last_step < self._n_warmup_steps:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        finite = [float(t.value) for t in complete if t.value is not None]
        finite = [v for v in finite if math.isfinite(v)]
        if len(finite) < self._n_startup_trials:
            return False
        target = final_step(complete, self._n_steps)
        if target is None or last_step >= target:
            return False
        raw = forecast_final(
            values, target, self._predictor, extrapolation_std=0.0, min_points=self._min_points
        )
        if raw is None:
            return False
        cal = None
        if self._calibrate:
            cal = calibrate(
                study._study_id,
                complete,
                len(values),
                target,
                self._predictor,
                self._cache,
                min_points=self._min_points,
            )
        fc = adjust(raw, cal, self._extrapolation_std)
        assert fc is not None
        sign = _sign(study)
        best = min(sign * v for v in finite)
        gap = sign * fc.value - best  # > 0: forecast worse than the best
        return gap > self._z * max(fc.std, 1e-12 * max(1.0, abs(best)))


def _normal_quantile(p: float) -> float:
    """Standard normal quantile (``statistics.NormalDist`` wrapped for clarity)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def __getattr__(name: str) -> object:
    # Lazy: _optuna_llambo imports this module's helpers (an eager import would be circular).
    if name == "LLAMBOSampler":
        from ._optuna_llambo import LLAMBOSampler

        return LLAMBOSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
