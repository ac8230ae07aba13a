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

The adapted LR is clamped to ``[lr_min, lr_max]`` (``lr_min = 0``: never negative). Non-finite
hypergradients leave the LR unchanged and are counted.

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
``group["hd_lr"]`` and every step's value is in :attr:`lr_trace`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._errors import ConfigError, ConfigTypeError, StateError

__all__ = ["DEFAULT_HYPERGRAD_LR", "HypergradientLR", "dot_and_norms"]

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


def dot_and_norms(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``[a·b, a·a, b·b]`` over two equally long lists of tensors, as one float32 tensor.

    The hypergradient kernel of :class:`HypergradientLR`: the additive rule needs ``a·b``
    (current gradient · previous direction), the normalised rules the cosine
    ``a·b / √(a·a · b·b)``. (FedHyper works on whole flattened model updates in their own
    dtype and uses ``torch.dot`` directly.) Sums are taken on the first tensor's device in
    float32 and returned without a host sync, so callers can batch several before one
    ``.tolist()``.

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
        x = x.detach().reshape(-1).float()
        y = y.detach().reshape(-1).float()
        parts.append(torch.stack([x @ y, x @ x, y @ y]).to(dev))
    return torch.stack(parts).sum(0)


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
            (AMSGrad, ``maximize`` and weight decay supported) with float LRs.
        rule: ``"multiplicative"`` (normalised by ``‖G‖‖D‖``, scale-free; default),
            ``"rms"`` (normalised by the running RMS of h) or ``"additive"`` (Baydin's rule).
        hypergrad_lr: β, the hyper-learning-rate. ``None`` takes
            :data:`DEFAULT_HYPERGRAD_LR` for the rule and family (multiplicative and rms 0.02;
            additive 1e-3 SGD, 1e-7 Adam). ``0`` reproduces the wrapped optimizer bit for bit.
        lr_min: Lower clamp of the adapted LR (default 0: never negative).
        lr_max: Upper clamp of the adapted LR (default inf; set it with the additive rule,
            whose LR can run away once the loss starts to diverge).
        rms_decay: Decay of the running mean of h² (``"rms"`` rule only).
        boost: Largest step-size multiplier under a persistent hypergradient sign (``k`` grows
            ×1.2 per step while the sign persists, back to 1 when it flips). ``1`` (default):
            off. Normalised rules only; the multiplicative rule needs ``β·boost < 1``.
        warmup_steps: Linear LR warm-up length inside HD (default 0: none); during it HD may
            only lower its factor (a probe for an oversized LR), afterwards both ways.
        trace: Record the LR of every step in :attr:`lr_trace` (one float per group and step).

    Attributes:
        optimizer: The wrapped optimizer.
        steps: Steps taken through the wrapper.
        nonfinite: Group-steps whose hypergradient was NaN/inf (LR left unchanged).

    Example:
        >>> import torch
        >>> from autolr import HypergradientLR
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.01), lr_max=1.0)
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     model(torch.ones(2, 3)).pow(2).mean().backward()
        ...     opt.step()
        >>> len(opt.lr_trace), opt.lrs[0] > 0.01  # consistent gradients: the LR grows
        (3, True)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        rule: str = "multiplicative",
        hypergrad_lr: float | None = None,
        lr_min: float = 0.0,
        lr_max: float = math.inf,
        rms_decay: float = 0.99,
        trace: bool = True,
        boost: float = 1.0,
        warmup_steps: int = 0,
    ) -> None:
        # Deliberately no super().__init__: the wrapper owns no parameters; param_groups, state
        # and defaults are the wrapped optimizer's (see the properties below).
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigTypeError(
                "optimizer must be a torch.optim.SGD, Adam or AdamW instance, got "
                f"{type(optimizer).__name__}"
            )
        family = _family(optimizer)
        if rule not in _RULES:
            raise ConfigError(f"rule must be one of {_RULES}, got {rule!r}")
        if hypergrad_lr is None:
            hypergrad_lr = DEFAULT_HYPERGRAD_LR[(rule, family)]
        if isinstance(hypergrad_lr, bool) or not isinstance(hypergrad_lr, (int, float)):
            raise ConfigTypeError(f"hypergrad_lr must be a float, got {hypergrad_lr!r}")
        beta = float(hypergrad_lr)
        if not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"hypergrad_lr must be finite and >= 0, got {beta}")
        if rule != "additive" and beta >= 1:
            raise ConfigError(
                f"the {rule} rule needs hypergrad_lr < 1 (LR factor per step ≈ 1 ± β), got {beta}"
            )
        lr_min, lr_max = float(lr_min), float(lr_max)
        if math.isnan(lr_min) or lr_min < 0 or math.isinf(lr_min):
            raise ConfigError(f"lr_min must be finite and >= 0, got {lr_min}")
        if math.isnan(lr_max) or lr_max <= lr_min:
            raise ConfigError(f"lr_max must be > lr_min ({lr_min}), got {lr_max}")
        rms_decay = float(rms_decay)
        if not 0.0 <= rms_decay < 1.0:
            raise ConfigError(f"rms_decay must be in [0, 1), got {rms_decay}")
        if isinstance(boost, bool) or not isinstance(boost, (int, float)):
            raise ConfigTypeError(f"boost must be a float, got {boost!r}")
        boost = float(boost)
        if not math.isfinite(boost) or boost < 1.0:
            raise ConfigError(f"boost must be finite and >= 1 (1 = off), got {boost}")
        if boost != 1.0 and rule == "additive":
            raise ConfigError("boost needs a normalised rule ('multiplicative' or 'rms')")
        if rule == "multiplicative" and beta * boost >= 1:
            raise ConfigError(
                f"the multiplicative rule needs hypergrad_lr * boost < 1, got {beta} * {boost}"
            )
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int):
            raise ConfigTypeError(f"warmup_steps must be an int, got {warmup_steps!r}")
        if warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
        for i, group in enumerate(optimizer.param_groups):
            self._check_group(i, group)
        self.optimizer = optimizer
        self.boost = boost
        self.warmup_steps = warmup_steps
        self.rms_decay = rms_decay
        self.family = family
        self.rule = rule
        self.hypergrad_lr = beta
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.trace = bool(trace)
        self.steps = 0
        self.nonfinite = 0
        self._scales: list[float] = [1.0] * len(optimizer.param_groups)
        self._last_h: list[float | None] = [None] * len(optimizer.param_groups)
        self._h_sq: list[float] = [0.0] * len(optimizer.param_groups)  # EMA of h² ("rms")
        self._h_n: list[int] = [0] * len(optimizer.param_groups)  # hypergradients used
        self._gain: list[float] = [1.0] * len(optimizer.param_groups)  # boost multiplier k
        self._trace: list[list[float]] = []
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
            f"lr_min={self.lr_min:g}, lr_max={self.lr_max:g}, boost={self.boost:g}, "
            f"warmup_steps={self.warmup_steps}, optimizer={self.optimizer!r})"
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the wrapped optimizer's gradients."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer; its HD factor starts at 1."""
        self.optimizer.add_param_group(param_group)
        group = self.optimizer.param_groups[-1]
        self._check_group(len(self.optimizer.param_groups) - 1, group)
        group["hd_lr"] = float(group["lr"])
        self._scales.append(1.0)
        self._last_h.append(None)
        self._h_sq.append(0.0)
        self._h_n.append(0)
        self._gain.append(1.0)

    @staticmethod
    def _check_group(i: int, group: dict[str, Any]) -> None:
        if isinstance(group["lr"], Tensor):
            raise ConfigTypeError(
                f"param_groups[{i}]['lr'] is a Tensor; HypergradientLR needs float LRs "
                "(capturable/graph-captured optimizers are not supported)"
            )

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
        """LRs used at every step so far: ``lr_trace[step][group]`` (empty if ``trace=False``)."""
        return [list(r) for r in self._trace]

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
            stats.append(dot_and_norms(a, b) if a else None)
        present = [s for s in stats if s is not None]
        # one host sync for all groups (groups on several devices meet on the first one)
        dev = present[0].device if present else None
        values = iter(torch.stack([s.to(dev) for s in present]).tolist() if present else [])

        # 2. New LR per group (every h computed above, before any LR moved).
        bases: list[float] = []
        ramp = 1.0
        if self.steps < self.warmup_steps:
            ramp = (self.steps + 1) / self.warmup_steps
        for gi, group in enumerate(groups):
            base = float(group["lr"])
            bases.append(base)
            scale = self._scales[gi]
            lr = base * scale
            if stats[gi] is not None:
                dot, gg, dd = next(values)
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
                if math.isfinite(h) and math.isfinite(new):
                    self._last_h[gi] = h
                    self._h_sq[gi] = sq
                    self._h_n[gi] += 1
                    self._gain[gi] = gain
                    lr = new
                else:
                    self.nonfinite += 1
            lr = min(max(lr, self.lr_min), self.lr_max)
            if base > 0:
                self._scales[gi] = lr / base
            if ramp < 1.0:
                lr = min(max(lr * ramp, self.lr_min), self.lr_max)
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

        # 4. Store D_t = −∂u_t/∂α for the next step.
        for gi, group in enumerate(groups):
            for p in group["params"]:
                if p not in grads[gi]:
                    self._dirs.pop(p, None)  # did not move: ∂u_t/∂α = 0
                    continue
                self._dirs[p] = self._direction(group, p, grads[gi][p], pre.get(p))
        self.steps += 1
        if self.trace:
            self._trace.append([float(g["hd_lr"]) for g in groups])
        return loss

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
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        d = (state["exp_avg"] / bc1) / (v.sqrt() / math.sqrt(bc2) + group["eps"])
        if pre is not None:
            d.add_(pre)
        return d

    # ------------------------------------------------------------------ state
    def _params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Wrapped optimizer's state plus the HD state (tensors and plain values only)."""
        index = {p: i for i, p in enumerate(self._params())}
        return {
            "optimizer": self.optimizer.state_dict(),
            "hypergrad": {
                "rule": self.rule,
                "hypergrad_lr": self.hypergrad_lr,
                "scales": list(self._scales),
                "last_h": list(self._last_h),
                "h_sq": list(self._h_sq),
                "h_n": list(self._h_n),
                "gain": list(self._gain),
                "boost": self.boost,
                "warmup_steps": self.warmup_steps,
                "steps": self.steps,
                "nonfinite": self.nonfinite,
                "directions": {index[p]: d.detach().clone() for p, d in self._dirs.items()},
                "trace": [list(r) for r in self._trace],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore a :meth:`state_dict` (the rule and β stay those given to the constructor)."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"optimizer", "hypergrad"}:
            raise StateError("not a HypergradientLR state_dict (keys 'optimizer', 'hypergrad')")
        hd = state_dict["hypergrad"]
        keys = {"scales", "last_h", "h_sq", "h_n", "steps", "nonfinite", "directions", "trace"}
        missing = keys - set(hd)
        if missing:
            raise StateError(f"HypergradientLR state_dict lacks {sorted(missing)}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        n_groups = len(self.optimizer.param_groups)
        if any(len(hd[k]) != n_groups for k in ("scales", "last_h", "h_sq", "h_n")):
            raise StateError(
                f"state_dict has {len(hd['scales'])} group factors, optimizer has {n_groups} groups"
            )
        params = self._params()
        dirs: dict[Tensor, Tensor] = {}
        for i, d in hd["directions"].items():
            i = int(i)
            if not 0 <= i < len(params) or tuple(d.shape) != tuple(params[i].shape):
                raise StateError(f"direction {i} does not match the optimizer's parameters")
            dirs[params[i]] = d.to(device=params[i].device, dtype=params[i].dtype)
        self._dirs = dirs
        self._scales = [float(s) for s in hd["scales"]]
        self._last_h = [None if h is None else float(h) for h in hd["last_h"]]
        self._h_sq = [float(v) for v in hd["h_sq"]]
        self._h_n = [int(v) for v in hd["h_n"]]
        # "gain" is absent from state dicts written before boost existed: k = 1 (off)
        gains = hd.get("gain", [1.0] * n_groups)
        if len(gains) != n_groups:
            raise StateError(f"state_dict has {len(gains)} boost gains, optimizer has {n_groups}")
        self._gain = [float(v) for v in gains]
        self.steps = int(hd["steps"])
        self.nonfinite = int(hd["nonfinite"])
        self._trace = [list(r) for r in hd["trace"]]
        for g, s in zip(self.optimizer.param_groups, self._scales):
            g["hd_lr"] = min(max(float(g["lr"]) * s, self.lr_min), self.lr_max)
            if 0 < self.steps < self.warmup_steps:  # the last step's ramp, as after that step
                g["hd_lr"] = min(
                    max(g["hd_lr"] * (self.steps / self.warmup_steps), self.lr_min), self.lr_max
                )
