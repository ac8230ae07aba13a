"""The final race: which racer a raced last stage follows (a pure rule, no execution).

In a raced last stage every trial of a population trains its own candidate LR to the end of
the budget instead of cloning the forecast winner. Which of them the run reports as its lineage
is decided here, from what each racer reported so far, so that the rule is written once and can
be tested without Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RacerView", "pick_racer"]


@dataclass(frozen=True)
class RacerView:
    """What the race knows about one healthy racer.

    Attributes:
        key: The racer's name (a trial id).
        iterations: Finite losses it reported in this stage.
        level: Mean of its last ``window`` finite losses.
        select: Its last finite value of the selection metric, or ``None`` when it never
            reported one (only used when racers are picked by that metric).

    Example:
        >>> RacerView.from_losses("t0", [3.0, 2.0, float("nan"), 1.0], window=2)
        RacerView(key='t0', iterations=3, level=1.5, select=None)
    """

    key: str
    iterations: int
    level: float
    select: float | None = None

    @classmethod
    def from_losses(
        cls, key: str, losses: Sequence[float], window: int, select: float | None = None
    ) -> RacerView | None:
        """The view of a racer from its losses in order (``None`` if none is finite)."""
        finite = [float(v) for v in losses if math.isfinite(v)]
        if not finite:
            return None
        tail = finite[-max(1, int(window)) :]
        return cls(str(key), len(finite), sum(tail) / len(tail), select)


def pick_racer(racers: Sequence[RacerView], *, by_select: bool = False) -> RacerView | None:
    """The racer to follow: the one furthest along, then the lowest ``level``.

    Args:
        racers: Healthy racers (penalised ones are left out by the caller).
        by_select: Rank by ``select`` instead of ``level`` (a racer without a selection value
            ranks last among those with as many iterations).

    Returns ``None`` for an empty race. Ties keep the first racer in ``racers``.

    Example:
        >>> a, b = RacerView("a", 10, 0.5), RacerView("b", 10, 0.4)
        >>> pick_racer([a, b]).key, pick_racer([a, RacerView("c", 11, 0.9)]).key
        ('b', 'c')
    """
    best: RacerView | None = None
    best_key: tuple[int, float] | None = None
    for r in racers:
        rank = (math.inf if r.select is None else r.select) if by_select else r.level
        key = (-r.iterations, rank)
        if best_key is None or key < best_key:
            best, best_key = r, key
    return best
