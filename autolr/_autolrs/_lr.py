"""Setting one LR on an optimizer whose parameter groups keep their ratios."""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from .._errors import ConfigError

__all__ = ["GroupLRs"]

# A tensor LR holds the written float rounded to its dtype (float32: ~6e-8 relative).
_REL_TOL = 1e-6
# Per optimizer, the step hooks of GroupLRs.watch with the (weak) object each one serves.
_WATCHED: weakref.WeakKeyDictionary[Any, list[tuple[weakref.ref[Any], Any]]] = (
    weakref.WeakKeyDictionary()
)


class GroupLRs:
    """Writes an LR into every parameter group, scaled by the group's ratio to the reference.

    The ratios are read once, from the LRs the optimizer was built with. The reference
    group is the first with a positive LR; a group built with ``lr=0`` is frozen and stays
    at 0. Shared by the in-loop tuner and Ray's ``TuneCheckpointer`` so both apply an LR the
    same way. :meth:`watch` and :meth:`drift` tell whether something else changed an LR.

    Args:
        optimizer: The optimizer whose groups' LRs are set.

    Raises:
        ConfigError: A group's LR is not a finite number >= 0, or every group is at 0
            (there is no ratio to keep).

    Example:
        >>> p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [q], "lr": 0.05}])
        >>> GroupLRs(opt).set(1.0)
        >>> [g["lr"] for g in opt.param_groups]
        [1.0, 0.5]
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        base: list[float] = []
        for i, group in enumerate(optimizer.param_groups):
            lr = _number(group.get("lr"))
            if not (math.isfinite(lr) and lr >= 0):
                raise ConfigError(
                    f"param group {i} has lr={group.get('lr')!r}; each group's LR must be a "
                    "finite number >= 0 (the tuner keeps the groups' LR ratios; 0 freezes a group)"
                )
            base.append(lr)
        ref = next((i for i, lr in enumerate(base) if lr > 0), None)
        if ref is None:
            raise ConfigError(
                f"every parameter group has lr=0 ({len(base)} group(s)): the tuner scales the "
                "groups' LRs keeping their ratios, so at least one group needs a positive LR "
                "(build the optimizer with e.g. lr=1e-3; a group at lr=0 stays frozen)"
            )
        scales = [lr / base[ref] for lr in base]
        bad = [i for i, s in enumerate(scales) if not math.isfinite(s)]
        if bad:
            raise ConfigError(
                f"param group {bad[0]} has lr={base[bad[0]]!r}, a ratio to group {ref}'s "
                f"lr={base[ref]!r} that is not finite; choose LRs of comparable size"
            )
        self.optimizer = optimizer
        self.reference = ref
        self.first = base[ref]
        self.scales = scales
        # What each group should hold now (what set() wrote last, else the built LR).
        self.written = list(base)
        # LRs seen by the last optimizer.step() (filled by watch()'s hook), else None.
        self._used: list[float | torch.Tensor] | None = None

    def set(self, lr: float) -> None:
        """Set ``lr`` on the reference group and the scaled LRs on the others."""
        groups = self.optimizer.param_groups
        if len(groups) == 1 and type(groups[0]["lr"]) is float:
            # The common case, once per step in a decay: a single group is the reference,
            # its scale is 1.0, and the loop below would write lr * 1.0.
            value = lr * 1.0
            groups[0]["lr"] = value
            self.written = [value]
            return
        written = []
        for group, scale in zip(self.optimizer.param_groups, self.scales):
            value = lr * scale if scale != 0.0 else 0.0
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)  # fused/capturable optimizers keep lr as a tensor
            else:
                group["lr"] = value
            written.append(value)
        self.written = written

    def watch(self) -> None:
        """Record the groups' LRs at every ``optimizer.step()`` (see :meth:`take_used`).

        The hook holds this object weakly; once it is gone the hook does nothing, and the
        next ``watch`` on the same optimizer removes it.
        """
        me = weakref.ref(self)

        def hook(opt: Any, args: Any, kwargs: Any) -> None:
            obj = me()
            if obj is None:
                # Not removed here: torch is iterating over its hooks (removing one raised
                # "OrderedDict mutated during iteration" inside optimizer.step()).
                return
            # Runs inside every optimizer.step(): plain floats are kept as they are.
            obj._used = [
                g["lr"] if type(g["lr"]) is float else _keep(g["lr"]) for g in opt.param_groups
            ]

        hooks = _WATCHED.setdefault(self.optimizer, [])
        for ref, old in hooks:
            if ref() is None:
                old.remove()  # a tuner that is gone (e.g. replaced by a new run's)
        hooks[:] = [(ref, h) for ref, h in hooks if ref() is not None]
        hooks.append((me, self.optimizer.register_step_pre_hook(hook)))

    def take_unchanged(self) -> bool:
        """Whether a step ran since the last take, with the groups' LRs exactly as written.

        The per-step fast path of the drift check: plain floats compared exactly, no list
        built. On ``True`` the last step's LRs are consumed, as :meth:`take_used` would;
        anything else (no step since, a tensor LR, a changed or nearly equal value) returns
        ``False`` and leaves them for :meth:`take_used` and :meth:`drift`.
        """
        used = self._used
        if used is None:
            return False  # no optimizer.step() since the last take: for the caller to judge
        written = self.written
        groups = self.optimizer.param_groups
        if len(groups) == 1 == len(written) == len(used):
            # One group, the common case, without the loops (this runs on every step).
            w, u, v = written[0], used[0], groups[0]["lr"]
            if type(u) is float and type(v) is float and u == w and v == w:
                self._used = None
                return True
            return False
        if len(groups) != len(written):
            return False  # a group added or removed: for check_groups
        for u, w in zip(used, written):
            if type(u) is not float or u != w:
                return False
        for group, w in zip(groups, written):
            v = group["lr"]
            if type(v) is not float or v != w:
                return False
        self._used = None
        return True

    def check_groups(self) -> None:
        """Raise if parameter groups were added to or removed from the optimizer since.

        Raises:
            ConfigError: The optimizer has another number of groups than it was built with.
        """
        n, built = len(self.optimizer.param_groups), len(self.scales)
        if n != built:
            raise ConfigError(
                f"the optimizer now has {n} parameter group(s); it had {built} when the tuner "
                "was built. The tuner sets each group's LR in proportion to the LRs it was "
                "built with (and AutoLRS restores the optimizer from snapshots of those "
                "groups), so it cannot take a group added later (add_param_group): give the "
                "optimizer every group before building the tuner (parameters to train later "
                "can start with requires_grad=False)"
            )

    def take_used(self, *, sync: bool = True) -> list[float | None] | None:
        """The LRs the last ``optimizer.step()`` ran with (``None``: no step since last call).

        With ``sync=False``, LRs held as tensors off the CPU read as ``None`` (unchecked):
        reading them would wait for the device.
        """
        used, self._used = self._used, None
        return None if used is None else [_read(v, sync) for v in used]

    def read(self, *, sync: bool = True) -> list[float | None]:
        """The groups' LRs now (``None`` as in :meth:`take_used`)."""
        return [_read(g["lr"], sync) for g in self.optimizer.param_groups]

    def drift(self, values: Sequence[float | None]) -> list[tuple[int, float, float]]:
        """``(group, written, found)`` for each group whose LR is not the one last written."""
        return [
            (i, w, v)
            for i, (w, v) in enumerate(zip(self.written, values))
            if v is not None and not (v == w or math.isclose(v, w, rel_tol=_REL_TOL))
        ]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return math.nan


def _keep(value: Any) -> float | torch.Tensor:
    """A copy of an LR taken inside optimizer.step(), without waiting for a device."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone() if value.device.type != "cpu" else _number(value)
    return value if isinstance(value, float) else _number(value)


def _read(value: Any, sync: bool) -> float | None:
    if isinstance(value, torch.Tensor) and value.device.type != "cpu" and not sync:
        return None
    return _number(value)
