"""Trials of the scheduler: the lineage, trials leaving, waves of restarts and checkpoints.

A mixin of :class:`~autolr.integrations.ray.AutoLRSScheduler`: it carries decisions out on
Ray trials (configs, checkpoints to resume from, stops) and prunes checkpoints no decision
needs any more. Every private Ray access goes through :mod:`._compat`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autolr import StagePlan

from .. import require
from . import _compat as compat
from ._jobs import CandidateCheckpoint, CheckpointRef, Job, as_iteration, find_trial, wait_job
from ._schedule import SCHEDULE_KEY

Trial = require("ray.tune.experiment", "ray").Trial
TrialScheduler = require("ray.tune.schedulers", "ray").TrialScheduler
_FINISHED = (Trial.TERMINATED, Trial.ERROR)


class _TrialMixin:
    """Trial bookkeeping, restarts and checkpoint retention of AutoLRSScheduler."""

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
            self._jobs[tid] = wait_job(job.lr, job.start)
            self._set_wave("lineage", trial=None, job=job.to_state(), mode="source", source=src)
        elif job.kind == "race":
            job.finished = True
            if why == "completed" and not job.scored and not job.penalised and len(job.losses) >= 2:
                self._score(job)
            self._race_pick()
        self._save(force=True)

    def _retried(self, trial: Any) -> None:
        """Ray retries a failed trial (``FailureConfig(max_failures=n)``): it keeps its job.

        Ray restarts it from its latest checkpoint, which lies within its job (the job's
        start checkpoint, or one it reported since), so the job goes on from there: a
        candidate's window or a racer's race is not lost to a transient failure. The reports
        after that checkpoint come again and replace the ones it had sent.
        """
        tid = trial.trial_id
        ck = compat.trial_checkpoint(trial)
        it = 0 if ck is None else ck[1].get(self.time_attr, "?")
        self.events.append(
            f"stage {self.stage}: trial {tid} failed during {self.phase}; Ray retries it from "
            f"{self.time_attr} {it}"
        )
        self._resumes_at(trial, ck)
        self._save(force=True)

    def _rejoin(self, trial: Any) -> None:
        """Ray retries a trial the scheduler had given up (``resume_errored=True``): it waits.

        Its interrupted work was dropped or handed over when it errored (:meth:`_leave`), so
        it comes back as a member with nothing to do: it resumes from its last checkpoint,
        pauses at its first report and takes part in the next wave. Left dead, it would stay
        paused with no work and keep ``Tuner.fit`` waiting for ever.
        """
        tid = trial.trial_id
        del self._dead[tid]
        self._stopping.discard(tid)
        self.events.append(f"stage {self.stage}: trial {tid} retried by Ray; it waits")
        self._apply(trial, wait_job(self._lr_now()), source=None, own=True)
        self._resumes_at(trial, compat.trial_checkpoint(trial))
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
        paths.update(c.path for c in self._cand_ckpts if c.path)
        for tid, job in self._jobs.items():
            if job.source is not None:
                paths.add(str(job.source[0]))
            cool = job.cooldown if job.kind == "candidate" else 0
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
                path, metrics = ck if ck else ("", {})
                self._cand_ckpts.append(CandidateCheckpoint(job.lr, t.trial_id, path, metrics))
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

    def _window_checkpoint(self, trial: Any, job: Job) -> CheckpointRef | None:
        """The checkpoint a finished candidate's winner continues from."""
        cool = job.cooldown
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
            leader = find_trial(tc, wave.get("trial"))
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
        job = Job.from_state(wave["job"])
        mode, own = wave.get("mode", "source"), False
        src = wave.get("source")
        source = None if src is None else (str(src[0]), dict(src[1]))
        if mode in ("own", "cooldown"):
            owner = find_trial(tc, named)
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
        job: Job,
        *,
        source: CheckpointRef | None,
        own: bool,
    ) -> None:
        """Give ``trial`` a job: set its LR schedule, and unless ``own``, its checkpoint."""
        job.own = own
        job.source = None if source is None else [source[0], dict(source[1])]
        self._jobs[trial.trial_id] = job
        trial.set_config(self._config_for(trial.config, job))
        if not own:
            compat.set_trial_checkpoint(trial, source)
            self._resumes_at(trial, source)
        if trial.status == Trial.PAUSED:
            # Ray's loggers resume a trial that restarts from a checkpoint with the log
            # files in storage, which its periodic upload may not have written yet: a
            # "Remote file not found" warning, or lines lost to an older copy.
            compat.upload_trial_logs(trial)

    def _resumes_at(self, trial: Any, source: CheckpointRef | None) -> None:
        """``trial`` restarts from ``source``: its next report must be that iteration + 1.

        Unknown (a checkpoint without ``time_attr`` in its metrics): its next report is not
        checked against the previous one.
        """
        tid = trial.trial_id
        it = 0 if source is None else as_iteration(source[1].get(self.time_attr))
        if it is not None:
            self._expect[tid] = it
        else:
            self._expect.pop(tid, None)

    def _config_for(self, config: Mapping[str, Any], job: Job) -> dict[str, Any]:
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
