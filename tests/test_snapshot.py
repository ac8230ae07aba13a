from __future__ import annotations

import io
import math
import random
import types

import numpy as np
import pytest
import torch
from torch import nn

from autolr import ConfigError, ConfigTypeError, Snapshot, StateError
from autolr._snapshot import _iter_tensors, capture_rng_state, restore_rng_state

from .conftest import round_trip, tiny_mlp


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, scaler=None) -> None:
    for _ in range(steps):
        x = torch.randn(8, 8)
        loss = model(x).pow(2).mean() + random.random() * 0 + float(np.random.rand()) * 0
        opt.zero_grad()
        loss.backward()
        opt.step()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def _saved(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[torch.Tensor, dict]:
    """The weights now and a snapshot's state of them after a ``weights_only`` round trip."""
    snap = Snapshot(model, opt)
    snap.capture()
    return _flat(model), round_trip(snap.state_dict())


def _opt_state(opt: torch.optim.Optimizer) -> dict[int, dict[str, object]]:
    """Deep copy of the optimizer's per-parameter state (momentum, Adam moments, step)."""
    return {
        i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        for i, st in opt.state_dict()["state"].items()
    }


def assert_same_opt_state(got: dict, want: dict) -> None:
    """Every parameter's every state entry, by key: nothing dropped, nothing extra."""
    assert sorted(got) == sorted(want)
    for i in want:
        assert sorted(got[i]) == sorted(want[i]), i
        for key, w in want[i].items():
            g = got[i][key]
            if isinstance(w, torch.Tensor):
                assert isinstance(g, torch.Tensor) and torch.equal(g, w), (i, key)
            else:
                assert g == w, (i, key)


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
    w0, s0 = _flat(model), _opt_state(opt)
    # The state is really there: a buffer (momentum, or both Adam moments) per parameter.
    n_params = len(list(model.parameters()))
    sgd = isinstance(opt, torch.optim.SGD)
    want_keys = {"momentum_buffer"} if sgd else {"exp_avg", "exp_avg_sq"}
    assert len(s0) == n_params and all(want_keys <= set(st) for st in s0.values())
    rng0 = (torch.rand(3), np.random.rand(3), random.random())
    lr0 = opt.param_groups[0]["lr"]
    _train(model, opt, 5)
    opt.param_groups[0]["lr"] = 0.123  # param groups are part of the state too
    assert not torch.equal(_flat(model), w0)
    snap.restore()
    assert torch.equal(_flat(model), w0)
    assert_same_opt_state(_opt_state(opt), s0)
    assert opt.param_groups[0]["lr"] == lr0
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
    assert list(snap.extras) == ["sched"]
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
    w0, state = _saved(model, opt)
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


def test_nbytes_counts_every_captured_tensor() -> None:
    model = nn.Linear(3, 2)  # 6 + 2 float32 parameters
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = Snapshot(model, opt, rng=False)
    assert snap.empty and snap.nbytes() == 0
    snap.capture()
    assert not snap.empty and snap.nbytes() == 8 * 4  # no momentum buffers yet
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    snap.capture()
    assert snap.nbytes() == 2 * 8 * 4  # weights + one momentum buffer per weight
    with_rng = Snapshot(model, opt)
    with_rng.capture()
    rng = capture_rng_state()
    # Held as the libraries give them: torch's uint8 state, numpy's uint32 key.
    rng_bytes = rng["torch"].numel() + rng["numpy"]["key"].numel() * 4
    cuda = sum(t.numel() for t in rng.get("cuda", []))
    assert with_rng.nbytes() == 2 * 8 * 4 + rng_bytes + cuda


def test_available_device_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from autolr._snapshot import _available

    dev = torch.device
    assert _available(dev("cpu")) == dev("cpu")
    assert _available(dev("meta")) == dev("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _available(dev("cuda:0")) == dev("cpu")
    assert _available(dev("cuda")) == dev("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _available(dev("cuda")) == dev("cuda")
    assert _available(dev("cuda:1")) == dev("cuda:1")
    assert _available(dev("cuda:2")) == dev("cpu")  # index past the devices present
    # a device type torch has no module for, or whose module cannot say it is available
    assert not hasattr(torch, "xla")
    assert _available(dev("xla")) == dev("cpu")
    monkeypatch.setattr(torch, "xla", types.SimpleNamespace(), raising=False)
    assert _available(dev("xla")) == dev("cpu")


def test_loaded_state_is_a_copy() -> None:
    # Editing (or reusing) the dict given to load_state_dict must not change the snapshot.
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 2)
    snap = Snapshot(model, opt)
    snap.capture()
    w0, s0 = _flat(model), _opt_state(opt)
    state = snap.state_dict()
    snap2 = Snapshot(model, opt)
    snap2.load_state_dict(state)
    for t in state["state"]["model"].values():
        t.add_(1.0)
    for st in state["state"]["optimizer"]["state"].values():
        st["momentum_buffer"].add_(1.0)
    _train(model, opt, 2)
    snap2.restore()
    assert torch.equal(_flat(model), w0)
    assert_same_opt_state(_opt_state(opt), s0)
    snap2.load_state_dict({})  # empty: back to "nothing captured"
    assert snap2.empty and snap2.nbytes() == 0
    with pytest.raises(StateError):
        snap2.restore()


def test_error_messages_name_the_problem() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    with pytest.raises(ConfigTypeError, match=r"extra 'bad' must have state_dict\(\).*got object"):
        snap.register("bad", object())  # type: ignore[arg-type]
    with pytest.raises(StateError, match="not a Snapshot state_dict"):
        snap.load_state_dict({"state": {}})  # no 'devices'
    with pytest.raises(StateError, match=r"Snapshot\.restore\(\) called before capture\(\)"):
        snap.restore()
    with pytest.raises(ConfigError, match="offload must be None or 'cpu', got 'disk'"):
        Snapshot(model, opt, offload="disk")
    with pytest.raises(ConfigTypeError, match=r"model must be a torch\.nn\.Module, got object"):
        Snapshot(object(), opt)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigTypeError, match=r"optimizer must be a torch\.optim\.Optimizer, got object"
    ):
        Snapshot(model, object())  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # has state_dict, no param_groups
    with pytest.raises(ConfigTypeError, match="got StepLR"):
        Snapshot(model, sched)  # type: ignore[arg-type]


class _Buffers:
    """An extra whose state holds tensors inside a list and a tuple."""

    def __init__(self) -> None:
        self.items = [torch.zeros(2), torch.ones(3)]
        self.pair = (torch.zeros(1), torch.full((2,), 2.0))

    def state_dict(self) -> dict:
        return {"items": list(self.items), "pair": tuple(self.pair)}

    def load_state_dict(self, state: dict) -> None:
        for dst, src in zip(self.items, state["items"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.pair, state["pair"], strict=True):
            dst.copy_(src)


def test_tensors_in_lists_and_tuples_are_copied_and_restored() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bufs = _Buffers()
    snap = Snapshot(model, opt, extras={"bufs": bufs}, rng=False)
    snap.capture()
    for t in (*bufs.items, *bufs.pair):
        t.add_(10.0)  # in place: an aliased snapshot would change too
    snap.restore()
    assert [t.tolist() for t in bufs.items] == [[0.0, 0.0], [1.0, 1.0, 1.0]]
    assert [t.tolist() for t in bufs.pair] == [[0.0], [2.0, 2.0]]
    assert snap.nbytes() == model_bytes(model) + (2 + 3 + 1 + 2) * 4


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_numpy_cached_gaussian_is_restored() -> None:
    # numpy's legacy normal draws come in pairs: after an odd number the second is cached
    # (has_gauss/gauss in its state); a restore must bring that cached value back too.
    np.random.seed(0)
    np.random.randn(1)
    st = capture_rng_state()
    assert st["numpy"]["has_gauss"] == 1
    a = np.random.randn(3)
    np.random.randn(2)
    restore_rng_state(st)
    assert np.array_equal(np.random.randn(3), a)


def test_cuda_rng_states_are_captured_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a GPU: fake torch.cuda, to check the CUDA branch's bookkeeping. (CUDA states
    # are 16 bytes, seed and philox offset, or 8 bytes, the seed alone.)
    fake = [torch.arange(16, dtype=torch.uint8), torch.arange(8, dtype=torch.uint8)]
    want = [list(range(16)), list(range(8))]
    seen: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in capture_rng_state()  # never creates a CUDA context itself
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(fake))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: seen.append(states))
    st = capture_rng_state()
    assert [t.tolist() for t in st["cuda"]] == want
    restore_rng_state(st)
    assert len(seen) == 1 and [t.tolist() for t in seen[0]] == want
    del st["cuda"]
    restore_rng_state(st)  # a state without CUDA entries leaves the CUDA generators alone
    assert len(seen) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restore_rng_state(capture_rng_state())
    assert len(seen) == 1


def test_state_without_rng_loads_into_an_rng_snapshot() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = Snapshot(model, opt, rng=False)
    plain.capture()
    w0 = _flat(model)
    snap = Snapshot(model, opt)  # rng=True, but the state it loads has no RNG entry
    snap.load_state_dict(plain.state_dict())
    _train(model, opt, 2)
    before = torch.get_rng_state()
    snap.restore()
    assert torch.equal(_flat(model), w0)
    assert torch.equal(torch.get_rng_state(), before)  # RNGs untouched


def test_tensors_finite_entry_by_entry() -> None:
    from autolr._snapshot import state_finite, tensors_finite

    big = torch.full((10_000,), 1000.0, dtype=torch.float16)  # norm 1e5 > float16's max
    assert tensors_finite([]) and tensors_finite([None])
    assert tensors_finite([big, None, torch.zeros(2, dtype=torch.bfloat16)])
    for bad in (math.inf, -math.inf, math.nan):
        assert not tensors_finite([big, torch.tensor([0.0, bad])])
    model = nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert state_finite(model, opt)
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    assert not state_finite(model) and not state_finite(model, opt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_state_finite_with_adam_counters_on_the_cpu_beside_cuda_weights() -> None:
    """Adam keeps its ``step`` counters on the CPU (not capturable, not fused) while its
    moments sit beside CUDA weights: one flag per device, not one stack of all."""
    from autolr._snapshot import state_finite

    model = nn.Linear(2, 2).cuda()
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2, device="cuda")).sum().backward()
    opt.step()
    devices = {v.device.type for st in opt.state.values() for v in st.values()}
    assert devices == {"cpu", "cuda"}
    assert state_finite(model, opt)
    with torch.no_grad():
        model.bias[1] = math.inf
    assert not state_finite(model, opt)


# ---------------------------------------------------------------------- in-place restore
_OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
    "adamw-amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
    "adam-tensor-lr": lambda p: torch.optim.Adam(p, lr=torch.tensor(1e-2)),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    "int-state": lambda p: _Counting(p, lr=0.1, momentum=0.9),
    "groups": lambda p: torch.optim.SGD(
        [{"params": list(p)[:2], "lr": 0.1}, {"params": [], "lr": 0.0}], lr=0.05, momentum=0.9
    ),
}


class _Counting(torch.optim.SGD):
    """Keeps a plain int in its per-parameter state (the non-tensor values' path)."""

    def step(self, closure=None):  # type: ignore[override]
        out = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["count"] = self.state[p].get("count", 0) + 1
        return out


def _bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


def _everything(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """A deep copy of what a restore must bring back (tensors as lists)."""

    def plain(v):
        if isinstance(v, torch.Tensor):
            return (str(v.dtype), str(v.device), v.tolist())
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {"model": plain(model.state_dict()), "opt": plain(opt.state_dict())}


def _restore_twice(build, *, in_place: bool, before: int = 2, meddle=None) -> list[dict]:
    """Train, capture, train, (meddle,) restore, train, restore: the states seen after each."""
    torch.manual_seed(0)
    model = _bn_model()
    opt = build(model.parameters())
    snap = Snapshot(model, opt)
    taken: list[bool] = []
    real = snap._restore_in_place

    def spy() -> bool:
        taken.append(in_place and real())
        return taken[-1]

    snap._restore_in_place = spy  # type: ignore[method-assign]
    real_capture = snap._capture_in_place
    snap._capture_in_place = lambda: in_place and real_capture()  # type: ignore[method-assign]
    _train(model, opt, before)
    snap.capture()
    _train(model, opt, 3)
    if meddle is not None:
        meddle(model, opt)
    snap.restore()
    seen = [_everything(model, opt)]
    _train(model, opt, 2)  # in-place updates must not reach the snapshot
    snap.restore()
    seen.append(_everything(model, opt))
    _train(model, opt, 1)
    seen.append(_everything(model, opt))
    snap.capture()  # of the structure held: copied into the held tensors
    ckpt = snap.state_dict()
    kept = _everything_of(ckpt)
    _train(model, opt, 2)
    snap.capture()
    assert _everything_of(ckpt) == kept  # a state_dict taken earlier is not written into
    _train(model, opt, 1)
    snap.restore()
    seen.append(_everything(model, opt))
    seen.append({"in_place": taken})
    return seen


def _everything_of(ckpt: dict) -> list:
    return [t.tolist() for t in _iter_tensors(ckpt)]


def _retune(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Change the groups' hyperparameters after the capture: a restore brings them back."""
    for g in opt.param_groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].mul_(0.5)  # in place, as GroupLRs writes a tensor LR
        else:
            g["lr"] *= 0.5
        g["weight_decay"] = 0.01


@pytest.mark.parametrize("name", list(_OPTIMIZERS))
def test_in_place_restore_equals_load_state_dict(name: str) -> None:
    build = _OPTIMIZERS[name]
    fast = _restore_twice(build, in_place=True, meddle=_retune)
    slow = _restore_twice(build, in_place=False, meddle=_retune)
    assert fast.pop() == {"in_place": [True, True, True]}
    assert slow.pop() == {"in_place": [False, False, False]}
    assert fast == slow
    assert fast[0] == fast[1]


def test_in_place_copies_without_torch_foreach_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch without the private ``_foreach_copy_`` gets the same copies from a loop."""
    build = _OPTIMIZERS["adamw-amsgrad"]
    fused = _restore_twice(build, in_place=True, meddle=_retune)
    monkeypatch.delattr(torch, "_foreach_copy_")
    looped = _restore_twice(build, in_place=True, meddle=_retune)
    assert looped.pop() == fused.pop() == {"in_place": [True, True, True]}
    assert looped == fused


def _module_hook(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    calls = model.__dict__.setdefault("calls", [])
    model[0].register_load_state_dict_post_hook(lambda *a: calls.append("module"))


def _optimizer_hook(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    calls = model.__dict__.setdefault("calls", [])
    opt.register_load_state_dict_pre_hook(lambda *a: calls.append("optimizer"))


def _new_group_key(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.param_groups[0]["extra"] = 1.0


@pytest.mark.parametrize(
    ("before", "meddle"),
    [(0, None), (2, _module_hook), (2, _optimizer_hook), (2, _new_group_key)],
    ids=["state-created-after-capture", "module-hook", "optimizer-hook", "group-key-added"],
)
def test_what_in_place_cannot_copy_is_loaded(before: int, meddle) -> None:
    """Anything but the captured structure (or a customised load) takes load_state_dict."""
    build = _OPTIMIZERS["sgd-momentum"]
    fast = _restore_twice(build, in_place=True, before=before, meddle=meddle)
    slow = _restore_twice(build, in_place=False, before=before, meddle=meddle)
    assert fast.pop()["in_place"][0] is False  # loaded; the second restore may copy
    slow.pop()
    assert fast == slow


@pytest.mark.parametrize(
    ("hook", "calls"), [(_module_hook, ["module"]), (_optimizer_hook, ["optimizer"])]
)
def test_load_hooks_still_run(hook, calls) -> None:
    torch.manual_seed(0)
    model = _bn_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook(model, opt)
    snap = Snapshot(model, opt)
    snap.capture()
    snap.restore()
    assert model.calls == calls


class _WithExtraState(nn.Linear):
    def __init__(self) -> None:
        super().__init__(8, 2)
        self.count = 0

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.count])  # a tensor: only set_extra_state can load it

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.count = int(state[0])


def test_module_extra_state_is_restored() -> None:
    model = _WithExtraState()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    model.count = 3
    snap.capture()
    model.count = 7
    _train(model, opt, 1)
    snap.restore()
    assert model.count == 3


def test_capture_in_place_never_shares_a_mutable_group_value() -> None:
    model = nn.Linear(8, 2)
    opt = torch.optim.SGD([{"params": model.parameters(), "tag": 1.0}], lr=0.1)
    snap = Snapshot(model, opt)
    snap.capture()
    opt.param_groups[0]["tag"] = [1.0]  # was a float when captured
    snap.capture()
    opt.param_groups[0]["tag"].append(2.0)
    snap.restore()
    assert opt.param_groups[0]["tag"] == [1.0]


class _Growing:
    """An extra whose state holds one more tensor at each call."""

    def __init__(self) -> None:
        self.items: list[torch.Tensor] = []

    def state_dict(self) -> dict:
        self.items.append(torch.zeros(1))
        return {"items": list(self.items)}

    def load_state_dict(self, state: dict) -> None:
        self.items = list(state["items"])


def test_capture_in_place_keeps_the_device_list_of_changing_extras() -> None:
    model = nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 1)
    snap = Snapshot(model, opt, extras={"growing": _Growing()})
    snap.capture()
    snap.capture()  # in place for model and optimizer, one more extra tensor
    other = Snapshot(model, opt, extras={"growing": _Growing()})
    other.load_state_dict(snap.state_dict())
    other.restore()


def test_a_model_without_tensors_restores() -> None:
    """Nothing to copy (the optimizer's parameters live elsewhere): still a restore."""
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.1)
    snap = Snapshot(nn.Identity(), opt)
    snap.capture()
    snap.capture()
    snap.restore()


class _SparseBuffer(nn.Linear):
    def __init__(self) -> None:
        super().__init__(8, 2)
        self.register_buffer("mask", torch.eye(3).to_sparse())


def test_a_sparse_buffer_is_loaded_not_copied() -> None:
    model = _SparseBuffer()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    snap.capture()
    model.mask = torch.zeros(3, 3).to_sparse()
    snap.capture()
    model.mask = (2 * torch.eye(3)).to_sparse()
    snap.restore()
    assert torch.equal(model.mask.to_dense(), torch.zeros(3, 3))


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda m: torch.compile(m, backend="eager"), id="compile"),
        pytest.param(nn.DataParallel, id="data-parallel"),
        pytest.param(lambda m: nn.DataParallel(torch.compile(m, backend="eager")), id="nested"),
    ],
)
def test_wrappers_are_seen_through(wrap) -> None:
    """A snapshot of a wrapped model is kept under the bare model's names: taken with the
    wrapper it loads without it and the other way, and restores through the wrapper."""
    model = tiny_mlp()
    wrapped = wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(wrapped, opt, 2)
    snap = Snapshot(wrapped, opt)
    snap.capture()
    w0 = _flat(model)
    state = round_trip(snap.state_dict())
    assert list(state["state"]["model"]) == list(model.state_dict())
    _train(wrapped, opt, 3)
    snap.restore()  # in place, through the wrapper
    assert torch.equal(_flat(model), w0)

    bare = Snapshot(model, opt)
    bare.load_state_dict(state)
    _train(model, opt, 1)
    bare.restore()
    assert torch.equal(_flat(model), w0)
    bare.capture()
    again = Snapshot(wrapped, opt)
    again.load_state_dict(round_trip(bare.state_dict()))
    _train(wrapped, opt, 1)
    again.restore()
    assert torch.equal(_flat(model), w0)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod."])
def test_state_with_wrapper_prefixes_still_loads(prefix: str) -> None:
    """Snapshots from before the wrappers were seen through kept their key prefixes."""
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 2)
    w0, state = _saved(model, opt)
    state["state"]["model"] = {prefix + k: v for k, v in state["state"]["model"].items()}
    old = Snapshot(torch.compile(model, backend="eager"), opt)
    old.load_state_dict(state)
    _train(model, opt, 2)
    old.restore()
    assert torch.equal(_flat(model), w0)


def test_prefix_is_taken_off_only_when_it_makes_the_names_fit() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _, state = _saved(model, opt)
    # A prefix that does not give this model's names is another model, named as such.
    state["state"]["model"] = {"module.x." + k: v for k, v in state["state"]["model"].items()}
    with pytest.raises(StateError, match=r"another model: this model has no 'module\.x\.0\."):
        Snapshot(model, opt).load_state_dict(state)

    class Holder(nn.Module):  # a real submodule called "module": its names stay as they are
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 1)

    held = Holder()
    hopt = torch.optim.SGD(held.parameters(), lr=0.1)
    hsnap = Snapshot(held, hopt)
    hsnap.capture()
    hstate = round_trip(hsnap.state_dict())
    assert list(hstate["state"]["model"]) == ["module.weight", "module.bias"]
    Snapshot(held, hopt).load_state_dict(hstate)
