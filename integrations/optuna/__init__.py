"""Optuna adapters: a forecast-aware GP sampler, a forecast pruner and LR-schedule search.

* :class:`AutoLRSSampler` -- GP Bayesian optimisation (the shared
  :class:`~autolr.searchers.GPSearcher`) over a study's numeric parameters that also learns
  from pruned and running trials: their intermediate values are extrapolated to the final
  step, or regressed on the complete trials' values at the same step once six of those
  exist (:func:`autolr.predictors.forecast_run`), and enter the GP with the forecast's
  (larger) noise.
* :class:`ForecastPruner` -- prunes a trial once its forecast final value is worse than the
  best complete trial with a stated confidence.
* :func:`suggest_lr_schedule` / :func:`suggest_lr_scheduler` -- tune a whole LR schedule
  (peak LR, warm-up fraction, decay shape, final LR) in one trial and get a torch scheduler.
* :class:`LLAMBOSampler` -- LLM proposals (needs the ``llm`` extra; loaded on first use).

Optuna is imported lazily (``pip install "autolr[optuna]"``); ``import autolr`` never does.

Modules: ``_sampler`` (AutoLRSSampler), ``_pruner`` (ForecastPruner), ``_storage``
(chunked trial system attrs), ``_schedule`` (LR-schedule search), ``_llambo``
(LLAMBOSampler), ``_base``/``_common`` (what the samplers and the pruner share).

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

from autolr.integrations import require

# Before any submodule: they import optuna, and a missing optuna must name the extra.
require("optuna", "optuna")

# Re-exported for the tests and for code that reached into the former single module
# (``mod._write_chunked``, ``monkeypatch.setattr(mod.GPSearcher, ...)``).
from autolr.searchers import GPSearcher  # noqa: E402, F401

from ._pruner import ForecastPruner  # noqa: E402
from ._sampler import AutoLRSSampler  # noqa: E402
from ._schedule import LRSchedule, suggest_lr_schedule, suggest_lr_scheduler  # noqa: E402
from ._storage import (  # noqa: E402, F401
    _RELATIVE_PARAMS_KEY,
    _read_chunked,
    _trial_params,
    _write_chunked,
)

__all__ = [
    "AutoLRSSampler",
    "ForecastPruner",
    "LLAMBOSampler",
    "LRSchedule",
    "suggest_lr_schedule",
    "suggest_lr_scheduler",
]


def __getattr__(name: str) -> object:
    # Lazy: LLAMBOSampler needs openai, which importing this package must not load.
    if name == "LLAMBOSampler":
        from ._llambo import LLAMBOSampler

        return LLAMBOSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
