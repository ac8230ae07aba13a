"""Loss-curve forecasters: predict the loss at a later step from a short window.

Example:
    >>> from autolr.predictors import ExponentialPredictor
    >>> fc = ExponentialPredictor().forecast([2.0, 1.6, 1.3, 1.1, 1.0, 0.95], target=60)
    >>> fc.degenerate
    False
"""

from __future__ import annotations

from ._base import Forecast, Predictor
from ._exponential import ExponentialPredictor

__all__ = ["ExponentialPredictor", "Forecast", "Predictor"]
