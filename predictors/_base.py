"""Forecast result type and the abstract loss-curve predictor."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autolr._errors import ConfigError

__all__ = ["Forecast", "Predictor"]


@dataclass(frozen=True)
class Forecast:
    """A predicted loss at a target step.

    Attributes:
        value: Predicted loss at the target step. Finite, except ``math.inf`` when the
            series held no finite value at all (callers should treat that as "penalise").
        std: Uncertainty of ``value`` (finite, ``>= 0``).
        degenerate: True when the curve fit was not trusted and a fallback (the smoothed
            last value) was returned instead.
        reason: ``""`` when all went well, else a short human-readable note, e.g.
            ``"too few finite points (2)"``, ``"no decrease (flat series)"``,
            ``"forecast clamped"``.
        params: Fitted curve parameters (model specific; ``(a, b, c)`` for
            :class:`~autolr.predictors.ExponentialPredictor`), ``None`` when degenerate.
        n_used: Number of points used after cleaning (non-finite values and outliers
            removed).

    Example:
        >>> Forecast(value=0.8, std=0.01, degenerate=False, reason="", params=None, n_used=100)
        Forecast(value=0.8, std=0.01, degenerate=False, reason='', params=None, n_used=100)
    """

    value: float
    std: float
    degenerate: bool
    reason: str
    params: tuple[float, float, float] | None
    n_used: int


class Predictor(abc.ABC):
    """Forecasts the loss at a later step from the losses observed so far.

    Subclasses implement :meth:`forecast`; their ``state_dict`` holds configuration only
    (plain Python types, loadable with ``torch.load(..., weights_only=True)``).

    Example:
        >>> from autolr.predictors import ExponentialPredictor
        >>> p: Predictor = ExponentialPredictor()
        >>> p.forecast([2.0, 1.6, 1.3, 1.1, 1.0, 0.95], target=60).value < 0.95
        True
    """

    @abc.abstractmethod
    def forecast(
        self,
        values: Sequence[float] | Any,
        target: float,
        *,
        steps: Sequence[float] | Any | None = None,
    ) -> Forecast:
        """Forecast the loss at ``target``.

        Args:
            values: 1-D losses (list, numpy array or torch tensor); may contain NaN/inf.
            target: Step at which to forecast, in the units of ``steps``.
            steps: Step of each value (default ``0..n-1``); may be non-uniform.

        Returns:
            The :class:`Forecast`. Implementations must not raise for bad data (too few
            points, NaN, constant series, ...); they return a degenerate forecast instead.
        """

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Configuration as plain Python types."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the configuration returned by :meth:`state_dict`."""


def to_float_array(x: Any, name: str) -> np.ndarray:
    """Convert a sequence, numpy array or torch tensor to a 1-D float64 array.

    Raises:
        ConfigError: If ``x`` is not convertible or has more than one dimension.
    """
    if hasattr(x, "detach"):  # torch tensor (any dtype, any device)
        x = x.detach().cpu()
        if hasattr(x, "double"):
            x = x.double()
    try:
        try:
            arr = np.asarray(x, dtype=float)
        except (RuntimeError, TypeError, ValueError):
            if not isinstance(x, (list, tuple)):
                raise
            # e.g. a list of 0-d tensors that require grad
            arr = np.asarray(
                [float(v.detach()) if hasattr(v, "detach") else v for v in x], dtype=float
            )
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be a 1-D sequence of numbers, got {type(x).__name__}"
        ) from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    return arr
