"""The STN / Delta-STN training alternation: weight steps and hyperparameter steps."""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import _statecheck as _sc
from .._deprecate import RenamedAttribute, take_renamed
from .._errors import ConfigError, ConfigTypeError, StateError
from .._snapshot import tensors_finite
from .._validate import check_callable, check_choice, check_float, check_instance, check_int
from ._layers import (
    StnConv2d,
    StnDropout,
    StnLinear,
    StnModule,
    check_rate,
    general_parameters,
    response_parameters,
)
from ._regularizers import BatchAugment
from ._schedule import Schedule
from ._space import HyperSpace

__all__ = ["STNTuner"]

Batch = Sequence[Any]
_STATE_VERSION = 2  # 1: only variant and names checked on load; 2: every argument
_STN_STATE = (
    "variant", "names", "space", "hyper_optimizer", "global_step", "hyper_steps",
    "skipped_train_steps", "skipped_hyper_steps", "cycle_pos", "last_train_loss",
    "last_val_loss", "hist_steps", "hist_values", "hist_scales",
)  # fmt: skip
_HYPER_LR = 3e-3  # default λ and σ learning rates of the default hyper optimizer
_END = object()  # end of an iterator (a batch may be any object, None included)
# The live tuners of each space: a tuner of another variant on the same space would switch
# its parameterisation (space.centred) under them. Weak, so a discarded tuner frees its space.
_OWNERS: weakref.WeakKeyDictionary[HyperSpace, weakref.WeakSet[STNTuner]] = (
    weakref.WeakKeyDictionary()
)


class STNTuner:
    """Train a converted model and its hyperparameters jointly (Self-Tuning Networks).

    After ``hyper_delay_steps`` weight steps, every ``train_steps`` weight steps are followed by
    ``val_steps`` hyperparameter steps:

    * weight step (train mode, training batch): sample ``λ' = λ + σε`` per example, apply the
      augmentation and dropout at ``λ'``, minimise the training loss (+ tuned L2) over the
      model's weights only;
    * hyper step (eval mode, validation batch, no augmentation): minimise
      ``L_val(ŵ(λ')) - τ·H[σ]`` over λ and σ only, the gradient reaching λ through the
      best-response gates.

    ``variant="delta"`` (Delta-STN) centres the gates' input (``λ' - λ``), trains the general
    weights at the unperturbed λ and the response weights at ``λ'``, and with
    ``linearize=True`` replaces the perturbed network by its first-order expansion in the
    hyperparameters (``torch.func.jvp``).

    Args:
        model: A model converted with :func:`autolr.stn.convert` using ``space``.
        space: The tuned hyperparameters.
        loss_fn: ``loss_fn(output, target) -> scalar tensor``: the batch's mean loss (e.g.
            ``nn.functional.cross_entropy``); a per-example loss (``reduction="none"``) raises
            :class:`ConfigError` at the first step.
        optimizer: Optimizer over the model's weights (all of them, response weights included;
            never the space's parameters).
        hyper_optimizer: Optimizer over ``space.unconstrained`` and ``space.rho``; default Adam
            with ``hyper_lr`` and ``scale_lr`` (which must then be left at their defaults).
        hyper_lr: λ learning rate of the default hyper optimizer.
        scale_lr: σ learning rate of the default hyper optimizer.
        entropy_weight: τ, weight of the perturbation entropy bonus.
        hyper_delay_steps: Weight steps before the first hyper step (formerly
            ``warmup_steps``, a deprecated alias for one release: "warm-up" means an LR ramp
            in AutoLRS and HypergradientLR).
        train_steps: T_train, weight steps per cycle.
        val_steps: T_val, hyper steps per cycle.
        variant: ``"stn"`` or ``"delta"``.
        linearize: Delta-STN only: linearise in the hyperparameters.
        augment: Batch augmentation applied to training inputs at the sampled values.
        weight_decay: Name of a hyperparameter used as L2 coefficient (see
            :func:`autolr.stn.l2_penalty`), with a lower bound ``>= 0``; None for no tuned L2.

    Raises:
        ConfigError: Bad arguments; a dropout or L2 hyperparameter whose bounds allow rates
            outside ``[0, 1]`` or a negative L2; ``hyper_lr``/``scale_lr`` together with
            ``hyper_optimizer``; a space already tuned by a live tuner of the other
            ``variant``.

    Warns:
        UserWarning: Once, naming the hyperparameters that no StnDropout, ``weight_decay`` or
            ``augment`` reads (e.g. a forgotten ``convert(..., dropout=)``).

    Attributes:
        global_step: Weight steps taken (skipped ones included); ``hyper_steps``: hyper steps.
        skipped_steps: Weight steps skipped for a non-finite loss or gradient (formerly
            ``skipped_train_steps``, a deprecated alias).
        skipped_hyper_steps: Hyper steps skipped for a non-finite loss or hyper-gradient.

    Example:
        >>> from autolr.stn import HyperSpace, convert
        >>> space = HyperSpace().add("drop", 0.1, low=0.0, high=0.9)
        >>> net = convert(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(),
        ...                             nn.Linear(8, 1)), space, dropout={"2": "drop"})
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.05)
        >>> tuner = STNTuner(net, space, nn.functional.mse_loss, opt, train_steps=1)
        >>> data = [(torch.randn(8, 3), torch.randn(8, 1))]
        >>> for _ in range(4):
        ...     _ = tuner.step(data[0], data)
        >>> tuner.hyper_steps, len(tuner.schedule()) > 1
        (4, True)
    """

    warmup_steps = RenamedAttribute("hyper_delay_steps")
    skipped_train_steps = RenamedAttribute("skipped_steps")

    def __init__(
        self,
        model: nn.Module,
        space: HyperSpace,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        *,
        hyper_optimizer: torch.optim.Optimizer | None = None,
        hyper_lr: float = _HYPER_LR,
        scale_lr: float = _HYPER_LR,
        entropy_weight: float = 1e-3,
        hyper_delay_steps: int = 0,
        train_steps: int = 2,
        val_steps: int = 1,
        variant: str = "stn",
        linearize: bool = False,
        augment: BatchAugment | None = None,
        weight_decay: str | None = None,
        **renamed: Any,
    ) -> None:
        old = take_renamed(
            "STNTuner",
            renamed,
            {"warmup_steps": "hyper_delay_steps"},
            {"hyper_delay_steps": hyper_delay_steps},
            {"hyper_delay_steps": 0},
        )
        hyper_delay_steps = old.get("hyper_delay_steps", hyper_delay_steps)
        check_instance("model", model, nn.Module)
        check_instance("space", space, HyperSpace)
        check_instance("optimizer", optimizer, torch.optim.Optimizer)
        if not callable(loss_fn):
            hint = " (pass the function itself, not its name)" if isinstance(loss_fn, str) else ""
            raise ConfigTypeError(
                "STNTuner: loss_fn must be a callable loss_fn(output, target) -> scalar tensor, "
                f"e.g. torch.nn.functional.cross_entropy; got {type(loss_fn).__name__} "
                f"{_sc._short(loss_fn)}{hint}"
            )
        layers = [m for m in model.modules() if isinstance(m, (StnLinear, StnConv2d))]
        if not layers:
            raise ConfigError(
                "STNTuner: the model has no best-response layer; convert it first with "
                "autolr.stn.convert(model, space)"
            )
        for m in model.modules():
            if isinstance(m, StnModule) and m._stn_space is not space:
                raise ConfigError("STNTuner: the model was converted with a different HyperSpace")
        model_dev = next(model.parameters()).device
        if space.unconstrained.device != model_dev:
            raise ConfigError(
                f"STNTuner: the space is on {space.unconstrained.device} but the model on "
                f"{model_dev}; call space.to({str(model_dev)!r}) before building the tuner"
            )
        check_choice("variant", variant, ("stn", "delta"))
        if linearize and variant != "delta":
            raise ConfigError("STNTuner: linearize=True needs variant='delta'")
        check_int(old.name("hyper_delay_steps"), hyper_delay_steps, minimum=0)
        check_int("train_steps", train_steps, minimum=1)
        check_int("val_steps", val_steps, minimum=1)
        for key, v in (
            ("hyper_lr", hyper_lr),
            ("scale_lr", scale_lr),
            ("entropy_weight", entropy_weight),
        ):
            check_float(key, v, minimum=0)
        hyper_ids = {id(space.unconstrained), id(space.rho)}
        if any(id(p) in hyper_ids for g in optimizer.param_groups for p in g["params"]):
            raise ConfigError("STNTuner: the weight optimizer must not hold the space's parameters")
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        # Frozen parameters (requires_grad=False) are never updated, so need no optimizer.
        if any(id(p) not in held for p in response_parameters(model) if p.requires_grad):
            raise ConfigError(
                "STNTuner: the optimizer does not hold the best-response parameters; build it "
                "from model.parameters() after autolr.stn.convert()"
            )
        if weight_decay is not None:
            low = space._spec(weight_decay).low
            if low is None or low < 0:
                raise ConfigError(
                    f"STNTuner: the weight_decay hyperparameter {weight_decay!r} needs a lower "
                    f"bound >= 0 (a negative L2 coefficient pushes weights up), got low={low}; "
                    f"add it as e.g. space.add({weight_decay!r}, 1e-4, low=0.0)"
                )
        for m in model.modules():
            if isinstance(m, StnDropout):
                check_rate(space, m.name, "STNTuner")
        if augment is not None:
            check_callable("augment", augment)
            if isinstance(augment, BatchAugment):
                augment.check(space)
        self.model = model
        self.space = space
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        if hyper_optimizer is None:
            hyper_optimizer = torch.optim.Adam(
                [{"params": [space.unconstrained], "lr": hyper_lr},
                 {"params": [space.rho], "lr": scale_lr}]
            )  # fmt: skip
        else:
            check_instance("hyper_optimizer", hyper_optimizer, torch.optim.Optimizer)
            if hyper_lr != _HYPER_LR or scale_lr != _HYPER_LR:
                raise ConfigError(
                    "STNTuner: hyper_lr and scale_lr configure the default hyper optimizer only "
                    "and would be ignored with hyper_optimizer=; set the learning rates in "
                    "your hyper optimizer's param groups"
                )
            held_hyper = (p for g in hyper_optimizer.param_groups for p in g["params"])
            if any(id(p) not in hyper_ids for p in held_hyper):
                raise ConfigError(
                    "STNTuner: hyper_optimizer may only hold space.unconstrained / space.rho"
                )
        self.hyper_optimizer = hyper_optimizer
        self.entropy_weight = float(entropy_weight)
        self.hyper_delay_steps = hyper_delay_steps
        self.train_steps = train_steps
        self.val_steps = val_steps
        self.variant = variant
        self.linearize = bool(linearize)
        self.augment = augment
        self.weight_decay = weight_decay
        others = [t.variant for t in _OWNERS.get(space, ()) if t.variant != variant]
        if others:
            raise ConfigError(
                f"STNTuner: the space is already tuned by a variant={others[0]!r} STNTuner; a "
                f"variant={variant!r} tuner would switch its parameterisation (space.centred) "
                "under it. Use a new HyperSpace and model, or delete the first tuner"
            )
        _OWNERS.setdefault(space, weakref.WeakSet()).add(self)
        space.centred = variant == "delta"
        # Frozen parameters get no gradient, and backward(inputs=...) refuses them.
        self._general = [p for p in general_parameters(model) if p.requires_grad]
        self._response = [p for p in response_parameters(model) if p.requires_grad]
        # Tuned L2 acts on weight matrices / filters, never on biases or the gate maps V.
        decayed = {
            id(p)
            for n, p in model.named_parameters()
            if p.dim() >= 2 and "hyper_bottleneck" not in n
        }
        self._decayed = [p for p in model.parameters() if id(p) in decayed]
        self._decayed_general = [p for p in self._general if id(p) in decayed]
        self._decayed_response = [p for p in self._response if id(p) in decayed]
        # counters
        self.global_step = 0  # weight steps taken (skipped ones included)
        self.hyper_steps = 0
        self.skipped_steps = 0
        self.skipped_hyper_steps = 0
        self._cycle_pos = 0
        self.last_train_loss = math.nan
        self.last_val_loss = math.nan
        self._hist_steps: list[int] = []
        self._hist_values: list[list[float]] = []
        self._hist_scales: list[list[float]] = []
        self._val_src: Iterable[Any] | None = None
        self._val_it: Iterator[Any] | None = None
        self._val_pos = 0  # batches of the current validation pass used (saved for resuming)
        self._val_skip = 0  # after load_state_dict: batches to skip on the first pass
        self._record()
        self._warn_unused(space, model, augment, weight_decay)

    @staticmethod
    def _warn_unused(
        space: HyperSpace, model: nn.Module, augment: Any, weight_decay: str | None
    ) -> None:
        """One warning naming the hyperparameters no regulariser reads (e.g. a forgotten
        ``convert(..., dropout=)``): they would be tuned, and scheduled, to no effect."""
        read = {weight_decay, *(getattr(augment, "names", None) or ())}
        # A custom hyperparameter-aware module or augmentation may read any name: no warning.
        unknown = augment is not None and getattr(augment, "names", None) is None
        for m in model.modules():
            if isinstance(m, StnDropout):
                read.add(m.name)
            elif isinstance(m, StnModule) and not isinstance(m, (StnLinear, StnConv2d)):
                unknown = True
        unused = [n for n in space.names if n not in read]
        if unused and not unknown:
            warnings.warn(
                f"STNTuner: hyperparameter(s) {unused} are read by no StnDropout, weight_decay "
                "or augment, so they regularise nothing (only the gates see them); map them with "
                "convert(..., dropout={module: name}), weight_decay= or augment=, or remove "
                "them from the space",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.space.unconstrained.device

    @staticmethod
    def _check_grad(method: str) -> None:
        # Inside no_grad the losses have no graph: the steps would fail later with a raw
        # torch error or one that wrongly blames loss_fn.
        if torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
            raise StateError(
                f"STNTuner.{method}: autograd is disabled (called inside torch.no_grad() or "
                "torch.inference_mode()); the weight and hyper steps need gradients, so call "
                "it outside that block"
            )

    def _to(self, batch: Batch) -> tuple[Any, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ConfigTypeError("STNTuner: a batch must be an (inputs, targets) pair")
        x, y = batch
        dev = next(self.model.parameters()).device
        x = x.to(dev) if torch.is_tensor(x) else x
        y = y.to(dev) if torch.is_tensor(y) else y
        return x, y

    @staticmethod
    def _batch_size(x: Any) -> int:
        return int(x.shape[0]) if torch.is_tensor(x) and x.dim() > 0 else 1

    def _forward(self, x: Any, h_net: torch.Tensor, h_param: torch.Tensor, *, linear: bool) -> Any:
        """Model output under the given hyperparameters (first-order in ``h_net`` if linear)."""
        if not linear:
            with self.space.context(h_net=h_net, h_param=h_param):
                return self.model(x)

        # First-order expansion around h = 0 with forward-mode AD (dual numbers): one forward
        # pass carries the JVP along h_net; both parts stay differentiable for the backward.
        import torch.autograd.forward_ad as fwAD

        with fwAD.dual_level():
            h = fwAD.make_dual(torch.zeros_like(h_net), h_net)
            with self.space.context(h_net=h, h_param=h_param):
                dual = self.model(x)
            out, tangent = fwAD.unpack_dual(dual)
        if tangent is None:  # the output does not depend on the hyperparameters
            return out
        return out + tangent

    def _record(self) -> None:
        self._hist_steps.append(self.global_step)
        self._hist_values.append(list(self.space.values().values()))
        self._hist_scales.append(list(self.space.scales().values()))

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Batch) -> float:
        """One weight step on a training batch; returns the (perturbed) training loss.

        A non-finite loss or gradient skips the update (counted in ``skipped_steps``).

        Raises:
            StateError: Called with autograd disabled (``torch.no_grad()``).
        """
        self._check_grad("train_step")
        x, y = self._to(batch)
        b = self._batch_size(x)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            u = self.space.sample(b)
        ok = True
        if self.variant == "stn":
            loss, wd = self._weight_loss(x, y, u, self.space.net_input(u))
            loss_value = float(loss.detach())
            ok = math.isfinite(loss_value)
            if ok:
                loss.backward()
                self._decay(self._decayed, wd)
        else:
            lam = self.space.unconstrained.detach()[None]
            # (a) general weights at the unperturbed λ: the response path is exactly off.
            loss_a, wd_a = self._weight_loss(x, y, lam, torch.zeros_like(lam), zero_net=True)
            # (b) response weights at λ' (centred input), optionally linearised.
            loss_b, wd_b = self._weight_loss(x, y, u, u - lam, linear=self.linearize)
            loss_value = float(loss_a.detach())
            ok = math.isfinite(loss_value) and math.isfinite(float(loss_b.detach()))
            if ok:
                if self._general:  # all of them frozen: nothing to train at λ
                    loss_a.backward(inputs=self._general)
                    self._decay(self._decayed_general, wd_a)
                if self._response:
                    loss_b.backward(inputs=self._response)
                    self._decay(self._decayed_response, wd_b)
        if ok:
            ok = tensors_finite([p.grad for g in self.optimizer.param_groups for p in g["params"]])
        if ok:
            self.optimizer.step()
        else:
            self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.last_train_loss = loss_value
        return loss_value

    def _weight_loss(
        self, x: Any, y: Any, u: torch.Tensor, h_net: torch.Tensor, *, zero_net: bool = False,
        linear: bool = False,
    ) -> tuple[torch.Tensor, float]:  # fmt: skip
        """Training loss under the sampled hyperparameters, and the batch's L2 coefficient."""
        h_param = self.space.constrained(u)
        wd = 0.0
        if self.weight_decay is not None:
            wd = float(h_param[:, self.space.index(self.weight_decay)].mean())
        with self.space.context(h_net=h_net, h_param=h_param, zero_net=zero_net):
            xa = self._augment(x) if self.augment is not None else x
            if not linear:
                out = self.model(xa)
        if linear:
            out = self._forward(xa, h_net, h_param, linear=True)
        return self._loss(out, y, grad=True), wd

    def _augment(self, x: Any) -> Any:
        xa = self.augment(x)  # type: ignore[misc]
        if torch.is_tensor(x) and not torch.is_tensor(xa):
            raise ConfigError(
                f"STNTuner: augment returned {_sc._short(xa)} ({type(xa).__name__}); it must "
                "return the augmented input batch, a tensor like its input of shape "
                f"{tuple(x.shape)}"
            )
        return xa

    def _loss(self, out: Any, y: Any, *, grad: bool) -> torch.Tensor:
        """``loss_fn(out, y)``, checked: a one-element tensor (with a graph when ``grad``)."""
        loss = self.loss_fn(out, y)
        name = getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)
        if not torch.is_tensor(loss) or loss.numel() != 1:
            got = (
                f"a tensor of shape {tuple(loss.shape)}"
                if torch.is_tensor(loss)
                else f"{_sc._short(loss)} ({type(loss).__name__})"
            )
            raise ConfigError(
                f"STNTuner: loss_fn must return a scalar tensor (the batch's mean loss), but "
                f"{name}(output, target) returned {got}; use reduction='mean' (the default of "
                "torch's losses) or average a per-example loss with .mean()"
            )
        if grad and not loss.requires_grad:
            raise ConfigError(
                f"STNTuner: loss_fn returned a tensor without a gradient path: {name}(output, "
                "target) must be computed from the output with torch operations (no .item(), "
                ".detach() or torch.no_grad())"
            )
        return loss

    @staticmethod
    def _decay(params: list[nn.Parameter], wd: float) -> None:
        """Tuned L2: add ``wd · w`` to the gradients, i.e. the gradient of l2_penalty().

        Same result as adding :func:`autolr.stn.l2_penalty` to the loss (the hyper step never
        sees the penalty), without a pass over the weights through autograd.
        """
        if wd == 0.0 or not math.isfinite(wd):
            return
        ps = [p for p in params if p.grad is not None]
        if ps:
            torch._foreach_add_([p.grad for p in ps], ps, alpha=wd)

    def hyper_step(self, batch: Batch) -> float:
        """One hyperparameter step on a validation batch; returns the validation loss at λ'.

        Only ``space.unconstrained`` and ``space.rho`` change. A non-finite loss or
        hyper-gradient skips the step (counted in ``skipped_hyper_steps``).

        Raises:
            StateError: Called with autograd disabled (``torch.no_grad()``).
        """
        self._check_grad("hyper_step")
        x, y = self._to(batch)
        b = self._batch_size(x)
        was_training = self.model.training
        self.model.eval()
        try:
            u = self.space.sample(b)
            h_net = self.space.net_input(u)
            h_param = self.space.constrained(u.detach())
            out = self._forward(x, h_net, h_param, linear=self.linearize)
            val = self._loss(out, y, grad=False)
            obj = val - self.entropy_weight * self.space.entropy()
            params = [self.space.unconstrained, self.space.rho]
            grads = torch.autograd.grad(obj, params, allow_unused=True)
        finally:
            self.model.train(was_training)
        value = float(val.detach())
        finite = math.isfinite(value) and tensors_finite(list(grads))
        self.hyper_steps += 1
        self.last_val_loss = value
        if not finite:
            self.skipped_hyper_steps += 1
            return value
        self.hyper_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.hyper_optimizer.step()
        self.hyper_optimizer.zero_grad(set_to_none=True)
        return value

    def step(self, batch: Batch, val_data: Iterable[Batch]) -> float:
        """One weight step, then ``val_steps`` hyper steps when a cycle completes.

        Args:
            batch: ``(inputs, targets)`` training batch.
            val_data: Validation batches: a re-iterable (DataLoader, list) is restarted when it
                runs out; a one-shot iterator raises once exhausted.

        Returns:
            The training loss of the weight step.

        Raises:
            ConfigError: The validation data yields no batch.
            StateError: Called with autograd disabled (``torch.no_grad()``).
        """
        self._check_grad("step")
        loss = self.train_step(batch)
        if self.global_step <= self.hyper_delay_steps:
            return loss
        self._cycle_pos += 1
        if self._cycle_pos >= self.train_steps:
            self._cycle_pos = 0
            for _ in range(self.val_steps):
                self.hyper_step(self._next_val(val_data))
            self._record()
        return loss

    def _next_val(self, val_data: Iterable[Batch]) -> Batch:
        if val_data is not self._val_src or self._val_it is None:
            self._val_src, self._val_pos = val_data, 0
            skip, self._val_skip = self._val_skip, 0
            if not skip:
                self._val_it = iter(val_data)
            else:
                # Resumed mid-pass: skip the batches the checkpointed run had used, so it
                # continues identically. That run had its iterator already, so neither creating
                # this one nor skipping may draw from the RNG (a DataLoader's iter() does). A
                # one-shot iterator is read from where the caller left it.
                with torch.random.fork_rng(devices=[]):
                    self._val_it = iter(val_data)
                    if self._val_it is not val_data:
                        while self._val_pos < skip and next(self._val_it, _END) is not _END:
                            self._val_pos += 1
        batch = next(self._val_it, _END)
        if batch is _END:
            if iter(val_data) is val_data:
                raise ConfigError(
                    "STNTuner: the validation iterator is empty or exhausted; pass a re-iterable "
                    "(a DataLoader or a list of batches)"
                )
            self._val_it = iter(val_data)
            self._val_pos = 0
            batch = next(self._val_it, _END)
            if batch is _END:
                raise ConfigError("STNTuner: the validation data yields no batch")
        self._val_pos += 1
        return batch

    @torch.no_grad()
    def evaluate(self, data: Iterable[Batch]) -> float:
        """Mean loss over ``data`` in eval mode at the unperturbed λ (batch-size weighted).

        Empty batches (size 0) are skipped: they weigh nothing, and their mean loss is NaN.
        """
        was = self.model.training
        self.model.eval()
        total, n, batches = 0.0, 0, 0
        try:
            for batch in data:
                x, y = self._to(batch)
                b = self._batch_size(x)
                batches += 1
                if b == 0:
                    continue
                with self.space.context(**self._eval_views()):
                    total += float(self._loss(self.model(x), y, grad=False)) * b
                n += b
        finally:
            self.model.train(was)
        if n == 0:
            what = "only empty batches" if batches else "no batch"
            raise ConfigError(f"STNTuner.evaluate: the data yields {what}")
        return total / n

    def _eval_views(self) -> dict[str, Any]:
        ctx = self.space.default_context()
        return {"h_net": ctx.h_net, "h_param": ctx.h_param, "zero_net": ctx.zero_net}

    # ------------------------------------------------------------------ schedule
    def schedule(self) -> Schedule:
        """The recorded hyperparameter values: one record at start and after each cycle."""
        disc = [n for n in self.space.names if self.space.is_discrete(n)]
        return Schedule(
            self.space.names, list(self._hist_steps), [list(r) for r in self._hist_values], disc
        )

    def scale_history(self) -> Schedule:
        """The recorded perturbation scales σ (same steps as :meth:`schedule`)."""
        return Schedule(
            self.space.names, list(self._hist_steps), [list(r) for r in self._hist_scales]
        )

    # ------------------------------------------------------------------ state
    def _config(self) -> dict[str, Any]:
        """Arguments a state_dict must have been saved with to be loaded here."""
        return {
            "variant": self.variant,
            "names": self.space.names,
            "linearize": self.linearize,
            "warmup_steps": self.hyper_delay_steps,  # state keys keep their first names
            "train_steps": self.train_steps,
            "val_steps": self.val_steps,
            "entropy_weight": self.entropy_weight,
            "weight_decay": self.weight_decay,
            "hyper_optimizer": type(self.hyper_optimizer).__name__,
        }

    def state_dict(self) -> dict[str, Any]:
        """λ, σ, the hyper optimizer, counters, the schedule and the arguments (tensors and
        plain values).

        Save it next to the model's and the weight optimizer's ``state_dict`` (and your RNG
        state) in your checkpoint. It holds the position in the current pass over a
        re-iterable validation set (``val_pos``), so a resumed run uses the same batches.
        """
        return {
            "version": _STATE_VERSION,
            "kind": "STNTuner",
            "config": self._config(),
            "variant": self.variant,
            "names": self.space.names,
            "space": self.space.state_dict(),
            "hyper_optimizer": self.hyper_optimizer.state_dict(),
            "global_step": self.global_step,
            "hyper_steps": self.hyper_steps,
            "skipped_train_steps": self.skipped_steps,
            "skipped_hyper_steps": self.skipped_hyper_steps,
            "cycle_pos": self._cycle_pos,
            "last_train_loss": self.last_train_loss,
            "last_val_loss": self.last_val_loss,
            "hist_steps": list(self._hist_steps),
            "hist_values": [list(r) for r in self._hist_values],
            "hist_scales": [list(r) for r in self._hist_scales],
            # not yet used since load_state_dict: the position loaded is still pending
            "val_pos": self._val_skip if self._val_it is None else self._val_pos,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`, checking all of it before anything changes.

        Raises:
            StateError: Not an STNTuner state, missing or mistyped entries, other arguments
                (variant, hyperparameters and their bounds, cycle lengths, ...; all
                differences are listed), or a hyper optimizer state of another type or shape.
        """
        owner = "STNTuner"
        version = _sc._state_version(owner, state, ("space", "hyper_optimizer", "names"), (1, 2))
        _sc._state_keys(owner, state, [*_STN_STATE, *(["config"] * (version >= 2))])
        mine = self._config()
        # version 1 saved only the variant and the names
        saved = state["config"] if version >= 2 else {"variant": state["variant"]}
        if not isinstance(saved, Mapping):
            raise _sc._state_error(owner, f"'config' must be a dict, got {_sc._short(saved)}")
        if version >= 2:
            _sc._state_keys(owner, saved, list(mine), "config")
        _sc._state_config(owner, {**saved, "names": state["names"]}, mine)
        self.space._check_state(owner, "space", state["space"])
        _sc._state_optimizer(
            owner, "hyper_optimizer", self.hyper_optimizer, state["hyper_optimizer"]
        )
        counters = {
            k: _sc._state_int(owner, k, state[k])
            for k in ("global_step", "hyper_steps", "skipped_train_steps", "skipped_hyper_steps")
        }
        cycle_pos = _sc._state_int(owner, "cycle_pos", state["cycle_pos"], high=self.train_steps)
        # Absent from states saved before it was: those resumed at the first validation batch.
        val_pos = _sc._state_int(owner, "val_pos", state["val_pos"]) if "val_pos" in state else 0
        losses = {
            k: _sc._state_float(owner, k, state[k], finite=False)
            for k in ("last_train_loss", "last_val_loss")
        }
        steps = [
            _sc._state_int(owner, "hist_steps", v)
            for v in _sc._state_list(owner, "hist_steps", state["hist_steps"])
        ]
        n = len(self.space)
        rows = {
            k: [
                # finite: the schedule is built from them (a Schedule holds finite numbers)
                [_sc._state_float(owner, k, v) for v in _sc._state_list(
                    owner, f"{k}[{i}]", r, n)]
                for i, r in enumerate(_sc._state_list(owner, k, state[k], len(steps)))
            ]
            for k in ("hist_values", "hist_scales")
        }  # fmt: skip
        # Everything checked: from here on nothing can fail half-way.
        self.space.load_state_dict(state["space"])
        self.space.centred = self.variant == "delta"
        self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.global_step = counters["global_step"]
        self.hyper_steps = counters["hyper_steps"]
        self.skipped_steps = counters["skipped_train_steps"]
        self.skipped_hyper_steps = counters["skipped_hyper_steps"]
        self._cycle_pos = cycle_pos
        self.last_train_loss = losses["last_train_loss"]  # type: ignore[assignment]
        self.last_val_loss = losses["last_val_loss"]  # type: ignore[assignment]
        self._hist_steps = steps
        self._hist_values = rows["hist_values"]  # type: ignore[assignment]
        self._hist_scales = rows["hist_scales"]  # type: ignore[assignment]
        # The next validation batch is the one after val_pos in a new pass of val_data.
        self._val_src, self._val_it, self._val_pos, self._val_skip = None, None, 0, val_pos
