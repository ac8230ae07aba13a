"""autolr: tune learning-rate and hyperparameter schedules while a model trains.

The public face of the package. Importing it pulls in torch and numpy only: botorch,
gpytorch and scipy load when a GP or a forecast first needs them; Ray, Optuna, Lightning and
LLM clients load lazily from :mod:`autolr.integrations` and raise an :class:`ImportError`
naming the extra to install.

Example:
    >>> import torch, autolr
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> tuner = autolr.AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), tau=100, k=5)
"""

from __future__ import annotations

from ._autolrs._policy import BudgetPolicy, DivergenceRule, StagePlan
from ._autolrs._stage import CandidateResult, StageRecord, StageSearch
from ._autolrs._tuner import AutoLRS, HistoryRecord
from ._errors import AutoLRError, ConfigError, ConfigTypeError, StateError
from ._hypergrad import HypergradientLR
from ._schedule import Schedule, ScheduleLR
from ._snapshot import Snapshot, Stateful, capture_rng_state, restore_rng_state

__version__ = "0.1.0"

__all__ = [
    "AutoLRError",
    "AutoLRS",
    "BudgetPolicy",
    "CandidateResult",
    "ConfigError",
    "ConfigTypeError",
    "DivergenceRule",
    "HistoryRecord",
    "HypergradientLR",
    "Schedule",
    "ScheduleLR",
    "Snapshot",
    "StagePlan",
    "StageRecord",
    "StageSearch",
    "StateError",
    "Stateful",
    "__version__",
    "capture_rng_state",
    "restore_rng_state",
]
