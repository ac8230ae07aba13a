"""Loss-curve forecasters: predict the loss at a later step from a short window.

:func:`forecast_run` is the forecast -> calibrate -> adjust pipeline that judges an
unfinished run (used by the Optuna sampler and pruner); :func:`regress_final` forecasts from
finished runs' values at the same step.

Example:
    >>> from autolr.predictors import ExponentialPredictor
    >>> fc = ExponentialPredictor().forecast([2.0, 1.6, 1.3, 1.1, 1.0, 0.95], target=60)
    >>> fc.degenerate
    False
"""

from __future__ import annotations

from ._base import Forecast, Predictor
from ._exponential import ExponentialPredictor
from ._pipeline import (
    FinalForecast,
    ForecastCache,
    ReferenceRun,
    adjust,
    calibrate,
    final_step,
    forecast_final,
    forecast_run,
    regress_final,
)

__all__ = [
    "ExponentialPredictor",
    "FinalForecast",
    "Forecast",
    "ForecastCache",
    "Predictor",
    "ReferenceRun",
    "adjust",
    "calibrate",
    "final_step",
    "forecast_final",
    "forecast_run",
    "regress_final",
]
