"""The in-loop AutoLRS (``autolr/_autolrs/_tuner.py``): survivors of the issue 18 mutation run.

Each test pins one behaviour the mutation sample showed unguarded, against an independent
oracle: an exact message, a value computed by hand from the documented rule, a twin run, or
an exact round trip of the state.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from autolr import AutoLRS, BudgetPolicy, ConfigError, ConfigTypeError, StateError
from autolr._autolrs._history import History
from autolr.searchers import Param, RandomSearcher

BOUNDS = (1e-3, 0.3)


def searcher() -> RandomSearcher:
    return RandomSearcher([Param("lr", *BOUNDS, log=True)], seed=0)


def build(**kw: Any) -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS]:
    """A linear model and a tuner (paper variant, stages of 3 x 4 + 12 steps, unless given)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kw.setdefault("searcher", searcher())
    if "max_steps" not in kw and "policy" not in kw:
        kw = {"variant": "paper", "tau": 12, "tau_prime": 4, "k": 3, "tau_max": 12, **kw}
    return model, opt, AutoLRS(model, opt, lr_bounds=BOUNDS, **kw)


def batches(seed: int = 0) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(8, 4, generator=gen)
        return x, x.sum(1, keepdim=True)

    return draw


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    tuner: AutoLRS,
    steps: int,
    *,
    draw: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    tensor: bool = False,
    poison_at: int | None = None,
) -> list[str]:
    """A user's loop; ``poison_at``: that step's update leaves NaN weights and a NaN loss."""
    said: list[str] = []
    for _ in range(steps):
        x, y = draw()
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if tuner.global_step == poison_at:
            with torch.no_grad():
                model.weight.fill_(math.nan)
            loss = torch.tensor(math.nan)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tuner.step(loss.detach() if tensor else loss.item())
        said += [str(w.message) for w in caught]
    return said


def same(a: Any, b: Any) -> bool:
    """Exact equality of nested states (tensors by value, dtype and shape)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN here


# ---------------------------------------------------------------------- state round trip
def rich_state() -> tuple[AutoLRS, dict[str, Any]]:
    """A state mid-candidate with validation losses, and counters set to distinct values."""
    model, opt, tuner = build(val_fn=lambda: torch.tensor(0.5), val_every=1)
    train(model, opt, tuner, 6, draw=batches())  # stage 0, candidate 1, step 2 of 4
    assert tuner.phase == "search" and tuner._val_steps == [0.0, 1.0]
    # Distinct values, so an entry restored into another attribute cannot go unnoticed.
    tuner._over, tuner.recoveries, tuner.skipped_losses = 1, 2, 3
    tuner._nonfinite_streak, tuner.skipped_steps, tuner._warmup_start = 1, 5, 6
    return tuner, tuner.state_dict()


def test_a_loaded_state_saves_back_exactly() -> None:
    _, state = rich_state()
    assert state["val_steps"] == [0.0, 1.0] and state["val_losses"] == [0.5, 0.5]
    assert not state["history"]["loss"].isnan().any()
    _, opt, fresh = build(val_fn=lambda: torch.tensor(0.5), val_every=1)
    fresh.load_state_dict(copy.deepcopy(state))
    assert same(fresh.state_dict(), state)
    assert [r.loss for r in fresh.history] == state["history"]["loss"].tolist()
    assert opt.param_groups[0]["lr"] == state["lr"]  # the saved LR is set on the optimizer


def test_the_lineage_of_each_snapshot_is_saved_by_hand() -> None:
    # Budget plan of 100 steps: warm-up [0, 5), then 4 candidates of 6 steps from step 5
    # (uncooled windows: the snapshot bookkeeping of a cooled window is another test's).
    uncooled = BudgetPolicy.for_budget(100, cooldown_frac=0.0)
    model, opt, tuner = build(max_steps=100, policy=uncooled)
    draw = batches()
    train(model, opt, tuner, 12, draw=draw)  # candidate 0 was [5, 11); candidate 1 at 11
    assert tuner.search.results[0].steps == 6 and len(tuner.search.results) == 1
    state = tuner.state_dict()
    assert state["lineage"] == {
        "current": [[0, 5], [11, 12]],  # warm-up, then candidate 1 from the stage snapshot
        "snapshot": [[0, 5]],  # the stage start
        "best_snapshot": [[0, 11]],  # candidate 0, the best so far, kept its own window
        "cand_snapshot": None,  # never captured (no cooldown)
    }
    # Resumed, the run exports what the uninterrupted one exports.
    model2, opt2, resumed = build(max_steps=100, policy=uncooled)
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(opt.state_dict())
    resumed.load_state_dict(state)
    rest = batches(1)
    train(model, opt, tuner, 88, draw=rest)
    train(model2, opt2, resumed, 88, draw=batches(1))
    assert tuner.done and resumed.done
    assert resumed.export_schedule().per_step() == tuner.export_schedule().per_step()


def test_entries_added_after_version_2_default_when_absent() -> None:
    _, state = rich_state()
    for key in ("skipped_steps", "nonfinite_skipped", "nonfinite_streak", "val_broken"):
        del state[key]
    _, _, fresh = build(val_fn=lambda: torch.tensor(0.5), val_every=1)
    fresh.load_state_dict(state)
    assert (fresh.skipped_steps, fresh.skipped_losses, fresh._nonfinite_streak) == (0, 0, 0)
    assert fresh._val_broken is False and fresh.recoveries == 2


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _old(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """``edit`` applied to the state with its history as lists (checkpoints of earlier autolr)."""

    def apply(state: dict[str, Any]) -> None:
        records = History.from_state(state["history"]).records()
        fields = ("step", "stage", "phase", "lr", "loss", "forecast")
        state["history"] = {f: [getattr(r, f) for r in records] for f in fields}
        edit(state)

    return apply


_OLD_PHASE = "history.phase={} is not one of ('warmup', 'search', 'exploit', 'final', 'done')"


def test_a_state_with_the_history_as_lists_still_loads() -> None:
    tuner, state = rich_state()
    _old(lambda s: None)(state)
    assert isinstance(state["history"]["step"], list)
    _, _, fresh = build(val_fn=lambda: torch.tensor(0.5), val_every=1)
    fresh.load_state_dict(state)
    assert fresh.history == tuner.history and len(fresh.history) == 6
    assert same(fresh.state_dict(), tuner.state_dict())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set(("history", "phase", 0), 5),
            "history.phase holds a code >= 5 (phases: ('warmup', 'search', 'exploit', 'final', "
            "'done'))",
        ),
        (_set(("history", "loss"), [1.0]), "history.loss is list, not a tensor"),
        (
            _set(("history", "lr"), torch.zeros(3, dtype=torch.int64)),
            "history.lr is a 1-d torch.int64 tensor, not a 1-d torch.float64 tensor",
        ),
        (_set(("history", "stage", 1), -1), "history.stage holds a negative value"),
        (
            _set(("history", "forecast", "index"), torch.tensor([0, 0])),
            "history.forecast's index and value have different lengths",
        ),
        (_set(("history", "forecast"), [None]), "history.forecast is list, not a dict of tensors"),
        (_old(_set(("history", "phase", 0), 5)), _OLD_PHASE.format("5")),
        (_old(_set(("history", "phase", 0), "stage")), _OLD_PHASE.format("'stage'")),
        (_old(_set(("history", "loss", 1), "x")), "history.loss='x' is not a number"),
        (_old(_set(("history", "lr"), 5)), "history.lr is 5, not a list"),
        (_set(("search",), [1]), "its 'search' entry is not a StageSearch state_dict"),
        (
            _set(("phase",), "stage"),
            "phase='stage' is not one of ('warmup', 'search', 'exploit', 'final', 'done')",
        ),
        (_set(("cand_losses",), (1.0, "a")), "cand_losses='a' is not a number"),
        (_set(("warmup_lr",), -0.5), "warmup_lr=-0.5 is not a finite number >= 0.0"),
        (_set(("lr",), math.inf), "lr=inf is not a finite number >= 0.0"),
    ],
)
def test_malformed_entries_are_named_exactly(
    edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    tuner, state = rich_state()
    edit(state)
    with pytest.raises(StateError) as info:
        tuner.load_state_dict(state)
    assert str(info.value) == "invalid AutoLRS state_dict: " + message


@pytest.mark.parametrize("phase", ["search", "exploit"])
def test_a_search_or_exploit_state_needs_its_stage_snapshot(phase: str) -> None:
    _, _, fresh = build(max_steps=100)  # warm-up: the stage snapshot holds the initial state
    state = fresh.state_dict()
    assert state["snapshot"] != {} and state["best_snapshot"] == {}  # no search yet: empty
    state["snapshot"] = {}
    state["phase"] = phase
    with pytest.raises(StateError) as info:
        fresh.load_state_dict(state)
    assert str(info.value) == (
        f"invalid AutoLRS state_dict: phase {phase!r} needs the stage snapshot, which is empty"
    )
    state["phase"] = "final"  # a final phase never restores the stage start: loads
    fresh.load_state_dict(state)


def test_a_negative_saved_scale_is_refused() -> None:
    class Scaler:
        def __init__(self) -> None:
            self.scale = 8.0

        def get_scale(self) -> float:
            return self.scale

        def is_enabled(self) -> bool:
            return True

    _, _, tuner = build(max_steps=100, scaler=Scaler())
    state = tuner.state_dict()
    assert state["scale_seen"] == 8.0
    for bad in (-1.0, math.nan):
        state["scale_seen"] = bad
        with pytest.raises(StateError) as info:
            tuner.load_state_dict(state)
        assert str(info.value) == (
            f"invalid AutoLRS state_dict: scale_seen={bad!r} is not a finite number >= 0.0"
        )


def test_other_arguments_are_listed_in_the_exact_message() -> None:
    _, _, tuner = build(max_steps=100)
    _, _, other = build(max_steps=120)
    with pytest.raises(StateError) as info:
        other.load_state_dict(tuner.state_dict())
    assert str(info.value).startswith(
        "AutoLRS state_dict was saved with other arguments than this tuner's: max_steps: saved "
        "100, given 120; policy.max_steps: saved 100, given 120; "
    )
    assert str(info.value).endswith(
        ". Build the tuner with the saved arguments to resume (a checkpoint fixes the run's plan)"
    )


def test_another_kind_of_state_says_what_it_is_and_nothing_else() -> None:
    _, _, tuner = build(max_steps=100)
    state = {"version": 3, "kind": "HypergradientLR", "hypergrad": {}}
    with pytest.raises(StateError) as info:
        tuner.load_state_dict(state)
    assert str(info.value) == (
        "not an AutoLRS state_dict: it is a HypergradientLR state_dict; its entries are "
        "'version', 'kind', 'hypergrad'"
    )
    # No kind, an entry of another tuner, and a version this autolr reads.
    with pytest.raises(StateError) as info:
        tuner.load_state_dict({"version": 3, "space": 1})
    assert str(info.value) == (
        "not an AutoLRS state_dict: it looks like an STNTuner state_dict; its entries are "
        "'version', 'space'"
    )


# ---------------------------------------------------------------------- val_fn
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "val_fn must return the validation loss as a float or a scalar tensor, got None "
               "(does it lack a return statement?)"),
        ("0.5", "val_fn must return the validation loss as a float or a scalar tensor, got '0.5'"),
        ([0.5, 0.4], "val_fn must return the validation loss as a float or a scalar tensor, got "
                     "list [0.5, 0.4]"),
    ],
)  # fmt: skip
def test_a_val_fn_that_returns_no_number_is_named(value: Any, message: str) -> None:
    model, opt, tuner = build(val_fn=lambda: value, val_every=1)
    with pytest.raises(ConfigTypeError) as info:
        train(model, opt, tuner, 1, draw=batches())
    assert str(info.value) == message


def test_a_val_fn_blamed_mid_stage_warns_with_the_step_and_restarts() -> None:
    calls: list[int] = []

    def val_fn() -> float:
        calls.append(1)
        return 0.5 if len(calls) <= 4 else math.nan  # candidate 0 scored, then broken

    model, opt, tuner = build(val_fn=val_fn, val_every=1)
    said = train(model, opt, tuner, 5, draw=batches())
    assert said == [
        "AutoLRS: val_fn returned nan at step 4 while the model's weights and the candidate's "
        "training losses are finite, so val_fn, not the candidate LR, is at fault. Candidates "
        "are scored on their training losses from now on (stage 0's search starts again, as "
        "its earlier candidates were scored on val_fn); fix val_fn to return a finite "
        "validation loss, or pass val_fn=None"
    ]
    assert tuner.search.results == [] and tuner.phase == "search"
    assert tuner._best_forecast == math.inf


# ---------------------------------------------------------------------- recovery, deferred reads
def test_a_poisoned_final_phase_continues_at_a_third_of_the_bad_lr() -> None:
    # 40 steps hold no search: warm-up, then the final phase (decaying over its last 20 steps).
    policy = BudgetPolicy.for_budget(40, searches=0, decay_shape="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, tuner = build(max_steps=40, policy=policy)
    draw = batches()
    train(model, opt, tuner, 20, draw=draw)
    assert tuner.phase == "final"
    bad = tuner.lr
    assert bad == pytest.approx(math.sqrt(BOUNDS[0] * BOUNDS[1]))  # no decay yet at step 20
    said = train(model, opt, tuner, 1, draw=draw, poison_at=20)
    assert tuner.recoveries == 1 and tuner.phase == "final"
    assert len(said) == 1 and said[0].startswith("AutoLRS: non-finite loss at step 20 with lr=")
    # The new upper bound is bad / 3 (above the lower bound); the run goes on from it along the
    # plan's decay: step 21 of a linear decay to 0 over steps [20, 40).
    hi = bad / 3
    assert tuner.search.lr_bounds == pytest.approx((BOUNDS[0], hi))
    assert tuner.search.winner_lr == pytest.approx(hi)
    assert tuner.lr == pytest.approx(hi * (1 - 1 / 20))
    train(model, opt, tuner, 19, draw=draw)
    assert tuner.done and [r.phase for r in tuner.history].count("final") == 38
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_deferred_tensor_losses_give_the_history_of_float_losses() -> None:
    runs = []
    for tensor, sync_every in ((False, 1), (True, 5)):
        model, opt, tuner = build(sync_every=sync_every)
        train(model, opt, tuner, 60, draw=batches(), tensor=tensor)
        runs.append(tuner.history)
    floats, tensors = runs
    assert tensors == floats  # step, stage, phase, LR, loss and forecast of every step
    phases = [(p, len(list(g))) for p, g in itertools.groupby(r.phase for r in floats)]
    assert phases == [("search", 12), ("exploit", 12)] * 2 + [("search", 12)]
    assert [r.stage for r in floats] == [0] * 24 + [1] * 24 + [2] * 12


# ---------------------------------------------------------------------- export, register
def test_export_schedule_of_a_run_by_hand() -> None:
    model, opt, tuner = build()
    with pytest.raises(StateError) as info:
        tuner.export_schedule()
    assert str(info.value) == (
        "AutoLRS.export_schedule: no optimizer step was taken yet, so there is no schedule to "
        "export; call it after training (or after some tuner.step() calls)"
    )
    train(model, opt, tuner, 30, draw=batches())
    h = tuner.history
    # continue_from="start": the windows are restored away; stage 0's 12 exploitation steps
    # and the 2 steps of stage 1's second candidate (being tried; the first one's 4 were
    # restored away) are what the weights hold.
    want = [r.lr for r in h[12:24]] + [r.lr for r in h[28:30]]
    assert [r.phase for r in h[24:30]] == ["search"] * 6 and h[27].lr != h[28].lr
    sched = tuner.export_schedule()
    assert sched.per_step() == want and sched.source == "AutoLRS"
    stretched = tuner.export_schedule(steps=36)  # default kind: linear between the steps
    assert stretched.per_step() == tuner.export_schedule(steps=36, kind="linear").per_step()
    assert stretched.per_step() != tuner.export_schedule(steps=36, kind="previous").per_step()


def test_export_schedule_without_a_recorded_lineage_warns_and_drops_search_steps() -> None:
    model, opt, tuner = build()
    train(model, opt, tuner, 30, draw=batches())
    state = tuner.state_dict()
    del state["lineage"]  # a checkpoint of an autolr that did not record it
    _, _, tuner = build()
    tuner.load_state_dict(state)
    with pytest.warns(RuntimeWarning) as caught:
        sched = tuner.export_schedule()
    assert [str(w.message) for w in caught] == [
        "AutoLRS.export_schedule: this run was resumed from a checkpoint that did not record "
        "which steps the weights kept; the schedule leaves out every search step"
    ]
    assert sched.per_step() == [r.lr for r in tuner.history if r.phase == "exploit"]


def test_a_registered_extra_is_restored_with_every_snapshot() -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def state_dict(self) -> dict[str, int]:
            return {"n": self.n}

        def load_state_dict(self, state: dict[str, int]) -> None:
            self.n = state["n"]

    # Budget variant with cooled windows: the winner continues from its candidate snapshot.
    policy = BudgetPolicy.for_budget(200, searches=1, cooldown_frac=0.5)
    model, opt, tuner = build(max_steps=200, policy=policy)
    extra = Counter()
    tuner.register("count", extra)
    for snap in (tuner._snapshot, tuner._best_snapshot, tuner._cand_snapshot):
        assert snap.extras == {"count": extra}
    draw = batches()
    seen = []
    while not tuner.done:
        extra.n += 1  # one per step: restored with the model, it counts the kept steps
        train(model, opt, tuner, 1, draw=draw)
        seen.append(extra.n)
    assert extra.n == len(tuner.export_schedule().per_step())


# ------------------------------------------------------------ GradScaler, LR drift, fallback
class FakeScaler:
    """What AutoLRS reads of a GradScaler: its scale (and a state, to be restored as an extra)."""

    def __init__(self, scale: float = 8.0) -> None:
        self.scale = scale

    def get_scale(self) -> float:
        return self.scale

    def is_enabled(self) -> bool:
        return True

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale = state["scale"]


def test_a_scale_that_drops_is_a_skipped_step_and_one_that_grows_is_not() -> None:
    scaler = FakeScaler()
    model, opt, tuner = build(scaler=scaler)
    draw = batches()
    train(model, opt, tuner, 3, draw=draw)
    scaler.scale = 16.0  # grown: an ordinary step
    train(model, opt, tuner, 1, draw=draw)
    assert tuner.skipped_steps == 0 and tuner.global_step == 4
    lr = tuner.lr
    scaler.scale = 4.0  # backed off: the scaler skipped optimizer.step()
    train(model, opt, tuner, 1, draw=draw)
    assert tuner.skipped_steps == 1 and tuner.global_step == 4 and len(tuner.history) == 4
    assert tuner.lr == lr
    train(model, opt, tuner, 2, draw=draw)  # steady again: counted
    assert tuner.skipped_steps == 1 and tuner.global_step == 6


@pytest.mark.parametrize("extras", [None, "scaler", "grad_scaler"])
def test_a_scale_restored_with_the_snapshot_is_not_a_skip(extras: str | None) -> None:
    # The scaler goes back to the stage start's scale with every restore (registered as
    # "grad_scaler" when extras does not hold it): the next step must compare with that
    # scale, not the one before the restore.
    scaler = FakeScaler()
    model, opt, tuner = build(scaler=scaler, extras=extras and {extras: scaler})
    assert list(tuner._snapshot.extras.items()) == [(extras or "grad_scaler", scaler)]
    draw = batches()
    train(model, opt, tuner, 3, draw=draw)
    scaler.scale = 64.0  # grew during candidate 0's last step
    train(model, opt, tuner, 1, draw=draw)  # candidate 0 ends: restored, scale back to 8
    assert scaler.scale == 8.0 and len(tuner.search.results) == 1
    train(model, opt, tuner, 30, draw=draw)
    assert tuner.skipped_steps == 0 and tuner.global_step == 34


def test_another_object_named_grad_scaler_beside_scaler_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"extras\['grad_scaler'\] is not the scaler= given"):
        build(scaler=FakeScaler(), extras={"grad_scaler": FakeScaler()})


def test_the_lr_changed_behind_the_tuner_warns_once_with_the_exact_text() -> None:
    model, opt, tuner = build()
    draw = batches()
    train(model, opt, tuner, 2, draw=draw)
    set_lr = tuner.lr
    opt.param_groups[0]["lr"] = 0.125  # a write before optimizer.step(): the step uses it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y = draw()
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tuner.step(loss.item())
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            RuntimeWarning,
            "AutoLRS: param group 0's LR was changed outside the tuner at optimizer.step() "
            f"(the tuner set {set_lr:.6g}, found 0.125). Most likely an LR scheduler "
            "(torch.optim.lr_scheduler) is stepped beside AutoLRS, or code writes "
            "param_group['lr']: remove it, AutoLRS sets every group's LR itself (shape its "
            "schedule with warmup_steps/warmup_lr, policy=BudgetPolicy.for_budget(...) or "
            "variant='paper'). The tuner writes its own LR back at every step and its history "
            "records the LR each step really used.",
        )
    ]
    assert tuner.history[-1].lr == 0.125 and opt.param_groups[0]["lr"] == tuner.lr


def test_a_fallback_in_a_later_stage_restores_that_stage_start() -> None:
    # Two searches; every candidate of the second fails, twice, so the stage trains at the
    # lowest LR from its own start, not from the first stage's (stale) best candidate.
    policy = BudgetPolicy.for_budget(300, searches=2)
    assert len(policy.starts) == 2
    model, opt, tuner = build(max_steps=300, policy=policy)
    draw = batches()
    start: list[torch.Tensor] = []
    said: list[str] = []
    while tuner.stage < 1 or tuner.phase == "search":
        if tuner.stage == 1 and not start:
            start = [p.detach().clone() for p in model.parameters()]
        x, y = draw()
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        failing = tuner.stage == 1 and tuner.phase == "search"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tuner.step(math.nan if failing else loss.item())
        said += [str(w.message) for w in caught]
    fails = [m for m in said if "every candidate diverged" in m]
    assert len(fails) == 4 and "training at the lowest LR" in fails[-1]
    assert tuner.phase == "exploit" and tuner.lr == pytest.approx(tuner.search.lr_bounds[0])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start))


@pytest.mark.parametrize(
    ("kw", "steps", "exploiting"),
    [({}, 60, "exploit"), ({"max_steps": 300}, 300, "exploit"), ({"max_steps": 30}, 30, "final")],
    ids=["paper", "budget", "budget-too-small-to-search"],
)
def test_tensor_losses_wait_on_the_device_for_sync_every_steps_of_exploitation(
    kw: dict[str, int], steps: int, exploiting: str
) -> None:
    # sync_every=2: each exploitation step's tensor loss ("exploit", or "final" when the
    # budget has no room for a search) waits for the next one, then both are read together;
    # search steps read theirs at once. Only the reads (the GPU syncs sync_every saves) tell
    # this from reading every loss at once, so the test looks at what is pending.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the budget too small for a search says so
        model, opt, tuner = build(sync_every=2, **kw)
    draw = batches()
    seen: dict[str, set[int]] = {}
    for _ in range(steps):  # the user's loop, one step at a time
        phase = tuner.phase
        train(model, opt, tuner, 1, draw=draw, tensor=True)
        if tuner.phase == phase:  # not the step that ends a phase (it reads them all)
            seen.setdefault(phase, set()).add(len(tuner._pending))
    assert seen[exploiting] == {0, 1}
    assert seen.get("search", {0}) == {0} and seen.get("warmup", {0}) == {0}
