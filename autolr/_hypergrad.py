"""Hypergradient descent on the learning rate (Baydin et al., ICLR 2018, arXiv 1703.04782).

:class:`HypergradientLR` wraps a torch SGD / Adam / AdamW optimizer and adapts each parameter
group's learning rate from the hypergradient ``h_t = ∂f(θ_{t-1})/∂α = −G_t · D_{t-1}``: the dot
product of the current gradient ``G_t`` (the one the optimizer follows: sign-flipped under
``maximize``, plus coupled L2 weight decay) with the previous update *direction* ``D_{t-1}``
(``u_{t-1} = −α D_{t-1}``), so ``D`` is the momentum buffer / Nesterov look-ahead for SGD and
``m̂/(√v̂+ε)`` (``+ λθ`` for decoupled weight decay) for Adam(W).

Three rules, each computed once per group and step from the *old* direction, before any LR
moves (the reference ``AdamHD`` moves the LR inside its per-tensor loop, so later tensors see a
moved LR):

* ``"additive"`` (the paper's rule): ``α_t = α_{t-1} − β h_t``. ``h`` scales like ``‖g‖²`` for
  SGD but like ``Σ|g|`` for Adam, hence very different ``β`` (defaults 1e-3 and 1e-7, the
  reference ``run.sh`` values).
* ``"multiplicative"`` (poster's HDM, normalised): ``α_t = α_{t-1}(1 − β h_t / (‖G_t‖‖D_{t-1}‖))
  = α_{t-1}(1 + β cos(G_t, D_{t-1}))``: scale-free, positive for ``β < 1``, same ``β`` for every
  family (default 0.02: the LR moves by at most 2 % a step).
* ``"rms"`` (autolr's variant, not in the paper): ``α_t = α_{t-1} exp(−β clip(h_t / RMS(h), ±1))``
  with ``RMS(h)`` a bias-corrected running root-mean-square of past hypergradients (decay
  ``rms_decay``). Also scale-free, but normalised by the *noise level of h* rather than by
  ``‖G‖‖D‖``: with small batches ``cos(G_t, D_{t-1})`` is tiny even when its sign is
  consistent, which makes the multiplicative rule slow to raise a far too small LR.

The adapted LR is clamped to ``lr_bounds`` (default ``(0, inf)``: never negative). Non-finite
hypergradients leave the LR unchanged and are counted. A NaN/inf gradient skips the whole step
(as ``torch.amp.GradScaler`` does): weights, optimizer state, LR and step count stay as they were.

Two optional robustness knobs (both off by default; off reproduces the plain rules bit for bit):

* ``boost`` (sign-agreement acceleration, like Rprop's step growth; normalised rules only): the
  per-group step size is ``β·k`` with ``k ← min(1.2 k, boost)`` while the hypergradient keeps its
  sign and ``k ← 1`` when it flips. A persistent sign (far too small or far too large an LR) then
  moves the LR up to ``boost`` times faster, while noise (random signs) keeps ``k ≈ 1``.
* ``warmup_steps``: the step ``t`` (0-based) runs at ``clamp(base·s·min(1, (t+1)/warmup_steps))``
  while HD already adapts ``s`` from the cosines it sees, so an oversized LR shows up as positive
  hypergradients (and ``s`` shrinks) before the full LR is reached. During the warm-up ``s`` may
  only *decrease*: the ramp itself makes every LR look too small, and letting HD raise ``s``
  would undo the warm-up (measured: it killed the MLP of the ``hd`` study at the tuned LR).

**Schedulers.** ``group["lr"]`` keeps the *base* LR that you or a torch LR scheduler set; the
wrapper keeps a per-group HD factor ``s`` and runs the inner step at ``clamp(base·s)``, restoring
``group["lr"]`` afterwards. So any scheduler (built on the wrapper or on ``opt.optimizer``)
composes as *HD multiplies on top of the schedule*. The LR actually used is :attr:`lrs` /
``group["hd_lr"]`` and the last steps' values (10 000 by default) are in :attr:`lr_trace`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import _statecheck as _sc
from ._deprecate import RenamedAttribute
from ._errors import ConfigError, ConfigTypeError, StateError
from ._validate import _WrongTypeError, check_choice, check_float, check_int

if TYPE_CHECKING:  # _schedule is imported lazily (it imports this module)
    from ._schedule import Schedule

__all__ = ["DEFAULT_HYPERGRAD_LR", "DEFAULT_TRACE_STEPS", "HypergradientLR", "dot_and_norms"]

#: Default β per (rule, optimizer family).
DEFAULT_HYPERGRAD_LR: dict[tuple[str, str], float] = {
    ("additive", "sgd"): 1e-3,
    ("additive", "adam"): 1e-7,
    ("multiplicative", "sgd"): 0.02,
    ("multiplicative", "adam"): 0.02,
    ("rms", "sgd"): 0.02,
    ("rms", "adam"): 0.02,
}
_RULES = ("additive", "multiplicative", "rms")
_BOOST_GROWTH = 1.2  # per-step growth of the step-size multiplier while the sign persists
#: Steps kept in :attr:`HypergradientLR.lr_trace` by default (``trace=True``).
DEFAULT_TRACE_STEPS = 10_000
_STATE_VERSION = 2  # 1: unversioned (rule/β saved but not checked), 2: config checked on load
_HD_STATE = ("scales", "last_h", "h_sq", "h_n", "steps", "nonfinite", "directions", "trace")
# Below this a float32 a·a has lost its precision (subnormal) or underflowed to 0.
_F32_TINY = torch.finfo(torch.float32).tiny


def _warn_renamed_bound(old: str) -> None:
    warnings.warn(
        f"HypergradientLR: the attribute {old!r} is deprecated and will be removed in the next "
        "release; use 'lr_bounds'",
        DeprecationWarning,
        stacklevel=3,
    )


def _resolve_lr_bounds(lr_bounds: Any, renamed: dict[str, Any]) -> tuple[float, float]:
    """``lr_bounds``, or the deprecated ``lr_min``/``lr_max`` in its place (one warning)."""
    default = (0.0, math.inf)
    unknown = set(renamed) - {"lr_min", "lr_max"}
    if unknown:
        raise TypeError(
            f"HypergradientLR() got an unexpected keyword argument {sorted(unknown)[0]!r}"
        )
    name = "lr_bounds"
    # A list, tuple or 1-D array/tensor: a set has no order and a dict's values are not its
    # items, so both would be misread as (low, high).
    if not (isinstance(lr_bounds, (list, tuple)) or getattr(lr_bounds, "ndim", None) == 1):
        raise _WrongTypeError(f"lr_bounds must be a pair (low, high), got {lr_bounds!r}")
    if renamed:
        if tuple(lr_bounds) != default:
            raise ConfigError(
                f"HypergradientLR: got both lr_bounds={lr_bounds!r} and the deprecated "
                f"{'/'.join(sorted(renamed))}; pass only lr_bounds"
            )
        warnings.warn(
            f"HypergradientLR: {' and '.join(repr(k) for k in sorted(renamed))} "
            f"{'are' if len(renamed) > 1 else 'is'} deprecated and will be removed in the next "
            "release; use 'lr_bounds=(low, high)'",
            DeprecationWarning,
            stacklevel=3,
        )
        lr_bounds = (renamed.get("lr_min", default[0]), renamed.get("lr_max", default[1]))
        name = "lr_min/lr_max"
    if len(lr_bounds) != 2:
        raise ConfigError(f"lr_bounds must be a pair (low, high), got {lr_bounds!r}")
    # The high end may be inf (no ceiling), so check_bounds (finite pairs) does not fit.
    lo = check_float(f"{name} low" if renamed else "lr_bounds[0]", lr_bounds[0], minimum=0)
    hi = check_float(
        f"{name} high" if renamed else "lr_bounds[1]",
        lr_bounds[1],
        minimum=lo,
        min_inclusive=False,
        finite=False,
    )
    return lo, hi


def _flat_real(x: Tensor) -> Tensor:
    """``x`` detached and flattened; a complex tensor as its real and imaginary parts.

    torch's optimizers treat a complex parameter as real pairs (``view_as_real``), so its
    inner product is ``Re(a·conj(b))``: the sum over both parts.
    """
    x = x.detach()
    if x.is_complex():
        x = torch.view_as_real(x.resolve_conj())
    return x.reshape(-1)


def dot_and_norms(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``[a·b, a·a, b·b]`` over two equally long lists of tensors, as one float32 tensor.

    The hypergradient kernel of :class:`HypergradientLR`: the additive rule needs ``a·b``
    (current gradient · previous direction), the normalised rules the cosine
    ``a·b / √(a·a · b·b)``. (FedHyper works on whole flattened model updates in their own
    dtype and uses ``torch.dot`` directly.) Sums are taken on the first tensor's device in
    float32 and returned without a host sync, so callers can batch several before one
    ``.tolist()``. Complex tensors count as their real and imaginary parts. The float32 squares
    overflow from entries of about 1e19 (and underflow below about 1e-19);
    :class:`HypergradientLR` then recomputes the group in float64 from vectors scaled to
    max-abs 1.

    Example:
        >>> import torch
        >>> dot_and_norms([torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 4.0])]).tolist()
        [11.0, 5.0, 25.0]
    """
    if len(a) != len(b):
        raise ConfigError(f"dot_and_norms needs lists of equal length, got {len(a)} and {len(b)}")
    if not a:
        return torch.zeros(3)
    dev = a[0].device
    parts = []
    for x, y in zip(a, b):
        x = _flat_real(x).float()
        y = _flat_real(y).float()
        parts.append(torch.stack([x @ y, x @ x, y @ y]).to(dev))
    return torch.stack(parts).sum(0)


def _scaled_dot_and_norms(
    a: Sequence[Tensor], b: Sequence[Tensor]
) -> tuple[float, float, float, float, float]:
    """``(a'·b', a'·a', b'·b', sa, sb)`` in float64 for ``a' = a/sa``, ``b' = b/sb``.

    ``sa``, ``sb`` are the max-abs entries (1 for a zero list), so the three sums lie in
    ``[-n, n]`` and the cosine stays accurate at any finite scale; ``a·b = a'·b'·sa·sb``.
    The fallback of :class:`HypergradientLR` for groups whose float32 :func:`dot_and_norms`
    overflowed or underflowed: one extra pass and host sync, only then.
    """
    dev = a[0].device
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    scaled, peaks = [], []
    for vs in (a, b):
        flat = [_flat_real(v).to(dev, torch.float64) for v in vs]
        peak = torch.stack([zero, *(v.abs().max() for v in flat if v.numel())]).max()
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        scaled.append([v / peak for v in flat])
        peaks.append(peak)
    sums = torch.stack([torch.stack([x @ y, x @ x, y @ y]) for x, y in zip(*scaled)]).sum(0)
    dot, gg, dd, sa, sb = torch.cat([sums, torch.stack(peaks)]).tolist()
    return dot, gg, dd, sa, sb


def _family(optimizer: torch.optim.Optimizer) -> str:
    if isinstance(optimizer, HypergradientLR):
        raise ConfigTypeError("the optimizer is already wrapped in a HypergradientLR")
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    if isinstance(optimizer, torch.optim.Adam):  # AdamW subclasses Adam
        return "adam"
    raise ConfigTypeError(
        "HypergradientLR supports torch.optim.SGD (plain, momentum, Nesterov), torch.optim.Adam "
        f"and torch.optim.AdamW; got {type(optimizer).__name__}. Its update direction (needed for "
        "the hypergradient) is unknown; LR-free optimizers such as Prodigy need no HD."
    )


def _decoupled(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    if isinstance(optimizer, torch.optim.AdamW):
        return True
    return bool(group.get("decoupled_weight_decay", False))


class HypergradientLR(torch.optim.Optimizer):
    """Wrap a torch optimizer and adapt its per-group LR by hypergradient descent.

    Use it like the optimizer it wraps (``zero_grad``, ``step``, ``param_groups``,
    ``state_dict``; ``GradScaler.step(opt)`` and LR schedulers accept it). When a
    ``GradScaler`` skips a step (inf/NaN gradients) ``step`` is not called, so neither the
    parameters nor the LR move. Gradient accumulation needs nothing special: the hypergradient
    uses the accumulated ``.grad`` at ``step``. Costs one copy of the parameters (the previous
    direction) and one host sync per step.

    Args:
        optimizer: A ``torch.optim.SGD`` (any momentum, Nesterov), ``Adam`` or ``AdamW``
            (AMSGrad, ``maximize`` and weight decay supported) with float LRs. Complex
            parameters count as (real, imaginary) pairs, as in torch's optimizers.
        rule: ``"multiplicative"`` (normalised by ``‖G‖‖D‖``, scale-free; default),
            ``"rms"`` (normalised by the running RMS of h) or ``"additive"`` (Baydin's rule).
        hypergrad_lr: β, the hyper-learning-rate. ``None`` takes
            :data:`DEFAULT_HYPERGRAD_LR` for the rule and family (multiplicative and rms 0.02;
            additive 1e-3 SGD, 1e-7 Adam). ``0`` reproduces the wrapped optimizer bit for bit.
        lr_bounds: ``(low, high)`` clamp of the adapted LR (default ``(0, inf)``: never
            negative, no ceiling; set ``high`` with the additive rule,
            whose LR can run away once the loss starts to diverge).
        rms_decay: Decay of the running mean of h² (``"rms"`` rule only).
        boost: Largest step-size multiplier under a persistent hypergradient sign (``k`` grows
            ×1.2 per step while the sign persists, back to 1 when it flips). ``1`` (default):
            off. Normalised rules only; the multiplicative rule needs ``β·boost < 1``.
        warmup_steps: Linear LR warm-up length inside HD (default 0: none); during it HD may
            only lower its factor (a probe for an oversized LR), afterwards both ways.
        trace: How many of the last steps' LRs :attr:`lr_trace` keeps (one float per group and
            step): ``True`` (default) the last :data:`DEFAULT_TRACE_STEPS` (10 000), an int
            ``n`` the last ``n``, ``False`` or ``0`` none. Bounded so that memory and the
            ``state_dict`` stay flat over long runs.

    Attributes:
        optimizer: The wrapped optimizer.
        steps: Steps taken through the wrapper.
        skipped_hyper_steps: Group-steps whose LR update was skipped: the hypergradient was
            NaN/inf (LR left unchanged), or a gradient was, which skips the whole step (every
            group counts once). Formerly ``nonfinite`` (deprecated alias).
        lr_bounds: The ``(low, high)`` clamp.

    ``lr_min=``/``lr_max=`` are the deprecated old form of ``lr_bounds`` (one
    DeprecationWarning; removed in the next release); so are the attributes of those names.

    Example:
        >>> import torch
        >>> from autolr import HypergradientLR
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.01), lr_bounds=(0, 1.0))
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     model(torch.ones(2, 3)).pow(2).mean().backward()
        ...     opt.step()
        >>> len(opt.lr_trace), opt.lrs[0] > 0.01  # consistent gradients: the LR grows
        (3, True)
    """

    nonfinite = RenamedAttribute("skipped_hyper_steps")

    @property
    def lr_min(self) -> float:
        """Deprecated: ``lr_bounds[0]``."""
        _warn_renamed_bound("lr_min")
        return self.lr_bounds[0]

    @property
    def lr_max(self) -> float:
        """Deprecated: ``lr_bounds[1]``."""
        _warn_renamed_bound("lr_max")
        return self.lr_bounds[1]

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        rule: str = "multiplicative",
        hypergrad_lr: float | None = None,
        lr_bounds: tuple[float, float] = (0.0, math.inf),
        rms_decay: float = 0.99,
        trace: bool | int = True,
        boost: float = 1.0,
        warmup_steps: int = 0,
        **renamed: Any,
    ) -> None:
        # Deliberately no super().__init__: the wrapper owns no parameters; param_groups, state
        # and defaults are the wrapped optimizer's (see the properties below).
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigTypeError(
                "optimizer must be a torch.optim.SGD, Adam or AdamW instance, got "
                f"{type(optimizer).__name__}"
            )
        family = _family(optimizer)
        check_choice("rule", rule, _RULES)
        if hypergrad_lr is None:
            hypergrad_lr = DEFAULT_HYPERGRAD_LR[(rule, family)]
        beta = check_float("hypergrad_lr", hypergrad_lr, minimum=0)
        if rule != "additive" and beta >= 1:
            raise ConfigError(
                f"the {rule} rule needs hypergrad_lr < 1 (LR factor per step ≈ 1 ± β), got {beta}"
            )
        lr_min, lr_max = _resolve_lr_bounds(lr_bounds, renamed)
        rms_decay = check_float("rms_decay", rms_decay, minimum=0, maximum=1, max_inclusive=False)
        boost = check_float("boost", boost, minimum=1)
        if boost != 1.0 and rule == "additive":
            raise ConfigError("boost needs a normalised rule ('multiplicative' or 'rms')")
        if rule == "multiplicative" and beta * boost >= 1:
            raise ConfigError(
                f"the multiplicative rule needs hypergrad_lr * boost < 1, got {beta} * {boost}"
            )
        # stored as a plain int: a numpy int would not survive torch.load(weights_only=True)
        warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        # trace takes a bool as well as a count, which check_int (bool rejected) cannot word;
        # numpy ints are counts, as they are for check_int
        if not isinstance(trace, numbers.Integral):
            raise ConfigTypeError(f"trace must be a bool or an int >= 0, got {trace!r}")
        if isinstance(trace, bool):
            trace = DEFAULT_TRACE_STEPS if trace else 0
        if trace < 0:
            raise ConfigError(f"trace must be a bool or an int >= 0 (steps kept), got {trace}")
        trace = int(trace)
        for i, group in enumerate(optimizer.param_groups):
            self._check_group(i, group)
        self.optimizer = optimizer
        self.boost = boost
        self.warmup_steps = warmup_steps
        self.rms_decay = rms_decay
        self.family = family
        self.rule = rule
        self.hypergrad_lr = beta
        self.lr_bounds = (lr_min, lr_max)
        self.trace = trace  # steps kept in lr_trace (0: off)
        self.steps = 0
        self.skipped_hyper_steps = 0
        self._warned_nonfinite_grad = False  # one warning per instance, not one per step
        self._scales: list[float] = [1.0] * len(optimizer.param_groups)
        self._last_h: list[float | None] = [None] * len(optimizer.param_groups)
        self._h_sq: list[float] = [0.0] * len(optimizer.param_groups)  # EMA of h² ("rms")
        self._h_n: list[int] = [0] * len(optimizer.param_groups)  # hypergradients used
        self._gain: list[float] = [1.0] * len(optimizer.param_groups)  # boost multiplier k
        self._trace: deque[list[float]] = deque(maxlen=trace)
        self._dirs: dict[Tensor, Tensor] = {}  # previous update direction per parameter
        for g in optimizer.param_groups:
            g["hd_lr"] = float(g["lr"])

    # ------------------------------------------------------------------ delegation
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The wrapped optimizer's groups (``"lr"`` is the base LR, ``"hd_lr"`` the one used)."""
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The wrapped optimizer's per-parameter state."""
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimizer's defaults."""
        return self.optimizer.defaults

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes missing on the wrapper (hooks dicts, ...).
        if name == "optimizer" or "optimizer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["optimizer"], name)

    def __getstate__(self) -> dict[str, Any]:  # type: ignore[override]
        # Optimizer's pickling protocol expects its own attributes; the wrapper's are in __dict__.
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"HypergradientLR(rule={self.rule!r}, hypergrad_lr={self.hypergrad_lr:g}, "
            f"lr_bounds=({self.lr_bounds[0]:g}, {self.lr_bounds[1]:g}), boost={self.boost:g}, "
            f"warmup_steps={self.warmup_steps}, optimizer={self.optimizer!r})"
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the wrapped optimizer's gradients."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer; its HD factor starts at 1.

        Raises:
            ConfigTypeError: The group's LR (its own or the optimizer's default) is not a
                float; the wrapped optimizer is left as it was.
        """
        groups = self.optimizer.param_groups
        n = len(groups)
        # torch fills the group's defaults (the LR may be the optimizer's), so check the group
        # it added, and take it out again when HD cannot run it: a half-added group would make
        # every later step() fail on the group count.
        self.optimizer.add_param_group(param_group)
        try:
            self._check_group(n, groups[n])
        except BaseException:
            del groups[n:]
            raise
        groups[n]["hd_lr"] = float(groups[n]["lr"])
        self._scales.append(1.0)
        self._last_h.append(None)
        self._h_sq.append(0.0)
        self._h_n.append(0)
        self._gain.append(1.0)

    @staticmethod
    def _check_group(i: int, group: dict[str, Any]) -> None:
        lr = group["lr"]
        if isinstance(lr, Tensor):
            raise ConfigTypeError(
                f"param_groups[{i}]['lr'] is a Tensor; HypergradientLR needs float LRs "
                "(capturable/graph-captured optimizers are not supported)"
            )
        # (torch checks the LR's type only in the optimizer's constructor)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise ConfigTypeError(f"param_groups[{i}]['lr'] must be a float, got {lr!r}")

    # ------------------------------------------------------------------ read-outs
    @property
    def lrs(self) -> list[float]:
        """LR each group used at the last step (its base LR before the first step)."""
        return [float(g.get("hd_lr", g["lr"])) for g in self.param_groups]

    @property
    def scales(self) -> list[float]:
        """Per-group HD factor: used LR = clamp(base LR × factor)."""
        return list(self._scales)

    @property
    def lr_trace(self) -> list[list[float]]:
        """LRs used at the last ``trace`` steps: ``lr_trace[step][group]`` (oldest first)."""
        return [list(r) for r in self._trace]

    def export_schedule(
        self, steps: int | None = None, *, group: int = 0, kind: str = "linear"
    ) -> Schedule:
        """The LR group ``group`` used at each step, from :attr:`lr_trace`, as a Schedule.

        Replaying it with :meth:`Schedule.scheduler` on a plain optimizer gives every group
        its initial ratio to the reference group (HD adapts each group separately, so other
        groups' ratios may have drifted; export each group to compare).

        If the trace dropped early steps (a run longer than ``trace`` steps), one warning
        says so and the schedule covers only the kept steps, at their own step numbers:
        replayed, the earlier steps hold the first kept LR. Pass ``trace=<steps>`` at
        construction to keep a whole run. A group added later by :meth:`add_param_group`
        likewise starts at the step it was added (one warning).

        Args:
            steps: Stretch the schedule to this many steps (:meth:`Schedule.stretch`).
            group: Which parameter group's LR to export.
            kind: How to stretch (``"linear"`` or ``"previous"``).

        Raises:
            ConfigError: ``group`` out of range, ``trace=0`` (nothing recorded), or no step
                taken yet (by this group, if it was added by :meth:`add_param_group`).
        """
        from ._schedule import Schedule

        n_groups = len(self.param_groups)
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < n_groups:
            raise ConfigError(f"group must be an int in [0, {n_groups}), got {group!r}")
        if not self.trace:
            raise ConfigError(
                "HypergradientLR.export_schedule: built with trace=0, so no LR was recorded; "
                "build it with trace=True (the last 10 000 steps) or trace=<steps>"
            )
        if not self._trace:
            raise ConfigError("HypergradientLR.export_schedule: no step was taken yet")
        # A group added by add_param_group has no LR in the rows of the steps before it.
        lrs = [row[group] for row in self._trace if len(row) > group]
        if not lrs:
            raise ConfigError(
                f"HypergradientLR.export_schedule: group {group} was added after the last step; "
                "no LR of it was recorded yet"
            )
        start = self.steps - len(lrs)
        if len(lrs) < len(self._trace):
            warnings.warn(
                f"HypergradientLR.export_schedule: group {group} was added at step {start}; the "
                "schedule starts there and earlier steps hold its first LR",
                RuntimeWarning,
                stacklevel=2,
            )
        elif start > 0:
            warnings.warn(
                f"HypergradientLR.export_schedule: lr_trace kept only the last {len(self._trace)} "
                f"of {self.steps} steps (trace={self.trace}); the schedule starts at step "
                f"{start} and earlier steps hold its first LR. Build with trace={self.steps} "
                "or more to export the whole run",
                RuntimeWarning,
                stacklevel=2,
            )
        sched = Schedule.from_lrs(lrs, start=start, source="HypergradientLR")
        return sched._exported(steps, kind)

    @property
    def last_hypergradients(self) -> list[float | None]:
        """Last hypergradient per group (``−G·D``; additive) or ``−cos(G, D)`` (multiplicative)."""
        return list(self._last_h)

    # ------------------------------------------------------------------ the step
    def _objective_grad(self, group: dict[str, Any], p: Tensor, decoupled: bool) -> Tensor:
        """Gradient the inner optimizer follows (maximize flips it; coupled L2 adds ``λθ``)."""
        g = p.grad
        if g.is_sparse:
            raise ConfigTypeError("HypergradientLR does not support sparse gradients")
        if group.get("maximize", False):
            g = -g
        wd = group.get("weight_decay", 0.0)
        if wd and not decoupled:
            g = g.add(p.detach(), alpha=wd)
        return g

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Update each group's LR from its hypergradient, then take the wrapped step.

        A NaN/inf gradient skips the whole step (the wrapped optimizer's too, as
        ``torch.amp.GradScaler`` does): counted in :attr:`skipped_hyper_steps`, one
        RuntimeWarning the first time.

        Args:
            closure: Optional closure re-evaluating the loss (called once, with grad enabled).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        opt = self.optimizer
        groups = opt.param_groups
        if len(groups) != len(self._scales):
            raise StateError(
                f"the wrapped optimizer has {len(groups)} param groups but HypergradientLR "
                f"tracks {len(self._scales)}; add groups through HypergradientLR.add_param_group"
            )
        # 1. Hypergradient pieces of every group from G_t and the stored D_{t-1}.
        grads: list[dict[Tensor, Tensor]] = []
        stats: list[Tensor | None] = []
        pairs: list[tuple[list[Tensor], list[Tensor]]] = []  # (G, D) per group, for _row
        for gi, group in enumerate(groups):
            self._check_group(gi, group)
            dec = _decoupled(opt, group)
            gs: dict[Tensor, Tensor] = {}
            a: list[Tensor] = []
            b: list[Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._objective_grad(group, p, dec)
                gs[p] = g
                d = self._dirs.get(p)
                if d is not None:
                    a.append(g)
                    b.append(d)
            grads.append(gs)
            pairs.append((a, b))
            stats.append(dot_and_norms(a, b) if a else None)
        present = [s for s in stats if s is not None]
        # One host sync for all groups (groups on several devices meet on the first one): the
        # hypergradient pieces, and a last row saying whether every gradient is finite.
        checks = [torch.isfinite(g).all() for gs in grads for g in gs.values()]
        rows = list(present)
        if checks:  # (present is empty without gradients)
            dev = checks[0].device
            rows.append(torch.stack([c.to(dev) for c in checks]).all().float().expand(3))
        dev = rows[0].device if rows else None
        table = torch.stack([r.to(dev) for r in rows]).tolist() if rows else []
        # A NaN/inf gradient would poison the weights and the optimizer's moments for good:
        # skip the whole step, like GradScaler.
        if checks and table.pop()[0] != 1.0:
            self.skipped_hyper_steps += len(groups)
            if not self._warned_nonfinite_grad:
                self._warned_nonfinite_grad = True
                warnings.warn(
                    "HypergradientLR.step: a gradient holds NaN/inf; the step is skipped "
                    "(weights, optimizer state and LR unchanged) and counted in "
                    "skipped_hyper_steps. Warned once per optimizer",
                    RuntimeWarning,
                    stacklevel=3,  # past torch.no_grad's wrapper: the caller of step()
                )
            return loss
        values = iter(table)

        # 2. New LR per group (every h computed above, before any LR moved).
        bases: list[float] = []
        ramp = 1.0
        lr_lo, lr_hi = self.lr_bounds
        if self.steps < self.warmup_steps:
            ramp = (self.steps + 1) / self.warmup_steps
        for gi, group in enumerate(groups):
            base = float(group["lr"])
            bases.append(base)
            scale = self._scales[gi]
            lr = base * scale
            if stats[gi] is not None:
                dot, gg, dd = self._row(next(values), *pairs[gi])
                sq = self._h_sq[gi]
                gain = self._gain[gi]
                if self.boost != 1.0 and self._last_h[gi] is not None:
                    prev = self._last_h[gi]
                    same = (prev > 0 and -dot > 0) or (prev < 0 and -dot < 0)
                    gain = min(gain * _BOOST_GROWTH, self.boost) if same else 1.0
                beta = self.hypergrad_lr * gain
                if self.rule == "additive":
                    h = -dot
                    new = lr - beta * h
                elif self.rule == "multiplicative":
                    denom = math.sqrt(gg * dd) if math.isfinite(gg * dd) else math.nan
                    h = -dot / denom if denom > 0 else (0.0 if denom == 0 else math.nan)
                    new = lr * (1.0 - beta * h)
                else:  # "rms": exp(−β · clip(h / RMS(h), ±1)), RMS bias-corrected like Adam's
                    h = -dot
                    rho = self.rms_decay
                    sq = rho * sq + (1.0 - rho) * h * h
                    rms = math.sqrt(sq / (1.0 - rho ** (self._h_n[gi] + 1)))
                    z = max(-1.0, min(1.0, h / rms)) if rms > 0 else 0.0
                    new = lr * math.exp(-beta * z) if math.isfinite(z) else math.nan
                if ramp < 1.0 and new > lr:
                    # Warm-up: every cosine looks "too small" while the ramp holds the LR down,
                    # so HD may only lower the factor; it probes for an oversized LR.
                    new = lr
                # (h² of a huge finite h overflows: an inf RMS would freeze the rms rule)
                if math.isfinite(h) and math.isfinite(new) and math.isfinite(sq):
                    self._last_h[gi] = h
                    self._h_sq[gi] = sq
                    self._h_n[gi] += 1
                    self._gain[gi] = gain
                    lr = new
                else:
                    self.skipped_hyper_steps += 1
            lr = min(max(lr, lr_lo), lr_hi)
            if base > 0:
                self._scales[gi] = lr / base
            if ramp < 1.0:
                lr = min(max(lr * ramp, lr_lo), lr_hi)
            group["hd_lr"] = lr

        # 3. Wrapped step at the adapted LR; group["lr"] goes back to the base afterwards so
        # schedulers and users only ever see (and write) the base LR.
        pre: dict[Tensor, Tensor] = {}
        if self.family == "adam":
            for gi, group in enumerate(groups):
                wd = group.get("weight_decay", 0.0)
                if wd and _decoupled(opt, group):
                    for p in grads[gi]:
                        pre[p] = p.detach().mul(wd)  # λθ_{t-1}, part of ∂u_t/∂α
        try:
            for group in groups:
                group["lr"] = group["hd_lr"]
            opt.step()
        finally:
            for group, base in zip(groups, bases):
                group["lr"] = base

        # 4. Store D_t = −∂u_t/∂α for the next step. A parameter without a gradient did not
        # move (∂u_t/∂α = 0) and one taken out of every group is gone: neither keeps a D.
        dirs: dict[Tensor, Tensor] = {}
        for gi, group in enumerate(groups):
            for p in group["params"]:
                if p in grads[gi]:
                    dirs[p] = self._direction(group, p, grads[gi][p], pre.get(p))
        self._dirs = dirs
        self.steps += 1
        if self.trace:  # the deque drops the oldest row beyond `trace` steps
            self._trace.append([float(g["hd_lr"]) for g in groups])
        return loss

    def _row(
        self, row: list[float], a: list[Tensor], b: list[Tensor]
    ) -> tuple[float, float, float]:
        """``(G·D, G·G, D·D)`` of one group, recomputed when float32 could not hold them.

        Squares of entries beyond about 1e19 overflow float32 (below 1e-19 they vanish) while
        the gradients themselves are finite, which would stop the scale-free rules: the group
        is then summed again in float64 from vectors scaled to max-abs 1. The multiplicative
        rule gets the scaled sums (same cosine, same signs), rms ``G·D`` at its real scale (inf
        only where float64 overflows too: that step is skipped and counted). Ordinary rows,
        and every row of the additive rule, pass unchanged: its step ``β·h`` is not
        normalised, and an h float32 cannot hold would throw the LR to a clamp, so such a step
        stays skipped and counted.
        """
        dot, gg, dd = row
        if self.rule == "additive" or (
            all(math.isfinite(v) for v in row) and gg >= _F32_TINY and dd >= _F32_TINY
        ):
            return dot, gg, dd
        sdot, sgg, sdd, sa, sb = _scaled_dot_and_norms(a, b)
        if not (sgg > 0 and sdd > 0):  # a zero G or D: float32 had it exactly
            return dot, gg, dd
        if self.rule == "multiplicative":
            return sdot, sgg, sdd
        return sdot * sa * sb, sgg * sa * sa, sdd * sb * sb

    def _direction(self, group: dict[str, Any], p: Tensor, g: Tensor, pre: Tensor | None) -> Tensor:
        state = self.optimizer.state.get(p, {})
        if self.family == "sgd":
            mu = group.get("momentum", 0.0)
            if not mu:
                return g.clone() if g is p.grad else g
            buf = state["momentum_buffer"]
            if group.get("nesterov", False):
                return g.add(buf, alpha=mu)
            return buf.clone()
        beta1, beta2 = (float(b) for b in group["betas"])
        step = float(state["step"])
        m = state["exp_avg"]
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        complex_ = m.is_complex()
        if complex_:  # torch's Adam runs on the real and imaginary parts separately
            m, v = torch.view_as_real(m), torch.view_as_real(v)
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        d = (m / bc1) / (v.sqrt() / math.sqrt(bc2) + group["eps"])
        if complex_:
            d = torch.view_as_complex(d.contiguous())
        if pre is not None:
            d.add_(pre)
        return d

    # ------------------------------------------------------------------ state
    def _params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _config(self) -> dict[str, Any]:
        """Arguments a state_dict must have been saved with to be loaded here."""
        return {
            "optimizer_class": type(self.optimizer).__name__,
            "rule": self.rule,
            "hypergrad_lr": self.hypergrad_lr,
            "lr_min": self.lr_bounds[0],  # state keys keep their first names
            "lr_max": self.lr_bounds[1],
            "rms_decay": self.rms_decay,
            "boost": self.boost,
            "warmup_steps": self.warmup_steps,
        }

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Wrapped optimizer's state plus the HD state and arguments (tensors and plain values).

        Raises:
            StateError: The wrapped optimizer still holds state for a parameter taken out of
                every param group (torch's own ``state_dict`` fails on it with a KeyError).
        """
        index = {p: i for i, p in enumerate(self._params())}
        orphans = sum(isinstance(p, Tensor) and p not in index for p in self.optimizer.state)
        if orphans:
            raise _sc._state_error(
                "HypergradientLR.state_dict",
                f"the wrapped optimizer holds state for {orphans} parameter(s) that are in no "
                "param group any more, which torch cannot save; delete it first (del "
                "opt.state[p] for each removed p) or put the parameters back",
            )
        return {
            "version": _STATE_VERSION,
            "kind": "HypergradientLR",
            "optimizer": self.optimizer.state_dict(),
            "hypergrad": {
                **self._config(),
                "scales": list(self._scales),
                "last_h": list(self._last_h),
                "h_sq": list(self._h_sq),
                "h_n": list(self._h_n),
                "gain": list(self._gain),
                "steps": self.steps,
                "nonfinite": self.skipped_hyper_steps,
                # (a parameter taken out of its group since the last step has no index)
                "directions": {
                    index[p]: d.detach().clone() for p, d in self._dirs.items() if p in index
                },
                "trace": [list(r) for r in self._trace],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore a :meth:`state_dict`, checking all of it before anything changes.

        States written before the ``version`` key existed still load (their arguments are
        checked as far as they were saved). A trace longer than ``trace`` keeps its last steps.

        Raises:
            StateError: Not a HypergradientLR state, missing or mistyped entries (the
                wrapped optimizer's too: non-numeric or negative LRs and hyperparameters,
                SGD/Adam per-parameter state torch would fail on), other arguments
                (``rule``, ``hypergrad_lr``, bounds, ...; all differences are listed), another
                optimizer type, or tensors shaped for another model.
        """
        owner = "HypergradientLR"
        version = _sc._state_version(owner, state_dict, ("optimizer", "hypergrad"), (1, 2), 1)
        hd = state_dict["hypergrad"]
        if not isinstance(hd, Mapping):
            raise _sc._state_error(owner, f"'hypergrad' must be a dict, got {_sc._short(hd)}")
        config = self._config()
        required = [*_HD_STATE, *(config if version >= 2 else ()), *(["gain"] * (version >= 2))]
        _sc._state_keys(owner, hd, required, "hypergrad")
        _sc._state_config(owner, hd, config)
        _sc._state_optimizer(owner, "optimizer", self.optimizer, state_dict["optimizer"])
        n = len(self.optimizer.param_groups)
        # torch's load takes the saved groups' LRs; HD needs plain non-negative floats
        base_lrs = []
        for i, group in enumerate(state_dict["optimizer"]["param_groups"]):
            lr = group["lr"]
            if isinstance(lr, Tensor) or not lr >= 0:  # (_state_optimizer: lr is a number)
                raise _sc._state_error(
                    owner,
                    f"optimizer['param_groups'][{i}]['lr'] must be a float >= 0 "
                    f"(HypergradientLR needs float LRs), got {_sc._short(lr)}",
                )
            base_lrs.append(float(lr))
        scales = [
            _sc._state_float(owner, "scales", v, low=0.0)
            for v in _sc._state_list(owner, "scales", hd["scales"], n)
        ]
        last_h = [
            _sc._state_float(owner, "last_h", v, none=True)
            for v in _sc._state_list(owner, "last_h", hd["last_h"], n)
        ]
        h_sq = [
            _sc._state_float(owner, "h_sq", v, low=0.0)
            for v in _sc._state_list(owner, "h_sq", hd["h_sq"], n)
        ]
        h_n = [_sc._state_int(owner, "h_n", v) for v in _sc._state_list(owner, "h_n", hd["h_n"], n)]
        # "gain" is absent from state dicts written before boost existed: k = 1 (off)
        gain = [
            _sc._state_float(owner, "gain", v, low=1.0)
            for v in _sc._state_list(owner, "gain", hd.get("gain", [1.0] * n), n)
        ]
        steps = _sc._state_int(owner, "steps", hd["steps"])
        nonfinite = _sc._state_int(owner, "nonfinite", hd["nonfinite"])
        trace = [
            [
                _sc._state_float(owner, "trace", v, finite=False)
                for v in _sc._state_list(owner, "trace", r)
            ]
            for r in _sc._state_list(owner, "trace", hd["trace"])
        ]
        # One LR per group of its step; groups are only ever added (add_param_group), so rows
        # never get shorter and the last has at most one per group here.
        lo = 1
        for i, row in enumerate(trace):
            if not lo <= len(row) <= n:
                raise _sc._state_error(
                    owner,
                    f"'trace' row {i} has {len(row)} LRs in the state_dict, {lo} to {n} expected "
                    "(one per param group at its step)",
                )
            lo = len(row)
        params = self._params()
        if not isinstance(hd["directions"], Mapping):
            raise _sc._state_error(
                owner, f"'directions' must be a dict, got {_sc._short(hd['directions'])}"
            )
        dirs: dict[Tensor, Tensor] = {}
        for i, d in hd["directions"].items():
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(params):
                raise _sc._state_error(
                    owner,
                    f"'directions' has an entry for parameter {_sc._short(i)}, this optimizer has "
                    f"parameters 0..{len(params) - 1}: the state comes from another model",
                )
            p = params[i]
            d = _sc._state_tensor(owner, f"directions[{i}]", d, p.shape, f"parameter {i} here")
            if d.is_complex() != p.is_complex():  # casting would drop or invent imaginary parts
                raise _sc._state_error(
                    owner,
                    f"directions[{i}] has dtype {d.dtype} in the state_dict but parameter {i} "
                    f"has {p.dtype} here: the state comes from another model",
                )
            dirs[p] = d.detach().to(device=p.device, dtype=p.dtype)
        lr_lo, lr_hi = self.lr_bounds
        hd_lrs = []
        for base, s in zip(base_lrs, scales):
            lr = min(max(base * s, lr_lo), lr_hi)  # type: ignore[operator]
            if 0 < steps < self.warmup_steps:  # the last step's ramp, as after that step
                lr = min(max(lr * (steps / self.warmup_steps), lr_lo), lr_hi)
            hd_lrs.append(lr)
        # Everything checked: from here on nothing can fail half-way.
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._dirs = dirs
        self._scales = scales  # type: ignore[assignment]
        self._last_h = last_h
        self._h_sq = h_sq  # type: ignore[assignment]
        self._h_n = h_n
        self._gain = gain  # type: ignore[assignment]
        self.steps = steps
        self.skipped_hyper_steps = nonfinite
        self._trace = deque(trace, maxlen=self.trace)  # type: ignore[arg-type]
        for g, lr in zip(self.optimizer.param_groups, hd_lrs):
            g["hd_lr"] = lr


def __getattr__(name: str) -> Any:
    # The state checks moved to autolr._statecheck; code that imported them from here (e.g.
    # integrations/flower) keeps working.
    if name.startswith("_") and hasattr(_sc, name):
        return getattr(_sc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
