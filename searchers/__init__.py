"""Black-box searchers over learning-rate-like hyperparameters (minimisation).

:class:`Param` describes one (optionally log-scaled) dimension; a :class:`Searcher`
suggests configs (``dict[str, float]``) and learns from ``observe``. Two searchers
ship: :class:`RandomSearcher` (scrambled Sobol) and :class:`GPSearcher` (botorch
Gaussian-process Bayesian optimisation). All are deterministic given their seed,
leave the global RNGs untouched, and round-trip through ``state_dict``.

Example:
    >>> from autolr.searchers import GPSearcher, Param
    >>> s = GPSearcher([Param("lr", 1e-5, 1.0, log=True)], seed=0)
    >>> (cfg,) = s.suggest()
    >>> s.observe(cfg, 0.3)
"""

from __future__ import annotations

from ._base import Param, Searcher
from ._gp import GPSearcher
from ._random import RandomSearcher

__all__ = ["GPSearcher", "Param", "RandomSearcher", "Searcher"]
