"""The only places where autolr touches Ray Tune internals (pinned by tests to the Ray in use).

Ray 2.60 offers no public way for a scheduler to say "resume this trial from that checkpoint":
Population Based Training overwrites the private ``_latest_checkpoint_result`` of the trial's
checkpoint manager, and so do we, here and nowhere else. ``tests/test_ray_compat.py`` checks
that the attribute still exists and still decides where a trial resumes from, so a Ray upgrade
that changes it fails loudly instead of silently training from the wrong state.
"""

from __future__ import annotations

import io
import math
from typing import Any

import torch

from . import require

__all__ = [
    "TESTED_RAY_VERSION",
    "checkpoint_at",
    "checkpoint_from_path",
    "read_state_file",
    "set_trial_checkpoint",
    "trial_checkpoint",
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
