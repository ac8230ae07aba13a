"""AutoLRS across a Ray Tune population: candidates side by side instead of one after another.

:class:`AutoLRSScheduler` executes the AutoLRS stage search (:class:`autolr.StageSearch`, the
same decisions as the in-loop :class:`autolr.AutoLRS`) with Ray trials as the candidates: every
live trial trains from the same stage checkpoint with its own candidate LR for τ' iterations,
its reported losses are forecast to step τ, the winner's checkpoint and LR are cloned into
every trial, and the next stage begins. In the last stage (``final="race"``) nothing is
cloned: each trial trains its own candidate to the end and the best real losses decide. With
k trials on k devices a stage's search costs τ' iterations of wall-clock instead of k·τ'.

:class:`TuneCheckpointer` makes an ordinary PyTorch training function compliant: it restores
the checkpoint Ray hands over, applies ``config["lr"]``, and reports the loss with a checkpoint.

Example:
    >>> from autolr.integrations.ray import AutoLRSScheduler
    >>> sched = AutoLRSScheduler(lr_bounds=(1e-3, 0.3), tau=100, metric="loss", mode="min")
    >>> sched.stage, sched.phase
    (0, 'search')
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from autolr import CandidateResult, StageSearch
from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._snapshot import Stateful, capture_rng_state, restore_rng_state
from autolr.predictors import Predictor
from autolr.searchers import Searcher

from . import _ray_compat as compat
from . import require

_tune = require("ray.tune", "ray")
_schedulers = require("ray.tune.schedulers", "ray")
Trial = require("ray.tune.experiment", "ray").Trial
TrialScheduler = _schedulers.TrialScheduler

__all__ = ["AutoLRSScheduler", "TuneCheckpointer"]

STATE_FILE = "autolrs_scheduler_state.pt"
_MAX_RETRIES = 4  # consecutive all-penalised searches before settling on the lowest LR
_FINISHED = (Trial.TERMINATED, Trial.ERROR)


@dataclass
class _Job:
    """What one trial is doing: a candidate, an exploitation, the final run, or waiting."""

    kind: str  # "candidate" | "exploit" | "final" | "race" | "wait"
    lr: float
    start: int  # iteration of the state the job starts from
    length: int  # iterations the job trains (a huge number for "final")
    losses: dict[int, float] = field(default_factory=dict)  # offset from start -> loss
    finished: bool = False
    penalised: bool = False
    reason: str = ""
    forecast: float | None = None
    harvested: bool = False  # a finished candidate whose checkpoint has been recorded
    source: list[Any] | None = None  # [path, metrics] it resumes from (None: initial state)
    own: bool = True  # resumes from the trial's own latest checkpoint instead of source
    scored: bool = False  # a "race" job whose first τ' losses went to the stage search
    select: float | None = None  # a racer's last finite ``select_metric`` value

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
        return cls(**d)


class AutoLRSScheduler(TrialScheduler):
    """Ray Tune scheduler that runs the AutoLRS LR search over a population of trials.

    Stage flow: each live trial gets a candidate LR (proposed as a batch by the stage
    search's searcher, with the LRs still running as pending points) and trains τ' iterations
    from the stage checkpoint; its losses are forecast to τ; when every candidate is scored,
    the lowest forecast wins (penalised candidates never do). Then the winner's checkpoint and
    LR are cloned into every trial; with ``exploit=True`` they train the rest of the stage
    (τ − τ' iterations) at that LR before the next search, with ``exploit=False`` the next
    stage's search starts at once. The last stage (no further search fits before ``max_t``)
    races by default: its candidates are scored at τ' for the record but keep training to the
    end, and ``schedule`` follows the trial whose last τ' losses are lowest (a diverging racer
    is stopped; if all diverge the stage is searched again lower). τ, τ' double as in the
    paper. With ``k`` larger than the population, a trial that finished its candidate
    restarts from the stage checkpoint with the next proposal while the others still run.

    Trainable contract (see :class:`TuneCheckpointer`): a function trainable that reads
    ``config[lr_key]`` when it (re)starts, resumes from ``ray.tune.get_checkpoint()``, reports
    ``metric`` once per iteration with a checkpoint on every report, and builds identical
    initial weights in every trial (seed the init). Trials may request GPUs; the scheduler
    never places work itself. Trials are paused with a checkpoint and their config updated
    through ``Trial.set_config``; which checkpoint a paused trial resumes from is set through
    one private Ray attribute, isolated in ``autolr.integrations._ray_compat``.

    Ray does not save schedulers; this one writes its state to ``autolrs_scheduler_state.pt``
    in the experiment folder after every decision (and at most every ``save_interval_s``
    between them), so ``Tuner.restore`` continues the search. A trial that errors leaves the
    stage to the others; a trial reporting a non-finite loss is penalised.

    Args:
        lr_bounds: ``(low, high)`` LR search box, searched in log space.
        tau: Iterations per stage (the horizon candidates are forecast to).
        tau_prime: Iterations per candidate (default ``tau // 10``). Give each candidate
            enough reports to rank it through the noise: on a short budget prefer few long
            stages (the ``ray`` study uses τ = budget/2, τ' = τ/5 = 20); windows of 8 noisy
            losses drifted to small LRs there.
        tau_max: Cap on τ; τ and τ' double after each stage while ``tau_prime < tau_max / 10``.
        double: Whether τ and τ' grow.
        k: Candidates per stage (default: the population, one candidate per trial). More
            candidates than trials costs extra rounds and, with noisy forecasts, did not help
            in the ``ray`` study's screening.
        exploit: Train τ − τ' iterations at the winner's LR after each search (paper
            behaviour) instead of searching again at once.
        final: What the last stage does (the stage after which no further search fits before
            ``max_t``). ``"race"`` (default): no clone; every trial keeps training its own
            candidate to the end, the candidates are still scored at τ' (recorded in
            ``stages``), and the lineage exposed in ``schedule`` is the trial with the lowest
            mean of its last τ' losses, so the last choice rests on real losses and the
            population ends with different trajectories. ``"clone"``: the winner's checkpoint
            is cloned into every trial, as in the other stages. Race needs ``max_t`` and
            one candidate per trial (``k=None``); otherwise the stage clones.
        select_metric: Result key that picks the best racer, lowest wins (e.g. a validation
            loss the trainable reports; its last finite value counts). Default: the mean of
            the last τ' values of ``metric``, which is noisy when that is a training loss.
        metric: Loss reported by the trainable (default: the Tuner's metric).
        mode: Must be ``"min"`` (the forecaster extrapolates decreasing losses).
        lr_key: Config key of the LR.
        time_attr: Result key counting iterations (must grow by one per report).
        max_t: Iterations each trial trains; read from ``RunConfig(stop={time_attr: T})``
            when not given. Near the end no search is started that cannot finish; it marks
            the last stage (raced, see ``final``; with ``"clone"`` any iterations left after
            it train at the last winning LR).
        searcher: Custom searcher over one log-scale parameter ``"lr"``.
        predictor: Custom forecaster (default exponential).
        seed: Seed of the default searcher.
        save_interval_s: Minimum seconds between state writes triggered by plain results.

    Raises:
        ConfigError: Invalid bounds or step counts, or ``mode != "min"``.

    Example:
        >>> sched = AutoLRSScheduler(lr_bounds=(1e-4, 1e-1), tau=200, k=8, metric="loss")
        >>> sched.search.tau_prime
        20
    """

    def __init__(
        self,
        *,
        lr_bounds: tuple[float, float] = (1e-4, 1e-1),
        tau: int = 1000,
        tau_prime: int | None = None,
        tau_max: int = 8000,
        double: bool = True,
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
        save_interval_s: float = 10.0,
    ) -> None:
        super().__init__()
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"k must be None or an int >= 1, got {k!r}")
        if max_t is not None and (isinstance(max_t, bool) or not isinstance(max_t, int)):
            raise ConfigError(f"max_t must be None or an int, got {max_t!r}")
        if mode not in (None, "min"):
            raise ConfigError(
                f"AutoLRSScheduler minimises a loss; mode must be 'min', got {mode!r}"
            )
        if final not in ("race", "clone"):
            raise ConfigError(f"final must be 'race' or 'clone', got {final!r}")
        if not isinstance(lr_key, str) or not isinstance(time_attr, str):
            raise ConfigTypeError("lr_key and time_attr must be strings")
        if not (isinstance(save_interval_s, (int, float)) and save_interval_s >= 0):
            raise ConfigError(f"save_interval_s must be >= 0, got {save_interval_s!r}")
        self.search = StageSearch(
            lr_bounds=lr_bounds,
            tau=tau,
            tau_prime=tau_prime,
            k=k or 1,
            tau_max=tau_max,
            double=double,
            searcher=searcher,
            predictor=predictor,
            seed=seed,
        )
        self._k = k
        self.exploit = bool(exploit)
        self.final = final
        if select_metric is not None and not isinstance(select_metric, str):
            raise ConfigTypeError(f"select_metric must be a string, got {select_metric!r}")
        self.select_metric = select_metric
        self._metric = metric
        self._mode = mode
        self.lr_key = lr_key
        self.time_attr = time_attr
        self.max_t = max_t
        self.save_interval_s = float(save_interval_s)
        self._population: int | None = None  # num_samples, from set_search_properties
        self._state_trial: Any = None  # a trial whose storage locates the state file
        self._last_save = 0.0
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        # Everything below is in state_dict().
        self.phase = "search"  # "search" | "exploit" | "final" | "race"
        self._jobs: dict[str, _Job] = {}
        self._dead: dict[str, str] = {}  # trial id -> why it left the population
        self._stage_ckpt: tuple[str, dict[str, Any]] | None = None  # None: initial state
        self._stage_start = 0
        self._proposed: list[float] = []  # candidates of this stage, in proposal order
        self._cand_ckpts: list[list[Any]] = []  # [lr, trial id, path, metrics] per candidate
        self._winner: dict[str, Any] | None = None  # lr, trial, path, metrics, forecast
        self._retries = 0
        self._started = False  # the first stage's search has begun
        self.stages: list[dict[str, Any]] = []
        self._segments: list[list[float]] = []  # [start, end, lr] of the surviving lineage
        self.events: list[str] = []  # errors, penalties, recoveries (for reports)

    # ------------------------------------------------------------------ public view
    @property
    def stage(self) -> int:
        """Index of the current stage (0-based)."""
        return self.search.stage

    @property
    def schedule(self) -> list[float]:
        """LR per iteration of the surviving lineage (iteration 1 first), for plots and replay.

        Every stage contributes its winner's LR from the stage start on: the winner trained
        its candidate iterations at that LR and every trial continued from its checkpoint.
        A ``final="race"`` stage contributes the LR of the best trial so far.
        """
        out: list[float] = []
        for start, end, lr in self._segments:
            start, end = int(start), int(end)
            if start < len(out):  # a re-searched stage replaces what it overlaps
                del out[start:]
            out.extend([float(lr)] * max(0, end - start))
        return out

    @property
    def winner_lr(self) -> float | None:
        """LR of the last stage winner (``None`` before the first search completes)."""
        return None if self._winner is None else float(self._winner["lr"])

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
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self._metric is None:
            raise ConfigError(
                "AutoLRSScheduler needs a metric: pass metric= or set TuneConfig(metric=...)"
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
        first = self.stage == 0 and self.phase in ("search", "race")
        if not self._started or (first and self._can_add()):
            # First stage: every trial starts from its (seeded) initial weights.
            lr = self._propose_one()
            self._apply(trial, self._candidate_job(lr), source=None, own=True)
        else:
            # Joins at the next stage boundary (its first result pauses it).
            self._jobs[tid] = _Job("wait", self._lr_now(), 0, 0, finished=True)
        self._save(force=True)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        tid = trial.trial_id
        job = self._jobs.get(tid)
        if job is None:
            self._jobs[tid] = _Job("wait", self._lr_now(), 0, 0, finished=True)
            return TrialScheduler.PAUSE
        if job.finished:
            return TrialScheduler.PAUSE
        if self.time_attr not in result:
            raise ConfigError(f"result has no {self.time_attr!r}; set time_attr=")
        it = int(result[self.time_attr])
        offset = it - job.start - 1
        if offset < 0:
            return TrialScheduler.CONTINUE  # a stale result from before the assignment
        raw = result.get(self._metric)
        try:
            loss = float(raw)
        except (TypeError, ValueError):
            loss = math.nan
        job.losses[offset] = loss
        if job.kind == "race":
            self._record_select(job, result)
            return self._race_result(tid, job, it, offset, loss)
        if job.kind in ("exploit", "final") and math.isfinite(loss):
            self._extend_lineage(it)
        if job.kind == "final":
            self._save()
            return TrialScheduler.CONTINUE
        if not math.isfinite(loss):
            job.penalised, job.reason = True, f"non-finite {self._metric} at iteration {it}"
            self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
            return self._finish(tid, job)
        if offset + 1 >= job.length:
            return self._finish(tid, job)
        self._save()
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A stopper's last result reaches only this hook, not on_trial_result.
        job = self._jobs.get(trial.trial_id)
        it = (result or {}).get(self.time_attr)
        loss = (result or {}).get(self._metric)
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        lineage = job is not None and job.kind in ("exploit", "final", "race")
        if lineage and finite and it is not None and it > job.start:
            job.losses[int(it) - job.start - 1] = float(loss)
            if job.kind != "race":
                self._extend_lineage(int(it))
        if job is not None and job.kind == "race":
            self._record_select(job, result or {})
        self._leave(trial, "completed")

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._leave(trial, "errored")

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._leave(trial, "removed")

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self._advance(tune_controller)
        # Paused trials with work first: Ray starts PENDING trials by itself anyway.
        for status in (Trial.PAUSED, Trial.PENDING):
            for trial in tune_controller.get_trials():
                job = self._jobs.get(trial.trial_id)
                if trial.status == status and job is not None and not job.finished:
                    return trial
        return None

    def debug_string(self) -> str:
        win = "none yet" if self._winner is None else f"{self._winner['lr']:.4g}"
        return (
            f"AutoLRSScheduler: stage {self.stage}, phase {self.phase}, tau={self.search.tau}, "
            f"tau'={self.search.tau_prime}, last winner lr {win}"
        )

    # ------------------------------------------------------------------ job bookkeeping
    def _finish(self, tid: str, job: _Job) -> str:
        job.finished = True
        if job.kind == "candidate":
            self._score(job)
        self._save(force=True)
        return TrialScheduler.PAUSE

    def _score(self, job: _Job) -> None:
        """Hand a candidate's losses (a racer's first τ') to the stage search."""
        steps = sorted(job.losses)
        if job.kind == "race":
            steps = steps[: self._candidate_len()]
        res = self.search.score(
            job.lr,
            [job.losses[s] for s in steps],
            steps=[float(s) for s in steps],
            penalised=job.penalised,
            reason=job.reason,
            trained_steps=len(steps),
        )
        job.forecast = res.forecast
        job.scored = True
        if job.kind == "race":
            # A record of the forecasts; the racers' own losses make the final choice.
            self.stages[-1]["candidates"] = [asdict(r) for r in self.search.results]
            win = self.search.winner()
            self.stages[-1]["forecast_winner_lr"] = None if win is None else float(win.lr)
        else:
            job.penalised = res.penalised

    # ------------------------------------------------------------------ final race
    def _race_now(self) -> bool:
        """Whether the stage starting now is the last one and ``final="race"`` applies."""
        if self.final != "race" or self._k is not None or self.max_t is None:
            return False
        s = self.search
        end = self._stage_start + (s.tau if self.exploit else s.tau_prime)
        return self.max_t - end < 2 * s.next_tau_prime

    def _candidate_job(self, lr: float) -> _Job:
        if self.phase == "race":
            # Runs until the trainable or the stopper ends it, like the "final" jobs.
            return _Job("race", lr, self._stage_start, 1 << 62)
        return _Job("candidate", lr, self._stage_start, self._candidate_len())

    def _race_healthy(self) -> list[str]:
        return [
            tid
            for tid, j in self._jobs.items()
            if j.kind == "race"
            and not j.penalised
            and self._dead.get(tid, "completed") == "completed"
        ]

    def _race_result(self, tid: str, job: _Job, it: int, offset: int, loss: float) -> str:
        if not math.isfinite(loss):
            job.penalised, job.reason = True, f"non-finite {self._metric} at iteration {it}"
            self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
            if not job.scored:
                self._score(job)
            job.finished = True
            self._race_pick()
            if self._race_healthy():
                # Others still race (or finished): this trial's run is over.
                self._dead[tid] = "stopped: non-finite loss in the final race"
                self._save(force=True)
                return TrialScheduler.STOP
            self._save(force=True)
            return TrialScheduler.PAUSE  # every racer diverged: _advance searches again lower
        if not job.scored and offset + 1 >= self._candidate_len():
            self._score(job)
        self._race_pick()
        self._save()
        return TrialScheduler.CONTINUE

    def _record_select(self, job: _Job, result: Mapping[str, Any]) -> None:
        if self.select_metric is None:
            return
        raw = result.get(self.select_metric)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return
        if math.isfinite(value):
            job.select = value

    def _race_pick(self) -> None:
        """Expose the best racer: most iterations, then lowest ``select_metric`` (or mean of
        its last τ' losses)."""
        n = max(1, self._candidate_len())
        best: tuple[tuple[int, float], str, _Job, float, float] | None = None
        for tid in self._race_healthy():
            job = self._jobs[tid]
            steps = [s for s in sorted(job.losses) if math.isfinite(job.losses[s])]
            if not steps:
                continue
            tail = [job.losses[s] for s in steps[-n:]]
            level = sum(tail) / len(tail)
            rank = level
            if self.select_metric is not None:
                # A racer that never reported the selection metric ranks last.
                rank = math.inf if job.select is None else job.select
            key = (-len(steps), rank)
            if best is None or key < best[0]:
                best = (key, tid, job, level, rank)
        if best is None:
            return
        _, tid, job, level, rank = best
        info = self.stages[-1]
        info.update(winner_lr=float(job.lr), winner_trial=tid, final_loss=float(level))
        if self.select_metric is not None:
            info["select_value"] = float(rank)
        info["end"] = self._stage_start + len(job.losses)
        self._winner = {
            "lr": float(job.lr),
            "trial": tid,
            "path": "",
            "metrics": {},
            "forecast": math.inf if job.forecast is None else float(job.forecast),
        }
        self._segments[-1] = [self._stage_start, self._stage_start + len(job.losses), job.lr]

    def _race_failed(self, live: list[Any]) -> None:
        """Every racer diverged: search the stage again below the lowest LR tried."""
        s = self.search
        lo, hi = s.lower_upper_bound(min(self._proposed))
        msg = f"stage {s.stage}: every racer diverged; searching [{lo:.3g}, {hi:.3g}]"
        self.events.append(msg)
        warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=2)
        self._segments.pop()
        self._begin_stage(live, self._stage_ckpt)

    def _leave(self, trial: Any, why: str) -> None:
        tid = trial.trial_id
        if tid in self._dead:
            return
        self._dead[tid] = why
        job = self._jobs.get(tid)
        if why != "completed":
            self.events.append(f"stage {self.stage}: trial {tid} {why} during {self.phase}")
        if job is not None and job.kind == "candidate" and not job.finished:
            # An errored trial says nothing about its LR: the candidate is dropped, not
            # penalised. A trial that simply ran out of iterations is scored on what it saw.
            job.finished = job.harvested = True
            if why == "completed" and len(job.losses) >= 2:
                self._finish(tid, job)
        if job is not None and job.kind == "race":
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

    def _can_add(self) -> bool:
        """Whether a new trial can still join the first stage's search as a candidate."""
        return self._k is None or len(self._proposed) < self._k

    def _candidate_len(self) -> int:
        n = self.search.tau_prime
        if self.max_t is not None:
            n = min(n, max(1, self.max_t - self._stage_start))
        return n

    def _lr_now(self) -> float:
        if self._winner is not None:
            return float(self._winner["lr"])
        lo, hi = self.search.lr_bounds
        return math.sqrt(lo * hi)

    def _propose_one(self) -> float:
        if not self._started:
            self._started = True
            self.search.begin_stage()
            self._proposed = []
            self._cand_ckpts = []
            self.stages.append(self._stage_record())
            if self._race_now():
                self._start_race()
        pending = [j.lr for j in self._jobs.values() if j.kind == "candidate" and not j.finished]
        lr = self.search.propose(1, pending=pending)[0]
        self._proposed.append(lr)
        return lr

    def _start_race(self) -> None:
        self.phase = "race"
        self.stages[-1]["final"] = "race"
        self._segments.append([self._stage_start, self._stage_start, self._lr_now()])

    def _stage_record(self) -> dict[str, Any]:
        return {
            "stage": self.search.stage,
            "start": self._stage_start,
            "tau": self.search.tau,
            "tau_prime": self.search.tau_prime,
        }

    def _apply(
        self,
        trial: Any,
        job: _Job,
        *,
        source: tuple[str, dict[str, Any]] | None,
        own: bool,
    ) -> None:
        """Give ``trial`` a job: set its LR, and unless ``own``, the checkpoint to resume from."""
        job.own = own
        job.source = None if source is None else [source[0], dict(source[1])]
        self._jobs[trial.trial_id] = job
        config = dict(trial.config)
        config[self.lr_key] = float(job.lr)
        trial.set_config(config)
        if not own:
            compat.set_trial_checkpoint(trial, source)

    def _resync(self, trial: Any) -> None:
        """After ``Tuner.restore``: re-apply the saved job to a trial Ray restored.

        Ray's experiment snapshot may predate the last decision, so the trial can come back
        with an older LR or checkpoint; a checkpoint newer than the job's start is progress
        within the job and is kept.
        """
        job = self._jobs[trial.trial_id]
        config = dict(trial.config)
        config[self.lr_key] = float(job.lr)
        trial.set_config(config)
        ck = compat.trial_checkpoint(trial)
        it = int(ck[1].get(self.time_attr, 0)) if ck else 0
        if job.own or job.finished or it > job.start:
            return
        src = None if job.source is None else (job.source[0], job.source[1])
        compat.set_trial_checkpoint(trial, src)

    # ------------------------------------------------------------------ stage transitions
    def _parked(self, trial: Any) -> bool:
        return trial.status == Trial.PAUSED and not trial.is_saving

    def _advance(self, tc: Any) -> bool:
        """Carry out the decisions that become possible once trials are paused.

        Returns whether any trial got new work.
        """
        live = self._live(tc)
        if not live or self.phase == "final":
            return False
        if self.phase == "race":
            done = all(self._jobs[t.trial_id].finished and self._parked(t) for t in live)
            if done and not self._race_healthy():
                self._race_failed(live)
                self._save(force=True)
                return True
            return False
        changed = False
        if self.phase == "search":
            for t in live:
                job = self._jobs[t.trial_id]
                if job.kind == "candidate" and job.finished and not job.harvested:
                    if not self._parked(t):
                        continue
                    ck = compat.trial_checkpoint(t)
                    job.harvested = True
                    self._cand_ckpts.append(
                        [job.lr, t.trial_id, ck[0] if ck else "", ck[1] if ck else {}]
                    )
                    changed = True
                    if self._k is not None and len(self._proposed) < self._k:
                        self._assign_candidate(t)
        if changed:
            self._save(force=True)
        if any(not self._jobs[t.trial_id].finished for t in live):
            return changed
        if not all(self._parked(t) or t.status == Trial.PENDING for t in live):
            return changed
        if any(
            self._jobs[t.trial_id].kind == "candidate" and not self._jobs[t.trial_id].harvested
            for t in live
        ):
            return changed
        if self.phase == "search":
            if self.stage == 0 and self._population and len(self._jobs) < self._population:
                return changed  # the first stage waits for the whole population to join
            if self._k is not None and len(self._proposed) < self._k:
                for t in live:  # e.g. after an error: more candidates than trials left
                    if len(self._proposed) < self._k:
                        self._assign_candidate(t)
                self._save(force=True)
                return True
            self._end_search(live)
        elif self.phase == "exploit":
            self._end_exploit(live)
        self._save(force=True)
        return True

    def _assign_candidate(self, trial: Any) -> None:
        lr = self._propose_one()
        self._apply(trial, self._candidate_job(lr), source=self._stage_ckpt, own=False)

    def _begin_stage(self, live: list[Any], start: tuple[str, dict[str, Any]] | None) -> None:
        """Start a stage from checkpoint ``start``: candidates, or the final run if none fits."""
        self._stage_ckpt = start
        self._stage_start = int(start[1].get(self.time_attr, 0)) if start else 0
        s = self.search
        remaining = None if self.max_t is None else self.max_t - self._stage_start
        if self._winner is not None and remaining is not None and remaining < 2 * s.tau_prime:
            # No search fits: the remaining iterations train at the last winner's LR.
            self.phase = "final"
            lr = float(self._winner["lr"])
            for t in live:
                # Until the trainable or the stopper ends it (even past max_t).
                job = _Job("final", lr, self._stage_start, 1 << 62)
                self._apply(t, job, source=start, own=False)
            self._segments.append([self._stage_start, self._stage_start, lr])
            return
        self.phase = "search"
        s.begin_stage()
        self._proposed, self._cand_ckpts = [], []
        self.stages.append(self._stage_record())
        if self._race_now():
            self._start_race()
        n = len(live) if self._k is None else min(self._k, len(live))
        lrs = s.propose(n)
        self._proposed = list(lrs)
        for i, t in enumerate(live):
            if i < n:
                job = self._candidate_job(lrs[i])
            else:
                job = _Job("wait", lrs[0], self._stage_start, 0, finished=True)
            self._apply(t, job, source=start, own=False)

    def _end_search(self, live: list[Any]) -> None:
        s = self.search
        info = self.stages[-1]
        info["candidates"] = [asdict(r) for r in s.results]
        win = s.winner()
        if win is None:
            self._retries += 1
            if not s.results:  # every candidate's trial errored: search again, same box
                self.events.append(f"stage {s.stage}: no candidate finished; searching again")
                self._begin_stage(live, self._stage_ckpt)
                return
            lo, hi = s.lower_upper_bound(min(r.lr for r in s.results))
            msg = f"stage {s.stage}: every candidate was penalised; searching [{lo:.3g}, {hi:.3g}]"
            self.events.append(msg)
            warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=2)
            if self._retries < _MAX_RETRIES:
                self._begin_stage(live, self._stage_ckpt)
                return
            win = CandidateResult(lo, math.inf, 0.0, True, "fallback: lowest LR", 0)
        self._retries = 0
        found = [c for c in self._cand_ckpts if c[0] == win.lr and c[2]]
        owner = found[0] if found and math.isfinite(win.forecast) else None
        if owner is not None:
            source: tuple[str, dict[str, Any]] | None = (owner[2], owner[3])
            start_it = int(owner[3].get(self.time_attr, self._stage_start))
            winner_tid = owner[1]
        else:
            # The winner's checkpoint is gone (or a fallback LR): train the stage from its start.
            source, start_it, winner_tid = self._stage_ckpt, self._stage_start, ""
        self._winner = {
            "lr": float(win.lr),
            "trial": winner_tid,
            "path": source[0] if source else "",
            "metrics": dict(source[1]) if source else {},
            "forecast": float(win.forecast),
        }
        info["winner_lr"] = float(win.lr)
        info["winner_trial"] = winner_tid
        self._segments.append([self._stage_start, start_it, float(win.lr)])
        length = s.tau - (start_it - self._stage_start)
        if self.max_t is not None:
            length = min(length, self.max_t - start_it)
        if self.exploit and length > 0:
            self.phase = "exploit"
            for t in live:
                job = _Job("exploit", float(win.lr), start_it, length)
                self._apply(t, job, source=source, own=t.trial_id == winner_tid)
            return
        info["end"] = start_it
        s.end_stage()
        self._begin_stage(live, source)

    def _end_exploit(self, live: list[Any]) -> None:
        s = self.search
        healthy = [t for t in live if not self._jobs[t.trial_id].penalised]
        if not healthy:
            # Every replica diverged at the winner's LR: search the stage again, lower.
            lr = float(self._winner["lr"]) if self._winner else s.lr_bounds[1]
            lo, hi = s.lower_upper_bound(lr)
            msg = f"stage {s.stage}: non-finite loss while exploiting lr={lr:.3g}; "
            msg += f"searching again in [{lo:.3g}, {hi:.3g}]"
            self.events.append(msg)
            warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=2)
            self._segments.pop()
            self._begin_stage(live, self._stage_ckpt)
            return
        winner_tid = self._winner["trial"] if self._winner else ""
        leader = next((t for t in healthy if t.trial_id == winner_tid), healthy[0])
        ck = compat.trial_checkpoint(leader)
        end_it = int(ck[1].get(self.time_attr, self._stage_start)) if ck else self._stage_start
        self._segments[-1][1] = max(self._segments[-1][1], end_it)
        self.stages[-1]["end"] = end_it
        self.stages[-1]["leader"] = leader.trial_id
        if self._winner is not None:
            self._winner["trial"] = leader.trial_id
            if ck:
                self._winner["path"], self._winner["metrics"] = ck[0], ck[1]
        s.end_stage()
        self._begin_stage(live, ck)

    def _extend_lineage(self, it: int) -> None:
        if self._segments:
            self._segments[-1][1] = max(self._segments[-1][1], it)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (survives ``torch.load(weights_only=True)``)."""
        return {
            "version": 1,
            "search": self.search.state_dict(),
            "phase": self.phase,
            "jobs": {tid: j.to_state() for tid, j in self._jobs.items()},
            "dead": dict(self._dead),
            "stage_ckpt": None if self._stage_ckpt is None else list(self._stage_ckpt),
            "stage_start": self._stage_start,
            "proposed": list(self._proposed),
            "cand_ckpts": [list(c) for c in self._cand_ckpts],
            "winner": None if self._winner is None else dict(self._winner),
            "retries": self._retries,
            "started": self._started,
            "stages": [dict(s) for s in self.stages],
            "segments": [list(s) for s in self._segments],
            "events": list(self.events),
            "max_t": self.max_t,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            StateError: If ``state`` is not an AutoLRSScheduler state.
        """
        if not isinstance(state, Mapping) or state.get("version") != 1:
            raise StateError("not an AutoLRSScheduler state_dict (missing or unknown 'version')")
        try:
            self.search.load_state_dict(state["search"])
            self.phase = str(state["phase"])
            self._jobs = {str(t): _Job.from_state(j) for t, j in state["jobs"].items()}
            self._dead = {str(t): str(w) for t, w in state["dead"].items()}
            sc = state["stage_ckpt"]
            self._stage_ckpt = None if sc is None else (str(sc[0]), dict(sc[1]))
            self._stage_start = int(state["stage_start"])
            self._proposed = [float(v) for v in state["proposed"]]
            self._cand_ckpts = [list(c) for c in state["cand_ckpts"]]
            self._winner = None if state["winner"] is None else dict(state["winner"])
            self._retries = int(state["retries"])
            self._started = bool(state["started"])
            self.stages = [dict(s) for s in state["stages"]]
            self._segments = [list(s) for s in state["segments"]]
            self.events = [str(e) for e in state["events"]]
            if state.get("max_t") is not None and self.max_t is None:
                self.max_t = int(state["max_t"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"not an AutoLRSScheduler state_dict: {exc}") from exc
        if self.phase not in ("search", "exploit", "final", "race"):
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
        """Write the state to ``checkpoint_path`` (Ray never calls this; kept for the API)."""
        torch.save(self.state_dict(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by :meth:`save`."""
        self.load_state_dict(torch.load(checkpoint_path, weights_only=True))


# ---------------------------------------------------------------------- trainable helper
class TuneCheckpointer:
    """Makes a PyTorch function trainable follow the :class:`AutoLRSScheduler` contract.

    On construction it resumes from ``ray.tune.get_checkpoint()`` (model, optimizer, extras,
    RNG states and the iteration counter) and sets the optimizer's LR to ``config[lr_key]``
    (parameter groups keep their ratios). :meth:`report` sends the loss, any extra metrics and
    a checkpoint to Ray with ``ray.tune.report``. Outside a Tune session it only applies the LR.

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
        self.model = model
        self.optimizer = optimizer
        self.metric = metric
        self.extras = dict(extras or {})
        self.rng = bool(rng)
        base = [float(g["lr"]) for g in optimizer.param_groups]
        self._scales = [b / base[0] if base[0] > 0 else 1.0 for b in base]
        self.iteration = 0
        self._restore()
        self.lr = lr
        for group, scale in zip(optimizer.param_groups, self._scales):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr * scale)
            else:
                group["lr"] = lr * scale

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
        """Report this iteration's loss (plus ``metrics``) with a checkpoint; iteration += 1."""
        value = float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else loss
        self.iteration += 1
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "extras": {n: o.state_dict() for n, o in self.extras.items()},
            "rng": capture_rng_state() if self.rng else None,
            "iteration": self.iteration,
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, os.path.join(folder, "autolr_trial.pt"))
            _tune.report(
                {self.metric: float(value), "lr": self.lr, **metrics},
                checkpoint=_tune.Checkpoint.from_directory(folder),
            )
