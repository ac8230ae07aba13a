"""FedHyper client: per-step local-LR adaptation (FedHyper-CL)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import _statecheck as _sc
from .._autolrs._lr import GroupLRs
from .._deprecate import RenamedAttribute, take_renamed
from .._errors import ConfigError
from .._validate import check_bounds, check_float, check_instance
from ._flat import flatten_like

_STATE_VERSION = 2  # 1: unversioned, no arguments saved; 2: arguments and shapes checked

__all__ = ["FedHyperClient"]


class FedHyperClient:
    """Client-side local-LR adaptation of FedHyper (FedHyper-CL) around a torch optimizer.

    Within a round, after every ``optimizer.step()``, call :meth:`step`. With δ_k = w_k − w_{k−1}
    the k-th local step, p the previous direction (δ_{k−1}, or the previous global update
    Δ_{t−1} for the first step) and Δ_{t−1} the server's :attr:`FedHyperServer.previous_update`:

    ``x = c·⟨δ_k, Δ_{t−1}⟩``, ``y = ⟨δ_k, p⟩``, ``γ = min(γ_max, 1 + β(x + y))``,
    ``s ← clip(γ s, s_min, s_max)``, and the optimizer's LR becomes ``base_lr · s``.

    This is the released code's rule (``ATP-1010/FedHyper`` ``src/update.py``; β = 1 there,
    c = 0.1/(clients per round), γ_max = 1.1, s ∈ [0.1, 10]) with β and c explicit. The scale s
    restarts at 1 every round (:meth:`begin_round`); without Δ_{t−1} (round 0) the first step
    only records δ_1. Steps whose δ is not finite are not used for adaptation (and counted).

    Args:
        optimizer: the client's torch optimizer. Its param groups keep the LR ratios they were
            built with (as under AutoLRS): the first group with a positive LR runs at
            ``base_lr · s``, the others at the same multiple of their own LR, and groups built
            with ``lr=0`` stay frozen. Tensor LRs (fused/capturable optimizers) are filled in
            place.
        hypergrad_lr: β (>= 0). Default 1.0; 0 disables adaptation. (Renamed from
            ``hyper_lr``, which still works for one release with a DeprecationWarning.)
        global_coef: c, weight of the agreement with Δ_{t−1}. Default 0.1.
        max_growth: γ_max (>= 1), the largest per-step growth. Default 1.1.
        scale_bounds: (s_min, s_max) clip bounds of s. Default (0.1, 10.0).

    Raises:
        ConfigTypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
        ConfigError: bad numbers, or every param group at ``lr=0``.

    Attributes:
        optimizer: The wrapped optimizer (its param groups' LRs are the ones scaled).
        base_lr: This round's LR of the reference group (the first with a positive LR).
        scale: s, the in-round LR factor.
        steps: local steps seen.
        skipped_hyper_steps: local steps not used for adaptation (non-finite δ or dot
            products). Formerly ``steps_skipped`` (deprecated alias).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> client = FedHyperClient(opt, hypergrad_lr=10.0)
        >>> client.begin_round(0.1, [torch.tensor([1.0, 1.0])])  # Δ_{t−1}
        >>> for _ in range(3):
        ...     opt.zero_grad(); (-w.sum()).backward(); opt.step(); lr = client.step()
        >>> round(client.scale, 4), round(lr, 4)  # steps agree with Δ_{t−1}: LR grows 10 %/step
        (1.331, 0.1331)
    """

    hyper_lr = RenamedAttribute("hypergrad_lr")
    steps_skipped = RenamedAttribute("skipped_hyper_steps")

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        hypergrad_lr: float = 1.0,
        global_coef: float = 0.1,
        max_growth: float = 1.1,
        scale_bounds: tuple[float, float] = (0.1, 10.0),
        **renamed: Any,
    ) -> None:
        old = take_renamed(
            "FedHyperClient",
            renamed,
            {"hyper_lr": "hypergrad_lr"},
            {"hypergrad_lr": hypergrad_lr},
            {"hypergrad_lr": 1.0},
        )
        hypergrad_lr = old.get("hypergrad_lr", hypergrad_lr)
        check_instance("optimizer", optimizer, torch.optim.Optimizer)
        self.optimizer = optimizer
        self.hypergrad_lr = check_float(old.name("hypergrad_lr"), hypergrad_lr, minimum=0.0)
        self.global_coef = check_float("global_coef", global_coef, minimum=0.0)
        self.max_growth = check_float("max_growth", max_growth, minimum=1.0)
        self.scale_bounds = check_bounds(
            "scale_bounds", scale_bounds, positive=True, allow_equal=True
        )
        if not self.scale_bounds[0] <= 1.0 <= self.scale_bounds[1]:
            raise ConfigError(f"scale_bounds must contain 1, got {scale_bounds!r}")
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        # One LR-setting rule for every tuner: group ratios kept, lr=0 groups frozen.
        self._group_lrs = GroupLRs(optimizer)
        self._group_lrs.watch()  # an LR scheduler or a write beside the client: warned once
        self._lr_warned = False
        self.base_lr = self._group_lrs.first
        self.scale = 1.0
        self.steps = 0
        self.skipped_hyper_steps = 0
        self._last: torch.Tensor | None = None
        self._prev_step: torch.Tensor | None = None
        self._global: torch.Tensor | None = None

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params]).clone()

    @property
    def lr(self) -> float:
        """The LR the optimizer uses now: ``base_lr · scale``."""
        return self.base_lr * self.scale

    def _set_lr(self) -> None:
        self._group_lrs.set(self.lr)

    def begin_round(
        self,
        base_lr: float | None = None,
        global_update: Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Start a round: reset s to 1, set the LR and remember the starting weights.

        Call after loading the global model into the client's parameters.

        Args:
            base_lr: this round's base LR (e.g. the server's SL-adapted ``local_lr``); default:
                keep the current one.
            global_update: Δ_{t−1} shaped like the optimizer's parameters, or None (round 0).

        Raises:
            ConfigError: ``global_update`` does not match the parameters (count, shapes), or
                parameter groups were added to the optimizer after the client was built.
            ConfigTypeError: ``global_update`` is not a sequence of tensors.
        """
        self._group_lrs.check_groups()
        self._group_lrs.take_used()  # steps before the round say nothing about its LR
        if base_lr is not None:
            self.base_lr = check_float("base_lr", base_lr, minimum=0.0, min_inclusive=False)
        self.scale = 1.0
        self._set_lr()
        self._last = self._flat()
        self._prev_step = None
        self._global = None
        if global_update is not None:
            shapes = [tuple(p.shape) for p in self._params]
            flat = flatten_like(
                global_update, shapes, self._last, "global_update", "the client's optimizer"
            )
            self._global = flat if bool(torch.isfinite(flat).all()) else None

    @torch.no_grad()
    def step(self) -> float:
        """Adapt the LR after one ``optimizer.step()``; returns the LR for the next step.

        Raises:
            ConfigError: called before :meth:`begin_round`, or parameter groups were added to
                the optimizer after the client was built.
        """
        if self._last is None:
            raise ConfigError("call begin_round() before step()")
        self._group_lrs.check_groups()  # a group added later would be left untuned
        self._check_lr()
        now = self._flat()
        delta = now - self._last
        self._last = now
        self.steps += 1
        if not bool(torch.isfinite(delta).all()):
            self.skipped_hyper_steps += 1
            self._prev_step = None
            return self.lr
        prev = self._prev_step if self._prev_step is not None else self._global
        self._prev_step = delta
        if prev is None or self.hypergrad_lr == 0.0:
            return self.lr
        x = 0.0
        if self._global is not None:
            x = self.global_coef * float(torch.dot(delta, self._global))
        y = float(torch.dot(delta, prev))
        if not (math.isfinite(x) and math.isfinite(y)):
            self.skipped_hyper_steps += 1
            return self.lr
        gamma = min(self.max_growth, 1.0 + self.hypergrad_lr * (x + y))
        lo, hi = self.scale_bounds
        self.scale = min(hi, max(lo, gamma * self.scale))
        self._set_lr()
        return self.lr

    def _check_lr(self) -> None:
        """Once: something else set the LR (at or since the last ``optimizer.step()``).

        The client writes its own LR back (it did so silently before, so a scheduler stepped
        beside it never took effect and nothing said so).
        """
        g = self._group_lrs
        if g.take_unchanged():
            return
        used = g.take_used()
        bad = (g.drift(used) if used is not None else []) + g.drift(g.read())
        if not bad:
            return
        if not self._lr_warned:
            self._lr_warned = True
            i, want, got = bad[0]
            warnings.warn(
                f"FedHyperClient: param group {i}'s LR was changed outside the client (it set "
                f"{want:.6g}, found {got:.6g}). Most likely an LR scheduler "
                "(torch.optim.lr_scheduler) is stepped beside it, or code writes "
                "param_group['lr']: remove it; the client sets every group's LR itself (the "
                "round's base LR comes from begin_round(base_lr)). It writes its own LR back.",
                RuntimeWarning,
                stacklevel=3,
            )
        g.set(self.lr)

    def _config(self) -> dict[str, Any]:
        """Arguments a state_dict must have been saved with to be loaded here."""
        # State keys keep the names of the release that wrote them, so old states still load.
        return {
            "hyper_lr": self.hypergrad_lr,
            "global_coef": self.global_coef,
            "max_growth": self.max_growth,
            "scale_bounds": list(self.scale_bounds),
        }

    def state_dict(self) -> dict[str, Any]:
        """Scale, base LR, counters, the in-round buffers and the arguments (tensors and plain
        values)."""

        def copy(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.clone()

        return {
            "version": _STATE_VERSION,
            "kind": "FedHyperClient",
            "config": {**self._config(), "shapes": [list(p.shape) for p in self._params]},
            "base_lr": self.base_lr,
            "scale": self.scale,
            "steps": self.steps,
            "steps_skipped": self.skipped_hyper_steps,
            "last": copy(self._last),
            "prev_step": copy(self._prev_step),
            "global": copy(self._global),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply the LR to the optimizer.

        Everything is checked before anything changes; states written before the ``version``
        key existed still load.

        Raises:
            StateError: not a FedHyperClient state, missing or mistyped entries, other
                arguments (all differences are listed), or parameters of another shape.
        """
        owner = "FedHyperClient"
        signature = ("base_lr", "scale", "steps_skipped")
        version = _sc._state_version(owner, state, signature, (1, 2), 1)
        bufs = ("last", "prev_step", "global")
        _sc._state_keys(owner, state, [*signature, "steps", *bufs, *(["config"] * (version >= 2))])
        shapes = [tuple(p.shape) for p in self._params]
        if version >= 2:
            config = state["config"]
            if not isinstance(config, Mapping):
                raise _sc._state_error(owner, f"'config' must be a dict, got {_sc._short(config)}")
            mine = self._config()
            _sc._state_keys(owner, config, [*mine, "shapes"], "config")
            _sc._state_config(owner, config, mine)
            saved = _sc._state_list(owner, "config['shapes']", config["shapes"])
            got = [tuple(s) if isinstance(s, (list, tuple)) else s for s in saved]
            if got != shapes:
                # A malformed entry (e.g. 5 instead of [5]) is shown as saved, not unpacked.
                raise _sc._state_error(
                    owner,
                    f"the state_dict is for parameters of shapes {_sc._short(got)}, "
                    f"this client's optimizer holds {shapes}: the state comes from another model",
                )
        numel = sum(p.numel() for p in self._params)
        flat = {}
        for k in bufs:
            b = state[k]
            flat[k] = None if b is None else _sc._state_tensor(owner, k, b, (numel,), "this client")
        base_lr = _sc._state_float(owner, "base_lr", state["base_lr"], positive=True)
        scale = _sc._state_float(owner, "scale", state["scale"], positive=True)
        lo, hi = self.scale_bounds
        if not lo <= scale <= hi:  # step() clips to the bounds: a saved state never leaves them
            raise _sc._state_error(
                owner, f"'scale' is {scale:g}, outside scale_bounds ({lo:g}, {hi:g})"
            )
        for k in ("prev_step", "global"):  # kept only when finite (the weights may not be)
            b = flat[k]
            if b is not None and not bool(torch.isfinite(b).all()):
                raise _sc._state_error(owner, f"{k!r} holds NaN/inf values")
        steps = _sc._state_int(owner, "steps", state["steps"])
        skipped = _sc._state_int(owner, "steps_skipped", state["steps_skipped"])
        # Everything checked: from here on nothing can fail half-way.
        ref = self._params[0]
        self.base_lr, self.scale = base_lr, scale  # type: ignore[assignment]
        self.steps, self.skipped_hyper_steps = steps, skipped
        self._last, self._prev_step, self._global = (
            None if b is None else b.detach().to(ref.device, ref.dtype).clone()
            for b in flat.values()
        )
        self._set_lr()
