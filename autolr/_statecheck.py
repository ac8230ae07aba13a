"""State-dict checks shared by every stateful tuner (HD, STN, FedHyper, Schedule, Flower).

Every ``load_state_dict`` checks the whole state before changing anything and words its errors
alike: ``"<Owner>.load_state_dict: <what is wrong>, <what was expected>"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._errors import StateError

#: Key sets that identify each tuner's state_dict, to say what a wrong state is.
_STATE_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("a torch optimizer state_dict", frozenset({"state", "param_groups"})),
    ("an AutoLRS state_dict", frozenset({"search", "phase", "snapshot"})),
    ("a HypergradientLR state_dict", frozenset({"optimizer", "hypergrad"})),
    ("an STNTuner state_dict", frozenset({"space", "hyper_optimizer", "names"})),
    ("a FedHyperServer state_dict", frozenset({"config", "round", "global_lr"})),
    ("a FedHyperClient state_dict", frozenset({"base_lr", "scale", "steps_skipped"})),
    ("a HyperSpace state_dict", frozenset({"unconstrained", "rho"})),
    ("a Schedule state_dict", frozenset({"names", "steps", "values"})),
)
# Param-group keys torch added over releases (and restores with defaults on load): their
# absence says nothing about the optimizer type.
_OPTIONAL_GROUP_KEYS = frozenset(
    {"params", "param_names", "initial_lr", "differentiable", "foreach", "fused", "capturable",
     "maximize", "decoupled_weight_decay", "hd_lr"}
)  # fmt: skip
# Per-parameter optimizer state shaped like the parameter (SGD, Adam(W), RMSprop, Adagrad, ...).
_PARAM_SHAPED = frozenset(
    {"momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "acc_delta",
     "sum", "grad_avg", "ax", "prev", "exp_inf"}
)  # fmt: skip


def _describe_state(state: Any) -> str:
    """What ``state`` looks like, for an error message ("an AutoLRS state_dict", "a list", ...)."""
    if state is None:
        return "None"
    if not isinstance(state, Mapping):
        return f"a {type(state).__name__}"
    kind = state.get("kind")
    if isinstance(kind, str):  # every tuner's state_dict names its class
        return f"{'an' if kind in ('AutoLRS', 'STNTuner') else 'a'} {kind} state_dict"
    keys = set(state)
    for what, signature in _STATE_SIGNATURES:
        if signature <= keys:
            return what
    if keys and all(isinstance(v, Tensor) for v in state.values()):
        return "a model (module) state_dict"
    names = sorted(str(k) for k in keys)
    more = ", ..." if len(names) > 8 else ""
    return f"a dict with keys [{', '.join(names[:8])}{more}]"


def _state_error(owner: str, message: str) -> StateError:
    # ``owner`` is a class name (the method is load_state_dict) or "Class.method"
    where = owner if "." in owner else f"{owner}.load_state_dict"
    return StateError(f"{where}: {message}")


def _state_version(
    owner: str, state: Any, signature: Collection[str], versions: Collection[int],
    unversioned: int | None = None,
) -> int:  # fmt: skip
    """Check that ``state`` is ``owner``'s state_dict; returns its format version.

    ``unversioned`` is the version assumed for states written before the key existed (None:
    such states are refused).
    """
    cls = owner.split(".")[0]
    if (
        not isinstance(state, Mapping)
        or not set(signature) <= set(state)
        or state.get("kind", cls) != cls
    ):
        raise _state_error(
            owner,
            f"got {_describe_state(state)}, expected one from {cls}.state_dict() (keys "
            f"{sorted(signature)}, ...)",
        )
    version = state.get("version", unversioned)
    if version is None:
        raise _state_error(
            owner,
            f"the state_dict has no 'version': an old format this autolr no longer reads "
            f"(it reads versions {sorted(versions)})",
        )
    if isinstance(version, bool) or version not in versions:
        raise _state_error(
            owner,
            f"unknown state_dict version {version!r}; this autolr reads versions "
            f"{sorted(versions)}",
        )
    return int(version)


def _state_keys(owner: str, state: Mapping[str, Any], keys: Iterable[str], where: str = "") -> None:
    """Raise naming every key of ``keys`` missing from ``state``."""
    missing = [k for k in keys if k not in state]
    if missing:
        where = f"'s {where!r} entry" if where else ""
        raise _state_error(owner, f"the state_dict{where} lacks {missing}")


def _state_int(owner: str, key: str, value: Any, *, low: int = 0, high: int | None = None) -> int:
    """An int ``>= low`` (and ``< high``) from a state_dict, or a StateError naming ``key``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value >= high)
    ):
        rng = f">= {low}" if high is None else f"in [{low}, {high})"
        raise _state_error(owner, f"{_name(key)} must be an int {rng}, got {_short(value)}")
    return int(value)


def _state_float(
    owner: str, key: str, value: Any, *, finite: bool = True, low: float | None = None,
    positive: bool = False, none: bool = False,
) -> float | None:  # fmt: skip
    """A float from a state_dict, or a StateError naming ``key``.

    ``low``: at least this; ``positive``: above 0; ``none``: None allowed.
    """
    if value is None and none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        value = float(value)
        ok = not (finite and not math.isfinite(value))
        ok = ok and not (positive and not value > 0) and not (low is not None and not value >= low)
    if not ok:
        want = ("a finite " if finite else "a ") + "number"
        want += " > 0" if positive else f" >= {low:g}" if low is not None else ""
        want += " or None" if none else ""
        raise _state_error(owner, f"{_name(key)} must be {want}, got {_short(value)}")
    return value  # type: ignore[return-value]


def _state_list(owner: str, key: str, value: Any, length: int | None = None) -> list[Any]:
    """A list (or tuple) of the given length from a state_dict, or a StateError naming ``key``."""
    if not isinstance(value, (list, tuple)):
        raise _state_error(owner, f"{_name(key)} must be a list, got {_short(value)}")
    if length is not None and len(value) != length:
        raise _state_error(
            owner,
            f"{_name(key)} has {len(value)} entries in the state_dict, {length} expected here",
        )
    return list(value)


def _state_config(owner: str, saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise listing every argument whose saved value differs from this object's."""
    cls = owner.split(".")[0]
    diff = [
        f"{k}: saved {_short(saved[k])}, this {cls} has {_short(v)}"
        for k, v in current.items()
        if k in saved and not _same(saved[k], v)
    ]
    if diff:
        raise _state_error(
            owner,
            f"the state_dict was saved with different arguments ({'; '.join(diff)}); build the "
            f"{cls} with the saved arguments to resume from it",
        )


def _state_tensor(owner: str, key: str, value: Any, shape: Sequence[int], where: str) -> Tensor:
    """A tensor of ``shape`` from a state_dict; the error names it and both shapes."""
    if not isinstance(value, Tensor):
        raise _state_error(owner, f"{_name(key)} must be a tensor, got {_short(value)}")
    if tuple(value.shape) != tuple(shape):
        raise _state_error(
            owner,
            f"{_name(key)} has shape {tuple(value.shape)} in the state_dict but {tuple(shape)} in "
            f"{where}: the state comes from another model",
        )
    return value


def _state_optimizer(owner: str, key: str, optimizer: torch.optim.Optimizer, saved: Any) -> None:
    """Check a torch optimizer state_dict against ``optimizer`` (groups, type, values, shapes).

    torch itself checks only the group sizes: a state tensor of another shape, a state of
    another optimizer type or a corrupt entry (``lr="fast"``, an Adam state without
    ``exp_avg_sq``) fails later, at the next step or half-way through torch's own load. Every
    optimizer gets the group and shape checks and "a hyperparameter that is a number here is a
    number in the state"; SGD and Adam/AdamW (whose state torch reads without checking) also
    get their per-parameter entries checked.
    """
    name = type(optimizer).__name__
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        raise _state_error(owner, f"{key!r} must be a torch optimizer state_dict, got "
                                  f"{_describe_state(saved)}")  # fmt: skip
    groups = optimizer.param_groups
    saved_groups = _state_list(owner, f"{key}['param_groups']", saved["param_groups"])
    if len(saved_groups) != len(groups):
        raise _state_error(
            owner,
            f"{key!r} has {len(saved_groups)} param groups in the state_dict, this {name} has "
            f"{len(groups)}: the state comes from another model or optimizer setup",
        )
    ids: dict[Any, Tensor] = {}
    group_of: dict[Any, Mapping[str, Any]] = {}  # saved group of each saved parameter id
    for i, (g, sg) in enumerate(zip(groups, saved_groups)):
        if not isinstance(sg, Mapping) or not isinstance(sg.get("params"), (list, tuple)):
            raise _state_error(owner, f"{key}['param_groups'][{i}] is not a param group")
        if len(sg["params"]) != len(g["params"]):
            raise _state_error(
                owner,
                f"{key}['param_groups'][{i}] holds {len(sg['params'])} parameters in the "
                f"state_dict, {len(g['params'])} in this {name}: the state comes from another "
                "model",
            )
        lacks = sorted(set(g) - set(sg) - _OPTIONAL_GROUP_KEYS)
        if lacks:
            raise _state_error(
                owner,
                f"{key}['param_groups'][{i}] lacks {lacks} of this {name}: the state comes "
                "from another optimizer type",
            )
        for k, v in g.items():
            if k not in ("params", "param_names") and k in sg:
                _group_value(owner, f"{key}['param_groups'][{i}][{k!r}]", v, sg[k])
        ids.update(zip(sg["params"], g["params"]))
        group_of.update(dict.fromkeys(sg["params"], sg))
    if not isinstance(saved["state"], Mapping):
        raise _state_error(owner, f"{key}['state'] must be a dict, got {_short(saved['state'])}")
    for pid, entry in saved["state"].items():
        p = ids.get(pid)
        if p is None:
            continue
        where = f"{key}['state'][{pid}]"
        if isinstance(optimizer, (torch.optim.SGD, torch.optim.Adam)):
            _known_param_state(owner, where, optimizer, group_of[pid], entry)
        if not isinstance(entry, Mapping):
            continue
        for k, v in entry.items():
            if k in _PARAM_SHAPED and isinstance(v, Tensor) and tuple(v.shape) != tuple(p.shape):
                raise _state_error(
                    owner,
                    f"{where}[{k!r}] has shape {tuple(v.shape)} in the state_dict but its "
                    f"parameter has shape {tuple(p.shape)} here: the state comes from another "
                    "model",
                )


def _is_number(value: Any) -> bool:
    """A real number or a one-element real tensor (torch allows tensor LRs and betas)."""
    if isinstance(value, Tensor):
        return value.numel() == 1 and not (value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _group_value(owner: str, where: str, mine: Any, saved: Any) -> None:
    """A saved group hyperparameter that is a number (or a tuple of numbers) here must be one.

    Flags, ``None`` and other values are left to torch: their types differ across releases.
    """
    if isinstance(mine, (list, tuple)) and mine and all(_is_number(v) for v in mine):
        ok = isinstance(saved, (list, tuple)) and len(saved) == len(mine)
        if not (ok and all(_is_number(v) for v in saved)):
            raise _state_error(
                owner, f"{where} must be a list of {len(mine)} numbers, got {_short(saved)}"
            )
    elif _is_number(mine) and not _is_number(saved):
        raise _state_error(owner, f"{where} must be a number, got {_short(saved)}")


def _known_param_state(
    owner: str, where: str, optimizer: torch.optim.Optimizer, group: Mapping[str, Any],
    entry: Any,
) -> None:  # fmt: skip
    """Check one parameter's saved SGD or Adam(W) state: the entries torch reads at its step.

    An empty entry is fine (torch initialises it at the next step), as is an SGD entry without
    ``momentum_buffer`` (torch starts the buffer from the gradient).
    """
    if not isinstance(entry, Mapping):
        raise _state_error(owner, f"{where} must be a dict, got {_short(entry)}")
    if isinstance(optimizer, torch.optim.SGD):
        buf = entry.get("momentum_buffer")
        if buf is not None and not isinstance(buf, Tensor):
            raise _state_error(
                owner, f"{where}['momentum_buffer'] must be a tensor or None, got {_short(buf)}"
            )
        return
    if not entry:
        return
    # the saved group's amsgrad is the one the loaded optimizer will run with
    keys = ["step", "exp_avg", "exp_avg_sq", *(["max_exp_avg_sq"] * bool(group.get("amsgrad")))]
    missing = [k for k in keys if k not in entry]
    if missing:
        raise _state_error(
            owner, f"{where} lacks {missing}: the state comes from another optimizer setup"
        )
    step = entry["step"]
    ok = _is_number(step)
    if ok:  # (a tensor step costs one host sync; loading is rare)
        value = float(step.item() if isinstance(step, Tensor) else step)
        ok = math.isfinite(value) and value >= 0
    if not ok:
        raise _state_error(
            owner, f"{where}['step'] must be a finite number >= 0, got {_short(step)}"
        )
    for k in keys[1:]:
        if not isinstance(entry[k], Tensor):
            raise _state_error(owner, f"{where}[{k!r}] must be a tensor, got {_short(entry[k])}")


def _same(a: Any, b: Any) -> bool:
    # tuples come back as lists from JSON; numbers compare by value
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _name(key: str) -> str:
    # plain keys quoted ('steps'), paths as they are (optimizer['state'][0])
    return key if "[" in key or "'" in key else repr(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
