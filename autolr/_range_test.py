"""Learning-rate range test (Smith 2017, arXiv 1506.01186; the fastai ``lr_find`` variant).

Train for a few steps while the LR grows exponentially from ``lr_min`` to ``lr_max``, record
the training loss at every step, and read a peak LR off the curve. Two parts:

* :func:`suggest_lr_from_range_test` is the pure analysis of an already recorded curve
  (``lrs[i]`` is the LR of step ``i``, ``losses[i]`` its training loss). It needs no model and
  no torch, so any loop that records LR/loss pairs (a tuner's warm-up, a log file) can use it.
* :func:`lr_range_test` runs the ramp on a live model and optimizer and restores both (and the
  RNG streams) bit for bit afterwards, so the test leaves no trace on the real run.

The rule, in order:

1. Smooth the losses with a bias-corrected exponential moving average (``beta``, default 0.98
   as in fastai): single mini-batch losses are too noisy to locate a minimum on.
2. Stop at the first *divergence*: a non-finite loss, or a smoothed loss above
   ``diverge_factor`` (default 4) times the smallest smoothed loss so far. The check needs a
   positive minimum (cross-entropy, squared error); with a non-positive minimum only
   non-finite losses stop the scan.
3. Suggest ``lr_at_min / divisor`` (default 10), where ``lr_at_min`` is the LR of the smallest
   smoothed loss before the stop. This is fastai's ``lr_min`` rule. It is preferred to the
   "steepest descent" point because the slope of a noisy curve over tens of steps is itself
   noisy (one lucky batch moves it by a decade), whereas the location of the minimum is stable.
   The factor 10 backs off from the edge of stability: at ``lr_at_min`` the loss has stopped
   improving because the LR is already too large, and the EMA lags, which puts the smoothed
   minimum at a slightly *larger* LR than the raw one.

Edge cases (each named in :attr:`RangeTestResult.reason`):

* No divergence and the smoothed loss is still at its minimum on the last step (monotonically
  falling curve): the same rule gives ``lrs[-1] / divisor``, a *lower bound* on a good peak
  LR; widen the ramp to learn more.
* The very first loss is non-finite (e.g. an all-NaN curve): no LR can be read off, so the
  suggestion is ``fallback`` when given, else the smallest LR tried, ``lrs[0]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError
from ._validate import check_float, check_int

__all__ = ["RangeTestResult", "lr_range_test", "suggest_lr_from_range_test"]


@dataclass(frozen=True)
class RangeTestResult:
    """Outcome of an LR range test.

    Attributes:
        lr: The suggested peak LR.
        min_loss_lr: LR at the smallest smoothed loss; ``None`` when no loss was finite.
        diverged_lr: LR of the step at which the loss diverged (non-finite, or smoothed loss
            above ``diverge_factor`` times its minimum); ``None`` if it never did.
        steps: Steps of the curve used, up to and including the divergence step. For
            :func:`lr_range_test` this is also the number of training steps run.
        reason: One sentence saying which rule produced :attr:`lr`.
        lrs: The LRs of the steps used.
        smoothed: The bias-corrected EMA of the losses, one per finite loss used (shorter
            than :attr:`lrs` by one when the scan stopped at a non-finite loss).
    """

    lr: float
    min_loss_lr: float | None
    diverged_lr: float | None
    steps: int
    reason: str
    lrs: tuple[float, ...] = ()
    smoothed: tuple[float, ...] = ()


class _Scan:
    """Online bias-corrected EMA with the divergence check.

    Shared by the analysis and the driver, so the driver stops on exactly the step at which
    the analysis of the same curve stops.
    """

    def __init__(self, beta: float, diverge_factor: float) -> None:
        self.beta = beta
        self.diverge_factor = diverge_factor
        self._avg = 0.0
        self.smoothed: list[float] = []
        self.best = math.inf
        self.best_index: int | None = None

    def update(self, loss: float) -> bool:
        """Add the next loss; ``True`` when the curve has diverged (scan must stop)."""
        if not math.isfinite(loss):
            return True
        n = len(self.smoothed)
        self._avg = self.beta * self._avg + (1.0 - self.beta) * loss
        # Bias correction: the EMA starts at 0, which would make the first steps look tiny.
        s = self._avg / (1.0 - self.beta ** (n + 1))
        self.smoothed.append(s)
        if s < self.best:
            self.best, self.best_index = s, n
        # Overflow to inf in the EMA also counts as divergence.
        return not math.isfinite(s) or (self.best > 0 and s > self.diverge_factor * self.best)


def _check_rule(beta: float, diverge_factor: float, divisor: float) -> None:
    # shared by the recorded-curve and the live range test
    check_float("beta", beta, minimum=0, maximum=1, max_inclusive=False)
    check_float("diverge_factor", diverge_factor, minimum=1, min_inclusive=False, finite=False)
    check_float("divisor", divisor, minimum=0, min_inclusive=False)


def suggest_lr_from_range_test(
    lrs: Sequence[float],
    losses: Iterable[float],
    *,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    divisor: float = 10.0,
    fallback: float | None = None,
) -> RangeTestResult:
    """Suggest a peak LR from a recorded range-test curve (rule in the module docstring).

    Args:
        lrs: LR of each step, positive and non-decreasing (an exponential ramp).
        losses: Training loss of each step (same length as ``lrs``); NaN/inf allowed, they
            mark divergence.
        beta: EMA decay of the loss smoothing, in ``[0, 1)`` (0 = no smoothing).
        diverge_factor: The curve has diverged once the smoothed loss exceeds this multiple of
            its minimum so far.
        divisor: The suggestion is the LR at the minimum smoothed loss divided by this.
        fallback: Suggestion when no loss is finite; default ``lrs[0]``.

    Returns:
        The suggestion and how it was found.

    Raises:
        ConfigError: Empty or mismatched inputs, LRs not positive and non-decreasing, or a
            rule parameter out of range.

    Example:
        >>> lrs = [1e-4 * 10 ** (i / 10) for i in range(41)]  # 1e-4 .. 1
        >>> losses = [1.0 / (1 + 1000 * lr) if lr < 0.1 else 10.0 * lr for lr in lrs]
        >>> res = suggest_lr_from_range_test(lrs, losses, beta=0.0)
        >>> round(res.min_loss_lr, 6), round(res.lr, 6), round(res.diverged_lr, 6)
        (0.079433, 0.007943, 0.1)
    """
    _check_rule(beta, diverge_factor, divisor)
    lrs = [float(v) for v in lrs]
    vals = [float(v) for v in losses]
    if not lrs:
        raise ConfigError("suggest_lr_from_range_test needs at least one (lr, loss) pair")
    if len(lrs) != len(vals):
        raise ConfigError(f"lrs and losses differ in length: {len(lrs)} != {len(vals)}")
    if not all(v > 0 and math.isfinite(v) for v in lrs):
        raise ConfigError("lrs must be positive and finite")
    if any(b < a for a, b in itertools.pairwise(lrs)):
        raise ConfigError("lrs must be non-decreasing (a ramp from small to large)")

    scan = _Scan(beta, diverge_factor)
    stop: int | None = None
    for i, loss in enumerate(vals):
        if scan.update(loss):
            stop = i
            break
    steps = len(vals) if stop is None else stop + 1
    used = tuple(lrs[:steps])
    smoothed = tuple(scan.smoothed)
    diverged_lr = None if stop is None else lrs[stop]

    if scan.best_index is None:
        lr = lrs[0] if fallback is None else float(fallback)
        src = "the smallest LR tried" if fallback is None else "the fallback"
        reason = (
            f"no finite loss (the first loss, at lr={lrs[0]:.3g}, was already non-finite): "
            f"returning {src}, {lr:.3g}"
        )
        return RangeTestResult(lr, None, diverged_lr, steps, reason, used, smoothed)

    at_min = lrs[scan.best_index]
    lr = at_min / divisor
    if stop is not None:
        if math.isfinite(vals[stop]):
            why = f"smoothed loss above {diverge_factor:g}x its minimum"
        else:
            why = "non-finite loss"
        reason = (
            f"diverged at lr={diverged_lr:.3g} ({why}); minimum smoothed loss at "
            f"lr={at_min:.3g}; suggestion = {at_min:.3g} / {divisor:g}"
        )
    elif scan.best_index == len(smoothed) - 1:
        reason = (
            f"no divergence up to lr={lrs[-1]:.3g} and the smoothed loss still falling at the "
            f"end; suggestion = {at_min:.3g} / {divisor:g} is a lower bound (ramp to a larger "
            f"LR to find the divergence)"
        )
    else:
        reason = (
            f"no divergence up to lr={lrs[-1]:.3g}; minimum smoothed loss at lr={at_min:.3g}; "
            f"suggestion = {at_min:.3g} / {divisor:g}"
        )
    return RangeTestResult(lr, at_min, diverged_lr, steps, reason, used, smoothed)


def _loss_value(loss: Any) -> float:
    """A float from a Python number or a one-element tensor (NaN if it cannot be read)."""
    try:
        if hasattr(loss, "detach"):
            loss = loss.detach()
        if hasattr(loss, "item"):
            loss = loss.item()
        return float(loss)
    except (TypeError, ValueError, RuntimeError):
        return math.nan


def lr_range_test(
    model: Any,
    optimizer: Any,
    train_step: Callable[[], Any],
    *,
    lr_min: float,
    lr_max: float,
    steps: int = 100,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    divisor: float = 10.0,
    extras: Mapping[str, Any] | None = None,
    fallback: float | None = None,
) -> RangeTestResult:
    """Run an LR range test on ``model``/``optimizer`` and restore both afterwards.

    Step ``i`` (0-based) sets every param group's ``lr`` to
    ``lr_min * (lr_max / lr_min) ** (i / (steps - 1))`` and calls ``train_step()``; the ramp
    ends early at the first divergence (see :func:`suggest_lr_from_range_test`). Afterwards
    the model's parameters and buffers, the optimizer's state and param groups (its ``lr``
    included), the parameters' ``.grad``, the ``extras`` and the python/numpy/torch RNG states
    are restored bit for bit, even when ``train_step`` raises. NaN/inf losses never raise:
    they just end the ramp.

    Args:
        model: The ``torch.nn.Module`` being trained.
        optimizer: Its ``torch.optim.Optimizer``.
        train_step: Zero-argument callable doing one full training step (forward, backward,
            ``optimizer.step()``, plus whatever your loop needs: zero_grad, AMP scaling,
            clipping) and returning the step's loss (float or one-element tensor). It reads
            the LR from the optimizer's param groups.
        lr_min: First LR of the ramp (> 0).
        lr_max: Last LR of the ramp (> ``lr_min``).
        steps: Length of the ramp (>= 2); the number of training steps run when the loss
            never diverges.
        beta: EMA decay of the loss smoothing.
        diverge_factor: Divergence threshold on the smoothed loss (multiple of its minimum).
        divisor: The suggestion is the LR at the minimum smoothed loss divided by this.
        extras: Further objects with ``state_dict``/``load_state_dict`` that ``train_step``
            mutates (``GradScaler``, EMA weights, ...), restored as well.
        fallback: Suggestion when not even the first loss is finite (default ``lr_min``).

    Returns:
        The :class:`RangeTestResult`; ``steps`` is the number of training steps run.

    Raises:
        ConfigError: Invalid ramp or rule parameters.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x, y = torch.randn(256, 4), torch.randn(256, 1)
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        >>> def train_step():
        ...     idx = torch.randint(0, 256, (32,))
        ...     loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        ...     opt.zero_grad()
        ...     loss.backward()
        ...     opt.step()
        ...     return loss
        >>> before = model.weight.clone()
        >>> res = lr_range_test(model, opt, train_step, lr_min=1e-4, lr_max=10.0, steps=60)
        >>> res.diverged_lr is not None and res.lr < res.diverged_lr
        True
        >>> torch.equal(model.weight, before), opt.param_groups[0]["lr"]
        (True, 0.01)
    """
    from ._snapshot import Snapshot  # torch-based; the analysis above needs no torch

    _check_rule(beta, diverge_factor, divisor)
    lr_min = check_float("lr_min", lr_min, minimum=0, min_inclusive=False)
    lr_max = check_float("lr_max", lr_max, minimum=lr_min, min_inclusive=False)
    check_int("steps", steps, minimum=2)

    snap = Snapshot(model, optimizer, extras=extras, rng=True)
    snap.capture()
    # .grad is not part of any state_dict; keep it so that the model really is untouched.
    params = list(model.parameters())
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    ratio = lr_max / lr_min
    lrs: list[float] = []
    losses: list[float] = []
    scan = _Scan(beta, diverge_factor)
    try:
        for i in range(steps):
            lr = lr_min * ratio ** (i / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = _loss_value(train_step())
            lrs.append(lr)
            losses.append(loss)
            if scan.update(loss):
                break
    finally:
        snap.restore()
        for p, g in zip(params, grads):
            p.grad = g
    return suggest_lr_from_range_test(
        lrs,
        losses,
        beta=beta,
        diverge_factor=diverge_factor,
        divisor=divisor,
        fallback=fallback,
    )
