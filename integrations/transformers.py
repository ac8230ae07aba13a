"""AutoLRS inside a Hugging Face ``Trainer``: the same tuner as in a plain loop, fed per step.

:class:`AutoLRSTrainerCallback` attaches itself to a ``transformers.Trainer``, builds an
:class:`autolr.AutoLRS` over the Trainer's model and optimizer when training begins, reports
the loss of every optimizer step to it and saves its state in every Trainer checkpoint. Every
decision (LRs, snapshots, restores) is the tuner's.

transformers is imported here (``pip install "autolr[transformers]"``); ``import autolr``
never does.

Example:
    >>> from transformers import Trainer, TrainingArguments
    >>> from autolr.integrations.transformers import AutoLRSTrainerCallback
    >>> args = TrainingArguments("out", max_steps=500, lr_scheduler_type="constant")
    >>> # trainer = Trainer(model=model, args=args, train_dataset=ds)
    >>> # cb = AutoLRSTrainerCallback(trainer, lr_bounds=(1e-5, 1e-2))
    >>> # trainer.train(); cb.tuner.stages
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from autolr import AutoLRS
from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._validate import check_int

from . import _check_tuner_kwargs, _warn_unfinished, require

_tf = require("transformers", "transformers")
_trainer_utils = require("transformers.trainer_utils", "transformers")

__all__ = ["STATE_FILE", "AutoLRSTrainerCallback"]

#: Name of the tuner's state file inside each ``checkpoint-N`` folder.
STATE_FILE = "autolrs_callback.pt"


class _HoldLR(torch.optim.lr_scheduler.LRScheduler):
    """Pass-through scheduler: keeps whatever LR the tuner wrote (the Trainer still steps,
    saves and logs it, so ``learning_rate`` in the logs is the LR each step used)."""

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:  # type: ignore[override]
        # The Trainer logs this before the step's scheduler.step(); the live value is the
        # LR the optimizer has just used (the tuner writes the next one in on_step_end).
        return self.get_lr()


class AutoLRSTrainerCallback(_tf.TrainerCallback):
    """Drive :class:`autolr.AutoLRS` from a ``transformers.Trainer``.

    Construct it with the Trainer; it adds itself to the Trainer's callbacks.

    * **Scheduler**: AutoLRS is the schedule. The Trainer must be built with
      ``lr_scheduler_type="constant"`` and no warm-up (else :class:`~autolr.ConfigError`);
      the callback then replaces that scheduler by a pass-through one, so nothing resets the
      LR after a step and the logged ``learning_rate`` is the LR each step used. A scheduler
      passed in ``optimizers=(opt, sched)`` raises :class:`~autolr.ConfigError` too (one the
      Trainer made itself, by ``create_optimizer_and_scheduler``, is replaced by ``train()``).
    * **LR**: set on the optimizer the Trainer steps (every param group, keeping the ratios
      of the LRs it was built with).
    * **Loss**: callbacks get no loss in transformers, so the callback wraps the Trainer's
      ``training_step`` and sums what it returns over the gradient-accumulation window (the
      Trainer already divides each micro-batch's loss, so the sum is the window's loss).
    * **Budget**: ``max_steps`` (default: the Trainer's number of optimizer steps). A step
      the mixed-precision scaler skipped is reported as skipped. A Trainer that stops before
      the budget gets one ``RuntimeWarning``: when training begins if its ``max_steps`` is
      smaller, else when training ends (early stopping, skipped steps).
    * **Checkpoints**: the tuner's state (stage snapshots included) is written to
      ``checkpoint-N/autolrs_callback.pt`` with every Trainer checkpoint and read back by
      ``trainer.train(resume_from_checkpoint=...)`` (a path or ``True``), so a run resumed
      mid-stage continues the same schedule. Build the resumed Trainer and callback with the
      same arguments.

    Args:
        trainer: The ``transformers.Trainer`` to drive (before ``train()``).
        lr_bounds: ``(low, high)`` LR search box.
        max_steps: Budget of optimizer steps (default: the Trainer's ``max_steps``).
        **tuner_kwargs: Any other :class:`~autolr.AutoLRS` argument.

    Raises:
        ConfigTypeError: ``trainer`` is not a ``transformers.Trainer``, or ``tuner_kwargs``
            names ``model``/``optimizer`` or an unknown argument.
        ConfigError: The Trainer would schedule the LR itself (see above), or ``max_steps``
            is not an int >= 1.

    Attributes:
        tuner: The :class:`~autolr.AutoLRS` of the current ``train()`` (``None`` before).
    """

    def __init__(
        self,
        trainer: Any,
        *,
        lr_bounds: tuple[float, float] = (1e-4, 1e-1),
        max_steps: int | None = None,
        **tuner_kwargs: Any,
    ) -> None:
        if not isinstance(trainer, _tf.Trainer):
            raise ConfigTypeError(
                f"trainer must be a transformers.Trainer, got {type(trainer).__name__}"
            )
        _check_tuner_kwargs(
            "AutoLRSTrainerCallback", tuner_kwargs, "the Trainer's model and optimizer",
            "trainer, lr_bounds, max_steps",
        )  # fmt: skip
        if any(isinstance(c, AutoLRSTrainerCallback) for c in trainer.callback_handler.callbacks):
            raise ConfigError(
                "this Trainer already has an AutoLRSTrainerCallback; attach one per Trainer"
            )
        if max_steps is not None:
            # Checked here: on_train_begin would otherwise read 0 as "the Trainer's budget".
            check_int("max_steps", max_steps, minimum=1)
        _check_scheduler(trainer)
        self.trainer = trainer
        self.lr_bounds = lr_bounds
        self.max_steps = max_steps
        self.tuner_kwargs = dict(tuner_kwargs)
        self.tuner: AutoLRS | None = None
        self._loss = 0.0
        self._resume: str | None = None
        # A truncated run is said once: at train begin when foreseeable, else at train end.
        self._warned = False
        self._install(trainer)
        trainer.add_callback(self)

    # ------------------------------------------------------------------ Trainer plumbing
    def _install(self, trainer: Any) -> None:
        """Wrap the Trainer's ``training_step``, ``create_scheduler`` and ``train``."""
        step, train = trainer.training_step, trainer.train

        @functools.wraps(step)
        def training_step(*args: Any, **kwargs: Any) -> Any:
            loss = step(*args, **kwargs)
            self._loss += float(loss.detach().float().sum().item())
            return loss

        def create_scheduler(num_training_steps: int, optimizer: Any = None) -> Any:
            if trainer.lr_scheduler is None:
                trainer.lr_scheduler = _HoldLR(optimizer or trainer.optimizer)
            return trainer.lr_scheduler

        @functools.wraps(train)
        def train_(resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
            self._resume = _checkpoint_dir(trainer, resume_from_checkpoint)
            return train(resume_from_checkpoint, *args, **kwargs)

        trainer.training_step = training_step
        trainer.create_scheduler = create_scheduler
        trainer.train = train_

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Build the tuner (and load its state when resuming)."""
        model, optimizer = kwargs["model"], kwargs["optimizer"]
        opt = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper
        for g in opt.param_groups:
            # A resumed optimizer holds the tuner's last LR; the groups' ratios come from
            # the LRs the optimizer was built with (kept by the scheduler as initial_lr).
            if "initial_lr" in g:
                g["lr"] = g["initial_lr"]
        kw = dict(self.tuner_kwargs)
        extras = dict(kw.pop("extras", None) or {})
        scaler = getattr(self.trainer.accelerator, "scaler", None)
        if scaler is not None:
            extras.setdefault("grad_scaler", scaler)
        # A second train() builds a new tuner: drop the previous one first, so it is gone
        # (with its step hook on the reused optimizer) before the new one registers its own.
        self.tuner = None
        self._warned = False
        self.tuner = AutoLRS(
            model,
            opt,
            lr_bounds=self.lr_bounds,
            max_steps=self.max_steps if self.max_steps is not None else int(state.max_steps),
            extras=extras or None,
            **kw,
        )
        self._loss = 0.0
        if self._resume is not None:
            path = os.path.join(self._resume, STATE_FILE)
            if not os.path.isfile(path):
                raise StateError(
                    f"resume_from_checkpoint={self._resume!r} has no {STATE_FILE}: that "
                    "checkpoint was not written with AutoLRSTrainerCallback attached"
                )
            saved = torch.load(path, map_location="cpu", weights_only=True)
            self.load_state_dict(saved)
        budget = self.tuner.max_steps
        if budget is not None and 0 < state.max_steps < budget:
            self._warned = True
            if state.is_world_process_zero:
                warnings.warn(
                    f"AutoLRSTrainerCallback: the Trainer stops after {state.max_steps} optimizer "
                    f"steps, before the tuner's max_steps={budget}: the run will end inside its "
                    f"schedule. Give the Trainer {budget} steps (TrainingArguments max_steps) or "
                    f"pass AutoLRSTrainerCallback(max_steps={state.max_steps}) (or ignore this "
                    "if a resumed run finishes the budget)",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Warn once when training ended before the tuner's budget (not called on an error)."""
        if not self._warned:
            self._warned = _warn_unfinished(
                "AutoLRSTrainerCallback: training ended",
                self.tuner,
                "by the mixed-precision scaler and do not count for the tuner",
                "early stopping or control.should_training_stop",
                rank_zero=state.is_world_process_zero,
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Report the step's loss; the tuner sets the next LR (and may restore)."""
        if self.tuner is None:
            return
        loss, self._loss = self._loss, 0.0
        skipped = bool(getattr(self.trainer.accelerator, "optimizer_step_was_skipped", False))
        self.tuner.step(loss, skipped=skipped)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the tuner's state into the checkpoint the Trainer just saved."""
        if self.tuner is None or not state.is_world_process_zero:
            return
        get_dir = getattr(self.trainer, "_get_output_dir", None)  # hyperparameter search
        run_dir = get_dir(trial=None) if get_dir is not None else args.output_dir
        folder = os.path.join(
            run_dir, f"{_trainer_utils.PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        )
        os.makedirs(folder, exist_ok=True)
        torch.save(self.state_dict(), os.path.join(folder, STATE_FILE))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The tuner's state (plain values and CPU tensors)."""
        if self.tuner is None:
            raise StateError("AutoLRSTrainerCallback has no tuner before training begins")
        return {"tuner": self.tuner.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict` into the current tuner.

        Raises:
            StateError: Not an AutoLRSTrainerCallback state, or no tuner yet.
        """
        if not isinstance(state, Mapping) or not isinstance(state.get("tuner"), Mapping):
            raise StateError(
                "not an AutoLRSTrainerCallback state_dict: expected a dict with a 'tuner' entry"
            )
        if self.tuner is None:
            raise StateError("AutoLRSTrainerCallback has no tuner before training begins")
        self.tuner.load_state_dict(state["tuner"])


def _check_scheduler(trainer: Any) -> None:
    args = trainer.args
    kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    # A scheduler the Trainer made itself (create_optimizer_and_scheduler() ran already) is
    # of lr_scheduler_type, checked below, and train() discards it and asks create_scheduler,
    # which the callback wraps, for a new one: only a scheduler passed in would stay.
    own = getattr(trainer, "_created_lr_scheduler", False) is True
    if trainer.lr_scheduler is not None and not own:
        raise ConfigError(
            f"the Trainer was given an LR scheduler ({type(trainer.lr_scheduler).__name__}) "
            "in optimizers=(optimizer, scheduler); AutoLRSTrainerCallback sets the LR itself: "
            "pass optimizers=(optimizer, None)"
        )
    if kind != "constant":
        raise ConfigError(
            f"TrainingArguments(lr_scheduler_type={kind!r}) would fight AutoLRS over the LR; "
            "pass lr_scheduler_type='constant' (the callback then replaces it by a "
            "pass-through scheduler)"
        )
    warm = getattr(args, "warmup_steps", 0) or 0
    ratio = getattr(args, "warmup_ratio", 0) or 0
    if warm > 0 or ratio > 0:
        raise ConfigError(
            f"TrainingArguments(warmup_steps={warm!r}, warmup_ratio={ratio!r}) asks the "
            "Trainer for a warm-up; AutoLRS plans its own: set both to 0 and use AutoLRS's "
            "warmup_steps/warmup_lr"
        )


def _checkpoint_dir(trainer: Any, resume: Any) -> str | None:
    """The checkpoint folder ``Trainer.train(resume_from_checkpoint=resume)`` loads."""
    if resume is None or resume is False:
        return None
    if resume is True:
        last = _trainer_utils.get_last_checkpoint(trainer.args.output_dir)
        return None if last is None else str(last)  # the Trainer raises on None itself
    return str(resume)
