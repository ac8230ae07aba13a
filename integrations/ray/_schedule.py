"""What scheduler and trainable exchange: the LR schedule in a config, the finite-state key."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autolr._autolrs._policy import cooled_lr, decayed_lr, warmup_lr
from autolr._errors import ConfigError
from autolr._validate import _to_float, check_float

__all__ = ["SCHEDULE_KEY", "STATE_FINITE_KEY", "check_schedule", "lr_at", "scheduled_lr"]

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


def _bad(schedule: Any, why: str) -> ConfigError:
    return ConfigError(
        f"config[{SCHEDULE_KEY!r}] is not an AutoLRSScheduler schedule ({why}): {schedule!r}"
    )


def _is_int(v: Any, minimum: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_lr(v: Any) -> bool:
    x = _to_float(v)
    return x is not None and math.isfinite(x) and x > 0


def check_schedule(schedule: Any) -> Mapping[str, Any]:
    """Check the plain schedule of a trial's config (see :func:`lr_at`); returns it.

    Every LR in it must be finite and positive: a hand-written schedule with a negative or
    NaN LR would otherwise train with it.

    Raises:
        ConfigError: ``schedule`` is not of the form :func:`lr_at` describes.
    """
    if not isinstance(schedule, Mapping):
        raise _bad(schedule, "not a mapping")
    points = schedule.get("points")
    if not isinstance(points, (list, tuple)) or not points:
        raise _bad(schedule, "'points' must be a non-empty list of [first iteration, lr]")
    for p in points:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and _is_int(p[0], 0)):
            raise _bad(schedule, f"point {p!r} is not [first iteration (an int >= 0), lr]")
        if not _is_lr(p[1]):
            raise _bad(schedule, f"point {p!r} has an LR that is not a finite number > 0")
    warm = schedule.get("warmup")
    if warm is not None and not (
        isinstance(warm, (list, tuple)) and len(warm) == 2 and _is_int(warm[0], 0)
        and _is_lr(warm[1])
    ):  # fmt: skip
        raise _bad(schedule, "'warmup' must be [steps (an int >= 0), peak lr (finite, > 0)]")
    win = schedule.get("window")
    if win is not None and not (
        isinstance(win, (list, tuple)) and len(win) == 3 and all(_is_int(v, 0) for v in win)
    ):
        raise _bad(schedule, "'window' must be [start, tau_prime, cooldown], ints >= 0")
    dec = schedule.get("decay")
    if dec is not None and not (
        isinstance(dec, (list, tuple)) and len(dec) == 3 and _is_int(dec[0], 1)
        and _is_int(dec[1], 0) and dec[2] in ("linear", "sqrt")
    ):  # fmt: skip
        raise _bad(schedule, "'decay' must be [max_steps, steps, 'linear' or 'sqrt']")
    return schedule


def scheduled_lr(config: Mapping[str, Any], iteration: int, *, lr_key: str = "lr") -> float:
    """The LR a trial trains iteration ``iteration`` (0-based) with, given its config.

    Follows the schedule :class:`AutoLRSScheduler` puts under :data:`SCHEDULE_KEY` (warm-up,
    candidate window, final decay); without one, ``config[lr_key]``. A trainable that does not
    use :class:`TuneCheckpointer` calls this after every iteration to set its next LR.

    Raises:
        ConfigError: The schedule is malformed or holds an LR that is not finite and
            positive (see :func:`check_schedule`), or ``config[lr_key]`` is not a finite
            number > 0.

    Example:
        >>> scheduled_lr({"lr": 0.1}, 5)
        0.1
    """
    schedule = config.get(SCHEDULE_KEY)
    if schedule:
        return lr_at(check_schedule(schedule), iteration)
    if lr_key not in config:
        raise ConfigError(f"config has no {lr_key!r} entry (the LR the scheduler sets)")
    return check_float(f"config[{lr_key!r}]", config[lr_key], minimum=0.0, min_inclusive=False)
