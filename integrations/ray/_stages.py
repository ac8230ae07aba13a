"""Stages of the scheduler: the first stage, candidates, their results and the decisions.

A mixin of :class:`~autolr.integrations.ray.AutoLRSScheduler`, split out to keep modules
small; it uses the scheduler's attributes (see ``AutoLRSScheduler._reset_run_state``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from typing import Any

from autolr import BudgetPolicy, CandidateResult, StagePlan
from autolr._errors import ConfigError

from .. import require
from ._jobs import Job, wait_job
from ._schedule import lr_at

TrialScheduler = require("ray.tune.schedulers", "ray").TrialScheduler


class _StageMixin:
    """Opening stages, scoring candidates and deciding a stage (AutoLRSScheduler's part)."""

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
        if plan.k == 1:
            # TuneConfig's num_samples defaults to 1: a search would then compare nothing.
            msg = (
                "each search has one candidate (a population of num_samples="
                f"{self._population or 1}), so nothing is compared: the LR is the searcher's "
                "first proposal. Set TuneConfig(num_samples=k) (e.g. 4), or k= with "
                "variant='paper' to try several candidates per trial"
            )
            self.events.append(msg)
            warnings.warn(f"AutoLRSScheduler: {msg}", RuntimeWarning, stacklevel=3)
        self._open_stage(plan, w)

    def _first_stage_job(self) -> Job:
        s = self.search
        if self.phase == "final":
            if any(j.kind == "final" for j in self._jobs.values()):
                return wait_job(self._lr_now())  # one trial carries the run
            lr = float(s.plan_now.lr if s.plan_now and s.plan_now.lr else s.initial_lr)
            return Job("final", lr, 0, None, self._schedule(lr, 0, warmup=True))
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
        return wait_job(self._lr_now())

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
                job = wait_job(lrs[0] if lrs else self._lr_now(), self._stage_start)
            self._apply(t, job, source=self._stage_ckpt, own=False)

    def _candidate_job(self, lr: float, *, race: bool, warmup: bool = False) -> Job:
        n = self._candidate_len()
        start = self._stage_start
        if race:
            sched = self._schedule(lr, start, warmup=warmup)
            return Job("race", lr, start, None, sched, warmup=warmup)
        plan = self.search.plan_now
        cool = plan.cooldown if plan is not None and plan.kind == "search" else 0
        window = [start, n, cool] if cool > 0 else None
        sched = self._schedule(lr, start, warmup=warmup, window=window)
        return Job("candidate", lr, start, n, sched, warmup=warmup)

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

    def _warn_event(self, msg: str) -> None:
        """Record ``msg`` for reports and warn with it (a search that failed or recovered)."""
        self.events.append(msg)
        # stacklevel: the caller of the hook-side method that decided (as before the split).
        warnings.warn(f"AutoLRSScheduler {msg}", RuntimeWarning, stacklevel=4)

    def _final_from_stage_start(self, lr: float) -> None:
        """The rest of the run trains at ``lr`` from the stage checkpoint (any trial takes it)."""
        start = self._stage_start
        sched = self._schedule(lr, start, warmup=self._stage_ckpt is None)
        lineage = Job("final", float(lr), start, None, sched)
        self._segments.append([start, start, float(lr)])
        src = self._stage_source()
        self._set_wave("lineage", trial=None, job=lineage.to_state(), mode="source", source=src)

    # ------------------------------------------------------------------ results
    def _skip(self, job: Job, it: int, loss: float, transient: bool) -> bool:
        """Whether ``loss`` is skipped: non-finite, but the trial says its state stayed finite
        (a bad batch), and the core skips it (:meth:`StageSearch.skips_nonfinite`, the rule
        of the in-loop AutoLRS). A finite loss ends the streak."""
        if math.isfinite(loss):
            job.skips = 0
            return False
        if not transient or not self.search.skips_nonfinite(job.skips):
            return False
        job.skips += 1
        job.losses.pop(it - job.start - 1, None)  # nothing to score or replay
        self.skipped_losses += 1
        if self.skipped_losses == 1:
            self._warn_event(
                f"stage {self.search.stage}: non-finite {self._metric} at iteration {it} left "
                "the trial's weights and optimizer state finite; skipped it (a bad batch). "
                "Later such losses are counted in skipped_losses without a warning"
            )
        return True

    def _warmup_result(
        self, tid: str, job: Job, it: int, loss: float, *, transient: bool = False
    ) -> str:
        """A result of the warm-up that precedes the first stage's candidates."""
        self._remember(it, loss)
        if job.finished or self._skip(job, it, loss, transient) or math.isfinite(loss):
            return TrialScheduler.CONTINUE
        job.penalised, job.reason = True, f"non-finite {self._metric} in the warm-up"
        self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
        if job.kind == "race":
            return self._race_diverged(tid, job)
        self._finish_candidate(job)
        self._maybe_decide()
        return TrialScheduler.PAUSE

    def _diverged(self, job: Job, loss: float) -> bool:
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

    def _candidate_result(
        self, tid: str, job: Job, it: int, offset: int, loss: float, *, transient: bool = False
    ) -> str:
        if job.finished:  # scored: trains on as the winner would, or waits
            if not math.isfinite(loss) and offset >= (job.length or 0):
                job.spec_end = None  # its continuation diverged: it pauses
            return self._verdict(tid, it)
        if offset >= (job.length or 0):
            return TrialScheduler.PAUSE  # a late result past the window (restored trial)
        if self._skip(job, it, loss, transient):
            if offset + 1 < job.length:  # type: ignore[operator]
                return TrialScheduler.CONTINUE
            self._finish_candidate(job)
        elif self._diverged(job, loss):
            self.events.append(f"stage {self.stage}: trial {tid} {job.reason} (lr={job.lr:.3g})")
            self._finish_candidate(job)
        elif offset + 1 >= job.length:
            self._finish_candidate(job)
        else:
            return TrialScheduler.CONTINUE
        self._maybe_decide()
        return self._verdict(tid, it)

    def _finish_candidate(self, job: Job) -> None:
        """Score a candidate; a healthy one keeps training as the winner would meanwhile."""
        job.finished = True
        self._score(job)
        cool = job.cooldown
        more = len(self._proposed) < self._stage_k  # its trial is needed for another one
        if job.penalised or cool > 0 or more:
            return
        # Until the next stage (its trial pauses there if the decision is that late).
        extra = self._exploit_len(job.start + job.length, job.length)
        if extra is None:
            job.spec_end = self.max_t if self.max_t is not None else 1 << 62
        elif extra > 0:
            job.spec_end = job.start + job.length + extra

    def _score(self, job: Job) -> None:
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

    def _lineage_result(
        self, tid: str, job: Job, it: int, loss: float, *, transient: bool = False
    ) -> str:
        """A result of the trial that carries the run (exploitation or final phase).

        ``transient``: the result says the trial's state stayed finite (see :meth:`_recover`).
        """
        if self._skip(job, it, loss, transient):
            self._extend_lineage(it)  # its update (a skipped batch) is the lineage's
            return self._verdict(tid, it)
        if not math.isfinite(loss):
            return self._recover(tid, job, it, transient=transient)
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
            self._warn_event(msg)
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
                self._jobs[tid] = wait_job(j.lr, start)
        cool = job.cooldown if job is not None else 0
        kept = job.length - cool if job is not None else 0
        step = start + kept
        extra = self._exploit_len(step, kept)
        length = None if extra is None else kept + extra
        self._segments.append([start, step, float(win.lr)])
        self.phase = "exploit"
        lineage = Job(
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

    def _owner(self, win: CandidateResult) -> tuple[str | None, Job | None, str]:
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
        for c in self._cand_ckpts:
            if c.lr == win.lr and c.path:
                job = Job("candidate", c.lr, self._stage_start, self._candidate_len())
                job.source = [c.path, dict(c.metrics)]
                return c.trial_id, job, "harvested"
        return None, None, ""

    def _replay(self, tid: str, job: Job, kept: int) -> bool:
        """The winner's iterations beyond its window are its exploitation: record them.

        Returns False when one of them was not finite (the stage is searched again).
        """
        for offset in sorted(o for o in job.losses if o >= kept):
            it = job.start + offset + 1
            loss = job.losses[offset]
            if not math.isfinite(loss):
                self._recover(tid, job, it)  # whether its state stayed finite is not kept
                return False
            self._remember(it, loss)
            self._extend_lineage(it)
        return True

    def _stage_end(self, tid: str, job: Job, it: int) -> str:
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
        self._jobs[tid] = wait_job(job.lr, int(it))
        self._set_wave("stage", trial=tid, plan=asdict(plan), start=int(it))
        return TrialScheduler.PAUSE

    def _lineage_completed(self, tid: str, job: Job, it: int) -> None:
        """The trial carrying the run ended (the stopper at ``max_t``, or its own loop)."""
        if job.end is None or it < job.end:
            return  # the last stage: its record stays open, as AutoLRS leaves it
        if self.max_t is not None and it >= self.max_t:
            self._stage_end(tid, job, it)  # the budget ends the stage (the next plan: final)
        else:
            self.search.update_record(end=int(it))

    def _recover(self, tid: str, job: Job, it: int, *, transient: bool = False) -> str:
        """A non-finite loss while exploiting: search the stage again below that LR.

        ``transient``: the trial reported its weights and optimizer state finite (a bad
        batch), so the cut is provisional, as in the in-loop AutoLRS
        (:meth:`StageSearch.recover`).
        """
        s = self.search
        bad = lr_at(job.schedule, it - 1) if job.schedule else job.lr
        bad = bad if bad > 0 else job.lr
        lo, hi = s.recover(bad, transient=transient)
        self.recoveries += 1
        msg = (
            f"stage {s.stage}: non-finite {self._metric} at iteration {it} with lr={bad:.3g}; "
            f"searching again from iteration {self._stage_start} in [{lo:.3g}, {hi:.3g}]"
        )
        if s.pending_restore is not None:
            msg += f" (the upper bound returns to {s.pending_restore[1]:.3g} once a stage ends "
            msg += "with finite losses)"
        self._warn_event(msg)
        self._jobs[tid] = wait_job(job.lr, self._stage_start)
        self._truncate_lineage(self._stage_start)
        if job.kind == "final" and self.max_t is not None:
            # No budget for a search: continue at the safer upper bound.
            s.winner_lr = hi
            self._final_from_stage_start(hi)
            return TrialScheduler.PAUSE
        self.phase = "search"
        self._set_wave("search")
        return TrialScheduler.PAUSE
