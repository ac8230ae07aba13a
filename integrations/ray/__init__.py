"""AutoLRS across a Ray Tune population: candidates side by side instead of one after another.

:class:`AutoLRSScheduler` executes the AutoLRS stage search with Ray trials as its candidates.
Every decision -- whether another search fits the budget, how many candidates train for how
long, which one wins, what counts as diverged, what happens when all diverge, the LR between
searches and its final decay -- is taken by :class:`autolr.StageSearch`, the object the in-loop
:class:`autolr.AutoLRS` uses too; this package only carries them out with trials, checkpoints
and configs. A stage: every trial trains its own candidate LR for τ' iterations from the same
checkpoint, the stage search scores each candidate, the winner's own trial keeps training
without a restart while the other trials wait paused, and the next stage starts from the
winner's checkpoint. In the last stage (``final="race"``) nothing is cloned: every trial trains
its own candidate to the end and the best real losses decide.

:class:`TuneCheckpointer` makes an ordinary PyTorch training function compliant: it restores
the checkpoint Ray hands over, follows the LR schedule the scheduler writes into the config
(warm-up, candidate LR, final decay) at every report, and reports the loss with a checkpoint.

Modules: ``scheduler`` (the scheduler's arguments, Ray hooks and state) with its mixins
``_stages``, ``_race`` and ``_trials``; ``_jobs`` (typed job records); ``_schedule`` (the LR
schedule in a trial's config); ``checkpointer``; ``_compat`` (every private Ray access).

Example:
    >>> from autolr.integrations.ray import AutoLRSScheduler
    >>> sched = AutoLRSScheduler(lr_bounds=(1e-3, 0.3), max_t=200, metric="loss", mode="min")
    >>> sched.variant, sched.stage, sched.phase
    ('budget', 0, 'search')
"""

from __future__ import annotations

from .. import require

# Fails here, naming the extra, when Ray is missing (before any submodule imports it).
require("ray.tune", "ray")

from ._schedule import SCHEDULE_KEY, STATE_FINITE_KEY, scheduled_lr  # noqa: E402
from ._schedule import lr_at as lr_at  # noqa: E402  (used by tests; not in __all__)
from .checkpointer import TuneCheckpointer  # noqa: E402
from .scheduler import STATE_FILE, AutoLRSScheduler  # noqa: E402

__all__ = [
    "SCHEDULE_KEY",
    "STATE_FILE",
    "STATE_FINITE_KEY",
    "AutoLRSScheduler",
    "TuneCheckpointer",
    "scheduled_lr",
]
