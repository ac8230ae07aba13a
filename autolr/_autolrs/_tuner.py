"""AutoLRS inside an ordinary PyTorch training loop (the in-process executor)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autolr.predictors import Predictor
from autolr.searchers import Searcher

from .._errors import ConfigError, ConfigTypeError, StateError
from .._snapshot import Snapshot, Stateful, capture_rng_state, restore_rng_state
from ._lr import GroupLRs
from ._policy import BudgetPolicy, DivergenceRule, warmup_lr
from ._stage import CandidateResult, StageRecord, StageSearch

__all__ = ["AutoLRS", "HistoryRecord"]

_PHASES = ("warmup", "search", "exploit", "final", "done")


@dataclass(frozen=True)
class HistoryRecord:
    """One optimizer step as the tuner saw it.

    Attributes:
        step: Index of the optimizer step (0-based, every call to :meth:`AutoLRS.step`).
        stage: Stage the step belongs to.
        phase: ``"warmup"``, ``"search"`` (a candidate's trial step), ``"exploit"`` or
            ``"final"`` (the winner trains the stage / the remaining budget).
        lr: The LR the optimizer used for this step.
        loss: The loss reported for this step (``None`` if not yet synchronised).
        forecast: On a candidate's last step, its forecast loss at τ (``inf`` if penalised).
    """

    step: int
    stage: int
    phase: str
    lr: float
    loss: float | None
    forecast: float | None = None


class AutoLRS:
    """Automatic LR schedule by Bayesian optimisation on the fly (Jin et al., ICLR 2021).

    Call :meth:`step` with the loss after every ``optimizer.step()``. Every step is a real
    optimizer step of your loop: the tuner only sets the LR and restores state. Every decision
    is made by :attr:`search` (a :class:`~autolr.StageSearch`); this class carries them out.

    **Budget variant** (``variant="budget"``, the default whenever ``max_steps`` is given): the
    run is planned from the budget by a :class:`~autolr.BudgetPolicy`: a linear warm-up over
    5 % of it, one search of 4 candidates that each train a window from the same snapshot
    (the discarded windows cost at most 20 % of the budget), then the winner continues from
    its own state at its LR, which decays linearly to zero over the last half of the budget.

    **Paper variant** (``variant="paper"``, the default without ``max_steps``): each stage, the
    tuner snapshots the training state, trains ``k`` candidate LRs for ``tau_prime`` steps each
    from that snapshot (restoring it in between), forecasts each candidate's loss at step
    ``tau`` with an exponential fit, then restores the snapshot and trains ``tau`` steps with
    the lowest forecast. Search costs ``k * tau_prime`` steps per stage.

    Improvements over the original code: the new LR applies on the very next step after any
    restore; candidates are proposed by a GP with LogEI instead of an uncertainty sweep;
    forecasts are bounded; in-memory snapshots include RNG states so candidates see the same
    random stream; diverging candidates are abandoned early as penalised observations; a
    non-finite loss while exploiting restores the stage and searches again below the bad LR.

    Args:
        model: The model being trained.
        optimizer: Its optimizer (any torch optimizer over the model's parameters). If its
            parameter groups have different LRs, their ratios to the first group are kept.
        lr_bounds: ``(low, high)`` LR search box, searched in log space.
        max_steps: Total budget of optimizer steps, search included; selects the budget
            variant unless ``variant`` says otherwise. After the budget ``done`` is True.
        variant: ``"budget"`` or ``"paper"`` (default: ``"budget"`` with ``max_steps``).
        tau: Paper variant: steps per stage trained with the winning LR (paper: 1000).
            ``tau``, ``tau_prime``, ``k``, ``tau_max`` and ``double`` with the budget variant
            raise :class:`~autolr.ConfigError` (its plan sets them; see ``policy``).
        tau_prime: Steps per candidate (default ``tau // 10``).
        k: Candidates per stage (paper: 10).
        tau_max: Cap on τ; τ and τ' double after each stage while ``tau_prime < tau_max/10``.
        double: Whether τ and τ' grow.
        policy: Budget variant: a custom plan, e.g.
            ``BudgetPolicy.for_budget(max_steps, searches=3, decay_frac=0.2)``.
        compare: How candidates are scored (see :class:`~autolr.StageSearch`); default
            ``"window"`` (budget) or ``"forecast"`` (paper).
        searcher: Custom searcher over one log-scale parameter named ``"lr"``.
        predictor: Custom forecaster (default :class:`~autolr.predictors.ExponentialPredictor`).
        seed: Seed of the default searcher (the tuner is deterministic given it).
        val_fn: Optional zero-argument callable returning a validation loss. When given,
            candidates are scored on validation losses, taken every ``val_every`` steps.
            It runs under ``torch.no_grad()``; the model's train/eval mode and the RNG
            states are restored afterwards so validation never perturbs training.
        val_every: Validation interval during candidates (default: once at the end of each
            window in the budget variant, ``max(1, tau_prime // 16)`` in the paper variant).
        warmup_steps: Steps of linear warm-up before the first stage (no search); default
            5 % of ``max_steps`` (budget) or 0 (paper).
        warmup_lr: Peak LR of the warm-up (default: the geometric mean of ``lr_bounds``).
        continue_from: ``"start"`` (the paper variant's default: restore the stage start,
            train ``tau`` steps at the winner) or ``"best"`` (the budget variant's default:
            keep the winning candidate's state, so its window is not repeated).
        divergence_factor: A candidate whose loss exceeds ``divergence_factor`` times the
            stage-start loss for ``divergence_patience`` consecutive steps is abandoned.
        divergence_patience: See ``divergence_factor``.
        restore_rng: Restore RNG states with every snapshot (same random stream per candidate).
        offload: ``None`` (snapshots stay on the model's device) or ``"cpu"``.
        extras: Extra stateful objects saved and restored with the model (``GradScaler``,
            EMA, ...), by name.
        sync_every: During exploitation, tensor losses are read back every ``sync_every``
            steps instead of every step (saves a host sync per step on GPUs; a non-finite loss
            is then detected up to ``sync_every - 1`` steps late and the stage is restored).

    Raises:
        ConfigError: Invalid bounds or step counts (``tau_prime >= tau``, ``k < 1``...).
        ConfigTypeError: ``model``/``optimizer`` of the wrong type, or an optimizer holding
            parameters that are not the model's.

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
        >>> tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), max_steps=200)
        >>> for _ in range(200):
        ...     x = torch.randn(16, 4)
        ...     loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        ...     opt.zero_grad(); loss.backward(); opt.step()
        ...     tuner.step(loss.item())
        >>> tuner.done, len(tuner.stages[0].candidates)
        (True, 4)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        lr_bounds: tuple[float, float] = (1e-4, 1e-1),
        max_steps: int | None = None,
        variant: str | None = None,
        tau: int | None = None,
        tau_prime: int | None = None,
        k: int | None = None,
        tau_max: int | None = None,
        double: bool | None = None,
        policy: BudgetPolicy | None = None,
        compare: str | None = None,
        searcher: Searcher | None = None,
        predictor: Predictor | None = None,
        seed: int | None = 0,
        val_fn: Callable[[], float | torch.Tensor] | None = None,
        val_every: int | None = None,
        warmup_steps: int | None = None,
        warmup_lr: float | None = None,
        continue_from: str | None = None,
        divergence_factor: float = 3.0,
        divergence_patience: int = 3,
        restore_rng: bool = True,
        offload: str | None = None,
        extras: Mapping[str, Stateful] | None = None,
        sync_every: int = 1,
    ) -> None:
        _check_model_optimizer(model, optimizer)
        if max_steps is not None:
            _check_int("max_steps", max_steps, 1)
        if variant is None:
            variant = "budget" if max_steps is not None else "paper"
        structure = {"tau": tau, "tau_prime": tau_prime, "k": k, "tau_max": tau_max,
                     "double": double}  # fmt: skip
        if variant == "budget" and max_steps is not None:
            if warmup_steps is not None:
                _check_int("warmup_steps", warmup_steps, 0)
            if policy is None:
                policy = BudgetPolicy.for_budget(max_steps, warmup=warmup_steps)
            elif not isinstance(policy, BudgetPolicy):
                raise ConfigTypeError(f"policy must be a BudgetPolicy, got {type(policy).__name__}")
            warmup_steps = policy.warmup
        elif warmup_steps is None:
            warmup_steps = 0
        continue_from = continue_from or ("best" if variant == "budget" else "start")
        if continue_from not in ("start", "best"):
            raise ConfigError(f"continue_from must be 'start' or 'best', got {continue_from!r}")
        self.search = StageSearch.for_variant(
            variant,
            max_steps=max_steps,
            structure=structure,
            policy=policy,
            lr_bounds=lr_bounds,
            searcher=searcher,
            predictor=predictor,
            seed=seed,
            compare=compare,
            divergence=DivergenceRule(divergence_factor, divergence_patience),
            continue_best=continue_from == "best",
        )
        _check_int("warmup_steps", warmup_steps, 0)
        _check_int("sync_every", sync_every, 1)
        if val_every is not None:
            _check_int("val_every", val_every, 1)
        if val_fn is not None and not callable(val_fn):
            raise ConfigTypeError(f"val_fn must be callable, got {type(val_fn).__name__}")
        if warmup_lr is None:
            warmup_lr = self.search.initial_lr
        elif not (
            isinstance(warmup_lr, (int, float)) and math.isfinite(warmup_lr) and warmup_lr > 0
        ):
            raise ConfigError(f"warmup_lr must be a positive finite float, got {warmup_lr!r}")

        self.model = model
        self.optimizer = optimizer
        self.variant = variant
        self.val_fn = val_fn
        self.val_every = val_every
        self.warmup_steps = warmup_steps
        self.warmup_lr = float(warmup_lr)
        self.max_steps = max_steps
        self.continue_from = continue_from
        self.sync_every = sync_every
        self._snapshot = Snapshot(model, optimizer, extras=extras, offload=offload, rng=restore_rng)
        self._best_snapshot = Snapshot(
            model, optimizer, extras=extras, offload=offload, rng=restore_rng
        )
        # A candidate's state before its cooldown (budget variant with cooled windows).
        self._cand_snapshot = Snapshot(
            model, optimizer, extras=extras, offload=offload, rng=restore_rng
        )
        self._group_lrs = GroupLRs(optimizer)

        # Run state (everything below is in state_dict).
        self.global_step = 0
        self.phase = "warmup"
        self._lr = self._group_lrs.first
        self._stage_k = self.search.k
        self._phase_steps = 0
        self._phase_len = 0
        self._cand_lr = 0.0
        self._cand_losses: list[float] = []
        self._val_losses: list[float] = []
        self._val_steps: list[float] = []
        self._over = 0
        self._ref_loss: float | None = None
        self._recent: list[float] = []
        self._best_forecast = math.inf
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._records: list[HistoryRecord] = []
        self.recoveries = 0

        self._warmup_start = 0
        if warmup_steps > 0:
            # Kept so a non-finite warm-up loss can be undone (nothing else is saved yet).
            self._snapshot.capture()
            self._set_lr(self._warmup_lr_at(0))
        else:
            self._start_stage()

    # ------------------------------------------------------------------ public view
    @property
    def lr(self) -> float:
        """The LR the optimizer will use for the next step (first parameter group)."""
        return self._lr

    @property
    def stage(self) -> int:
        """Index of the current stage (0-based)."""
        return self.search.stage

    @property
    def done(self) -> bool:
        """True once ``max_steps`` optimizer steps have been taken."""
        return self.phase == "done"

    @property
    def history(self) -> list[HistoryRecord]:
        """Every step seen so far: step, stage, phase, lr, loss and candidate forecasts."""
        self._flush()
        return list(self._records)

    @property
    def schedule(self) -> list[float]:
        """The LR actually used at every optimizer step, search steps included."""
        return [r.lr for r in self._records]

    @property
    def divergence_factor(self) -> float:
        """Loss ratio to the stage-start loss above which a candidate counts as over."""
        return float(self.search.divergence.factor)

    @property
    def divergence_patience(self) -> int:
        """Consecutive over losses after which a candidate is abandoned."""
        return self.search.divergence.patience

    @property
    def stages(self) -> list[StageRecord]:
        """One :class:`~autolr.StageRecord` per stage so far (the current one last)."""
        return list(self.search.records)

    @property
    def tau(self) -> int:
        """Current stage length τ."""
        return self.search.tau

    @property
    def tau_prime(self) -> int:
        """Current candidate length τ'."""
        return self.search.tau_prime

    def register(self, name: str, obj: Stateful) -> None:
        """Save and restore ``obj`` (GradScaler, EMA, ...) with the model from now on."""
        self._snapshot.register(name, obj)
        self._best_snapshot.register(name, obj)

    # ------------------------------------------------------------------ the hook
    def step(self, loss: float | torch.Tensor) -> None:
        """Report the loss of the optimizer step that just happened; sets the next LR.

        May restore the model and optimizer to the stage snapshot (between candidates and
        before exploitation). Never raises on non-finite losses: a candidate is penalised, an
        exploitation step triggers a restore and a new search below the offending LR.

        Args:
            loss: The training loss of this step (float or scalar tensor).
        """
        step = self.global_step
        self.global_step += 1
        phase = self.phase
        if phase in ("exploit", "final") and isinstance(loss, torch.Tensor) and self.sync_every > 1:
            self._deferred_step(step, loss)
            return self._check_budget()

        value = _as_float(loss)
        self._records.append(HistoryRecord(step, self.stage, phase, self._lr, value))
        if phase == "done":
            if step == self.max_steps:  # warn once
                warnings.warn(
                    f"AutoLRS.step() called after max_steps={self.max_steps}; the tuner is "
                    "done and leaves the LR unchanged",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None
        if phase == "warmup":
            if not math.isfinite(value):
                self._restart_warmup()
            elif self.global_step - self._warmup_start >= self.warmup_steps:
                self._remember(value)
                self._start_stage()
            else:
                self._remember(value)
                self._set_lr(self._warmup_lr_at(self.global_step - self._warmup_start))
        elif phase == "search":
            self._candidate_step(value)
        else:
            self._phase_steps += 1
            if not math.isfinite(value):
                self._recover()
            else:
                self._remember(value)
                if self._phase_steps >= self._phase_len:
                    self._end_exploit()
                else:
                    self._follow_plan()
        return self._check_budget()

    def _deferred_step(self, step: int, loss: torch.Tensor) -> None:
        """Exploitation step whose loss stays on the device until the next sync."""
        self._records.append(HistoryRecord(step, self.stage, self.phase, self._lr, None))
        self._pending.append((len(self._records) - 1, loss.detach().reshape(())))
        self._phase_steps += 1
        due = len(self._pending) >= self.sync_every or self._phase_steps >= self._phase_len
        if due and not self._flush():
            self._recover()
        elif self._phase_steps >= self._phase_len:
            self._end_exploit()
        else:
            self._follow_plan()

    # ------------------------------------------------------------------ stage logic
    def _start_stage(self) -> None:
        s = self.search
        plan = s.plan(self.global_step)
        if plan.kind == "final":
            if s.variant == "budget" and not s.records:  # once: nothing was searched yet
                note = getattr(s.policy, "note", "") or "no search fits in max_steps"
                warnings.warn(
                    f"AutoLRS: {note}; training at lr={s.exploit_lr(self.global_step):.3g} "
                    "(the middle of lr_bounds) with the planned warm-up and decay",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self._enter_exploit(self._steps_left(), phase="final")
            return
        self._stage_k = plan.k
        self._snapshot.capture()
        self._ref_loss = s.reference_loss(self._recent)
        s.begin_stage()
        self._best_forecast = math.inf
        s.open_record(self.global_step)
        self._begin_candidate()

    def _default_val_every(self) -> int:
        # The budget variant compares the level each candidate reached: one evaluation at
        # the end of its window. The paper forecasts from 16 evaluations per window.
        if self.variant == "budget":
            return self.search.tau_prime
        return max(1, self.search.tau_prime // 16)

    def _steps_left(self) -> int | None:
        """Optimizer steps left in the budget (``None`` without ``max_steps``)."""
        return None if self.max_steps is None else self.max_steps - self.global_step

    def _begin_candidate(self) -> None:
        self.phase = "search"
        self._cand_lr = self.search.propose(1)[0]
        self._cand_losses, self._val_losses, self._val_steps = [], [], []
        self._phase_steps, self._over = 0, 0
        self._set_lr(self.search.candidate_lr(self._cand_lr, 0))

    def _candidate_step(self, value: float) -> None:
        self._phase_steps += 1
        n = self._phase_steps
        if not math.isfinite(value):
            return self._finish_candidate(penalised=True, reason="non-finite training loss")
        self._cand_losses.append(value)
        if self._ref_loss is None:
            self._ref_loss = value
        rule = self.search.divergence
        self._over, diverged = rule.update(self._over, value, self._ref_loss)
        if diverged:
            return self._finish_candidate(penalised=True, reason=rule.reason(value, self._ref_loss))
        if self.val_fn is not None:
            every = self.val_every or self._default_val_every()
            if n % every == 0 or n == self.search.tau_prime:
                v = self._validate()
                if not math.isfinite(v):
                    return self._finish_candidate(penalised=True, reason="non-finite validation")
                if not self._val_steps or self._val_steps[-1] != n - 1:
                    self._val_losses.append(v)
                    self._val_steps.append(float(n - 1))
        if n >= self.search.tau_prime:
            self._finish_candidate()
            return None
        if n == self.search.cooldown_start and self.continue_from == "best":
            # The winner continues from here, before its window cools down.
            self._cand_snapshot.capture()
        self._set_lr(self.search.candidate_lr(self._cand_lr, n))
        return None

    def _finish_candidate(self, *, penalised: bool = False, reason: str = "") -> None:
        s = self.search
        if self.val_fn is not None and not penalised:
            res = s.score(
                self._cand_lr,
                self._val_losses,
                steps=self._val_steps,
                trained_steps=self._phase_steps,
            )
        else:
            res = s.score(
                self._cand_lr,
                self._cand_losses,
                penalised=penalised,
                reason=reason,
                trained_steps=self._phase_steps,
            )
        last = self._records[-1]
        self._records[-1] = HistoryRecord(
            last.step, last.stage, last.phase, last.lr, last.loss, res.forecast
        )
        if (
            self.continue_from == "best"
            and not res.penalised
            and res.forecast < self._best_forecast
        ):
            self._best_forecast = res.forecast
            if s.cooldown_start is not None:
                self._best_snapshot, self._cand_snapshot = self._cand_snapshot, self._best_snapshot
            else:
                self._best_snapshot.capture()
        if len(s.results) < self._stage_k:
            self._snapshot.restore()
            self._begin_candidate()
        else:
            self._finish_search()

    def _finish_search(self) -> None:
        s = self.search
        win = s.winner()
        if win is None:
            action, value, msg = s.resolve_failure()
            warnings.warn(f"AutoLRS {msg}", RuntimeWarning, stacklevel=3)
            self._snapshot.restore()
            if action == "retry":
                s.begin_stage()
                self._best_forecast = math.inf
                self._begin_candidate()
                return
            win = CandidateResult(value, math.inf, 0.0, True, "fallback: lowest LR", 0)
        s.choose(win)
        kept = 0
        if (
            self.continue_from == "best"
            and not self._best_snapshot.empty
            and math.isfinite(self._best_forecast)
        ):
            self._best_snapshot.restore()
            kept = s.tau_prime - (s.plan_now.cooldown if s.plan_now is not None else 0)
        else:
            self._snapshot.restore()
        self._enter_exploit(s.exploit_length(self.global_step, kept), phase="exploit")

    def _enter_exploit(self, length: int | None, *, phase: str) -> None:
        self.phase = phase
        self._phase_steps = 0
        self._phase_len = 1 << 62 if length is None else max(0, int(length))
        self._set_lr(self.search.exploit_lr(self.global_step))
        if self._phase_len == 0:
            self._end_exploit()

    def _end_exploit(self) -> None:
        if self.phase == "final":
            return  # the budget check ends the run
        self.search.update_record(end=self.global_step)
        self.search.end_stage()
        self._start_stage()

    def _recover(self) -> None:
        """A non-finite loss while exploiting: restore the stage start, search lower."""
        bad = self._lr
        self._pending.clear()
        self.recoveries += 1
        self._snapshot.restore()
        lo, hi = self.search.recover(bad)
        warnings.warn(
            f"AutoLRS: non-finite loss at step {self.global_step - 1} with lr={bad:.3g}; "
            f"restored the stage start and searching again in [{lo:.3g}, {hi:.3g}]",
            RuntimeWarning,
            stacklevel=3,
        )
        if self.phase == "final" and self.max_steps is not None:
            # No budget for a search: continue at the safer upper bound.
            self.search.winner_lr = hi
            self._enter_exploit(self._steps_left(), phase="final")
            return
        self.search.begin_stage()
        self._best_forecast = math.inf
        self._begin_candidate()

    def _restart_warmup(self) -> None:
        self.recoveries += 1
        self._snapshot.restore()
        self.warmup_lr /= 10.0
        self._warmup_start = self.global_step
        warnings.warn(
            f"AutoLRS: non-finite loss during warm-up; restored the initial state and "
            f"restarting warm-up with peak lr {self.warmup_lr:.3g}",
            RuntimeWarning,
            stacklevel=3,
        )
        self._set_lr(self._warmup_lr_at(0))

    def _check_budget(self) -> None:
        if self.max_steps is not None and self.global_step >= self.max_steps:
            self._flush()
            self.phase = "done"

    # ------------------------------------------------------------------ helpers
    def _follow_plan(self) -> None:
        """Exploitation step: the plan's LR (the final decay), written only when it changes.

        No restore happens inside an exploitation phase, so the optimizer still holds
        ``self._lr``; skipping the write keeps the per-step cost to a comparison.
        """
        lr = self.search.exploit_lr(self.global_step)
        if lr != self._lr:
            self._set_lr(lr)

    def _set_lr(self, lr: float) -> None:
        self._lr = float(lr)
        self._group_lrs.set(self._lr)

    def _warmup_lr_at(self, step: int) -> float:
        return warmup_lr(self.warmup_lr, step, self.warmup_steps)

    def _remember(self, value: float) -> None:
        self._recent.append(value)
        if len(self._recent) > 256:
            del self._recent[:128]

    def _validate(self) -> float:
        assert self.val_fn is not None
        was_training = self.model.training
        rng = capture_rng_state()
        try:
            with torch.no_grad():
                out = self.val_fn()
        finally:
            restore_rng_state(rng)
            self.model.train(was_training)
        return _as_float(out)

    def _flush(self) -> bool:
        """Read back pending tensor losses; False if any is non-finite."""
        if not self._pending:
            return True
        idx, tensors = zip(*self._pending)
        values = torch.stack([t.float() for t in tensors]).cpu().tolist()
        self._pending.clear()
        ok = True
        for i, v in zip(idx, values):
            r = self._records[i]
            self._records[i] = HistoryRecord(r.step, r.stage, r.phase, r.lr, float(v), r.forecast)
            if math.isfinite(v):
                self._remember(float(v))
            else:
                ok = False
        return ok

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-stage (plain values and CPU tensors).

        Includes the searcher, the predictor and the stage snapshot(s); save it next to the
        model's and optimizer's ``state_dict`` (and your RNG state) in your checkpoint.
        """
        self._flush()
        return {
            "version": 2,
            "search": self.search.state_dict(),
            "snapshot": self._snapshot.state_dict(),
            "best_snapshot": self._best_snapshot.state_dict(),
            "cand_snapshot": self._cand_snapshot.state_dict(),
            "global_step": self.global_step,
            "phase": self.phase,
            "lr": self._lr,
            "stage_k": self._stage_k,
            "phase_steps": self._phase_steps,
            "phase_len": self._phase_len,
            "cand_lr": self._cand_lr,
            "cand_losses": list(self._cand_losses),
            "val_losses": list(self._val_losses),
            "val_steps": list(self._val_steps),
            "over": self._over,
            "ref_loss": self._ref_loss,
            "recent": list(self._recent),
            "best_forecast": self._best_forecast,
            "recoveries": self.recoveries,
            "warmup_start": self._warmup_start,
            "warmup_lr": self.warmup_lr,
            "variant": self.variant,
            "history": {
                "step": [r.step for r in self._records],
                "stage": [r.stage for r in self._records],
                "phase": [r.phase for r in self._records],
                "lr": [r.lr for r in self._records],
                "loss": [r.loss for r in self._records],
                "forecast": [r.forecast for r in self._records],
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; also sets the optimizer's LR to the saved one.

        Raises:
            StateError: If ``state`` is not an AutoLRS state or its phase is unknown.
        """
        if not isinstance(state, Mapping) or state.get("version") != 2:
            raise StateError("not an AutoLRS state_dict (missing or unknown 'version')")
        if state.get("variant") != self.variant:
            raise StateError(
                f"state is from a variant={state.get('variant')!r} AutoLRS, this one is "
                f"{self.variant!r}"
            )
        if state["phase"] not in _PHASES:
            raise StateError(f"unknown phase {state['phase']!r} in AutoLRS state_dict")
        self.search.load_state_dict(state["search"])
        self._snapshot.load_state_dict(state["snapshot"])
        self._best_snapshot.load_state_dict(state["best_snapshot"])
        self._cand_snapshot.load_state_dict(state["cand_snapshot"])
        self.global_step = int(state["global_step"])
        self.phase = str(state["phase"])
        self._stage_k = int(state["stage_k"])
        self._phase_steps = int(state["phase_steps"])
        self._phase_len = int(state["phase_len"])
        self._cand_lr = float(state["cand_lr"])
        self._cand_losses = [float(v) for v in state["cand_losses"]]
        self._val_losses = [float(v) for v in state["val_losses"]]
        self._val_steps = [float(v) for v in state["val_steps"]]
        self._over = int(state["over"])
        self._ref_loss = None if state["ref_loss"] is None else float(state["ref_loss"])
        self._recent = [float(v) for v in state["recent"]]
        self._best_forecast = float(state["best_forecast"])
        self.recoveries = int(state["recoveries"])
        self._warmup_start = int(state["warmup_start"])
        self.warmup_lr = float(state["warmup_lr"])
        h = state["history"]
        self._records = [
            HistoryRecord(int(a), int(b), str(c), float(d), e, f)
            for a, b, c, d, e, f in zip(
                h["step"], h["stage"], h["phase"], h["lr"], h["loss"], h["forecast"]
            )
        ]
        self._pending = []
        self._set_lr(float(state["lr"]))


# ---------------------------------------------------------------------- module helpers
def _check_model_optimizer(model: Any, optimizer: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigTypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    own = {id(p) for p in model.parameters()}
    foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in own]
    if foreign:
        raise ConfigTypeError(
            f"optimizer holds {len(foreign)} parameter tensor(s) that are not parameters of "
            "the model; AutoLRS snapshots the model, so the optimizer must be built over "
            "model.parameters()"
        )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def _as_float(loss: float | torch.Tensor) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ConfigError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        return float(loss.detach().float().item())
    try:
        return float(loss)
    except (TypeError, ValueError) as exc:
        raise ConfigTypeError(f"loss must be a float or a scalar tensor, got {loss!r}") from exc
