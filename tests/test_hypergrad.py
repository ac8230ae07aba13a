"""HypergradientLR: hand-computed references, β=0 identity, clamps, AMP, accumulation, state."""

from __future__ import annotations

import io
import math

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
    _, opt = _run("sgd", rule, beta, 30, lr_min=0.02, lr_max=0.08)
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
        {"lr_min": -1e-3},
        {"lr_min": 0.1, "lr_max": 0.1},
        {"lr_max": math.nan},
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
    for bad in (math.nan, math.inf):
        opt.zero_grad()
        _loss(w).backward()
        with torch.no_grad():
            w.grad[1] = bad
        opt.step()
        assert opt.lrs[0] == lr
    assert opt.nonfinite == 2


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
    assert opt.steps == 3 and opt.lrs == lrs and opt.lr_trace == trace and opt.nonfinite == 0
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
