"""Typed records of the scheduler's work: what each trial does, and each candidate's checkpoint.

Both are saved in :meth:`AutoLRSScheduler.state_dict` as plain values (lists, dicts, numbers),
so the state survives ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CandidateCheckpoint",
    "CheckpointRef",
    "Job",
    "as_iteration",
    "as_loss",
    "concurrency_limit",
    "find_trial",
    "wait_job",
]

#: ``(path, metrics)`` of a trial checkpoint (what ``_compat.trial_checkpoint`` returns).
CheckpointRef = tuple[str, dict[str, Any]]


@dataclass
class Job:
    """What one trial is doing: a candidate, the lineage (exploit/final), a racer, or waiting."""

    kind: str  # "candidate" | "exploit" | "final" | "race" | "wait"
    lr: float
    start: int  # lineage iteration where the job's window begins (its stage start)
    length: int | None  # iterations from ``start`` the job covers (None: until the run ends)
    schedule: dict[str, Any] = field(default_factory=dict)  # written into the trial's config
    losses: dict[int, float] = field(default_factory=dict)  # offset from start -> loss
    finished: bool = False
    penalised: bool = False
    reason: str = ""
    forecast: float | None = None
    scored: bool = False  # its window went to the stage search
    harvested: bool = False  # a finished candidate whose checkpoint has been recorded
    spec_end: int | None = None  # a scored candidate keeps training until this iteration
    warmup: bool = False  # starts from the initial weights and warms up until ``start``
    over: int = 0  # consecutive losses over the divergence threshold
    skips: int = 0  # consecutive non-finite losses skipped (the trial's state stayed finite)
    ref: float | None = None  # stage-start loss the divergence rule compares with
    select: float | None = None  # a racer's last finite ``select_metric`` value
    source: list[Any] | None = None  # [path, metrics] it resumes from (None: initial state)
    own: bool = True  # resumes from the trial's own latest checkpoint instead of source

    @property
    def end(self) -> int | None:
        """Lineage iteration where the job ends (``None``: at the end of the run)."""
        return None if self.length is None else self.start + self.length

    @property
    def cooldown(self) -> int:
        """Last iterations of a candidate window that cool down (0: none)."""
        return int(self.schedule.get("window", [0, 0, 0])[2])

    def to_state(self) -> dict[str, Any]:
        """Plain-value form (see :meth:`from_state`)."""
        d = asdict(self)
        d["losses"] = [[int(k), float(v)] for k, v in self.losses.items()]
        return d

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> Job:
        """Rebuild a job from :meth:`to_state`."""
        d = dict(d)
        d["losses"] = {int(k): float(v) for k, v in d["losses"]}
        if d.get("source") is not None:
            d["source"] = [str(d["source"][0]), dict(d["source"][1])]
        d["schedule"] = dict(d.get("schedule") or {})
        return cls(**d)


def wait_job(lr: float, start: int = 0) -> Job:
    """A trial with nothing to do until the next stage (its first result pauses it)."""
    return Job("wait", float(lr), int(start), 0, finished=True)


@dataclass
class CandidateCheckpoint:
    """Where a finished candidate's window ended, recorded when its trial takes other work.

    ``path`` is empty when its trial had no checkpoint left to record.

    Example:
        >>> c = CandidateCheckpoint(0.1, "t0", "/ckpt/t0/5", {"training_iteration": 5})
        >>> c.to_state()
        [0.1, 't0', '/ckpt/t0/5', {'training_iteration': 5}]
        >>> CandidateCheckpoint.from_state(c.to_state()) == c
        True
    """

    lr: float
    trial_id: str
    path: str
    metrics: dict[str, Any]

    def to_state(self) -> list[Any]:
        """``[lr, trial id, path, metrics]``: the state format of version 2."""
        return [self.lr, self.trial_id, self.path, dict(self.metrics)]

    @classmethod
    def from_state(cls, s: list[Any]) -> CandidateCheckpoint:
        """Rebuild a record from :meth:`to_state`."""
        lr, trial_id, path, metrics = s
        return cls(float(lr), str(trial_id), str(path), dict(metrics))


def find_trial(tc: Any, tid: str | None) -> Any:
    """The trial of the controller ``tc`` with id ``tid``, or ``None``."""
    return next((t for t in tc.get_trials() if t.trial_id == tid), None) if tid else None


def concurrency_limit(tc: Any) -> int | None:
    """The ``n`` of ``TuneConfig(max_concurrent_trials=n)``, from the controller's search algorithm.

    A ``BasicVariantGenerator``'s or a ``ConcurrencyLimiter``'s public ``max_concurrent`` (0 or
    absent: no limit); ``search_alg`` is part of the controller surface Ray gives schedulers.
    """
    alg = getattr(tc, "search_alg", None)
    for obj in (alg, getattr(alg, "searcher", None)):
        n = getattr(obj, "max_concurrent", None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def as_loss(raw: Any) -> float:
    """A reported metric as a float (NaN when it is missing or not a number)."""
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def as_iteration(value: Any) -> int | None:
    """``value`` as an iteration count (an int, or a float holding one), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
