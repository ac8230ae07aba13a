"""The tuner's per-step record, kept as columns.

A run of a million steps would hold a million named tuples (~180 bytes each, ~180 MB); the
columns take 33 bytes a step, and appending the fast path's steps in bulk costs a few
nanoseconds a step instead of building one tuple each. Records are built only when read.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from .._errors import StateError

__all__ = ["PHASES", "History", "HistoryRecord"]

PHASES = ("warmup", "search", "exploit", "final", "done")
_CODE = {p: i for i, p in enumerate(PHASES)}


class HistoryRecord(NamedTuple):
    """One optimizer step as the tuner saw it (immutable; a named tuple, cheap to build).

    Attributes:
        step: Index of the optimizer step (0-based, every call to :meth:`AutoLRS.step` but
            those reporting a skipped step).
        stage: Stage the step belongs to.
        phase: ``"warmup"``, ``"search"`` (a candidate's trial step), ``"exploit"`` or
            ``"final"`` (the winner trains the stage / the remaining budget).
        lr: The LR the optimizer used for this step.
        loss: The loss reported for this step (``None`` if not yet synchronised).
        forecast: On a candidate's last step, its forecast loss at τ (``inf`` if penalised).
    """

    step: int
    stage: int
    phase: str
    lr: float
    loss: float | None
    forecast: float | None = None


class History:
    """Append-only columns of :class:`HistoryRecord` fields (see the module docstring).

    A loss not yet read back from the device (``None``) is kept as NaN and its index in
    ``unsynced``; forecasts, set on a candidate's last step only, are a sparse mapping.
    """

    __slots__ = ("_built", "_dirty", "forecast", "loss", "lr", "phase", "stage", "step", "unsynced")

    def __init__(self) -> None:
        self.step = array("q")
        self.stage = array("q")
        self.phase = bytearray()
        self.lr = array("d")
        self.loss = array("d")
        self.forecast: dict[int, float] = {}
        self.unsynced: set[int] = set()
        # Records built by records(), kept so that reading the history every step (say its
        # last record, for logging) costs a list copy, not a rebuild of every record; the
        # indices changed since they were built are rebuilt on the next read.
        self._built: list[HistoryRecord] = []
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self.step)

    def append(self, step: int, stage: int, phase: str, lr: float, loss: float | None) -> None:
        """Record one step (``loss=None``: its value is still on the device)."""
        if loss is None:
            self.unsynced.add(len(self.step))
            loss = math.nan
        self.step.append(step)
        self.stage.append(stage)
        self.phase.append(_CODE[phase])
        self.lr.append(lr)
        self.loss.append(loss)

    def extend(
        self, first: int, stage: int, phase: str, lrs: Sequence[float], losses: Sequence[float]
    ) -> None:
        """Record ``len(losses)`` consecutive steps from step ``first`` (one stage and phase)."""
        n = len(losses)
        self.step.extend(range(first, first + n))
        self.stage.extend([stage] * n)
        self.phase.extend(bytes([_CODE[phase]]) * n)
        self.lr.extend(lrs)
        self.loss.extend(losses)

    def set_loss(self, i: int, value: float) -> None:
        """Fill in the loss of record ``i`` once it is read back."""
        i = range(len(self.step))[i]
        self.loss[i] = value
        self.unsynced.discard(i)
        if i < len(self._built):
            self._dirty.add(i)

    def set_forecast(self, i: int, value: float) -> None:
        """Attach a candidate's forecast to record ``i`` (negative ``i`` counts from the end)."""
        i = range(len(self.step))[i]
        self.forecast[i] = value
        if i < len(self._built):
            self._dirty.add(i)

    def __getitem__(self, i: int) -> HistoryRecord:
        i = range(len(self.step))[i]
        return HistoryRecord(
            self.step[i],
            self.stage[i],
            PHASES[self.phase[i]],
            self.lr[i],
            None if i in self.unsynced else self.loss[i],
            self.forecast.get(i),
        )

    def records(self) -> list[HistoryRecord]:
        """Every record, in a new list (built once, then only the new and changed ones)."""
        built = self._built
        for i in self._dirty:  # only indices already built (set_loss, set_forecast)
            built[i] = self[i]
        self._dirty.clear()
        if len(built) < len(self.step):
            built.extend(self._build(len(built)))
        return list(built)

    def __iter__(self) -> Iterator[HistoryRecord]:
        return self._build(0)

    def _build(self, start: int) -> Iterator[HistoryRecord]:
        unsynced, forecast = self.unsynced, self.forecast
        cols = zip(
            self.step[start:],
            self.stage[start:],
            [PHASES[c] for c in self.phase[start:]],
            self.lr[start:],
            self.loss[start:],
        )
        for i, (a, b, c, d, e) in enumerate(cols, start):
            yield HistoryRecord(a, b, c, d, None if i in unsynced else e, forecast.get(i))

    def to_state(self) -> dict[str, Any]:
        """The columns as CPU tensors (the tuner's ``state_dict`` entry).

        A million steps save and load in milliseconds; as lists of Python numbers they took
        seconds each way. Phases are codes into :data:`PHASES`; forecasts are sparse
        (``index``, ``value``). A loss never read back (the tuner flushes them first) is
        saved as NaN.
        """
        at = sorted(self.forecast)
        return {
            "step": _tensor(self.step, torch.int64),
            "stage": _tensor(self.stage, torch.int64),
            "phase": _tensor(self.phase, torch.uint8),
            "lr": _tensor(self.lr, torch.float64),
            "loss": _tensor(self.loss, torch.float64),
            "forecast": {
                "index": torch.tensor(at, dtype=torch.int64, device="cpu"),
                "value": torch.tensor(
                    [self.forecast[i] for i in at], dtype=torch.float64, device="cpu"
                ),
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> History:
        """The history in ``state`` (:meth:`to_state`'s format), checked.

        Raises:
            StateError: A column is missing, not a 1-D CPU tensor of its dtype, of another
                length than the others, or holds a value out of range.
        """
        cols = {}
        for name, dtype in _DTYPES.items():
            cols[name] = _column(state.get(name), f"history.{name}", dtype)
        fc = state.get("forecast")
        if not isinstance(fc, Mapping):
            raise StateError(f"history.forecast is {type(fc).__name__}, not a dict of tensors")
        index = _column(fc.get("index"), "history.forecast.index", torch.int64)
        value = _column(fc.get("value"), "history.forecast.value", torch.float64)
        n = len(cols["step"])
        if any(len(c) != n for c in cols.values()):
            raise StateError("the history columns have different lengths")
        if len(index) != len(value):
            raise StateError("history.forecast's index and value have different lengths")
        for name in ("step", "stage"):
            if n and int(cols[name].min()) < 0:
                raise StateError(f"history.{name} holds a negative value")
        if n and int(cols["phase"].max()) >= len(PHASES):
            raise StateError(f"history.phase holds a code >= {len(PHASES)} (phases: {PHASES})")
        if len(index) and (
            int(index[0]) < 0 or int(index[-1]) >= n or bool((index[1:] <= index[:-1]).any())
        ):
            raise StateError("history.forecast.index is not increasing within the history")
        h = cls()
        h.step.frombytes(cols["step"].numpy().tobytes())
        h.stage.frombytes(cols["stage"].numpy().tobytes())
        h.phase.extend(cols["phase"].numpy().tobytes())
        h.lr.frombytes(cols["lr"].numpy().tobytes())
        h.loss.frombytes(cols["loss"].numpy().tobytes())
        h.forecast = dict(zip(index.tolist(), value.tolist()))
        return h


_DTYPES = {
    "step": torch.int64,
    "stage": torch.int64,
    "phase": torch.uint8,
    "lr": torch.float64,
    "loss": torch.float64,
}


def _tensor(column: array | bytearray, dtype: torch.dtype) -> torch.Tensor:
    if not len(column):
        return torch.empty(0, dtype=dtype, device="cpu")  # not the default device
    return torch.frombuffer(bytearray(column), dtype=dtype)


def _column(value: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise StateError(f"{name} is {type(value).__name__}, not a tensor")
    if value.dtype != dtype or value.dim() != 1:
        raise StateError(
            f"{name} is a {value.dim()}-d {value.dtype} tensor, not a 1-d {dtype} tensor"
        )
    return value.detach().cpu().contiguous()
