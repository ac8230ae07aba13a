"""Tuned hyperparameters: bounds, transforms, perturbation and entropy (the "λ" of an STN)."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._errors import ConfigError, ConfigTypeError
from .._statecheck import (
    _describe_state,
    _name,
    _short,
    _state_config,
    _state_error,
    _state_keys,
    _state_tensor,
)
from .._validate import check_float, check_int

__all__ = ["HyperContext", "HyperSpace", "current_context"]

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)
_STATE_VERSION = 1  # in "_extra_state"; states without the key are read as version 1


def _inv_softplus(y: float) -> float:
    # log(exp(y) - 1) written to stay finite for large y.
    return y + math.log(-math.expm1(-y))


def _f32_finite(v: float) -> bool:
    """Whether ``v`` stays finite once stored in float32 (λ, σ and the bounds are float32)."""
    return bool(torch.isfinite(torch.tensor(v, dtype=torch.float32)))


@dataclass(frozen=True)
class _Spec:
    name: str
    init: float
    low: float | None
    high: float | None
    discrete: bool
    per_example: bool
    init_scale: float
    tune_scale: bool

    @property
    def kind(self) -> str:
        if self.low is not None and self.high is not None:
            return "bounded"
        if self.low is not None:
            return "lower"
        if self.high is not None:
            return "upper"
        return "unbounded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "init": self.init,
            "low": self.low,
            "high": self.high,
            "discrete": self.discrete,
            "per_example": self.per_example,
            "init_scale": self.init_scale,
            "tune_scale": self.tune_scale,
        }


@dataclass
class HyperContext:
    """The hyperparameters seen by the current forward pass.

    Attributes:
        space: The space the rows belong to.
        h_net: ``(B, H)`` or ``(1, H)`` input of the best-response gates (unconstrained; centred
            for Delta-STN); may carry gradient to λ and σ.
        h_param: ``(B, H)`` or ``(1, H)`` constrained values (detached) used by the regularisers.
        zero_net: True when ``h_net`` is exactly zero, so layers may skip the response path.
    """

    space: HyperSpace
    h_net: torch.Tensor
    h_param: torch.Tensor
    zero_net: bool = False

    def param(self, name: str) -> torch.Tensor:
        """Column of constrained values of ``name``: shape ``(B,)`` or ``(1,)``."""
        return self.h_param[:, self.space.index(name)]


_CONTEXT: contextvars.ContextVar[HyperContext | None] = contextvars.ContextVar(
    "autolr_stn_context", default=None
)


def current_context(space: HyperSpace | None = None) -> HyperContext | None:
    """The active :class:`HyperContext`, or the unperturbed one of ``space`` when none is active.

    Returns None only when no context is active and ``space`` is None.
    """
    ctx = _CONTEXT.get()
    if ctx is not None:
        return ctx
    if space is None:
        return None
    return space.default_context()


class HyperSpace(nn.Module):
    """Named hyperparameters tuned by a Self-Tuning Network.

    Each hyperparameter is stored unconstrained (``λ``) and mapped to its constrained value by
    its kind: both bounds → stretched sigmoid ``low + (high - low)·sigmoid(λ)``; ``low`` only →
    ``low + softplus(λ)``; ``high`` only → ``high - softplus(λ)``; no bounds → identity.
    Discrete hyperparameters use the continuous range ``[low, high + 1)`` and are floored (and
    clipped to ``high``) in the constrained view, while the gates see the continuous value.
    Training samples ``λ' = λ + σ·ε`` with a learned scale ``σ = softplus(ρ)``, one row per
    example (``per_example=True``) or one per batch.

    Add every hyperparameter before :func:`autolr.stn.convert`, which fixes the size.

    Args:
        centred: Delta-STN parameterisation: the gates see ``λ' - λ`` (zero at λ) instead of
            ``λ'``. :class:`autolr.stn.STNTuner` sets it from its ``variant``;
            :meth:`load_state_dict` refuses a state saved with the other value.

    Example:
        >>> space = HyperSpace()
        >>> space = space.add("drop", 0.1, low=0.0, high=0.9).add("wd", 1e-3, low=0.0)
        >>> round(space.values()["drop"], 6), space.kind("wd")
        (0.1, 'lower')
        >>> space.sample(4).shape
        torch.Size([4, 2])
    """

    def __init__(self, *, centred: bool = False) -> None:
        super().__init__()
        self._specs: list[_Spec] = []
        self._frozen = False
        self._masks: dict[str, torch.Tensor] = {}
        self._any_discrete = False
        self.centred = bool(centred)
        self.unconstrained = nn.Parameter(torch.zeros(0))
        self.rho = nn.Parameter(torch.zeros(0))
        self.register_buffer("_low", torch.zeros(0))
        self.register_buffer("_high", torch.zeros(0))
        self.register_buffer("_origin", torch.zeros(0))

    # ------------------------------------------------------------------ building
    def add(
        self,
        name: str,
        init: float,
        *,
        low: float | None = None,
        high: float | None = None,
        discrete: bool = False,
        per_example: bool = True,
        init_scale: float = 0.5,
        tune_scale: bool = True,
    ) -> HyperSpace:
        """Register a hyperparameter; returns ``self`` so calls chain.

        Args:
            name: Unique identifier used by layers, regularisers and the schedule.
            init: Initial constrained value; strictly inside ``(low, high)`` for continuous
                hyperparameters, an integer in ``[low, high]`` for discrete ones.
            low: Lower bound or None.
            high: Upper bound or None.
            discrete: Integer-valued (e.g. cutout length): relaxed, then floored.
            per_example: One perturbation per example (True) or one per batch (False).
            init_scale: Initial perturbation scale σ (in unconstrained units), > 0.
            tune_scale: Learn σ in the hyper step (with the entropy bonus) or keep it fixed.

        Raises:
            ConfigError: Duplicate name, inverted bounds, init outside the bounds, bad scale,
                a value that overflows float32 (the space's precision), or a space already
                used by :func:`convert`.
        """
        if self._frozen:
            raise ConfigError(
                "HyperSpace.add: the space is already used by converted layers; add every "
                "hyperparameter before autolr.stn.convert()"
            )
        if not isinstance(name, str) or not name:
            raise ConfigTypeError(f"HyperSpace.add: name must be a non-empty str, got {name!r}")
        if name in self.names:
            raise ConfigError(f"HyperSpace.add: duplicate hyperparameter {name!r}")
        vals = {"init": init, "low": low, "high": high, "init_scale": init_scale}
        for key, v in vals.items():
            if v is not None:
                check_float(f"HyperSpace.add({name!r}): {key}", v)
        if init is None:
            raise ConfigError(f"HyperSpace.add({name!r}): init is required")
        if low is not None and high is not None and not low < high:
            raise ConfigError(
                f"HyperSpace.add({name!r}): bounds inverted or empty: low={low} >= high={high}"
            )
        check_float(
            f"HyperSpace.add({name!r}): init_scale", init_scale, minimum=0, min_inclusive=False
        )
        if discrete:
            if float(init) != int(init):
                raise ConfigError(
                    f"HyperSpace.add({name!r}): discrete init must be an integer, got {init}"
                )
            if (low is not None and init < low) or (high is not None and init > high):
                raise ConfigError(
                    f"HyperSpace.add({name!r}): init={init} outside the bounds [{low}, {high}]"
                )
        else:
            if (low is not None and init <= low) or (high is not None and init >= high):
                raise ConfigError(
                    f"HyperSpace.add({name!r}): init={init} must lie strictly inside "
                    f"({low}, {high}) (the transform cannot reach a bound)"
                )
        spec = _Spec(
            name, float(init), None if low is None else float(low),
            None if high is None else float(high), bool(discrete), bool(per_example),
            float(init_scale), bool(tune_scale),
        )  # fmt: skip
        raw = self._check_float32(spec)
        self._specs.append(spec)
        self._rebuild([*self.unconstrained.detach().tolist(), raw])
        return self

    def _check_float32(self, spec: _Spec) -> float:
        """λ of ``spec``, after checking that λ, σ and the bounds are usable in float32.

        A finite float64 argument can overflow the float32 the space computes in: an inf init
        or bound gives NaN values, an inf σ NaN samples, a zero σ an infinite entropy, and every
        step is then skipped without an error.
        """
        where = f"HyperSpace.add({spec.name!r})"
        for key in ("init", "low", "high", "init_scale"):
            v = getattr(spec, key)
            if v is not None and not _f32_finite(v):
                raise ConfigError(
                    f"{where}: {key}={v:g} overflows float32, the precision the space "
                    f"computes in (|{key}| must stay below {torch.finfo(torch.float32).max:.4g})"
                )
        if spec.low is not None and spec.high is not None and not _f32_finite(spec.high - spec.low):
            raise ConfigError(
                f"{where}: the range high - low = {spec.high - spec.low:g} overflows float32; "
                "narrow the bounds"
            )
        try:
            raw = self._inverse(spec)
        except (ArithmeticError, ValueError):  # p rounds to 0 or 1: log(0), division by 0
            raw = math.nan
        if not _f32_finite(raw):
            raise ConfigError(
                f"{where}: init={spec.init:g} is too close to a bound of [{spec.low}, "
                f"{spec.high}] to be represented in float32; move it inside the range"
            )
        sigma = F.softplus(torch.tensor(_inv_softplus(spec.init_scale), dtype=torch.float32))
        if not sigma > 0:
            raise ConfigError(
                f"{where}: init_scale={spec.init_scale:g} underflows to 0 in float32 (the "
                "entropy bonus would be infinite); use a larger init_scale"
            )
        return raw

    def _inverse(self, spec: _Spec) -> float:
        # Discrete values live at the centre of their unit cell so flooring is stable.
        y = spec.init + 0.5 if spec.discrete else spec.init
        low, high = spec.low, spec.high
        if spec.discrete and high is not None:
            high = high + 1.0
        if low is not None and high is not None:
            p = (y - low) / (high - low)
            return math.log(p / (1.0 - p))
        if low is not None:
            return _inv_softplus(y - low)
        if high is not None:
            return _inv_softplus(high - y)
        return y

    def _rebuild(self, raw: list[float]) -> None:
        device = self.unconstrained.device
        rho = [*self.rho.detach().tolist(), _inv_softplus(self._specs[-1].init_scale)]
        self.unconstrained = nn.Parameter(torch.tensor(raw, dtype=torch.float32, device=device))
        self._origin = self.unconstrained.detach().clone()
        self.rho = nn.Parameter(torch.tensor(rho, dtype=torch.float32, device=device))
        nan = float("nan")
        low = [nan if s.low is None else s.low for s in self._specs]
        high = [
            nan if s.high is None else s.high + (1.0 if s.discrete else 0.0) for s in self._specs
        ]
        self._low = torch.tensor(low, device=device)
        self._high = torch.tensor(high, device=device)
        # Per-column masks, cached because the transforms run on every step.
        self._masks = {
            "per_example": torch.tensor([s.per_example for s in self._specs], device=device),
            "tune": torch.tensor([s.tune_scale for s in self._specs], device=device),
            "discrete": torch.tensor([s.discrete for s in self._specs], device=device),
        }
        self._any_discrete = any(s.discrete for s in self._specs)

    def _mask(self, key: str, device: torch.device) -> torch.Tensor:
        m = self._masks[key]
        if m.device != device:  # the space was moved with .to(); follow it
            m = self._masks[key] = m.to(device)
        return m

    def freeze(self) -> None:
        """Fix the set of hyperparameters (called by :func:`convert`)."""
        if not self._specs:
            raise ConfigError("HyperSpace is empty: add at least one hyperparameter")
        self._frozen = True

    # ------------------------------------------------------------------ introspection
    @property
    def names(self) -> list[str]:
        """Hyperparameter names in column order."""
        return [s.name for s in self._specs]

    def __len__(self) -> int:
        return len(self._specs)

    def index(self, name: str) -> int:
        """Column of ``name``; raises :class:`ConfigError` for an unknown name."""
        for i, s in enumerate(self._specs):
            if s.name == name:
                return i
        raise ConfigError(f"unknown hyperparameter {name!r}; the space has {self.names}")

    def _spec(self, name: str) -> _Spec:
        return self._specs[self.index(name)]

    def kind(self, name: str) -> str:
        """``"bounded"``, ``"lower"``, ``"upper"`` or ``"unbounded"``."""
        return self._specs[self.index(name)].kind

    def is_discrete(self, name: str) -> bool:
        """Whether ``name`` is integer-valued."""
        return self._specs[self.index(name)].discrete

    @property
    def scale(self) -> torch.Tensor:
        """Perturbation scales σ = softplus(ρ), shape ``(H,)``."""
        return F.softplus(self.rho)

    # ------------------------------------------------------------------ transforms
    def constrained(self, u: torch.Tensor, *, relaxed: bool = False) -> torch.Tensor:
        """Map unconstrained rows ``(..., H)`` to constrained values (discrete ones floored).

        ``relaxed=True`` leaves discrete values continuous (the gates' view).
        """
        low, high = self._low.to(u.dtype), self._high.to(u.dtype)
        has_lo, has_hi = ~torch.isnan(low), ~torch.isnan(high)
        lo0, hi0 = torch.nan_to_num(low), torch.nan_to_num(high)
        sp = F.softplus(u)
        out = torch.where(
            has_lo & has_hi,
            lo0 + (hi0 - lo0) * torch.sigmoid(u),
            torch.where(has_lo, lo0 + sp, torch.where(has_hi, hi0 - sp, u)),
        )
        if relaxed:
            return out
        if self._any_discrete:
            disc = self._mask("discrete", u.device)
            floored = torch.floor(out)
            # sigmoid can reach exactly high + 1 in float32; keep the top value at `high`.
            floored = torch.where(has_hi, torch.minimum(floored, hi0 - 1.0), floored)
            out = torch.where(disc, floored, out)
        return out

    def unconstrain(self, values: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`constrained` (relaxed) for continuous values ``(..., H)``."""
        low, high = self._low.to(values.dtype), self._high.to(values.dtype)
        has_lo, has_hi = ~torch.isnan(low), ~torch.isnan(high)
        lo0, hi0 = torch.nan_to_num(low), torch.nan_to_num(high)

        def inv_sp(y: torch.Tensor) -> torch.Tensor:
            return y + torch.log(-torch.expm1(-y))

        p = ((values - lo0) / torch.where(has_lo & has_hi, hi0 - lo0, 1.0)).clamp(1e-7, 1 - 1e-7)
        return torch.where(
            has_lo & has_hi,
            torch.log(p / (1 - p)),
            torch.where(
                has_lo,
                inv_sp((values - lo0).clamp_min(1e-12)),
                torch.where(has_hi, inv_sp((hi0 - values).clamp_min(1e-12)), values),
            ),
        )

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Perturbed unconstrained rows ``λ + σ·ε``, shape ``(batch_size, H)``.

        Reparameterised: gradient flows to λ and (for ``tune_scale``) to ρ. Per-batch
        hyperparameters share one ε across the rows.

        Raises:
            ConfigError: An empty space or a ``batch_size`` that is not an int >= 0.
        """
        if len(self._specs) == 0:
            raise ConfigError("HyperSpace is empty: add at least one hyperparameter")
        check_int("HyperSpace.sample: batch_size", batch_size, minimum=0)
        dev = self.unconstrained.device
        eps = torch.randn(batch_size, len(self), device=dev, generator=generator)
        eps = torch.where(self._mask("per_example", dev), eps, eps[:1].expand_as(eps))
        tune = self._mask("tune", dev)
        sigma = torch.where(tune, self.scale, self.scale.detach())
        return self.unconstrained + sigma * eps

    def entropy(self) -> torch.Tensor:
        """Entropy of the perturbation ``Σ log(σ·√(2πe))`` over the tuned scales."""
        tune = self._mask("tune", self.rho.device)
        ent = torch.log(self.scale) + 0.5 * _LOG_2PI_E
        return torch.where(tune, ent, torch.zeros_like(ent)).sum()

    def net_input(self, u: torch.Tensor) -> torch.Tensor:
        """The gates' view of unconstrained rows: ``u - λ₀`` (STN) or ``u - sg(λ)`` (Delta-STN).

        STN's gates see the offset from the initial value λ₀ rather than ``u`` itself: only a
        constant shift (a bias of ``V``), but it keeps the gates' input O(σ) for hyperparameters
        whose unconstrained value is far from 0 (an L2 of 1e-4 is -9.2 under softplus), which
        otherwise blows up the gate gradients.
        """
        if self.centred:
            return u - self.unconstrained.detach()
        return u - self._origin.to(u.dtype)

    def values(self) -> dict[str, float]:
        """Current constrained (unperturbed) values by name."""
        with torch.no_grad():
            vals = self.constrained(self.unconstrained).tolist()
        return dict(zip(self.names, vals, strict=True))

    def scales(self) -> dict[str, float]:
        """Current perturbation scales σ by name."""
        return dict(zip(self.names, self.scale.detach().tolist(), strict=True))

    def default_context(self) -> HyperContext:
        """The context at the unperturbed λ (evaluation and use outside the tuner)."""
        u = self.unconstrained.detach()[None]
        if self.centred:
            return HyperContext(self, torch.zeros_like(u), self.constrained(u), zero_net=True)
        return HyperContext(self, self.net_input(u), self.constrained(u))

    @contextmanager
    def context(
        self,
        u: torch.Tensor | None = None,
        *,
        h_net: torch.Tensor | None = None,
        h_param: torch.Tensor | None = None,
        zero_net: bool = False,
    ) -> Iterator[HyperContext]:
        """Make hyperparameters visible to converted layers and regularisers.

        Args:
            u: Unconstrained rows ``(B, H)``; None means the unperturbed λ. ``h_net`` and
                ``h_param`` default to :meth:`net_input` of ``u`` and its (detached)
                constrained values.
            h_net: Override of the gates' input.
            h_param: Override of the regularisers' values.
            zero_net: Promise that ``h_net`` is zero (lets layers skip the response path).

        Example:
            >>> space = HyperSpace().add("drop", 0.2, low=0.0, high=0.9)
            >>> with space.context(space.sample(3)) as ctx:
            ...     ctx.param("drop").shape
            torch.Size([3])
        """
        if u is None:
            u = self.unconstrained[None]
        if h_net is None:
            h_net = self.net_input(u)
        if h_param is None:
            h_param = self.constrained(u.detach())
        token = _CONTEXT.set(HyperContext(self, h_net, h_param.detach(), zero_net))
        try:
            yield _CONTEXT.get()  # type: ignore[misc]
        finally:
            _CONTEXT.reset(token)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "specs": [s.as_dict() for s in self._specs],
            "centred": self.centred,
        }

    def set_extra_state(self, state: Any) -> None:
        # Only checked: `centred` belongs to the tuner that owns the space (its variant), and
        # overwriting it from a state would silently switch that tuner's parameterisation.
        self._check_extra("HyperSpace", "_extra_state", state)

    def _check_extra(self, owner: str, key: str, extra: Any) -> None:
        """Check the saved specs: same names, bounds and kinds (init values may differ)."""
        if not isinstance(extra, Mapping) or not isinstance(extra.get("specs"), (list, tuple)):
            raise _state_error(
                owner, f"{_name(key)} must hold the space's specs, got {_short(extra)}"
            )
        version = extra.get("version", 1)  # unversioned: written before the key existed
        if version != _STATE_VERSION:
            raise _state_error(
                owner, f"unknown HyperSpace state version {version!r}; this autolr reads 1"
            )
        specs = extra["specs"]
        if not all(isinstance(sp, Mapping) and "name" in sp for sp in specs):
            raise _state_error(owner, f"{_name(key)} holds malformed specs: {_short(specs)}")
        names = [sp["name"] for sp in specs]
        if names != self.names:
            raise _state_error(
                owner, f"the state_dict has hyperparameters {names}, this space {self.names}"
            )
        # λ and σ come from the state, so init/init_scale may differ; what λ means may not.
        saved, mine = {}, {}
        for sp, spec in zip(specs, self._specs):
            for field in ("low", "high", "discrete", "per_example", "tune_scale"):
                saved[f"{spec.name}.{field}"] = sp.get(field)
                mine[f"{spec.name}.{field}"] = getattr(spec, field)
        if "centred" in extra:  # absent from states written before the key existed
            saved["centred"], mine["centred"] = extra["centred"], self.centred
        _state_config(owner, saved, mine)

    def _check_state(self, owner: str, key: str, state_dict: Any, strict: bool = True) -> None:
        """Check a :meth:`state_dict` against this space before anything is loaded
        (``strict=False``: entries may be missing or extra, as in ``nn.Module``)."""
        mine = self.state_dict()
        prefix = f"{key}[" if key else ""
        end = "]" if key else ""
        signature = {"unconstrained", "rho"} if strict else set()
        if not isinstance(state_dict, Mapping) or not signature <= set(state_dict):
            raise _state_error(
                owner,
                f"{key + ': ' if key else ''}got {_describe_state(state_dict)}, expected one "
                "from HyperSpace.state_dict() (keys ['rho', 'unconstrained', ...])",
            )
        if strict:
            _state_keys(owner, state_dict, list(mine), key)
            extra_keys = sorted(set(state_dict) - set(mine))
            if extra_keys:
                raise _state_error(owner, f"the state_dict has unexpected entries {extra_keys}")
        if "_extra_state" in state_dict:
            self._check_extra(owner, f"{prefix}'_extra_state'{end}", state_dict["_extra_state"])
        for k, v in mine.items():
            if isinstance(v, torch.Tensor) and k in state_dict:
                name = f"{prefix}{k!r}{end}"
                t = _state_tensor(owner, name, state_dict[k], v.shape, "this space").detach()
                if k in ("_low", "_high"):
                    # The transforms read these buffers, not the specs checked above: they must
                    # be exactly what the specs give (NaN: no bound).
                    a, b = t.cpu().double(), v.detach().cpu().double()
                    if not bool(((a == b) | (a.isnan() & b.isnan())).all()):
                        raise _state_error(
                            owner,
                            f"{name} holds {t.tolist()} but this space's bounds give "
                            f"{v.tolist()}: the state is corrupt",
                        )
                elif not bool(t.isfinite().all()):  # λ, ρ, λ₀: a NaN would poison every step
                    raise _state_error(owner, f"{name} holds non-finite values {t.tolist()}")

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):  # type: ignore[override]
        """Load λ, ρ and check the specs; raises :class:`StateError` on a different space.

        Everything is checked first (specs, bounds, ``centred``, finite λ and ρ), so a refused
        state leaves the space unchanged.
        """
        self._check_state("HyperSpace", "", state_dict, strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        vals = ", ".join(f"{k}={v:.4g}" for k, v in self.values().items())
        return f"{vals}, centred={self.centred}"
