"""autolr.Schedule (save, load, stretch, replay) and export_schedule / AMP skips of the tuners.

The lineage tests use a "ledger" model: parameter slot ``t`` receives exactly the update of
optimizer step ``t`` (its gradient is ``-e_t``, plain SGD), so after the run the weights hold
``lr_t`` in the slot of every step whose update survived the tuner's restores and 0 in every
other. That is an oracle independent of the tuner's bookkeeping for "the exploited lineage".
"""

from __future__ import annotations

import io
import json
import math
import warnings

import pytest
import torch
from torch import nn

import autolr
from autolr import AutoLRS, ConfigError, ConfigTypeError, HypergradientLR, Schedule, StateError


# ---------------------------------------------------------------------- Schedule itself
def test_from_lrs_reads_back_every_step_and_stores_runs_once() -> None:
    lrs = [0.1, 0.1, 0.1, 0.05, 0.05, 0.0]
    s = Schedule.from_lrs(lrs, source="x")
    assert s.steps == [0, 3, 5] and s.values == [[0.1], [0.05], [0.0]]
    assert s.n_steps == 6 and s.per_step() == lrs
    assert [s.at(t)["lr"] for t in range(8)] == [*lrs, 0.0, 0.0]  # the last value holds
    with pytest.raises(ConfigError, match="lrs is empty"):
        Schedule.from_lrs([])
    with pytest.raises(ConfigError, match="finite and >= 0, got nan"):
        Schedule.from_lrs([0.1, math.nan])


def test_stretch_linear_and_previous_by_hand() -> None:
    s = Schedule.from_lrs([1.0, 1.0, 0.5, 0.0])
    # position j * 3 / 6 = j / 2: halfway points interpolate
    assert s.stretch(7).per_step() == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert s.stretch(7, kind="previous").per_step() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0]
    # shrinking: positions 0, 1.5, 3
    assert s.stretch(3).per_step() == [1.0, 0.75, 0.0]
    assert s.stretch(1).per_step() == [1.0]
    assert s.stretch(4).per_step() == s.per_step()
    assert s.stretch(7).n_steps == 7
    with pytest.raises(ConfigError, match="n_steps must be an int >= 1, got 0"):
        s.stretch(0)
    with pytest.raises(ConfigError, match="kind must be one of"):
        s.stretch(5, kind="cubic")


def test_stretch_keeps_discrete_names_piecewise_constant() -> None:
    s = Schedule(["drop", "k"], [0, 2], [[0.0, 1.0], [1.0, 3.0]], ["k"], length=3)
    st = s.stretch(5)  # positions 0, 0.5, 1, 1.5, 2
    assert st.per_step("drop") == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert st.per_step("k") == [1.0, 1.0, 1.0, 1.0, 3.0]


def test_save_load_and_state_dict_roundtrip(tmp_path) -> None:
    s = Schedule.from_lrs([0.3, 0.2, 0.2, 0.1], source="AutoLRS")
    path = tmp_path / "sched.json"
    s.save(path)
    assert json.loads(path.read_text())["kind"] == "Schedule"
    back = Schedule.load(path)
    assert back == s and back.per_step() == [0.3, 0.2, 0.2, 0.1]
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    assert Schedule.from_state_dict(torch.load(buf, weights_only=True)) == s
    other = Schedule.from_lrs([1.0])
    other.load_state_dict(s.state_dict())
    assert other == s
    # a state written before length/source existed still loads (STN's format)
    old = {k: v for k, v in s.state_dict().items() if k not in ("length", "source")}
    assert Schedule.from_state_dict(old).n_steps == 4  # last record at step 3
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StateError, match="is not JSON"):
        Schedule.load(tmp_path / "bad.json")
    with pytest.raises(StateError, match="'length' must be an int >= 4"):
        Schedule.from_state_dict({**s.state_dict(), "length": 2})
    with pytest.raises(StateError, match="load_state_dict: "):
        other.load_state_dict({"names": ["lr"]})
    assert other == s  # unchanged by the failed load


def test_stn_schedule_is_the_shared_type() -> None:
    from autolr import stn

    assert stn.Schedule is autolr.Schedule


# ---------------------------------------------------------------------- replay
def _groups() -> tuple[torch.optim.Optimizer, list[nn.Parameter]]:
    ps = [nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opt = torch.optim.SGD(
        [{"params": [ps[0]], "lr": 0.2}, {"params": [ps[1]], "lr": 0.1},
         {"params": [ps[2]], "lr": 0.0}],
        lr=0.2,
    )  # fmt: skip
    return opt, ps


def test_scheduler_replays_the_schedule_keeping_group_ratios() -> None:
    s = Schedule.from_lrs([0.4, 0.3, 0.1])
    opt, _ = _groups()
    sched = s.scheduler(opt)
    seen = []
    for _ in range(5):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen == [[0.4, 0.2, 0.0], [0.3, 0.15, 0.0], [0.1, 0.05, 0.0],
                    [0.1, 0.05, 0.0], [0.1, 0.05, 0.0]]  # fmt: skip
    assert sched.get_last_lr() == [0.1, 0.05, 0.0]


def test_scheduler_state_dict_resumes_and_refuses_another_schedule() -> None:
    s = Schedule.from_lrs([0.4, 0.3, 0.2, 0.1])
    opt, _ = _groups()
    sched = s.scheduler(opt)
    for _ in range(2):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2, _ = _groups()
    again = s.scheduler(opt2)
    again.load_state_dict(state)
    again.step()  # as the original's third step() would
    sched.step()
    assert again.last_epoch == sched.last_epoch == 3
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert opt2.param_groups[0]["lr"] == 0.1
    with pytest.raises(StateError, match="saved for another schedule"):
        Schedule.from_lrs([0.5]).scheduler(_groups()[0]).load_state_dict(state)
    with pytest.raises(StateError, match=r"expected one from ScheduleLR\.state_dict"):
        again.load_state_dict({"lr": 1})


def test_scheduler_misuse() -> None:
    opt, _ = _groups()
    with pytest.raises(ConfigError, match="no hyperparameter 'drop'"):
        Schedule.from_lrs([0.1]).scheduler(opt, name="drop")
    with pytest.raises(ConfigTypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        Schedule.from_lrs([0.1]).scheduler("adam")  # type: ignore[arg-type]
    p = nn.Parameter(torch.zeros(1))
    with pytest.raises(ConfigError, match="every param group's initial LR is 0"):
        Schedule.from_lrs([0.1]).scheduler(torch.optim.SGD([p], lr=0.0))


# ---------------------------------------------------------------------- AutoLRS lineage
class Ledger(nn.Module):
    """Slot ``t`` of ``w`` receives exactly optimizer step ``t``'s update (``+lr_t``)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def update(self, opt: torch.optim.Optimizer, slot: int) -> None:
        opt.zero_grad()
        g = torch.zeros_like(self.w)
        g[slot] = -1.0
        self.w.grad = g
        opt.step()

    def kept(self) -> list[float]:
        return [float(v) for v in self.w.detach() if v != 0]


def _run(n: int, losses, *, skips: dict[int, float] | None = None, **kw):
    """Drive a tuner over a Ledger with the given losses; ``skips``: step -> skipped loss."""
    model = Ledger(n)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1e-1), **kw)
    for t in range(n):
        if skips and t in skips:
            tuner.step(skips[t], skipped=True)  # no optimizer step happened
        model.update(opt, tuner.global_step)
        tuner.step(losses(t))
    return tuner, model


def _decaying(t: int) -> float:
    return 2.0 * math.exp(-t / 40) + 0.1


def test_budget_export_is_the_kept_lineage_winner_window_included() -> None:
    tuner, model = _run(120, _decaying, max_steps=120)
    assert tuner.done and len(tuner.stages[0].candidates) == 4
    sched = tuner.export_schedule()
    assert sched.per_step() == model.kept()
    # independent count: every step but the three discarded candidates' windows and the
    # winner's cooldown (it continues from its state before the cooldown)
    cands = tuner.stages[0].candidates
    win = next(c for c in cands if c.lr == tuner.stages[0].winner_lr)
    cool = round(tuner.search.policy.cooldown_frac * win.steps)
    assert cool == 2
    assert sched.n_steps == 120 - sum(c.steps for c in cands) + win.steps - cool
    assert sched.source == "AutoLRS"
    stretched = tuner.export_schedule(steps=120)
    assert stretched.n_steps == 120 and stretched.per_step()[0] == sched.per_step()[0]
    assert stretched.per_step()[-1] == sched.per_step()[-1]


def test_paper_export_drops_every_search_step_and_steps_undone_by_recovery() -> None:
    def losses(t: int) -> float:
        return math.nan if t == 12 else _decaying(t)  # inside stage 0's exploitation

    with pytest.warns(RuntimeWarning, match="non-finite loss at step 12"):
        tuner, model = _run(90, losses, variant="paper", tau=20, tau_prime=4, k=2)
    assert tuner.recoveries == 1
    sched = tuner.export_schedule()
    assert sched.per_step() == model.kept()
    h = tuner.history
    # by hand: 0-7 search, 8-12 exploit undone by the recovery, 13-20 search again
    assert all(h[t].phase == "search" for t in range(13, 21)) and h[21].phase == "exploit"
    kept = [r.lr for r in h[21:] if r.phase != "search"]
    assert sched.per_step() == kept


def test_export_survives_a_checkpoint_mid_search() -> None:
    n = 120
    ref, _ = _run(n, _decaying, max_steps=n)
    model = Ledger(n)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1e-1), max_steps=n)
    for t in range(n):
        if t == 15:  # inside the search: the candidate snapshots' lineages matter
            buf = io.BytesIO()
            torch.save({"t": tuner.state_dict(), "m": model.state_dict(),
                        "o": opt.state_dict()}, buf)  # fmt: skip
            buf.seek(0)
            ck = torch.load(buf, weights_only=True)
            model = Ledger(n)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            model.load_state_dict(ck["m"])
            opt.load_state_dict(ck["o"])
            tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1e-1), max_steps=n)
            tuner.load_state_dict(ck["t"])
        model.update(opt, tuner.global_step)
        tuner.step(_decaying(t))
    assert tuner.export_schedule() == ref.export_schedule()
    assert tuner.export_schedule().per_step() == model.kept()


def test_export_before_any_step_raises() -> None:
    model = Ledger(4)
    tuner = AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.1), max_steps=100)
    with pytest.raises(StateError, match="no optimizer step was taken yet"):
        tuner.export_schedule()


def test_export_from_a_state_without_lineage_warns_and_drops_search_steps() -> None:
    tuner, _ = _run(120, _decaying, max_steps=120)
    state = tuner.state_dict()
    del state["lineage"]
    model = Ledger(120)
    other = AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.01),
                    lr_bounds=(1e-3, 1e-1), max_steps=120)  # fmt: skip
    other.load_state_dict(state)
    with pytest.warns(RuntimeWarning, match="did not record which steps"):
        sched = other.export_schedule()
    assert sched.per_step() == [r.lr for r in tuner.history if r.phase != "search"]


def test_replayed_schedule_reproduces_the_lineage_lrs() -> None:
    tuner, _ = _run(120, _decaying, max_steps=120)
    sched = tuner.export_schedule()
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    replay = sched.scheduler(opt)
    used = []
    for _ in range(sched.n_steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        replay.step()
    assert used == sched.per_step()


# ---------------------------------------------------------------------- AMP skips
def test_skipped_steps_neither_count_nor_feed_candidates() -> None:
    ref, ref_model = _run(120, _decaying, max_steps=120)
    # garbage losses on skipped steps: a NaN or a huge loss would penalise a candidate or
    # trigger a recovery if it were counted
    skips = {3: math.nan, 20: 1e9, 21: math.inf, 70: math.nan}
    tuner, model = _run(120, _decaying, skips=skips, max_steps=120)
    assert tuner.skipped_steps == 4 and tuner.recoveries == 0
    assert [(r.phase, r.lr, r.loss) for r in tuner.history] == [
        (r.phase, r.lr, r.loss) for r in ref.history
    ]
    assert tuner.stages == ref.stages
    assert model.kept() == ref_model.kept()
    assert tuner.export_schedule() == ref.export_schedule()
    with pytest.raises(ConfigTypeError, match="skipped must be a bool, got 1"):
        tuner.step(0.1, skipped=1)  # type: ignore[arg-type]


def _amp_step(tuner: AutoLRS, opt: torch.optim.Optimizer, scaler, loss: torch.Tensor) -> None:
    """One step of a mixed-precision loop, reported to the tuner (which sees skips itself)."""
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    tuner.step(loss.item())


def test_grad_scaler_skips_are_detected_from_the_scale() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.ones(2))
    model = nn.Module()
    model.w = w
    opt = torch.optim.SGD([w], lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1e-1), max_steps=100, scaler=scaler,
                    extras={"scaler": scaler})  # fmt: skip
    bad = {5, 6, 12, 60}  # two inside the search (a candidate would be penalised)
    calls = 0
    while not tuner.done:
        x = torch.full((2,), math.inf) if calls in bad else torch.randn(2)
        loss = (w * x).sum().pow(2) if calls not in bad else (w * x).sum()
        _amp_step(tuner, opt, scaler, loss)
        calls += 1
    assert tuner.skipped_steps == 4 and calls == 104
    assert len(tuner.history) == 100 and tuner.recoveries == 0
    assert all(math.isfinite(r.loss) for r in tuner.history)
    assert not any(c.penalised for c in tuner.stages[0].candidates)
    assert len(tuner.stages[0].candidates) == 4
    with pytest.raises(ConfigTypeError, match=r"scaler must be a torch\.amp\.GradScaler"):
        AutoLRS(model, opt, scaler=object())


@pytest.mark.parametrize("in_extras", [True, False])
def test_a_diverged_model_under_a_grad_scaler_is_recovered_not_skipped(in_extras: bool) -> None:
    # A box whose middle diverges in warm-up: the weights blow up, every later loss is NaN,
    # and the scaler skips every step, halving its scale to 0. Those steps were counted as
    # skips: 166 of them, then the run ended with NaN weights and no search.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    w = torch.randn(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    extras = {"scaler": scaler} if in_extras else None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 1e3), max_steps=300, scaler=scaler,
                        extras=extras)  # fmt: skip
        calls = 0
        while not tuner.done and calls < 400:
            x = torch.randn(32, 10)
            loss = nn.functional.mse_loss(model(x), x @ w)
            _amp_step(tuner, opt, scaler, loss)
            calls += 1
    assert tuner.done and calls - tuner.skipped_steps == 300 and tuner.skipped_steps < 20
    assert tuner.recoveries >= 1 and scaler.get_scale() > 1.0
    assert any("restarting warm-up" in str(r.message) for r in rec)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert tuner.stages and tuner.stages[0].winner_lr is not None
    x = torch.randn(512, 10)
    assert nn.functional.mse_loss(model(x), x @ w).item() < 0.1  # ~5.6 untrained


# ---------------------------------------------------------------------- HypergradientLR
def _hd(trace: bool | int, steps: int) -> HypergradientLR:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.01), trace=trace)
    x = torch.randn(16, 3)
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return opt


def test_hypergradient_export_matches_its_trace() -> None:
    opt = _hd(True, 12)
    sched = opt.export_schedule()
    assert sched.per_step() == [row[0] for row in opt.lr_trace] and sched.n_steps == 12
    assert sched.source == "HypergradientLR" and len(set(sched.per_step())) > 1
    assert opt.export_schedule(steps=24).n_steps == 24
    with pytest.raises(ConfigError, match=r"group must be an int in \[0, 1\), got 1"):
        opt.export_schedule(group=1)
    with pytest.raises(ConfigError, match="built with trace=0"):
        _hd(False, 2).export_schedule()


def test_hypergradient_export_of_a_truncated_trace_warns() -> None:
    full = _hd(20, 12).export_schedule().per_step()
    opt = _hd(5, 12)
    with pytest.warns(RuntimeWarning, match="kept only the last 5 of 12 steps"):
        sched = opt.export_schedule()
    assert sched.steps[0] >= 7 and sched.n_steps == 12
    assert sched.per_step()[7:] == full[7:]  # the kept steps at their own step numbers
    assert sched.per_step()[:7] == [full[7]] * 7  # earlier steps hold the first kept LR


# ---------------------------------------------------------------------- replay study
def test_bench_replay_of_a_constant_schedule_is_the_constant_run() -> None:
    pytest.importorskip("sklearn")
    from autolr.bench.methods import METHODS, run_once
    from autolr.bench.replay import replay_once
    from autolr.bench.tasks import get_task

    task = get_task("logreg")
    ref = run_once(task, METHODS["constant"], 0, 30, lr=0.05)
    got = replay_once(task, Schedule.from_lrs([0.05] * 30), 0, 30)
    assert got["final_val"] == ref["final_val"]  # same seeding, batches and LRs, bit for bit
    half = replay_once(task, Schedule.from_lrs([0.05] * 15 + [0.0] * 15), 0, 30)
    assert half["final_val"] != ref["final_val"]


def test_scaler_skip_detection_survives_a_resume() -> None:
    w = nn.Parameter(torch.ones(2))
    model = nn.Module()
    model.w = w
    opt = torch.optim.SGD([w], lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    def one_step(tuner: AutoLRS, x: torch.Tensor) -> None:
        opt.zero_grad()
        scaler.scale((w * x).sum()).backward()
        scaler.step(opt)
        scaler.update()
        tuner.step(0.5)

    tuner = AutoLRS(model, opt, max_steps=100, scaler=scaler)
    one_step(tuner, torch.full((2,), math.inf))  # skipped: scale 1024 -> 512
    one_step(tuner, torch.ones(2))
    state, scaler_state = tuner.state_dict(), scaler.state_dict()
    assert (tuner.skipped_steps, tuner.global_step, state["scale_seen"]) == (1, 1, 512.0)
    # resume: the new scaler starts at 65536 until its state is loaded, after the tuner's
    scaler = torch.amp.GradScaler("cpu")
    again = AutoLRS(model, opt, max_steps=100, scaler=scaler)
    again.load_state_dict(state)
    scaler.load_state_dict(scaler_state)
    one_step(again, torch.ones(2))  # not skipped although 512 < 65536
    one_step(again, torch.full((2,), math.inf))  # skipped: 512 -> 256
    assert (again.skipped_steps, again.global_step) == (2, 2)


def test_exporters_check_their_own_arguments_even_without_steps() -> None:
    # kind was ignored without steps, and a bad steps was named after Schedule.stretch's
    # n_steps, an argument the caller never wrote.
    tuner, _ = _run(120, _decaying, max_steps=120)
    model = nn.Linear(2, 1)
    hd = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(3, 2)).pow(2).mean().backward()
    hd.step()
    for export in (tuner.export_schedule, hd.export_schedule):
        with pytest.raises(ConfigError, match="kind must be one of 'linear', 'previous'"):
            export(kind="cubic")
        with pytest.raises(ConfigError, match=r"^steps must be an int >= 1, got 0"):
            export(steps=0)
        assert export(steps=5, kind="previous").n_steps == 5
