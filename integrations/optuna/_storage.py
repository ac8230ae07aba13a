"""Values kept in a trial's system attrs, chunked to fit the storage's attr length limit.

Everything a sampler decides from lives in the storage, not in memory, so several processes
sharing one storage (and a fresh process resuming a study) decide alike.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

if TYPE_CHECKING:
    from optuna.study import Study

# Relative params of a trial, shared with other processes so that they see it as pending
# before its objective has suggested everything (the same idea as GPSampler's system attrs).
_RELATIVE_PARAMS_KEY = "autolr:relative_params"
_SYSTEM_ATTR_MAX_LENGTH = 2045
#: Trial system attr naming how the relative params were drawn ("sobol", "gp", ...).
_SOURCE_KEY = "autolr:source"
# Fitted GP hyperparameters of a trial's GP step (with the search space they belong to): the
# next GP step starts its fit there (a warm start that halves the fit at 200 trials). Kept in
# the storage, not in memory, so every process makes the same decision from the same storage.
_GP_HYPERS_KEY = "autolr:gp_hypers"


def _read_chunked(trial: FrozenTrial, key: str) -> Any:
    """JSON value stored by :func:`_write_chunked` under ``key`` (``None`` if absent)."""
    chunks = []
    i = 0
    # An empty chunk ends the value early: a rewrite may be shorter than what it replaced.
    while chunk := trial.system_attrs.get(f"{key}:{i}"):
        chunks.append(chunk)
        i += 1
    return json.loads("".join(chunks)) if chunks else None


def _write_chunked(
    study: Study, trial: FrozenTrial, key: str, value: Any, terminate: bool = False
) -> None:
    """Stores ``value`` as JSON in system attrs of at most 2045 characters each (storage limit).

    ``terminate=True`` (rewriting a key) also writes an empty chunk after the last one, so
    stale chunks of a longer previous value are never read back.
    """
    text = json.dumps(value)
    n = 0
    for i in range(0, len(text), _SYSTEM_ATTR_MAX_LENGTH):
        n = i // _SYSTEM_ATTR_MAX_LENGTH
        study._storage.set_trial_system_attr(
            trial._trial_id, f"{key}:{n}", text[i : i + _SYSTEM_ATTR_MAX_LENGTH]
        )
    if terminate:
        study._storage.set_trial_system_attr(trial._trial_id, f"{key}:{n + 1}", "")


def _trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """Params of a trial, including relative params another process stored for it."""
    if trial.state.is_finished():
        return trial.params
    params = _read_chunked(trial, _RELATIVE_PARAMS_KEY)
    if params is None:
        return trial.params
    params.update(trial.params)
    return params
