"""Black-box searchers over learning-rate-like hyperparameters (minimisation).

:class:`Param` describes one (optionally log-scaled) dimension; a :class:`Searcher`
suggests configs (``dict[str, float]``) and learns from ``observe``. Two searchers
ship: :class:`RandomSearcher` (scrambled Sobol) and :class:`GPSearcher` (botorch
Gaussian-process Bayesian optimisation; botorch and gpytorch are imported when a GP is
first needed, not with this package). All are deterministic given their seed, leave the
global RNGs untouched (searchers in several threads take turns; each suggests what it would
alone), and round-trip through ``state_dict``. Invalid arguments raise
:class:`autolr.ConfigError` / :class:`autolr.ConfigTypeError`, invalid states
:class:`autolr.StateError`.

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

__all__ = [
    "GPSearcher",
    "LLMClient",
    "LLMError",
    "LLMSearcher",
    "Param",
    "RandomSearcher",
    "Searcher",
]


def __getattr__(name: str) -> object:
    if name == "LLMSearcher":  # lazily: `import autolr` stays light; openai only with a client
        from ._llm import LLMSearcher

        return LLMSearcher
    if name in ("LLMClient", "LLMError"):
        from . import _llm_client

        return getattr(_llm_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
