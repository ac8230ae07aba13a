"""What scheduler and trainable exchange: the LR schedule in a config, the finite-state key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autolr._autolrs._policy import cooled_lr, decayed_lr, warmup_lr

__all__ = ["SCHEDULE_KEY", "STATE_FINITE_KEY", "lr_at", "scheduled_lr"]

#: Config key of the LR schedule the scheduler gives each trial (see :func:`scheduled_lr`).
SCHEDULE_KEY = "autolr_lr_schedule"

#: Result key: True when the trial's weights and optimizer state were finite after the
#: iteration it reports (:class:`TuneCheckpointer` sends it with every loss). A non-finite loss
#: reported with True cuts the LR box only provisionally, as in the in-loop AutoLRS (see
#: :meth:`autolr.StageSearch.recover`); without the key the cut stays.
STATE_FINITE_KEY = "autolr_state_finite"


def lr_at(schedule: Mapping[str, Any], iteration: int) -> float:
    """LR of iteration ``iteration`` (0-based: iterations done before it) under ``schedule``.

    ``schedule`` is the plain description the scheduler writes into a trial's config:
    ``points`` (``[[first iteration, lr], ...]``: the LR from that iteration on), optionally
    ``warmup`` (``[steps, peak]``: linear ramp over the first steps), ``window``
    (``[start, tau_prime, cooldown]``: a candidate window whose last steps cool down, see
    :meth:`autolr.BudgetPolicy.candidate_lr`) and ``decay`` (``[max_steps, steps, shape]``: the
    final decay of :meth:`autolr.BudgetPolicy.exploit_lr`).

    Example:
        >>> s = {"points": [[2, 0.1], [4, 0.2]], "warmup": [2, 0.1]}
        >>> [lr_at(s, i) for i in range(6)]
        [0.05, 0.1, 0.1, 0.1, 0.2, 0.2]
    """
    i = int(iteration)
    warm = schedule.get("warmup")
    if warm and i < int(warm[0]):
        return warmup_lr(float(warm[1]), i, int(warm[0]))
    points = schedule["points"]
    base = float(points[0][1])
    for start, lr in points:
        if i >= int(start):
            base = float(lr)
    win = schedule.get("window")
    if win and int(win[2]) > 0 and int(win[0]) <= i < int(win[0]) + int(win[1]):
        return cooled_lr(base, i - int(win[0]), int(win[1]), int(win[2]))
    dec = schedule.get("decay")
    if not dec:
        return base
    return decayed_lr(base, i, max_steps=int(dec[0]), decay=int(dec[1]), shape=str(dec[2]))


def scheduled_lr(config: Mapping[str, Any], iteration: int, *, lr_key: str = "lr") -> float:
    """The LR a trial trains iteration ``iteration`` (0-based) with, given its config.

    Follows the schedule :class:`AutoLRSScheduler` puts under :data:`SCHEDULE_KEY` (warm-up,
    candidate window, final decay); without one, ``config[lr_key]``. A trainable that does not
    use :class:`TuneCheckpointer` calls this after every iteration to set its next LR.

    Example:
        >>> scheduled_lr({"lr": 0.1}, 5)
        0.1
    """
    schedule = config.get(SCHEDULE_KEY)
    if schedule:
        return lr_at(schedule, iteration)
    return float(config[lr_key])
