from __future__ import annotations

import io
import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from autolr import AutoLRS, ConfigError, ConfigTypeError, StageSearch, StateError
from autolr.searchers import Param, RandomSearcher

from .conftest import make_regression, tiny_mlp

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
    model = tiny_mlp()

    def val_fn() -> float:
        calls.append(model.training)
        model.eval()
        torch.rand(1)  # consuming randomness must not perturb training
        return nn.functional.mse_loss(model(X[:64]), Y[:64]).item()

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    _, _, tuner, _ = run(
        100, model=model, opt=opt, tau=64, tau_prime=32, k=2, val_fn=val_fn, double=False
    )
    # every tau'/16 = 2 steps during each candidate, never during exploitation
    assert len(calls) == 2 * 16
    assert model.training
    assert all(c.forecast < 10 for c in tuner.stages[0].candidates)


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
    s = StageSearch(lr_bounds=(1e-3, 1.0), tau=100, k=2, searcher=rand_searcher())
    s.begin_stage()
    a, b = s.propose(2)
    r1 = s.score(a, [1.0 - 0.005 * i for i in range(10)])
    r2 = s.score(b, [1.0, 2.0, float("nan")])
    assert r2.penalised and not r1.penalised
    assert s.search_complete and s.winner() == r1
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
