"""FedHyper server: hypergradient global-LR (G / GM) and server-side local-LR (SL) adaptation."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from .. import _statecheck as _sc
from .._deprecate import RenamedAttribute, take_renamed
from .._errors import ConfigError, ConfigTypeError
from .._validate import check_bounds, check_choice, check_float
from ._flat import flatten_like

__all__ = ["FedHyperServer", "RoundReport"]

Rule = Literal["none", "g", "gm"]
ServerOptimizer = Literal["avg", "adam"]
_STATE_VERSION = 2  # 1: unversioned, checked only rule/optimizer/normalize; 2: every argument
#: Deprecated argument names of FedHyperServer (and of FedHyperStrategy, which forwards them).
RENAMED_ARGS = {"hyper_lr": "hypergrad_lr", "local_hyper_lr": "local_hypergrad_lr"}


@dataclass(frozen=True)
class RoundReport:
    """What one :meth:`FedHyperServer.step` did.

    Attributes:
        round: index of the round just aggregated (0-based; skipped rounds count).
        global_lr: coefficient applied to this round's averaged update Δ_t (G: η_g; GM: η_0 + a).
        momentum_coef: GM's coefficient ``a`` on the server momentum (0 for other rules).
        local_lr: client LR to use next round (SL-adapted when enabled, else the fixed one).
        hypergradient: the dot product that moved the LRs this round (``nan`` when none did).
        update_norm: ‖Δ_t‖ of the averaged client update (``nan`` when skipped).
        num_clients: replies received.
        dropped: indices (into this round's replies) of non-finite updates, never averaged in.
        skipped: True when no reply was usable, or when the averaged update (finite itself)
            would have made the model or the server's buffers non-finite; the model and the
            LRs were left unchanged.
    """

    round: int
    global_lr: float
    momentum_coef: float
    local_lr: float
    hypergradient: float
    update_norm: float
    num_clients: int
    dropped: tuple[int, ...]
    skipped: bool


class FedHyperServer:
    """Federated server step with FedHyper's hypergradient learning-rate schedulers.

    Holds the global model's parameters (updated in place, like a torch optimizer) and turns the
    sampled clients' returned parameters into one global update. Δ_t is the (weighted) mean of the
    client updates ``client − global``; the hypergradient of the global LR is ⟨u_{t−1}, Δ_t⟩,
    where u_{t−1} is the direction the previous round moved along (Wang, Wang & Li, *FedHyper*,
    ICLR 2024, arXiv 2310.03156; released code ``ATP-1010/FedHyper``):

    * ``rule="none"``: plain FedAvg, ``x += η_0 Δ_t`` (or FedAdam with ``server_optimizer="adam"``).
    * ``rule="g"`` (FedHyper-G): ``η_g ← clip(η_g + β⟨Δ_{t−1}, Δ_t⟩)``; ``x += η_g Δ_t``. With
      ``server_optimizer="adam"`` the previous direction is FedAdam's step ``m/(√v+τ)``.
    * ``rule="gm"`` (FedHyper-GM, the released code's recommendation): server momentum
      ``m_t = Δ_t + μ m_{t−1}``; ``a ← clip(a + β⟨m_{t−1}, Δ_t⟩)``; ``x += η_0 Δ_t + a m_t``. The
      bounds apply to η_0 + a, the coefficient on Δ_t.
    * ``adapt_local_lr=True`` (FedHyper-SL): the clients' LR
      ``η_l ← clip(η_l + β_l η_l0 ⟨Δ_{t−1}, Δ_t⟩)`` is kept across rounds (the released code
      rebuilt it every round, so SL never acted) and read from :attr:`local_lr`.
    * ``normalize=True`` (not in the paper): the dot products become cosines and G/SL move
      multiplicatively, ``η ← clip(η(1 + β cos))``; β no longer depends on the model's scale.

    Differences from the released code, on purpose: an explicit hyper-LR β (the release used 1,
    so the step on the LR depends on parameter scale and model size) and explicit clip bounds; an
    initial global LR η_0 (the release fixed η_0 = 1); SL persists; non-finite client updates are
    dropped and reported instead of poisoning the model. With ``hypergrad_lr=0`` every rule is
    FedAvg (FedAdam) bit for bit. :attr:`previous_update` is Δ_{t−1}, which FedHyper-CL clients
    need.

    Args:
        params: the global model's parameters (e.g. ``model.parameters()``), one dtype and device.
            Buffers (BatchNorm statistics) are not aggregated.
        rule: ``"none"``, ``"g"`` or ``"gm"``. Default ``"g"``.
        global_lr: initial global LR η_0 (> 0). Default 1.0 (FedAvg); use ~0.01–0.1 with Adam.
        hypergrad_lr: β of the global rule (>= 0). Default 1.0 (the released code's implicit value);
            0.3 with ``normalize``.
        global_lr_bounds: clip bounds (low, high) of η_g (G) or η_0 + a (GM). Default: the
            released code's (0.2, 5) for G and (0.8 η_0, 5) for GM, widened to include η_0;
            (η_0/10, 10 η_0) with Adam.
        momentum: μ of GM's server momentum. Default 0.9.
        server_optimizer: ``"avg"`` (FedAvg step) or ``"adam"`` (FedAdam, Reddi et al. 2021:
            m, v moving averages of Δ_t and Δ_t², step ``m/(√v+τ)``, no bias correction).
        adam_betas: FedAdam's (β1, β2). Default (0.9, 0.99).
        adam_tau: FedAdam's τ. Default 1e-3.
        local_lr: the clients' initial LR η_l0, reported by :attr:`local_lr`. Default 0.01.
        adapt_local_lr: enable FedHyper-SL. Default False.
        local_hypergrad_lr: β_l of SL (>= 0). Default 1.0; 0.3 with ``normalize``.
        local_lr_bounds: SL clip bounds. Default (η_l0/10, 10 η_l0) (the release's (0.001, 0.1)).
        normalize: scale-free variant (not in the paper): the hypergradient becomes the cosine
            of the two vectors and G/SL move multiplicatively, ``η ← clip(η(1 + β cos))``
            (GM: ``a ← clip(a + β η_0 cos)``), so β is a relative change per round (~0.1–0.5)
            whatever the model size, parameter scale or local LR. Default False (the paper's
            additive rule on raw dot products, whose good β depends on all of those).

    ``hyper_lr`` and ``local_hyper_lr`` are the deprecated old names of ``hypergrad_lr`` and
    ``local_hypergrad_lr`` (one DeprecationWarning; removed in the next release).

    Attributes:
        round: rounds stepped, skipped ones included.
        global_lr: η_g (G) or η_0 (GM); ``local_lr``: the clients' SL-adapted LR.
        skipped_rounds: rounds with no finite client update, or whose update would overflow
            (formerly ``rounds_skipped``).
        overflowed_rounds: of those, the rounds whose update would overflow the model or the
            server's buffers (one warning, at the first).
        dropped_updates: non-finite client updates dropped (formerly ``updates_dropped``).

    Raises:
        ConfigError / ConfigTypeError: bad arguments (no parameters, mixed devices or dtypes,
            non-positive LRs, η_0 outside the bounds, GM with Adam, ...).

    Example:
        >>> w = torch.zeros(2)
        >>> server = FedHyperServer([w], rule="g", global_lr=1.0, hypergrad_lr=1.0)
        >>> _ = server.step([[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]])
        >>> w.tolist()  # FedAvg in round 0: Δ_0 = (0.5, 0.5)
        [0.5, 0.5]
        >>> report = server.step([[torch.tensor([1.5, 1.5])]])  # Δ_1 = (1, 1); ⟨Δ_0, Δ_1⟩ = 1
        >>> report.global_lr, w.tolist()
        (2.0, [2.5, 2.5])
    """

    hyper_lr = RenamedAttribute("hypergrad_lr")
    local_hyper_lr = RenamedAttribute("local_hypergrad_lr")
    rounds_skipped = RenamedAttribute("skipped_rounds")
    updates_dropped = RenamedAttribute("dropped_updates")

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        *,
        rule: Rule = "g",
        global_lr: float = 1.0,
        hypergrad_lr: float | None = None,
        global_lr_bounds: tuple[float, float] | None = None,
        momentum: float = 0.9,
        server_optimizer: ServerOptimizer = "avg",
        adam_betas: tuple[float, float] = (0.9, 0.99),
        adam_tau: float = 1e-3,
        local_lr: float = 0.01,
        adapt_local_lr: bool = False,
        local_hypergrad_lr: float | None = None,
        local_lr_bounds: tuple[float, float] | None = None,
        normalize: bool = False,
        **renamed: Any,
    ) -> None:
        old = take_renamed(
            "FedHyperServer",
            renamed,
            RENAMED_ARGS,
            {"hypergrad_lr": hypergrad_lr, "local_hypergrad_lr": local_hypergrad_lr},
            {"hypergrad_lr": None, "local_hypergrad_lr": None},
        )
        hypergrad_lr = old.get("hypergrad_lr", hypergrad_lr)
        local_hypergrad_lr = old.get("local_hypergrad_lr", local_hypergrad_lr)
        if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
            raise ConfigTypeError("params must be an iterable of tensors, e.g. model.parameters()")
        self.params: list[torch.Tensor] = list(params)
        if not self.params:
            raise ConfigError("params is empty: the server needs the global model's parameters")
        for p in self.params:
            if not isinstance(p, torch.Tensor):
                raise ConfigTypeError(f"params must hold tensors, got {type(p).__name__}")
        if len({(p.device, p.dtype) for p in self.params}) != 1:
            raise ConfigError("params must share one device and one dtype")
        if not self.params[0].is_floating_point():
            raise ConfigError(f"params must be floating point, got {self.params[0].dtype}")
        check_choice("rule", rule, ("none", "g", "gm"))
        check_choice("server_optimizer", server_optimizer, ("avg", "adam"))
        if rule == "gm" and server_optimizer == "adam":
            raise ConfigError("rule='gm' adds server momentum; with Adam use rule='g'")
        self.rule: Rule = rule
        self.server_optimizer: ServerOptimizer = server_optimizer
        self.initial_global_lr = check_float(
            "global_lr", global_lr, minimum=0.0, min_inclusive=False
        )
        self.normalize = bool(normalize)
        default_beta = 0.3 if self.normalize else 1.0
        self.hypergrad_lr = check_float(
            old.name("hypergrad_lr"),
            default_beta if hypergrad_lr is None else hypergrad_lr,
            minimum=0.0,
        )
        self.momentum = check_float("momentum", momentum, minimum=0, maximum=1, max_inclusive=False)
        eta0 = self.initial_global_lr
        if global_lr_bounds is None:
            if server_optimizer == "adam":
                global_lr_bounds = (eta0 / 10.0, eta0 * 10.0)
            elif rule == "gm":
                global_lr_bounds = (0.8 * eta0, max(5.0, eta0))
            else:
                global_lr_bounds = (min(0.2, eta0), max(5.0, eta0))
        self.global_lr_bounds = check_bounds(
            "global_lr_bounds", global_lr_bounds, positive=True, allow_equal=True
        )
        if not self.global_lr_bounds[0] <= eta0 <= self.global_lr_bounds[1]:
            raise ConfigError(
                f"global_lr {eta0} lies outside global_lr_bounds {self.global_lr_bounds}"
            )
        if isinstance(adam_betas, (str, bytes)) or not (
            isinstance(adam_betas, Sequence) and len(adam_betas) == 2
        ):
            raise ConfigTypeError(f"adam_betas must be a pair (beta1, beta2), got {adam_betas!r}")
        b1, b2 = adam_betas
        self.adam_betas = (
            check_float("adam_betas[0]", b1, minimum=0, maximum=1, max_inclusive=False),
            check_float("adam_betas[1]", b2, minimum=0, maximum=1, max_inclusive=False),
        )
        self.adam_tau = check_float("adam_tau", adam_tau, minimum=0.0, min_inclusive=False)
        self.initial_local_lr = check_float("local_lr", local_lr, minimum=0.0, min_inclusive=False)
        self.adapt_local_lr = bool(adapt_local_lr)
        self.local_hypergrad_lr = check_float(
            old.name("local_hypergrad_lr"),
            default_beta if local_hypergrad_lr is None else local_hypergrad_lr,
            minimum=0,
        )
        if local_lr_bounds is None:
            local_lr_bounds = (self.initial_local_lr / 10.0, self.initial_local_lr * 10.0)
        self.local_lr_bounds = check_bounds(
            "local_lr_bounds", local_lr_bounds, positive=True, allow_equal=True
        )
        if not self.local_lr_bounds[0] <= self.initial_local_lr <= self.local_lr_bounds[1]:
            raise ConfigError(
                f"local_lr {self.initial_local_lr} lies outside local_lr_bounds "
                f"{self.local_lr_bounds}"
            )
        self._shapes = [tuple(p.shape) for p in self.params]
        self._numel = sum(p.numel() for p in self.params)
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self.round = 0  # rounds stepped, skipped ones included
        self.global_lr = self.initial_global_lr  # G: η_g; GM: η_0 (a is separate)
        self.momentum_coef = 0.0  # GM's a
        self.local_lr = self.initial_local_lr
        self.skipped_rounds = 0
        self.dropped_updates = 0
        self.overflowed_rounds = 0  # skipped because the update would overflow (in skipped_rounds)
        self._prev_delta: torch.Tensor | None = None  # Δ_{t−1} (raw average)
        self._prev_dir: torch.Tensor | None = None  # G with Adam: previous Adam direction
        self._momentum_buf: torch.Tensor | None = None  # GM: m_{t−1}
        self._adam_m: torch.Tensor | None = None
        self._adam_v: torch.Tensor | None = None

    @property
    def effective_global_lr(self) -> float:
        """The coefficient on Δ_t in the next step: η_g (G, none) or η_0 + a (GM)."""
        if self.rule == "gm":
            return self.initial_global_lr + self.momentum_coef
        return self.global_lr

    @property
    def previous_update(self) -> list[torch.Tensor] | None:
        """Δ_{t−1}, the last averaged client update, shaped like the parameters (None at first).

        FedHyper-CL clients compare their local steps with it (pass it to
        :meth:`FedHyperClient.begin_round`); in a real deployment it is broadcast with the model.
        """
        if self._prev_delta is None:
            return None
        return self._unflatten(self._prev_delta)

    def _flatten(self, tensors: Iterable[torch.Tensor], who: str) -> torch.Tensor:
        # also accepts e.g. client_model.parameters()
        return flatten_like(tensors, self._shapes, self.params[0], who, "the server")

    def _unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for p in self.params:
            out.append(flat[offset : offset + p.numel()].view_as(p).clone())
            offset += p.numel()
        return out

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(
        self,
        client_params: Sequence[Iterable[torch.Tensor]],
        weights: Sequence[float] | None = None,
    ) -> RoundReport:
        """Aggregate one round: average the client updates, adapt the LRs, move the global model.

        Args:
            client_params: per sampled client, its parameters after local training (a list of
                tensors or ``client_model.parameters()``), in the order and shapes of ``params``.
            weights: per client, its weight in the mean (usually its sample count); default
                uniform (the released FedHyper code's unweighted mean).

        Returns:
            A :class:`RoundReport`. Clients whose update holds NaN/inf are dropped and listed in
            ``dropped``; if none is left the round is ``skipped`` and nothing changes.

        Raises:
            ConfigError / ConfigTypeError: no replies, shape or count mismatch, bad weights.
        """
        if isinstance(client_params, torch.Tensor) or not isinstance(client_params, Sequence):
            raise ConfigTypeError("client_params must be a sequence (one entry per client)")
        if len(client_params) == 0:
            raise ConfigError("client_params is empty: no client replied this round")
        if weights is None:
            w = [1.0] * len(client_params)
        else:
            if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
                raise ConfigTypeError(
                    f"weights must be a sequence (one per client), got {type(weights).__name__}"
                )
            if len(weights) != len(client_params):
                raise ConfigError(
                    f"{len(weights)} weights for {len(client_params)} clients; give one each"
                )
            w = [check_float(f"weights[{i}]", v, minimum=0.0) for i, v in enumerate(weights)]
        global_flat = self._flatten(self.params, "params")
        deltas, kept_w, dropped = [], [], []
        for i, cp in enumerate(client_params):
            delta = self._flatten(cp, f"client_params[{i}]") - global_flat
            if bool(torch.isfinite(delta).all()):
                deltas.append(delta)
                kept_w.append(w[i])
            else:
                dropped.append(i)
        self.dropped_updates += len(dropped)
        total = sum(kept_w)
        if math.isinf(total):  # huge finite weights: their ratios still hold
            top = max(kept_w)
            kept_w = [wi / top for wi in kept_w]
            total = sum(kept_w)
        if not deltas or total <= 0.0:
            return self._skip(len(client_params), tuple(dropped))
        delta = torch.zeros_like(global_flat)
        for d, wi in zip(deltas, kept_w):
            delta.add_(d, alpha=wi / total)
        return self._apply(delta, len(client_params), tuple(dropped))

    def _skip(self, n: int, dropped: tuple[int, ...]) -> RoundReport:
        report = RoundReport(
            round=self.round,
            global_lr=self.effective_global_lr,
            momentum_coef=self.momentum_coef,
            local_lr=self.local_lr,
            hypergradient=math.nan,
            update_norm=math.nan,
            num_clients=n,
            dropped=dropped,
            skipped=True,
        )
        self.round += 1
        self.skipped_rounds += 1
        return report

    def _hypergradient(self, direction: torch.Tensor, delta: torch.Tensor) -> float:
        """⟨direction, Δ_t⟩, or its cosine when ``normalize``; ``nan`` when not finite."""
        dot = float(torch.dot(direction, delta))
        if self.normalize and math.isfinite(dot):
            norm = float(direction.norm()) * float(delta.norm())
            dot = dot / norm if norm > 0.0 else 0.0
        return dot if math.isfinite(dot) else math.nan

    def _moved(self, lr: float, beta: float, h: float, scale: float) -> float:
        """Additive step ``lr + β·scale·h`` or, normalized, multiplicative ``lr·(1 + β h)``."""
        return lr * (1.0 + beta * h) if self.normalize else lr + beta * scale * h

    def _apply(self, delta: torch.Tensor, n: int, dropped: tuple[int, ...]) -> RoundReport:
        # Everything is computed out of place and committed only when the new weights and
        # buffers are finite: one huge finite client update once pushed the model to inf (every
        # later round dropped) or FedAdam's v to inf (every later step 0), for good.
        hyper = math.nan
        prev = self._prev_delta
        local_lr, global_lr, coef = self.local_lr, self.global_lr, self.momentum_coef
        prev_dir, buf = self._prev_dir, self._momentum_buf
        adam_m, adam_v = self._adam_m, self._adam_v
        # SL: the clients' LR, driven by ⟨Δ_{t−1}, Δ_t⟩ whatever the global rule.
        if self.adapt_local_lr and prev is not None:
            h = self._hypergradient(prev, delta)
            if math.isfinite(h):
                lo, hi = self.local_lr_bounds
                moved = self._moved(local_lr, self.local_hypergrad_lr, h, self.initial_local_lr)
                local_lr = min(hi, max(lo, moved))
                hyper = h
        lo, hi = self.global_lr_bounds
        if self.server_optimizer == "adam":
            if self.rule == "g" and prev_dir is not None:
                h = self._hypergradient(prev_dir, delta)
                if math.isfinite(h):
                    global_lr = min(hi, max(lo, self._moved(global_lr, self.hypergrad_lr, h, 1.0)))
                    hyper = h
            b1, b2 = self.adam_betas
            if adam_m is None or adam_v is None:
                adam_m, adam_v = torch.zeros_like(delta), torch.zeros_like(delta)
            adam_m = adam_m.mul(b1).add_(delta, alpha=1.0 - b1)
            adam_v = adam_v.mul(b2).addcmul_(delta, delta, value=1.0 - b2)
            direction = adam_m / (adam_v.sqrt() + self.adam_tau)
            update = direction * global_lr
            prev_dir = direction if self.rule == "g" else None
            moments: tuple[torch.Tensor, ...] = (adam_m, adam_v)
        elif self.rule == "gm":
            if buf is not None:
                h = self._hypergradient(buf, delta)
                if math.isfinite(h):
                    a_lo, a_hi = lo - self.initial_global_lr, hi - self.initial_global_lr
                    # a starts at 0, so it always moves additively (by β·η_0·cos if normalized)
                    scale = self.initial_global_lr if self.normalize else 1.0
                    coef = min(a_hi, max(a_lo, coef + self.hypergrad_lr * scale * h))
                    hyper = h
                buf = buf.mul(self.momentum).add_(delta)  # m_t = Δ_t + μ m_{t−1}
            else:
                buf = delta.clone()  # m_0 = Δ_0
            update = delta * self.initial_global_lr
            if coef != 0.0:  # keeps hypergrad_lr=0 bit-identical to FedAvg
                update.add_(buf, alpha=coef)
            moments = (buf,)
        else:
            if self.rule == "g" and prev is not None:
                h = self._hypergradient(prev, delta)
                if math.isfinite(h):
                    global_lr = min(hi, max(lo, self._moved(global_lr, self.hypergrad_lr, h, 1.0)))
                    hyper = h
            update = delta * global_lr
            moments = ()
        if not self._finite_after(update, moments):
            return self._overflowed(n, dropped)
        self.local_lr, self.global_lr, self.momentum_coef = local_lr, global_lr, coef
        self._prev_dir, self._momentum_buf = prev_dir, buf
        self._adam_m, self._adam_v = adam_m, adam_v
        report = RoundReport(
            round=self.round,
            global_lr=self.effective_global_lr,
            momentum_coef=self.momentum_coef,
            local_lr=self.local_lr,
            hypergradient=hyper,
            update_norm=float(delta.norm()),
            num_clients=n,
            dropped=dropped,
            skipped=False,
        )
        offset = 0
        for p in self.params:
            p.add_(update[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self._prev_delta = delta
        self.round += 1
        return report

    def _finite_after(self, update: torch.Tensor, moments: tuple[torch.Tensor, ...]) -> bool:
        """Whether the server's buffers and every parameter after ``update`` stay finite."""
        if not all(bool(torch.isfinite(m).all()) for m in moments):
            return False
        offset = 0
        for p in self.params:
            u = update[offset : offset + p.numel()].view_as(p)
            if not bool(torch.isfinite(p + u).all()):
                return False
            offset += p.numel()
        return True

    def _overflowed(self, n: int, dropped: tuple[int, ...]) -> RoundReport:
        """A round whose averaged update, finite itself, would overflow the model or the
        server's buffers: skipped (nothing changes), counted in ``overflowed_rounds``."""
        self.overflowed_rounds += 1
        if self.overflowed_rounds == 1:
            warnings.warn(
                f"FedHyperServer: round {self.round}'s averaged client update is finite but "
                "too large: applied, it would make the global model or the server's buffers "
                f"non-finite in {self.params[0].dtype}. The round is skipped (nothing changed); "
                "later such rounds are counted in overflowed_rounds without a warning. Lower "
                "global_lr or the clients' LR, or clip the client updates",
                RuntimeWarning,
                stacklevel=4,
            )
        return self._skip(n, dropped)

    # ------------------------------------------------------------------ persistence
    _BUFFERS = ("_prev_delta", "_prev_dir", "_momentum_buf", "_adam_m", "_adam_v")
    # state key -> attribute (the keys keep their first names so that old states load)
    _SCALARS: ClassVar[dict[str, str]] = {
        "round": "round",
        "global_lr": "global_lr",
        "momentum_coef": "momentum_coef",
        "local_lr": "local_lr",
        "rounds_skipped": "skipped_rounds",
        "updates_dropped": "dropped_updates",
    }

    def _config(self) -> dict[str, Any]:
        """Arguments a state_dict must have been saved with to be loaded here."""
        return {
            "rule": self.rule,
            "server_optimizer": self.server_optimizer,
            "initial_global_lr": self.initial_global_lr,
            "hyper_lr": self.hypergrad_lr,  # state keys keep their first names
            "global_lr_bounds": list(self.global_lr_bounds),
            "momentum": self.momentum,
            "adam_betas": list(self.adam_betas),
            "adam_tau": self.adam_tau,
            "initial_local_lr": self.initial_local_lr,
            "adapt_local_lr": self.adapt_local_lr,
            "local_hyper_lr": self.local_hypergrad_lr,
            "local_lr_bounds": list(self.local_lr_bounds),
            "normalize": self.normalize,
        }

    def state_dict(self) -> dict[str, Any]:
        """Round counter, LRs, momentum/Adam buffers, Δ_{t−1} and the arguments (tensors and
        plain values).

        The global parameters are not included (save the model's own ``state_dict``).
        """
        state: dict[str, Any] = {"version": _STATE_VERSION, "kind": "FedHyperServer"}
        state.update({k: getattr(self, a) for k, a in self._SCALARS.items()})
        state["overflowed_rounds"] = self.overflowed_rounds
        for k in self._BUFFERS:
            buf = getattr(self, k)
            state[k.lstrip("_")] = None if buf is None else buf.detach().clone()
        state["config"] = {
            **self._config(),
            "numel": self._numel,
            "shapes": [list(s) for s in self._shapes],
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output, checking all of it before anything changes.

        States written before the ``version`` key existed still load (their arguments are
        checked as far as they were saved).

        Raises:
            StateError: not a FedHyperServer state, missing or mistyped entries, other
                arguments (all differences are listed), or parameters of another shape.
        """
        owner = "FedHyperServer"
        version = _sc._state_version(owner, state, ("config", "round", "global_lr"), (1, 2), 1)
        _sc._state_keys(owner, state, [*self._SCALARS, *(k.lstrip("_") for k in self._BUFFERS)])
        config = state["config"]
        if not isinstance(config, Mapping):
            raise _sc._state_error(owner, f"'config' must be a dict, got {_sc._short(config)}")
        mine = self._config()
        need = [*mine, "shapes", "numel"] if version >= 2 else ["numel"]
        _sc._state_keys(owner, config, need, "config")
        _sc._state_config(owner, config, mine)
        if "shapes" in config:
            shapes = _sc._state_list(owner, "config['shapes']", config["shapes"])
            if len(shapes) != len(self._shapes):
                raise _sc._state_error(
                    owner,
                    f"the state_dict is for {len(shapes)} parameter tensors, this server has "
                    f"{len(self._shapes)}: the state comes from another model",
                )
            for i, (a, b) in enumerate(zip(shapes, self._shapes)):
                if not isinstance(a, (list, tuple)) or tuple(a) != b:
                    shape = _sc._short(tuple(a) if isinstance(a, list) else a)
                    raise _sc._state_error(
                        owner,
                        f"parameter {i} has shape {shape} "
                        f"in the state_dict but {b} on this "
                        "server: the state comes from another model",
                    )
        if config["numel"] != self._numel:
            raise _sc._state_error(
                owner,
                f"the state_dict is for {_sc._short(config['numel'])} parameter elements, this "
                f"server has {self._numel}: the state comes from another model",
            )
        buffers = {}
        for k in self._BUFFERS:
            key = k.lstrip("_")
            buf = state[key]
            if buf is not None:
                buf = _sc._state_tensor(
                    owner, key, buf, (self._numel,), "this server's flat parameters"
                )
                # A NaN/inf (or negative v) would reach the global model at the next round.
                if not bool(torch.isfinite(buf).all()):
                    raise _sc._state_error(owner, f"{key!r} holds NaN/inf values")
            buffers[k] = buf
        if (buffers["_adam_m"] is None) != (buffers["_adam_v"] is None):
            raise _sc._state_error(owner, "'adam_m' and 'adam_v' must both be tensors or both None")
        if buffers["_adam_v"] is not None and bool((buffers["_adam_v"] < 0).any()):
            raise _sc._state_error(owner, "'adam_v' (a mean of squares) holds negative values")
        round_ = _sc._state_int(owner, "round", state["round"])
        skipped = _sc._state_int(owner, "rounds_skipped", state["rounds_skipped"])
        dropped = _sc._state_int(owner, "updates_dropped", state["updates_dropped"])
        # Absent from states saved before it existed.
        overflowed = _sc._state_int(owner, "overflowed_rounds", state.get("overflowed_rounds", 0))
        global_lr = _sc._state_float(owner, "global_lr", state["global_lr"], positive=True)
        momentum_coef = _sc._state_float(owner, "momentum_coef", state["momentum_coef"])
        local_lr = _sc._state_float(owner, "local_lr", state["local_lr"], positive=True)
        lo, hi = self.global_lr_bounds
        eta0 = self.initial_global_lr
        # The rules clip to these bounds (GM's a as in _apply), so a saved state never leaves them.
        for key, value, (low, high) in (
            ("global_lr", global_lr, (lo, hi) if self.rule != "gm" else (eta0, eta0)),
            (
                "momentum_coef",
                momentum_coef,
                (lo - eta0, hi - eta0) if self.rule == "gm" else (0, 0),
            ),
            ("local_lr", local_lr, self.local_lr_bounds),
        ):
            if not low <= value <= high:
                raise _sc._state_error(
                    owner,
                    f"{key!r} is {value:g}, outside its bounds ({low:g}, {high:g}) on this server",
                )
        # Everything checked: from here on nothing can fail half-way.
        ref = self.params[0]
        for k, buf in buffers.items():
            flat = None if buf is None else buf.detach().to(ref.device, ref.dtype).reshape(-1)
            setattr(self, k, None if flat is None else flat.clone())
        self.round, self.skipped_rounds, self.dropped_updates = round_, skipped, dropped
        self.overflowed_rounds = overflowed
        self.global_lr = global_lr  # type: ignore[assignment]
        self.momentum_coef = momentum_coef  # type: ignore[assignment]
        self.local_lr = local_lr  # type: ignore[assignment]
