"""FedHyper: server rules (G, GM, SL, Adam-G) and CL against hand-computed references, robustness
to bad replies, state round-trips and a short simulation."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from autolr import ConfigError, ConfigTypeError, StateError
from autolr.federated import (
    FedHyperClient,
    FedHyperServer,
    dirichlet_partition,
    load_digits,
    parse_method,
    simulate,
)
from autolr.federated import _simulate as sim_mod

from .conftest import round_trip

T = torch.tensor


def _replies(g: torch.Generator, params, n: int, scale: float = 0.1):
    return [[p + scale * torch.randn(p.shape, generator=g) for p in params] for _ in range(n)]


# ---------------------------------------------------------------- server rules, by hand


def test_g_rule_matches_hand_computation_and_clips():
    x = T([0.0, 0.0])
    server = FedHyperServer(
        [x], rule="g", global_lr=0.5, hypergrad_lr=0.5, global_lr_bounds=(0.1, 2)
    )
    # round 0: Δ0 = mean((2, 0), (0, 2)) = (1, 1); no previous update: x += 0.5 Δ0
    r0 = server.step([[T([2.0, 0.0])], [T([0.0, 2.0])]])
    assert torch.equal(x, T([0.5, 0.5])) and r0.global_lr == 0.5 and math.isnan(r0.hypergradient)
    # round 1: Δ1 = (1, -0.5); ⟨Δ0, Δ1⟩ = 0.5; η = 0.5 + 0.5·0.5 = 0.75; x += 0.75 Δ1
    r1 = server.step([[T([1.5, 0.0])]])
    assert r1.hypergradient == pytest.approx(0.5) and r1.global_lr == pytest.approx(0.75)
    assert torch.allclose(x, T([0.5 + 0.75, 0.5 - 0.375]))
    # round 2: Δ2 = (4, 0); ⟨Δ1, Δ2⟩ = 4; η = 0.75 + 2 = 2.75 → clipped to 2
    before = x.clone()
    r2 = server.step([[x + T([4.0, 0.0])]])
    assert r2.global_lr == 2.0 and torch.allclose(x, before + T([8.0, 0.0]))
    # round 3: Δ3 = (-10, 0); ⟨Δ2, Δ3⟩ = -40 → η clipped to the lower bound 0.1
    r3 = server.step([[x + T([-10.0, 0.0])]])
    assert r3.global_lr == 0.1


def test_gm_rule_matches_hand_computation():
    x = T([0.0])
    server = FedHyperServer([x], rule="gm", global_lr=1.0, hypergrad_lr=0.1, momentum=0.5)
    d = [1.0, 2.0, -1.0]
    m_prev, a, ref = None, 0.0, 0.0
    for dt in d:
        server.step([[x + dt]])
        if m_prev is None:
            m = dt  # m0 = Δ0, no adaptation in round 0
        else:
            a = min(4.0, max(-0.2, a + 0.1 * m_prev * dt))
            m = dt + 0.5 * m_prev
        ref = ref + 1.0 * dt + a * m
        m_prev = m
        assert server.momentum_coef == pytest.approx(a)
        assert x.item() == pytest.approx(ref)
    # a = 0.1·1·2 = 0.2, then 0.2 + 0.1·(2 + 0.5)·(-1) = -0.05
    assert server.momentum_coef == pytest.approx(-0.05)
    assert server.effective_global_lr == pytest.approx(0.95)


def test_gm_default_bounds_follow_released_code():
    server = FedHyperServer([T([0.0])], rule="gm")
    assert server.global_lr_bounds == (0.8, 5.0)  # a ∈ [-0.2, 4]
    assert FedHyperServer([T([0.0])], rule="g").global_lr_bounds == (0.2, 5.0)  # a ∈ [-0.8, 4]
    assert FedHyperServer([T([0.0])], rule="g", global_lr=8.0).global_lr_bounds == (0.2, 8.0)


def test_sl_local_lr_persists_across_rounds_and_clips():
    x = T([0.0])
    server = FedHyperServer(
        [x], rule="none", local_lr=0.01, adapt_local_lr=True, local_hypergrad_lr=2.0
    )
    assert server.local_lr_bounds == pytest.approx((0.001, 0.1))
    server.step([[x + 1.0]])
    assert server.local_lr == 0.01  # no Δ_{t-1} yet
    server.step([[x + 1.0]])  # ⟨1, 1⟩ = 1: η_l = 0.01 + 2·0.01·1 = 0.03
    assert server.local_lr == pytest.approx(0.03)
    server.step([[x + 0.5]])  # ⟨1, 0.5⟩: +0.01, from 0.03 (not from the initial 0.01)
    assert server.local_lr == pytest.approx(0.04)
    server.step([[x + 10.0]])  # +2·0.01·5 = 0.1 → 0.14 clipped to 0.1
    assert server.local_lr == pytest.approx(0.1)
    server.step([[x - 100.0]])  # large disagreement → lower bound
    assert server.local_lr == pytest.approx(0.001)
    # FedAvg step unchanged by SL: x moved by the plain averages
    assert x.item() == pytest.approx(1 + 1 + 0.5 + 10 - 100)


def test_adam_g_matches_hand_fedadam():
    x = T([0.0, 0.0])
    server = FedHyperServer(
        [x], rule="g", server_optimizer="adam", global_lr=0.1, hypergrad_lr=0.01, adam_tau=1e-3
    )
    deltas = [T([1.0, -2.0]), T([0.5, 1.0]), T([1.0, 1.0])]
    m = torch.zeros(2)
    v = torch.zeros(2)
    eta, prev_dir, ref = 0.1, None, torch.zeros(2)
    for d in deltas:
        server.step([[x + d]])
        if prev_dir is not None:
            eta = min(1.0, max(0.01, eta + 0.01 * float(prev_dir @ d)))
        m = 0.9 * m + 0.1 * d
        v = 0.99 * v + 0.01 * d * d
        prev_dir = m / (v.sqrt() + 1e-3)
        ref = ref + eta * prev_dir
        assert server.global_lr == pytest.approx(eta)
        assert torch.allclose(x, ref, atol=1e-5)


def test_normalized_rules_match_hand_computation():
    x = T([0.0, 0.0])
    server = FedHyperServer(
        [x], rule="g", global_lr=1.0, hypergrad_lr=0.5, normalize=True, adapt_local_lr=True
    )
    assert server.local_hypergrad_lr == 0.3  # the default β with normalize
    server.step([[T([2.0, 0.0])]])  # Δ0 = (2, 0)
    server.step([[x + T([1.0, 1.0])]])  # cos(Δ0, Δ1) = 1/√2: η = 1·(1 + 0.5/√2)
    c = 1 / math.sqrt(2)
    assert server.global_lr == pytest.approx(1 + 0.5 * c)
    assert server.local_lr == pytest.approx(0.01 * (1 + 0.3 * c))
    assert x.tolist() == pytest.approx([2 + (1 + 0.5 * c), 1 + 0.5 * c])
    gm = FedHyperServer([T([0.0])], rule="gm", global_lr=2.0, hypergrad_lr=0.1, normalize=True)
    gm.step([[T([1.0])]])
    gm.step([[T([1.0 + 2.0 + 5.0])]])  # cos(m0, Δ1) = 1: a = 0.1·η0·1 = 0.2
    assert gm.momentum_coef == pytest.approx(0.2)


@pytest.mark.parametrize("normalize", [False, True])
def test_normalized_rule_is_scale_free(normalize):
    g = torch.Generator().manual_seed(2)
    deltas = [torch.randn(5, generator=g) + 0.5 for _ in range(6)]
    lrs = []
    for scale in (1.0, 30.0):
        x = torch.zeros(5)
        server = FedHyperServer([x], rule="g", hypergrad_lr=0.2, normalize=normalize)
        for d in deltas:
            server.step([[x + scale * d]])
        lrs.append(server.global_lr)
    assert (lrs[0] == pytest.approx(lrs[1])) is normalize


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rule": "g"},
        {"rule": "gm"},
        {"rule": "g", "server_optimizer": "adam", "global_lr": 0.1},
        {"rule": "g", "adapt_local_lr": True},
        {"rule": "gm", "normalize": True, "adapt_local_lr": True},
    ],
)
def test_zero_hyper_lr_is_fedavg_bit_for_bit(kwargs):
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g)]
    a = [p.clone() for p in init]
    b = [p.clone() for p in init]
    base = {k: v for k, v in kwargs.items() if k not in ("rule", "adapt_local_lr", "normalize")}
    ref = FedHyperServer(a, rule="none", **base)
    hyper = FedHyperServer(b, hypergrad_lr=0.0, local_hypergrad_lr=0.0, **kwargs)
    hand = [p.clone() for p in init]
    for _ in range(5):
        replies = _replies(g, a, 3)
        weights = [1.0, 2.0, 3.0]
        ref.step(replies, weights)
        hyper.step(replies, weights)
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        if "server_optimizer" not in kwargs:  # FedAvg by hand: x + η0 Σ w_i (c_i - x) / Σ w
            for j, p in enumerate(hand):
                p += sum(w * (r[j] - p) for w, r in zip(weights, replies)) / 6.0
            assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(hand, b))
    assert hyper.local_lr == ref.local_lr


# ---------------------------------------------------------------- client rule (CL)


def _client(hypergrad_lr=1.0, **kw):
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.1)
    return w, opt, FedHyperClient(opt, hypergrad_lr=hypergrad_lr, **kw)


def _sgd_step(w, opt, grad):
    opt.zero_grad()
    w.grad = grad.clone()
    opt.step()


def test_cl_rule_matches_hand_computation():
    w, opt, client = _client(hypergrad_lr=2.0, global_coef=0.5)
    glob = T([1.0, 0.0])
    client.begin_round(0.1, [glob])
    _sgd_step(w, opt, T([-1.0, 0.0]))  # δ1 = (0.1, 0): x = 0.5·0.1, y = ⟨δ1, Δ⟩ = 0.1
    client.step()
    s1 = 1 + 2.0 * (0.05 + 0.1)
    s1 = min(1.1, s1)  # capped growth
    assert client.scale == pytest.approx(s1) and opt.param_groups[0]["lr"] == pytest.approx(0.11)
    _sgd_step(w, opt, T([0.0, -0.1]))  # δ2 = (0, 0.011): ⟨δ2, Δ⟩ = 0, ⟨δ2, δ1⟩ = 0 → γ = 1
    client.step()
    assert client.scale == pytest.approx(1.1)
    _sgd_step(w, opt, T([0.0, 0.1]))  # δ3 = (0, -0.011): y = ⟨δ3, δ2⟩ = -1.21e-4
    client.step()
    assert client.scale == pytest.approx(1.1 * (1 - 2.0 * 1.21e-4))


def test_cl_refuses_a_param_group_added_after_it_was_built():
    """The client sets every group's LR from its scale; a group added later would keep its
    own LR unnoticed: refused at the next step and at the next round, nothing changed."""
    w, opt, client = _client()
    client.begin_round(0.1)
    _sgd_step(w, opt, T([1.0, 1.0]))
    client.step()
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.5})
    state = (client.scale, client.steps, client.lr)
    for call in (client.step, lambda: client.begin_round(0.1)):
        with pytest.raises(ConfigError, match=r"now has 2 parameter group\(s\); it had 1"):
            call()
    assert (client.scale, client.steps, client.lr) == state


def test_cl_global_term_sign_and_magnitude_below_the_cap():
    # Steps small enough that γ stays under γ_max = 1.1, so c·⟨δ, Δ⟩ shows in the scale.
    w, opt, client = _client(hypergrad_lr=1.0, global_coef=0.5)
    client.begin_round(0.1, [T([1.0, 0.0])])  # Δ_{t−1} = (1, 0)
    _sgd_step(w, opt, T([-0.1, 0.0]))  # δ1 = (0.01, 0); p = Δ: x = 0.5·0.01, y = 0.01
    client.step()
    assert client.scale == pytest.approx(1.015, rel=1e-6)  # x alone: 1.005, y alone: 1.01
    _sgd_step(w, opt, T([-1.0, -1.0]))  # δ2 = (0.1015, 0.1015); p = δ1
    client.step()
    # x = 0.5·0.1015 = 0.05075 (agrees with Δ), y = 0.1015·0.01 = 0.001015
    s2 = 1.015 * (1 + 0.05075 + 0.001015)
    assert client.scale == pytest.approx(s2, rel=1e-6)  # without x: 1.015·1.001015
    _sgd_step(w, opt, T([1.0, 0.0]))  # δ3 = (−0.1·s2, 0): against Δ, so x < 0
    client.step()
    lr2 = 0.1 * s2
    s3 = s2 * (1 - 0.5 * lr2 - lr2 * 0.1015)
    assert client.scale == pytest.approx(s3, rel=1e-6)
    assert client.lr == pytest.approx(0.1 * s3, rel=1e-6) == opt.param_groups[0]["lr"]


def test_cl_clips_scale_and_resets_each_round():
    w, opt, client = _client(hypergrad_lr=100.0, scale_bounds=(0.5, 1.2))
    client.begin_round(0.1, [T([1.0, 1.0])])
    for _ in range(5):  # steps agree with Δ_{t-1}: +10 % per step, clipped at 1.2
        _sgd_step(w, opt, T([-1.0, -1.0]))
        client.step()
    assert client.scale == pytest.approx(1.2) and client.lr == pytest.approx(0.12)
    _sgd_step(w, opt, T([5.0, 5.0]))  # reversal: γ = 1 + 100·(negative) < 0 → lower clip
    client.step()
    assert client.scale == pytest.approx(0.5)
    client.begin_round(0.2, None)
    assert client.scale == 1.0 and opt.param_groups[0]["lr"] == 0.2
    _sgd_step(w, opt, T([-1.0, -1.0]))
    client.step()  # round 0-like: no Δ_{t-1}, first step only recorded
    assert client.scale == 1.0


def test_cl_skips_nonfinite_steps():
    w, opt, client = _client()
    client.begin_round(0.1, [T([1.0, 1.0])])
    _sgd_step(w, opt, T([math.nan, 0.0]))
    assert client.step() == pytest.approx(0.1) and client.skipped_hyper_steps == 1


# ---------------------------------------------------------------- bad replies and bad input


def test_nonfinite_client_update_is_dropped_and_reported():
    x = T([0.0, 0.0])
    server = FedHyperServer([x], rule="g")
    report = server.step(
        [[T([1.0, 1.0])], [T([math.nan, 0.0])], [T([3.0, 3.0])], [T([math.inf, 1.0])]]
    )
    assert report.dropped == (1, 3) and report.num_clients == 4 and not report.skipped
    assert torch.equal(x, T([2.0, 2.0]))  # mean of the two finite replies only
    assert server.dropped_updates == 2
    report = server.step([[T([math.nan, 0.0])]])
    assert report.skipped and report.dropped == (0,)
    assert torch.equal(x, T([2.0, 2.0])) and server.skipped_rounds == 1 and server.round == 2
    assert torch.isfinite(torch.cat([t.reshape(-1) for t in server.previous_update])).all()


def test_server_bad_input():
    x = T([0.0, 0.0])
    with pytest.raises(ConfigTypeError, match=r"adam_betas must be a pair"):
        FedHyperServer([x], adam_betas=(0.9, 0.99, 0.5))
    with pytest.raises(ConfigTypeError, match=r"adam_betas must be a pair"):
        FedHyperServer([x], adam_betas=0.9)
    with pytest.raises(ConfigTypeError, match="params must be an iterable of tensors"):
        FedHyperServer(5)
    with pytest.raises(ConfigTypeError, match="weights must be a sequence"):
        FedHyperServer([x]).step([[T([1.0, 1.0])]], weights=2.0)
    with pytest.raises(ConfigError, match="empty"):
        FedHyperServer([])
    with pytest.raises(ConfigTypeError):
        FedHyperServer(x)
    with pytest.raises(ConfigError, match="rule"):
        FedHyperServer([x], rule="fancy")
    with pytest.raises(ConfigError, match="momentum"):
        FedHyperServer([x], rule="gm", server_optimizer="adam")
    with pytest.raises(ConfigError, match="outside"):
        FedHyperServer([x], global_lr=0.1, global_lr_bounds=(0.2, 5.0))
    with pytest.raises(ConfigError, match="global_lr"):
        FedHyperServer([x], global_lr=0.0)
    with pytest.raises(ConfigError, match="hypergrad_lr"):
        FedHyperServer([x], hypergrad_lr=-1.0)
    with pytest.raises(ConfigError, match="one device and one dtype"):
        FedHyperServer([x, T([1], dtype=torch.float64)])
    server = FedHyperServer([x])
    with pytest.raises(ConfigError, match="empty"):
        server.step([])
    with pytest.raises(ConfigError, match="shape"):
        server.step([[T([1.0, 2.0, 3.0])]])
    with pytest.raises(ConfigError, match="tensors"):
        server.step([[x, x]])
    with pytest.raises(ConfigError, match="weights"):
        server.step([[x]], weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="weights"):
        server.step([[x]], weights=[-1.0])
    assert server.round == 0 and torch.equal(x, T([0.0, 0.0]))  # nothing happened


def test_client_bad_input():
    with pytest.raises(ConfigTypeError, match="Optimizer"):
        FedHyperClient(object())  # type: ignore[arg-type]
    _, _, client = _client()
    with pytest.raises(ConfigError, match="begin_round"):
        client.step()
    with pytest.raises(ConfigError, match="shape"):
        client.begin_round(0.1, [T([1.0, 2.0, 3.0])])
    with pytest.raises(ConfigError, match="scale_bounds"):
        _client(scale_bounds=(2.0, 3.0))


def test_simulate_bad_input():
    with pytest.raises(ConfigError, match="unknown method"):
        simulate("fedprox", rounds=1, progress=False)
    with pytest.raises(ConfigError, match="one of g, gm, adam"):
        simulate("fedhyper-g+gm", rounds=1, progress=False)
    with pytest.raises(ConfigError, match="0 clients"):
        simulate("fedavg", num_clients=5, fraction=0.05, progress=False)
    with pytest.raises(ConfigError, match="fraction"):
        simulate("fedavg", fraction=0.0, progress=False)
    with pytest.raises(ConfigError, match="empty"):
        simulate([], progress=False)
    with pytest.raises(ConfigError, match="cos"):
        simulate("fedhyper-cos", rounds=1, progress=False)
    with pytest.raises(ConfigError, match="rounds"):
        simulate("fedavg", rounds=0, progress=False)
    # Each of these was a raw TypeError/ValueError/RuntimeError (the last after a round).
    for kw, err, match in [
        ({"global_lr": "1"}, ConfigTypeError, "global_lr must be a finite float > 0"),
        ({"global_lr": None}, ConfigTypeError, "global_lr must be a finite float > 0"),
        ({"seed": "x"}, ConfigTypeError, "seed must be an int"),
        ({"methods": None}, ConfigTypeError, "methods must be a method name or a sequence"),
        ({"device": "gpu"}, ConfigError, "'gpu' is not a torch device"),
        ({"checkpoint": "/no/such/dir/x.pt"}, ConfigError, "does not exist"),
    ]:
        kw = {"methods": "fedavg", "rounds": 1, "progress": False, **kw}
        with pytest.raises(err, match=match):
            simulate(**kw)
    labels = torch.arange(40) % 4
    with pytest.raises(ConfigError, match="seed must be an int >= 0"):
        dirichlet_partition(labels, 2, 0.5, seed=-1)
    with pytest.raises(ConfigTypeError, match="max_tries must be an int >= 1"):
        dirichlet_partition(labels, 2, 0.5, max_tries="3")
    assert parse_method("fedhyper-adam") == {
        "rule": "g",
        "server_optimizer": "adam",
        "sl": False,
        "cl": False,
        "cos": False,
    }


# ---------------------------------------------------------------- state


def test_server_state_roundtrip_resumes_identically():
    g = torch.Generator().manual_seed(1)
    for kwargs in ({"rule": "gm"}, {"rule": "g", "server_optimizer": "adam", "global_lr": 0.1}):
        init = [torch.randn(2, 3, generator=g), torch.randn(3, generator=g)]
        rounds = [_replies(g, init, 2, scale=0.3) for _ in range(4)]
        a = [p.clone() for p in init]
        full = FedHyperServer(a, adapt_local_lr=True, **kwargs)
        b = [p.clone() for p in init]
        first = FedHyperServer(b, adapt_local_lr=True, **kwargs)
        for rep in rounds[:2]:
            full.step([[p - q + r for p, q, r in zip(a, init, c)] for c in rep])
            first.step([[p - q + r for p, q, r in zip(b, init, c)] for c in rep])
        state = round_trip(first.state_dict())
        c = [p.clone() for p in b]
        second = FedHyperServer(c, adapt_local_lr=True, **kwargs)
        second.load_state_dict(state)
        for rep in rounds[2:]:
            full.step([[p - q + r for p, q, r in zip(a, init, c_)] for c_ in rep])
            second.step([[p - q + r for p, q, r in zip(c, init, c_)] for c_ in rep])
        assert all(torch.equal(p, q) for p, q in zip(a, c))
        assert full.state_dict()["round"] == second.state_dict()["round"] == 4
        assert full.global_lr == second.global_lr and full.local_lr == second.local_lr
    with pytest.raises(StateError, match="rule"):
        FedHyperServer([T([0.0] * 9)], rule="g").load_state_dict(
            FedHyperServer([T([0.0] * 9)], rule="gm").state_dict()
        )
    with pytest.raises(StateError):
        FedHyperServer([T([0.0])]).load_state_dict({"round": 1})


def test_client_state_roundtrip():
    w, opt, client = _client(hypergrad_lr=5.0)
    client.begin_round(0.1, [T([1.0, 1.0])])
    for _ in range(2):
        _sgd_step(w, opt, T([-1.0, -0.5]))
        client.step()
    state = round_trip(client.state_dict())
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = torch.optim.SGD([w2], lr=0.5)
    other = FedHyperClient(opt2, hypergrad_lr=5.0)
    other.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(client.lr)
    for c, ww, oo in ((client, w, opt), (other, w2, opt2)):
        _sgd_step(ww, oo, T([-1.0, 0.2]))
        c.step()
    assert client.scale == other.scale and torch.equal(w, w2)
    with pytest.raises(StateError):
        other.load_state_dict({"scale": 1.0})


# ---------------------------------------------------------------- data and simulation


def test_bundled_digits_and_partition():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    parts = dirichlet_partition(y, 20, 0.5, seed=3)
    allidx = torch.cat(parts).sort().values
    assert torch.equal(allidx, torch.arange(len(y))) and min(len(p) for p in parts) >= 2
    # small alpha concentrates each client on few classes
    skew = sum(torch.bincount(y[p], minlength=10).max().item() / len(p) for p in parts) / 20
    iid = dirichlet_partition(y, 20, 1000.0, seed=3)
    skew_iid = sum(torch.bincount(y[p], minlength=10).max().item() / len(p) for p in iid) / 20
    assert skew > skew_iid + 0.2
    with pytest.raises(ConfigError, match="exceeds"):
        dirichlet_partition(y, 1000, 0.5, min_size=2)


def test_simulate_fedhyper_beats_fedavg_with_bad_global_lr():
    # A too-large initial global LR (3, with local LR 0.3): FedAvg oscillates; FedHyper-G's
    # hypergradient sees successive updates disagree and lowers η_g.
    res = simulate(["fedavg", "fedhyper-g"], rounds=12, global_lr=3.0, local_lr=0.3, progress=False)
    avg, hyp = res.histories["fedavg"], res.histories["fedhyper-g"]
    assert hyp.rounds[-1].global_lr < 2.0
    assert hyp.final_accuracy > avg.final_accuracy + 0.1
    assert sum(hyp.accuracy[-4:]) > sum(avg.accuracy[-4:])
    assert res.rounds_to(0.8)["fedhyper-g"] is not None


def test_simulate_zero_hyper_lr_equals_fedavg_and_all_methods_run():
    names = ["fedavg", "fedhyper-g", "fedhyper-gm+sl+cl", "fedadam", "fedhyper-adam"]
    names.append("fedhyper-g+cos")
    res = simulate(
        names,
        rounds=3,
        num_clients=6,
        fraction=0.5,
        hyper_lr=0.0,
        local_hyper_lr=0.0,
        client_hyper_lr=0.0,
        adam_hyper_lr=0.0,
        cos_hyper_lr=0.0,
        progress=False,
    )
    h = res.histories
    assert h["fedavg"].to_dict()["rounds"] == h["fedhyper-g"].to_dict()["rounds"]
    assert h["fedavg"].to_dict()["rounds"] == h["fedhyper-g+cos"].to_dict()["rounds"]
    gm = [(r.accuracy, r.val_loss) for r in h["fedhyper-gm+sl+cl"].rounds]
    assert gm == [(r.accuracy, r.val_loss) for r in h["fedavg"].rounds]
    adam = [(r.accuracy, r.val_loss) for r in h["fedhyper-adam"].rounds]
    assert adam == [(r.accuracy, r.val_loss) for r in h["fedadam"].rounds]
    for hist in h.values():
        assert all(math.isfinite(r.accuracy) and math.isfinite(r.val_loss) for r in hist.rounds)


def test_simulate_resumes_from_checkpoint(tmp_path, monkeypatch):
    kw = {"rounds": 4, "num_clients": 6, "fraction": 0.5, "progress": False}
    names = ["fedavg", "fedhyper-gm+cl"]
    full = simulate(names, **kw)
    ckpt = tmp_path / "sim.pt"
    real = sim_mod._train_client
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3 * 4 + 5:  # in round 2 of the second method
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sim_mod, "_train_client", crashing)
    with pytest.raises(KeyboardInterrupt):
        simulate(names, checkpoint=ckpt, **kw)
    monkeypatch.setattr(sim_mod, "_train_client", real)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["current"]["method"] == "fedhyper-gm+cl"
    assert len(saved["current"]["history"]["rounds"]) == 1
    resumed = simulate(names, checkpoint=ckpt, **kw)
    for m in names:
        assert resumed.histories[m].to_dict() == full.histories[m].to_dict()
    with pytest.raises(ConfigError, match="another configuration"):
        simulate(names, checkpoint=ckpt, **{**kw, "rounds": 5})


def test_simulate_sl_local_lr_persists_between_rounds():
    res = simulate("fedhyper-sl", rounds=5, num_clients=6, fraction=0.5, progress=False)
    lrs = [r.local_lr for r in res.histories["fedhyper-sl"].rounds]
    assert lrs[0] == lrs[1] == 0.1  # no Δ_{t-1} before round 2's aggregation
    assert len(set(lrs[2:])) == 3  # moved, and each round starts from the last value


def test_server_accepts_parameter_iterators():
    model, client = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    server = FedHyperServer(model.parameters(), rule="g")
    server.step([client.parameters()])
    assert torch.allclose(model.weight, client.weight)


def test_simulation_result_serialises(tmp_path):
    res = simulate("fedhyper-g", rounds=2, num_clients=4, fraction=0.5, progress=False)
    res.save_json(tmp_path / "r.json")
    import json

    data = json.loads((tmp_path / "r.json").read_text())
    back = type(res).from_dict(data)
    assert back.histories["fedhyper-g"].accuracy == res.histories["fedhyper-g"].accuracy
    assert round_trip(res.to_dict())["config"]["rounds"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_server_client_and_simulate():
    x = torch.zeros(3, device="cuda")
    server = FedHyperServer([x], rule="gm")
    server.step([[torch.ones(3, device="cuda")]])
    server.step([[x + 1.0]])
    assert x.device.type == "cuda" and server.previous_update[0].device.type == "cuda"
    state = round_trip(server.state_dict())
    FedHyperServer([torch.zeros(3, device="cuda")], rule="gm").load_state_dict(state)
    res = simulate(
        "fedhyper-gm+cl", rounds=2, num_clients=4, fraction=0.5, device="cuda", progress=False
    )
    assert len(res.histories["fedhyper-gm+cl"].rounds) == 2


@pytest.mark.slow
def test_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "federated.py"
    out = subprocess.run(
        [sys.executable, str(script), "--rounds", "2", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "round  2" in out.stdout and "fedhyper-g" in out.stdout


# ---------------------------------------------------------------- issue 18: mutation survivors


def test_skipped_round_reports_the_unchanged_lrs_and_counts_every_skip():
    x = T([0.0, 0.0])
    server = FedHyperServer([x], rule="gm", global_lr=0.5, hypergrad_lr=1.0, adapt_local_lr=True)
    server.step([[T([1.0, 0.0])]])  # m_0 = Δ_0 = (1, 0)
    server.step([[x + T([1.0, 0.0])]])  # ⟨m_0, Δ_1⟩ = 1: a = 1.0·1 = 1, local lr moves too
    a, local = server.momentum_coef, server.local_lr
    assert a == pytest.approx(1.0) and local != server.initial_local_lr
    for i in (2, 3):
        r = server.step([[T([math.nan, 0.0])], [T([0.0, math.inf])]])
        assert (r.round, r.num_clients, r.dropped, r.skipped) == (i, 2, (0, 1), True)
        # G-M's coefficient on Δ_t is η_0 + a; nothing moved
        assert (r.global_lr, r.momentum_coef, r.local_lr) == (0.5 + a, a, local)
        assert math.isnan(r.hypergradient) and math.isnan(r.update_norm)
    assert server.skipped_rounds == 2 and server.dropped_updates == 4 and server.round == 4


@pytest.mark.parametrize(
    "kw, dtype, huge",
    [
        ({"rule": "g", "global_lr": 3.0, "normalize": True}, torch.float32, 2e38),
        ({"rule": "gm", "global_lr": 2.0}, torch.float32, 3e38),
        ({"rule": "g", "server_optimizer": "adam", "global_lr": 0.1}, torch.float64, 1e200),
    ],
    ids=["g-model-overflows", "gm-model-overflows", "adam-v-overflows"],
)
def test_an_update_that_would_overflow_is_skipped_and_nothing_is_lost(kw, dtype, huge):
    # Once applied: the model went to inf (every later reply dropped, every round skipped) or
    # FedAdam's v went to inf (every later step 0), for good and silently.
    x = torch.zeros(3, dtype=dtype)
    server = FedHyperServer([x], **kw)
    server.step([[x + 1.0]])
    before, state = x.clone(), server.state_dict()
    with pytest.warns(RuntimeWarning, match="finite but too large"):
        report = server.step([[x + huge]])
    assert report.skipped and report.dropped == () and torch.equal(x, before)
    assert (server.overflowed_rounds, server.skipped_rounds, server.round) == (1, 1, 2)
    after = server.state_dict()
    for k in ("global_lr", "momentum_coef", "local_lr", "prev_delta", "momentum_buf", "adam_v"):
        a, b = state[k], after[k]
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, k
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning; later overflows are only counted
        assert server.step([[x + huge]]).skipped and server.overflowed_rounds == 2
    moved = server.step([[x + 1.0]])
    assert not moved.skipped and torch.isfinite(x).all() and not torch.equal(x, before)
    other = FedHyperServer([torch.zeros(3, dtype=dtype)], **kw)
    other.load_state_dict(round_trip(server.state_dict()))
    assert other.overflowed_rounds == 2
    old = server.state_dict()
    del old["overflowed_rounds"]  # saved before the counter existed
    other.load_state_dict(old)
    assert other.overflowed_rounds == 0


def test_huge_finite_client_weights_keep_their_ratios():
    x = T([0.0, 0.0])
    server = FedHyperServer([x], rule="none")
    report = server.step([[T([1.0, 1.0])], [T([3.0, 3.0])]], weights=[1e308, 1e308])
    assert not report.skipped and torch.equal(x, T([2.0, 2.0]))


def test_client_warns_once_when_a_scheduler_sets_the_lr_beside_it():
    # The client overwrote a scheduler's LR silently at each of its LR changes.
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    client = FedHyperClient(opt)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def local_steps(n):
        for _ in range(n):
            opt.zero_grad()
            model(torch.randn(4, 3)).pow(2).mean().backward()
            opt.step()
            client.step()
            sched.step()

    client.begin_round(0.1)
    with pytest.warns(RuntimeWarning, match=r"param group 0's LR was changed outside the client"):
        local_steps(2)  # seen at the step after the scheduler's first
    assert client.lr > 0.09  # the client's own LR (the scheduler alone would be at 0.025)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per client
        local_steps(3)
    # Without a scheduler nothing is said, also across rounds.
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1)
    other = FedHyperClient(opt2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            other.begin_round(0.05)
            for _ in range(3):
                opt2.zero_grad()
                model(torch.randn(4, 3)).pow(2).mean().backward()
                opt2.step()
                other.step()


def test_client_state_mid_round_continues_from_the_last_local_step():
    # Small steps: γ stays below the growth cap, so which previous step is compared shows.
    w, opt, client = _client(hypergrad_lr=1.0, global_coef=0.0)
    client.begin_round(0.1, [T([1.0, 0.0])])
    _sgd_step(w, opt, T([-0.1, 0.0]))  # δ1 = (0.01, 0) against Δ: y = 0.01
    client.step()
    _sgd_step(w, opt, T([0.0, -0.1]))  # δ2 = (0, 0.0101) ⟂ δ1: y = 0, scale stays 1.01
    client.step()
    assert client.scale == pytest.approx(1.01)
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = torch.optim.SGD([w2], lr=0.5)
    other = FedHyperClient(opt2, hypergrad_lr=1.0, global_coef=0.0)
    other.load_state_dict(round_trip(client.state_dict()))
    for c, ww, oo in ((client, w, opt), (other, w2, opt2)):
        _sgd_step(ww, oo, T([0.0, -0.1]))  # δ3 = (0, 0.0101): compared with δ2, not Δ
        c.step()
    s3 = 1.01 * (1 + 0.0101**2)
    assert client.scale == pytest.approx(s3, rel=1e-9) and other.scale == client.scale
    assert torch.equal(w, w2)


def test_state_keys_are_the_saved_format_and_a_fresh_client_round_trips():
    # Old checkpoints are read by these names (the state format keeps each key's first name,
    # e.g. "hyper_lr", "rounds_skipped"); renaming one would orphan every saved state.
    server = FedHyperServer([T([0.0, 0.0])])
    state = server.state_dict()
    assert (state["version"], state["kind"]) == (2, "FedHyperServer")
    assert set(state) == {"version", "kind", "config", "round", "global_lr", "momentum_coef",
                          "local_lr", "rounds_skipped", "updates_dropped", "prev_delta",
                          "prev_dir", "momentum_buf", "adam_m", "adam_v",
                          "overflowed_rounds"}  # fmt: skip
    assert set(state["config"]) == {"rule", "server_optimizer", "initial_global_lr", "hyper_lr",
                                    "global_lr_bounds", "momentum", "adam_betas", "adam_tau",
                                    "initial_local_lr", "adapt_local_lr", "local_hyper_lr",
                                    "local_lr_bounds", "normalize", "numel", "shapes"}  # fmt: skip
    w, opt, client = _client()
    state = round_trip(client.state_dict())  # before any round: no buffers yet
    assert (state["version"], state["kind"]) == (2, "FedHyperClient")
    assert set(state) == {"version", "kind", "config", "base_lr", "scale", "steps",
                          "steps_skipped", "last", "prev_step", "global"}  # fmt: skip
    assert set(state["config"]) == {"hyper_lr", "global_coef", "max_growth", "scale_bounds",
                                    "shapes"}  # fmt: skip
    other = _client()[2]
    other.load_state_dict(state)
    with pytest.raises(ConfigError, match="begin_round"):
        other.step()
    client.begin_round(0.1, [T([1.0, 1.0])])
    _sgd_step(w, opt, T([math.nan, 0.0]))
    client.step()
    other.load_state_dict(round_trip(client.state_dict()))
    assert (other.steps, other.skipped_hyper_steps) == (1, 1)


def test_updates_of_several_parameter_tensors_land_in_their_own_tensors():
    a, b, c = T([0.0, 0.0]), T([[0.0], [0.0], [0.0]]), T([0.0])
    server = FedHyperServer([a, b, c], rule="g", global_lr=0.5)
    server.step([[T([2.0, 4.0]), T([[6.0], [8.0], [10.0]]), T([12.0])]])
    assert a.tolist() == [1.0, 2.0] and b.flatten().tolist() == [3.0, 4.0, 5.0]
    assert c.tolist() == [6.0]
    prev = server.previous_update
    assert prev[0].tolist() == [2.0, 4.0] and prev[1].tolist() == [[6.0], [8.0], [10.0]]
    assert prev[2].tolist() == [12.0]


def test_normalized_g_rule_is_multiplicative_and_reports_the_cosine():
    x = T([0.0, 0.0])
    server = FedHyperServer([x], rule="g", global_lr=0.5, hypergrad_lr=0.5, normalize=True)
    server.step([[T([0.0, 0.0])]])  # Δ0 = 0: no direction, the cosine counts as 0
    r = server.step([[T([0.1, 0.0])]])
    assert r.hypergradient == 0.0 and server.global_lr == 0.5
    r = server.step([[x + T([0.1, 0.1])]])  # tiny updates: the cosine, not the dot (0.01)
    c = 1 / math.sqrt(2)
    assert r.hypergradient == pytest.approx(c)
    assert r.global_lr == pytest.approx(0.5 * (1 + 0.5 * c))  # additive would be 0.5 + 0.5c


def test_reports_carry_the_hypergradient_of_each_rule():
    sl = FedHyperServer([T([0.0])], rule="none", adapt_local_lr=True, local_hypergrad_lr=0.5)
    sl.step([[T([1.0])]])
    r = sl.step([[T([1.0 + 3.0])]])  # ⟨Δ0, Δ1⟩ = 3: local lr 0.01 + 0.5·0.01·3
    assert (r.hypergradient, r.local_lr) == (3.0, pytest.approx(0.025))
    assert (r.round, r.momentum_coef, r.update_norm, r.skipped) == (1, 0.0, 3.0, False)
    adam = FedHyperServer([T([0.0])], rule="g", server_optimizer="adam", hypergrad_lr=0.1)
    adam.step([[T([1.0])]])
    direction = adam.state_dict()["prev_dir"].item()
    r = adam.step([[adam.params[0] + 2.0]])
    assert r.hypergradient == pytest.approx(direction * 2.0)
    plain = FedHyperServer([T([0.0])], rule="none", server_optimizer="adam")
    plain.step([[T([1.0])]])
    assert plain.state_dict()["prev_dir"] is None  # only G adapts from the Adam direction


def test_gm_rule_scales_by_eta0_and_clips_the_total_coefficient():
    x = T([0.0])
    gm = FedHyperServer([x], rule="gm", global_lr=0.5, hypergrad_lr=1.0, momentum=0.5,
                        global_lr_bounds=(0.4, 2.0))  # fmt: skip
    gm.step([[T([2.0])]])  # m0 = Δ0 = 2; x = 0.5·2
    assert x.item() == 1.0
    r = gm.step([[x + 0.5]])  # ⟨m0, Δ1⟩ = 1: a = 1 (not η0·1: unnormalized steps are raw)
    assert (r.hypergradient, r.momentum_coef, r.global_lr) == (1.0, 1.0, 1.5)
    # m1 = 0.5 + 0.5·2 = 1.5; x += η0·Δ1 + a·m1 = 0.25 + 1.5
    assert x.item() == pytest.approx(2.75)
    r = gm.step([[x + 10.0]])  # ⟨m1, Δ2⟩ = 15: a clipped so that η0 + a = 2.0
    assert (r.momentum_coef, r.global_lr) == (1.5, 2.0)


def test_begin_round_checks_its_arguments_and_ignores_a_non_finite_update():
    w, opt, client = _client()
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match=rf"^base_lr must be a finite float > 0, got {bad}$"):
            client.begin_round(bad)
    with pytest.raises(
        ConfigError, match=r"^global_update has 2 tensors, the client's optimizer has 1 params$"
    ):
        client.begin_round(0.1, [T([1.0, 1.0]), T([1.0])])
    with pytest.raises(
        ConfigError, match=r"^global_update\[0\] has shape \(3,\), expected \(2,\)$"
    ):
        client.begin_round(0.1, [T([1.0, 1.0, 1.0])])
    # used to crash inside torch (a float has no shape); now named at the point of misuse
    with pytest.raises(ConfigTypeError, match=r"^global_update\[0\] is a float, not a tensor$"):
        client.begin_round(0.1, [1.0])
    with pytest.raises(
        ConfigTypeError,
        match=r"^global_update must be a sequence of tensors like the client's optimizer's params$",
    ):
        client.begin_round(0.1, T([1.0, 1.0]))
    client.begin_round(0.1, (t for t in [T([0.0, 0.0])]))  # any iterable, as the server takes
    client.begin_round(0.1, [T([math.nan, 1.0])])  # as if round 0: nothing to compare with
    _sgd_step(w, opt, T([-1.0, -1.0]))
    client.step()
    assert (client.scale, client.skipped_hyper_steps) == (1.0, 0)


def test_a_float64_global_update_drives_a_float32_client():
    w, opt, client = _client(hypergrad_lr=1.0, global_coef=0.5)
    client.begin_round(0.1, [torch.tensor([1.0, 0.0], dtype=torch.float64)])
    _sgd_step(w, opt, T([-0.1, 0.0]))  # as in the float32 hand computation: 1.015
    client.step()
    assert client.scale == pytest.approx(1.015, rel=1e-6)


def _gm_server():
    a, b = T([0.0, 0.0]), torch.zeros(3, 1)
    server = FedHyperServer([a, b], rule="gm", adapt_local_lr=True)
    server.step([[T([1.0, 1.0]), torch.ones(3, 1)]])
    server.step([[T([math.nan, 1.0]), torch.ones(3, 1)]])  # skipped: counters move
    server.step([[T([2.0, 2.0]), 2 * torch.ones(3, 1)]])
    return server


SERVER = "FedHyperServer.load_state_dict: "
ANOTHER = ": the state comes from another model"
BAD_SERVER_STATES = [
    (("config",), 5, "'config' must be a dict, got 5"),
    (("config", "shapes"), 5, "config['shapes'] must be a list, got 5"),
    (("config", "shapes"), [[2], [4, 1]],
     "parameter 1 has shape (4, 1) in the state_dict but (3, 1) on this server" + ANOTHER),
    (("config", "shapes"), [[2], 5],
     "parameter 1 has shape 5 in the state_dict but (3, 1) on this server" + ANOTHER),
    (("config", "numel"), 7,
     "the state_dict is for 7 parameter elements, this server has 5" + ANOTHER),
    (("prev_delta",), torch.zeros(4),
     "'prev_delta' has shape (4,) in the state_dict but (5,) in this server's flat parameters"
     + ANOTHER),
    (("round",), -2, "'round' must be an int >= 0, got -2"),
    (("rounds_skipped",), -1, "'rounds_skipped' must be an int >= 0, got -1"),
    (("updates_dropped",), 1.5, "'updates_dropped' must be an int >= 0, got 1.5"),
    (("momentum_coef",), "x", "'momentum_coef' must be a finite number, got 'x'"),
    (("global_lr",), 0.0, "'global_lr' must be a finite number > 0, got 0.0"),
    (("local_lr",), 0.0, "'local_lr' must be a finite number > 0, got 0.0"),
    (("local_lr",), -1.0, "'local_lr' must be a finite number > 0, got -1.0"),
    # Values the rules' clipping never leaves, and buffers that would poison the next round.
    (("local_lr",), 0.5, "'local_lr' is 0.5, outside its bounds (0.001, 0.1) on this server"),
    (("momentum_coef",), 9.0, "'momentum_coef' is 9, outside its bounds (-0.2, 4) on this server"),
    (("global_lr",), 2.0, "'global_lr' is 2, outside its bounds (1, 1) on this server"),
    (("momentum_buf",), torch.full((5,), math.inf), "'momentum_buf' holds NaN/inf values"),
    (("prev_delta",), torch.full((5,), math.nan), "'prev_delta' holds NaN/inf values"),
]  # fmt: skip


def _corrupt(state, path, value):
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return state


@pytest.mark.parametrize(("path", "value", "message"), BAD_SERVER_STATES)
def test_each_bad_server_state_entry_is_named_with_its_value(path, value, message):
    server = _gm_server()
    before = [p.clone() for p in server.params], server.round, server.local_lr
    with pytest.raises(StateError) as err:
        server.load_state_dict(_corrupt(server.state_dict(), path, value))
    assert str(err.value) == SERVER + message
    assert server.round == before[1] and server.local_lr == before[2]


def test_bad_adam_buffers_and_a_config_without_numel_are_state_errors():
    def server():
        x = torch.zeros(3)
        srv = FedHyperServer([x], rule="g", server_optimizer="adam", global_lr=0.1)
        srv.step([[x + 1.0]])
        return srv

    cases = [
        ("adam_v", None, "'adam_m' and 'adam_v' must both be tensors or both None"),
        ("adam_v", -torch.ones(3), "'adam_v' (a mean of squares) holds negative values"),
        ("adam_m", torch.full((3,), math.nan), "'adam_m' holds NaN/inf values"),
    ]
    for key, value, message in cases:
        srv, state = server(), server().state_dict()
        before = srv.state_dict()
        state[key] = value
        with pytest.raises(StateError) as err:
            srv.load_state_dict(state)
        assert str(err.value) == SERVER + message
        assert torch.equal(srv.state_dict()["adam_v"], before["adam_v"])
    state = server().state_dict()
    del state["config"]["numel"]  # was a raw KeyError
    with pytest.raises(StateError, match="numel"):
        server().load_state_dict(state)


def test_server_state_round_trip_keeps_the_counters():
    server = _gm_server()
    other = FedHyperServer([T([0.0, 0.0]), torch.zeros(3, 1)], rule="gm", adapt_local_lr=True)
    other.load_state_dict(round_trip(server.state_dict()))
    assert (other.round, other.skipped_rounds, other.dropped_updates) == (3, 1, 1)
    assert other.momentum_coef == server.momentum_coef and other.local_lr == server.local_lr
    assert torch.equal(other.state_dict()["momentum_buf"], server.state_dict()["momentum_buf"])


CLIENT = "FedHyperClient.load_state_dict: "
BAD_CLIENT_STATES = [
    (("config",), 5, "'config' must be a dict, got 5"),
    (("config", "shapes"), 5, "config['shapes'] must be a list, got 5"),
    (("config", "shapes"), [[3]],
     "the state_dict is for parameters of shapes [(3,)], this client's optimizer holds [(2,)]"
     + ANOTHER),
    (("last",), torch.zeros(3), "'last' has shape (3,) in the state_dict but (2,) in this client"
     + ANOTHER),
    (("base_lr",), 0.0, "'base_lr' must be a finite number > 0, got 0.0"),
    (("scale",), -1.0, "'scale' must be a finite number > 0, got -1.0"),
    (("steps",), -1, "'steps' must be an int >= 0, got -1"),
    (("steps_skipped",), "a", "'steps_skipped' must be an int >= 0, got 'a'"),
    # A scale step() never reaches (it clips), and a buffer that would poison the next step.
    (("scale",), 1e6, "'scale' is 1e+06, outside scale_bounds (0.1, 10)"),
    (("global",), T([math.nan, 0.0]), "'global' holds NaN/inf values"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "message"), BAD_CLIENT_STATES)
def test_each_bad_client_state_entry_is_named_with_its_value(path, value, message):
    client = _client()[2]
    client.begin_round(0.1, [T([1.0, 1.0])])
    other = _client()[2]
    with pytest.raises(StateError) as err:
        other.load_state_dict(_corrupt(client.state_dict(), path, value))
    assert str(err.value) == CLIENT + message
    assert other.scale == 1.0 and other.steps == 0


def test_client_state_v2_needs_its_config_and_buffers_take_the_parameters_dtype():
    client = _client()[2]
    client.begin_round(0.1, [T([1.0, 1.0])])
    state = client.state_dict()
    del state["config"]
    with pytest.raises(
        StateError, match=r"^FedHyperClient.load_state_dict: the state_dict lacks \['config'\]$"
    ):
        _client()[2].load_state_dict(state)
    state = client.state_dict()
    state["last"], state["global"] = state["last"].double(), state["global"].double()
    other = _client()[2]
    other.load_state_dict(state)
    assert other.state_dict()["last"].dtype == other.state_dict()["global"].dtype == torch.float32


def test_client_state_with_a_malformed_shape_entry_is_a_state_error():
    # A shape saved as a bare int (5 instead of [5]) must be refused as a StateError naming
    # the shapes, not crash with a TypeError while the message is built.
    from autolr import StateError
    from autolr.federated import FedHyperClient

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = FedHyperClient(opt).state_dict()
    state["config"]["shapes"] = [5, [1]]
    with pytest.raises(StateError, match=r"shapes \[5, \(1,\)\]"):
        FedHyperClient(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)).load_state_dict(
            state
        )
