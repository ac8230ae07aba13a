"""HypergradientLR: hand-computed references, β=0 identity, clamps, AMP, accumulation, state."""

from __future__ import annotations

import copy
import io
import math
import re
import warnings

import pytest
import torch

from autolr import ConfigError, ConfigTypeError, HypergradientLR, StateError
from autolr._hypergrad import DEFAULT_HYPERGRAD_LR, dot_and_norms

# --------------------------------------------------------------------------- fixtures
A = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]])
B = torch.tensor([1.0, -2.0, 0.5])


def _loss(w: torch.Tensor) -> torch.Tensor:
    """Deterministic convex quadratic plus a quartic term (non-constant Hessian)."""
    return 0.5 * w @ A @ w - B @ w + 0.1 * (w**4).sum()


def _grad(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss(w), w)
    return g


W0 = torch.tensor([0.5, -0.3, 0.8])

CONFIGS = {
    "sgd": (torch.optim.SGD, {"lr": 0.05}),
    "sgd-wd-max": (torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.1}),
    "momentum": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}),
    "nesterov": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "adam": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.05}),
    "amsgrad": (torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
}


def _reference(
    name: str,
    rule: str,
    beta: float,
    steps: int,
    lr_min=0.0,
    lr_max=math.inf,
    boost=1.0,
    warmup=0,
):
    """Independent re-derivation of the optimizer + HD update (Baydin's boxes, per family).

    ``boost``: step size β·k, k ← min(1.2k, boost) while sign(h) repeats, else 1.
    ``warmup``: step t (1-based) runs at clamp(α_t · min(1, t / warmup)); α_t may only decrease
    while t < warmup.
    """
    cls, kw = CONFIGS[name]
    w = W0.clone().double()
    lr = kw["lr"]
    wd = kw.get("weight_decay", 0.0)
    mu = kw.get("momentum", 0.0)
    damp = kw.get("dampening", 0.0)
    b1, b2, eps = 0.9, 0.999, 1e-8
    buf = m = v = vmax = d_prev = None
    lrs = []
    sq, n_h = 0.0, 0
    k, h_prev = 1.0, None
    for t in range(1, steps + 1):
        g = _grad(w.float()).double()
        decoupled = cls is torch.optim.AdamW
        G = g + wd * w if (wd and not decoupled) else g
        if d_prev is not None:
            h = -(G @ d_prev).item()
            if h_prev is not None and boost != 1.0:
                k = min(1.2 * k, boost) if h * h_prev > 0 else 1.0
            h_prev = h
            b = beta * k
            if rule == "additive":
                new = lr - b * h
            elif rule == "multiplicative":
                new = lr * (1 - b * h / (G.norm() * d_prev.norm()).item())
            else:  # rms: bias-corrected EMA of h², ratio clipped to ±1, exponential step
                n_h += 1
                sq = 0.99 * sq + 0.01 * h * h
                z = max(-1.0, min(1.0, h / math.sqrt(sq / (1 - 0.99**n_h))))
                new = lr * math.exp(-b * z)
            if warmup and t < warmup:  # during the warm-up the factor may only go down
                new = min(new, lr)
            lr = min(max(new, lr_min), lr_max)
        used = min(max(lr * min(1.0, t / warmup), lr_min), lr_max) if warmup else lr
        lrs.append(used)
        if cls is torch.optim.SGD:
            if mu:
                buf = G.clone() if buf is None else mu * buf + (1 - damp) * G
                d = G + mu * buf if kw.get("nesterov") else buf
            else:
                d = G
        else:
            m = (1 - b1) * G if m is None else b1 * m + (1 - b1) * G
            v = (1 - b2) * G * G if v is None else b2 * v + (1 - b2) * G * G
            vmax = v.clone() if vmax is None else torch.maximum(vmax, v)
            vv = vmax if kw.get("amsgrad") else v
            d = (m / (1 - b1**t)) / ((vv / (1 - b2**t)).sqrt() + eps)
            if decoupled and wd:
                d = d + wd * w
        w = w - used * d
        d_prev = d
    return w, lrs


def _run(name: str, rule: str, beta: float, steps: int, **hd_kw):
    cls, kw = CONFIGS[name]
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(cls([w], **kw), rule=rule, hypergrad_lr=beta, **hd_kw)
    for _ in range(steps):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()
    return w.detach(), opt


# --------------------------------------------------------------------------- the update rule
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("rule,beta", [("additive", 0.05), ("multiplicative", 0.1), ("rms", 0.1)])
def test_matches_hand_computed_reference(name, rule, beta):
    if name.startswith("adam") or name == "amsgrad":
        beta = 1e-3 if rule == "additive" else beta
    w, opt = _run(name, rule, beta, 6)
    w_ref, lrs_ref = _reference(name, rule, beta, 6)
    assert torch.allclose(w.double(), w_ref, rtol=1e-5, atol=1e-6)
    got = [r[0] for r in opt.lr_trace]
    assert got == pytest.approx(lrs_ref, rel=1e-5)
    assert got[0] == CONFIGS[name][1]["lr"]  # no hypergradient before a direction exists
    assert got[-1] != got[0]  # the LR really moved
    assert opt.param_groups[0]["lr"] == CONFIGS[name][1]["lr"]  # base LR untouched


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adamw"])
@pytest.mark.parametrize("rule", ["multiplicative", "rms"])
@pytest.mark.parametrize("boost,warmup", [(5.0, 0), (1.0, 4), (3.0, 5)])
def test_boost_and_warmup_match_hand_computed_reference(name, rule, boost, warmup):
    steps = 12
    w, opt = _run(name, rule, 0.1, steps, boost=boost, warmup_steps=warmup)
    w_ref, lrs_ref = _reference(name, rule, 0.1, steps, boost=boost, warmup=warmup)
    assert torch.allclose(w.double(), w_ref, rtol=1e-5, atol=1e-6)
    assert [r[0] for r in opt.lr_trace] == pytest.approx(lrs_ref, rel=1e-5)
    if boost > 1:  # boost was exercised: the trajectory differs from the plain rule's
        assert opt.lr_trace != _run(name, rule, 0.1, steps, warmup_steps=warmup)[1].lr_trace
    if warmup:
        assert opt.lr_trace[0][0] == pytest.approx(CONFIGS[name][1]["lr"] / warmup)


def test_boost_speeds_up_a_persistent_sign():
    """From a 1000× too small LR the cosine stays positive: boost reaches a larger LR sooner."""
    lrs = {}
    for boost in (1.0, 10.0):
        w = torch.nn.Parameter(W0.clone())
        opt = HypergradientLR(
            torch.optim.SGD([w], lr=5e-5, momentum=0.9), hypergrad_lr=0.02, boost=boost
        )
        for _ in range(60):
            opt.zero_grad()
            _loss(w).backward()
            opt.step()
        lrs[boost] = opt.lrs[0]
    assert lrs[1.0] < 5e-5 * 1.02**59 * 1.0001  # plain rule: at most +2 % a step
    assert lrs[10.0] > 20 * lrs[1.0]


@pytest.mark.parametrize("rule", ["additive", "multiplicative", "rms"])
def test_knobs_off_and_beta_zero_warmup_is_a_plain_linear_warmup(rule):
    """boost=1, warmup_steps=0 is the default rule; β=0 + warm-up is LambdaLR's linear warm-up."""
    _, a = _run("momentum", rule, 0.05 if rule == "additive" else 0.1, 8)
    _, b = _run("momentum", rule, 0.05 if rule == "additive" else 0.1, 8, boost=1.0)
    assert a.lr_trace == b.lr_trace
    results = []
    for wrap in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if wrap:
            opt, sched = HypergradientLR(inner, rule=rule, hypergrad_lr=0.0, warmup_steps=7), None
        else:
            opt = inner
            sched = torch.optim.lr_scheduler.LambdaLR(inner, lambda t: min(1.0, (t + 1) / 7))
        gen = torch.Generator().manual_seed(1)
        for _ in range(12):
            opt.zero_grad()
            model(torch.randn(16, 4, generator=gen)).pow(2).mean().backward()
            opt.step()
            if sched is not None:
                sched.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*results))


@pytest.mark.parametrize("name", ["sgd", "momentum", "adamw"])
def test_hypergradient_equals_autograd_derivative(name):
    """h_2 = d f(θ_0 + u_1(α)) / dα at α_1, with u_1 = −α D_1 (Baydin's definition)."""
    cls, kw = CONFIGS[name]
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(cls([w], **kw), rule="additive", hypergrad_lr=0.0)
    opt.zero_grad()
    _loss(w).backward()
    theta0 = w.detach().clone()
    opt.step()
    d1 = opt._dirs[w].clone()
    assert torch.allclose(theta0 - kw["lr"] * d1, w.detach(), atol=1e-7)  # u_1 = −α D_1
    alpha = torch.tensor(kw["lr"], requires_grad=True)
    (dphi,) = torch.autograd.grad(_loss(theta0 - alpha * d1), alpha)
    opt.zero_grad()
    _loss(w).backward()
    opt.step()
    assert opt.last_hypergradients[0] == pytest.approx(dphi.item(), rel=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("rule", ["additive", "multiplicative", "rms"])
def test_beta_zero_is_the_plain_optimizer_bit_for_bit(name, rule):
    cls, kw = CONFIGS[name]
    results = []
    for wrap in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = cls(model.parameters(), **kw)
        if wrap:
            opt = HypergradientLR(opt, rule=rule, hypergrad_lr=0.0)
        gen = torch.Generator().manual_seed(1)
        for _ in range(15):
            x = torch.randn(16, 4, generator=gen)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("rule", ["multiplicative", "rms"])
def test_normalised_rules_are_scale_free(rule):
    """Scaling the loss by 1000 changes nothing in the normalised LR trajectories (SGD)."""
    traces = []
    for scale in (1.0, 1000.0):
        w = torch.nn.Parameter(W0.clone())
        opt = HypergradientLR(torch.optim.SGD([w], lr=0.05 / scale), rule=rule)
        for _ in range(10):
            opt.zero_grad()
            (scale * _loss(w)).backward()
            opt.step()
        traces.append([r[0] * scale for r in opt.lr_trace])
    assert traces[0] == pytest.approx(traces[1], rel=1e-4)


def test_defaults_per_family():
    w = torch.nn.Parameter(torch.zeros(2))
    assert HypergradientLR(torch.optim.SGD([w], lr=0.1)).hypergrad_lr == 0.02
    add_sgd = HypergradientLR(torch.optim.SGD([w], lr=0.1), rule="additive")
    add_adam = HypergradientLR(torch.optim.AdamW([w]), rule="additive")
    assert add_sgd.hypergrad_lr == DEFAULT_HYPERGRAD_LR[("additive", "sgd")] == 1e-3
    assert add_adam.hypergrad_lr == DEFAULT_HYPERGRAD_LR[("additive", "adam")] == 1e-7


# --------------------------------------------------------------------------- clamps
def test_lr_never_negative_by_default():
    """Far too large an LR: successive SGD gradients anti-correlate, additive HD hits 0."""
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.9), rule="additive", hypergrad_lr=10.0)
    for _ in range(20):
        opt.zero_grad()
        (0.5 * A.diag() @ w**2 * 4).backward()
        opt.step()
    lrs = [r[0] for r in opt.lr_trace]
    assert min(lrs) == 0.0 and all(lr >= 0 for lr in lrs)


@pytest.mark.parametrize("rule,beta", [("additive", 10.0), ("multiplicative", 0.5), ("rms", 0.5)])
def test_clamps_hold(rule, beta):
    _, opt = _run("sgd", rule, beta, 30, lr_bounds=(0.02, 0.08))
    lrs = [r[0] for r in opt.lr_trace]
    assert all(0.02 <= lr <= 0.08 for lr in lrs)
    assert max(lrs) == 0.08 or min(lrs) == 0.02  # the clamp was actually hit
    _, lrs_ref = _reference("sgd", rule, beta, 30, lr_min=0.02, lr_max=0.08)
    assert lrs == pytest.approx(lrs_ref, rel=1e-5)


# --------------------------------------------------------------------------- errors
def test_configuration_errors():
    w = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([w], lr=0.1)
    for bad in (torch.optim.RMSprop([w]), torch.optim.NAdam([w]), object()):
        with pytest.raises(ConfigTypeError, match="SGD"):
            HypergradientLR(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="already wrapped"):
        HypergradientLR(HypergradientLR(sgd))
    with pytest.raises(ConfigTypeError, match="Tensor"):
        HypergradientLR(torch.optim.Adam([w], lr=torch.tensor(0.01)))
    with pytest.raises(ConfigTypeError):
        HypergradientLR(sgd, hypergrad_lr="0.1")  # type: ignore[arg-type]
    for kw in (
        {"rule": "exp"},
        {"hypergrad_lr": -1.0},
        {"hypergrad_lr": math.nan},
        {"hypergrad_lr": 1.0},  # multiplicative needs β < 1
        {"lr_bounds": (-1e-3, math.inf)},
        {"lr_bounds": (0.1, 0.1)},
        {"lr_bounds": (0.0, math.nan)},
        {"rule": "rms", "hypergrad_lr": 1.5},
        {"rms_decay": 1.0},
        {"boost": 0.5},
        {"boost": math.inf},
        {"boost": 2.0, "rule": "additive"},
        {"boost": 60.0, "hypergrad_lr": 0.02},  # multiplicative: β·boost must stay < 1
        {"warmup_steps": -1},
    ):
        with pytest.raises(ConfigError):
            HypergradientLR(sgd, **kw)
    for kw in ({"boost": True}, {"boost": "2"}, {"warmup_steps": 2.5}, {"warmup_steps": False}):
        with pytest.raises(ConfigTypeError):
            HypergradientLR(sgd, **kw)
    HypergradientLR(sgd, rule="additive", hypergrad_lr=5.0)  # β ≥ 1 is fine when additive
    HypergradientLR(sgd, rule="rms", hypergrad_lr=0.5, boost=60.0)  # rms: exp keeps LR > 0


def test_nonfinite_gradient_leaves_lr_unchanged_and_is_counted():
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.05), rule="additive", hypergrad_lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()
    lr = opt.lrs[0]
    with pytest.warns(RuntimeWarning, match="gradient holds NaN/inf; the step is skipped") as rec:
        for bad in (math.nan, math.inf):
            opt.zero_grad()
            _loss(w).backward()
            with torch.no_grad():
                w.grad[1] = bad
            opt.step()
            assert opt.lrs[0] == lr
    assert len(rec) == 1 and _points_here(rec[0])  # once per optimizer, at the caller
    assert opt.skipped_hyper_steps == 2


@pytest.mark.parametrize("name", ["momentum", "adamw"])
def test_nonfinite_gradient_skips_the_whole_step(name):
    """A NaN/inf gradient skips the wrapped step too (as GradScaler does): weights, optimizer
    state, LR, step count and trace stay as they were, and the run then continues exactly as if
    the bad step had never been taken."""
    cls, kw = CONFIGS[name]

    def make():
        w = torch.nn.Parameter(W0.clone())
        return w, HypergradientLR(cls([w], **kw), rule="multiplicative", hypergrad_lr=0.1)

    def good(w, opt):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()

    w, opt = make()
    ref_w, ref = make()
    for _ in range(3):
        good(w, opt)
        good(ref_w, ref)
    w0, inner0 = w.detach().clone(), copy.deepcopy(opt.optimizer.state_dict())
    for bad in (math.nan, math.inf, -math.inf):
        opt.zero_grad()
        _loss(w).backward()
        with torch.no_grad():
            w.grad[0] = bad
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step()
        assert torch.equal(w.detach(), w0)
        inner = opt.optimizer.state_dict()
        assert inner["param_groups"] == inner0["param_groups"]
        for key, value in inner0["state"][0].items():
            assert torch.equal(torch.as_tensor(inner["state"][0][key]), torch.as_tensor(value)), key
    assert opt.steps == 3 and opt.skipped_hyper_steps == 3
    assert opt.lr_trace == ref.lr_trace and opt.lrs == ref.lrs
    for _ in range(2):  # continues bit for bit like the run that never saw the bad gradients
        good(w, opt)
        good(ref_w, ref)
    assert torch.equal(w.detach(), ref_w.detach()) and opt.lr_trace == ref.lr_trace


def test_grad_scaler_skipped_step_changes_nothing():
    model = torch.nn.Linear(3, 1)
    opt = HypergradientLR(torch.optim.AdamW(model.parameters(), lr=1e-2), hypergrad_lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x = torch.randn(8, 3)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
    assert opt.steps == 3
    before = [p.detach().clone() for p in model.parameters()]
    lrs, trace = opt.lrs, opt.lr_trace
    opt.zero_grad()
    scaler.scale(model(x).pow(2).mean() * math.inf).backward()  # overflow: scaler skips
    scaler.step(opt)
    scaler.update()
    assert (
        opt.steps == 3 and opt.lrs == lrs and opt.lr_trace == trace and opt.skipped_hyper_steps == 0
    )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scaler.get_scale() < 2.0**8
    opt.zero_grad()
    scaler.scale(model(x).pow(2).mean()).backward()
    scaler.step(opt)
    assert opt.steps == 4 and opt.lrs != lrs


def test_gradient_accumulation_matches_full_batch():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    traces, weights = [], []
    for micro in (1, 4):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5))
        for _ in range(8):
            opt.zero_grad()
            for chunk in x.chunk(micro):
                ((model(chunk) - 1).pow(2).mean() / micro).backward()
            opt.step()
        traces.append(opt.lr_trace)
        weights.append([p.detach() for p in model.parameters()])
    assert [r[0] for r in traces[0]] == pytest.approx([r[0] for r in traces[1]], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*weights))


# --------------------------------------------------------------------------- groups, closure
def test_per_group_hypergradients_and_no_grad_group():
    a, b, c = (torch.nn.Parameter(W0.clone()) for _ in range(3))
    inner = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.05)
    opt = HypergradientLR(inner, rule="additive", hypergrad_lr=0.05)
    opt.add_param_group({"params": [c], "lr": 0.02})
    for _ in range(4):
        opt.zero_grad()
        (_loss(a) + 3 * _loss(b)).backward()  # c gets no gradient
        opt.step()
    ref_a = _reference("sgd", "additive", 0.05, 4)[1]
    assert [r[0] for r in opt.lr_trace] == pytest.approx(ref_a, rel=1e-5)
    assert opt.lr_trace[-1][1] != 0.01 and opt.lrs[2] == 0.02 and c not in opt._dirs
    assert len(opt.scales) == 3


def test_closure_is_called_once_and_returned():
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.05))
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = _loss(w)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1 and torch.is_tensor(loss) and opt.steps == 1


# --------------------------------------------------------------------------- schedulers
def test_scheduler_multiplies_on_top():
    """LambdaLR on the wrapper: group['lr'] follows the schedule, HD's factor multiplies it."""
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.05), rule="additive", hypergrad_lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for step in range(5):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()
        used = opt.lrs[0]
        assert used == pytest.approx(0.05 / (1 + step) * opt.scales[0], rel=1e-12)
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05 / (2 + step))
    assert opt.scales[0] != 1.0


def test_beta_zero_with_scheduler_is_the_plain_schedule():
    results = []
    for wrap in (False, True):
        w = torch.nn.Parameter(W0.clone())
        opt = torch.optim.AdamW([w], lr=0.05)
        if wrap:
            opt = HypergradientLR(opt, hypergrad_lr=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        for _ in range(10):
            opt.zero_grad()
            _loss(w).backward()
            opt.step()
            sched.step()
        results.append(w.detach().clone())
    assert torch.equal(*results)


# --------------------------------------------------------------------------- state
def _train(opt, model, gen, n):
    for _ in range(n):
        x = torch.randn(8, 3, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize(
    "cls,hd_kw",
    [
        (torch.optim.SGD, {"rule": "additive", "hypergrad_lr": 1e-3}),
        (torch.optim.AdamW, {"rule": "additive", "hypergrad_lr": 1e-3}),
        # resumed mid-warm-up with a boosted step size (gain and ramp must survive)
        (torch.optim.SGD, {"rule": "multiplicative", "boost": 8.0, "warmup_steps": 8}),
        (torch.optim.AdamW, {"rule": "rms", "boost": 8.0, "warmup_steps": 8}),
    ],
)
def test_state_dict_survives_weights_only_load(cls, hd_kw):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        inner = cls(model.parameters(), lr=0.05, momentum=0.9) if cls is torch.optim.SGD else None
        inner = inner or cls(model.parameters(), lr=0.01)
        return model, HypergradientLR(inner, **hd_kw)

    model, opt = make()
    gen = torch.Generator().manual_seed(3)
    _train(opt, model, gen, 5)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    gen_state = gen.get_state()
    _train(opt, model, gen, 5)

    model2, opt2 = make()
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.steps == 5 and len(opt2.lr_trace) == 5
    assert opt2.lrs == pytest.approx(opt2.lr_trace[-1], rel=1e-12)  # ramp included
    gen.set_state(gen_state)
    _train(opt2, model2, gen, 5)
    assert opt2.lr_trace == opt.lr_trace and opt2.lrs == opt.lrs
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_load_state_dict_rejects_mismatches():
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.05))
    opt.zero_grad()
    _loss(w).backward()
    opt.step()
    state = opt.state_dict()
    with pytest.raises(StateError):
        opt.load_state_dict(state["optimizer"])
    other = HypergradientLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(5))], lr=0.05))
    with pytest.raises(StateError):
        other.load_state_dict(state)
    bad = {"optimizer": state["optimizer"], "hypergrad": {"scales": [1.0]}}
    with pytest.raises(StateError, match="lacks"):
        opt.load_state_dict(bad)
    bad = {"optimizer": state["optimizer"], "hypergrad": {**state["hypergrad"], "gain": []}}
    with pytest.raises(StateError, match="gain"):
        opt.load_state_dict(bad)
    # state dicts written before boost/warm-up existed still load (gain 1 = off)
    old = {
        k: v for k, v in state["hypergrad"].items() if k not in ("gain", "boost", "warmup_steps")
    }
    opt.load_state_dict({"optimizer": state["optimizer"], "hypergrad": old})
    assert opt._gain == [1.0]


def test_dot_and_norms_and_repr():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    b = [torch.tensor([0.5, -1.0]), torch.tensor([[2.0]])]
    assert dot_and_norms(a, b).tolist() == [4.5, 14.0, 5.25]
    assert dot_and_norms([], []).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ConfigError):
        dot_and_norms(a, b[:1])
    w = torch.nn.Parameter(torch.zeros(2))
    assert "multiplicative" in repr(HypergradientLR(torch.optim.SGD([w], lr=0.1)))


def test_deepcopy_keeps_a_working_wrapper():
    import copy

    model = torch.nn.Linear(3, 1)
    opt = HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    _train(opt, model, torch.Generator().manual_seed(0), 3)
    model2, opt2 = copy.deepcopy((model, opt))
    assert opt2.param_groups[0]["params"][0] is next(model2.parameters())
    assert opt2.lr_trace == opt.lr_trace and len(opt2._dirs) == 2
    _train(opt2, model2, torch.Generator().manual_seed(1), 2)
    assert opt2.steps == 5 and opt.steps == 3


# ------------------------------------------------------------------- mutation-testing oracles
# Configurations the reference above does not cover (maximize, decoupled Adam, AMSGrad whose
# running maximum differs from v). Oracle: D_t is the update the optimizer really made per unit
# LR, (θ_{t-1} − θ_t)/α, and h_{t+1} = −∇J(θ_t)·D_t with J the objective the optimizer follows
# (−f under maximize, + λ/2‖θ‖² under coupled weight decay).
DIRECTION_CASES = {
    "sgd-maximize-wd": (torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.1, "maximize": True}),
    "nesterov-wd": (
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 0.2},
    ),
    "adam-maximize-wd": (torch.optim.Adam, {"lr": 0.1, "maximize": True, "weight_decay": 0.1}),
    "amsgrad-shrinking-v": (torch.optim.Adam, {"lr": 0.3, "amsgrad": True, "betas": (0.5, 0.5)}),
    "adam-decoupled": (
        torch.optim.Adam,
        {"lr": 0.1, "weight_decay": 0.3, "decoupled_weight_decay": True},
    ),
    "adam-large-eps": (torch.optim.Adam, {"lr": 0.1, "eps": 0.5}),  # eps really is added
    # plain SGD: D_t must be a copy, not the .grad tensor that zero_grad then zeroes in place
    "sgd-zero-grad-in-place": (torch.optim.SGD, {"lr": 0.05}),
}


@pytest.mark.parametrize("name", list(DIRECTION_CASES))
def test_hypergradient_uses_the_update_the_optimizer_really_made(name):
    cls, kw = DIRECTION_CASES[name]
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(cls([w], **kw), rule="additive", hypergrad_lr=0.0)
    sign = -1.0 if kw.get("maximize") else 1.0
    coupled = kw.get("weight_decay", 0.0) and not kw.get("decoupled_weight_decay")
    d_prev, got, want, ams_differs = None, [], [], False
    for _ in range(5):
        theta = w.detach().clone()
        opt.zero_grad(set_to_none=name != "sgd-zero-grad-in-place")
        _loss(w).backward()
        opt.step()
        th = theta.clone().requires_grad_(True)
        objective = sign * _loss(th) + (0.5 * kw["weight_decay"] * (th @ th) if coupled else 0.0)
        (g,) = torch.autograd.grad(objective, th)
        if d_prev is not None:
            want.append(-(g @ d_prev).item())
            got.append(opt.last_hypergradients[0])
        d_prev = (theta - w.detach()) / kw["lr"]
        st = opt.optimizer.state[w]
        if "max_exp_avg_sq" in st:
            ams_differs |= not torch.equal(st["max_exp_avg_sq"], st["exp_avg_sq"])
    assert got == pytest.approx(want, rel=1e-4)
    assert kw.get("amsgrad", False) == ams_differs  # AMSGrad's maximum really was used


def _stepped_state(**hd_kw):
    """A state after two steps of SGD on two groups (so every per-group list has 2 entries)."""
    a, b = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(
        torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.05), **hd_kw
    )
    for _ in range(2):
        opt.zero_grad()
        (_loss(a) + _loss(b)).backward()
        opt.step()
    return opt, opt.state_dict()


def test_state_format_and_every_entry_is_checked_by_name():
    opt, state = _stepped_state(rule="rms", hypergrad_lr=0.1, boost=2.0)
    assert state["version"] == 2 and state["kind"] == "HypergradientLR"
    where = r"^HypergradientLR\.load_state_dict: "
    cases = [  # (entry of state["hypergrad"] or None for the whole dict, bad value, message)
        (None, 5, where + r"'hypergrad' must be a dict, got 5$"),
        ("scales", [1.0], where + r"'scales' has 1 entries in the state_dict, 2 expected"),
        ("scales", [1.0, -0.5], where + r"'scales' must be a finite number >= 0, got -0\.5"),
        ("last_h", [0.1], where + r"'last_h' has 1 entries"),
        ("last_h", [0.1, "x"], where + r"'last_h' must be a finite number or None, got 'x'"),
        ("h_sq", [0.1, 0.1, 0.1], where + r"'h_sq' has 3 entries"),
        ("h_sq", [0.1, -1.0], where + r"'h_sq' must be a finite number >= 0, got -1\.0"),
        ("h_n", [1], where + r"'h_n' has 1 entries"),
        ("h_n", [1, -1], where + r"'h_n' must be an int >= 0, got -1"),
        ("gain", [1.0], where + r"'gain' has 1 entries"),
        ("gain", [1.0, 0.5], where + r"'gain' must be a finite number >= 1, got 0\.5"),
    ]
    for key, value, message in cases:
        bad = {**state, "hypergrad": value if key is None else {**state["hypergrad"], key: value}}
        with pytest.raises(StateError, match=message):
            opt.load_state_dict(bad)
    for key in ("gain", "rule", "warmup_steps"):  # current-format states must have them all
        hd = {k: v for k, v in state["hypergrad"].items() if k != key}
        with pytest.raises(
            StateError, match=where + rf"the state_dict's 'hypergrad' entry lacks \['{key}'\]"
        ):
            opt.load_state_dict({**state, "hypergrad": hd})
    with pytest.raises(StateError, match=where + r"'optimizer' must be a torch optimizer"):
        opt.load_state_dict({**state, "optimizer": {"state": {}}})
    # in-range values load: a factor below 1 (HD lowered the LR), h_n > 0, gain > 1
    hd = {**state["hypergrad"], "scales": [0.5, 0.25], "h_n": [3, 0], "gain": [1.5, 1.0]}
    opt.load_state_dict({**state, "hypergrad": hd})
    assert opt.scales == [0.5, 0.25] and opt.lrs == [0.025, 0.0025]


@pytest.mark.parametrize(
    "saved,here,named",
    [
        ({"rule": "additive"}, {"rule": "multiplicative"}, "rule: saved 'additive'"),
        ({"hypergrad_lr": 0.1}, {"hypergrad_lr": 0.2}, "hypergrad_lr: saved 0.1"),
        ({"lr_bounds": (0.0, 1.0)}, {"lr_bounds": (1e-4, 1.0)}, "lr_min: saved 0.0"),
        ({"lr_bounds": (0.0, 1.0)}, {"lr_bounds": (0.0, 2.0)}, "lr_max: saved 1.0"),
        ({"rms_decay": 0.9}, {"rms_decay": 0.99}, "rms_decay: saved 0.9"),
        ({"boost": 2.0}, {"boost": 3.0}, "boost: saved 2.0"),
        ({"warmup_steps": 0}, {"warmup_steps": 5}, "warmup_steps: saved 0"),
    ],
)
def test_load_refuses_other_arguments_and_names_each(saved, here, named):
    _, state = _stepped_state(**saved)
    other, _ = _stepped_state(**here)
    with pytest.raises(StateError, match=r"(?<![A-Za-z_])" + re.escape(named)):
        other.load_state_dict(state)


def test_load_refuses_another_optimizer_class():
    w = torch.nn.Parameter(W0.clone())
    sgd = HypergradientLR(torch.optim.SGD([w], lr=0.05))
    adam = HypergradientLR(torch.optim.Adam([w], lr=0.05))
    with pytest.raises(
        StateError, match=r"optimizer_class: saved 'SGD', this HypergradientLR has 'Adam'"
    ):
        adam.load_state_dict(sgd.state_dict())


def test_added_group_starts_fresh_and_follows_the_reference():
    """A group added after two steps adapts exactly like a run started then (rms + boost use
    h², the h count and the gain, all of which must start at their initial values)."""
    a, b, c = (torch.nn.Parameter(W0.clone()) for _ in range(3))
    inner = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.05)
    opt = HypergradientLR(inner, rule="rms", hypergrad_lr=0.1, boost=3.0)
    for _ in range(2):
        opt.zero_grad()
        (_loss(a) + _loss(b)).backward()
        opt.step()
    opt.add_param_group({"params": [c], "lr": 0.05})
    assert opt.lrs[2] == 0.05 and opt.scales[2] == 1.0
    for _ in range(10):
        opt.zero_grad()
        (_loss(a) + _loss(b) + _loss(c)).backward()
        opt.step()
    _, ref = _reference("sgd", "rms", 0.1, 10, boost=3.0)
    assert [r[2] for r in opt.lr_trace[2:]] == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ConfigTypeError, match=r"param_groups\[3\]\['lr'\] is a Tensor"):
        opt.add_param_group({"params": [torch.nn.Parameter(W0.clone())], "lr": torch.tensor(0.1)})


def test_missing_attributes_come_from_the_wrapped_optimizer():
    inner = torch.optim.SGD([torch.nn.Parameter(W0.clone())], lr=0.05)
    opt = HypergradientLR(inner)
    # torch's schedulers and hooks read these; they live in the inner optimizer's __dict__
    assert opt._optimizer_step_pre_hooks is inner._optimizer_step_pre_hooks
    with pytest.raises(AttributeError, match="no_such_attribute"):
        opt.no_such_attribute  # noqa: B018
    bare = HypergradientLR.__new__(HypergradientLR)  # as during unpickling, before __setstate__
    assert getattr(bare, "anything", None) is None and not hasattr(bare, "optimizer")
    with pytest.raises(AttributeError, match="anything"):
        bare.anything  # noqa: B018


def test_zero_grad_passes_set_to_none_through():
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.05))
    _loss(w).backward()
    opt.zero_grad()  # torch's default: the gradient is dropped
    assert w.grad is None
    _loss(w).backward()
    opt.zero_grad(set_to_none=False)
    assert torch.equal(w.grad, torch.zeros(3))


def test_dot_and_norms_error_names_both_lengths():
    with pytest.raises(ConfigError, match=r"lists of equal length, got 2 and 1"):
        dot_and_norms([torch.ones(1), torch.ones(1)], [torch.ones(1)])


def test_sparse_gradients_are_refused_by_name():
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = HypergradientLR(torch.optim.SGD(emb.parameters(), lr=0.1))
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(
        ConfigTypeError, match=r"^HypergradientLR does not support sparse gradients$"
    ):
        opt.step()


def _points_here(record) -> bool:
    """The warning names this file as its origin (mutmut's trampoline adds a frame: itself)."""
    return record.filename == __file__ or "mutmut" in record.filename


def test_deprecated_bound_attributes_warn_at_the_caller():
    opt = HypergradientLR(torch.optim.SGD([torch.nn.Parameter(W0.clone())], lr=0.05))
    for name, value in (("lr_min", 0.0), ("lr_max", math.inf)):
        with pytest.warns(DeprecationWarning) as rec:
            assert getattr(opt, name) == value
        assert len(rec) == 1 and _points_here(rec[0])
        assert str(rec[0].message) == (
            f"HypergradientLR: the attribute {name!r} is deprecated and will be removed in the "
            "next release; use 'lr_bounds'"
        )


def test_state_checks_stay_importable_from_the_old_module():
    from autolr import _hypergrad, _statecheck

    assert _hypergrad._state_float is _statecheck._state_float
    for name in ("_no_such_check", "no_such_name"):
        with pytest.raises(
            AttributeError, match=rf"^module 'autolr\._hypergrad' has no attribute '{name}'$"
        ):
            getattr(_hypergrad, name)


def test_lr_bounds_argument_errors():
    sgd = torch.optim.SGD([torch.nn.Parameter(W0.clone())], lr=0.05)
    with pytest.raises(
        TypeError, match=r"^HypergradientLR\(\) got an unexpected keyword argument 'a_typo'$"
    ):
        HypergradientLR(sgd, z_typo=1.0, a_typo=2.0)
    both = (
        r"^HypergradientLR: got both lr_bounds=\(0\.0, 1\.0\) and the deprecated "
        r"lr_max/lr_min; pass only lr_bounds$"
    )
    with pytest.raises(ConfigError, match=both):
        HypergradientLR(sgd, lr_bounds=(0.0, 1.0), lr_min=0.1, lr_max=2.0)


def test_deprecated_lr_min_lr_max_arguments_warn_once_at_the_caller():
    sgd = torch.optim.SGD([torch.nn.Parameter(W0.clone())], lr=0.05)
    for kw, words, bounds in (
        ({"lr_min": 0.01}, "'lr_min' is", (0.01, math.inf)),
        ({"lr_max": 2.0, "lr_min": 0.01}, "'lr_max' and 'lr_min' are", (0.01, 2.0)),
    ):
        with pytest.warns(DeprecationWarning) as rec:
            opt = HypergradientLR(sgd, **kw)
        assert len(rec) == 1 and _points_here(rec[0])
        assert str(rec[0].message) == (
            f"HypergradientLR: {words} deprecated and will be removed in the next release; "
            "use 'lr_bounds=(low, high)'"
        )
        assert tuple(opt.lr_bounds) == bounds


def test_construction_error_messages_in_full():
    w = torch.nn.Parameter(W0.clone())
    sgd = torch.optim.SGD([w], lr=0.05)
    cases = [  # (optimizer, kwargs, exception, the whole message)
        (HypergradientLR(sgd), {}, ConfigTypeError,
         "the optimizer is already wrapped in a HypergradientLR"),
        (torch.optim.NAdam([w]), {}, ConfigTypeError,
         "HypergradientLR supports torch.optim.SGD (plain, momentum, Nesterov), torch.optim.Adam "
         "and torch.optim.AdamW; got NAdam. Its update direction (needed for the hypergradient) "
         "is unknown; LR-free optimizers such as Prodigy need no HD."),
        (torch.optim.Adam([w], lr=torch.tensor(0.01)), {}, ConfigTypeError,
         "param_groups[0]['lr'] is a Tensor; HypergradientLR needs float LRs "
         "(capturable/graph-captured optimizers are not supported)"),
        (sgd, {"lr_bounds": (-1.0, 1.0)}, ConfigError,
         "lr_bounds[0] must be a finite float >= 0, got -1.0"),
        (sgd, {"lr_bounds": (0.5, 0.1)}, ConfigError,
         "lr_bounds[1] must be a float > 0.5, got 0.1"),
        (sgd, {"lr_bounds": 5}, ConfigError, "lr_bounds must be a pair (low, high), got 5"),
        (sgd, {"lr_bounds": "ab"}, ConfigError, "lr_bounds must be a pair (low, high), got 'ab'"),
        (sgd, {"lr_bounds": (1, 2, 3)}, ConfigError,
         "lr_bounds must be a pair (low, high), got (1, 2, 3)"),
        (sgd, {"lr_min": -1.0}, ConfigError,
         "lr_min/lr_max low must be a finite float >= 0, got -1.0"),
        (sgd, {"lr_max": 0.0}, ConfigError, "lr_min/lr_max high must be a float > 0, got 0.0"),
    ]  # fmt: skip
    for optimizer, kw, exc, message in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with pytest.raises(exc) as info:
                HypergradientLR(optimizer, **kw)
        assert str(info.value) == message
    with pytest.warns(DeprecationWarning):  # only lr_max given: lr_min keeps its default 0
        assert tuple(HypergradientLR(sgd, lr_max=2.0).lr_bounds) == (0.0, 2.0)


def test_state_counters_trace_and_directions_are_checked_and_restored():
    opt, state = _stepped_state(rule="additive", hypergrad_lr=0.05)
    hd = state["hypergrad"]
    where = r"^HypergradientLR\.load_state_dict: "
    bad_params = r"this optimizer has parameters 0\.\.1: the state comes from another model$"
    cases = [
        ("steps", -1, where + r"'steps' must be an int >= 0, got -1$"),
        ("nonfinite", "x", where + r"'nonfinite' must be an int >= 0, got 'x'$"),
        ("trace", 5, where + r"'trace' must be a list, got 5$"),
        ("trace", [[0.05, 0.01], 7], where + r"'trace' must be a list, got 7$"),
        ("trace", [["x", 0.01]], where + r"'trace' must be a number, got 'x'$"),
        ("directions", 5, where + r"'directions' must be a dict, got 5$"),
        ("directions", {2: torch.zeros(3)}, where + r".*parameter 2, " + bad_params),
        ("directions", {True: torch.zeros(3)}, where + r".*parameter True, " + bad_params),
        ("directions", {"0": torch.zeros(3)}, where + r".*parameter '0', " + bad_params),
        ("directions", {0: torch.zeros(5)}, where + r"directions\[0\] has shape \(5,\) in the "
         r"state_dict but \(3,\) in parameter 0 here: the state comes from another model$"),
    ]  # fmt: skip
    for key, value, message in cases:
        with pytest.raises(StateError, match=message):
            opt.load_state_dict({**state, "hypergrad": {**hd, key: value}})
    # restored as saved: counters, a non-finite LR in the trace, directions in the param dtype
    d = {0: torch.ones(3, dtype=torch.float64), 1: torch.zeros(3)}
    trace = [[math.inf, 0.01], [0.05, 0.01]]
    opt.load_state_dict(
        {**state, "hypergrad": {**hd, "nonfinite": 3, "trace": trace, "directions": d}}
    )
    assert opt.skipped_hyper_steps == 3 and opt.lr_trace == trace
    assert opt.state_dict()["hypergrad"]["directions"][0].dtype == torch.float32
    # a shorter trace setting keeps the last steps
    a, b = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    short = HypergradientLR(
        torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.05),
        rule="additive", hypergrad_lr=0.05, trace=1,
    )  # fmt: skip
    short.load_state_dict(state)
    assert len(hd["trace"]) == 2 and short.lr_trace == [list(hd["trace"][-1])]


@pytest.mark.parametrize("steps", [0, 1])
def test_load_mid_warmup_restores_the_ramped_lr(steps):
    """After 0 steps the LR is the base LR; after step 1 of 4 it is ramped by 1/4."""
    w = torch.nn.Parameter(W0.clone())
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.05), warmup_steps=4)
    for _ in range(steps):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()
    fresh = HypergradientLR(
        torch.optim.SGD([torch.nn.Parameter(W0.clone())], lr=0.05), warmup_steps=4
    )
    fresh.load_state_dict(opt.state_dict())
    assert fresh.lrs == pytest.approx([0.05 if steps == 0 else 0.05 / 4], rel=1e-12)
