"""AutoLRS inside an ordinary PyTorch training loop (the in-process executor)."""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from autolr.predictors import Predictor
from autolr.searchers import Searcher

from .._deprecate import RenamedAttribute
from .._distributed import RankZeroPredictor, resolve_group
from .._errors import ConfigError, ConfigTypeError, StateError
from .._hypergrad import HypergradientLR
from .._schedule import Schedule
from .._snapshot import Snapshot, Stateful, _RngState, state_finite
from .._validate import (
    check_callable,
    check_choice,
    check_float,
    check_instance,
    check_int,
    scalar_value,
)
from ._history import PHASES as _PHASES
from ._history import History, HistoryRecord
from ._lr import GroupLRs
from ._policy import BudgetPolicy, DivergenceRule, warmup_lr
from ._stage import MAX_SKIPPED_IN_A_ROW, CandidateResult, StageRecord, StageSearch

__all__ = ["AutoLRS", "HistoryRecord"]


# Warnings are attributed to the first frame outside this package (see _warn).
_HERE = os.path.dirname(os.path.abspath(__file__))
_FLOAT_MAX = sys.float_info.max
# Warm-up restarts warned about one by one; the next says the loss does not depend on the LR.
_WARMUP_WARNINGS = 3


def _warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside ``autolr/_autolrs``.

    A warning can start several calls deep inside :meth:`AutoLRS.step`; a fixed
    ``stacklevel`` breaks whenever that depth changes, and the warning then points into the
    tuner instead of the user's ``tuner.step(...)`` line (or the callback that made it).
    """
    frame = sys._getframe(1)
    level = 2  # warnings.warn's level for the frame that called _warn
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE:
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _with_scaler(
    extras: Mapping[str, Stateful] | None, scaler: Any | None
) -> Mapping[str, Stateful] | None:
    """``extras`` with ``scaler`` registered as ``"grad_scaler"`` unless it is there already.

    A candidate that diverges under a GradScaler halves the scale with every skipped step;
    unrestored, the next candidate (and the rest of the run) starts from that smaller scale,
    where fp16 gradients underflow to zero. The Lightning and HF callbacks use the same name.
    """
    if scaler is None or not isinstance(scaler, Stateful):
        return extras
    extras = dict(extras or {})
    if any(obj is scaler for obj in extras.values()):
        return extras
    if "grad_scaler" in extras:
        raise ConfigError(
            "extras['grad_scaler'] is not the scaler= given; the tuner registers scaler= "
            "under that name so that restores bring its scale back: pass the same object, "
            "or register your other object under another name"
        )
    extras["grad_scaler"] = scaler
    return extras


class AutoLRS:
    """Automatic LR schedule by Bayesian optimisation on the fly (Jin et al., ICLR 2021).

    Call :meth:`step` with the loss after every ``optimizer.step()``. Every step is a real
    optimizer step of your loop: the tuner only sets the LR and restores state. Every decision
    is made by :attr:`search` (a :class:`~autolr.StageSearch`); this class carries them out.

    **Budget variant** (``variant="budget"``, the default whenever ``max_steps`` is given): the
    run is planned from the budget by a :class:`~autolr.BudgetPolicy`: a linear warm-up over
    5 % of it, one search of 4 candidates (more in a box wider than ~3.4 decades) that each
    train a window from the same snapshot, ending in a short cooldown (the discarded windows
    cost at most 20 % of the budget), then the winner continues from its own state before the
    cooldown at its LR, which decays to zero as 1 - sqrt(x) over the last half of the budget.

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
            parameter groups have different LRs, their ratios are kept; a group built with
            ``lr=0`` stays frozen at 0. The tuner owns every group's LR: one changed by
            anything else (an LR scheduler, a ``param_group["lr"]`` write) gives one
            warning, the tuner's LR is written back, and :attr:`history` records the LR
            each step really ran with.
        lr_bounds: ``(low, high)`` LR search box, searched in log space. The budget
            variant's first search tries 4 candidates in a box of up to ~3.4 decades and
            one per 0.75 decades in a wider one.
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
            ``BudgetPolicy.for_budget(max_steps, searches=3, decay_frac=0.2)`` (default:
            ``BudgetPolicy.for_budget(max_steps, lr_bounds=lr_bounds)``).
        compare: How candidates are scored (see :class:`~autolr.StageSearch`); default
            ``"cooled"`` (budget: the loss after each window's cooldown) or ``"forecast"``
            (paper).
        searcher: Custom searcher over one log-scale parameter named ``"lr"``.
        predictor: Custom forecaster (default :class:`~autolr.predictors.ExponentialPredictor`).
        seed: Seed of the default searcher (the tuner is deterministic given it).
        val_fn: Optional zero-argument callable returning a validation loss. When given,
            candidates are scored on validation losses, taken every ``val_every`` steps.
            It runs under ``torch.no_grad()``; the model's train/eval mode and the RNG
            states are restored afterwards so validation never perturbs training. It must
            return a float or a scalar tensor (else :class:`~autolr.ConfigTypeError` at its
            first call). A non-finite value on a finite model blames ``val_fn``: one warning,
            then candidates are scored on training losses.
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
        scaler: The ``torch.amp.GradScaler`` of a mixed-precision loop: a step after which
            its scale dropped (it found inf/NaN gradients and skipped ``optimizer.step()``)
            counts as ``step(loss, skipped=True)``. Reads the scale once per step (a host
            sync on GPU). Restored with the snapshots as the extra ``"grad_scaler"`` (unless
            ``extras`` already holds it under another name).
        process_group: ``torch.distributed`` synchronisation. ``None`` (default): the default
            group when ``torch.distributed`` is initialised, else none; ``False``: none (each
            process tunes alone); or a ``ProcessGroup``. Every rank then calls
            :meth:`step` with its own loss; the tuner averages it across ranks, so every
            rank's tuner takes the same decisions and restores its own snapshots (LR
            proposals and forecasts come from rank 0; ``val_fn`` values are averaged too).
            One all-reduce per step, which also checks that the ranks agree.

    Raises:
        ConfigError: Invalid bounds or step counts (``tau_prime >= tau``, ``k < 1``...), or
            parameter-group LRs whose ratios cannot be kept (every group at 0, a negative
            or non-finite LR).
        ConfigTypeError: ``model``/``optimizer`` of the wrong type, or an optimizer holding
            parameters that are not the model's.

    Attributes:
        skipped_steps: Steps a ``GradScaler`` skipped (``step(loss, skipped=True)``).
        skipped_losses: Non-finite losses skipped because they poisoned nothing (budget
            variant); formerly ``nonfinite_skipped`` (a deprecated alias for one release).
        recoveries: Restores of the stage start after a non-finite loss while exploiting
            (or a restarted warm-up).

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

    nonfinite_skipped = RenamedAttribute("skipped_losses")

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
        scaler: Any | None = None,
        process_group: Any = None,
    ) -> None:
        _check_model_optimizer(model, optimizer)
        check_instance("restore_rng", restore_rng, bool)  # named here, not as Snapshot's rng
        if scaler is not None and not (
            callable(getattr(scaler, "get_scale", None))
            and callable(getattr(scaler, "is_enabled", None))
        ):
            raise ConfigTypeError(
                "scaler must be a torch.amp.GradScaler (anything with get_scale() and "
                f"is_enabled()), got {type(scaler).__name__}"
            )
        extras = _with_scaler(extras, scaler)
        sync = resolve_group(process_group)
        if max_steps is not None:
            check_int("max_steps", max_steps, minimum=1)
        if variant is None:
            variant = "budget" if max_steps is not None else "paper"
        structure = {"tau": tau, "tau_prime": tau_prime, "k": k, "tau_max": tau_max,
                     "double": double}  # fmt: skip
        if variant == "budget" and max_steps is not None:
            if warmup_steps is not None:
                check_int("warmup_steps", warmup_steps, minimum=0)
            if policy is None:
                policy = BudgetPolicy.for_budget(
                    max_steps, warmup=warmup_steps, lr_bounds=lr_bounds
                )
            else:
                check_instance("policy", policy, BudgetPolicy)
            warmup_steps = policy.warmup
        elif warmup_steps is None:
            warmup_steps = 0
        continue_from = continue_from or ("best" if variant == "budget" else "start")
        check_choice("continue_from", continue_from, ("start", "best"))
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
        check_int("warmup_steps", warmup_steps, minimum=0)
        check_int("sync_every", sync_every, minimum=1)
        if val_every is not None:
            check_int("val_every", val_every, minimum=1)
        if val_fn is not None:
            check_callable("val_fn", val_fn)
        if warmup_lr is None:
            warmup_lr = self.search.initial_lr
        else:
            warmup_lr = check_float("warmup_lr", warmup_lr, minimum=0, min_inclusive=False)
        # Said once, here, where the plan is known: a budget that cannot hold the search
        # asked for would otherwise only show in `stages` after the run.
        report = self.search.budget_report(warmup_steps)
        if report:
            _warn(f"AutoLRS: {report}", RuntimeWarning)

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
        self.scaler = scaler
        self._sync = sync
        if sync is not None:
            # Curve fits may differ in their last bits between processes: use rank 0's.
            self.search.predictor = RankZeroPredictor(self.search.predictor, sync)  # type: ignore[assignment]
        self._snapshot = Snapshot(model, optimizer, extras=extras, offload=offload, rng=restore_rng)
        self._best_snapshot = Snapshot(
            model, optimizer, extras=extras, offload=offload, rng=restore_rng
        )
        # A candidate's state before its cooldown (budget variant with cooled windows).
        self._cand_snapshot = Snapshot(
            model, optimizer, extras=extras, offload=offload, rng=restore_rng
        )
        self._group_lrs = GroupLRs(optimizer)
        # Sees the LRs each optimizer.step() really runs with (a scheduler may change them).
        self._group_lrs.watch()
        self._lr_warned = False
        self._unstepped_warned = False
        # The arguments a checkpoint must agree on (see load_state_dict).
        self._config = _config_of(
            self.search, variant, max_steps, continue_from, warmup_steps, float(warmup_lr)
        )

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
        self._records = History()
        self.recoveries = 0
        self._restores = 0  # snapshot restores so far (not saved: only compared within a step)
        # Non-finite losses skipped because they poisoned nothing (budget variant).
        self.skipped_losses = 0
        self._nonfinite_streak = 0
        # val_fn gave a non-finite value on a finite model: score on training losses instead.
        self._val_broken = False
        # Optimizer steps the GradScaler skipped (reported, not counted as steps).
        self.skipped_steps = 0
        # The exploited lineage: runs [start, end) of steps whose updates the weights hold
        # now; each snapshot keeps the lineage it was captured with (keyed by the object,
        # which follows the best/candidate swap). None: unknown (an old checkpoint).
        self._line: list[tuple[int, int]] | None = []
        self._lines: dict[int, list[tuple[int, int]] | None] = {}
        self._scale_seen = self._read_scale()
        # The fast path (see step and _open_fast): steps it may still take, the losses it
        # took but did not record yet, the LR the first of them used, the LR to set after
        # each (None: the LR stays) and what computes those at the window's first fast step.
        self._fast_left = 0
        self._fast_vals: list[float] = []
        self._fast_lr0 = 0.0
        self._fast_lrs: list[float] | None = None
        self._fast_plan: Callable[[], list[float]] = list
        self._fast_limit = _FLOAT_MAX  # a candidate's loss above it is not a fast step

        self._warmup_start = 0
        if warmup_steps > 0:
            # Kept so a non-finite warm-up loss can be undone (nothing else is saved yet).
            self._capture(self._snapshot)
            self._set_lr(self._warmup_lr_at(0))
        else:
            self._start_stage()

    # ------------------------------------------------------------------ public view
    @property
    def lr(self) -> float:
        """The LR the optimizer will use for the next step (first group with a positive LR)."""
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
        self._flush()  # records the fast path's steps too
        return self._records.records()

    @property
    def schedule(self) -> list[float]:
        """The LR actually used at every optimizer step, search steps included."""
        self._drain_fast()
        return self._records.lr.tolist()

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

    def export_schedule(self, steps: int | None = None, *, kind: str = "linear") -> Schedule:
        """The LR schedule of the exploited lineage, for a plain replay run.

        Only the steps whose updates the weights kept: warm-up, the exploitation phases and,
        when the run continues from the winning candidate (``continue_from="best"``, the
        budget variant), the winner's own window up to its cooldown. Discarded candidates,
        a winner's window that was restored away (``continue_from="start"``) and steps
        undone by a recovery are left out. The ``i``-th LR is the one the ``i``-th step of
        the lineage used (as in :attr:`history`). Called mid-run it describes the weights
        as they are (a candidate being tried included).

        Args:
            steps: Stretch the schedule to this many steps (see :meth:`Schedule.stretch`);
                ``None`` keeps the lineage's length.
            kind: How to stretch (``"linear"`` or ``"previous"``).

        Raises:
            StateError: No step has been taken yet.
            ConfigError: Invalid ``steps`` or ``kind``.

        Example:
            >>> model = torch.nn.Linear(2, 1)
            >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
            >>> tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 0.1), max_steps=100)
            >>> for _ in range(100):
            ...     loss = model(torch.ones(4, 2)).pow(2).mean()
            ...     opt.zero_grad(); loss.backward(); opt.step(); tuner.step(loss.item())
            >>> sched = tuner.export_schedule()  # the 3 discarded candidates' windows left out
            >>> sched.n_steps < 100, tuner.export_schedule(steps=100).n_steps
            (True, 100)
        """
        self._flush()
        if self._line is None:
            # A checkpoint of an autolr that did not record the lineage: every search step
            # is left out (exact for continue_from="start", short of the winner's window else).
            _warn(
                "AutoLRS.export_schedule: this run was resumed from a checkpoint that did not "
                "record which steps the weights kept; the schedule leaves out every search step",
                RuntimeWarning,
            )
            h, skip = self._records, {_PHASES.index("search"), _PHASES.index("done")}
            lrs = [lr for lr, c in zip(h.lr, h.phase) if c not in skip]
        else:
            lrs = [lr for a, b in self._line for lr in self._records.lr[a:b]]
        if not lrs:
            raise StateError(
                "AutoLRS.export_schedule: no optimizer step was taken yet, so there is no "
                "schedule to export; call it after training (or after some tuner.step() calls)"
            )
        sched = Schedule.from_lrs(lrs, source="AutoLRS")
        return sched._exported(steps, kind)

    def register(self, name: str, obj: Stateful) -> None:
        """Save and restore ``obj`` (GradScaler, EMA, ...) with the model from now on."""
        self._snapshot.register(name, obj)
        self._best_snapshot.register(name, obj)
        self._cand_snapshot.register(name, obj)

    # ------------------------------------------------------------------ the hook
    def step(self, loss: float | torch.Tensor, *, skipped: bool = False) -> None:
        """Report the loss of the optimizer step that just happened; sets the next LR.

        May restore the model and optimizer to the stage snapshot (between candidates and
        before exploitation). Never raises on non-finite losses: a candidate is penalised, an
        exploitation step triggers a restore and a new search below the offending LR. In the
        budget variant a non-finite loss that left the weights and optimizer state finite (a
        bad batch the loop skipped) is skipped in every phase, up to two in a row.

        Under ``torch.distributed`` (see ``process_group``) call it on every rank with that
        rank's loss: the tuner averages the losses across ranks and every rank takes the same
        decision.

        Args:
            loss: The training loss of this step (float or scalar tensor).
            skipped: True when the optimizer did not step (a ``GradScaler`` found inf/NaN
                gradients and skipped ``optimizer.step()``): the step is not counted (not in
                :attr:`history`, the plan, a candidate's window or a forecast; no divergence),
                only tallied in :attr:`skipped_steps`, and the LR stays. With ``scaler=``
                given at construction skips are also detected from the scale. A skipped
                step whose loss is non-finite with non-finite weights or optimizer state, or
                the third such in a row, is a diverged model and handled as a non-finite loss.

        Raises:
            ConfigTypeError: ``skipped`` is not a bool.
            ConfigError: Parameter groups were added to (or removed from) the optimizer after
                the tuner was built; raised before the step changes anything.
            StateError: Under ``torch.distributed``, the ranks' tuners disagree (a rank
                skipped a call, or the tuners were built with different arguments).
        """
        if self._fast_left and skipped is False:
            if type(loss) is not float and (
                type(loss) is torch.Tensor
                and self.sync_every == 1
                and loss.device.type == "cpu"
                and loss.dim() == 0
            ):
                # A CPU loss costs nothing to read (no device to wait for): as the general
                # path would read it, so the step can take the fast path below. ~14 µs a
                # step less for the common `tuner.step(loss)` on a CPU model.
                loss = scalar_value(loss, "loss must be a scalar")
            if (
                type(loss) is float
                and -_FLOAT_MAX <= loss <= self._fast_limit  # finite (NaN fails), not over
                and self._group_lrs.take_unchanged()
            ):
                # A step with nothing to decide (see _open_fast): count it, keep its loss
                # for the records (written by _drain_fast) and set the planned LR. The
                # general path's Python was 5 % of a millisecond step (issue 11's overhead
                # target).
                self._fast_left -= 1
                vals = self._fast_vals
                vals.append(loss)
                self.global_step += 1
                i = len(vals) - 1
                if i == 0:
                    self._plan_fast()
                lrs = self._fast_lrs
                if lrs is not None and lrs[i] != self._lr:
                    self._set_lr(lrs[i])
                return None
        self._drain_fast()
        if not isinstance(skipped, bool):
            raise ConfigTypeError(f"skipped must be a bool, got {skipped!r}")
        self._group_lrs.check_groups()  # before a restore would fail inside torch
        scale = None if self.scaler is None else self._read_scale()
        if self._scale_seen is not None and scale is not None and scale < self._scale_seen:
            skipped = True  # the scaler backed off: it found inf/NaN gradients and skipped
        deferred = (
            self.phase in ("exploit", "final")
            and isinstance(loss, torch.Tensor)
            and self.sync_every > 1
        )
        if self._sync is not None:
            check = (self.global_step, _PHASES.index(self.phase), self.stage, self._lr)
            loss, skipped = self._sync.step(loss, skipped, check, read=not deferred)
        # A skipped step whose own loss is non-finite with poisoned weights, or the third in a
        # row, is a diverged model, not an overflow: a GradScaler skips every step of one and
        # halves its scale towards 0, so counted as skips it ended runs with NaN weights and
        # no search. It is handled as the non-finite loss of a step instead.
        if skipped and (math.isfinite(_as_float(loss)) or self._isolated_nonfinite()):
            self.skipped_steps += 1
            self._group_lrs.take_used()  # a step hook that fired says nothing: no update
            self._scale_seen = scale
            return None
        restores = self._restores
        try:
            return self._step(loss, deferred)
        finally:
            # A restore may bring back a registered scaler's older scale.
            self._scale_seen = scale if self._restores == restores else self._read_scale()
            self._open_fast()

    def _open_fast(self) -> None:
        """Let the next steps take the fast path in :meth:`step`: those where nothing happens.

        In warm-up, a candidate's window or exploitation, every step up to (not including)
        the next one where the general path acts: the end of the warm-up, the window or the
        phase, a validation, the snapshot before a cooldown, the budget's end. At most 1024
        at a time. A candidate's loss above the divergence threshold goes the general way.
        Not with a scaler or a process group (their checks run on every step). Every phase
        change happens in the general path, which calls this after each step, so the window
        never spans one. The window's LRs are planned only when its first fast step is
        taken (:meth:`_plan_fast`): steps that keep declining it (tensor losses, tensor LRs,
        an LR written by someone else) cost no plan each.
        """
        self._fast_left = 0
        if self.scaler is not None or self._sync is not None or self._pending:
            return
        phase, step, s = self.phase, self.global_step, self.search
        limit = _FLOAT_MAX  # no limit, but an infinite loss still goes the general way
        plan: Callable[[int], list[float]]  # the LR after each of the next n steps
        if phase == "exploit" or phase == "final":
            n = self._phase_len - self._phase_steps - 1
            plan = lambda n: s.exploit_lrs(step + 1, n) or [s.lr] * n  # noqa: E731
        elif phase == "warmup":
            done = step - self._warmup_start
            n = self.warmup_steps - done - 1
            plan = lambda n: [self._warmup_lr_at(done + 1 + i) for i in range(n)]  # noqa: E731
        elif phase == "search" and self._ref_loss is not None:
            t = self._phase_steps
            end = s.tau_prime  # the window's last step scores it
            if self.val_fn is not None and not self._val_broken:
                every = self.val_every or self._default_val_every()
                end = min(end, (t // every + 1) * every)
            if self.continue_from == "best" and (s.cooldown_start or 0) > t:
                end = min(end, s.cooldown_start)  # type: ignore[type-var]
            n = end - t - 1
            plan = lambda n: [s.candidate_lr(self._cand_lr, t + 1 + i) for i in range(n)]  # noqa: E731
            limit = min(s.divergence.threshold(self._ref_loss), _FLOAT_MAX)
        else:
            return
        n = min(n, 1024)
        if self.max_steps is not None:
            n = min(n, self.max_steps - step - 1)
        if n <= 0:
            return
        self._fast_plan = functools.partial(plan, n)
        self._fast_lr0 = self._lr
        self._fast_limit = limit
        self._fast_left = n

    def _plan_fast(self) -> None:
        """The window's LRs, at its first fast step (``None`` when the LR stays)."""
        lrs = self._fast_plan()
        self._fast_lrs = None if all(x == self._fast_lr0 for x in lrs) else lrs

    def _drain_fast(self) -> None:
        """Record the fast path's steps as the general path would have, one by one."""
        self._fast_left = 0
        vals = self._fast_vals
        if not vals:
            return
        self._fast_vals = []
        n = len(vals)
        first = self.global_step - n
        stage, phase, lr, lrs = self.search.stage, self.phase, self._fast_lr0, self._fast_lrs
        used = [lr] * n if lrs is None else [lr, *lrs[: n - 1]]  # the LR before each step
        self._records.extend(first, stage, phase, used, vals)
        self._extend_line(first, n)
        if phase == "search":
            self._cand_losses.extend(vals)
            self._over = 0  # every one was under the divergence threshold
            self._nonfinite_streak = 0  # and finite
            self._phase_steps += n
            return
        self._remember(vals)
        if phase != "warmup":
            self._phase_steps += n

    def _step(self, loss: float | torch.Tensor, deferred: bool) -> None:
        step = self.global_step
        self.global_step += 1
        phase = self.phase
        stepped = True  # past the budget nothing counts: the done warning says so
        if phase == "done":
            used = self._lr
        else:
            used, stepped = self._lr_used(sync=not deferred)
            self._extend_line(step)
        if deferred:
            self._deferred_step(step, loss, used)  # type: ignore[arg-type]
            return self._check_budget()

        value = _as_float(loss)
        if not stepped and not self._unstepped_warned and math.isfinite(value):
            self._warn_unstepped(step)
        self._records.append(step, self.stage, phase, used, value)
        if phase == "done":
            if step == self.max_steps:  # warn once
                _warn(
                    f"AutoLRS.step() called after max_steps={self.max_steps}; the tuner is "
                    "done and leaves the LR unchanged",
                    RuntimeWarning,
                )
            return None
        if phase == "warmup":
            if not math.isfinite(value) and not self._harmless_nonfinite():
                self._restart_warmup()
            else:
                if math.isfinite(value):
                    self._remember([value])
                if self.global_step - self._warmup_start >= self.warmup_steps:
                    self._start_stage()
                else:
                    self._set_lr(self._warmup_lr_at(self.global_step - self._warmup_start))
        elif phase == "search":
            self._candidate_step(value)
        else:
            self._phase_steps += 1
            # Deferred tensor losses before this one (a loop that passes a float now and
            # then): read them first, in order, and act on a non-finite one as a sync would.
            read = self._flush() if self._pending else True
            if (not read or not math.isfinite(value)) and not self._harmless_nonfinite():
                self._recover()
            else:
                if math.isfinite(value):
                    self._remember([value])
                if self._phase_steps >= self._phase_len:
                    self._end_exploit()
                else:
                    self._follow_plan()
        return self._check_budget()

    def _deferred_step(self, step: int, loss: torch.Tensor, used: float) -> None:
        """Exploitation step whose loss stays on the device until the next sync."""
        self._records.append(step, self.stage, self.phase, used, None)
        self._pending.append((len(self._records) - 1, loss.detach().reshape(())))
        self._phase_steps += 1
        due = len(self._pending) >= self.sync_every or self._phase_steps >= self._phase_len
        if due and not self._flush() and not self._harmless_nonfinite():
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
            # A budget too small for any search was reported at construction.
            self._enter_exploit(self._steps_left(), phase="final")
            return
        self._stage_k = plan.k
        self._capture(self._snapshot)
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
        if self._sync is not None:
            # The GP's proposal may differ in its last bits between processes: rank 0's.
            self._cand_lr = float(self._sync.from_rank0(self._cand_lr))
        self._cand_losses, self._val_losses, self._val_steps = [], [], []
        self._phase_steps, self._over = 0, 0
        self._set_lr(self.search.candidate_lr(self._cand_lr, 0))

    def _candidate_step(self, value: float) -> None:
        self._phase_steps += 1
        n = self._phase_steps
        if math.isfinite(value):
            self._nonfinite_streak = 0
            self._cand_losses.append(value)
            if self._ref_loss is None:
                self._ref_loss = value
            rule = self.search.divergence
            self._over, diverged = rule.update(self._over, value, self._ref_loss)
            if diverged:
                reason = rule.reason(value, self._ref_loss)
                return self._finish_candidate(penalised=True, reason=reason)
        elif not self._harmless_nonfinite():
            return self._finish_candidate(penalised=True, reason="non-finite training loss")
        if self.val_fn is not None and not self._val_broken:
            every = self.val_every or self._default_val_every()
            if n % every == 0 or n == self.search.tau_prime:
                v = self._validate()
                if not math.isfinite(v) and not self._model_finite():
                    # The candidate's LR broke the weights: that candidate failed.
                    return self._finish_candidate(penalised=True, reason="non-finite validation")
                if not math.isfinite(v):
                    if self._val_fn_broken(v):
                        return None
                elif not self._val_steps or self._val_steps[-1] != n - 1:
                    self._val_losses.append(v)
                    self._val_steps.append(float(n - 1))
        if n >= self.search.tau_prime:
            self._finish_candidate()
            return None
        if n == self.search.cooldown_start and self.continue_from == "best":
            # The winner continues from here, before its window cools down.
            self._capture(self._cand_snapshot)
        self._set_lr(self.search.candidate_lr(self._cand_lr, n))
        return None

    def _finish_candidate(self, *, penalised: bool = False, reason: str = "") -> None:
        s = self.search
        if self.val_fn is not None and not self._val_broken and not penalised:
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
        self._records.set_forecast(-1, res.forecast)
        if (
            self.continue_from == "best"
            and not res.penalised
            and res.forecast < self._best_forecast
        ):
            self._best_forecast = res.forecast
            if s.cooldown_start is not None:
                self._best_snapshot, self._cand_snapshot = self._cand_snapshot, self._best_snapshot
            else:
                self._capture(self._best_snapshot)
        if len(s.results) < self._stage_k:
            self._restore(self._snapshot)
            self._begin_candidate()
        else:
            self._finish_search()

    def _finish_search(self) -> None:
        s = self.search
        win = s.winner()
        if win is None:
            action, value, msg = s.resolve_failure()
            _warn(f"AutoLRS {msg}", RuntimeWarning)
            self._restore(self._snapshot)
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
            self._restore(self._best_snapshot)
            kept = s.tau_prime - (s.plan_now.cooldown if s.plan_now is not None else 0)
        else:
            self._restore(self._snapshot)
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

    def _isolated_nonfinite(self) -> bool:
        """A non-finite loss that left weights and optimizer finite and is not the third in a
        row: counted in the streak. The test both a skipped step and a harmless skip make."""
        if self._nonfinite_streak >= MAX_SKIPPED_IN_A_ROW or not self._model_finite(optimizer=True):
            return False
        self._nonfinite_streak += 1
        return True

    def _harmless_nonfinite(self) -> bool:
        """Budget variant: skip a non-finite loss that left weights and optimizer finite.

        Such a loss is a bad batch the loop skipped (or a metric glitch), not the LR's fault.
        While exploiting, the winner trains on from its own state for most of the run, so
        rolling back to the search's snapshot would throw away everything since (a bad batch
        at step 250 of 300 ended at loss 10.8 instead of 1e-4). In warm-up and in a
        candidate's window the same batch comes back after every restore (the RNG is
        restored), so treating it as divergence restarted the warm-up forever or failed
        every candidate alike. A streak of such losses is not a bad batch: from the third in
        a row on, it is recovered from as any divergence.
        """
        if not self.search.skips_nonfinite(self._nonfinite_streak):
            return False
        if not self._isolated_nonfinite():
            return False
        self.skipped_losses += 1
        if self.skipped_losses == 1:
            _warn(
                f"AutoLRS: non-finite loss at step {self.global_step - 1} left the weights and "
                "optimizer state finite; skipped it and kept training (nothing rolled back). "
                "Later such losses are counted in `skipped_losses` without a warning",
                RuntimeWarning,
            )
        return True

    def _recover(self) -> None:
        """A non-finite loss while exploiting: restore the stage start, search lower."""
        bad = self._lr
        self._pending.clear()
        self.recoveries += 1
        # A non-finite loss that left weights and optimizer state finite (a bad batch, a
        # skipped step) cuts the LR box only until training is healthy again.
        transient = self._model_finite(optimizer=True)
        self._restore(self._snapshot)
        lo, hi = self.search.recover(bad, transient=transient)
        back = self.search.pending_restore
        _warn(
            f"AutoLRS: non-finite loss at step {self.global_step - 1} with lr={bad:.3g}; "
            f"restored the stage start and searching again in [{lo:.3g}, {hi:.3g}]"
            + (
                f" (the upper bound returns to {back[1]:.3g} once a stage ends with finite losses)"
                if back is not None
                else ""
            ),
            RuntimeWarning,
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
        self._restore(self._snapshot)
        self.warmup_lr /= 10.0
        self._warmup_start = self.global_step
        # Warm-up is the run's first phase, so `recoveries` counts its restarts. Three 10x
        # cuts that all fail say the loss is non-finite whatever the LR (a NaN batch that
        # poisons the weights comes back after every restore of the RNG): say so once and
        # stop warning, rather than once per restart until the budget ends.
        if self.recoveries <= _WARMUP_WARNINGS:
            _warn(
                f"AutoLRS: non-finite loss during warm-up; restored the initial state and "
                f"restarting warm-up with peak lr {self.warmup_lr:.3g}",
                RuntimeWarning,
            )
        elif self.recoveries == _WARMUP_WARNINGS + 1:
            _warn(
                f"AutoLRS: the loss is still non-finite in warm-up after {_WARMUP_WARNINGS} "
                f"restarts at a 10x lower LR each (peak lr now {self.warmup_lr:.3g}), so it "
                "does not come from the LR: a batch with NaN/inf, or a bug in the loss. Skip "
                "optimizer.step() on a non-finite loss and report it as "
                "tuner.step(loss, skipped=True), or fix the data. Later restarts are counted "
                "in `recoveries` without a warning",
                RuntimeWarning,
            )
        self._set_lr(self._warmup_lr_at(0))

    def _check_budget(self) -> None:
        if self.max_steps is not None and self.global_step >= self.max_steps:
            self._flush()
            self.phase = "done"

    # ------------------------------------------------------------------ helpers
    def _capture(self, snap: Snapshot) -> None:
        snap.capture()
        self._lines[id(snap)] = None if self._line is None else list(self._line)

    def _restore(self, snap: Snapshot) -> None:
        snap.restore()
        self._restores += 1
        line = self._lines.get(id(snap))
        self._line = None if line is None else list(line)

    def _extend_line(self, step: int, n: int = 1) -> None:
        """The lineage now holds steps ``step … step + n - 1`` too."""
        line = self._line
        if line is None:
            return
        if line and line[-1][1] == step:
            line[-1] = (line[-1][0], step + n)
        else:
            line.append((step, step + n))

    def _read_scale(self) -> float | None:
        """The GradScaler's current scale (``None``: no scaler, or one that is disabled)."""
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        return float(self.scaler.get_scale())

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

    def _lr_used(self, *, sync: bool) -> tuple[float, bool]:
        """The LR the step just taken really used, and whether an ``optimizer.step()`` ran
        since the previous call; warns once if something else set the LR.

        Compares every group's LR at ``optimizer.step()`` (and now) with what the tuner wrote.
        On a difference the tuner writes its own LR again, so a scheduler stepped after
        ``optimizer.step()`` never takes effect, and the history records what really ran.
        """
        g = self._group_lrs
        if g.take_unchanged():  # the common case, checked without building lists
            return self._lr, True
        used = g.take_used(sync=sync)
        stepped = used is not None
        bad = g.drift(used) if used is not None else []
        late = g.drift(g.read(sync=sync))
        if not bad and not late:
            return self._lr, stepped
        if not self._lr_warned:
            self._lr_warned = True
            i, want, got = (bad or late)[0]
            when = "at optimizer.step()" if bad else "after optimizer.step()"
            more = len({d[0] for d in bad + late}) - 1
            _warn(
                f"AutoLRS: param group {i}'s LR was changed outside the tuner {when} "
                f"(the tuner set {want:.6g}, found {got:.6g}"
                + (f"; {more} more group(s) changed" if more else "")
                + "). Most likely an LR scheduler (torch.optim.lr_scheduler) is stepped beside "
                "AutoLRS, or code writes param_group['lr']: remove it, AutoLRS sets every "
                "group's LR itself (shape its schedule with warmup_steps/warmup_lr, policy="
                "BudgetPolicy.for_budget(...) or variant='paper'). The tuner writes its own LR "
                "back at every step and its history records the LR each step really used.",
                RuntimeWarning,
            )
        g.set(self._lr)
        ref = g.reference
        if bad and used is not None and any(d[0] == ref for d in bad):
            return float(used[ref]), stepped  # type: ignore[arg-type]
        return self._lr, stepped

    def _warn_unstepped(self, step: int) -> None:
        """Once: a finite loss came with no optimizer step since the previous call.

        Most likely ``tuner.step`` is called per micro-batch under gradient accumulation,
        which spends the budget k times too fast and moves the LR between micro-batches. A
        non-finite loss without a step is a loop skipping a bad update: handled as such.
        """
        self._unstepped_warned = True
        _warn(
            f"AutoLRS.step() at step {step} came without an optimizer.step() since the "
            "previous call. Call it right after each optimizer.step() (once per step, after "
            "gradient accumulation) with that step's loss: every call counts toward the "
            "budget and may change the LR. Pass a step the optimizer skipped (a GradScaler's "
            "inf/NaN check) as step(loss, skipped=True), or give scaler= at construction",
            RuntimeWarning,
        )

    def _warmup_lr_at(self, step: int) -> float:
        return warmup_lr(self.warmup_lr, step, self.warmup_steps)

    def _remember(self, values: list[float]) -> None:
        """Keep finite losses for the stage's reference loss (the last 129-256 of them)."""
        self._nonfinite_streak = 0
        recent = self._recent
        # As if appended one by one, cutting the oldest 128 whenever there are over 256.
        total = len(recent) + len(values)
        keep = total if total <= 256 else 129 + (total - 257) % 128
        recent.extend(values)
        del recent[: len(recent) - keep]

    def _validate(self) -> float:
        assert self.val_fn is not None
        was_training = self.model.training
        rng = _RngState.capture()  # val_fn must not move the training's random stream
        try:
            with torch.no_grad():
                out = self.val_fn()
        finally:
            rng.restore()
            self.model.train(was_training)
        value = _val_float(out)
        return value if self._sync is None else self._sync.mean(value)

    def _model_finite(self, *, optimizer: bool = False) -> bool:
        """Whether every floating tensor of the model (and the optimizer state) is finite."""
        ok = state_finite(self.model, self.optimizer if optimizer else None)
        return ok if self._sync is None else self._sync.all_true(ok)

    def _val_fn_broken(self, value: float) -> bool:
        """val_fn returned ``value`` (non-finite) although the model is finite: blame it.

        Its value cannot be the candidate's fault (the weights and the training losses so
        far are finite), and penalising every candidate for it would shrink the LR box
        without end. Warns once; candidates are scored on their training losses from now on.
        Returns True when the stage's search restarted (earlier candidates were scored on
        validation losses, which training losses must not be compared with).
        """
        self._val_broken = True
        self._val_losses, self._val_steps = [], []
        restart = bool(self.search.results)
        _warn(
            f"AutoLRS: val_fn returned {value} at step {self.global_step - 1} while the model's "
            "weights and the candidate's training losses are finite, so val_fn, not the "
            "candidate LR, is at fault. Candidates are scored on their training losses from "
            "now on"
            + (
                f" (stage {self.stage}'s search starts again, as its earlier candidates "
                "were scored on val_fn)"
                if restart
                else ""
            )
            + "; fix val_fn to return a finite validation loss, or pass val_fn=None",
            RuntimeWarning,
        )
        if restart:
            self._restore(self._snapshot)
            self.search.begin_stage()
            self._best_forecast = math.inf
            self._begin_candidate()
        return restart

    def _flush(self) -> bool:
        """Read back pending tensor losses; False if any is non-finite."""
        self._drain_fast()
        if not self._pending:
            return True
        idx, tensors = zip(*self._pending)
        values = torch.stack([t.float() for t in tensors]).cpu().tolist()
        self._pending.clear()
        ok = True
        for i, v in zip(idx, values):
            self._records.set_loss(i, float(v))
            if math.isfinite(v):
                self._remember([float(v)])
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
            "version": 3,
            "kind": "AutoLRS",
            "config": dict(self._config),
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
            "val_broken": self._val_broken,
            "nonfinite_skipped": self.skipped_losses,  # state keys keep their first names
            "nonfinite_streak": self._nonfinite_streak,
            "skipped_steps": self.skipped_steps,
            # The scale after the last step: a resumed run detects a skip at its first step
            # whichever of the scaler and the tuner is loaded first.
            "scale_seen": self._scale_seen,
            "lineage": {
                "current": _runs(self._line),
                "snapshot": _runs(self._lines.get(id(self._snapshot))),
                "best_snapshot": _runs(self._lines.get(id(self._best_snapshot))),
                "cand_snapshot": _runs(self._lines.get(id(self._cand_snapshot))),
            },
            "history": self._records.to_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; also sets the optimizer's LR to the saved one.

        The whole state is checked before anything changes, and on an error the tuner is
        left as it was: its structure and types; its snapshots against this tuner's model
        and optimizer (parameter names, shapes, dtypes, parameter groups); and the run's
        configuration. A checkpoint fixes the plan: ``variant``, ``max_steps``,
        ``lr_bounds``, ``tau``, ``tau_prime``, ``k``, ``tau_max``, ``double``, ``policy``,
        ``compare``, ``continue_from``, ``warmup_steps`` and ``warmup_lr`` must be what it
        was saved with (build the tuner with the same arguments to resume; change the plan
        with a fresh tuner). Other arguments (``val_fn``, ``sync_every``, ``divergence_*``,
        ``offload``...) are this tuner's. States saved by autolr before version 3 carry
        only ``variant`` of that configuration.

        Raises:
            StateError: If ``state`` is not an AutoLRS state (naming the missing or
                malformed entries), was saved with other arguments (listing each, saved
                and given), or holds snapshots of another model or optimizer.
        """
        v = self._parse_state(state)
        # The only step that can still fail; it is atomic and nothing else changed yet.
        self.search.load_state_dict(state["search"])
        for snap, parsed in zip(
            (self._snapshot, self._best_snapshot, self._cand_snapshot), v.pop("snapshots")
        ):
            snap._state, snap._rng, snap._devices = parsed
        lines = v.pop("lineage")
        self._line = lines["current"]
        self._lines = {
            id(snap): lines[key]
            for snap, key in zip(
                (self._snapshot, self._best_snapshot, self._cand_snapshot),
                ("snapshot", "best_snapshot", "cand_snapshot"),
            )
        }
        self._records = v.pop("records")
        for name, value in v.items():
            setattr(self, name, value)
        self._pending = []
        self._fast_left, self._fast_vals = 0, []  # the next step takes the general path
        self._set_lr(self._lr)
        self._group_lrs.take_used()  # a step taken before the load says nothing about it

    def _parse_state(self, state: Any) -> dict[str, Any]:
        """The checked contents of a state (attribute name -> value); changes nothing."""
        if not isinstance(state, Mapping):
            raise StateError(f"not an AutoLRS state_dict: got a {type(state).__name__}")
        version = state.get("version")
        kind = state.get("kind", "AutoLRS" if version == 2 else None)
        missing = [k for k in _STATE_KEYS if k not in state]
        if version == 3 and "config" not in state:
            missing.append("config")
        if kind != "AutoLRS" or version not in (2, 3) or missing:
            raise StateError(_not_autolrs(state, version, kind, missing))
        if version == 3:
            diff = _config_diff(state["config"], self._config)
        else:
            diff = _config_diff({"variant": state["variant"]}, {"variant": self.variant})
        if diff:
            raise StateError(
                "AutoLRS state_dict was saved with other arguments than this tuner's: "
                + "; ".join(diff)
                + ". Build the tuner with the saved arguments to resume (a checkpoint fixes "
                "the run's plan)"
            )
        try:
            phase = state["phase"]
            if phase not in _PHASES:
                raise StateError(f"phase={phase!r} is not one of {_PHASES}")
            snapshots = []
            for key in ("snapshot", "best_snapshot", "cand_snapshot"):
                try:
                    snapshots.append(self._snapshot._parse_state(state[key]))
                except StateError as exc:
                    raise StateError(f"{key}: {exc}") from None
            if phase in ("search", "exploit") and snapshots[0][0] is None:
                raise StateError(f"phase {phase!r} needs the stage snapshot, which is empty")
            if not isinstance(state["search"], Mapping):
                raise StateError("its 'search' entry is not a StageSearch state_dict")
            records = _parse_history(state["history"])
            nat = lambda k: _nat(state[k], k)  # noqa: E731
            num = lambda k, low=None: _num(state[k], k, low=low)  # noqa: E731
            nums = lambda k: [_num(x, k) for x in _seq(state[k], k)]  # noqa: E731
            return {
                "snapshots": snapshots,
                "records": records,
                "lineage": _parse_lineage(state.get("lineage"), len(records)),
                "skipped_steps": _nat(state.get("skipped_steps", 0), "skipped_steps"),
                "_scale_seen": (
                    self._read_scale()
                    if state.get("scale_seen") is None or self.scaler is None
                    else _num(state["scale_seen"], "scale_seen", low=0.0)
                ),
                "global_step": nat("global_step"),
                "phase": phase,
                "_lr": num("lr", 0.0),
                "_stage_k": nat("stage_k"),
                "_phase_steps": nat("phase_steps"),
                "_phase_len": nat("phase_len"),
                "_cand_lr": num("cand_lr"),
                "_cand_losses": nums("cand_losses"),
                "_val_losses": nums("val_losses"),
                "_val_steps": nums("val_steps"),
                "_over": nat("over"),
                "_ref_loss": None if state["ref_loss"] is None else num("ref_loss"),
                "_recent": nums("recent"),
                "_best_forecast": num("best_forecast"),
                "recoveries": nat("recoveries"),
                "_warmup_start": nat("warmup_start"),
                "warmup_lr": num("warmup_lr", 0.0),
                # Absent before this entry existed: val_fn was still trusted then.
                "_val_broken": state.get("val_broken") is True,
                "skipped_losses": _nat(state.get("nonfinite_skipped", 0), "nonfinite_skipped"),
                "_nonfinite_streak": _nat(state.get("nonfinite_streak", 0), "nonfinite_streak"),
            }
        except StateError as exc:
            raise StateError(f"invalid AutoLRS state_dict: {exc}") from None


# ---------------------------------------------------------------------- module helpers
# Entries of every AutoLRS state_dict (version 3 adds "kind" and "config").
_STATE_KEYS = (
    "version", "search", "snapshot", "best_snapshot", "cand_snapshot", "global_step", "phase",
    "lr", "stage_k", "phase_steps", "phase_len", "cand_lr", "cand_losses", "val_losses",
    "val_steps", "over", "ref_loss", "recent", "best_forecast", "recoveries", "warmup_start",
    "warmup_lr", "variant", "history",
)  # fmt: skip
# Entries that tell another autolr object's state_dict apart, for the error message.
_OTHER_STATES = (
    ("hypergrad", "a HypergradientLR"),
    ("hyper_optimizer", "an STNTuner"),
    ("space", "an STNTuner"),
)


def _not_autolrs(state: Mapping[str, Any], version: Any, kind: Any, missing: list[str]) -> str:
    """Why ``state`` is not an AutoLRS state_dict, and what it looks like instead."""
    if isinstance(kind, str) and kind != "AutoLRS":
        what = f"it is a {kind} state_dict"
    else:
        what = next((w + " state_dict" for key, w in _OTHER_STATES if key in state), "")
        what = f"it looks like {what}" if what else ""
    if version not in (2, 3):
        why = f"unknown version {version!r} (this autolr reads 2 and 3)"
    elif missing and not what:
        why = f"it lacks {', '.join(repr(k) for k in missing[:6])}"
        why += f" and {len(missing) - 6} more" if len(missing) > 6 else ""
    else:
        why = ""
    keys = ", ".join(repr(k) for k in list(state)[:8]) + (", ..." if len(state) > 8 else "")
    return "not an AutoLRS state_dict: " + "; ".join(
        x for x in (what, why, f"its entries are {keys}") if x
    )


def _config_of(
    search: StageSearch,
    variant: str,
    max_steps: int | None,
    continue_from: str,
    warmup_steps: int,
    warmup_lr: float,
) -> dict[str, Any]:
    """The arguments that fix a run's plan, as plain values (``None``: not used)."""
    paper = variant == "paper"
    policy = search.policy
    plan = None
    if isinstance(policy, BudgetPolicy):
        plan = {k: _plain(v) for k, v in asdict(policy).items() if k != "note"}
    return {
        "variant": variant,
        "max_steps": max_steps,
        "lr_bounds": [float(b) for b in search.lr_bounds],
        "tau": search.tau if paper else None,
        "tau_prime": search.tau_prime if paper else None,
        "k": search.k if paper else None,
        "tau_max": search.tau_max if paper else None,
        "double": search.double if paper else None,
        "policy": plan,
        "compare": search.compare,
        "continue_from": continue_from,
        "warmup_steps": warmup_steps,
        "warmup_lr": warmup_lr,
    }


def _runs(line: list[tuple[int, int]] | None) -> list[list[int]] | None:
    return None if line is None else [[a, b] for a, b in line]


def _parse_history(h: Any) -> History:
    """The history of a state: tensor columns, or one list per field (earlier checkpoints)."""
    if isinstance(h, Mapping) and isinstance(h.get("step"), torch.Tensor):
        return History.from_state(h)
    # Checkpoints written before the history was kept as columns: one list per field.
    cols = [_seq(h[c] if isinstance(h, Mapping) and c in h else None, f"history.{c}")
            for c in ("step", "stage", "phase", "lr", "loss", "forecast")]  # fmt: skip
    if len({len(c) for c in cols}) > 1:
        raise StateError("the history columns have different lengths")
    records = History()
    for a, b, c, d, e, f in zip(*cols):
        if c not in _PHASES:
            raise StateError(f"history.phase={c!r} is not one of {_PHASES}")
        records.append(
            _nat(a, "history.step"),
            _nat(b, "history.stage"),
            c,
            _num(d, "history.lr"),
            None if e is None else _num(e, "history.loss"),
        )
        if f is not None:
            records.set_forecast(-1, _num(f, "history.forecast"))
    return records


def _parse_lineage(entry: Any, n_records: int) -> dict[str, list[tuple[int, int]] | None]:
    """The lineage entry of a state (absent before it existed: unknown, ``None``)."""
    keys = ("current", "snapshot", "best_snapshot", "cand_snapshot")
    if entry is None:
        return dict.fromkeys(keys)
    if not isinstance(entry, Mapping):
        raise StateError(f"lineage is {entry!r}, not a mapping")
    out: dict[str, list[tuple[int, int]] | None] = {}
    for key in keys:
        runs = entry.get(key)
        if runs is None:
            out[key] = None
            continue
        parsed = []
        for run in _seq(runs, f"lineage.{key}"):
            pair = _seq(run, f"lineage.{key}[]")
            if len(pair) != 2:
                raise StateError(f"lineage.{key} holds {run!r}, not a [start, end) pair")
            a, b = (_nat(x, f"lineage.{key}") for x in pair)
            if not (a < b <= n_records) or (parsed and a < parsed[-1][1]):
                raise StateError(
                    f"lineage.{key} has the run [{a}, {b}), not increasing within the "
                    f"{n_records} recorded steps"
                )
            parsed.append((a, b))
        out[key] = parsed
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config_diff(saved: Any, now: Mapping[str, Any]) -> list[str]:
    """``"name: saved X, given Y"`` for every argument that differs."""
    if not isinstance(saved, Mapping):
        raise StateError(f"invalid AutoLRS state_dict: config is a {type(saved).__name__}")
    out = []
    for name, mine in now.items():
        theirs = _plain(saved.get(name, "<missing>"))
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            out += [
                f"{name}.{k}: saved {_plain(theirs.get(k, '<missing>'))!r}, given {v!r}"
                for k, v in mine.items()
                if _plain(theirs.get(k, "<missing>")) != v
            ]
        elif theirs != mine:
            out.append(f"{name}: saved {theirs!r}, given {mine!r}")
    return out


def _seq(value: Any, name: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise StateError(f"{name} is {value!r}, not a list")
    return list(value)


def _nat(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"{name}={value!r} is not an int >= 0")
    return int(value)


def _num(value: Any, name: str, *, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{name}={value!r} is not a number")
    if low is not None and not (math.isfinite(value) and value >= low):
        raise StateError(f"{name}={value!r} is not a finite number >= {low}")
    return float(value)


def _check_model_optimizer(model: Any, optimizer: Any) -> None:
    check_instance("model", model, nn.Module)
    check_instance("optimizer", optimizer, torch.optim.Optimizer)
    if isinstance(optimizer, HypergradientLR):
        # Two LR controllers: each overwrote the other's LR, then the first restore failed
        # inside the snapshot code (its state_dict nests torch's under "optimizer").
        raise ConfigError(
            "optimizer is a HypergradientLR, which sets the LR itself at every step; AutoLRS "
            "sets it too. Use one of them: give AutoLRS the optimizer it wraps "
            "(hd.optimizer), or train with HypergradientLR alone"
        )
    own = {id(p) for p in model.parameters()}
    foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in own]
    if foreign:
        raise ConfigTypeError(
            f"optimizer holds {len(foreign)} parameter tensor(s) that are not parameters of "
            "the model; AutoLRS snapshots the model, so the optimizer must be built over "
            "model.parameters()"
        )


def _val_float(out: Any) -> float:
    """What ``val_fn`` returned, as a float; its own errors name ``val_fn``."""
    if isinstance(out, torch.Tensor):
        return scalar_value(out, "val_fn must return a scalar validation loss")
    if out is None or isinstance(out, (bool, str, bytes)):
        raise ConfigTypeError(
            f"val_fn must return the validation loss as a float or a scalar tensor, got "
            f"{out!r}{' (does it lack a return statement?)' if out is None else ''}"
        )
    try:
        return float(out)
    except (TypeError, ValueError) as exc:
        raise ConfigTypeError(
            f"val_fn must return the validation loss as a float or a scalar tensor, got "
            f"{type(out).__name__} {out!r}"
        ) from exc


def _as_float(loss: float | torch.Tensor) -> float:
    if isinstance(loss, torch.Tensor):
        return scalar_value(loss, "loss must be a scalar")
    try:
        return float(loss)
    except (TypeError, ValueError) as exc:
        raise ConfigTypeError(f"loss must be a float or a scalar tensor, got {loss!r}") from exc
