"""LR range test: the suggestion rule on synthetic curves and the driver's bitwise restore."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from autolr._errors import ConfigError
from autolr._range_test import RangeTestResult, lr_range_test, suggest_lr_from_range_test


def _ramp(lo: float = 1e-5, hi: float = 10.0, n: int = 100) -> list[float]:
    return [float(v) for v in np.geomspace(lo, hi, n)]


def _falls_then_explodes(lrs: list[float], noise: float = 0.0, seed: int = 0) -> list[float]:
    """Loss falls from 2 towards 0.1 as the LR grows, then grows exponentially past lr = 0.3."""
    rng = np.random.default_rng(seed)
    out = []
    for lr in lrs:
        base = 0.1 + 1.9 / (1.0 + 100.0 * lr)
        if lr > 0.3:
            base *= math.exp(10.0 * (lr - 0.3))
        out.append(base * (1.0 + noise * rng.standard_normal()))
    return out


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_falls_then_explodes_suggests_below_divergence_by_the_divisor(noise):
    lrs = _ramp()
    res = suggest_lr_from_range_test(lrs, _falls_then_explodes(lrs, noise))
    assert isinstance(res, RangeTestResult)
    assert res.diverged_lr is not None and res.min_loss_lr is not None
    # the documented rule: LR at the minimum smoothed loss / 10, which precedes the divergence
    assert res.lr == pytest.approx(res.min_loss_lr / 10)
    assert res.min_loss_lr <= res.diverged_lr
    assert res.lr <= res.diverged_lr / 10
    # the minimum lies in the valley (0.03..1 covers the EMA's lag), not at the ramp's start
    assert 0.03 <= res.min_loss_lr <= 1.0
    assert res.steps == lrs.index(res.diverged_lr) + 1 < len(lrs)
    assert len(res.lrs) == res.steps == len(res.smoothed)
    assert "diverged" in res.reason


def test_all_nan_returns_documented_fallback():
    lrs = _ramp(n=20)
    res = suggest_lr_from_range_test(lrs, [math.nan] * 20)
    assert res.lr == lrs[0]  # the smallest LR tried
    assert res.min_loss_lr is None and res.diverged_lr == lrs[0]
    assert res.steps == 1 and res.smoothed == ()
    assert "no finite loss" in res.reason
    res = suggest_lr_from_range_test(lrs, [math.inf] * 20, fallback=0.05)
    assert res.lr == 0.05 and "fallback" in res.reason


def test_monotonically_falling_gives_lower_bound_at_the_top():
    lrs = _ramp(1e-4, 1.0, 50)
    losses = [2.0 / (1.0 + 10.0 * lr) for lr in lrs]
    res = suggest_lr_from_range_test(lrs, losses)
    assert res.diverged_lr is None
    assert res.min_loss_lr == lrs[-1]
    assert res.lr == pytest.approx(lrs[-1] / 10)
    assert res.steps == len(lrs)
    assert "lower bound" in res.reason


def test_nan_mid_curve_ends_the_scan_there():
    lrs = _ramp(1e-4, 1.0, 30)
    losses = [1.0 - 0.01 * i for i in range(30)]
    losses[20] = math.nan
    res = suggest_lr_from_range_test(lrs, losses, beta=0.0)
    assert res.diverged_lr == lrs[20] and res.steps == 21
    assert res.min_loss_lr == lrs[19] and len(res.smoothed) == 20
    assert "non-finite" in res.reason


def test_rise_below_the_divergence_threshold_is_not_divergence():
    lrs = _ramp(1e-3, 1.0, 40)
    losses = [1.0 - 0.5 * i / 20 if i < 20 else 0.5 + 0.05 * (i - 20) for i in range(40)]
    res = suggest_lr_from_range_test(lrs, losses, beta=0.0)  # rises to 1.45 < 4 x 0.5
    assert res.diverged_lr is None and res.steps == 40
    assert res.min_loss_lr == lrs[20] and res.lr == pytest.approx(lrs[20] / 10)


@pytest.mark.parametrize(
    ("lrs", "losses", "kw"),
    [
        ([], [], {}),
        ([0.1, 0.2], [1.0], {}),
        ([0.2, 0.1], [1.0, 1.0], {}),
        ([0.0, 0.1], [1.0, 1.0], {}),
        ([0.1, 0.2], [1.0, 1.0], {"beta": 1.0}),
        ([0.1, 0.2], [1.0, 1.0], {"diverge_factor": 1.0}),
        ([0.1, 0.2], [1.0, 1.0], {"divisor": 0.0}),
    ],
)
def test_invalid_inputs_raise(lrs, losses, kw):
    with pytest.raises(ConfigError):
        suggest_lr_from_range_test(lrs, losses, **kw)


# ---------------------------------------------------------------------- driver
class _Net(nn.Module):
    """Buffers (BatchNorm) and randomness (dropout) so the restore has something to restore."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _setup(opt_name: str):
    torch.manual_seed(0)
    x, y = torch.randn(128, 6), torch.randn(128, 1)
    model = _Net()
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> torch.Tensor:
        idx = torch.randint(0, 128, (16,))
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):  # non-empty optimizer state and .grad before the test
        train_step()
    return model, opt, train_step


def _opt_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [t for st in opt.state_dict()["state"].values() for t in st.values()]


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_driver_restores_model_optimizer_grads_and_rng_bit_for_bit(opt_name):
    model, opt, train_step = _setup(opt_name)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    state = [t.clone() for t in _opt_tensors(opt)]
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    rng = torch.get_rng_state()
    np_draw = np.random.get_state()[1].copy()

    res = lr_range_test(model, opt, train_step, lr_min=1e-4, lr_max=100.0, steps=80)
    assert 2 <= res.steps <= 80 and res.lr > 0

    after = model.state_dict()
    assert params.keys() == after.keys()
    assert all(torch.equal(params[k], after[k]) for k in params)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters()))
    now = _opt_tensors(opt)
    assert len(now) == len(state) and all(torch.equal(a, b) for a, b in zip(state, now))
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert torch.equal(torch.get_rng_state(), rng)
    assert np.array_equal(np.random.get_state()[1], np_draw)


def test_driver_stops_on_nan_without_raising_and_restores():
    model, opt, _ = _setup("sgd")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def train_step() -> float:
        calls.append(opt.param_groups[0]["lr"])
        with torch.no_grad():  # trash the weights: the restore must undo it
            for p in model.parameters():
                p.add_(1.0)
        return 1.0 if len(calls) < 5 else math.nan

    res = lr_range_test(model, opt, train_step, lr_min=1e-3, lr_max=1.0, steps=20, beta=0.0)
    assert len(calls) == 5 == res.steps
    assert res.diverged_lr == calls[-1] and "non-finite" in res.reason
    assert res.lr == pytest.approx(calls[0] / 10)  # flat curve: first point is the minimum
    assert calls[0] == pytest.approx(1e-3) and calls == sorted(calls)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_driver_restores_when_train_step_raises():
    model, opt, _ = _setup("adamw")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def train_step() -> float:
        with torch.no_grad():
            next(model.parameters()).mul_(0.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(model, opt, train_step, lr_min=1e-3, lr_max=1.0, steps=10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == 1e-3


def test_driver_matches_the_analysis_of_its_own_curve():
    model, opt, train_step = _setup("sgd")
    seen: list[tuple[float, float]] = []

    def recording_step() -> torch.Tensor:
        loss = train_step()
        seen.append((opt.param_groups[0]["lr"], loss.item()))
        return loss

    res = lr_range_test(model, opt, recording_step, lr_min=1e-4, lr_max=100.0, steps=60)
    lrs, losses = zip(*seen)
    again = suggest_lr_from_range_test(lrs, losses)
    assert again == res and res.steps == len(seen)


@pytest.mark.parametrize(
    "kw",
    [
        {"lr_min": 0.0, "lr_max": 1.0, "steps": 10},
        {"lr_min": 1.0, "lr_max": 0.5, "steps": 10},
        {"lr_min": 1e-3, "lr_max": 1.0, "steps": 1},
    ],
)
def test_driver_rejects_bad_ramps(kw):
    model, opt, train_step = _setup("sgd")
    with pytest.raises(ConfigError):
        lr_range_test(model, opt, train_step, **kw)
