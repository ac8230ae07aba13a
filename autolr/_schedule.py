"""One schedule type for every tuner: record, save, stretch and replay hyperparameter values.

:class:`Schedule` holds hyperparameter values over optimizer steps, piecewise constant between
records. AutoLRS, :class:`~autolr.HypergradientLR` and the Ray scheduler export their LR as a
one-name schedule (``"lr"``); :class:`autolr.stn.STNTuner` records its regularisation
hyperparameters the same way. A found schedule replays in a plain run through
:meth:`Schedule.scheduler` (a torch ``LRScheduler``) or :meth:`Schedule.apply`.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ._errors import ConfigError, ConfigTypeError, StateError
from ._statecheck import (
    _describe_state,
    _short,
    _state_error,
    _state_float,
    _state_int,
    _state_list,
    _state_version,
)
from ._validate import check_choice, check_float, check_instance, check_int

# Version 1 throughout: ``length`` and ``source`` were added as optional entries (a state
# without them reads as before), so states of older autolr releases still load.
_STATE_VERSION = 1
_KINDS = ("linear", "previous")

__all__ = ["Schedule", "ScheduleLR"]


@dataclass
class Schedule:
    """Hyperparameter values over optimizer steps, piecewise constant between records.

    Step ``s`` uses the last record at or before ``s`` (before the first record: the first
    record). An LR schedule has the one name ``"lr"``; its value at step ``s`` is the LR of
    the ``s``-th optimizer step (0-based) of the reference parameter group (the first group
    with a positive LR; the other groups keep their ratios to it on replay).

    Attributes:
        names: Hyperparameter names.
        steps: Optimizer step of each record (non-decreasing).
        values: One row of values per record, in ``names`` order.
        discrete: Names whose values are integers (floored when read).
        length: Steps the schedule covers (default: last record's step + 1); see
            :attr:`n_steps`.
        source: What produced it (``"AutoLRS"``, ``"HypergradientLR"``, ...), informative.

    Example:
        >>> s = Schedule(["drop"], [0, 100], [[0.05], [0.3]])
        >>> s.at(50), s.at(100)
        ({'drop': 0.05}, {'drop': 0.3})
        >>> drop = nn.Dropout(0.0)
        >>> _ = s.apply(120, dropout={"drop": drop})
        >>> drop.p
        0.3
        >>> lrs = Schedule.from_lrs([1.0, 1.0, 0.5, 0.0])
        >>> lrs.n_steps, lrs.per_step(), lrs.stretch(7).per_step()
        (4, [1.0, 1.0, 0.5, 0.0], [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    """

    names: list[str]
    steps: list[int]
    values: list[list[float]]
    discrete: list[str] = field(default_factory=list)
    length: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        # The same checks as a loaded state gets (``_parse``), as ConfigError/ConfigTypeError.
        self.names = _check_names(self.names)
        self.steps = _check_steps(self.steps)
        self.values = _check_values(self.values, self.names, len(self.steps))
        if not _is_list_like(self.discrete):
            raise ConfigTypeError(
                f"Schedule: discrete must be a list of names, got {_short(self.discrete)}"
            )
        unknown = [n for n in self.discrete if n not in self.names]
        if unknown:
            raise ConfigError(f"Schedule: discrete names {unknown} that are not in {self.names}")
        if not isinstance(self.source, str):
            raise ConfigTypeError(f"Schedule: source must be a str, got {_short(self.source)}")
        if self.length is not None:
            last = self.steps[-1] + 1 if self.steps else 0
            self.length = check_int("length", self.length)
            if self.length < last:
                raise ConfigError(
                    f"Schedule: length={self.length} is shorter than its records (last at "
                    f"step {last - 1})"
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lrs(cls, lrs: Sequence[float], *, start: int = 0, source: str = "") -> Schedule:
        """An LR schedule from one LR per step (step ``start + i`` used ``lrs[i]``).

        Runs of equal LRs are stored once (:meth:`at` reads them back unchanged).

        Raises:
            ConfigError: ``lrs`` is empty or holds a non-finite or negative LR.
        """
        vals = [float(v) for v in lrs]
        if not vals:
            raise ConfigError("Schedule.from_lrs: lrs is empty (no step to schedule)")
        bad = next((v for v in vals if not (math.isfinite(v) and v >= 0)), None)
        if bad is not None:
            raise ConfigError(f"Schedule.from_lrs: every LR must be finite and >= 0, got {bad}")
        steps, rows = [], []
        for i, v in enumerate(vals):
            if not rows or rows[-1][0] != v:
                steps.append(start + i)
                rows.append([v])
        return cls(["lr"], steps, rows, length=start + len(vals), source=source)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.steps)

    @property
    def n_steps(self) -> int:
        """Steps the schedule covers: ``length``, else the last record's step + 1."""
        if self.length is not None:
            return self.length
        return self.steps[-1] + 1 if self.steps else 0

    def at(self, step: int) -> dict[str, float]:
        """Values in force at weight step ``step`` (the last record at or before it)."""
        if type(step) is not int:  # (the fast path: ScheduleLR reads one value per step)
            step = check_int("Schedule.at: step", step)
        if not self.steps:
            raise ConfigError("Schedule is empty")
        i = max(0, bisect.bisect_right(self.steps, step) - 1)
        out = dict(zip(self.names, self.values[i], strict=True))
        for n in self.discrete:
            out[n] = float(math.floor(out[n]))
        return out

    def series(self, name: str) -> list[float]:
        """Recorded values of ``name`` (one per record; see :meth:`per_step` for every step)."""
        return [row[self._index(name)] for row in self.values]

    def per_step(self, name: str = "lr") -> list[float]:
        """The value of ``name`` at every step ``0 .. n_steps - 1``."""
        j = self._index(name)
        if not self.steps:
            return []
        out, i = [], 0
        for s in range(self.n_steps):
            while i + 1 < len(self.steps) and self.steps[i + 1] <= s:
                i += 1
            v = self.values[i][j]
            out.append(float(math.floor(v)) if name in self.discrete else v)
        return out

    def _index(self, name: str) -> int:
        if name not in self.names:
            raise ConfigError(f"Schedule has no hyperparameter {name!r}; it has {self.names}")
        return self.names.index(name)

    # ------------------------------------------------------------------ transforming
    def _exported(self, steps: int | None, kind: str) -> Schedule:
        """What a tuner's ``export_schedule(steps, kind=kind)`` returns from this schedule.

        ``kind`` is checked even without ``steps`` (a typo is not ignored), and an invalid
        ``steps`` is named as the exporter's argument.
        """
        check_choice("kind", kind, _KINDS)
        if steps is None:
            return self
        return self.stretch(check_int("steps", steps, minimum=1), kind=kind)

    def stretch(self, n_steps: int, *, kind: str = "linear") -> Schedule:
        """The same schedule over ``n_steps`` steps (one record per step).

        Step ``j`` of the result reads the original at position ``j * (L - 1) / (n_steps - 1)``
        (``L`` = :attr:`n_steps`), so first and last steps map onto each other.

        Args:
            n_steps: Length of the new schedule (>= 1).
            kind: ``"linear"`` (default) interpolates between neighbouring steps (a warm-up or a
                decay stays a ramp); ``"previous"`` holds the value at or before the position
                (a piecewise-constant schedule stays one). Discrete names always use
                ``"previous"``.

        Raises:
            ConfigError: ``n_steps`` is not an int >= 1, an unknown ``kind``, or an empty
                schedule.
        """
        check_int("n_steps", n_steps, minimum=1)
        check_choice("kind", kind, _KINDS)
        if not self.steps:
            raise ConfigError("Schedule.stretch: the schedule is empty")
        old = self.n_steps
        cols = [self.per_step(n) for n in self.names]
        rows = []
        for j in range(n_steps):
            x = j * (old - 1) / (n_steps - 1) if n_steps > 1 else 0.0
            i = min(math.floor(x + 1e-9), old - 1)
            f = x - i if i + 1 < old else 0.0
            row = []
            for name, col in zip(self.names, cols, strict=True):
                if kind == "previous" or name in self.discrete or f <= 1e-9:
                    row.append(col[i])
                else:
                    row.append(col[i] * (1.0 - f) + col[i + 1] * f)
            rows.append(row)
        return Schedule(
            list(self.names), list(range(n_steps)), rows, list(self.discrete), n_steps, self.source
        )

    # ------------------------------------------------------------------ replaying
    def scheduler(
        self, optimizer: torch.optim.Optimizer, *, name: str = "lr", last_epoch: int = -1
    ) -> ScheduleLR:
        """A torch ``LRScheduler`` that replays ``name`` as the LR (see :class:`ScheduleLR`)."""
        return ScheduleLR(optimizer, self, name=name, last_epoch=last_epoch)

    def apply(
        self,
        step: int,
        *,
        dropout: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None,
        weight_decay: Mapping[str, torch.optim.Optimizer] | None = None,
    ) -> dict[str, float]:
        """Set plain modules and optimizers to the values at ``step``; returns those values.

        Args:
            step: Weight step of the replayed run.
            dropout: ``{hyperparameter: nn.Dropout or list of them}``: sets ``.p``.
            weight_decay: ``{hyperparameter: optimizer}``: sets every group's
                ``weight_decay`` (matches :func:`autolr.stn.l2_penalty`).
        """
        vals = self.at(step)
        for name, mods in (dropout or {}).items():
            if name not in vals:
                raise ConfigError(f"Schedule has no hyperparameter {name!r}")
            for m in [mods] if isinstance(mods, nn.Module) else mods:
                if not hasattr(m, "p"):
                    raise ConfigError(f"Schedule.apply: {type(m).__name__} has no dropout rate .p")
                m.p = vals[name]
        for name, opt in (weight_decay or {}).items():
            if name not in vals:
                raise ConfigError(f"Schedule has no hyperparameter {name!r}")
            for g in opt.param_groups:
                g["weight_decay"] = vals[name]
        return vals

    # ------------------------------------------------------------------ state and files
    def state_dict(self) -> dict[str, Any]:
        """Plain lists (JSON- and ``weights_only``-safe)."""
        out: dict[str, Any] = {
            "version": _STATE_VERSION,
            "kind": "Schedule",
            "names": list(self.names),
            "steps": list(self.steps),
            "values": [list(r) for r in self.values],
            "discrete": list(self.discrete),
            "length": self.length,
            "source": self.source,
        }
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Schedule:
        """Rebuild from :meth:`state_dict` (or its JSON; states without ``version`` too).

        Raises:
            StateError: Not a Schedule state, or entries of the wrong type or length.
        """
        return cls(**_parse(state, "Schedule.from_state_dict"))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this schedule's contents by ``state``; checked first, unchanged on error.

        Raises:
            StateError: As :meth:`from_state_dict`.
        """
        for key, value in _parse(state, "Schedule.load_state_dict").items():
            setattr(self, key, value)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the schedule to ``path`` as JSON (:meth:`load` reads it back)."""
        text = json.dumps(self.state_dict(), indent=None, separators=(",", ":"))
        with open(path, "w") as fh:
            fh.write(text + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schedule:
        """Read a schedule written by :meth:`save`.

        Raises:
            StateError: The file is not JSON or not a schedule.
        """
        try:
            with open(path) as fh:
                state = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"Schedule.load: {os.fspath(path)!r} is not JSON ({exc})") from None
        return cls(**_parse(state, "Schedule.load"))

    def digest(self) -> str:
        """A short hash of the contents (a scheduler's state_dict names its schedule by it)."""
        text = json.dumps(self.state_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_list_like(value: Any) -> bool:
    """A list, tuple or array of entries (not a str, bytes or mapping)."""
    return (
        not isinstance(value, (str, bytes, Mapping))
        and hasattr(value, "__len__")
        and hasattr(value, "__iter__")
    )


def _check_names(names: Any) -> Any:
    """Unique str names (returned as given) or a ConfigError/ConfigTypeError."""
    if not _is_list_like(names) or not all(isinstance(n, str) for n in names):
        raise ConfigTypeError(f"Schedule: names must be a list of str, got {_short(names)}")
    listed = list(names)
    dup = sorted({n for n in listed if listed.count(n) > 1})
    if dup:
        raise ConfigError(f"Schedule: names must be unique, {dup} appear more than once")
    return names


def _check_steps(steps: Any) -> Any:
    """Non-decreasing int steps >= 0 (as given, or as a list of int when not plain ints)."""
    if not _is_list_like(steps):
        raise ConfigTypeError(f"Schedule: steps must be a list of int, got {_short(steps)}")
    out = [
        v if type(v) is int and v >= 0 else check_int(f"Schedule: steps[{i}]", v, minimum=0)
        for i, v in enumerate(steps)
    ]
    if any(b < a for a, b in itertools.pairwise(out)):
        raise ConfigError("Schedule: steps must be non-decreasing")
    converted = any(a is not b for a, b in zip(out, steps, strict=True))
    return out if converted or not isinstance(steps, (list, tuple)) else steps


def _value(where: str, v: Any) -> Any:
    """A finite number: a plain int or float as given, other real numbers as float."""
    if type(v) is float and math.isfinite(v):
        return v
    if type(v) is int:
        try:
            float(v)
        except OverflowError:
            raise ConfigError(f"{where} must be a finite float, got {_short(v)}") from None
        return v
    return check_float(where, v)


def _check_values(values: Any, names: Sequence[str], n_steps: int) -> Any:
    """One row of finite numbers per step, one per name (as given when plain numbers)."""
    if not _is_list_like(values):
        raise ConfigTypeError(
            f"Schedule: values must be a list of rows (lists of numbers), got {_short(values)}"
        )
    if len(values) != n_steps:
        raise ConfigError("Schedule: steps and values have different lengths")
    out, converted = [], not isinstance(values, (list, tuple))
    for i, row in enumerate(values):
        if not _is_list_like(row):
            raise ConfigTypeError(
                f"Schedule: values[{i}] must be a list of {len(names)} numbers, got {_short(row)}"
            )
        if len(row) != len(names):
            raise ConfigError(f"Schedule: a row has {len(row)} values for {len(names)} names")
        new = [_value(f"Schedule: values[{i}][{j}] ({n!r})", v)
               for j, (n, v) in enumerate(zip(names, row, strict=True))]  # fmt: skip
        if isinstance(row, (list, tuple)) and all(a is b for a, b in zip(new, row, strict=True)):
            out.append(row)
        else:
            out.append(new)
            converted = True
    return out if converted else values


def _parse(state: Any, owner: str) -> dict[str, Any]:
    """The checked constructor arguments of a Schedule state (changes nothing)."""
    _state_version(owner, state, ("names", "steps", "values"), (1,), 1)
    names = _state_list(owner, "names", state["names"])
    if not all(isinstance(n, str) for n in names):
        raise _state_error(owner, f"'names' must be a list of str, got {_short(names)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _state_error(owner, f"'names' must be unique, {dup} appear more than once")
    steps = [_state_int(owner, "steps", v) for v in _state_list(owner, "steps", state["steps"])]
    if any(b < a for a, b in itertools.pairwise(steps)):
        raise _state_error(owner, f"'steps' must be non-decreasing, got {_short(steps)}")
    rows = _state_list(owner, "values", state["values"], len(steps))
    try:
        values = [
            [_state_float(owner, f"values[{i}]", v) for v in _state_list(
                owner, f"values[{i}]", r, len(names))]
            for i, r in enumerate(rows)
        ]  # fmt: skip
    except OverflowError:  # an int beyond float range
        raise _state_error(
            owner, "'values' must be finite numbers, got an int beyond float range"
        ) from None
    discrete = _state_list(owner, "discrete", state.get("discrete", []))
    unknown = [n for n in discrete if n not in names]
    if unknown:
        raise _state_error(owner, f"'discrete' names {unknown} that are not in {names}")
    length = state.get("length")
    if length is not None:
        length = _state_int(owner, "length", length, low=steps[-1] + 1 if steps else 0)
    source = state.get("source", "")
    if not isinstance(source, str):
        raise _state_error(owner, f"'source' must be a str, got {_short(source)}")
    return {"names": names, "steps": steps, "values": values, "discrete": discrete,
            "length": length, "source": source}  # fmt: skip


class ScheduleLR(LRScheduler):
    """Replays a :class:`Schedule` as the LR (like ``LambdaLR`` with the schedule as lambda).

    The ``t``-th ``optimizer.step()`` (0-based; call ``scheduler.step()`` after each) runs at
    ``schedule.at(t)[name]`` on the reference group (the first with a positive initial LR);
    every other group keeps its initial ratio to it, and a group built with ``lr=0`` stays at
    0. After the schedule's last step the last value holds.

    ``state_dict()`` holds the position and the schedule's :meth:`~Schedule.digest` (not the
    schedule itself, as ``LambdaLR`` leaves out its lambdas); ``load_state_dict`` refuses a
    state saved with another schedule.

    Raises:
        ConfigTypeError: ``optimizer`` is not a torch optimizer or ``schedule`` not a Schedule.
        ConfigError: ``name`` is not in the schedule, the schedule is empty, or every group's
            initial LR is 0.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([{"params": [p], "lr": 1.0}], lr=1.0)
        >>> sched = Schedule.from_lrs([0.3, 0.2, 0.1]).scheduler(opt)
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> lrs
        [0.3, 0.2, 0.1, 0.1]
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        *,
        name: str = "lr",
        last_epoch: int = -1,
    ) -> None:
        check_instance("optimizer", optimizer, torch.optim.Optimizer)
        check_instance("schedule", schedule, Schedule)
        schedule._index(name)
        if not schedule.steps:
            raise ConfigError("ScheduleLR: the schedule is empty")
        last_epoch = check_int("last_epoch", last_epoch, minimum=-1)
        for step, value in zip(schedule.steps, schedule.series(name), strict=True):
            if not _is_lr(value):
                raise ConfigError(
                    f"ScheduleLR: {name!r} is replayed as the LR, so every value must be finite "
                    f"and >= 0; the schedule has {_short(value)} at step {step}"
                )
        if last_epoch >= 0:
            lacking = [i for i, g in enumerate(optimizer.param_groups) if "initial_lr" not in g]
            if lacking:
                raise ConfigError(
                    f"ScheduleLR: last_epoch={last_epoch} resumes a run, but param group(s) "
                    f"{lacking} have no 'initial_lr' (set by the scheduler the run started "
                    "with); build the scheduler with last_epoch=-1 and load its state_dict"
                )
        self.schedule = schedule
        self.name = name
        self.schedule_digest = schedule.digest()
        self._ratios: list[float] | None = None
        super().__init__(optimizer, last_epoch)

    def _group_ratios(self) -> list[float]:
        if self._ratios is None:
            base = [float(b) for b in self.base_lrs]
            ref = next((b for b in base if b > 0), None)
            if ref is None:
                raise ConfigError(
                    "ScheduleLR: every param group's initial LR is 0, so there is no ratio to "
                    "keep; build the optimizer with a positive lr (e.g. lr=1.0)"
                )
            self._ratios = [b / ref for b in base]
        return self._ratios

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The groups' LRs at step ``last_epoch``."""
        ratios = self._group_ratios()
        groups = len(self.optimizer.param_groups)
        if len(ratios) != groups:
            raise ConfigError(
                f"ScheduleLR: the optimizer has {groups} param groups but the scheduler was "
                f"built for {len(ratios)}: a group added with add_param_group() after the "
                "scheduler was built has no initial LR to keep a ratio to; build the scheduler "
                "after adding every group"
            )
        value = self.schedule.at(max(0, self.last_epoch))[self.name]
        if not _is_lr(value):  # the schedule was edited after the scheduler was built
            raise ConfigError(
                f"ScheduleLR: {self.name!r} is {_short(value)} at step {self.last_epoch}; an LR "
                "must be finite and >= 0"
            )
        return [value * r for r in ratios]

    def state_dict(self) -> dict[str, Any]:
        """Position, base LRs and the schedule's digest (plain values, ``weights_only``-safe)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` of a scheduler over the same schedule and name.

        The whole state is checked first; on error nothing changes.

        Raises:
            StateError: Not a ScheduleLR state, saved with another schedule, for another
                ``name`` or another number of param groups, or an entry of the wrong type.
        """
        owner = "ScheduleLR"
        state = state_dict
        if not isinstance(state, Mapping) or not {"last_epoch", "base_lrs"} <= set(state):
            raise StateError(
                f"ScheduleLR.load_state_dict: got {_short(state)}, expected one from "
                "ScheduleLR.state_dict() (keys 'last_epoch', 'base_lrs', ...)"
            )
        saved = state.get("schedule_digest")
        if not isinstance(saved, str):
            raise _state_error(
                owner,
                f"got {_describe_state(state)} with schedule_digest={_short(saved)}, expected "
                "one from ScheduleLR.state_dict() (it names its schedule by its digest)",
            )
        if saved != self.schedule_digest:
            raise StateError(
                f"ScheduleLR.load_state_dict: the state was saved for another schedule (digest "
                f"{saved!r}, this one's is {self.schedule_digest!r}); build the scheduler "
                "from the schedule the run was started with"
            )
        if state.get("name") != self.name:
            raise _state_error(
                owner,
                f"the state was saved by a scheduler replaying {_short(state.get('name'))}, this "
                f"one replays {self.name!r}; build it with name={_short(state.get('name'))}",
            )
        unknown = sorted(str(k) for k in set(state) - _SCHEDULER_KEYS)
        if unknown:
            raise _state_error(
                owner,
                f"the state_dict has entries {unknown} that ScheduleLR.state_dict() does not write",
            )
        epoch = state["last_epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < -1:
            raise StateError(
                f"ScheduleLR.load_state_dict: last_epoch must be an int, got {epoch!r}"
            )
        groups = len(self.optimizer.param_groups)
        base = _state_lrs(owner, "base_lrs", state["base_lrs"], groups)
        if not any(float(b) > 0 for b in base):
            raise _state_error(
                owner, f"'base_lrs' must hold a positive LR (a reference group), got {base}"
            )
        if "_last_lr" in state:
            _state_lrs(owner, "_last_lr", state["_last_lr"], groups)
        if "_step_count" in state:
            _state_int(owner, "_step_count", state["_step_count"])
        for k in ("_is_initial", "_get_lr_called_within_step", "verbose"):
            if k in state and not isinstance(state[k], (bool, int)):
                raise _state_error(owner, f"{k!r} must be a bool, got {_short(state[k])}")
        ratios = state.get("_ratios")
        if ratios is not None and not isinstance(ratios, (list, tuple)):
            raise _state_error(owner, f"'_ratios' must be a list or None, got {_short(ratios)}")
        # Everything checked: copy the entries this torch's scheduler has (the ratios are
        # recomputed from base_lrs; optimizer and schedule stay this scheduler's own).
        for k in _SCHEDULER_KEYS - {"schedule", "_ratios", "name", "schedule_digest"}:
            if k in state and k in self.__dict__:
                v = state[k]
                self.__dict__[k] = list(v) if isinstance(v, (list, tuple)) else v
        self._ratios = None


# Entries of ScheduleLR.state_dict() across torch releases ("verbose": torch < 2.7;
# "_is_initial": torch >= 2.7); "schedule" was accepted (and ignored) before.
_SCHEDULER_KEYS = frozenset(
    {"name", "schedule_digest", "_ratios", "base_lrs", "last_epoch", "_step_count",
     "_is_initial", "_get_lr_called_within_step", "_last_lr", "verbose", "schedule"}
)  # fmt: skip


def _is_lr(value: Any) -> bool:
    """A finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int beyond float range
        return False


def _state_lrs(owner: str, key: str, value: Any, groups: int) -> list[Any]:
    """One finite LR >= 0 per param group (numbers or one-element tensors, as torch allows)."""
    if not isinstance(value, (list, tuple)) or len(value) != groups:
        raise _state_error(
            owner,
            f"{key!r} must be a list of {groups} LRs (one per param group of this optimizer), "
            f"got {_short(value)}: the state comes from another optimizer setup",
        )
    for v in value:
        ok = isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point()
        if not (_is_lr(float(v)) if ok else _is_lr(v)):
            raise _state_error(
                owner, f"{key!r} must hold finite LRs >= 0, got {_short(v)} in {_short(value)}"
            )
    return list(value)
