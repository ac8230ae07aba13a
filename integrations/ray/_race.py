"""The final race of the scheduler: every trial trains its own candidate to the end.

A mixin of :class:`~autolr.integrations.ray.AutoLRSScheduler`; which racer the run follows is
decided by :func:`autolr._autolrs._race.pick_racer`, shared with the in-loop AutoLRS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autolr import CandidateResult
from autolr._autolrs._race import RacerView, pick_racer

from .. import require
from ._jobs import Job, as_loss

TrialScheduler = require("ray.tune.schedulers", "ray").TrialScheduler


class _RaceMixin:
    """The raced last stage (``final="race"``) of AutoLRSScheduler."""

    def _race_result(
        self, tid: str, job: Job, it: int, offset: int, loss: float, *, transient: bool = False
    ) -> str:
        if job.finished:
            return TrialScheduler.PAUSE
        n = self._candidate_len()
        if self._skip(job, it, loss, transient):  # a bad batch: the core's rule, as elsewhere
            if not job.scored and offset + 1 >= n:
                self._score(job)
            self._race_pick()
            return TrialScheduler.CONTINUE
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

    def _race_diverged(self, tid: str, job: Job) -> str:
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

    def _record_select(self, job: Job, result: Mapping[str, Any]) -> None:
        if self.select_metric is None:
            return
        value = as_loss(result.get(self.select_metric))
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
        self._warn_event(msg)
        if action == "retry":
            self._set_wave("search")
            return
        s.choose(CandidateResult(value, math.inf, 0.0, True, "fallback: lowest LR", 0))
        self.phase = "final"
        self._truncate_lineage(self._stage_start)
        self._final_from_stage_start(value)
