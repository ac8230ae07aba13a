"""The scheduler's saved state, checked before anything is loaded, and config comparisons.

:func:`parse_state` turns an :meth:`AutoLRSScheduler.state_dict` into checked values (attribute
name -> value) without touching the scheduler, so a failed load changes nothing;
:func:`config_diff` lists the arguments a state was saved with that differ from a scheduler's;
:func:`config_differences` compares two trials' configs (values that cannot be compared are
left alone).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from autolr import StagePlan
from autolr._errors import StateError

from ._jobs import CandidateCheckpoint, Job

__all__ = ["config_diff", "config_differences", "parse_state", "plain", "same"]

_PHASES = ("search", "exploit", "final", "race")
_WAVES = ("stage", "search", "lineage")
_MISSING = "<missing>"


# ---------------------------------------------------------------------- value checks
def _int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise StateError(f"{name}={value!r} is not an int >= {minimum}")
    return int(value)


def _opt_int(value: Any, name: str, minimum: int = 0) -> int | None:
    return None if value is None else _int(value, name, minimum)


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise StateError(f"{name}={value!r} is not a number")
    return float(value)


def _seq(value: Any, name: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise StateError(f"{name} is {type(value).__name__} {value!r}, not a list")
    if length is not None and len(value) != length:
        raise StateError(f"{name}={value!r} does not have {length} entries")
    return list(value)


def _map(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StateError(f"{name} is {type(value).__name__} {value!r}, not a mapping")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise StateError(f"{name}={value!r} is not a string")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise StateError(f"{name}={value!r} is not a bool")
    return value


def checkpoint_ref(value: Any, name: str) -> tuple[str, dict[str, Any]] | None:
    """A saved ``[path, metrics]`` (``None``: the initial state)."""
    if value is None:
        return None
    path, metrics = _seq(value, name, 2)
    return _str(path, f"{name}[0]"), dict(_map(metrics, f"{name}[1]"))


# ---------------------------------------------------------------------- records
def parse_job(d: Any, name: str) -> Job:
    """:meth:`Job.from_state` with every entry checked (StateError naming the bad one)."""
    d = dict(_map(d, name))
    for key in ("kind", "lr", "start", "length"):
        if key not in d:
            raise StateError(f"{name} lacks {key!r}")
    kind = d["kind"]
    if kind not in ("candidate", "exploit", "final", "race", "wait"):
        raise StateError(f"{name}.kind={kind!r} is not a job kind")
    _num(d["lr"], f"{name}.lr")
    _int(d["start"], f"{name}.start")
    for key in ("length", "spec_end"):
        _opt_int(d.get(key), f"{name}.{key}")
    for key in ("over", "skips"):
        _int(d.get(key, 0), f"{name}.{key}")
    for key in ("finished", "penalised", "scored", "harvested", "warmup", "own"):
        if key in d:
            _bool(d[key], f"{name}.{key}")
    for key in ("forecast", "ref", "select"):
        if d.get(key) is not None:
            _num(d[key], f"{name}.{key}")
    _str(d.get("reason", ""), f"{name}.reason")
    _map(d.get("schedule") or {}, f"{name}.schedule")
    for pair in _seq(d.get("losses", []), f"{name}.losses"):
        offset, loss = _seq(pair, f"{name}.losses[]", 2)
        _int(offset, f"{name}.losses offset")
        _num(loss, f"{name}.losses value")
    checkpoint_ref(d.get("source"), f"{name}.source")
    d.setdefault("losses", [])
    try:
        return Job.from_state(d)
    except (TypeError, ValueError, KeyError) as exc:  # an entry Job does not have
        raise StateError(f"{name}: {exc}") from exc


def _candidate_checkpoint(c: Any, name: str) -> CandidateCheckpoint:
    lr, tid, path, metrics = _seq(c, name, 4)
    _num(lr, f"{name} lr")
    _str(tid, f"{name} trial id")
    _str(path, f"{name} path")
    _map(metrics, f"{name} metrics")
    return CandidateCheckpoint.from_state([lr, tid, path, metrics])


def _wave(w: Any) -> dict[str, Any] | None:
    if w is None:
        return None
    w = dict(_map(w, "wave"))
    if w.get("kind") not in _WAVES:
        raise StateError(f"wave.kind={w.get('kind')!r} is not one of {_WAVES}")
    if w.get("job") is not None:
        parse_job(w["job"], "wave.job")
    if w.get("plan") is not None:
        try:
            StagePlan(**_map(w["plan"], "wave.plan"))
        except TypeError as exc:
            raise StateError(f"wave.plan: {exc}") from exc
    checkpoint_ref(w.get("source"), "wave.source")
    if w.get("trial") is not None:
        _str(w["trial"], "wave.trial")
    if w.get("mode", "source") not in ("own", "cooldown", "source"):
        raise StateError(f"wave.mode={w['mode']!r} is not 'own', 'cooldown' or 'source'")
    for key in ("start", "iteration"):
        _opt_int(w.get(key), f"wave.{key}")
    return w


def _segment(seg: list[Any]) -> list[Any]:
    for value, what in zip(seg, ("start", "end", "lr")):
        _num(value, f"segments {what}")
    return list(seg)


def parse_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The checked contents of a version-2 state: attribute name -> value; changes nothing.

    Raises:
        StateError: Naming the first missing or malformed entry.
    """
    try:
        phase = state["phase"]
        if phase not in _PHASES:
            raise StateError(f"unknown phase {phase!r} (one of {_PHASES})")
        jobs = _map(state["jobs"], "jobs")
        trials = _seq(state["stage_trials"], "stage_trials")
        stage_trials = [dict(_map(s, "stage_trials[]")) for s in trials]
        recent = [_seq(p, "recent[]", 2) for p in _seq(state["recent"], "recent")]
        segments = [_seq(s, "segments[]", 3) for s in _seq(state["segments"], "segments")]
        warm = state["warm"]
        if warm is not None:
            steps, peak = _seq(warm, "warm", 2)
            warm = [_int(steps, "warm steps"), _num(peak, "warm peak")]
        if state.get("config") is not None:
            _map(state["config"], "config")
        return {
            "variant": _str(state["variant"], "variant"),
            "max_t": _opt_int(state.get("max_t"), "max_t", 1),
            "_population": _opt_int(state.get("population"), "population", 1),
            "search": _map(state["search"], "search"),
            "phase": phase,
            "_jobs": {str(t): parse_job(j, f"jobs[{t!r}]") for t, j in jobs.items()},
            "_dead": {
                str(t): _str(w, f"dead[{t!r}]") for t, w in _map(state["dead"], "dead").items()
            },
            "_stopping": {_str(t, "stopping[]") for t in _seq(state["stopping"], "stopping")},
            "_stage_ckpt": checkpoint_ref(state["stage_ckpt"], "stage_ckpt"),
            "_stage_start": _int(state["stage_start"], "stage_start"),
            "_stage_k": _int(state["stage_k"], "stage_k"),
            "_proposed": [_num(v, "proposed[]") for v in _seq(state["proposed"], "proposed")],
            "_cand_ckpts": [
                _candidate_checkpoint(c, "cand_ckpts[]")
                for c in _seq(state["cand_ckpts"], "cand_ckpts")
            ],
            "_wave": _wave(state["wave"]),
            "_started": _bool(state["started"], "started"),
            "_warm": warm,
            "_recent": {_int(k, "recent iteration"): _num(v, "recent loss") for k, v in recent},
            "_segments": [_segment(s) for s in segments],
            "stage_trials": stage_trials,
            "events": [_str(e, "events[]") for e in _seq(state["events"], "events")],
            "recoveries": _int(state["recoveries"], "recoveries"),
            # Absent before it existed.
            "skipped_losses": _int(state.get("skipped_losses", 0), "skipped_losses"),
        }
    except KeyError as exc:
        raise StateError(f"not an AutoLRSScheduler state_dict: it lacks {exc}") from None
    except StateError as exc:
        raise StateError(f"invalid AutoLRSScheduler state_dict: {exc}") from None


# ---------------------------------------------------------------------- comparisons
def plain(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts (as a saved state holds them)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _nan(x: Any) -> bool:
    try:
        return isinstance(x, numbers.Number) and math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False


def same(a: Any, b: Any) -> bool:
    """Whether two config values are the same, as far as they can be compared.

    Mappings and sequences are compared entry by entry; NaN equals NaN. Values whose ``==``
    says nothing (objects compared by identity, which Ray copies per trial; arrays and tensors,
    whose ``==`` is elementwise; values whose ``==`` raises) count as the same.
    """
    if a is b:
        return True
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    seqs = (list, tuple)
    if isinstance(a, seqs) and isinstance(b, seqs):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (Mapping, list, tuple)) or isinstance(b, (Mapping, list, tuple)):
        return False
    if _nan(a) and _nan(b):
        return True
    try:
        eq = a == b
    except Exception:  # not comparable: not compared
        return True
    if eq is True or eq is False or type(eq).__name__ == "bool_":
        if bool(eq):
            return True
        identity = type(a) is type(b) and type(a).__eq__ is object.__eq__
        return identity  # copies of one object compare unequal by identity alone
    return True  # elementwise (arrays, tensors): not compared


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(
    first: Mapping[str, Any], other: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """``"key: X in the first trial, Y here"`` for every key whose values differ."""
    out = []
    for key in sorted(set(first) | set(other), key=str):
        a, b = first.get(key, _MISSING), other.get(key, _MISSING)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{name}.")
        elif not same(a, b):
            out.append(f"{name}: {_short(a)} in the first trial, {_short(b)} here")
    return out


def config_diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"name: saved X, given Y"`` for every argument of ``now`` that ``saved`` differs in."""
    out = []
    for name, mine in now.items():
        theirs = plain(saved.get(name, _MISSING))
        if not same(theirs, plain(mine)):
            out.append(f"{name}: saved {theirs!r}, given {plain(mine)!r}")
    return out
