"""Self-Tuning Networks: space, layers, convert, regularisers, tuner, schedule, state."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from autolr import ConfigError, StateError, stn

from .conftest import make_regression


# ---------------------------------------------------------------------- helpers
def _space(n_drop: int = 2) -> stn.HyperSpace:
    space = stn.HyperSpace()
    for i in range(n_drop):
        space.add(f"drop{i}", 0.1, low=0.0, high=0.9)
    return space


class _Net(nn.Module):
    def __init__(self, d: int = 8, width: int = 32, out: int = 1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, width)
        self.d1 = nn.Dropout(0.0)
        self.fc2 = nn.Linear(width, width)
        self.d2 = nn.Dropout(0.0)
        self.head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.d1(torch.tanh(self.fc1(x)))
        return self.head(self.d2(torch.tanh(self.fc2(x))))


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.c2(F.relu(self.c1(x)))).flatten(1))


def _converted(variant_space: stn.HyperSpace | None = None) -> tuple[nn.Module, stn.HyperSpace]:
    space = variant_space or _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    return net, space


# ---------------------------------------------------------------------- space
def test_transforms_round_trip_every_kind() -> None:
    space = (
        stn.HyperSpace()
        .add("b", 0.3, low=0.0, high=0.9)
        .add("lo", 0.01, low=0.0)
        .add("hi", 2.0, high=5.0)
        .add("free", -1.5)
    )
    assert [space.kind(n) for n in space.names] == ["bounded", "lower", "upper", "unbounded"]
    for name, want in zip(space.names, (0.3, 0.01, 2.0, -1.5), strict=True):
        assert space.values()[name] == pytest.approx(want, rel=1e-5)
    vals = torch.tensor([[0.5, 3.0, -1.0, 7.0], [0.05, 1e-3, 4.9, -2.0]])
    back = space.constrained(space.unconstrain(vals))
    assert torch.allclose(back, vals, rtol=1e-4, atol=1e-6)
    u = torch.randn(64, 4) * 3
    c = space.constrained(u)
    assert (c[:, 0] > 0).all() and (c[:, 0] < 0.9).all()
    assert (c[:, 1] > 0).all() and (c[:, 2] < 5.0).all()
    assert torch.equal(c[:, 3], u[:, 3])
    assert torch.allclose(space.unconstrain(c), u, atol=1e-3)


def test_discrete_stays_integral_and_in_bounds() -> None:
    space = (
        stn.HyperSpace()
        .add("len", 4, low=0, high=8, discrete=True)
        .add("holes", 1, low=1, high=3, discrete=True)
    )
    assert space.values() == {"len": 4.0, "holes": 1.0}
    u = space.sample(2000) * 4  # far into both tails
    c = space.constrained(u)
    assert torch.equal(c, c.floor())
    assert c[:, 0].min() >= 0 and c[:, 0].max() <= 8
    assert c[:, 1].min() >= 1 and c[:, 1].max() <= 3
    assert set(c[:, 0].tolist()) == set(range(9))  # every integer reachable, top included
    relaxed = space.constrained(u, relaxed=True)
    assert not torch.equal(relaxed, relaxed.floor())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": 0.5, "low": 1.0, "high": 0.0}, "inverted"),
        ({"init": 0.5, "low": 1.0, "high": 1.0}, "inverted"),
        ({"init": 1.5, "low": 0.0, "high": 1.0}, "strictly inside"),
        ({"init": 0.0, "low": 0.0, "high": 1.0}, "strictly inside"),
        ({"init": -1.0, "low": 0.0}, "strictly inside"),
        ({"init": 9, "low": 0, "high": 8, "discrete": True}, "outside"),
        ({"init": 2.5, "low": 0, "high": 8, "discrete": True}, "integer"),
        ({"init": 0.5, "low": 0.0, "high": 1.0, "init_scale": 0.0}, "init_scale"),
        ({"init": math.nan}, "finite"),
    ],
)
def test_bad_hyperparameters_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        stn.HyperSpace().add("h", **kwargs)


def test_space_errors_and_freeze() -> None:
    space = _space(1)
    with pytest.raises(ConfigError, match="duplicate"):
        space.add("drop0", 0.2, low=0.0, high=0.9)
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        space.index("nope")
    with pytest.raises(ConfigError, match="empty"):
        stn.convert(_Net(), stn.HyperSpace())
    stn.convert(_Net(), space)
    with pytest.raises(ConfigError, match=r"before autolr\.stn\.convert"):
        space.add("late", 0.1, low=0.0, high=1.0)


def test_sampling_per_example_per_batch_and_entropy() -> None:
    space = (
        stn.HyperSpace()
        .add("a", 0.2, low=0.0, high=0.9, init_scale=0.5)
        .add("b", 0.2, low=0.0, high=0.9, per_example=False, init_scale=2.0)
        .add("c", 0.2, low=0.0, high=0.9, tune_scale=False)
    )
    u = space.sample(16)
    assert u.shape == (16, 3)
    assert u[:, 0].std() > 0 and torch.all(u[:, 1] == u[0, 1])
    sigma = torch.tensor([0.5, 2.0])
    want = (torch.log(sigma) + 0.5 * math.log(2 * math.pi * math.e)).sum()
    assert space.entropy().item() == pytest.approx(want.item(), rel=1e-5)  # fixed c excluded
    u.sum().backward()
    assert space.rho.grad[2] == 0 and space.rho.grad[0] != 0
    assert torch.equal(space.unconstrained.grad, torch.full((3,), 16.0))


# ---------------------------------------------------------------------- layers / convert
def test_zero_gates_reproduce_original_model_exactly() -> None:
    torch.manual_seed(1)
    plain = _Net().eval()
    x = torch.randn(10, 8)
    ref = plain(x)
    converted = stn.convert(copy.deepcopy(plain), _space())
    assert isinstance(converted.fc1, stn.StnLinear)
    converted.eval()
    # at λ, at a perturbed λ' (any h gives the same output while V = 0) and in train mode
    assert torch.equal(converted(x), ref)
    s = converted.fc1._stn_space
    with s.context(s.sample(10)):
        assert torch.equal(converted(x), ref)
    cnn = _CNN().eval()
    img = torch.randn(5, 1, 8, 8)
    ref2 = cnn(img)
    space2 = _space(1)
    cnn2 = stn.convert(copy.deepcopy(cnn), space2)
    assert isinstance(cnn2.c2, stn.StnConv2d) and cnn2.c2.stride == (2, 2)
    with space2.context(space2.sample(5)):
        assert torch.equal(cnn2(img), ref2)


def test_gates_change_output_per_example() -> None:
    space = _space(1)
    layer = stn.StnLinear(4, 3, 1)
    layer.attach(space)
    nn.init.normal_(layer.hyper_bottleneck.weight)
    x = torch.randn(1, 4).expand(6, 4)
    with space.context(space.sample(6)):
        y = layer(x)
    assert y.shape == (6, 3) and y.std(0).min() > 0  # same input, different λ' rows
    with space.context(space.sample(6)), pytest.raises(StateError, match="rows"):
        layer(torch.randn(4, 4))
    # gradient reaches λ only through the gates
    with space.context(space.sample(6)):
        layer(x).sum().backward()
    assert space.unconstrained.grad.abs().sum() > 0


def test_convert_options_and_errors() -> None:
    space = _space(1)
    net = stn.convert(_Net(), space, exclude=("head",), dropout={"d1": "drop0"})
    assert type(net.head) is nn.Linear and isinstance(net.fc2, stn.StnLinear)
    assert isinstance(net.d1, stn.StnDropout) and isinstance(net.d2, nn.Dropout)
    with pytest.raises(ConfigError, match=r"no .*layer"):
        stn.convert(nn.Sequential(nn.ReLU(), nn.Tanh()), _space())
    with pytest.raises(ConfigError, match="no submodule"):
        stn.convert(_Net(), _space(), dropout={"nope": "drop0"})
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        stn.convert(_Net(), _space(), dropout={"d1": "rate"})
    with pytest.raises(ConfigError, match=r"not nn\.Dropout"):
        stn.convert(_Net(), _space(), dropout={"fc1": "drop0"})
    with pytest.raises(ConfigError, match="include"):
        stn.convert(_Net(), _space(), include=(nn.Conv1d,))
    # the space's parameters never become model parameters
    ids = {id(p) for p in net.parameters()}
    assert id(space.unconstrained) not in ids and id(space.rho) not in ids


def test_dropout_uses_per_example_rates_without_gradient() -> None:
    space = stn.HyperSpace().add("p", 0.5, low=0.0, high=0.99)
    drop = stn.StnDropout("p")
    drop.attach(space)
    x = torch.ones(2, 4000)
    rates = torch.tensor([[0.0], [0.9]])
    with space.context(h_net=torch.zeros(2, 1), h_param=rates):
        y = drop(x)
    assert torch.equal(y[0], x[0])
    assert (y[1] == 0).float().mean().item() == pytest.approx(0.9, abs=0.03)
    assert y[1].mean().item() == pytest.approx(1.0, abs=0.15)
    u = space.sample(2)
    with space.context(u):
        assert not drop(x).requires_grad  # masks come from detached rates
    assert torch.equal(drop.eval()(x), x)


def test_augmentations_per_example() -> None:
    x = torch.ones(3, 1, 8, 8)
    out = stn.cutout(x, torch.tensor([0.0, 2.0, 4.0]), torch.tensor([1.0, 1.0, 2.0]))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros[0] == 0 and 1 <= zeros[1] <= 4 and 1 <= zeros[2] <= 32
    b = stn.adjust_brightness(torch.zeros(2, 3), torch.tensor([0.5, -1.0]))
    assert torch.equal(b, torch.tensor([[0.5] * 3, [-1.0] * 3]))
    c = stn.adjust_contrast(torch.tensor([[0.0, 2.0]]), 2.0)
    assert torch.equal(c, torch.tensor([[-1.0, 3.0]]))
    space = (
        stn.HyperSpace()
        .add("len", 3, low=0, high=6, discrete=True)
        .add("bright", 0.2, low=0.0, high=0.5)
        .add("contrast", 0.2, low=0.0, high=0.5)
    )
    aug = stn.BatchAugment([stn.Cutout("len"), stn.Brightness("bright"), stn.Contrast("contrast")])
    with space.context(space.sample(4)):
        y = aug(torch.rand(4, 1, 8, 8))
    assert y.shape == (4, 1, 8, 8) and torch.isfinite(y).all()
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        stn.BatchAugment([stn.Brightness("nope")]).check(space)


def test_l2_penalty_matches_sgd_weight_decay() -> None:
    space = stn.HyperSpace().add("wd", 0.1, low=0.0)
    lin = nn.Linear(3, 2)
    pen = stn.l2_penalty(lin, "wd", space=space)
    pen.backward()
    assert torch.allclose(lin.weight.grad, 0.1 * lin.weight.detach(), rtol=1e-4)
    assert lin.bias.grad is None


# ---------------------------------------------------------------------- tuner
def _tuner(variant: str = "stn", **kw) -> tuple[stn.STNTuner, nn.Module, stn.HyperSpace]:
    torch.manual_seed(0)
    space = _space().add("wd", 1e-3, low=0.0, per_example=False)
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    kw.setdefault("hyper_lr", 0.05)
    tuner = stn.STNTuner(
        net, space, F.mse_loss, opt, variant=variant, weight_decay="wd",
        linearize=variant == "delta", **kw,
    )  # fmt: skip
    return tuner, net, space


def _snap(m: nn.Module) -> dict[str, torch.Tensor]:
    # parameters only: the space's bound buffers hold NaN for "no bound", and NaN != NaN
    return {k: v.detach().clone() for k, v in m.named_parameters()}


@pytest.mark.parametrize("variant", ["stn", "delta"])
def test_weight_step_changes_only_weights_and_hyper_step_only_hypers(variant: str) -> None:
    tuner, net, space = _tuner(variant)
    x, y = make_regression(64)
    for _ in range(3):  # non-zero V so the hyper step has a gradient
        tuner.train_step((x[:32], y[:32]))
    w0, h0 = _snap(net), _snap(space)
    tuner.train_step((x[:32], y[:32]))
    w1, h1 = _snap(net), _snap(space)
    assert all(torch.equal(h0[k], h1[k]) for k in h0)
    assert sum(not torch.equal(w0[k], w1[k]) for k in w0) >= 6
    tuner.hyper_step((x[32:], y[32:]))
    w2, h2 = _snap(net), _snap(space)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not torch.equal(h1["unconstrained"], h2["unconstrained"])
    assert not torch.equal(h1["rho"], h2["rho"])
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("seed", [0, 2])
def test_one_hyper_step_lowers_the_validation_loss(seed: int) -> None:
    # Fast guard of the hyper step's direction: after a few weight steps the best-response
    # gates tie the validation loss to λ; one hyper step must lower it (evaluated without
    # perturbation, so it is deterministic), and the mirror step λ0 − (λ1 − λ0) must raise it.
    tuner, net, space = _tuner("stn")
    x, y = make_regression(256, seed=seed)
    val = [make_regression(256, seed=seed + 100)]
    for i in range(8):
        tuner.train_step((x[32 * i : 32 * (i + 1)], y[32 * i : 32 * (i + 1)]))
    w0 = _snap(net)
    l0, h0 = tuner.evaluate(val), space.unconstrained.detach().clone()
    tuner.hyper_step(val[0])
    l1, h1 = tuner.evaluate(val), space.unconstrained.detach().clone()
    assert all(torch.equal(w0[k], v) for k, v in _snap(net).items())  # only λ moved
    assert torch.all((h1 - h0).abs() > 0.04)  # Adam's first step: ≈ hyper_lr = 0.05 each
    with torch.no_grad():
        space.unconstrained.copy_(2 * h0 - h1)
    reversed_loss = tuner.evaluate(val)
    assert l1 < l0 < reversed_loss


def test_delta_weight_step_splits_general_and_response() -> None:
    tuner, net, space = _tuner("delta")
    x, y = make_regression(32)
    w0 = _snap(net)
    tuner.train_step((x, y))
    w1 = _snap(net)
    changed = {k for k in w0 if not torch.equal(w0[k], w1[k])}
    assert "fc1.weight" in changed and "fc1.hyper_bottleneck.weight" in changed
    # V was zero: no loss gradient reaches the response path yet (its weights only see L2)
    assert "fc1.response_bias" not in changed
    assert space.centred
    # eval at λ: the response path is off, output equals the elementary network's
    ctx = space.default_context()
    assert ctx.zero_net and torch.equal(ctx.h_net, torch.zeros(1, len(space)))


def test_alternation_warmup_and_schedule_recording() -> None:
    tuner, _net, space = _tuner(hyper_delay_steps=4, train_steps=3, val_steps=2)
    x, y = make_regression(96)
    val = [(x[64:80], y[64:80]), (x[80:], y[80:])]
    for _ in range(4):
        tuner.step((x[:32], y[:32]), val)
    assert tuner.hyper_steps == 0
    for _ in range(9):
        tuner.step((x[:32], y[:32]), val)
    assert tuner.global_step == 13 and tuner.hyper_steps == 6
    sched = tuner.schedule()
    assert sched.steps == [0, 7, 10, 13] and sched.names == space.names
    assert sched.values[0] != sched.values[-1]
    assert sched.at(12) == dict(zip(sched.names, sched.values[2], strict=True))
    assert len(tuner.scale_history()) == 4


def test_validation_iterator_errors() -> None:
    tuner, _, _ = _tuner(train_steps=1)
    x, y = make_regression(32)
    with pytest.raises(ConfigError, match="no batch"):
        tuner.step((x, y), [])
    tuner2, _, _ = _tuner(train_steps=1)
    with pytest.raises(ConfigError, match="empty or exhausted"):
        tuner2.step((x, y), iter([]))
    tuner3, _, _ = _tuner(train_steps=1)
    one_shot = iter([(x, y)])
    tuner3.step((x, y), one_shot)
    with pytest.raises(ConfigError, match="exhausted"):
        tuner3.step((x, y), one_shot)


def test_tuner_config_errors() -> None:
    space = _space()
    net = stn.convert(_Net(), space)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="variant"):
        stn.STNTuner(net, space, F.mse_loss, opt, variant="bogus")
    with pytest.raises(ConfigError, match="linearize"):
        stn.STNTuner(net, space, F.mse_loss, opt, linearize=True)
    with pytest.raises(ConfigError, match="train_steps"):
        stn.STNTuner(net, space, F.mse_loss, opt, train_steps=0)
    with pytest.raises(ConfigError, match="must not hold"):
        stn.STNTuner(net, space, F.mse_loss, torch.optim.SGD([space.unconstrained], lr=0.1))
    with pytest.raises(ConfigError, match="after autolr"):
        before = _Net()
        early = torch.optim.SGD(before.parameters(), lr=0.1)  # built before convert: stale
        stn.STNTuner(stn.convert(before, s2 := _space()), s2, F.mse_loss, early)
    with pytest.raises(ConfigError, match="different HyperSpace"):
        stn.STNTuner(net, _space(), F.mse_loss, opt)
    with pytest.raises(ConfigError, match="convert it first"):
        plain = _Net()
        stn.STNTuner(plain, space, F.mse_loss, torch.optim.SGD(plain.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        stn.STNTuner(net, space, F.mse_loss, opt, weight_decay="wd")


def test_non_finite_hypergradient_is_skipped_and_counted() -> None:
    tuner, net, space = _tuner()
    x, y = make_regression(64)
    for _ in range(2):
        tuner.train_step((x[:32], y[:32]))
    h0 = _snap(space)
    bad_y = y[32:].clone()
    bad_y[0] = math.inf
    val = tuner.hyper_step((x[32:], bad_y))
    assert not math.isfinite(val)
    assert tuner.skipped_hyper_steps == 1
    assert all(torch.equal(h0[k], v) for k, v in _snap(space).items())
    w0 = _snap(net)
    tuner.train_step((x[:32], bad_y))  # non-finite training loss: no weight update either
    assert tuner.skipped_steps == 1
    assert all(torch.equal(w0[k], v) for k, v in _snap(net).items())
    tuner.hyper_step((x[32:], y[32:]))
    assert tuner.skipped_hyper_steps == 1 and tuner.hyper_steps == 2


@pytest.mark.parametrize("variant", ["stn", "delta"])
def test_state_round_trip_and_resume_gives_same_continuation(variant: str) -> None:
    x, y = make_regression(96)
    val = [(x[64:], y[64:])]
    tuner, net, space = _tuner(variant, train_steps=2)
    for i in range(6):
        tuner.step((x[i * 8 : i * 8 + 32], y[i * 8 : i * 8 + 32]), val)
    buf = io.BytesIO()
    torch.save(
        {
            "model": net.state_dict(),
            "opt": tuner.optimizer.state_dict(),
            "tuner": tuner.state_dict(),
        },
        buf,
    )
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    def cont(t: stn.STNTuner) -> list[float]:
        torch.manual_seed(123)
        return [t.step((x[:32], y[:32]), val) for _ in range(5)]

    ref = cont(tuner)
    tuner2, net2, space2 = _tuner(variant, train_steps=2)
    net2.load_state_dict(ckpt["model"])
    tuner2.optimizer.load_state_dict(ckpt["opt"])
    tuner2.load_state_dict(ckpt["tuner"])
    assert tuner2.global_step == 6 and tuner2.hyper_steps == 3
    got = cont(tuner2)
    assert got == ref
    assert tuner2.schedule() == tuner.schedule()
    assert torch.equal(space2.unconstrained, space.unconstrained)
    # mismatches are refused
    tuner3, _, _ = _tuner("delta" if variant == "stn" else "stn")
    with pytest.raises(StateError, match="variant"):
        tuner3.load_state_dict(ckpt["tuner"])
    with pytest.raises(StateError, match="hyperparameters"):
        _space(3).load_state_dict(space.state_dict())


def test_schedule_export_and_replay_in_plain_model() -> None:
    tuner, _net, space = _tuner(train_steps=1, hyper_lr=0.2)
    x, y = make_regression(64)
    for _ in range(5):
        tuner.step((x[:32], y[:32]), [(x[32:], y[32:])])
    sched = stn.Schedule.from_state_dict(
        torch.load(_saved(tuner.schedule().state_dict()), weights_only=True)
    )
    plain = _Net()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    vals = sched.apply(
        5, dropout={"drop0": plain.d1, "drop1": [plain.d2]}, weight_decay={"wd": opt}
    )
    assert plain.d1.p == vals["drop0"] == pytest.approx(space.values()["drop0"])
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(space.values()["wd"])
    assert sched.apply(0)["drop0"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="no hyperparameter"):
        sched.apply(3, dropout={"nope": plain.d1})


def _saved(obj: object) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_evaluate_uses_unperturbed_lambda_in_eval_mode() -> None:
    tuner, net, _ = _tuner()
    x, y = make_regression(32)
    for _ in range(3):
        tuner.step((x, y), [(x, y)])
    net.train()
    a = tuner.evaluate([(x[:16], y[:16]), (x[16:], y[16:])])
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        b = F.mse_loss(net(x), y).item()  # outside any context: the space's λ
    assert a == pytest.approx(b, rel=1e-5)


# ---------------------------------------------------------------------- end to end
def _digits_overfit() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:100], perm[100:400]
    return x[tr], y[tr], x[va], y[va]


class _Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.d1 = nn.Dropout(0.0)
        self.fc2 = nn.Linear(256, 256)
        self.d2 = nn.Dropout(0.0)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.d1(F.relu(self.fc1(x)))
        return self.head(self.d2(F.relu(self.fc2(x))))


def _train(tuned: bool, steps: int, seed: int) -> tuple[float, stn.STNTuner | None]:
    xt, yt, xv, yv = _digits_overfit()
    torch.manual_seed(seed)
    net = _Wide()
    tuner = None
    if tuned:
        space = (
            stn.HyperSpace().add("p1", 0.05, low=0.0, high=0.95).add("p2", 0.05, low=0.0, high=0.95)
        )
        stn.convert(net, space, dropout={"d1": "p1", "d2": "p2"})
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    if tuned:
        tuner = stn.STNTuner(net, space, F.cross_entropy, opt, hyper_lr=0.1, scale_lr=0.03,
                             train_steps=5, hyper_delay_steps=50)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    val = [(xv[i : i + 50], yv[i : i + 50]) for i in range(0, len(xv), 50)]
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (32,), generator=g)
        if tuner is not None:
            tuner.step((xt[idx], yt[idx]), val)
        else:
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return F.cross_entropy(net(xv), yv).item(), tuner


@pytest.mark.slow
def test_stn_dropout_beats_no_dropout_on_overfitting_task() -> None:
    base, _ = _train(False, 600, seed=0)
    tuned, tuner = _train(True, 600, seed=0)
    assert tuner is not None
    assert tuned < base, (tuned, base)
    sched = tuner.schedule()
    assert len(sched) == 1 + (600 - 50) // 5
    assert tuner.skipped_hyper_steps == 0
    # the schedule moved away from its start (dropout raised against over-fitting)
    final = sched.at(600)
    assert max(final.values()) > 0.1


def test_augment_runs_on_training_batches_only() -> None:
    calls: list[int] = []

    class Record:
        names = ("bright",)

        def __call__(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
            calls.append(values["bright"].shape[0])
            return x + values["bright"][:, None]

    space = stn.HyperSpace().add("bright", 0.1, low=0.0, high=0.5)
    net = stn.convert(nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 1)), space)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    aug = stn.BatchAugment([Record()])
    tuner = stn.STNTuner(net, space, F.mse_loss, opt, train_steps=1, augment=aug)
    x, y = make_regression(48)
    tuner.step((x[:32], y[:32]), [(x[32:], y[32:])])
    assert calls == [32] and tuner.hyper_steps == 1  # one row per example, none for validation


@pytest.mark.parametrize(("variant", "linearize"), [("stn", False), ("delta", True)])
def test_cnn_with_tuned_cutout(variant: str, linearize: bool) -> None:
    space = (
        stn.HyperSpace()
        .add("len", 2, low=0, high=6, discrete=True)
        .add("holes", 1, low=1, high=2, discrete=True, per_example=False)
    )
    net = stn.convert(_CNN(), space)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    tuner = stn.STNTuner(
        net, space, F.cross_entropy, opt, variant=variant, linearize=linearize, train_steps=1,
        augment=stn.BatchAugment([stn.Cutout("len", "holes")]), hyper_lr=0.1,
    )  # fmt: skip
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for _ in range(4):
        assert math.isfinite(tuner.step((x, y), [(x, y)]))
    assert tuner.skipped_hyper_steps == 0 and tuner.skipped_steps == 0
    vals = tuner.schedule().at(4)
    assert vals["len"] == int(vals["len"]) and 0 <= vals["len"] <= 6
    assert space.unconstrained.grad is None  # hyper grads are applied, then cleared


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finiteness_check_flags_exactly_the_non_finite_entries(dtype):
    """Large finite gradients are finite: a check through their norm overflows (a float16
    tensor of 10 000 entries of 1000 has norm 1e5 > 65504) and would skip a healthy step.
    (STN checks its gradients with ``tensors_finite``.)"""
    from autolr._snapshot import tensors_finite as _all_finite

    big = torch.finfo(dtype).max / 2
    assert _all_finite([torch.full((10_000,), 1000.0, dtype=dtype), None])
    assert _all_finite([torch.full((4,), big, dtype=dtype), torch.zeros(0, dtype=dtype)])
    assert _all_finite([None]) and _all_finite([])
    for bad in (math.inf, -math.inf, math.nan):
        t = torch.ones(8, dtype=dtype)
        t[5] = bad
        assert not _all_finite([torch.ones(3, dtype=dtype), t]), bad
