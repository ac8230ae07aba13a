"""Searching a whole LR schedule (peak, warm-up, decay shape, final LR) in one Optuna trial.

Optuna parameters are write-once per trial, so a schedule is encoded as a few parameters and
turned into a multiplier ``m(step)`` applied by a ``torch.optim.lr_scheduler.LambdaLR``.
Kept free of Optuna imports: the trial is only used through ``suggest_float`` /
``suggest_categorical``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autolr._errors import ConfigError, ConfigTypeError
from autolr._validate import check_choice, check_float, check_instance, check_int

__all__ = ["SHAPES", "LRSchedule", "suggest_lr_schedule", "suggest_lr_scheduler"]

#: Decay shapes after warm-up, as functions of progress ``t`` in [0, 1] from 1 down to 0.
SHAPES = ("cosine", "linear", "constant", "exponential")


def _decay(shape: str, t: float, final: float) -> float:
    """Multiplier at progress ``t`` of the decay, from 1 to ``final``."""
    if shape == "constant":
        return 1.0
    if shape == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))
    if shape == "linear":
        return final + (1.0 - final) * (1.0 - t)
    # exponential: geometric interpolation, needs final > 0
    return math.exp(t * math.log(max(final, 1e-12)))


@dataclass(frozen=True)
class LRSchedule:
    """A warm-up + decay LR schedule over ``total_steps`` optimizer steps.

    The LR rises linearly from ``peak_lr / warmup_steps`` to ``peak_lr`` over the warm-up,
    then follows ``shape`` from ``peak_lr`` to ``final_frac * peak_lr`` at the last step
    (``"constant"`` ignores ``final_frac``).

    Attributes:
        peak_lr: LR at the end of the warm-up.
        total_steps: Optimizer steps of the run.
        warmup_frac: Fraction of ``total_steps`` used for warm-up, in ``[0, 1)``.
        shape: One of ``"cosine"``, ``"linear"``, ``"constant"``, ``"exponential"``.
        final_frac: Final LR as a fraction of ``peak_lr``, in ``[0, 1]`` (``> 0`` for
            ``"exponential"``).

    Example:
        >>> s = LRSchedule(peak_lr=0.1, total_steps=100, warmup_frac=0.1, shape="linear")
        >>> s.lr_at(9), s.lr_at(10) > s.lr_at(99)
        (0.1, True)
    """

    peak_lr: float
    total_steps: int
    warmup_frac: float = 0.0
    shape: str = "cosine"
    final_frac: float = 0.0

    def __post_init__(self) -> None:
        check_int("total_steps", self.total_steps, minimum=1)
        for name in ("peak_lr", "warmup_frac", "final_frac"):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and not math.isfinite(v):
                # A ConfigTypeError, as LRSchedule has always raised for nan/inf.
                raise ConfigTypeError(f"{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, check_float(name, v))
        check_float("peak_lr", self.peak_lr, minimum=0.0, min_inclusive=False)
        check_float("warmup_frac", self.warmup_frac, minimum=0.0, maximum=1.0, max_inclusive=False)
        check_choice("shape", self.shape, SHAPES)
        check_float("final_frac", self.final_frac, minimum=0.0, maximum=1.0)
        if self.shape == "exponential" and self.final_frac <= 0.0:
            raise ConfigError("final_frac must be > 0 for shape='exponential'")

    @property
    def warmup_steps(self) -> int:
        """Warm-up length in steps."""
        return round(self.warmup_frac * self.total_steps)

    def multiplier(self, step: int) -> float:
        """LR multiplier of ``peak_lr`` at 0-based optimizer step ``step``."""
        w = self.warmup_steps
        if step < w:
            return (step + 1) / w
        span = max(1, self.total_steps - 1 - w)
        t = min(max((step - w) / span, 0.0), 1.0)
        return _decay(self.shape, t, self.final_frac)

    def lr_at(self, step: int) -> float:
        """The LR at 0-based optimizer step ``step``."""
        return self.peak_lr * self.multiplier(step)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` following this schedule; call ``scheduler.step()`` after each
        ``optimizer.step()``.

        The optimizer's param groups are rescaled so that the first group's LR is
        ``peak_lr`` (ratios between groups are kept).

        Raises:
            ConfigTypeError: If ``optimizer`` is not a torch optimizer.
        """
        check_instance("optimizer", optimizer, torch.optim.Optimizer)
        ref = float(optimizer.param_groups[0]["lr"])
        ratio = self.peak_lr / ref if ref > 0 else None
        for g in optimizer.param_groups:
            base = g["lr"] * ratio if ratio is not None else self.peak_lr
            g["lr"] = base
            g["initial_lr"] = base  # LambdaLR would otherwise keep a stale initial_lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.multiplier)


def _range(x: Any, name: str, *, low: float, high: float) -> tuple[float, float] | float:
    """A fixed value or a ``(low, high)`` range within ``[low, high]``."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ConfigError(f"{name} must be a number or a (low, high) pair, got {x!r}")
        lo, hi = (_range(v, name, low=low, high=high) for v in x)
        assert isinstance(lo, float) and isinstance(hi, float)
        if not lo < hi:
            raise ConfigError(f"{name} range must have low < high, got {x!r}")
        return (lo, hi)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        # A ConfigTypeError (not check_float's ConfigError) for nan/inf, as always here.
        raise ConfigTypeError(f"{name} must be a finite number or a (low, high) pair, got {x!r}")
    return check_float(name, x, minimum=low, maximum=high)


def suggest_lr_schedule(
    trial: Any,
    total_steps: int,
    *,
    peak_lr: tuple[float, float] | float = (1e-4, 1.0),
    warmup_frac: tuple[float, float] | float = (0.0, 0.2),
    shape: str | Sequence[str] = "cosine",
    final_frac: tuple[float, float] | float = 0.0,
    prefix: str = "",
) -> LRSchedule:
    """Suggests an :class:`LRSchedule` from an Optuna trial.

    Every argument given as a ``(low, high)`` range (or, for ``shape``, a sequence of names)
    becomes a trial parameter named ``<prefix>peak_lr`` (log scale), ``<prefix>warmup_frac``,
    ``<prefix>shape`` (categorical) and ``<prefix>final_frac`` (log scale); fixed values add
    no parameter. Numeric ones are modelled by :class:`AutoLRSSampler`'s GP; a categorical
    ``shape`` goes to its independent sampler, so prefer a fixed shape there.

    Args:
        trial: An ``optuna.Trial``.
        total_steps: Optimizer steps of the run.
        peak_lr: Peak LR or its range (``> 0``).
        warmup_frac: Warm-up fraction or its range, within ``[0, 0.9]``.
        shape: A decay shape of :data:`SHAPES`, or several to choose from.
        final_frac: Final LR / peak LR, or its range (a range must have ``low > 0``).
        prefix: Prepended to the parameter names (several schedules in one trial).

    Raises:
        ConfigError, ConfigTypeError: On invalid arguments.

    Example:
        >>> import optuna
        >>> trial = optuna.create_study().ask()
        >>> s = suggest_lr_schedule(trial, 1000, peak_lr=(1e-3, 1.0), warmup_frac=(0.0, 0.1))
        >>> sorted(trial.params), s.total_steps
        (['peak_lr', 'warmup_frac'], 1000)
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        # A ConfigError even for a non-int, as always here (LRSchedule raises ConfigTypeError).
        raise ConfigError(f"total_steps must be an int >= 1, got {total_steps!r}")
    check_instance("prefix", prefix, str)
    lr = _range(peak_lr, "peak_lr", low=1e-300, high=math.inf)
    warm = _range(warmup_frac, "warmup_frac", low=0.0, high=0.9)
    final = _range(final_frac, "final_frac", low=0.0, high=1.0)
    shapes = [shape] if isinstance(shape, str) else list(shape)
    if not shapes or any(s not in SHAPES for s in shapes):
        raise ConfigError(f"shape must be one of {SHAPES} or a non-empty sequence of them")
    if isinstance(final, tuple) and final[0] <= 0.0:
        raise ConfigError(f"a final_frac range needs low > 0 (log scale), got {final_frac!r}")

    def pick(name: str, v: tuple[float, float] | float, log: bool) -> float:
        if isinstance(v, tuple):
            return float(trial.suggest_float(prefix + name, v[0], v[1], log=log))
        return v

    lr_v = pick("peak_lr", lr, True)
    warm_v = pick("warmup_frac", warm, False)
    shape_v = shapes[0] if len(shapes) == 1 else trial.suggest_categorical(prefix + "shape", shapes)
    final_v = pick("final_frac", final, True)
    if shape_v == "exponential" and final_v <= 0.0:
        final_v = 1e-3  # geometric decay cannot reach 0: decay 1000x instead
    return LRSchedule(
        peak_lr=lr_v,
        total_steps=total_steps,
        warmup_frac=warm_v,
        shape=str(shape_v),
        final_frac=final_v,
    )


def suggest_lr_scheduler(
    trial: Any,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    **kwargs: Any,
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`suggest_lr_schedule` then :meth:`LRSchedule.scheduler` on ``optimizer``.

    Example:
        >>> import optuna, torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = suggest_lr_scheduler(optuna.create_study().ask(), opt, 100)
        >>> type(sched).__name__
        'LambdaLR'
    """
    return suggest_lr_schedule(trial, total_steps, **kwargs).scheduler(optimizer)
