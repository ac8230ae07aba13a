"""Quasi-random search: a scrambled Sobol sequence over the (log-)box."""

from __future__ import annotations

import torch

from ._base import Searcher

__all__ = ["RandomSearcher"]


class RandomSearcher(Searcher):
    """Suggests the next points of a seeded, scrambled Sobol sequence.

    Observations are recorded (for :meth:`best` and bookkeeping) but never change
    the suggestions. Pending configs need no special handling: successive Sobol
    points are distinct and spread out by construction. The sequence depends only
    on the seed and on how many points were drawn, both kept in ``state_dict``.

    Args:
        params: The search dimensions.
        seed: Seed of the scrambling; ``None`` draws one from the OS.

    Example:
        >>> from autolr.searchers import Param, RandomSearcher
        >>> s = RandomSearcher([Param("lr", 1e-5, 1e-1, log=True)], seed=0)
        >>> len(s.suggest(4))
        4
    """

    def _suggest_unit(self, n: int, pending: torch.Tensor) -> torch.Tensor:
        return self._draw_sobol(n)
