"""A recorded hyperparameter schedule: export, inspect, replay in a plain training run."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError
from .._hypergrad import (
    _short,
    _state_error,
    _state_float,
    _state_int,
    _state_list,
    _state_version,
)

_STATE_VERSION = 1  # states without the key (written before it existed) are read as version 1

__all__ = ["Schedule"]


@dataclass
class Schedule:
    """Hyperparameter values over weight steps, piecewise constant between records.

    Attributes:
        names: Hyperparameter names.
        steps: Weight step of each record (non-decreasing).
        values: One row of constrained values per record, in ``names`` order.
        discrete: Names whose values are integers.

    Example:
        >>> s = Schedule(["drop"], [0, 100], [[0.05], [0.3]])
        >>> s.at(50), s.at(100)
        ({'drop': 0.05}, {'drop': 0.3})
        >>> drop = nn.Dropout(0.0)
        >>> _ = s.apply(120, dropout={"drop": drop})
        >>> drop.p
        0.3
    """

    names: list[str]
    steps: list[int]
    values: list[list[float]]
    discrete: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.values):
            raise ConfigError("Schedule: steps and values have different lengths")
        if any(b < a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ConfigError("Schedule: steps must be non-decreasing")
        for row in self.values:
            if len(row) != len(self.names):
                raise ConfigError(
                    f"Schedule: a row has {len(row)} values for {len(self.names)} names"
                )

    def __len__(self) -> int:
        return len(self.steps)

    def at(self, step: int) -> dict[str, float]:
        """Values in force at weight step ``step`` (the last record at or before it)."""
        if not self.steps:
            raise ConfigError("Schedule is empty")
        i = max(0, bisect.bisect_right(self.steps, step) - 1)
        out = dict(zip(self.names, self.values[i], strict=True))
        for n in self.discrete:
            out[n] = float(math.floor(out[n]))
        return out

    def series(self, name: str) -> list[float]:
        """Recorded values of ``name``."""
        if name not in self.names:
            raise ConfigError(f"Schedule has no hyperparameter {name!r}; it has {self.names}")
        j = self.names.index(name)
        return [row[j] for row in self.values]

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

    def state_dict(self) -> dict[str, Any]:
        """Plain lists (JSON- and ``weights_only``-safe)."""
        return {
            "version": _STATE_VERSION,
            "kind": "Schedule",
            "names": list(self.names),
            "steps": list(self.steps),
            "values": [list(r) for r in self.values],
            "discrete": list(self.discrete),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Schedule:
        """Rebuild from :meth:`state_dict` (or its JSON; states without ``version`` too).

        Raises:
            StateError: Not a Schedule state, or entries of the wrong type or length.
        """
        owner = "Schedule.from_state_dict"
        _state_version(owner, state, ("names", "steps", "values"), (1,), 1)
        names = _state_list(owner, "names", state["names"])
        if not all(isinstance(n, str) for n in names):
            raise _state_error(owner, f"'names' must be a list of str, got {_short(names)}")
        steps = [_state_int(owner, "steps", v) for v in _state_list(owner, "steps", state["steps"])]
        if any(b < a for a, b in itertools.pairwise(steps)):
            raise _state_error(owner, f"'steps' must be non-decreasing, got {_short(steps)}")
        rows = _state_list(owner, "values", state["values"], len(steps))
        values = [
            [_state_float(owner, "values", v, finite=False) for v in _state_list(
                owner, f"values[{i}]", r, len(names))]
            for i, r in enumerate(rows)
        ]  # fmt: skip
        discrete = _state_list(owner, "discrete", state.get("discrete", []))
        unknown = [n for n in discrete if n not in names]
        if unknown:
            raise _state_error(owner, f"'discrete' names {unknown} that are not in {names}")
        return cls(names, steps, values, discrete)  # type: ignore[arg-type]
