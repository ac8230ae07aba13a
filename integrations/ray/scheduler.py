"""``AutoLRSScheduler``: the AutoLRS stage search carried out with a Ray Tune population.

The class is assembled from mixins, one module each: stages and decisions (``_stages``), the
final race (``_race``) and trial bookkeeping with checkpoint retention (``_trials``). This
module holds its arguments, Ray's hooks, the public view and the persistence.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch

from autolr import BudgetPolicy, DivergenceRule, Schedule, StageSearch
from autolr._errors import ConfigError, StateError
from autolr._validate import check_bounds, check_choice, check_float, check_instance, check_int
from autolr.predictors import Predictor
from autolr.searchers import Searcher

from .. import require
from . import _compat as compat
from ._jobs import (
    CandidateCheckpoint,
    CheckpointRef,
    Job,
    as_iteration,
    as_loss,
    concurrency_limit,
    wait_job,
)
from ._race import _RaceMixin
from ._schedule import SCHEDULE_KEY, STATE_FINITE_KEY, lr_at
from ._stages import _StageMixin
from ._state import config_diff, config_differences, parse_state, plain
from ._trials import _FINISHED, Trial, _TrialMixin

_tune = require("ray.tune", "ray")
_result = require("ray.tune.result", "ray")
TrialScheduler = require("ray.tune.schedulers", "ray").TrialScheduler

__all__ = ["STATE_FILE", "AutoLRSScheduler"]

#: File in the experiment folder holding the scheduler's state (``AutoLRSScheduler.restore``).
STATE_FILE = "autolrs_scheduler_state.pt"
_DEFAULT_POPULATION = 4  # only until Ray reports num_samples


def _check_mode(mode: str | None) -> None:
    if mode not in (None, "min"):
        raise ConfigError(f"AutoLRSScheduler minimises a loss; mode must be 'min', got {mode!r}")


class AutoLRSScheduler(_StageMixin, _RaceMixin, _TrialMixin, TrialScheduler):
    """Ray Tune scheduler that runs the AutoLRS LR search over a population of trials.

    **Variants.** ``variant="budget"`` (the default whenever ``max_t`` is known: passed, or
    read from ``RunConfig(stop={time_attr: T})``) plans the run from its budget with
    ``BudgetPolicy.for_budget(max_t, parallel=True, k=num_samples, k_later=num_samples)``
    (a population's defaults there: uncooled windows, a linear final decay): a linear
    warm-up, the searches (one candidate per trial), and a final decay of the winner's LR
    to zero that every trial follows iteration by iteration (through the schedule in its
    config, see :class:`TuneCheckpointer`).
    ``variant="paper"`` keeps the published stage structure (τ, τ', doubling, constant LR
    per stage; the default without ``max_t``).

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
    (:meth:`StageSearch.recover`; provisionally when the result says the trial's state stayed
    finite, :data:`STATE_FINITE_KEY`, as the in-loop AutoLRS does). In the budget variant such
    a loss with the state finite (a bad batch) is skipped instead, in warm-up, candidate
    windows, exploitation and the final race, up to two in a row
    (:meth:`StageSearch.skips_nonfinite`, the in-loop AutoLRS's rule; counted in
    ``skipped_losses``). When no search fits any more, the winner trains to the end and the
    waiting trials are stopped.

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
    private Ray attribute, isolated in ``autolr.integrations.ray._compat``.

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
            variant. When the run starts: ``max_t`` and a different (or non-int)
            ``RunConfig(stop={time_attr: T})``; ``CheckpointConfig(num_to_keep=...)`` is set
            (Ray would delete checkpoints the scheduler clones); a trial whose config differs
            from the first trial's in more than ``lr_key``; more trials than ``num_samples``
            (``tune.grid_search`` multiplies them). At a function trainable's first result
            without a checkpoint (see the trainable contract), and at a result whose
            ``time_attr`` is not an int one more than the trial's previous report (or the
            checkpoint it restarted from).
        ConfigTypeError: ``searcher``/``predictor`` that are not a ``Searcher``/``Predictor``,
            ``exploit``/``prune_checkpoints``/``double`` that are not bools.

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
        lr_bounds = check_bounds("lr_bounds", lr_bounds, positive=True)
        check_instance("exploit", exploit, bool)
        check_instance("prune_checkpoints", prune_checkpoints, bool)
        if double is not None:
            check_instance("double", double, bool)
        if k is not None:
            check_int("k", k, minimum=1)
        if max_t is not None:
            check_int("max_t", max_t, minimum=1)
        if variant is not None:
            check_choice("variant", variant, ("paper", "budget"))
        _check_mode(mode)
        check_choice("final", final, ("race", "clone"))
        check_instance("lr_key", lr_key, str)
        check_instance("time_attr", time_attr, str)
        if select_metric is not None:
            check_instance("select_metric", select_metric, str)
        check_float("save_interval_s", save_interval_s, minimum=0.0, finite=False)
        if policy is not None:
            check_instance("policy", policy, BudgetPolicy)
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
        # Not saved (a restored run re-learns them as its trials are added):
        self._first_config: tuple[str, dict[str, Any]] | None = None  # (trial id, config)
        #: Per trial: its last reported ``time_attr``, or the one of the checkpoint it resumes
        #: from; its next report must be one more.
        self._expect: dict[str, int] = {}
        self._build_search()
        self._reset_run_state()

    # ------------------------------------------------------------------ construction
    def _resolve_variant(self, max_t: int | None) -> str:
        if self._variant_arg is not None:
            return self._variant_arg
        return "budget" if max_t is not None or self._policy_arg is not None else "paper"

    def _build_search(self) -> None:
        """(Re)build the stage search from the arguments, ``max_t`` and the population."""
        self.search, self.variant = self._make_search(self.max_t, self._population)
        self._plan = self._plan_config(self.search, self.variant, self.max_t, self._population)

    def _plan_config(
        self, search: StageSearch, variant: str, max_t: int | None, population: int | None
    ) -> dict[str, Any]:
        """The arguments that fix the run's plan, as plain values (saved as ``"config"``).

        ``search`` is fresh (built by :meth:`_make_search`, no stage run yet). ``k`` is the
        argument as given (``None``: one candidate per trial, and the last search may race).
        """
        paper = search.variant == "paper"
        pol = search.policy
        policy = None
        if isinstance(pol, BudgetPolicy):
            policy = plain({n: v for n, v in asdict(pol).items() if n != "note"})
        return {
            "variant": variant,
            "max_t": max_t,
            "population": population or _DEFAULT_POPULATION,
            "lr_bounds": [float(b) for b in self._lr_bounds],
            "tau": search.tau if paper else None,
            "tau_prime": search.tau_prime if paper else None,
            "tau_max": search.tau_max if paper else None,
            "double": search.double if paper else None,
            "k": self._k,
            "policy": policy,
            "exploit": self.exploit,
            "final": self.final,
        }

    def _make_search(self, max_t: int | None, population: int | None) -> tuple[StageSearch, str]:
        """A stage search (and the variant) for the arguments, ``max_t`` and the population."""
        variant = self._resolve_variant(max_t)
        if variant == "budget" and not self.exploit:
            raise ConfigError("exploit=False belongs to variant='paper'")
        pop = population or _DEFAULT_POPULATION
        policy = self._policy_arg
        budget = variant == "budget" and max_t is not None
        if budget and policy is None:
            policy = BudgetPolicy.for_budget(max_t, parallel=True, k=pop, k_later=pop)
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
        search = StageSearch.for_variant(
            "budget" if budget else "paper",
            max_steps=max_t,
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
        return search, variant

    def _reset_run_state(self) -> None:
        # Everything below is in state_dict().
        self.phase = "search"  # "search" | "exploit" | "final" | "race"
        self._jobs: dict[str, Job] = {}
        self._dead: dict[str, str] = {}  # trial id -> why it left the population
        self._stopping: set[str] = set()  # running trials to stop at their next result
        self._stage_ckpt: CheckpointRef | None = None  # None: initial state
        self._stage_start = 0
        self._stage_k = 0
        self._proposed: list[float] = []  # candidates of this search, in proposal order
        self._cand_ckpts: list[CandidateCheckpoint] = []  # per harvested candidate
        self._wave: dict[str, Any] | None = None  # work that waits for trials to be paused
        self._started = False
        self._warm: list[Any] | None = None  # [steps, peak] of the warm-up
        self._recent: dict[int, float] = {}  # lineage losses (warm-up, exploit, final)
        self._segments: list[list[float]] = []  # [start, end, lr] of the lineage
        self.stage_trials: list[dict[str, Any]] = []  # per record: scheduler-only facts
        self.events: list[str] = []  # errors, penalties, recoveries (for reports)
        self.recoveries = 0
        #: Non-finite losses skipped because the trial's state stayed finite (budget variant).
        self.skipped_losses = 0

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
        return sched._exported(steps, kind)

    # ------------------------------------------------------------------ Ray hooks
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self._metric and metric and metric != self._metric:
            return False
        if self._mode and mode and mode != self._mode:
            return False
        _check_mode(mode)
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        num = spec.get("num_samples")
        if isinstance(num, int) and num > 0:
            self._population = num
        stop = spec.get("stop")
        if isinstance(stop, Mapping) and self.time_attr in stop:
            raw = stop[self.time_attr]
            t = as_iteration(raw)
            where = f"RunConfig(stop={{{self.time_attr!r}: {raw!r}}})"
            if t is None or t < 1:
                raise ConfigError(
                    f"{where}: AutoLRSScheduler reads max_t from it, so it must be an int >= 1"
                )
            if self.max_t is None:
                self.max_t = t
            elif t != self.max_t:
                raise ConfigError(
                    f"{where} stops every trial at {t}, but the scheduler plans max_t="
                    f"{self.max_t} (from max_t= or policy=): the run would end without its "
                    "planned final decay. Give the same value to both, or only one of them"
                )
        if self.max_t is None and self._variant_arg is None and self._policy_arg is None:
            # No budget: the default plan is the paper variant, which decays nothing at the end
            # (a trainable that stops itself, or a Stopper object: Ray shows the scheduler
            # only a stop dict). Said once, here, rather than a run that silently differs.
            warnings.warn(
                "AutoLRSScheduler knows no budget (no max_t=, and RunConfig(stop=...) is not a "
                f"dict with a {self.time_attr!r} entry; a Stopper object's limit cannot be "
                f"read), so it runs the paper variant: tau={self.search.tau} iterations per "
                "stage and no final decay. Pass max_t=<iterations per trial> (or "
                f"stop={{{self.time_attr!r}: T}}) for the budget plan, or variant='paper' to "
                "keep this one",
                RuntimeWarning,
                stacklevel=2,
            )
        if not self._started:
            self._build_search()  # the variant, plan and k may depend on what Ray told us
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self._metric is None:
            raise ConfigError(
                "AutoLRSScheduler needs a metric: pass metric= or set TuneConfig(metric=...)"
            )
        limit = concurrency_limit(tune_controller)
        if limit is not None and self._population and limit < self._population:
            raise ConfigError(
                f"TuneConfig(max_concurrent_trials={limit}) is below num_samples="
                f"{self._population}: AutoLRSScheduler trains its population side by side, and "
                "its stages pause trials until the others report, while Ray starts no new trial "
                "as long as the paused ones count against the limit: the run would wait for "
                "ever. Leave max_concurrent_trials=None (or >= num_samples); to run fewer trials "
                "at once, give each more resources (tune.with_resources) or lower num_samples"
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
        restored = tid in self._jobs
        if not restored and self._population and len(self._jobs) >= self._population:
            raise ConfigError(
                f"trial {tid} is trial {len(self._jobs) + 1} of a population of "
                f"num_samples={self._population}: Ray adds one trial per tune.grid_search value "
                "and sample, and the scheduler plans its candidates per stage from num_samples. "
                f"AutoLRSScheduler searches config[{self.lr_key!r}] itself: give "
                f"param_space={{{self.lr_key!r}: <initial LR>, ...}} without tune.grid_search "
                "and TuneConfig(num_samples=<population>) instead"
            )
        self._check_same_config(trial)
        if restored and self._dead.get(tid) == "errored" and trial.status not in _FINISHED:
            self._rejoin(trial)
            return
        if restored:  # make Ray's view match the saved decisions
            if trial.status in _FINISHED:
                self._dead.setdefault(tid, "finished before restore")
            else:
                self._resync(trial)
                # Ray restarts it (a restore, or a retry after a failure) from this one.
                self._resumes_at(trial, compat.trial_checkpoint(trial))
            return
        if not self._started:
            self._start_first_stage()
        self._apply(trial, self._first_stage_job(), source=None, own=True)
        self._resumes_at(trial, compat.trial_checkpoint(trial))  # a new trial: none
        self._save(force=True)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._check_checkpointed(trial, result)
        decision = self._on_result(trial, result)
        self._prune(tune_controller)
        return decision

    def _check_same_config(self, trial: Any) -> None:
        """Refuse a trial whose config differs from the first trial's beyond the LR.

        The candidates of a stage are compared on their losses, and later stages restart every
        trial from the winner's checkpoint: trials training another model, data or setting
        would compare more than the LR (or fail to load each other's checkpoints).
        """
        skip = (self.lr_key, SCHEDULE_KEY)
        cfg = {k: v for k, v in dict(trial.config).items() if k not in skip}
        if self._first_config is None:
            self._first_config = (trial.trial_id, cfg)
            return
        first, base = self._first_config
        diff = config_differences(base, cfg)
        if diff:
            more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
            raise ConfigError(
                f"trial {trial.trial_id}'s config differs from trial {first}'s in more than "
                f"{self.lr_key!r}: {'; '.join(diff[:4])}{more}. AutoLRSScheduler compares LRs "
                "on one training setup and clones the winner's checkpoint into every trial: "
                f"only config[{self.lr_key!r}] may differ (the scheduler sets it). Make the "
                "other entries constants (no tune.grid_search or sampling), or run one "
                "experiment per setting"
            )

    def _check_iteration(self, tid: str, result: Mapping[str, Any]) -> int:
        """The result's ``time_attr``, checked to count this trial's iterations one by one.

        Every decision counts iterations with it; a value that is not an int, or one that
        does not follow the trial's last report (or the checkpoint it restarted from) by
        one, would stall or loop the search silently.
        """
        if self.time_attr not in result:
            raise ConfigError(
                f"trial {tid}'s result has no {self.time_attr!r}; set time_attr= to the key "
                "that counts its iterations"
            )
        raw = result[self.time_attr]
        it = as_iteration(raw)
        if it is None or it < 1:
            raise ConfigError(
                f"time_attr={self.time_attr!r} must count iterations (an int growing by one per "
                f"report, as 'training_iteration' does); trial {tid} reported {raw!r}"
            )
        if result.get(_result.RESULT_DUPLICATE):
            return it  # Ray repeats the last result when the function returns
        prev = self._expect.get(tid)
        if prev is not None and it != prev + 1:
            after = (
                f"after {self.time_attr}={prev}"
                if prev
                else "as its first report (it started from the initial state)"
            )
            raise ConfigError(
                f"time_attr={self.time_attr!r} must grow by one per report (an iteration "
                f"counter such as 'training_iteration'); trial {tid} reported {it} {after}"
            )
        self._expect[tid] = it
        return it

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
        it = self._check_iteration(tid, result)
        job = self._jobs.get(tid)
        if job is None:
            self._jobs[tid] = wait_job(self._lr_now())
            return TrialScheduler.PAUSE
        if tid in self._stopping:
            return self._stop_now(tid)
        if job.kind == "wait":
            return TrialScheduler.PAUSE
        loss = as_loss(result.get(self._metric))
        if job.kind == "race":
            self._record_select(job, result)
        transient = bool(result.get(STATE_FINITE_KEY, False))
        offset = it - job.start - 1
        if offset < 0:
            if job.warmup:
                return self._warmup_result(tid, job, it, loss, transient=transient)
            return TrialScheduler.CONTINUE  # a stale result from before the assignment
        job.losses[offset] = loss
        if job.kind == "candidate":
            decision = self._candidate_result(tid, job, it, offset, loss, transient=transient)
        elif job.kind == "race":
            decision = self._race_result(tid, job, it, offset, loss, transient=transient)
        else:
            decision = self._lineage_result(tid, job, it, loss, transient=transient)
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
        tid = trial.trial_id
        if compat.retried_after_error(trial) and tid in self._jobs and tid not in self._dead:
            self._retried(trial)  # Ray restarts it from its latest checkpoint: work kept
            return
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

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (survives ``torch.load(weights_only=True)``), records included."""
        return {
            "version": 2,
            "kind": "AutoLRSScheduler",
            "config": dict(self._plan),  # the arguments that fix the plan (load_state_dict)
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
            "cand_ckpts": [c.to_state() for c in self._cand_ckpts],
            "wave": None if self._wave is None else dict(self._wave),
            "started": self._started,
            "warm": None if self._warm is None else list(self._warm),
            "recent": [[int(k), float(v)] for k, v in sorted(self._recent.items())],
            "segments": [list(s) for s in self._segments],
            "stage_trials": [dict(s) for s in self.stage_trials],
            "events": list(self.events),
            "recoveries": self.recoveries,
            "skipped_losses": self.skipped_losses,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        The whole state is checked before anything changes; on an error the scheduler is
        left as it was. A state fixes the run's plan: it must come from a scheduler built with
        the same ``variant``, ``lr_bounds``, ``policy``, ``tau``, ``tau_prime``, ``tau_max``,
        ``double``, ``k``, ``exploit`` and ``final``, for the same ``max_t`` (a scheduler
        without one takes the state's). The population is the state's (``Tuner.restore``
        tells the scheduler ``num_samples=1``). States saved before the arguments were stored
        (no ``"config"`` entry) are checked on ``variant`` and ``max_t`` only.

        Raises:
            StateError: If ``state`` is not an AutoLRSScheduler state of this version (naming
                the missing or malformed entry), or was saved with other arguments (listing
                each, saved and given).
        """
        if not isinstance(state, Mapping) or state.get("version") != 2:
            raise StateError("not an AutoLRSScheduler state_dict (missing or unknown 'version')")
        # States saved before "kind" existed carry none; any other kind is another object's.
        kind = state.get("kind", "AutoLRSScheduler")
        if kind != "AutoLRSScheduler":
            raise StateError(
                f"not an AutoLRSScheduler state_dict: it is a {kind!r} state_dict (expected one "
                "from AutoLRSScheduler.state_dict())"
            )
        v = parse_state(state)  # checked values; nothing changed yet
        saved_variant, saved_max_t = v.pop("variant"), v.pop("max_t")
        saved_pop = v.pop("_population")
        search_state = v.pop("search")
        max_t = self.max_t if self.max_t is not None else saved_max_t
        # The state's population wins: Ray's Tuner.restore reports num_samples=1.
        pop = saved_pop if saved_pop is not None else self._population
        # A searcher passed in is shared with the new search: put it back on an error.
        mine = self._searcher_arg
        undo = None if mine is None else (mine.bounds["lr"], mine.state_dict())
        try:
            try:
                search, variant = self._make_search(max_t, pop)  # the plan: max_t, population
            except ConfigError as exc:
                raise StateError(
                    f"AutoLRSScheduler state_dict (max_t={saved_max_t!r}, population="
                    f"{saved_pop!r}) does not fit this scheduler's arguments: {exc}"
                ) from exc
            plan = self._plan_config(search, variant, max_t, pop)
            saved, now = state.get("config"), plan
            if saved is None:  # saved before the arguments were stored: what it holds
                pop_saved = saved_pop or _DEFAULT_POPULATION
                saved = {"variant": saved_variant, "max_t": saved_max_t, "population": pop_saved}
                now = {n: plan[n] for n in saved}
            diff = config_diff(saved, now)
            if diff:
                raise StateError(
                    "AutoLRSScheduler state_dict was saved by a scheduler with other arguments "
                    "than this one's: " + "; ".join(diff) + ". Build the scheduler with the "
                    "run's arguments to restore it (a state fixes the run's plan)"
                )
            search.load_state_dict(search_state)  # checks it all first; atomic
        except Exception:
            if mine is not None and undo is not None:
                mine.set_bounds("lr", *undo[0])
                mine.load_state_dict(undo[1])
            raise
        self.search, self.variant, self._plan = search, variant, plan
        self.max_t, self._population = max_t, pop
        for name, value in v.items():
            setattr(self, name, value)
        self._expect = {}  # where each trial restarts is learnt again as it is added

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
        if state is None:
            return
        jobs = state.get("jobs") if isinstance(state, Mapping) else None
        # Another run's state (an experiment folder re-used) is not this run's; a malformed
        # one raises.
        if not isinstance(jobs, Mapping) or trial.trial_id in jobs:
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
