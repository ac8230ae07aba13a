from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch import nn

from autolr import ConfigError, ConfigTypeError, Snapshot, StateError
from autolr._snapshot import capture_rng_state, restore_rng_state

from .conftest import tiny_mlp


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, scaler=None) -> None:
    for _ in range(steps):
        x = torch.randn(8, 8)
        loss = model(x).pow(2).mean() + random.random() * 0 + float(np.random.rand()) * 0
        opt.zero_grad()
        loss.backward()
        opt.step()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def _opt_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = []
    for st in opt.state_dict()["state"].values():
        out.extend(v.clone() for v in st.values() if isinstance(v, torch.Tensor))
    return out


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.AdamW(p, lr=1e-2),
    ],
    ids=["sgd-nesterov", "adamw"],
)
@pytest.mark.parametrize("offload", [None, "cpu"])
def test_restore_is_bitwise(make_opt, offload) -> None:
    model = tiny_mlp()
    model.add_module("bn", nn.BatchNorm1d(1))  # buffers too
    opt = make_opt(model.parameters())
    _train(model, opt, 3)
    snap = Snapshot(model, opt, offload=offload)
    snap.capture()
    w0, s0 = _flat(model), _opt_tensors(opt)
    rng0 = (torch.rand(3), np.random.rand(3), random.random())
    _train(model, opt, 5)
    snap.restore()
    assert torch.equal(_flat(model), w0)
    for a, b in zip(_opt_tensors(opt), s0):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), rng0[0])
    assert np.array_equal(np.random.rand(3), rng0[1])
    assert random.random() == rng0[2]
    # Restoring twice gives the same trajectory: the snapshot is not aliased by the optimizer.
    snap.restore()
    _train(model, opt, 4)
    w_a = _flat(model)
    snap.restore()
    _train(model, opt, 4)
    assert torch.equal(_flat(model), w_a)


def test_restore_clears_state_created_after_capture() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = Snapshot(model, opt)
    snap.capture()  # no momentum buffers yet
    _train(model, opt, 2)
    snap.restore()
    assert not opt.state_dict()["state"]


def test_extras_are_restored() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    snap = Snapshot(model, opt, extras={"sched": sched})
    snap.capture()
    for _ in range(3):
        opt.step()
        sched.step()
    assert sched.last_epoch == 3
    snap.restore()
    assert sched.last_epoch == 0
    with pytest.raises(ConfigTypeError):
        snap.register("bad", object())  # type: ignore[arg-type]


def test_state_dict_round_trip_weights_only() -> None:
    model = tiny_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, opt, 2)
    snap = Snapshot(model, opt)
    snap.capture()
    w0 = _flat(model)
    buf = io.BytesIO()
    torch.save(snap.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    snap2 = Snapshot(model, opt)
    snap2.load_state_dict(state)
    _train(model, opt, 3)
    snap2.restore()
    assert torch.equal(_flat(model), w0)


def test_rng_state_round_trip_weights_only() -> None:
    st = capture_rng_state()
    a = (torch.rand(2), np.random.rand(2), random.random())
    buf = io.BytesIO()
    torch.save(st, buf)
    buf.seek(0)
    restore_rng_state(torch.load(buf, weights_only=True))
    assert torch.equal(torch.rand(2), a[0])
    assert np.array_equal(np.random.rand(2), a[1])
    assert random.random() == a[2]


def test_errors() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StateError):
        Snapshot(model, opt).restore()
    with pytest.raises(ConfigError):
        Snapshot(model, opt, offload="disk")
    with pytest.raises(TypeError):
        Snapshot(object(), opt)  # type: ignore[arg-type]


def test_grad_scaler_registered() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    snap = Snapshot(model, opt, extras={"scaler": scaler})
    snap.capture()
    loss = model(torch.randn(4, 8)).pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update(new_scale=8.0)
    assert scaler.get_scale() == 8.0
    snap.restore()
    assert scaler.get_scale() == 1024.0


def test_state_dict_from_missing_device_lands_on_cpu() -> None:
    # A snapshot saved on a CUDA machine must still load (to the CPU) where CUDA is absent.
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    snap.capture()
    w0 = _flat(model)
    state = snap.state_dict()
    state["devices"] = ["cuda:7" if d == "cpu" else d for d in map(str, state["devices"])]
    snap2 = Snapshot(model, opt)
    snap2.load_state_dict(state)
    _train(model, opt, 2)
    snap2.restore()
    assert torch.equal(_flat(model), w0)
