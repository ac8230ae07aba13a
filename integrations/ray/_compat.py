"""The only places where autolr touches Ray Tune internals (pinned by tests to the Ray in use).

Ray 2.60 offers no public way for a scheduler to say "resume this trial from that checkpoint":
Population Based Training overwrites the private ``_latest_checkpoint_result`` of the trial's
checkpoint manager, and so do we, here and nowhere else. Nor can a scheduler say "this old
checkpoint is still needed, that one is not" (``CheckpointConfig(num_to_keep=...)`` keeps the
newest per trial, not the ones other trials are cloned from), so the scheduler prunes the
manager's private ``_checkpoint_results`` list itself (:func:`prune_checkpoints`).
``test_private_ray_access_is_pinned_to_the_installed_ray`` in ``tests/test_ray_scheduler.py``
checks that both attributes still exist and still decide where a trial resumes from and what
Ray keeps, so a Ray upgrade that changes them fails loudly instead of silently training from
the wrong state.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Any

import torch

from .. import require

__all__ = [
    "TESTED_RAY_VERSION",
    "checkpoint_at",
    "checkpoint_exists",
    "checkpoint_from_path",
    "prune_checkpoints",
    "read_state_file",
    "retried_after_error",
    "set_trial_checkpoint",
    "trial_checkpoint",
    "upload_trial_logs",
    "write_state_file",
]

#: The Ray version the private access below was written against and tested with.
TESTED_RAY_VERSION = "2.60.0"


def _training_result_cls() -> Any:
    # Same private import as ray.tune.schedulers.pbt.
    return require("ray.train._internal.session", "ray")._TrainingResult


def plain_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON/torch-safe scalar part of a result (Ray reads iteration and time from it)."""
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        finite = not isinstance(value, float) or math.isfinite(value)
        if isinstance(value, (bool, int, str, float)) and finite:
            out[str(key)] = value
    return out


def trial_checkpoint(trial: Any) -> tuple[str, dict[str, Any]] | None:
    """``(path, metrics)`` of the checkpoint a trial would resume from, or ``None``."""
    result = trial.latest_checkpoint_result  # public property of Trial
    if result is None or result.checkpoint is None:
        return None
    return str(result.checkpoint.path), plain_metrics(result.metrics)


def checkpoint_at(trial: Any, time_attr: str, iteration: int) -> tuple[str, dict[str, Any]] | None:
    """``(path, metrics)`` of a kept checkpoint the trial reported at ``iteration``, or ``None``.

    Reads ``best_checkpoint_results`` (a public property of Ray's private checkpoint manager:
    the checkpoints ``CheckpointConfig(num_to_keep=...)`` kept, oldest first).
    """
    results = list(trial.run_metadata.checkpoint_manager.best_checkpoint_results)
    for result in reversed(results):
        if result.checkpoint is not None and result.metrics.get(time_attr) == iteration:
            return str(result.checkpoint.path), plain_metrics(result.metrics)
    return None


def checkpoint_from_path(trial: Any, path: str) -> Any:
    """A ``ray.tune.Checkpoint`` for ``path`` on the trial's storage filesystem."""
    tune = require("ray.tune", "ray")
    storage = getattr(trial, "storage", None)
    return tune.Checkpoint(path, filesystem=storage.storage_filesystem if storage else None)


def set_trial_checkpoint(trial: Any, source: tuple[str, dict[str, Any]] | None) -> None:
    """Make a PAUSED/PENDING trial resume from ``source`` (``None``: from scratch).

    This is the private write Population Based Training does in ``_exploit``.
    """
    manager = trial.run_metadata.checkpoint_manager
    if source is None:
        manager._latest_checkpoint_result = None
        return
    path, metrics = source
    manager._latest_checkpoint_result = _training_result_cls()(
        checkpoint=checkpoint_from_path(trial, path), metrics=dict(metrics)
    )
    trial.invalidate_json_state()
    trial.run_metadata.invalidate_cache()  # the manager is saved with the run metadata


def prune_checkpoints(trial: Any, keep: set[str], keep_iterations: set[int], time_attr: str) -> int:
    """Delete ``trial``'s checkpoints except its latest, ``keep`` paths and ``keep_iterations``.

    Drops them from the private ``_checkpoint_results`` list of the trial's checkpoint manager
    (what Ray would delete with ``num_to_keep``) and deletes their folders; returns how many.
    """
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    latest_path = None if latest is None or latest.checkpoint is None else latest.checkpoint.path
    kept, dropped = [], []
    for result in manager._checkpoint_results:
        ck = result.checkpoint
        needed = ck is None or str(ck.path) in keep or str(ck.path) == str(latest_path)
        if needed or result.metrics.get(time_attr) in keep_iterations:
            kept.append(result)
        else:
            dropped.append(result)
    if not dropped:
        return 0
    manager._checkpoint_results = kept
    trial.run_metadata.invalidate_cache()
    for result in dropped:
        # FileNotFoundError: already gone (or never written: the unit tests' fake paths).
        with contextlib.suppress(FileNotFoundError):
            result.checkpoint.filesystem.delete_dir(result.checkpoint.path)
    return len(dropped)


def checkpoint_exists(trial: Any, path: str) -> bool:
    """Whether the checkpoint folder ``path`` exists on the trial's storage (True without one)."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return True
    pafs = require("pyarrow.fs", "ray")
    return storage.storage_filesystem.get_file_info(path).type != pafs.FileType.NotFound


def upload_trial_logs(trial: Any) -> None:
    """Copy a trial's driver-side ``result.json``/``progress.csv`` into its storage folder.

    When a trial restarts from a checkpoint, Ray's JSON and CSV logger callbacks replace the
    local log files with the copies in storage (``_restore_from_remote``), which Ray uploads
    only every few seconds. The local files are the complete ones; uploading them first makes
    that restore a no-op instead of a "Remote file not found" warning or a stale copy.
    """
    storage = getattr(trial, "storage", None)
    if storage is None or not getattr(trial, "relative_logdir", None):
        return  # never started: no log files yet
    result = require("ray.tune.result", "ray")
    pafs = require("pyarrow.fs", "ray")
    fs = storage.storage_filesystem
    remote = storage.trial_fs_path
    for name in (result.EXPR_RESULT_FILE, result.EXPR_PROGRESS_FILE):
        local = os.path.join(trial.local_path, name)
        if os.path.exists(local):
            fs.create_dir(remote, recursive=True)
            pafs.copy_files(local, f"{remote}/{name}", destination_filesystem=fs)


def retried_after_error(trial: Any) -> bool:
    """In ``on_trial_error``: whether Ray retries ``trial`` (``FailureConfig(max_failures=n)``).

    No public flag says so. Ray 2.60's controller stops a trial it will retry (status
    ``ERROR``) before it calls the scheduler's ``on_trial_error`` and re-adds it as
    ``PENDING``; a trial it gives up on is still ``RUNNING`` or ``PENDING`` at that call.
    ``Trial.should_recover()`` (public) must agree. Pinned by the slow retry test in
    ``tests/test_ray_scheduler.py``: if Ray changes the order, the retried trial is treated as
    gone and rejoins idle (its work dropped), which still finishes.
    """
    trial_cls = require("ray.tune.experiment", "ray").Trial
    return trial.status == trial_cls.ERROR and bool(trial.should_recover())


def write_state_file(trial: Any, name: str, state: dict[str, Any]) -> str:
    """``torch.save`` ``state`` into the experiment folder of ``trial`` (local or cloud)."""
    fs = trial.storage.storage_filesystem
    path = f"{trial.storage.experiment_fs_path}/{name}"
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as fh:
        fh.write(buf.getvalue())
    fs.move(tmp, path)
    return path


def read_state_file(trial: Any, name: str) -> dict[str, Any] | None:
    """Load what :func:`write_state_file` wrote, or ``None`` if there is no such file."""
    pafs = require("pyarrow.fs", "ray")
    fs = trial.storage.storage_filesystem
    path = f"{trial.storage.experiment_fs_path}/{name}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as fh:
        data = fh.readall()
    return torch.load(io.BytesIO(data), weights_only=True)
