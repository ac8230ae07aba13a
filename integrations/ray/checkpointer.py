"""``TuneCheckpointer``: a PyTorch function trainable that follows the scheduler's contract."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from autolr._autolrs._lr import GroupLRs
from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._snapshot import Snapshot, Stateful, state_finite
from autolr._validate import check_float, check_instance

from .. import require
from ._schedule import SCHEDULE_KEY, STATE_FINITE_KEY, check_schedule, scheduled_lr

_tune = require("ray.tune", "ray")

__all__ = ["TuneCheckpointer"]

_FILE = "autolr_trial.pt"  # the file inside each reported checkpoint folder
_VERSION = 1  # of what that file holds: {"version", "snapshot", "iteration"}


class _DropCheckpointNote(logging.Filter):
    """Drops Ray's per-report "Checkpoint successfully created at ..." INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Checkpoint successfully created")


_DROP_CHECKPOINT_NOTE = _DropCheckpointNote()
# The logger of ray.train._internal.storage.StorageContext.persist_current_checkpoint.
_RAY_STORAGE_LOG = logging.getLogger("ray.train._internal.storage")


class TuneCheckpointer:
    """Makes a PyTorch function trainable follow the :class:`AutoLRSScheduler` contract.

    On construction it resumes from ``ray.tune.get_checkpoint()`` (model, optimizer, extras,
    RNG states and the iteration counter) and sets the optimizer's LR for the next iteration:
    from the schedule the scheduler put into the config (:data:`SCHEDULE_KEY`: warm-up,
    candidate LR, final decay), else ``config[lr_key]`` (parameter groups keep their ratios).
    :meth:`report` sends the loss (and the LR it trained with, as ``"lr"``; whether the weights
    and optimizer state are finite, as :data:`STATE_FINITE_KEY`), any extra metrics and a
    checkpoint to Ray with ``ray.tune.report``, then sets the LR of the next iteration from the
    schedule. Outside a Tune session it only applies the LR. The checkpoint holds an
    :class:`autolr.Snapshot` of the training state, so a restore is as exact as AutoLRS's.

    Args:
        model: The model being trained.
        optimizer: Its optimizer.
        config: The trial's config (the trainable's argument).
        lr_key: Config key of the LR.
        metric: Name under which :meth:`report` sends the loss.
        extras: Further stateful objects (``GradScaler``, LR-free schedulers...) by name.
        rng: Save and restore the torch/numpy/python RNG states, so every candidate of a stage
            sees the same batches (as the in-loop AutoLRS does).

    Raises:
        ConfigTypeError: ``model``/``optimizer``/``config``/``extras`` of the wrong type, or
            an extra without ``state_dict``/``load_state_dict``.
        ConfigError: ``config`` has no positive finite ``config[lr_key]``, or a malformed
            schedule (one with an LR that is not finite and positive included).
        StateError: The checkpoint Ray hands over is not one a ``TuneCheckpointer`` of this
            model and optimizer wrote (no ``autolr_trial.pt`` in it, an unreadable file, a
            missing snapshot or an iteration that is not an int >= 0).

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> ckpt = TuneCheckpointer(model, opt, {"lr": 0.02})  # outside Tune: sets the LR
        >>> opt.param_groups[0]["lr"], ckpt.iteration
        (0.02, 0)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: Mapping[str, Any],
        *,
        lr_key: str = "lr",
        metric: str = "loss",
        extras: Mapping[str, Stateful] | None = None,
        rng: bool = True,
    ) -> None:
        check_instance("model", model, torch.nn.Module)
        check_instance("optimizer", optimizer, torch.optim.Optimizer)
        check_instance("config", config, Mapping)
        check_instance("lr_key", lr_key, str)
        check_instance("metric", metric, str)
        if extras is not None:
            check_instance("extras", extras, Mapping)
        if lr_key not in config:
            raise ConfigError(f"config has no {lr_key!r} entry (the LR the scheduler sets)")
        check_float(f"config[{lr_key!r}]", config[lr_key], minimum=0.0, min_inclusive=False)
        schedule = config.get(SCHEDULE_KEY)
        if schedule is not None:
            check_schedule(schedule)
        self.model = model
        self.optimizer = optimizer
        self.metric = metric
        self.extras = dict(extras or {})
        self.rng = check_instance("rng", rng, bool)
        # Host copies: the snapshot holds one only while a checkpoint is written or read.
        self._snapshot = Snapshot(model, optimizer, extras=self.extras, offload="cpu", rng=rng)
        self._config = dict(config)
        self._lr_key = lr_key
        self._group_lrs = GroupLRs(optimizer)
        self.iteration = 0
        self._restore()
        self._set_lr(scheduled_lr(self._config, self.iteration, lr_key=lr_key))

    def _set_lr(self, lr: float) -> None:
        self.lr = float(lr)
        self._group_lrs.set(self.lr)

    def _restore(self) -> None:
        with warnings.catch_warnings():
            # Outside a Tune session Ray warns and returns None: that is the doctest case.
            warnings.filterwarnings("ignore", message=".*get_checkpoint.*", category=UserWarning)
            checkpoint = _tune.get_checkpoint()
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            path = os.path.join(folder, _FILE)
            if not os.path.isfile(path):
                raise StateError(
                    f"the checkpoint Ray handed over has no {_FILE}: it was not written by "
                    f"TuneCheckpointer (its files: {sorted(os.listdir(folder))[:8]}); start the "
                    "trial afresh, or restore it with your own code instead of TuneCheckpointer"
                )
            try:
                # On the CPU: the snapshot moves each tensor back to the device it was saved
                # from.
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # unpickling errors come in many types
                why = (str(exc).splitlines() or [""])[0][:120]
                raise StateError(
                    f"the checkpoint Ray handed over has a {_FILE} that does not load "
                    f"({type(exc).__name__}: {why}); start the trial afresh"
                ) from exc
        if not isinstance(state, Mapping) or state.get("version") != _VERSION:
            raise StateError(
                f"the checkpoint Ray handed over ({_FILE}) was not written by this version of "
                "TuneCheckpointer (missing or unknown 'version'); start the trial afresh"
            )
        snapshot, iteration = state.get("snapshot"), state.get("iteration")
        if not isinstance(snapshot, Mapping) or not snapshot:
            raise StateError(
                f"the checkpoint Ray handed over ({_FILE}) holds no training state "
                f"('snapshot' is {type(snapshot).__name__}); start the trial afresh"
            )
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise StateError(
                f"the checkpoint Ray handed over ({_FILE}) has iteration={iteration!r}, not an "
                "int >= 0; start the trial afresh"
            )
        self._snapshot.load_state_dict(snapshot)  # checked against the model: StateError
        self._snapshot.restore()
        self._snapshot.load_state_dict({})  # drop the host copy
        self.iteration = iteration

    def report(self, loss: float | torch.Tensor, **metrics: Any) -> None:
        """Report this iteration's loss (plus ``metrics``) with a checkpoint; iteration += 1.

        Then sets the LR of the next iteration from the config's schedule. A non-finite loss
        is reported as it is (the scheduler penalises or skips it).

        Raises:
            ConfigTypeError: ``loss`` is not a real number or a one-element tensor (nothing
                changed: no iteration counted, no LR set, nothing sent).
        """
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ConfigTypeError(
                    f"loss must be a number or a one-element tensor, got a tensor of shape "
                    f"{tuple(loss.shape)}"
                )
            value = float(loss.detach().float().item())
        else:
            value = check_float("loss", loss, finite=False)
        used = self.lr
        # Lets the scheduler tell a bad batch (state still finite) from a diverged trial.
        finite = state_finite(self.model, self.optimizer)
        self.iteration += 1
        self._snapshot.capture()  # before the next LR is set: the state this iteration left
        state = {
            "version": _VERSION,
            "snapshot": self._snapshot.state_dict(),
            "iteration": self.iteration,
        }
        self._snapshot.load_state_dict({})  # drop the host copy (``state`` holds it)
        self._set_lr(scheduled_lr(self._config, self.iteration, lr_key=self._lr_key))
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, os.path.join(folder, _FILE))
            # Ray logs one INFO line per persisted checkpoint, i.e. per iteration here; only
            # during this call, so the user's own reports keep it.
            _RAY_STORAGE_LOG.addFilter(_DROP_CHECKPOINT_NOTE)
            try:
                _tune.report(
                    {self.metric: float(value), "lr": used, STATE_FINITE_KEY: finite, **metrics},
                    checkpoint=_tune.Checkpoint.from_directory(folder),
                )
            finally:
                _RAY_STORAGE_LOG.removeFilter(_DROP_CHECKPOINT_NOTE)
