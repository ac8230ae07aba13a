"""Misuse of :class:`autolr.Snapshot`: states that do not fit are refused at load, whole.

``load_state_dict`` checks everything :meth:`Snapshot.restore` (and the optimizer's next step)
would otherwise fail on half-way: another optimizer type, malformed parameter groups, RNG
states the generators reject. On an error nothing changes.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from autolr import (
    AutoLRS,
    ConfigTypeError,
    Snapshot,
    StateError,
    capture_rng_state,
    restore_rng_state,
)

from .conftest import round_trip, tiny_mlp


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.randn(4, 8)).pow(2).mean().backward()
    opt.step()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def _rngs() -> tuple[Any, ...]:
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def _same_rngs(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def _refused_whole(snap: Snapshot, model: nn.Module, opt, state: Any, match: str) -> None:
    """``snap`` (holding a capture) refuses ``state`` and still restores its own capture."""
    w0 = _flat(model)
    rngs = _rngs()
    with pytest.raises(StateError, match=match):
        snap.load_state_dict(state)
    _step(model, opt)
    random.random(), np.random.rand(), torch.rand(1)
    snap.restore()
    assert torch.equal(_flat(model), w0)
    assert _same_rngs(_rngs(), rngs)


# ------------------------------------------------------------------- the optimizer's groups


def test_a_state_of_another_optimizer_type_is_refused() -> None:
    model = tiny_mlp()
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    _step(model, adam)
    taken = Snapshot(model, adam)
    taken.capture()
    state = round_trip(taken.state_dict())
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = Snapshot(model, sgd)
    snap.capture()
    _refused_whole(
        snap, model, sgd, state,
        r"optimizer\['param_groups'\]\[0\] lacks \['dampening', 'momentum', 'nesterov'\] of "
        r"this SGD: the state comes from another optimizer type",
    )  # fmt: skip
    fresh = Snapshot(model, sgd)
    with pytest.raises(StateError):
        fresh.load_state_dict(state)
    assert fresh.empty
    sgd_state = Snapshot(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    sgd_state.capture()
    with pytest.raises(StateError, match=r"lacks.*'betas'.*another optimizer type"):
        Snapshot(model, adam).load_state_dict(sgd_state.state_dict())


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda g: g.__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda g: g.pop("params"), r"param_groups\[0\] is not a parameter group"),
        (_set("params", "0123"), r"param_groups\[0\] is not a parameter group"),
        (_set("params", [[0], [1], [2], [3]]), r"param_groups\[0\] is not a parameter group"),
        (_set("params", [0, 1, 2, 2]), "list a parameter id twice"),
        (lambda g: g.pop("lr"), r"\[0\] lacks \['lr'\]"),
        (_set("lr", "fast"), r"\['lr'\] must be a number, got 'fast'"),
        (_set("momentum", None), r"\['momentum'\] must be a number, got None"),
    ],
)
def test_malformed_param_groups_are_refused(edit: Callable[[dict], None], match: str) -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, opt)
    snap = Snapshot(model, opt)
    snap.capture()
    state = copy.deepcopy(snap.state_dict())
    edit(state["state"]["optimizer"]["param_groups"][0])
    _refused_whole(snap, model, opt, state, match)


def test_malformed_per_parameter_state_is_refused() -> None:
    model = tiny_mlp()
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    _step(model, adam)
    snap = Snapshot(model, adam)
    snap.capture()
    state = copy.deepcopy(snap.state_dict())
    del state["state"]["optimizer"]["state"][0]["exp_avg_sq"]
    _refused_whole(snap, model, adam, state, r"\['state'\]\[0\] lacks \['exp_avg_sq'\]")
    # an optimizer autolr knows no entries of: each entry must still be a dict
    rms = torch.optim.RMSprop(model.parameters(), lr=0.01)
    _step(model, rms)
    snap = Snapshot(model, rms)
    snap.capture()
    state = copy.deepcopy(snap.state_dict())
    state["state"]["optimizer"]["state"][0] = torch.zeros(3)
    _refused_whole(snap, model, rms, state, r"optimizer state of parameter '0\.weight' must be")


# ------------------------------------------------------------------------------ RNG states


def _edit_rng(path: tuple[Any, ...], value: Any) -> Callable[[dict], None]:
    def edit(rng: dict) -> None:
        *head, last = path
        for k in head:
            rng = rng[k]
        if value is _DELETE:
            del rng[last]
        else:
            rng[last] = value(rng[last]) if callable(value) else value

    return edit


_DELETE = object()
_BAD_RNG = [
    # torch's CPU generator state: its size, dtype and content
    (("torch",), torch.zeros(3, dtype=torch.uint8), "'torch' state .* size 5056"),
    (("torch",), torch.zeros(5056, dtype=torch.uint8), "'torch' state .*Invalid mt19937"),
    (("torch",), lambda t: t.long(), "'torch' state .*ByteTensor"),
    (("torch",), [1, 2, 3], "'torch' state must be a tensor, got a list"),
    # python's: version, 624 words and a position, gauss
    (("python", 1), lambda w: w[:-1], "'python' state must be"),
    (("python", 1, 624), 625, "'python' state must be"),
    (("python", 1, 0), 2**32, "'python' state must be"),
    (("python", 1, 0), 1.5, "'python' state must be"),
    (("python", 2), "x", "'python' state must be"),
    (("python", 0), 7, "'python' state is not a random.getstate"),
    (("python",), (3, 4), "'python' state must be"),
    # numpy's: the bit generator the global RNG uses, its key and position
    (("numpy", "bit_generator"), "PCG64", "'PCG64' bit generator; numpy's global RNG"),
    (("numpy", "key"), lambda k: k[:-1], r"'numpy' key must be an integer tensor of shape"),
    (("numpy", "key"), lambda k: k.double(), r"'numpy' key must be an integer tensor"),
    (("numpy", "key"), lambda k: k - 2**40, r"'numpy' key holds values outside"),
    (("numpy", "pos"), 625, r"'numpy' pos must be an int in \[0, 624\], got 625"),
    (("numpy", "pos"), -1, r"'numpy' pos must be"),
    (("numpy", "has_gauss"), 2, "'numpy' has_gauss must be 0 or 1"),
    (("numpy", "gauss"), "x", "'numpy' gauss must be a finite float"),
    (("numpy", "pos"), _DELETE, r"'numpy' state lacks \['pos'\]"),
    (("numpy",), [1], "'numpy' state must be a dict"),
    # CUDA's: 16 (or 8) bytes each
    (("cuda",), [torch.zeros(3, dtype=torch.uint8)], "'cuda' state 0 must be a uint8 tensor"),
    (("cuda",), [torch.zeros(16)], "'cuda' state 0 must be a uint8 tensor"),
    (("cuda",), torch.zeros(16, dtype=torch.uint8), "'cuda' states must be a list"),
    (("torch",), _DELETE, r"the RNG state lacks \['torch'\]"),
]


@pytest.mark.parametrize(("path", "value", "match"), _BAD_RNG)
def test_a_malformed_rng_state_is_refused_at_load(path, value, match) -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = Snapshot(model, opt)
    snap.capture()
    state = round_trip(snap.state_dict())
    _edit_rng(path, value)(state["state"]["rng"])
    _refused_whole(snap, model, opt, state, "invalid 'rng' entry: .*" + match)


@pytest.mark.parametrize(("path", "value", "match"), _BAD_RNG)
def test_restore_rng_state_checks_before_it_sets_anything(path, value, match) -> None:
    state = round_trip(capture_rng_state())
    _edit_rng(path, value)(state)
    random.random(), np.random.rand(), torch.rand(1)
    before = _rngs()
    with pytest.raises(StateError, match="restore_rng_state: .*" + match):
        restore_rng_state(state)
    assert _same_rngs(_rngs(), before)


def test_rng_states_load_without_touching_the_generators() -> None:
    # The checks set states on throwaway generators: loading moves no random stream.
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    snap.capture()
    state = round_trip(snap.state_dict())
    before = _rngs()
    Snapshot(model, opt).load_state_dict(state)
    assert _same_rngs(_rngs(), before)


def test_a_loaded_rng_state_is_a_copy() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    snap.capture()
    a = torch.rand(3)
    state = snap.state_dict()
    loaded = Snapshot(model, opt)
    loaded.load_state_dict(state)
    state["state"]["rng"]["torch"].copy_(torch.Generator().manual_seed(1).get_state())
    loaded.restore()
    assert torch.equal(torch.rand(3), a)


def test_cuda_states_of_missing_devices_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a GPU: fake torch.cuda. A state of 2 devices loads on a 1-device machine (as
    # tensors of a missing device load to the CPU); setting the second would fail.
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, opt)
    snap.capture()
    state = snap.state_dict()
    state["state"]["rng"]["cuda"] = [
        torch.arange(16, dtype=torch.uint8),
        torch.arange(8, dtype=torch.uint8),
    ]
    seen: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: seen.append(states))
    snap.load_state_dict(state)
    snap.restore()
    assert len(seen) == 1 and [t.tolist() for t in seen[0]] == [list(range(16))]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no CUDA: all are kept
    snap.load_state_dict(state)
    assert [t.numel() for t in snap.state_dict()["state"]["rng"]["cuda"]] == [16, 8]


# ------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("rng", ["no", 1, 0, None, np.bool_(True)])
def test_rng_must_be_a_bool(rng: Any) -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigTypeError, match=r"rng must be a bool, got"):
        Snapshot(model, opt, rng=rng)
    assert Snapshot(model, opt, rng=False).rng is False


def test_the_tuners_name_their_own_rng_flag() -> None:
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigTypeError, match=r"^restore_rng must be a bool, got str"):
        AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), max_steps=100, restore_rng="no")
