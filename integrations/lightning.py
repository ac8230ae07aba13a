"""AutoLRS as a Lightning callback: the same tuner as in a plain loop, fed at the right hook.

The callback builds an :class:`autolr.AutoLRS` over the ``LightningModule`` and the optimizer
that ``configure_optimizers`` returned, reports the loss of every optimizer step to it and
saves its state in Lightning checkpoints. Every decision (LRs, snapshots, restores) is the
tuner's; :attr:`AutoLRSCallback.tuner` is the plain :class:`~autolr.AutoLRS` object.

Lightning is imported here (``pip install "autolr[lightning]"``); ``import autolr`` never does.

Example:
    >>> import lightning as L
    >>> from autolr.integrations.lightning import AutoLRSCallback
    >>> cb = AutoLRSCallback(lr_bounds=(1e-4, 1e-1))
    >>> trainer = L.Trainer(max_steps=500, callbacks=[cb], logger=False,
    ...                     enable_checkpointing=False, enable_progress_bar=False)
    >>> # trainer.fit(module); cb.tuner.stages, cb.tuner.schedule

``HypergradientLR`` needs no callback: return it from ``configure_optimizers``
(``return HypergradientLR(torch.optim.AdamW(self.parameters(), lr=1e-3))``); Lightning steps,
checkpoints and restores it like any optimizer (tested in ``tests/test_lightning.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from autolr import AutoLRS
from autolr._errors import ConfigError, StateError
from autolr._validate import check_int, scalar_value

from . import _check_tuner_kwargs, _warn_unfinished, require

_pl = require("lightning.pytorch", "lightning")

__all__ = ["AutoLRSCallback"]


# Arguments the callback fills in itself.
class AutoLRSCallback(_pl.Callback):
    """Drive :class:`autolr.AutoLRS` from a ``lightning.Trainer``.

    The tuner is built in ``on_fit_start`` over the ``LightningModule`` and its optimizer; it
    sets the LR of every param group (keeping the groups' ratios), and its restores (between
    candidates, before exploitation) load the module's and the optimizer's state in place.

    * **Budget**: ``max_steps`` (default: the ``Trainer``'s ``max_steps``). A step the
      ``GradScaler`` skipped, or one whose ``training_step`` returned ``None``, counts for the
      ``Trainer`` but is reported to the tuner as skipped: under AMP give the ``Trainer`` a few
      more steps than the callback's ``max_steps`` so the tuner's final decay is trained. A
      ``Trainer`` that stops before the budget gets one ``RuntimeWarning``: at fit start when
      its limits (``max_steps``, ``max_epochs`` over the batches, gradient accumulation)
      foretell it, else when training ends (``max_time``, early stopping, skipped steps).
    * **One loss per optimizer step**: with ``accumulate_grad_batches=k`` the tuner sees the
      mean loss of the ``k`` micro-batches, once. ``training_step`` must return the loss (a
      tensor or a dict with ``"loss"``).
    * **Mixed precision**: the precision plugin's ``GradScaler`` (``"16-mixed"``) is saved and
      restored with the tuner's snapshots, and a step it skipped (inf/NaN gradients) is passed
      as ``step(loss, skipped=True)``: it neither counts nor feeds a forecast.
    * **Several optimizers** (manual optimisation): pass ``optimizer_idx``, the index in
      ``configure_optimizers``' list of the optimizer to tune; the others keep their LRs. Each
      ``training_step`` may step that optimizer at most once, through the
      ``LightningOptimizer`` that ``self.optimizers()`` returns (the raw torch optimizer raises
      :class:`~autolr.ConfigError`), and must return its loss. Without ``optimizer_idx``
      several optimizers raise :class:`~autolr.ConfigError`.
    * **LR schedulers**: AutoLRS is the schedule, so a scheduler in ``configure_optimizers``
      or ``StochasticWeightAveraging`` among the callbacks raises :class:`~autolr.ConfigError`
      at fit start, and a scheduler added during the fit at the next batch (shape the
      schedule with the tuner's ``warmup_steps``/``policy`` instead).
    * **Checkpoints**: the tuner's state (its stage snapshots included) is saved in every
      Lightning checkpoint; ``trainer.fit(module, ckpt_path=...)`` continues the schedule
      where it stopped, mid-stage included. A resumed ``Trainer`` must use the same budget and
      the callback the same arguments; a checkpoint past step 0 without this callback's
      state (saved without it, or with another ``optimizer_idx``) raises
      :class:`~autolr.StateError`. A plain ``DataLoader`` restarts its epoch on a
      mid-epoch resume (a Lightning limitation), so exact replay needs an epoch-end checkpoint
      or a stateful loader.
    * **Logging**: the LR each step used is logged as ``log_name`` (default ``"autolrs/lr"``)
      with ``pl_module.log`` (every ``log_every_n_steps``, to every attached logger).
    * **DDP**: the tuner itself averages the loss over ranks and makes one decision for all.

    Args:
        lr_bounds: ``(low, high)`` LR search box.
        max_steps: Budget of optimizer steps (default: ``Trainer(max_steps=...)``). Without
            either, only ``variant="paper"`` (no budget) is allowed.
        optimizer_idx: Which optimizer to tune when ``configure_optimizers`` returns several.
        log_name: Metric name of the logged LR; ``None`` logs nothing.
        **tuner_kwargs: Any other :class:`~autolr.AutoLRS` argument (``variant``, ``policy``,
            ``warmup_steps``, ``seed``, ``val_fn``, ``extras``...).

    Raises:
        ConfigError: ``max_steps`` is not an int >= 1. At fit start: an LR scheduler is
            configured or ``StochasticWeightAveraging`` attached, several optimizers without
            ``optimizer_idx``, ``optimizer_idx`` out of range, or no budget. During the fit: a
            scheduler was added, or the raw optimizer stepped.
        ConfigTypeError: ``tuner_kwargs`` names ``model`` or ``optimizer``.
        StateError: The fit resumes past step 0 without this callback's state.

    Attributes:
        tuner: The :class:`~autolr.AutoLRS` driving this fit (``None`` before fit start).
    """

    def __init__(
        self,
        *,
        lr_bounds: tuple[float, float] = (1e-4, 1e-1),
        max_steps: int | None = None,
        optimizer_idx: int | None = None,
        log_name: str | None = "autolrs/lr",
        **tuner_kwargs: Any,
    ) -> None:
        _check_tuner_kwargs(
            "AutoLRSCallback", tuner_kwargs, "the LightningModule and its optimizer",
            "lr_bounds, max_steps, optimizer_idx, log_name",
        )  # fmt: skip
        if optimizer_idx is not None:
            check_int("optimizer_idx", optimizer_idx, minimum=0)
        if max_steps is not None:
            check_int("max_steps", max_steps, minimum=1)
        self.lr_bounds = lr_bounds
        self.max_steps = max_steps
        self.optimizer_idx = optimizer_idx
        self.log_name = log_name
        self.tuner_kwargs = dict(tuner_kwargs)
        self.tuner: AutoLRS | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._hook: Any = None
        self._pending: Mapping[str, Any] | None = None
        # AutoLRSCallback state keys found in the checkpoint being resumed (for the error
        # that names them when none is this callback's).
        self._ckpt_keys: list[str] = []
        # A truncated run is said once: at fit start when foreseeable, else at train end.
        self._warned = False
        self._reset_window()

    @property
    def state_key(self) -> str:
        """Checkpoint key; tells callbacks tuning different optimizers apart."""
        return self._generate_state_key(optimizer_idx=self.optimizer_idx)

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Refuse a callback that schedules the LR (before anything, a checkpoint included,
        is loaded)."""
        if stage != "fit":
            return
        self._ckpt_keys = []
        swa = _pl.callbacks.StochasticWeightAveraging
        if any(isinstance(c, swa) for c in trainer.callbacks):
            # It installs an SWALR scheduler at swa_epoch_start, later than on_fit_start's
            # check, and that scheduler then fails inside torch once a restore drops its keys.
            raise ConfigError(
                "StochasticWeightAveraging sets the LR (an SWALR scheduler from swa_epoch_start "
                "on), and AutoLRSCallback sets it at every step: use one of them (to average "
                "weights under AutoLRS, use lightning's WeightAveraging callback, which leaves "
                "the LR alone)"
            )

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Check the run's configuration and build the tuner (before a checkpoint's optimizer
        state is loaded, so the groups' LR ratios are the configured ones)."""
        if trainer.lr_scheduler_configs:
            names = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs]
            raise ConfigError(
                f"configure_optimizers returned LR scheduler(s) {names}, but AutoLRSCallback "
                "sets the LR at every step and a scheduler would fight it: return only the "
                "optimizer (shape the schedule with AutoLRS's warmup_steps/policy)"
            )
        opts = list(trainer.optimizers)
        if self.optimizer_idx is None and len(opts) != 1:
            raise ConfigError(
                f"configure_optimizers returned {len(opts)} optimizers; AutoLRSCallback tunes "
                "one: pass optimizer_idx=<its index> (the others keep their LRs)"
            )
        idx = self.optimizer_idx or 0
        if idx >= len(opts):
            raise ConfigError(
                f"optimizer_idx={idx} is out of range: configure_optimizers returned "
                f"{len(opts)} optimizer(s)"
            )
        budget = self.max_steps
        if budget is None and trainer.max_steps is not None and trainer.max_steps > 0:
            budget = int(trainer.max_steps)
        if budget is None and self.tuner_kwargs.get("variant") != "paper":
            raise ConfigError(
                "AutoLRSCallback needs a budget: pass Trainer(max_steps=N) or "
                "AutoLRSCallback(max_steps=N) (or variant='paper' for a run without one); "
                f"got Trainer(max_steps={trainer.max_steps})"
            )
        kwargs = dict(self.tuner_kwargs)
        extras = dict(kwargs.pop("extras", None) or {})
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            # Restored with every snapshot, so a candidate's overflows do not leak into the next.
            extras.setdefault("grad_scaler", scaler)
        opt = opts[idx]
        # Drop the previous fit's tuner first, so it is gone (with its step hook on a reused
        # optimizer) before the new one registers its own.
        self.tuner = None
        self._warned = False
        self.tuner = AutoLRS(
            pl_module,
            opt,
            lr_bounds=self.lr_bounds,
            max_steps=budget,
            extras=extras or None,
            **kwargs,
        )
        self._optimizer = opt
        self._remove_hook()
        # optimizer.step() runs only if the GradScaler found finite gradients: the post hook
        # tells a real step from a skipped one.
        self._hook = opt.register_step_post_hook(self._on_step)
        self._reset_window()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Note which AutoLRSCallback states the checkpoint holds (for on_train_start)."""
        prefix = type(self).__qualname__
        states = checkpoint.get("callbacks") or {}
        self._ckpt_keys = [str(k) for k in states if str(k).startswith(prefix)]

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Resume the tuner from a checkpoint's state, once Lightning restored the optimizer.

        Raises:
            StateError: The Trainer resumes past step 0 but no tuner state was loaded.
        """
        tuner = self.tuner
        if tuner is None:
            return
        if self._pending is not None:
            state, self._pending = self._pending, None
            tuner.load_state_dict(state["tuner"])
            self._sum = float(state.get("loss_sum", 0.0))
            self._count = int(state.get("loss_count", 0))
        elif trainer.global_step > 0:
            # Lightning calls load_state_dict only when the checkpoint has this state_key: a
            # fresh tuner would restart its schedule at step 0 while the Trainer goes on.
            raise StateError(self._no_state_message(trainer))
        self._check_budget(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Warn once when the fit ended before the tuner's budget (not called on an error)."""
        if not self._warned:
            self._warned = _warn_unfinished(
                "AutoLRSCallback: the fit ended",
                self.tuner,
                "for the tuner (GradScaler overflow or training_step returning None)",
                "max_time, max_epochs, EarlyStopping or trainer.should_stop",
                rank_zero=trainer.is_global_zero,
            )

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Detach from the optimizer (the tuner and its records stay)."""
        self._remove_hook()

    # ------------------------------------------------------------------ per step
    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        """Refuse an LR scheduler installed after fit start (e.g. by another callback)."""
        if self.tuner is not None and trainer.lr_scheduler_configs:
            names = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs]
            raise ConfigError(
                f"LR scheduler(s) {names} were added to the Trainer during the fit (before "
                f"step {trainer.global_step}, e.g. by a callback); AutoLRSCallback sets the LR "
                "at every step and a scheduler would fight it: remove what installs it"
            )

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Mark that the tuned optimizer is about to step (its loss window closes)."""
        if _unwrap(optimizer) is self._optimizer and self.tuner is not None:
            self._attempts += 1
            self._step_lr = self.tuner.lr

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Add the micro-batch loss; after an optimizer step, report the window's mean."""
        tuner = self.tuner
        if tuner is None:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            self._sum += loss
            self._count += 1
        if self._steps and not self._attempts:
            # The optimizer stepped without Lightning's on_before_optimizer_step: the raw torch
            # optimizer, which the tuner would never hear of.
            raise ConfigError(
                "the tuned optimizer stepped without going through Lightning (manual "
                "optimisation with self.optimizers(use_pl_optimizer=False)?): AutoLRSCallback "
                "sees only steps of the LightningOptimizer that self.optimizers() returns; "
                "call .step() on that one"
            )
        if not self._attempts:
            return  # still accumulating
        if self._attempts > 1:
            raise ConfigError(
                f"the tuned optimizer stepped {self._attempts} times in one training_step; "
                "AutoLRSCallback reports one loss per optimizer step (manual optimisation: "
                "step it at most once per training_step)"
            )
        if self._count == 0 and pl_module.automatic_optimization:
            # training_step returned None: no backward, so the step trained nothing. Report
            # it as skipped (every rank still makes the same calls under DDP).
            self._reset_window()
            tuner.step(float("nan"), skipped=True)
            return
        if self._count == 0:
            raise ConfigError(
                "training_step stepped the tuned optimizer but returned no loss; "
                "AutoLRSCallback needs it: return the loss tensor or a dict with a 'loss' entry"
            )
        if pl_module.automatic_optimization:
            # Lightning divides each micro-batch loss by accumulate_grad_batches; undo it so
            # a short last window of an epoch is a mean too.
            value = self._sum * trainer.accumulate_grad_batches / self._count
        else:
            value = self._sum / self._count
        skipped = self._steps == 0
        lr = self._step_lr
        self._reset_window()
        tuner.step(value, skipped=skipped)
        if self.log_name is not None and not skipped:
            pl_module.log(self.log_name, lr, on_step=True, on_epoch=False, batch_size=1)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The tuner's state (snapshots included) and the open accumulation window."""
        if self.tuner is None:
            return dict(self._pending or {})
        return {"tuner": self.tuner.state_dict(), "loss_sum": self._sum, "loss_count": self._count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's state; the tuner loads it when training starts.

        Raises:
            StateError: If ``state_dict`` is not an AutoLRSCallback state.
        """
        if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("tuner"), Mapping):
            raise StateError(
                "not an AutoLRSCallback state_dict: expected a dict with a 'tuner' entry, got "
                + (
                    f"entries {list(state_dict)[:6]}"
                    if isinstance(state_dict, Mapping)
                    else type(state_dict).__name__
                )
            )
        self._pending = state_dict

    # ------------------------------------------------------------------ helpers
    def _no_state_message(self, trainer: Any) -> str:
        step = trainer.global_step
        if trainer.ckpt_path is None:
            return (
                f"this Trainer has already taken {step} steps (a second fit() continues them), "
                "but AutoLRSCallback has no tuner state to continue from: fit a new Trainer, "
                "or resume with fit(..., ckpt_path=...) from a checkpoint saved with the callback"
            )
        if self._ckpt_keys:
            cause = (
                f"it holds {self._ckpt_keys}: build the callback with the optimizer_idx of "
                "the run that saved it"
            )
        else:
            cause = "it was saved without AutoLRSCallback"
        return (
            f"fit(ckpt_path={str(trainer.ckpt_path)!r}) resumes at step {step}, but the "
            f"checkpoint has no AutoLRSCallback state for state_key {self.state_key!r} "
            f"({cause}); a fresh tuner would restart its schedule at step 0. Resume from a "
            "checkpoint saved with this callback, or start the fit without ckpt_path"
        )

    def _check_budget(self, trainer: Any) -> None:
        """Warn once if the Trainer cannot reach the tuner's budget."""
        tuner = self.tuner
        if tuner is None or tuner.max_steps is None:
            return
        # An upper bound on the tuner's steps: Lightning's optimizer steps (accumulation
        # included; under manual optimisation global_step counts every optimizer).
        most = trainer.estimated_stepping_batches
        if not (0 <= most < tuner.max_steps):
            return  # enough, unbounded or unknown (-1: iterable data and no max_steps)
        self._warned = True
        limits = f"max_steps={trainer.max_steps}"
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            limits += (
                f", max_epochs={trainer.max_epochs} of {trainer.num_training_batches} batches"
                f" with accumulate_grad_batches={trainer.accumulate_grad_batches}"
            )
        if trainer.is_global_zero:
            warnings.warn(
                f"AutoLRSCallback: the Trainer stops after at most {int(most)} optimizer steps "
                f"({limits}), before the tuner's max_steps="
                f"{tuner.max_steps}: the fit will end inside its schedule. Give the Trainer "
                f"{tuner.max_steps} steps or pass AutoLRSCallback(max_steps={int(most)}) (or "
                "ignore this if a resumed fit finishes the budget)",
                RuntimeWarning,
                stacklevel=2,
            )

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._steps += 1

    def _reset_window(self) -> None:
        self._sum = 0.0
        self._count = 0
        self._attempts = 0
        self._steps = 0
        self._step_lr = float("nan")

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer under a ``LightningOptimizer``."""
    return getattr(optimizer, "_optimizer", optimizer)


def _loss_of(outputs: Any) -> float | None:
    """The loss in what ``training_step`` returned (``None`` when it returned none)."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor):
        return scalar_value(outputs, "training_step's loss must be a scalar")
    if isinstance(outputs, (int, float)) and not isinstance(outputs, bool):
        return float(outputs)
    return None
