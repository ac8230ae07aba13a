"""AutoLRS across a Ray Tune population: candidates side by side instead of one after another.

:class:`AutoLRSScheduler` executes the AutoLRS stage search with Ray trials as its candidates.
Every decision -- whether another search fits the budget, how many candidates train for how
long, which one wins, what counts as diverged, what happens when all diverge, the LR between
searches and its final decay -- is taken by :class:`autolr.StageSearch`, the object the in-loop
:class:`autolr.AutoLRS` uses too; this module only carries them out with trials, checkpoints
and configs. A stage: every trial trains its own candidate LR for τ' iterations from the same
checkpoint, the stage search scores each candidate, the winner's own trial keeps training
without a restart while the other trials wait paused, and the next stage starts from the
winner's checkpoint. In the last stage (``final="race"``) nothing is cloned: every trial trains
its own candidate to the end and the best real losses decide.

:class:`TuneCheckpointer` makes an ordinary PyTorch training function compliant: it restores
the checkpoint Ray hands over, follows the LR schedule the scheduler writes into the config
(warm-up, candidate LR, final decay) at every report, and reports the loss with a checkpoint.

Example:
    >>> from autolr.integrations.ray import AutoLRSScheduler
    >>> sched = AutoLRSScheduler(lr_bounds=(1e-3, 0.3), max_t=200, metric="loss", mode="min")
    >>> sched.variant, sched.stage, sched.phase
    ('budget', 0, 'search')
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from autolr import (
    BudgetPolicy,
    CandidateResult,
    DivergenceRule,
    Schedule,
    StagePlan,
    StageSearch,
)
from autolr._autolrs._lr import GroupLRs
from autolr._autolrs._policy import cooled_lr, decayed_lr, warmup_lr
from autolr._autolrs._race import RacerView, pick_racer
from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._snapshot import Stateful, capture_rng_state, restore_rng_state
from autolr.predictors import Predictor
from autolr.searchers import Searcher

from . import _ray_compat as compat
from . import require

_tune = require("ray.tune", "ray")
_result = require("ray.tune.result", "ray")
_schedulers = require("ray.tune.schedulers", "ray")
Trial = require("ray.tune.experiment", "ray").Trial
TrialScheduler = _schedulers.TrialScheduler

__all__ = ["SCHEDULE_KEY", "STATE_FILE", "AutoLRSScheduler", "TuneCheckpointer", "scheduled_lr"]

#: File in the experiment folder holding the scheduler's state (``AutoLRSScheduler.restore``).
STATE_FILE = "autolrs_scheduler_state.pt"
#: Config key of the LR schedule the scheduler gives each trial (see :func:`scheduled_lr`).
SCHEDULE_KEY = "autolr_lr_schedule"
_FINISHED = (Trial.TERMINATED, Trial.ERROR)
_STRUCTURE = ("tau", "tau_prime", "tau_max", "double", "k")
_DEFAULT_POPULATION = 4  # only until Ray reports num_samples
_PHASES = ("search", "exploit", "final", "race")


# ---------------------------------------------------------------------- LR schedules
def lr_at(schedule: Mapping[str, Any], iteration: int) -> float:
    """LR of iteration ``iteration`` (0-based: iterations done before it) under ``schedule``.

    ``schedule`` is the plain description the scheduler writes into a trial's config:
    ``points`` (``[[first iteration, lr], ...]``: the LR from that iteration on), optionally
    ``warmup`` (``[steps, peak]``: linear ramp over the first steps), ``window``
    (``[start, tau_prime, cooldown]``: a candidate window whose last steps cool down, see
    :meth:`autolr.BudgetPolicy.candidate_lr`) and ``decay`` (``[max_steps, steps, shape]``: the
    final decay of :meth:`autolr.BudgetPolicy.exploit_lr`).

    Example:
        >>> s = {"points": [[2, 0.1], [4, 0.2]], "warmup": [2, 0.1]}
        >>> [lr_at(s, i) for i in range(6)]
        [0.05, 0.1, 0.1, 0.1, 0.2, 0.2]
    """
    i = int(iteration)
    warm = schedule.get("warmup")
    if warm and i < int(warm[0]):
        return warmup_lr(float(warm[1]), i, int(warm[0]))
    points = schedule["points"]
    base = float(points[0][1])
    for start, lr in points:
        if i >= int(start):
            base = float(lr)
    win = schedule.get("window")
    if win and int(win[2]) > 0 and int(win[0]) <= i < int(win[0]) + int(win[1]):
        return cooled_lr(base, i - int(win[0]), int(win[1]), int(win[2]))
    dec = schedule.get("decay")
    if not dec:
        return base
    return decayed_lr(base, i, max_steps=int(dec[0]), decay=int(dec[1]), shape=str(dec[2]))


def scheduled_lr(config: Mapping[str, Any], iteration: int, *, lr_key: str = "lr") -> float:
    """The LR a trial trains iteration ``iteration`` (0-based) with, given its config.

    Follows the schedule :class:`AutoLRSScheduler` puts under :data:`SCHEDULE_KEY` (warm-up,
    candidate window, final decay); without one, ``config[lr_key]``. A trainable that does not
    use :class:`TuneCheckpointer` calls this after every iteration to set its next LR.

    Example:
        >>> scheduled_lr({"lr": 0.1}, 5)
        0.1
    """
    schedule = config.get(SCHEDULE_KEY)
    if schedule:
        return lr_at(schedule, iteration)
    return float(config[lr_key])


# ---------------------------------------------------------------------- jobs
@dataclass
class _Job:
    """What one trial is doing: a candidate, the lineage (exploit/final), a racer, or waiting."""

    kind: str  # "candidate" | "exploit" | "final" | "race" | "wait"
    lr: float
    start: int  # lineage iteration where the job's window begins (its stage start)
    length: int | None  # iterations from ``start`` the job covers (None: until the run ends)
    schedule: dict[str, Any] = field(default_factory=dict)  # written into the trial's config
    losses: dict[int, float] = field(default_factory=dict)  # offset from start -> loss
    finished: bool = False
    penalised: bool = False
    reason: str = ""
    forecast: float | None = None
    scored: bool = False  # its window went to the stage search
    harvested: bool = False  # a finished candidate whose checkpoint has been recorded
    spec_end: int | None = None  # a scored candidate keeps training until this iteration
    warmup: bool = False  # starts from the initial weights and warms up until ``start``
    over: int = 0  # consecutive losses over the divergence threshold
    ref: float | None = None  # stage-start loss the divergence rule compares with
    select: float | None = None  # a racer's last finite ``select_metric`` value
    source: list[Any] | None = None  # [path, metrics] it resumes from (None: initial state)
    own: bool = True  # resumes from the trial's own latest checkpoint instead of source

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.start + self.length

    def to_state(self) -> dict[str, Any]:
        d = asdict(self)
        d["losses"] = [[int(k), float(v)] for k, v in self.losses.items()]
        return d

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> _Job:
        d = dict(d)
        d["losses"] = {int(k): float(v) for k, v in d["losses"]}
        if d.get("source") is not None:
            d["source"] = [str(d["source"][0]), dict(d["source"][1])]
        d["schedule"] = dict(d.get("schedule") or {})
        return cls(**d)


def _wait(lr: float, start: int = 0) -> _Job:
    return _Job("wait", float(lr), int(start), 0, finished=True)


class AutoLRSScheduler(TrialScheduler):
    """Ray Tune scheduler that runs the AutoLRS LR search over a population of trials.

    **Variants.** ``variant="budget"`` (the default whenever ``max_t`` is known: passed, or
    read from ``RunConfig(stop={time_attr: T})``) plans the run from its budget with
    ``BudgetPolicy.for_budget(max_t, parallel=True, k=num_samples, k_later=num_samples)``: a
    linear warm-up, the searches (one candidate per trial), and a final decay of the winner's
    LR to zero that every trial follows iteration by iteration (through the schedule in its
    config, see :class:`TuneCheckpointer`). ``variant="paper"`` keeps the published stage
    structure (τ, τ', doubling, constant LR per stage; the default without ``max_t``).

    **A stage.** Each live trial gets a candidate LR (proposed as a batch by the stage search)
    and trains τ' iterations from the stage checkpoint (the first stage from the seeded
    initial weights, after the warm-up); the stage search scores every candidate (a candidate
    whose loss trips its :class:`~autolr.DivergenceRule` against the stage-start loss is
    penalised). A scored candidate keeps training as the winner would, so that the winner's
    own trial continues into the exploitation without a restart; the others pause and wait.
    The winner trains until the next stage (the budget plan's next search, or τ − τ' in the
    paper variant), whose candidates all start from its checkpoint. If every candidate is
    penalised, the stage is searched again below them (:meth:`StageSearch.resolve_failure`);
    a non-finite loss while exploiting searches the stage again below that LR
    (:meth:`StageSearch.recover`). When no search fits any more, the winner trains to the end
    and the waiting trials are stopped.

    **The last stage** (``final="race"``, the default, when ``max_t`` is known and there is
    one candidate per trial): nothing is cloned; every trial trains its own candidate to the
    end (following the final decay), the candidates are still scored at τ' for the record,
    and ``schedule`` follows the racer with the lowest mean of its last τ' losses (or
    ``select_metric``), see :func:`autolr._autolrs._race.pick_racer`.

    **Trainable contract** (see :class:`TuneCheckpointer`): a function trainable that sets
    its LR from the config's schedule (:func:`scheduled_lr`) at every iteration, resumes from
    ``ray.tune.get_checkpoint()``, reports ``metric`` once per iteration with a checkpoint on
    every report, and builds identical initial weights and batches in every trial (seed the
    init and the data order: the first stage's candidates start from the trials' own initial
    weights). A function trainable's report without a checkpoint raises :class:`ConfigError`
    at that report. Trials are paused with a checkpoint and their config updated through
    ``Trial.set_config``; which checkpoint a paused trial resumes from is set through one
    private Ray attribute, isolated in ``autolr.integrations._ray_compat``.

    **Checkpoints.** The scheduler deletes every checkpoint no decision can restore from any
    more (``prune_checkpoints``); ``CheckpointConfig(num_to_keep=...)`` is refused, as Ray
    would delete checkpoints that are cloned.

    Ray does not save schedulers; this one writes its state to :data:`STATE_FILE` in the
    experiment folder after every decision (and at most every ``save_interval_s`` between
    them), so ``Tuner.restore`` continues the search. Ray restores its own copy of the
    scheduler: read the run's records back with :meth:`restore` on that file.

    Args:
        lr_bounds: ``(low, high)`` LR search box, searched in log space.
        variant: ``"budget"``, ``"paper"`` or ``None`` (budget when ``max_t`` is known).
        policy: A :class:`~autolr.BudgetPolicy` (``parallel=True``) replacing the default plan.
        tau: Paper variant: iterations per stage (the horizon candidates are forecast to).
        tau_prime: Paper variant: iterations per candidate (default ``tau // 10``).
        tau_max: Paper variant: cap on τ; τ, τ' double while ``tau_prime < tau_max / 10``.
        double: Paper variant: whether τ and τ' grow.
        k: Paper variant: candidates per stage (default: the population, one per trial).
            More candidates than trials re-uses trials that finished, from the stage
            checkpoint.
        exploit: Paper variant: train τ − τ' iterations at the winner's LR after each search
            (``False``: search again at once from the winner's checkpoint).
        final: ``"race"`` (default) or ``"clone"`` (the last stage searches like the others;
            the winner trains to the end).
        select_metric: Result key that picks the best racer, lowest wins (e.g. a validation
            loss; its last finite value counts). Default: the mean of the last τ' values of
            ``metric``.
        metric: Loss reported by the trainable (default: the Tuner's metric).
        mode: Must be ``"min"``.
        lr_key: Config key of the LR (the base LR of a trial's job).
        time_attr: Result key counting iterations (must grow by one per report).
        max_t: Iterations each trial trains; read from ``RunConfig(stop={time_attr: T})`` when
            not given. Decides the variant and the budget plan.
        searcher: Custom searcher over one log-scale parameter ``"lr"``.
        predictor: Custom forecaster (default exponential).
        seed: Seed of the default searcher.
        divergence_factor: A candidate whose loss exceeds this many times the stage-start loss
            for ``divergence_patience`` consecutive iterations is penalised.
        divergence_patience: See ``divergence_factor``.
        save_interval_s: Minimum seconds between state writes triggered by plain results.
        prune_checkpoints: Delete every trial checkpoint the scheduler can no longer need
            (it keeps each trial's latest, the stage checkpoint and the candidates' window
            checkpoints); ``False`` keeps them all.

    Raises:
        ConfigError: Invalid bounds or step counts, ``mode != "min"``, or paper-variant
            structure (``tau``, ``tau_prime``, ``tau_max``, ``double``, ``k``) with the budget
            variant. When the run starts: ``CheckpointConfig(num_to_keep=...)`` is set (Ray
            would delete checkpoints the scheduler clones). At a function trainable's first
            result without a checkpoint (see the trainable contract).

    Example:
        >>> sched = AutoLRSScheduler(lr_bounds=(1e-4, 1e-1), tau=200, k=8, metric="loss")
        >>> sched.variant, sched.search.tau_prime
        ('paper', 20)
    """

    def __init__(
        self,
        *,
        lr_bounds: tuple[float, float] = (1e-4, 1e-1),
        variant: str | None = None,
        policy: BudgetPolicy | None = None,
        tau: int | None = None,
        tau_prime: int | None = None,
        tau_max: int | None = None,
        double: bool | None = None,
        k: int | None = None,
        exploit: bool = True,
        final: str = "race",
        select_metric: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        lr_key: str = "lr",
        time_attr: str = "training_iteration",
        max_t: int | None = None,
        searcher: Searcher | None = None,
        predictor: Predictor | None = None,
        seed: int | None = 0,
        divergence_factor: float = 3.0,
        divergence_patience: int = 3,
        save_interval_s: float = 10.0,
        prune_checkpoints: bool = True,
    ) -> None:
        super().__init__()
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"k must be None or an int >= 1, got {k!r}")
        if max_t is not None and (
            isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < 1
        ):
            raise ConfigError(f"max_t must be None or an int >= 1, got {max_t!r}")
        if variant not in (None, "paper", "budget"):
            raise ConfigError(f"variant must be 'paper', 'budget' or None, got {variant!r}")
        if mode not in (None, "min"):
            raise ConfigError(
                f"AutoLRSScheduler minimises a loss; mode must be 'min', got {mode!r}"
            )
        if final not in ("race", "clone"):
            raise ConfigError(f"final must be 'race' or 'clone', got {final!r}")
        if not isinstance(lr_key, str) or not isinstance(time_attr, str):
            raise ConfigTypeError("lr_key and time_attr must be strings")
        if select_metric is not None and not isinstance(select_metric, str):
            raise ConfigTypeError(f"select_metric must be a string, got {select_metric!r}")
        if not (isinstance(save_interval_s, (int, float)) and save_interval_s >= 0):
            raise ConfigError(f"save_interval_s must be >= 0, got {save_interval_s!r}")
        if policy is not None:
            if not isinstance(policy, BudgetPolicy):
                raise ConfigTypeError(f"policy must be a BudgetPolicy, got {type(policy).__name__}")
            if not policy.parallel:
                raise ConfigError(
                    "policy must be planned for side-by-side candidates: "
                    "BudgetPolicy.for_budget(max_t, parallel=True, ...)"
                )
            max_t = policy.max_steps if max_t is None else max_t
        self._structure = {
            "tau": tau,
            "tau_prime": tau_prime,
            "tau_max": tau_max,
            "double": double,
            "k": k,
        }
        self._variant_arg = variant
        self._policy_arg = policy
        self._lr_bounds = lr_bounds
        self._searcher_arg = searcher
        self._predictor_arg = predictor
        self._seed = seed
        self._divergence = DivergenceRule(divergence_factor, divergence_patience)
        self._k = k
        self.exploit = bool(exploit)
        self.final = final
        self.select_metric = select_metric
        self._metric = metric
        self._mode = mode
        self.lr_key = lr_key
        self.time_attr = time_attr
        self.max_t = max_t
        self.save_interval_s = float(save_interval_s)
        self.prune_checkpoints = bool(prune_checkpoints)
        self._population: int | None = None  # num_samples, from set_search_properties
        self._state_trial: Any = None  # a trial whose storage locates the state file
        self._last_save = 0.0
        self._build_search()
        self._reset_run_state()

    # ------------------------------------------------------------------ construction
    def _resolve_variant(self) -> str:
        if self._variant_arg is not None:
            return self._variant_arg
        return "budget" if self.max_t is not None or self._policy_arg is not None else "paper"

    def _build_search(self) -> None:
        """(Re)build the stage search from the arguments, ``max_t`` and the population."""
        variant = self._resolve_variant()
        if variant == "budget" and not self.exploit:
            raise ConfigError("exploit=False belongs to variant='paper'")
        pop = self._population or _DEFAULT_POPULATION
        policy = self._policy_arg
        budget = variant == "budget" and self.max_t is not None
        if budget and policy is None:
            policy = BudgetPolicy.for_budget(self.max_t, parallel=True, k=pop, k_later=pop)
        structure = dict(self._structure)
        waiting = variant == "budget" and not budget
        if waiting:
            # Until Ray reports max_t the search runs as the paper variant (rebuilt in
            # set_search_properties); paper structure is refused at once all the same.
            if any(v is not None for v in structure.values()):
                StageSearch.for_variant(
                    "budget", max_steps=None, structure=structure, policy=None,
                    budget_name="max_t",
                )  # fmt: skip
            structure, policy = {}, None
        if not budget and structure.get("k") is None:
            structure["k"] = pop  # paper variant: one candidate per trial
        self.search = StageSearch.for_variant(
            "budget" if budget else "paper",
            max_steps=self.max_t,
            structure=structure,
            policy=policy,
            budget_name="max_t",
            lr_bounds=self._lr_bounds,
            searcher=self._searcher_arg,
            predictor=self._predictor_arg,
            seed=self._seed,
            divergence=self._divergence,
            continue_best=True,  # the winner's trial continues from its window
            parallel=True,
        )
        self.variant = variant

    def _reset_run_state(self) -> None:
        # Everything below is in state_dict().
        self.phase = "search"  # "search" | "exploit" | "final" | "race"
        self._jobs: dict[str, _Job] = {}
        self._dead: dict[str, str] = {}  # trial id -> why it left the population
        self._stopping: set[str] = set()  # running trials to stop at their next result
        self._stage_ckpt: tuple[str, dict[str, Any]] | None = None  # None: initial state
        self._stage_start = 0
        self._stage_k = 0
        self._proposed: list[float] = []  # candidates of this search, in proposal order
        self._cand_ckpts: list[list[Any]] = []  # [lr, trial id, path, metrics] per candidate
        self._wave: dict[str, Any] | None = None  # work that waits for trials to be paused
        self._started = False
        self._warm: list[Any] | None = None  # [steps, peak] of the warm-up
        self._recent: dict[int, float] = {}  # lineage losses (warm-up, exploit, final)
        self._segments: list[list[float]] = []  # [start, end, lr] of the lineage
        self.stage_trials: list[dict[str, Any]] = []  # per record: scheduler-only facts
        self.events: list[str] = []  # errors, penalties, recoveries (for reports)
        self.recoveries = 0

    # ------------------------------------------------------------------ public view
    @property
    def stage(self) -> int:
        """Index of the current stage (0-based)."""
        return self.search.stage

    @property
    def stages(self) -> list[Any]:
        """One :class:`~autolr.StageRecord` per stage so far (the current one last).

        Starts and ends are lineage iterations (iterations of the trial that carries the
        run); ``stage_trials`` holds, per record, which trial won, led or won the race.
        """
        return list(self.search.records)

    @property
    def winner_lr(self) -> float | None:
        """LR of the last stage winner (``None`` before the first search completes)."""
        return self.search.winner_lr

    @property
    def schedule(self) -> list[float]:
        """LR per iteration of the lineage (iteration 1 first), warm-up and decay included.

        Every stage contributes its winner's LR from the stage start on (the winner trained
        its candidate iterations at that LR and the run continued from its checkpoint). A
        raced stage contributes the LR of the racer followed so far.
        """
        out: list[float] = []
        for start, end, lr in self._segments:
            start, end = int(start), int(end)
            if start < len(out):  # a re-searched stage replaces what it overlaps
                del out[start:]
            sched = self._schedule(lr, 0, warmup=True)
            out.extend(lr_at(sched, i) for i in range(len(out), end))
        return out

    def export_schedule(self, steps: int | None = None, *, kind: str = "linear") -> Schedule:
        """The lineage's LR per iteration as an :class:`autolr.Schedule` (step i: iteration i+1).

        One iteration may cover several optimizer steps: pass ``steps`` (the new run's
        optimizer steps) to stretch it, or step the replayed scheduler once per iteration.

        Raises:
            StateError: If no lineage iteration was reported yet.
        """
        lrs = self.schedule
        if not lrs:
            raise StateError(
                "AutoLRSScheduler.export_schedule: no lineage iteration was reported yet; "
                "call it after Tuner.fit() (or restore() the scheduler first)"
            )
        sched = Schedule.from_lrs(lrs, source="AutoLRSScheduler")
        return sched if steps is None else sched.stretch(steps, kind=kind)

    # ------------------------------------------------------------------ Ray hooks
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self._metric and metric and metric != self._metric:
            return False
        if self._mode and mode and mode != self._mode:
            return False
        if mode not in (None, "min"):
            raise ConfigError(
                f"AutoLRSScheduler minimises a loss; mode must be 'min', got {mode!r}"
            )
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        num = spec.get("num_samples")
        if isinstance(num, int) and num > 0:
            self._population = num
        stop = spec.get("stop")
        if self.max_t is None and isinstance(stop, Mapping) and self.time_attr in stop:
            self.max_t = int(stop[self.time_attr])
        if not self._started:
            self._build_search()  # the variant, plan and k may depend on what Ray told us
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self._metric is None:
            raise ConfigError(
                "AutoLRSScheduler needs a metric: pass metric= or set TuneConfig(metric=...)"
            )
        keep = trial.run_metadata.checkpoint_manager.checkpoint_config.num_to_keep
        if keep is not None:
            raise ConfigError(
                f"CheckpointConfig(num_to_keep={keep!r}) lets Ray delete checkpoints that "
                "AutoLRSScheduler still clones into other trials; leave num_to_keep=None: the "
                "scheduler deletes the checkpoints it no longer needs itself "
                "(prune_checkpoints=True)"
            )
        if self._state_trial is None:
            self._state_trial = trial
            self._maybe_load(trial)
        tid = trial.trial_id
        if tid in self._jobs:  # restored trial: make Ray's view match the saved decisions
            if trial.status in _FINISHED:
                self._dead.setdefault(tid, "finished before restore")
            else:
                self._resync(trial)
            return
        if not self._started:
            self._start_first_stage()
        self._apply(trial, self._first_stage_job(), source=None, own=True)
        self._save(force=True)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._check_checkpointed(trial, result)
        decision = self._on_result(trial, result)
        self._prune(tune_controller)
        return decision

    def _check_checkpointed(self, trial: Any, result: Mapping[str, Any]) -> None:
        """Refuse a function trainable's result that carries no checkpoint.

        Any result may be where the scheduler pauses a trial or clones it into the others, and
        a function trainable's pause saves only what it last reported: without a checkpoint
        the trial would restart from scratch (or an older state) and the stage would compare
        LRs trained from different states. Raising at the first such result loses one
        iteration per trial, where a warning would let the whole run train on silently wrong
        states. Class trainables are exempt: Ray saves them when they pause.
        """
        if result.get(_result.SHOULD_CHECKPOINT) or result.get(_result.RESULT_DUPLICATE):
            return
        cls = trial.get_trainable_cls()  # a registry look-up: only for a bare result
        if isinstance(cls, type) and not issubclass(cls, _tune.trainable.FunctionTrainable):
            return
        raise ConfigError(
            f"trial {trial.trial_id} reported {self.time_attr}="
            f"{result.get(self.time_attr)!r} without a checkpoint; AutoLRSScheduler pauses "
            "and clones trials at any report, so every report must carry one: call "
            "ray.tune.report(metrics, checkpoint=...) every iteration, or use "
            "autolr.integrations.ray.TuneCheckpointer (ckpt.report(loss))"
        )

    def _on_result(self, trial: Any, result: Mapping[str, Any]) -> str:
        tid = trial.trial_id
        job = self._jobs.get(tid)
        if job is None:
            self._jobs[tid] = _wait(self._lr_now())
            return TrialScheduler.PAUSE
        if tid in self._stopping:
            return self._stop_now(tid)
        if job.kind == "wait":
            return TrialScheduler.PAUSE
        if self.time_attr not in result:
            raise ConfigError(f"result has no {self.time_attr!r}; set time_attr=")
        it = int(result[self.time_attr])
        loss = _as_loss(result.get(self._metric))
        if job.kind == "race":
            self._record_select(job, result)
        offset = it - job.start - 1
        if offset < 0:
            if job.warmup:
                return self._warmup_result(tid, job, it, loss)
            return TrialScheduler.CONTINUE  # a stale result from before the assignment
        job.losses[offset] = loss
        if job.kind == "candidate":
            decision = self._candidate_result(tid, job, it, offset, loss)
        elif job.kind == "race":
            decision = self._race_result(tid, job, it, offset, loss)
        else:
            decision = self._lineage_result(tid, job, it, loss)
        self._save(force=decision != TrialScheduler.CONTINUE)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A stopper's last result reaches only this hook, not on_trial_result.
        job = self._jobs.get(trial.trial_id)
        it = (result or {}).get(self.time_attr)
        loss = (result or {}).get(self._metric)
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        if job is not None and job.kind == "race":
            self._record_select(job, result or {})
        lineage = job is not None and job.kind in ("exploit", "final", "race")
        if lineage and finite and it is not None and it > job.start:
            job.losses[int(it) - job.start - 1] = float(loss)
            if job.kind != "race":
                self._remember(int(it), float(loss))
                self._extend_lineage(int(it))
            if job.kind == "exploit":
                self._lineage_completed(trial.trial_id, job, int(it))
        elif job is not None and job.kind == "candidate" and job.finished and finite and it:
            job.losses[int(it) - job.start - 1] = float(loss)  # a winner-to-be's progress
        self._leave(trial, "completed")
        self._prune(tune_controller)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._leave(trial, "errored")

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._leave(trial, "removed")

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self._advance(tune_controller)
        self._prune(tune_controller)
        # Paused trials with work first: Ray starts PENDING trials by itself anyway.
        for status in (Trial.PAUSED, Trial.PENDING):
            for trial in tune_controller.get_trials():
                job = self._jobs.get(trial.trial_id)
                ready = job is not None and not job.finished and trial.trial_id not in self._dead
                if trial.status == status and ready:
                    return trial
        return None

    def debug_string(self) -> str:
        win = self.winner_lr
        return (
            f"AutoLRSScheduler ({self.variant}): stage {self.stage}, phase {self.phase}, "
            f"tau'={self.search.tau_prime}, last winner lr "
            + ("none yet" if win is None else f"{win:.4g}")
        )

    # ------------------------------------------------------------------ the first stage
    def _start_first_stage(self) -> None:
        if self.variant == "budget" and self.max_t is None:
            raise ConfigError(
                "variant='budget' plans the run from its budget: pass max_t= or set "
                f"RunConfig(stop={{{self.time_attr!r}: T}})"
            )
        self._started = True
        s = self.search
        w = s.warmup_steps
        self._warm = [w, float(s.initial_lr)] if w > 0 else None
        plan = s.plan(w)
        self._stage_ckpt, self._stage_start = None, w
        if plan.kind == "final":
            note = getattr(s.policy, "note", "") or "no search fits in max_t"
            msg = f"{note}; training at lr={s.initial_lr:.3g} (the middle of lr_bounds)"
            self.events.append(msg)
            warnings.warn(f"AutoLRSScheduler: {msg}", RuntimeWarning, stacklevel=3)
            self.phase = "final"
            self._stage_start = 0
            self._segments.append([0, 0, float(plan.lr or s.initial_lr)])
            return
        self._open_stage(plan, w)

    def _first_stage_job(self) -> _Job:
        s = self.search
        if self.phase == "final":
            if any(j.kind == "final" for j in self._jobs.values()):
                return _wait(self._lr_now())  # one trial carries the run
            lr = float(s.plan_now.lr if s.plan_now and s.plan_now.lr else s.initial_lr)
            return _Job("final", lr, 0, None, self._schedule(lr, 0, warmup=True))
        if self.stage == 0 and self.phase in ("search", "race") and self._can_add():
            pending = [
                j.lr
                for j in self._jobs.values()
                if j.kind in ("candidate", "race") and not j.finished
            ]
            lr = s.propose(1, pending=pending)[0]
            self._proposed.append(lr)
            return self._candidate_job(lr, race=self.phase == "race", warmup=True)
        # Joins at the next stage boundary (its first result pauses it).
        return _wait(self._lr_now())

    def _can_add(self) -> bool:
        """Whether a new trial can still join the first stage's search as a candidate."""
        return self.phase == "race" or len(self._proposed) < self._stage_k

    # ------------------------------------------------------------------ stages
    def _race_applies(self, plan: StagePlan, start: int) -> bool:
        """Whether the search planned at ``start`` is the last one and ``final="race"``."""
        if self.final != "race" or self._k is not None or self.max_t is None:
            return False
        if plan.exploit is None:
            return True
        nxt = start + plan.tau_prime + (plan.exploit if self.exploit else 0)
        return nxt >= self.max_t or self.search.peek_plan(nxt).kind == "final"

    def _open_stage(self, plan: StagePlan, start: int) -> bool:
        """Begin the search ``plan`` at lineage iteration ``start``; returns whether it races."""
        s = self.search
        race = self._race_applies(plan, start)
        self._stage_start = start
        self._stage_k = plan.k
        s.begin_stage()
        s.open_record(start, note="race" if race else "")
        self.stage_trials.append({})
        self.phase = "race" if race else "search"
        self._proposed, self._cand_ckpts = [], []
        if race:
            self._segments.append([start, start, float(self._lr_now())])
        return race

    def _assign_candidates(self, live: list[Any]) -> None:
        """Every live trial gets a candidate of the current search (from the stage checkpoint)."""
        s = self.search
        race = self.phase == "race"
        n = len(live) if race else min(self._stage_k, len(live))
        lrs = s.propose(n) if n else []
        self._proposed, self._cand_ckpts = list(lrs), []
        warmup = self._stage_ckpt is None and self._warm is not None
        for i, t in enumerate(live):
            if i < n:
                job = self._candidate_job(lrs[i], race=race, warmup=warmup)
            else:
                job = _wait(lrs[0] if lrs else self._lr_now(), self._stage_start)
            self._apply(t, job, source=self._stage_ckpt, own=False)

    def _candidate_job(self, lr: float, *, race: bool, warmup: bool = False) -> _Job:
        n = self._candidate_len()
        start = self._stage_start
        if race:
            sched = self._schedule(lr, start, warmup=warmup)
            return _Job("race", lr, start, None, sched, warmup=warmup)
        plan = self.search.plan_now
        cool = plan.cooldown if plan is not None and plan.kind == "search" else 0
        window = [start, n, cool] if cool > 0 else None
        sched = self._schedule(lr, start, warmup=warmup, window=window)
        return _Job("candidate", lr, start, n, sched, warmup=warmup)

    def _schedule(
        self, lr: float, start: int, *, warmup: bool = False, window: list[int] | None = None
    ) -> dict[str, Any]:
        """The plain LR schedule of a job whose LR is ``lr`` from iteration ``start`` on."""
        sched: dict[str, Any] = {"points": [[int(start), float(lr)]]}
        if warmup and self._warm is not None:
            sched["warmup"] = list(self._warm)
        if window is not None:
            sched["window"] = [int(v) for v in window]
        pol = self.search.policy
        if isinstance(pol, BudgetPolicy) and pol.decay > 0:
            sched["decay"] = [pol.max_steps, pol.decay, pol.decay_shape]
        return sched

    def _candidate_len(self) -> int:
        n = self.search.tau_prime
        if self.max_t is not None:
            n = min(n, max(1, self.max_t - self._stage_start))
        return n

    def _exploit_len(self, step: int, kept: int) -> int | None:
        """Iterations the winner trains from ``step`` before the next stage (None: to the end)."""
        return self.search.exploit_length(step, kept) if self.exploit else 0

    def _lr_now(self) -> float:
        return float(self.search.lr)

    # ------------------------------------------------------------------ results
    def _warmup_result(self, tid: str, job: _Job, it: int, loss: float) -> str:
        """A result of the warm-up that precedes the first stage's candidates."""
        self._remember(it, loss)
        if math.isfinite(loss) or job.finished:
            return TrialScheduler.CONTINUE
        job.penalised, job.reason = True, f"non-finite {self._metric} in the warm-up"
        self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
        if job.kind == "race":
            return self._race_diverged(tid, job)
        self._finish_candidate(job)
        self._maybe_decide()
        return TrialScheduler.PAUSE

    def _diverged(self, job: _Job, loss: float) -> bool:
        """Apply the shared :class:`~autolr.DivergenceRule` to a candidate's loss.

        The reference is the stage-start loss level (the first loss when none is known);
        a diverged job is marked penalised with the rule's reason.
        """
        if job.ref is None:
            job.ref = self._reference(job.start)
            if job.ref is None:
                job.ref = loss if math.isfinite(loss) else None
        rule = self.search.divergence
        job.over, diverged = rule.update(job.over, loss, job.ref)
        if diverged:
            job.penalised, job.reason = True, rule.reason(loss, job.ref)
        return diverged

    def _candidate_result(self, tid: str, job: _Job, it: int, offset: int, loss: float) -> str:
        if job.finished:  # scored: trains on as the winner would, or waits
            if not math.isfinite(loss) and offset >= (job.length or 0):
                job.spec_end = None  # its continuation diverged: it pauses
            return self._verdict(tid, it)
        if offset >= (job.length or 0):
            return TrialScheduler.PAUSE  # a late result past the window (restored trial)
        if self._diverged(job, loss):
            self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
            self._finish_candidate(job)
        elif offset + 1 >= job.length:
            self._finish_candidate(job)
        else:
            return TrialScheduler.CONTINUE
        self._maybe_decide()
        return self._verdict(tid, it)

    def _finish_candidate(self, job: _Job) -> None:
        """Score a candidate; a healthy one keeps training as the winner would meanwhile."""
        job.finished = True
        self._score(job)
        cool = job.schedule.get("window", [0, 0, 0])[2]
        more = len(self._proposed) < self._stage_k  # its trial is needed for another one
        if job.penalised or cool > 0 or more:
            return
        # Until the next stage (its trial pauses there if the decision is that late).
        extra = self._exploit_len(job.start + job.length, job.length)
        if extra is None:
            job.spec_end = self.max_t if self.max_t is not None else 1 << 62
        elif extra > 0:
            job.spec_end = job.start + job.length + extra

    def _score(self, job: _Job) -> None:
        """Hand a candidate's window (a racer's first τ' losses) to the stage search."""
        n = self._candidate_len()
        steps = [o for o in sorted(job.losses) if o < n]
        res = self.search.score(
            job.lr,
            [job.losses[o] for o in steps],
            steps=[float(o) for o in steps],
            penalised=job.penalised,
            reason=job.reason,
            trained_steps=len(steps),
        )
        job.forecast = res.forecast
        job.scored = True
        job.penalised = job.penalised or (res.penalised and job.kind != "race")

    def _verdict(self, tid: str, it: int) -> str:
        """What a running trial does next, given its (possibly just changed) job."""
        if tid in self._stopping:
            return self._stop_now(tid)
        job = self._jobs[tid]
        if job.kind == "wait":
            return TrialScheduler.PAUSE
        if job.kind == "candidate":
            if not job.finished:
                return TrialScheduler.CONTINUE
            if job.spec_end is not None and it < job.spec_end:
                return TrialScheduler.CONTINUE
            job.spec_end = None  # it stops here (and is no longer running)
            return TrialScheduler.PAUSE
        if job.kind in ("exploit", "final") and job.end is not None and it >= job.end:
            return self._stage_end(tid, job, it)
        return TrialScheduler.CONTINUE

    def _lineage_result(self, tid: str, job: _Job, it: int, loss: float) -> str:
        """A result of the trial that carries the run (exploitation or final phase)."""
        if not math.isfinite(loss):
            return self._recover(tid, job, it)
        self._remember(it, loss)
        self._extend_lineage(it)
        return self._verdict(tid, it)

    def _reference(self, start: int) -> float | None:
        """The stage-start loss level (StageSearch.reference_loss of the lineage so far)."""
        recent = [self._recent[i] for i in sorted(self._recent) if i <= start]
        return self.search.reference_loss(recent)

    # ------------------------------------------------------------------ decisions
    def _search_done(self) -> bool:
        """Whether every candidate of the current search is scored (or dropped)."""
        if self.phase != "search" or self._wave is not None:
            return False
        if self.stage == 0 and self._population and len(self._jobs) < self._population:
            return False  # the first stage waits for the whole population to join
        active = [j for tid, j in self._jobs.items() if tid not in self._dead]
        if any(j.kind == "candidate" and not j.finished for j in active):
            return False
        # More candidates than trials: the next round is assigned once trials are paused.
        return len(self._proposed) >= self._stage_k or not active

    def _maybe_decide(self) -> None:
        if self._search_done():
            self._decide()

    def _decide(self) -> None:
        """Every candidate is scored (or dropped): the stage search picks the winner."""
        s = self.search
        win = s.winner()
        if win is None:
            if not s.results:  # every candidate's trial errored: search again, same box
                self.events.append(f"stage {s.stage}: no candidate finished; searching again")
                self._set_wave("search")
                return
            action, value, msg = s.resolve_failure()
            self.events.append(msg)
            warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=3)
            warm_failed = any("warm-up" in r.reason for r in s.results)
            if self._stage_ckpt is None and self._warm is not None and warm_failed:
                self._warm[1] /= 10.0  # as AutoLRS restarts a diverged warm-up
            if action == "retry":
                self._set_wave("search")
                return
            win = CandidateResult(value, math.inf, 0.0, True, "fallback: lowest LR", 0)
        s.choose(win)
        start = self._stage_start
        owner, job, status = self._owner(win) if math.isfinite(win.forecast) else (None, None, "")
        held = status in ("alive", "completed", "gone")  # its trial still has the state
        self.stage_trials[-1]["winner_trial"] = owner or ""
        for tid, j in list(self._jobs.items()):  # the other candidates wait for the next stage
            if j.kind == "candidate" and j is not job and tid not in self._dead:
                self._jobs[tid] = _wait(j.lr, start)
        cool = job.schedule.get("window", [0, 0, 0])[2] if job is not None else 0
        kept = job.length - cool if job is not None else 0
        step = start + kept
        extra = self._exploit_len(step, kept)
        length = None if extra is None else kept + extra
        self._segments.append([start, step, float(win.lr)])
        self.phase = "exploit"
        lineage = _Job(
            "exploit",
            float(win.lr),
            start,
            length,
            self._schedule(win.lr, start, warmup=self._stage_ckpt is None),
        )
        if job is not None:
            lineage.losses = {o: v for o, v in job.losses.items() if o < kept}
        if held and job is not None and cool == 0:
            # The winner's trial trained on as the winner would (or stopped at its window):
            # its iterations beyond the window are the exploitation.
            lineage.losses = dict(job.losses)
            lineage.own, lineage.source = True, job.source
            self._jobs[owner] = lineage
            if not self._replay(owner, lineage, kept):
                return  # its continuation diverged: the stage is searched again
            if status == "alive" and job.spec_end is not None:
                return  # still running: it continues where it is, without a restart
            last = start + max(lineage.losses) + 1 if lineage.losses else step
            if status == "completed":
                self._lineage_completed(owner, lineage, last)  # it ran to the end already
            elif length is not None and last >= start + length:
                self._stage_end(owner, lineage, last)  # it already stands at the next stage
            else:
                self._set_wave(
                    "lineage",
                    trial=owner,
                    job=lineage.to_state(),
                    mode="own",
                    source=None,
                    iteration=step,
                )
            return
        if held:
            mode, source = "cooldown", None  # from its checkpoint before the cooldown
        elif job is not None:
            mode, source = "source", job.source  # harvested: its trial took another candidate
        else:
            mode, source = "source", self._stage_source()
        self._set_wave(
            "lineage", trial=owner, job=lineage.to_state(), mode=mode, source=source, iteration=step
        )

    def _owner(self, win: CandidateResult) -> tuple[str | None, _Job | None, str]:
        """The trial that ran the winning candidate, its job, and where that trial is.

        The status is ``"alive"``, ``"completed"`` (it ran to the end of the run), ``"gone"``
        (it failed after its window: its last checkpoint still holds the state),
        ``"harvested"`` (it took another candidate since; its window's checkpoint was
        recorded) or ``""`` (nothing left of it).
        """
        for tid, j in self._jobs.items():
            if j.kind == "candidate" and j.lr == win.lr and j.start == self._stage_start:
                why = self._dead.get(tid)
                status = "alive" if why is None else "completed" if why == "completed" else "gone"
                return tid, j, status
        for lr, tid, path, metrics in self._cand_ckpts:
            if lr == win.lr and path:
                job = _Job("candidate", lr, self._stage_start, self._candidate_len())
                job.source = [path, dict(metrics)]
                return tid, job, "harvested"
        return None, None, ""

    def _replay(self, tid: str, job: _Job, kept: int) -> bool:
        """The winner's iterations beyond its window are its exploitation: record them.

        Returns False when one of them was not finite (the stage is searched again).
        """
        for offset in sorted(o for o in job.losses if o >= kept):
            it = job.start + offset + 1
            loss = job.losses[offset]
            if not math.isfinite(loss):
                self._recover(tid, job, it)
                return False
            self._remember(it, loss)
            self._extend_lineage(it)
        return True

    def _stage_end(self, tid: str, job: _Job, it: int) -> str:
        """The lineage reached the end of the stage: plan the next one."""
        s = self.search
        s.update_record(end=int(it))
        self.stage_trials[-1]["leader"] = tid
        self._extend_lineage(it)
        s.end_stage()
        plan = s.plan(int(it))
        if plan.kind == "final":
            # No search fits: the winner trains to the end; its schedule already says how.
            self.phase = "final"
            job.kind, job.length, job.finished = "final", None, False
            self._jobs[tid] = job
            return TrialScheduler.CONTINUE
        self._jobs[tid] = _wait(job.lr, int(it))
        self._set_wave("stage", trial=tid, plan=asdict(plan), start=int(it))
        return TrialScheduler.PAUSE

    def _lineage_completed(self, tid: str, job: _Job, it: int) -> None:
        """The trial carrying the run ended (the stopper at ``max_t``, or its own loop)."""
        if job.end is None or it < job.end:
            return  # the last stage: its record stays open, as AutoLRS leaves it
        if self.max_t is not None and it >= self.max_t:
            self._stage_end(tid, job, it)  # the budget ends the stage (the next plan: final)
        else:
            self.search.update_record(end=int(it))

    def _recover(self, tid: str, job: _Job, it: int) -> str:
        """A non-finite loss while exploiting: search the stage again below that LR."""
        s = self.search
        bad = lr_at(job.schedule, it - 1) if job.schedule else job.lr
        bad = bad if bad > 0 else job.lr
        lo, hi = s.recover(bad)
        self.recoveries += 1
        msg = (
            f"stage {s.stage}: non-finite {self._metric} at iteration {it} with lr={bad:.3g}; "
            f"searching again from iteration {self._stage_start} in [{lo:.3g}, {hi:.3g}]"
        )
        self.events.append(msg)
        warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=3)
        self._jobs[tid] = _wait(job.lr, self._stage_start)
        self._truncate_lineage(self._stage_start)
        if job.kind == "final" and self.max_t is not None:
            # No budget for a search: continue at the safer upper bound.
            s.winner_lr = hi
            lineage = _Job(
                "final",
                float(hi),
                self._stage_start,
                None,
                self._schedule(hi, self._stage_start, warmup=self._stage_ckpt is None),
            )
            self._segments.append([self._stage_start, self._stage_start, float(hi)])
            self._set_wave(
                "lineage",
                trial=None,
                job=lineage.to_state(),
                mode="source",
                source=self._stage_source(),
            )
            return TrialScheduler.PAUSE
        self.phase = "search"
        self._set_wave("search")
        return TrialScheduler.PAUSE

    # ------------------------------------------------------------------ final race
    def _race_result(self, tid: str, job: _Job, it: int, offset: int, loss: float) -> str:
        if job.finished:
            return TrialScheduler.PAUSE
        n = self._candidate_len()
        if offset < n and not job.scored:
            self._diverged(job, loss)
        elif not math.isfinite(loss):
            job.penalised, job.reason = True, f"non-finite {self._metric} at iteration {it}"
        if job.penalised:
            self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
            return self._race_diverged(tid, job)
        if not job.scored and offset + 1 >= n:
            self._score(job)
        self._race_pick()
        return TrialScheduler.CONTINUE

    def _race_diverged(self, tid: str, job: _Job) -> str:
        if not job.scored:
            self._score(job)
        job.finished = True
        self._race_pick()
        if self._race_healthy():
            # Others still race (or finished): this run is over.
            self._dead[tid] = "stopped: diverged in the final race"
            self._save(force=True)
            return TrialScheduler.STOP
        self._save(force=True)
        return TrialScheduler.PAUSE  # every racer diverged: _advance searches again lower

    def _record_select(self, job: _Job, result: Mapping[str, Any]) -> None:
        if self.select_metric is None:
            return
        value = _as_loss(result.get(self.select_metric))
        if math.isfinite(value):
            job.select = value

    def _race_healthy(self) -> list[str]:
        return [
            tid
            for tid, j in self._jobs.items()
            if j.kind == "race"
            and not j.penalised
            and self._dead.get(tid, "completed") == "completed"
        ]

    def _race_pick(self) -> None:
        """Follow the best racer (see :func:`~autolr._autolrs._race.pick_racer`)."""
        views = []
        for tid in self._race_healthy():
            job = self._jobs[tid]
            losses = [job.losses[o] for o in sorted(job.losses)]
            view = RacerView.from_losses(tid, losses, self._candidate_len(), job.select)
            if view is not None:
                views.append(view)
        best = pick_racer(views, by_select=self.select_metric is not None)
        if best is None:
            return
        job = self._jobs[best.key]
        info = self.stage_trials[-1]
        info.update(winner_trial=best.key, final_loss=float(best.level))
        if self.select_metric is not None and best.select is not None:
            info["select_value"] = float(best.select)
        end = self._stage_start + len(job.losses)
        self._segments[-1] = [self._stage_start, end, float(job.lr)]
        s = self.search
        res = next((r for r in s.results if r.lr == job.lr and not r.penalised), None)
        if res is not None:
            s.choose(res)
        s.update_record(end=end)

    def _race_failed(self) -> None:
        """Every racer diverged: search the stage again below them (or fall back)."""
        s = self.search
        action, value, msg = s.resolve_failure("racer")
        self.events.append(msg)
        warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=3)
        if action == "retry":
            self._set_wave("search")
            return
        s.choose(CandidateResult(value, math.inf, 0.0, True, "fallback: lowest LR", 0))
        self.phase = "final"
        start = self._stage_start
        self._truncate_lineage(start)
        self._segments.append([start, start, float(value)])
        lineage = _Job(
            "final",
            float(value),
            start,
            None,
            self._schedule(value, start, warmup=self._stage_ckpt is None),
        )
        self._set_wave(
            "lineage",
            trial=None,
            job=lineage.to_state(),
            mode="source",
            source=self._stage_source(),
        )

    # ------------------------------------------------------------------ lineage bookkeeping
    def _remember(self, it: int, loss: float) -> None:
        if math.isfinite(loss):
            self._recent[int(it)] = float(loss)
            if len(self._recent) > 512:
                for key in sorted(self._recent)[:256]:
                    del self._recent[key]

    def _truncate_lineage(self, start: int) -> None:
        """Forget the lineage after ``start`` (a stage searched again from its checkpoint)."""
        for key in [k for k in self._recent if k > start]:
            del self._recent[key]
        while self._segments and self._segments[-1][0] >= start:
            self._segments.pop()

    def _extend_lineage(self, it: int) -> None:
        if self._segments:
            self._segments[-1][1] = max(self._segments[-1][1], it)

    # ------------------------------------------------------------------ trial bookkeeping
    def _leave(self, trial: Any, why: str) -> None:
        tid = trial.trial_id
        if tid in self._dead:
            return
        self._dead[tid] = why
        self._stopping.discard(tid)
        job = self._jobs.get(tid)
        if why != "completed":
            self.events.append(f"stage {self.stage}: trial {tid} {why} during {self.phase}")
        if job is None:
            self._save(force=True)
            return
        if job.kind == "candidate" and not job.finished:
            # An errored trial says nothing about its LR: the candidate is dropped, not
            # penalised. A trial that simply ran out of iterations is scored on what it saw.
            job.finished = job.harvested = True
            if why == "completed" and len(job.losses) >= 2:
                self._score(job)
            self._maybe_decide()
        elif job.kind in ("exploit", "final") and why != "completed":
            # The trial carrying the run failed: another trial continues from its checkpoint.
            ck = compat.trial_checkpoint(trial)
            src = list(ck) if ck else self._stage_source()
            self._jobs[tid] = _wait(job.lr, job.start)
            self._set_wave("lineage", trial=None, job=job.to_state(), mode="source", source=src)
        elif job.kind == "race":
            job.finished = True
            if why == "completed" and not job.scored and not job.penalised and len(job.losses) >= 2:
                self._score(job)
            self._race_pick()
        self._save(force=True)

    def _live(self, tc: Any) -> list[Any]:
        return [
            t
            for t in tc.get_trials()
            if t.trial_id in self._jobs
            and t.trial_id not in self._dead
            and t.status not in _FINISHED
        ]

    def _parked(self, trial: Any) -> bool:
        return trial.status == Trial.PAUSED and not trial.is_saving

    def _stop_now(self, tid: str) -> str:
        self._stopping.discard(tid)
        self._dead[tid] = "stopped: not needed"
        return TrialScheduler.STOP

    def _stage_source(self) -> list[Any] | None:
        return None if self._stage_ckpt is None else list(self._stage_ckpt)

    def _set_wave(self, kind: str, **info: Any) -> None:
        self._wave = {"kind": kind, **info}

    # ------------------------------------------------------------------ checkpoint retention
    def _needed(self, tc: Any) -> tuple[set[str], set[tuple[str, int]]]:
        """Checkpoints a later decision can still restore from: paths, and (trial, iteration).

        Every trial's latest (what Ray resumes it from), the stage checkpoint (a stage can be
        searched again from it until the next one opens), the recorded candidate windows, the
        checkpoints jobs and the pending wave resume from, and the cooldown-start checkpoint
        of each candidate whose window cools down (its winner continues from there).
        """
        paths: set[str] = set()
        at: set[tuple[str, int]] = set()
        if self._stage_ckpt is not None:
            paths.add(str(self._stage_ckpt[0]))
        paths.update(str(c[2]) for c in self._cand_ckpts if c[2])
        for tid, job in self._jobs.items():
            if job.source is not None:
                paths.add(str(job.source[0]))
            cool = job.schedule.get("window", [0, 0, 0])[2] if job.kind == "candidate" else 0
            if cool > 0 and job.length:
                at.add((tid, job.start + job.length - int(cool)))
        wave = self._wave or {}
        for src in (wave.get("source"), (wave.get("job") or {}).get("source")):
            if src:
                paths.add(str(src[0]))
        if wave.get("mode") == "cooldown" and wave.get("trial"):
            at.add((str(wave["trial"]), int(wave["iteration"])))
        for t in tc.get_trials():
            ck = compat.trial_checkpoint(t)
            if ck is not None:
                paths.add(ck[0])
        return paths, at

    def _prune(self, tc: Any) -> None:
        """Delete the checkpoints no decision can restore from any more (see :meth:`_needed`)."""
        if not self.prune_checkpoints or tc is None:
            return
        paths, at = self._needed(tc)
        for t in tc.get_trials():
            if not t.is_saving:  # a save in flight registers its checkpoint later
                iters = {i for tid, i in at if tid == t.trial_id}
                compat.prune_checkpoints(t, paths, iters, self.time_attr)

    # ------------------------------------------------------------------ transitions
    def _advance(self, tc: Any) -> None:
        """Carry out the decisions that become possible once trials are paused."""
        live = self._live(tc)
        if not live:
            return
        if self.phase == "search" and self._wave is None:
            self._harvest(live)
            self._maybe_decide()
        if self.phase == "race" and self._wave is None:
            racers = [t for t in live if self._jobs[t.trial_id].kind == "race"]
            done = all(self._jobs[t.trial_id].finished and self._parked(t) for t in racers)
            if racers and done and not self._race_healthy():
                self._race_failed()
        if self._wave is not None:
            self._run_wave(tc, self._live(tc))
        elif self._started and not any(
            self._jobs[t.trial_id].kind != "wait" for t in self._live(tc)
        ):
            # Nothing left to run: the trials that only waited are not needed any more.
            self._stop_idle(tc)

    def _harvest(self, live: list[Any]) -> None:
        """Record the checkpoints of paused finished candidates; give them the next ones."""
        changed = False
        for t in live:
            job = self._jobs[t.trial_id]
            if job.kind == "candidate" and job.finished and not job.harvested and self._parked(t):
                job.harvested = True
                ck = self._window_checkpoint(t, job)
                self._cand_ckpts.append(
                    [job.lr, t.trial_id, ck[0] if ck else "", ck[1] if ck else {}]
                )
                changed = True
        if len(self._proposed) < self._stage_k:
            for t in live:  # more candidates than trials: the paused ones take the next
                job = self._jobs[t.trial_id]
                idle = job.kind == "wait" or (job.kind == "candidate" and job.harvested)
                ready = idle and (self._parked(t) or t.status == Trial.PENDING)
                if ready and len(self._proposed) < self._stage_k:
                    self._assign_next_candidate(t)
                    changed = True
        if changed:
            self._save(force=True)

    def _window_checkpoint(self, trial: Any, job: _Job) -> tuple[str, dict[str, Any]] | None:
        """The checkpoint a finished candidate's winner continues from."""
        cool = job.schedule.get("window", [0, 0, 0])[2]
        if cool > 0:
            return compat.checkpoint_at(trial, self.time_attr, job.start + job.length - cool)
        return compat.trial_checkpoint(trial)

    def _assign_next_candidate(self, trial: Any) -> None:
        pending = [j.lr for j in self._jobs.values() if j.kind == "candidate" and not j.finished]
        lr = self.search.propose(1, pending=pending)[0]
        self._proposed.append(lr)
        warmup = self._stage_ckpt is None and self._warm is not None
        job = self._candidate_job(lr, race=False, warmup=warmup)
        self._apply(trial, job, source=self._stage_ckpt, own=False)

    def _stop_idle(self, tc: Any) -> None:
        """Stop the trials that only wait: the run has no further stage for them."""
        for t in self._live(tc):
            if t.status in (Trial.PAUSED, Trial.PENDING) and not t.is_saving:
                self._dead[t.trial_id] = "stopped: not needed"
                tc.stop_trial(t)
            else:
                self._stopping.add(t.trial_id)

    def _run_wave(self, tc: Any, live: list[Any]) -> None:
        """Carry out a decision that needs paused trials (restarts from a checkpoint)."""
        wave = self._wave
        assert wave is not None
        kind = wave["kind"]
        if kind == "lineage":
            self._run_lineage_wave(tc, wave, live)
            return
        # "stage" and "search" restart every live trial: wait until all are paused.
        if not all(self._parked(t) or t.status == Trial.PENDING for t in live):
            return
        self._wave = None
        if kind == "stage":
            leader = _find(tc, wave.get("trial"))
            ck = compat.trial_checkpoint(leader) if leader is not None else None
            start = int(ck[1].get(self.time_attr, wave["start"])) if ck else int(wave["start"])
            self._stage_ckpt = ck
            self._open_stage(StagePlan(**wave["plan"]), start)
        else:  # search the current stage again from its checkpoint
            self.search.begin_stage()
            self._truncate_lineage(self._stage_start)
            if self.phase == "race":
                self._segments.append([self._stage_start, self._stage_start, self._lr_now()])
            else:
                self.phase = "search"
        self._assign_candidates(live)
        self._maybe_decide()
        self._save(force=True)

    def _run_lineage_wave(self, tc: Any, wave: Mapping[str, Any], live: list[Any]) -> None:
        """One trial takes over the run (the winner's own trial when it can)."""
        named = wave.get("trial")
        target = next((t for t in live if t.trial_id == named), None)
        if target is None:  # the winner's trial is gone: any waiting trial takes over
            target = next((t for t in live if self._jobs[t.trial_id].kind == "wait"), None)
        if target is None or not (self._parked(target) or target.status == Trial.PENDING):
            return
        job = _Job.from_state(wave["job"])
        mode, own = wave.get("mode", "source"), False
        src = wave.get("source")
        source = None if src is None else (str(src[0]), dict(src[1]))
        if mode in ("own", "cooldown"):
            owner = _find(tc, named)
            ck = None
            if mode == "own" and target is owner:
                own = True
            elif owner is not None and mode == "own":
                ck = compat.trial_checkpoint(owner)
            elif owner is not None:
                ck = compat.checkpoint_at(owner, self.time_attr, int(wave["iteration"]))
            if not own:
                if ck is None:  # that checkpoint is gone: the stage trains from its start
                    ck, job.losses = self._stage_ckpt, {}
                source = ck
        self._wave = None
        self._apply(target, job, source=source, own=own)
        self._save(force=True)

    def _apply(
        self,
        trial: Any,
        job: _Job,
        *,
        source: tuple[str, dict[str, Any]] | None,
        own: bool,
    ) -> None:
        """Give ``trial`` a job: set its LR schedule, and unless ``own``, its checkpoint."""
        job.own = own
        job.source = None if source is None else [source[0], dict(source[1])]
        self._jobs[trial.trial_id] = job
        trial.set_config(self._config_for(trial.config, job))
        if not own:
            compat.set_trial_checkpoint(trial, source)
        if trial.status == Trial.PAUSED:
            # Ray's loggers resume a trial that restarts from a checkpoint with the log
            # files in storage, which its periodic upload may not have written yet: a
            # "Remote file not found" warning, or lines lost to an older copy.
            compat.upload_trial_logs(trial)

    def _config_for(self, config: Mapping[str, Any], job: _Job) -> dict[str, Any]:
        out = dict(config)
        out[self.lr_key] = float(job.lr)
        if job.schedule:
            out[SCHEDULE_KEY] = job.schedule
        return out

    def _resync(self, trial: Any) -> None:
        """After ``Tuner.restore``: re-apply the saved job to a trial Ray restored.

        Ray's experiment snapshot may predate the last decision, so the trial can come back
        with an older LR or checkpoint; a checkpoint newer than the job's start is progress
        within the job and is kept.
        """
        job = self._jobs[trial.trial_id]
        trial.set_config(self._config_for(trial.config, job))
        ck = compat.trial_checkpoint(trial)
        it = int(ck[1].get(self.time_attr, 0)) if ck else 0
        if ck is not None and not compat.checkpoint_exists(trial, ck[0]):
            # Pruned after Ray's snapshot was taken: the job restarts from where it began.
            if job.finished:
                return
            job.losses, job.own = {}, False
        elif job.own or job.finished or it > job.start:
            return
        src = None if job.source is None else (job.source[0], job.source[1])
        compat.set_trial_checkpoint(trial, src)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (survives ``torch.load(weights_only=True)``), records included."""
        return {
            "version": 2,
            "variant": self.variant,
            "max_t": self.max_t,
            "population": self._population,
            "search": self.search.state_dict(),
            "phase": self.phase,
            "jobs": {tid: j.to_state() for tid, j in self._jobs.items()},
            "dead": dict(self._dead),
            "stopping": sorted(self._stopping),
            "stage_ckpt": None if self._stage_ckpt is None else list(self._stage_ckpt),
            "stage_start": self._stage_start,
            "stage_k": self._stage_k,
            "proposed": list(self._proposed),
            "cand_ckpts": [list(c) for c in self._cand_ckpts],
            "wave": None if self._wave is None else dict(self._wave),
            "started": self._started,
            "warm": None if self._warm is None else list(self._warm),
            "recent": [[int(k), float(v)] for k, v in sorted(self._recent.items())],
            "segments": [list(s) for s in self._segments],
            "stage_trials": [dict(s) for s in self.stage_trials],
            "events": list(self.events),
            "recoveries": self.recoveries,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            StateError: If ``state`` is not an AutoLRSScheduler state of this version.
        """
        if not isinstance(state, Mapping) or state.get("version") != 2:
            raise StateError("not an AutoLRSScheduler state_dict (missing or unknown 'version')")
        try:
            if state.get("max_t") is not None and self.max_t is None:
                self.max_t = int(state["max_t"])
            if state.get("population") is not None:
                self._population = int(state["population"])
            self._build_search()  # the plan depends on max_t and the population
            if state["variant"] != self.variant:
                raise StateError(
                    f"state is from a variant={state['variant']!r} scheduler, this one is "
                    f"{self.variant!r}"
                )
            self.search.load_state_dict(state["search"])
            self.phase = str(state["phase"])
            self._jobs = {str(t): _Job.from_state(j) for t, j in state["jobs"].items()}
            self._dead = {str(t): str(w) for t, w in state["dead"].items()}
            self._stopping = {str(t) for t in state["stopping"]}
            sc = state["stage_ckpt"]
            self._stage_ckpt = None if sc is None else (str(sc[0]), dict(sc[1]))
            self._stage_start = int(state["stage_start"])
            self._stage_k = int(state["stage_k"])
            self._proposed = [float(v) for v in state["proposed"]]
            self._cand_ckpts = [list(c) for c in state["cand_ckpts"]]
            self._wave = None if state["wave"] is None else dict(state["wave"])
            self._started = bool(state["started"])
            self._warm = None if state["warm"] is None else list(state["warm"])
            self._recent = {int(k): float(v) for k, v in state["recent"]}
            self._segments = [list(s) for s in state["segments"]]
            self.stage_trials = [dict(s) for s in state["stage_trials"]]
            self.events = [str(e) for e in state["events"]]
            self.recoveries = int(state["recoveries"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"not an AutoLRSScheduler state_dict: {exc}") from exc
        if self.phase not in _PHASES:
            raise StateError(f"unknown phase {self.phase!r} in AutoLRSScheduler state_dict")

    def _save(self, force: bool = False) -> None:
        if self._state_trial is None or getattr(self._state_trial, "storage", None) is None:
            return
        now = time.monotonic()
        if not force and now - self._last_save < self.save_interval_s:
            return
        self._last_save = now
        try:
            compat.write_state_file(self._state_trial, STATE_FILE, self.state_dict())
        except OSError as exc:  # never stop an experiment over a side file
            warnings.warn(
                f"AutoLRSScheduler: could not save state: {exc}", RuntimeWarning, stacklevel=2
            )

    def _maybe_load(self, trial: Any) -> None:
        if getattr(trial, "storage", None) is None:
            return
        state = compat.read_state_file(trial, STATE_FILE)
        if state is not None and trial.trial_id in state.get("jobs", {}):
            self.load_state_dict(state)

    def save(self, checkpoint_path: str) -> None:
        """Write the state to ``checkpoint_path`` (the format of :data:`STATE_FILE`)."""
        torch.save(self.state_dict(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by :meth:`save`, or an experiment's :data:`STATE_FILE`.

        After ``Tuner.restore(...).fit()`` the run's scheduler is Ray's own copy; a scheduler
        built with the same arguments and restored from ``f"{experiment}/{STATE_FILE}"``
        shows the whole run's ``stages``, ``schedule`` and ``stage_trials``.
        """
        self.load_state_dict(torch.load(checkpoint_path, weights_only=True))


def _find(tc: Any, tid: str | None) -> Any:
    return next((t for t in tc.get_trials() if t.trial_id == tid), None) if tid else None


def _as_loss(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------- trainable helper
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
    :meth:`report` sends the loss (and the LR it trained with, as ``"lr"``), any extra metrics
    and a checkpoint to Ray with ``ray.tune.report``, then sets the LR of the next iteration
    from the schedule. Outside a Tune session it only applies the LR.

    Args:
        model: The model being trained.
        optimizer: Its optimizer.
        config: The trial's config (the trainable's argument).
        lr_key: Config key of the LR.
        metric: Name under which :meth:`report` sends the loss.
        extras: Further stateful objects (``GradScaler``, LR-free schedulers...) by name.
        rng: Save and restore the torch/numpy/python RNG states, so every candidate of a stage
            sees the same batches (as the in-loop AutoLRS does).

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
        if not isinstance(model, torch.nn.Module):
            raise ConfigTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigTypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if lr_key not in config:
            raise ConfigError(f"config has no {lr_key!r} entry (the LR the scheduler sets)")
        lr = float(config[lr_key])
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"config[{lr_key!r}] must be a positive finite LR, got {lr!r}")
        schedule = config.get(SCHEDULE_KEY)
        if schedule is not None and not (isinstance(schedule, Mapping) and schedule.get("points")):
            raise ConfigError(f"config[{SCHEDULE_KEY!r}] is not an AutoLRSScheduler schedule")
        self.model = model
        self.optimizer = optimizer
        self.metric = metric
        self.extras = dict(extras or {})
        self.rng = bool(rng)
        self._config = dict(config)
        self._lr_key = lr_key
        self._group_lrs = GroupLRs(optimizer)
        self.iteration = 0
        self._restore()
        self._set_lr(scheduled_lr(self._config, self.iteration, lr_key=lr_key))

    def _set_lr(self, lr: float) -> None:
        self.lr = float(lr)
        self._group_lrs.set(self.lr)

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _restore(self) -> None:
        with warnings.catch_warnings():
            # Outside a Tune session Ray warns and returns None: that is the doctest case.
            warnings.filterwarnings("ignore", message=".*get_checkpoint.*", category=UserWarning)
            checkpoint = _tune.get_checkpoint()
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            state = torch.load(
                os.path.join(folder, "autolr_trial.pt"),
                map_location=self._device(),
                weights_only=True,
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, obj in self.extras.items():
            obj.load_state_dict(state["extras"][name])
        if self.rng and state.get("rng") is not None:
            restore_rng_state(state["rng"])
        self.iteration = int(state["iteration"])

    def report(self, loss: float | torch.Tensor, **metrics: Any) -> None:
        """Report this iteration's loss (plus ``metrics``) with a checkpoint; iteration += 1.

        Then sets the LR of the next iteration from the config's schedule.
        """
        value = float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else loss
        used = self.lr
        self.iteration += 1
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "extras": {n: o.state_dict() for n, o in self.extras.items()},
            "rng": capture_rng_state() if self.rng else None,
            "iteration": self.iteration,
        }
        self._set_lr(scheduled_lr(self._config, self.iteration, lr_key=self._lr_key))
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, os.path.join(folder, "autolr_trial.pt"))
            # Ray logs one INFO line per persisted checkpoint, i.e. per iteration here; only
            # during this call, so the user's own reports keep it.
            _RAY_STORAGE_LOG.addFilter(_DROP_CHECKPOINT_NOTE)
            try:
                _tune.report(
                    {self.metric: float(value), "lr": used, **metrics},
                    checkpoint=_tune.Checkpoint.from_directory(folder),
                )
            finally:
                _RAY_STORAGE_LOG.removeFilter(_DROP_CHECKPOINT_NOTE)
