from __future__ import annotations

import io
import math
import re
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from autolr import AutoLRS, ConfigError, ConfigTypeError, StageSearch, StateError
from autolr.predictors import ExponentialPredictor
from autolr.searchers import Param, RandomSearcher

from .conftest import make_regression, round_trip, scripted_losses, tiny_mlp

X, Y = make_regression()


def rand_searcher(lo: float = 1e-3, hi: float = 1.0) -> RandomSearcher:
    return RandomSearcher([Param("lr", lo, hi, log=True)], seed=0)


def run(
    steps: int,
    *,
    model: nn.Module | None = None,
    opt: torch.optim.Optimizer | None = None,
    tuner: AutoLRS | None = None,
    nan_at: set[int] = frozenset(),  # type: ignore[assignment]
    start: int = 0,
    stop_when_done: bool = False,
    check_finite: bool = True,
    **kw: Any,
) -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS, list[float]]:
    """A user's loop: random batches from the global RNG, tuner.step after optimizer.step."""
    if model is None:
        model = tiny_mlp()
        torch.manual_seed(1)
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if tuner is None:
        kw.setdefault("searcher", rand_searcher(*kw.get("lr_bounds", (1e-3, 1.0))))
        kw.setdefault("lr_bounds", (1e-3, 1.0))
        tuner = AutoLRS(model, opt, **kw)
    used: list[float] = []
    for t in range(start, start + steps):
        if stop_when_done and tuner.done:
            break
        idx = torch.randint(0, X.shape[0], (32,))
        loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        used.append(opt.param_groups[0]["lr"])
        if t in nan_at:
            loss = torch.tensor(float("nan"))
            with torch.no_grad():  # what a real NaN step does to the weights
                for p in model.parameters():
                    p.fill_(float("nan"))
        else:
            opt.step()
        tuner.step(loss)
        if check_finite:  # the tuner never leaves training on non-finite weights
            assert all(torch.isfinite(p).all() for p in model.parameters()) or tuner.done
    return model, opt, tuner, used


def test_phase_sequence_and_doubling() -> None:
    tau, tp, k = 40, 4, 3
    _, _, tuner, used = run(600, tau=tau, tau_prime=tp, k=k, tau_max=160, divergence_factor=1e9)
    assert tuner.schedule == used  # the LR recorded is the LR the optimizer really used
    hist = tuner.history
    assert [r.step for r in hist] == list(range(600))
    # Stage 0: k candidates of tau' steps, then tau exploitation steps.
    assert [r.phase for r in hist[: k * tp]] == ["search"] * (k * tp)
    assert [r.phase for r in hist[k * tp : k * tp + tau]] == ["exploit"] * tau
    # Each candidate runs at one LR; its last step carries the forecast.
    for c in range(k):
        seg = hist[c * tp : (c + 1) * tp]
        assert len({r.lr for r in seg}) == 1
        assert seg[-1].forecast is not None and all(r.forecast is None for r in seg[:-1])
    # Doubling: tau' 4->8->16 (16 = tau_max/10 stops it), tau 40->80->160.
    assert [(s.tau, s.tau_prime) for s in tuner.stages[:4]] == [
        (40, 4),
        (80, 8),
        (160, 16),
        (160, 16),
    ]
    starts = [s.start for s in tuner.stages[:4]]
    assert starts == [0, 52, 52 + 24 + 80, 52 + 104 + 48 + 160]
    # The stage is trained at the lowest forecast among the candidates tried.
    st = tuner.stages[0]
    best = min(st.candidates, key=lambda c: c.forecast)
    assert st.winner_lr == best.lr
    assert hist[k * tp].lr == pytest.approx(best.lr)


def test_new_lr_applies_right_after_restore() -> None:
    _, _, tuner, used = run(60, tau=20, tau_prime=4, k=3)
    hist = tuner.history
    cands = [c.lr for c in tuner.stages[0].candidates]
    # First step of each candidate and of exploitation already uses the new LR.
    assert [used[0], used[4], used[8]] == pytest.approx(cands)
    assert used[12] == pytest.approx(tuner.stages[0].winner_lr)
    assert hist[12].phase == "exploit"


def test_restore_resets_weights_between_candidates() -> None:
    model = tiny_mlp()
    w0 = [p.detach().clone() for p in model.parameters()]
    seen: list[list[torch.Tensor]] = []

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tuner = AutoLRS(
        model, opt, tau=20, tau_prime=4, k=3, searcher=rand_searcher(), lr_bounds=(1e-3, 1.0)
    )
    for t in range(12):
        if t % 4 == 0:
            seen.append([p.detach().clone() for p in model.parameters()])
        idx = torch.randint(0, 512, (32,))
        loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        tuner.step(loss.item())
    for snap in seen:
        assert all(torch.equal(a, b) for a, b in zip(snap, w0))
    # after the search, exploitation starts from the stage start too (continue_from="start")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), w0))
    assert not opt.state  # momentum buffers restored to "none yet"


def test_continue_from_best_keeps_winner_state() -> None:
    tau, tp, k = 40, 4, 3
    _, _, tuner, _ = run(
        200, tau=tau, tau_prime=tp, k=k, continue_from="best", double=False, divergence_factor=1e9
    )
    # exploitation is tau - tau' steps, so stage 1 starts tau' earlier than with "start"
    assert tuner.stages[1].start == k * tp + tau - tp


def test_max_steps_budget() -> None:
    _, _, tuner, used = run(
        400,
        tau=40,
        tau_prime=4,
        k=3,
        max_steps=150,
        variant="paper",
        stop_when_done=True,
        divergence_factor=1e9,
    )
    assert len(used) == 150 and tuner.done
    phases = [r.phase for r in tuner.history]
    assert len(phases) == 150
    # 52 + (24 + 80) = 156 > 150: stage 1 exploitation is cut at the budget.
    assert phases[-1] == "exploit"
    with pytest.warns(RuntimeWarning, match="max_steps"):
        tuner.step(0.5)
    # A budget too small for a second search ends with a "final" phase at the winner.
    _, _, tuner2, _ = run(
        80, tau=40, tau_prime=4, k=3, max_steps=80, variant="paper", divergence_factor=1e9
    )
    assert tuner2.history[-1].phase == "final"
    assert tuner2.history[-1].lr == pytest.approx(tuner2.stages[0].winner_lr)


def test_max_steps_shrinks_the_last_search() -> None:
    # stage 0: 4*4 + 40 = 56 steps; stage 1 (tau'=8) would need 4*8 + 8 = 40 but only 39 are
    # left, so it searches 39 // 16 = 2 candidates and exploits the remaining 23 steps.
    _, _, tuner, _ = run(
        95, tau=40, tau_prime=4, k=4, max_steps=95, variant="paper", divergence_factor=1e9
    )
    assert len(tuner.stages) == 2
    assert len(tuner.stages[1].candidates) == 2
    assert [r.phase for r in tuner.history[56:72]] == ["search"] * 16
    assert [r.phase for r in tuner.history[72:]] == ["exploit"] * 23
    assert tuner.done


def test_warmup_then_search() -> None:
    _, _, tuner, used = run(40, tau=20, tau_prime=4, k=2, warmup_steps=5, warmup_lr=0.05)
    assert used[:5] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert [r.phase for r in tuner.history[:6]] == ["warmup"] * 5 + ["search"]
    assert tuner.stages[0].start == 5


def test_val_fn_mode() -> None:
    calls: list[bool] = []
    vals: list[float] = []
    model = tiny_mlp()

    def val_fn() -> float:
        calls.append(model.training)
        model.eval()
        torch.rand(1)  # consuming randomness must not perturb training
        vals.append(nn.functional.mse_loss(model(X[:64]), Y[:64]).item())
        return vals[-1]

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    _, _, tuner, _ = run(
        100, model=model, opt=opt, tau=64, tau_prime=32, k=2, val_fn=val_fn, double=False
    )
    # every tau'/16 = 2 steps during each candidate, never during exploitation
    assert len(calls) == 2 * 16
    assert model.training
    # Each candidate is scored on its own 16 validation losses, taken after window steps
    # 2, 4, ..., 32 (steps 1, 3, ..., 31 from its start), forecast to τ - 1 = 63.
    steps = [float(n - 1) for n in range(2, 33, 2)]
    for i, c in enumerate(tuner.stages[0].candidates):
        want = ExponentialPredictor().forecast(vals[16 * i : 16 * (i + 1)], 63, steps=steps)
        assert c.forecast == pytest.approx(want.value, rel=1e-9)


def test_nan_candidate_is_penalised_and_search_continues() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a penalised candidate is not worth a warning
        _, _, tuner, _ = run(60, tau=20, tau_prime=4, k=3, nan_at={5})
    cands = tuner.stages[0].candidates
    assert cands[1].penalised and math.isinf(cands[1].forecast)
    assert cands[1].steps == 2  # abandoned at once
    assert tuner.stages[0].winner_lr != cands[1].lr
    # candidate 2 started right after the abandoned one, from the stage snapshot
    assert tuner.history[6].lr == pytest.approx(cands[2].lr)


def test_diverging_candidate_abandoned_early() -> None:
    # lr up to 50 with momentum diverges on this task
    _, _, tuner, _ = run(
        200,
        tau=100,
        tau_prime=20,
        k=4,
        lr_bounds=(1e-3, 50.0),
        searcher=RandomSearcher([Param("lr", 1e-3, 50.0, log=True)], seed=3),
    )
    cands = tuner.stages[0].candidates
    div = [c for c in cands if c.penalised]
    assert div, cands
    assert all(c.steps < 20 for c in div)
    assert all(c.lr > 0.1 for c in div)
    assert not all(c.penalised for c in cands)


def test_nan_during_exploitation_restores_and_lowers_bound() -> None:
    tau, tp, k = 40, 4, 3
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        _, _, tuner, used = run(120, tau=tau, tau_prime=tp, k=k, nan_at={k * tp + 5})
    assert tuner.recoveries == 1
    bad = used[k * tp + 5]
    assert tuner.search.lr_bounds[1] <= bad / 3 + 1e-12
    assert tuner.search.searcher.bounds["lr"] == tuner.search.lr_bounds
    hist = tuner.history
    # right after the NaN step the tuner is searching again, below the bad LR
    assert hist[k * tp + 6].phase == "search"
    assert hist[k * tp + 6].lr <= bad / 3 + 1e-12


def test_sync_every_defers_reads_but_still_recovers() -> None:
    tau, tp, k = 40, 4, 3
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        _, _, tuner, _ = run(
            60, tau=tau, tau_prime=tp, k=k, sync_every=8, nan_at={k * tp + 3}, check_finite=False
        )
    assert tuner.recoveries == 1
    hist = tuner.history
    assert all(r.loss is not None for r in hist)  # deferred losses were all read back
    # exploitation steps 12..19 are read at once at step 19; step 20 is a new search
    assert [r.phase for r in hist[12:21]] == ["exploit"] * 8 + ["search"]


def test_resume_equals_uninterrupted() -> None:
    # k=5 > the GP's 3 quasi-random initial points, so the cut falls on a GP-proposed candidate
    kw = dict(tau=40, tau_prime=5, k=5, seed=0, lr_bounds=(1e-3, 1.0))
    total, cut = 160, 22  # cut in the middle of stage 0's fifth candidate

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS]:
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return model, opt, AutoLRS(model, opt, **kw)  # default GP searcher

    torch.manual_seed(7)
    m_a, o_a, t_a = fresh()
    run(total, model=m_a, opt=o_a, tuner=t_a)

    torch.manual_seed(7)
    m_b, o_b, t_b = fresh()
    run(cut, model=m_b, opt=o_b, tuner=t_b)
    buf = io.BytesIO()
    torch.save(
        {
            "model": m_b.state_dict(),
            "opt": o_b.state_dict(),
            "tuner": t_b.state_dict(),
            "rng": torch.get_rng_state(),
        },
        buf,
    )
    del m_b, o_b, t_b
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    torch.manual_seed(12345)  # a fresh process: unrelated RNG state until restored
    m_c, o_c, t_c = fresh()
    m_c.load_state_dict(ckpt["model"])
    o_c.load_state_dict(ckpt["opt"])
    t_c.load_state_dict(ckpt["tuner"])
    torch.set_rng_state(ckpt["rng"])
    run(total - cut, model=m_c, opt=o_c, tuner=t_c, start=cut)

    assert t_c.schedule == t_a.schedule
    assert t_c.stages == t_a.stages
    for a, c in zip(m_a.parameters(), m_c.parameters()):
        assert torch.equal(a, c)


def test_state_dict_weights_only_and_errors() -> None:
    _, _, tuner, _ = run(30, tau=20, tau_prime=4, k=3)
    buf = io.BytesIO()
    torch.save(tuner.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["global_step"] == 30
    with pytest.raises(StateError):
        tuner.load_state_dict({"version": 99})


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"lr_bounds": (0.1, 0.01)}, ConfigError),
        ({"lr_bounds": (0.0, 0.1)}, ConfigError),
        ({"lr_bounds": (1e-3, float("inf"))}, ConfigError),
        ({"lr_bounds": "fast"}, ConfigError),
        ({"tau": 100, "tau_prime": 100}, ConfigError),
        ({"k": 0}, ConfigError),
        ({"tau": 0}, ConfigError),
        ({"continue_from": "end"}, ConfigError),
        ({"max_steps": 0}, ConfigError),
        ({"warmup_lr": -1.0, "warmup_steps": 3}, ConfigError),
        ({"divergence_factor": 0.5}, ConfigError),
        ({"val_fn": 3}, ConfigTypeError),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(exc):
        AutoLRS(model, opt, **kwargs)
    assert issubclass(exc, (ValueError, TypeError))


def test_optimizer_must_own_model_parameters() -> None:
    model = tiny_mlp()
    other = nn.Linear(3, 3)
    with pytest.raises(TypeError, match="not parameters of the model"):
        AutoLRS(model, torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        AutoLRS(model, "sgd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        AutoLRS(lambda x: x, torch.optim.SGD(model.parameters(), lr=0.1))  # type: ignore[arg-type]


def test_param_group_ratios_kept() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[3].parameters(), "lr": 0.01},
        ]
    )
    tuner = AutoLRS(model, opt, tau=20, tau_prime=4, k=2, searcher=rand_searcher())
    assert opt.param_groups[1]["lr"] == pytest.approx(tuner.lr * 0.1)


def test_stage_search_shared_logic() -> None:
    s = StageSearch(lr_bounds=(1e-3, 1.0), tau=100, k=4, searcher=rand_searcher())
    s.begin_stage()
    lrs = s.propose(4)

    def curve(c: float) -> list[float]:  # plateaus at c well before τ - 1 = 99
        return [c + (1.0 - c) * math.exp(-0.5 * t) for t in range(10)]

    r = [s.score(lrs[0], curve(0.5)), s.score(lrs[1], curve(0.3))]
    assert not s.search_complete
    r += [s.score(lrs[2], [1.0, 2.0, float("nan")]), s.score(lrs[3], curve(0.4))]
    assert [x.penalised for x in r] == [False, False, True, False]
    assert [x.forecast for x in r] == pytest.approx([0.5, 0.3, math.inf, 0.4], abs=1e-3)
    assert r[2].reason == "non-finite loss" and r[2].steps == 3
    # the lowest forecast wins: neither the first nor the last candidate scored
    assert s.search_complete and s.winner() == r[1]
    s.end_stage()
    assert (s.tau, s.tau_prime, s.stage) == (200, 20, 1)


def test_autolrs_beats_bad_constant_lr() -> None:
    """End to end: from a wide, poorly centred range AutoLRS beats a badly chosen constant LR."""

    def final_loss(model: nn.Module) -> float:
        with torch.no_grad():
            return nn.functional.mse_loss(model.eval()(X), Y).item()

    steps = 600
    torch.manual_seed(3)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    tuner = AutoLRS(
        model, opt, lr_bounds=(1e-5, 10.0), tau=100, k=5, max_steps=steps, seed=0, variant="paper"
    )
    run(steps, model=model, opt=opt, tuner=tuner)
    tuned = final_loss(model)

    torch.manual_seed(3)
    base = tiny_mlp()
    bopt = torch.optim.SGD(base.parameters(), lr=1e-4, momentum=0.9)
    for _ in range(steps):
        idx = torch.randint(0, X.shape[0], (32,))
        loss = nn.functional.mse_loss(base(X[idx]), Y[idx])
        bopt.zero_grad()
        loss.backward()
        bopt.step()
    assert tuned < 0.5 * final_loss(base), (tuned, final_loss(base), tuner.stages)


# ---------------------------------------------------------------- scripted losses
# The tests below drive AutoLRS with losses written by hand (the model is not trained), so
# each decision can be checked against a value computed here, independently of the tuner.


def scripted_tuner(**kw: Any) -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS]:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kw.setdefault("searcher", rand_searcher())
    kw.setdefault("lr_bounds", (1e-3, 1.0))
    kw.setdefault("variant", "paper")
    return model, opt, AutoLRS(model, opt, **kw)


def fast_plateau(t: int) -> float:
    """Drops at once, then flat at 0.6: the better curve at τ' (loss ≈ 0.6)."""
    return 0.6 + 0.4 * math.exp(-1.0 * t)


def slow_steady(t: int) -> float:
    """Still falling at τ' (0.70 at t = 20) towards 0.45: the better curve at τ = 200."""
    return 0.45 + 0.55 * math.exp(-_B_SLOW * t)


_B_SLOW = math.log(0.55 / 0.25) / 20  # slow_steady(20) = 0.70


@scripted_losses
@pytest.mark.parametrize("slow_first", [False, True])
def test_candidates_compared_by_forecast_at_tau_not_at_tau_prime(slow_first: bool) -> None:
    tau, tp = 200, 21  # candidate losses at t = 0..20
    assert fast_plateau(tp - 1) < slow_steady(tp - 1)  # at τ' the fast curve looks better
    assert slow_steady(tau - 1) < fast_plateau(tau - 1) - 0.1  # at τ the slow one is
    _, _, tuner = scripted_tuner(tau=tau, tau_prime=tp, k=2, double=False)
    curves = [slow_steady, fast_plateau] if slow_first else [fast_plateau, slow_steady]
    for curve in curves:
        for t in range(tp):
            tuner.step(curve(t))
    st = tuner.stages[0]
    slow = st.candidates[0 if slow_first else 1]
    fast = st.candidates[1 if slow_first else 0]
    # Exact exponential data: the forecasts are the curves' values at step τ - 1.
    assert slow.forecast == pytest.approx(slow_steady(tau - 1), abs=5e-3)
    assert fast.forecast == pytest.approx(fast_plateau(tau - 1), abs=5e-3)
    assert st.winner_lr == slow.lr != fast.lr
    assert tuner.phase == "exploit" and tuner.lr == pytest.approx(slow.lr)


def test_exploitation_starts_from_stage_start_momentum() -> None:
    # The warm-up builds momentum; the stage snapshot taken after it must come back with every
    # buffer (a restore that drops optimizer state would start exploitation with none).
    model, opt, tuner = scripted_tuner(tau=20, tau_prime=4, k=2, warmup_steps=3)
    x = torch.ones(4, 2)
    saved: dict[int, torch.Tensor] = {}
    w_saved: list[torch.Tensor] = []
    for i in range(3 + 2 * 4):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tuner.step(loss.item())
        if i == 2:  # warm-up over: the stage starts (and is snapshotted) here
            assert tuner.phase == "search"
            saved = {k: v["momentum_buffer"].clone() for k, v in opt.state_dict()["state"].items()}
            w_saved = [p.detach().clone() for p in model.parameters()]
    assert tuner.phase == "exploit"
    now = opt.state_dict()["state"]
    assert sorted(now) == sorted(saved) and len(saved) == 2
    for k, buf in saved.items():
        assert torch.equal(now[k]["momentum_buffer"], buf)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), w_saved))


@scripted_losses
def test_every_candidate_diverged_retries_below_lowest_lr() -> None:
    _, _, tuner = scripted_tuner(tau=20, tau_prime=4, k=2)
    with pytest.warns(RuntimeWarning, match="every candidate diverged; searching again"):
        for _ in range(2):  # both candidates: a NaN on their first step
            tuner.step(float("nan"))
    st = tuner.stages
    assert len(st) == 1 and st[0].note == "retry" and st[0].winner_lr is None
    tried = [c.lr for c in st[0].candidates]
    assert len(tried) == 2 and all(c.penalised for c in st[0].candidates)
    lo, hi = tuner.search.lr_bounds
    assert (lo, hi) == pytest.approx((1e-3, min(tried) / 3))
    # The same stage searches again, inside the lowered box, k fresh candidates.
    assert tuner.phase == "search" and tuner.stage == 0
    assert lo <= tuner.lr <= hi
    for t in range(4 * 2):
        tuner.step(1.0 - 0.05 * (t % 4))
    assert tuner.phase == "exploit"
    assert len(tuner.stages[0].candidates) == 2
    assert all(lo <= c.lr <= hi and not c.penalised for c in tuner.stages[0].candidates)
    assert lo <= tuner.stages[0].winner_lr <= hi


def test_repeated_failure_falls_back_to_the_lowest_lr() -> None:
    _, _, tuner = scripted_tuner(tau=20, tau_prime=4, k=1)
    with pytest.warns(RuntimeWarning) as rec:
        for _ in range(4):  # MAX_RETRIES consecutive all-diverged searches
            tuner.step(float("nan"))
    msgs = [str(w.message) for w in rec]
    assert sum("searching again" in m for m in msgs) == 3
    assert "training at the lowest LR" in msgs[-1]
    assert tuner.phase == "exploit" and tuner.stages[0].note == "fallback"
    assert tuner.lr == pytest.approx(tuner.search.lr_bounds[0])


@scripted_losses
def test_nan_during_warmup_restarts_it_from_the_initial_state() -> None:
    model, opt, tuner = scripted_tuner(tau=20, tau_prime=4, k=2, warmup_steps=5, warmup_lr=0.05)
    w0 = [p.detach().clone() for p in model.parameters()]
    used: list[float] = []
    for i in range(8):
        used.append(opt.param_groups[0]["lr"])
        with torch.no_grad():
            for p in model.parameters():  # what the step does to the weights
                p.add_(1.0) if i != 2 else p.fill_(float("nan"))
        if i == 2:
            with pytest.warns(RuntimeWarning, match="non-finite loss during warm-up"):
                tuner.step(float("nan"))
            assert all(torch.equal(a, b) for a, b in zip(model.parameters(), w0))
        else:
            tuner.step(1.0)
    assert tuner.recoveries == 1 and tuner.warmup_lr == pytest.approx(0.005)
    # linear warm-up to 0.05 over 5 steps, then again from the start to 0.05 / 10
    assert used == pytest.approx([0.01, 0.02, 0.03, 0.001, 0.002, 0.003, 0.004, 0.005])
    assert [r.phase for r in tuner.history] == ["warmup"] * 8
    # the restarted warm-up's 5th step (step 7) ended it: the stage starts at step 8
    assert tuner.phase == "search" and tuner.stages[0].start == 8


def _run_candidates(tuner: AutoLRS, curves: list[list[float]]) -> None:
    """Feed each candidate its curve until it ends (its last step carries the forecast)."""
    for curve in curves:
        for v in curve:
            tuner.step(v)
            if tuner.history[-1].forecast is not None:
                break


@scripted_losses
def test_divergence_factor_abandons_a_finite_candidate() -> None:
    # Reference: the stage-start loss 1.0 (the first candidate's first loss). factor=3 puts the
    # threshold at 3.0; patience=3 abandons on the third consecutive loss above it.
    _, _, tuner = scripted_tuner(tau=40, tau_prime=8, k=4, divergence_factor=3.0)
    ok = [1.0 - 0.05 * t for t in range(8)]
    _run_candidates(
        tuner,
        [
            ok,
            [1.0, 3.5, 3.5, 3.5, 0.5, 0.5, 0.5, 0.5],  # 3 over in a row: out after 4 steps
            [1.0, 2.9, 2.9, 2.9, 2.9, 2.9, 2.9, 2.9],  # high but under 3x: kept
            [1.0, 3.5, 3.5, 0.9, 3.5, 3.5, 0.8, 0.7],  # never 3 in a row: kept
        ],
    )
    c = tuner.stages[0].candidates
    assert [x.penalised for x in c] == [False, True, False, False]
    assert [x.steps for x in c] == [8, 4, 8, 8]
    assert math.isinf(c[1].forecast)
    assert re.search(r"diverged: loss 3\.5 > 3x stage-start loss 1\b", c[1].reason), c[1].reason
    # the history rows of the abandoned candidate: 4 search steps at its LR
    assert [r.lr for r in tuner.history[8:12]] == [c[1].lr] * 4
    assert tuner.history[12].lr == c[2].lr


@scripted_losses
def test_divergence_factor_is_the_argument() -> None:
    # The same losses with factor=4 (threshold 4.0) keep the candidate.
    _, _, tuner = scripted_tuner(tau=40, tau_prime=8, k=2, divergence_factor=4.0)
    _run_candidates(tuner, [[1.0 - 0.05 * t for t in range(8)], [1.0] + [3.5] * 7])
    assert [x.penalised for x in tuner.stages[0].candidates] == [False, False]


@pytest.mark.parametrize(
    "kw",
    [{"max_steps": 240}, {"variant": "paper", "tau": 40, "tau_prime": 8, "k": 4, "max_steps": 240}],
    ids=["budget", "paper"],
)
def test_another_default_device_changes_nothing(kw: dict) -> None:
    """With ``torch.set_default_device`` set elsewhere (``cuda`` in many LLM codebases; ``meta``
    here, which no CPU tensor can meet) the GP still runs (it used to fail on every step and
    fall back to quasi-random points, silently), the run is the same as under the CPU
    default, and the tuner's state holds only CPU tensors."""

    def run(device: str) -> tuple[list[float], torch.Tensor, int, dict]:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        w = torch.randn(6, 1, generator=g)
        xv = torch.randn(32, 6, generator=g)
        model = nn.Linear(6, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        torch.set_default_device(device)
        try:

            def val() -> float:
                return (model(xv) - xv @ w).pow(2).mean().item()

            tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 0.3), seed=0, val_fn=val, **kw)
            while not tuner.done:
                x = torch.randn(16, 6, generator=g, device="cpu")
                loss = (model(x) - x @ w).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                tuner.step(loss.item())
            state = tuner.state_dict()
        finally:
            torch.set_default_device("cpu")
        lrs = [r.lr for r in tuner.history]
        return lrs, model.weight.detach().clone(), tuner.search.searcher.n_fallbacks, state

    ref, meta = run("cpu"), run("meta")
    assert meta[2] == ref[2] == 0
    assert meta[0] == ref[0] and torch.equal(meta[1], ref[1])

    def devices(x: Any) -> set[str]:
        if isinstance(x, torch.Tensor):
            return {x.device.type}
        items = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else []
        return set().union(*(devices(v) for v in items))

    assert devices(meta[3]) == {"cpu"}


def test_compiled_model_tunes_like_the_bare_one_and_its_checkpoint_fits_both() -> None:
    """``torch.compile`` wraps the model (``_orig_mod.`` names); the tuner sees through it:
    the same decisions, and a checkpoint taken while compiled resumes without compiling."""
    kw: dict[str, Any] = {"max_steps": 150, "seed": 0, "stop_when_done": True}
    _, _, bare, used = run(150, model=tiny_mlp(), **kw)
    compiled = torch.compile(tiny_mlp(), backend="eager")
    _, _, tuner, used_c = run(150, model=compiled, **kw)
    assert used_c == used
    assert [r.loss for r in tuner.history] == [r.loss for r in bare.history]
    state = round_trip(tuner.state_dict())
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    resumed = AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), searcher=rand_searcher(), max_steps=150)
    resumed.load_state_dict(state)
    assert resumed.done and resumed.global_step == tuner.global_step


@scripted_losses
def test_a_float_loss_after_deferred_tensor_ones_reads_them_first() -> None:
    """``sync_every`` defers tensor losses while exploiting; a float loss after some (a loop
    that passes ``loss.item()`` on some steps) reads them first, in order, as a sync would:
    a non-finite one among them is acted on at that step, not ignored until the budget ends."""
    tau, tp, k = 40, 4, 3
    model = tiny_mlp()
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tuner = AutoLRS(
        model, opt, tau=tau, tau_prime=tp, k=k, sync_every=8, searcher=rand_searcher(),
        lr_bounds=(1e-3, 1.0),
    )  # fmt: skip
    run(k * tp, model=model, opt=opt, tuner=tuner)
    assert tuner.phase == "exploit"
    with torch.no_grad():
        loss = nn.functional.mse_loss(model(X[:32]), Y[:32])
    tuner.step(loss)  # deferred
    tuner.step(torch.tensor(float("nan")))  # deferred
    assert tuner.recoveries == 0  # not read yet
    with pytest.warns(RuntimeWarning, match="non-finite loss at step 14 with lr="):
        tuner.step(float(loss))  # the paper variant recovers from any non-finite loss
    assert tuner.recoveries == 1 and tuner.phase == "search"
    assert [r.loss for r in tuner.history[12:15]] == pytest.approx(
        [float(loss), math.nan, float(loss)], nan_ok=True
    )
