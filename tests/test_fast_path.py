"""AutoLRS's fast path (steps where nothing is decided) does exactly what the general path does.

Each run is repeated with the fast path switched off (``_open_fast`` a no-op, so every step
goes through ``_step``) and everything a user can see is compared: history, stage records,
the exported lineage, the weights, the optimizer, the RNG streams and the state_dict.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from autolr import AutoLRS, BudgetPolicy

Script = Callable[[int, float, AutoLRS], float]


def _plain(obj: Any) -> Any:
    """A comparable form of a state_dict: tensors as lists, NaN as a string."""
    if isinstance(obj, torch.Tensor):
        return ("tensor", str(obj.dtype), _plain(obj.tolist()))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


def _run(
    fast: bool,
    steps: int,
    *,
    script: Script | None = None,
    val: bool = True,
    peek_every: int = 0,
    tensor: bool = False,
    **kw: Any,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    xv, yv = torch.randn(64, 6), torch.randn(64, 1)

    val_calls = []

    def val_fn() -> float:
        val_calls.append(len(val_calls))
        return float(nn.functional.mse_loss(model(xv), yv))

    kw = {"lr_bounds": (1e-3, 1.0), "seed": 0, **kw}
    if val and kw.get("variant", "budget") == "budget" and "max_steps" in kw:
        kw["val_fn"] = val_fn
    tuner = AutoLRS(model, opt, **kw)
    if not fast:
        tuner._open_fast = lambda: None  # type: ignore[method-assign]
    peeks = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(steps):
            idx = torch.randint(0, 64, (16,))  # the global RNG: restores must replay it
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            if script is not None:
                value = script(i, value, tuner)
            # float64 with bits beyond float32's: read exactly as the general path reads it
            tuner.step(torch.tensor(value, dtype=torch.float64) + 1e-9 if tensor else value)
            if peek_every and i % peek_every == 0:
                # Reading the public state mid-window must not change the run.
                peeks.append((tuner.global_step, tuner.lr, len(tuner.history), tuner.phase))
    return {
        "history": _plain([tuple(r) for r in tuner.history]),
        "stages": repr(tuner.stages),
        "schedule": tuner.schedule,
        "lineage": _plain(tuner.export_schedule().state_dict()) if tuner.global_step else None,
        "weights": _plain(model.state_dict()),
        "optimizer": _plain(opt.state_dict()),
        "rng": torch.rand(3).tolist(),
        "state": _plain(tuner.state_dict()),
        "peeks": peeks,
        "warnings": [str(w.message) for w in caught],
        "val_calls": len(val_calls),
    }


def _same(steps: int, **kw: Any) -> dict[str, Any]:
    fast, slow = _run(True, steps, **kw), _run(False, steps, **kw)
    for key in fast:
        assert fast[key] == slow[key], key
    return fast


@pytest.mark.parametrize(
    "kw",
    [
        {"max_steps": 400},  # budget variant, val_fn, cooled windows, final decay
        {"max_steps": 400, "val": False},  # scored on training losses
        {"max_steps": 400, "continue_from": "start"},
        {"max_steps": 400, "warmup_steps": 0},
        {"max_steps": 3000},  # windows longer than 1024 steps
        # Cooled candidate windows (a snapshot before the cooldown), two searches.
        {"max_steps": 400, "policy": BudgetPolicy.for_budget(400, cooldown_frac=0.3, searches=2)},
        {"max_steps": 400, "val_every": 5},  # validations inside the windows
        {"variant": "paper", "tau": 40, "tau_prime": 8, "k": 3, "max_steps": 400},
        {"tau": 40, "tau_prime": 8, "k": 3, "tau_max": 80},  # paper variant, no budget
        {"max_steps": 400, "tensor": True},  # float64 CPU tensors, read as the general path
    ],
    ids=[
        "budget",
        "no-val",
        "from-start",
        "no-warmup",
        "long",
        "cooled",
        "val-every",
        "paper",
        "paper-unbounded",
        "cpu-tensor",
    ],
)
def test_fast_path_changes_nothing(kw: dict[str, Any]) -> None:
    steps = kw.get("max_steps", 300) + 3  # a few steps past the budget too
    _same(steps, peek_every=37, **kw)


def _spike(at: set[int], value: float) -> Script:
    return lambda i, v, t: value if i in at else v


@pytest.mark.parametrize(
    "script",
    [
        _spike({250, 251}, math.nan),  # skipped losses while exploiting
        _spike({250, 251, 252}, math.inf),  # a streak: recovered from
        _spike({250}, -math.inf),  # below every threshold, but not finite
        _spike({40}, math.inf),  # inside a candidate window
        _spike({30, 31, 32, 33}, 1e6),  # a candidate over the divergence threshold
        _spike({31}, 1e6),  # one loss over it, then back under
        _spike({5}, math.nan),  # during warm-up
    ],
    ids=[
        "nan-exploit",
        "inf-streak",
        "neg-inf-exploit",
        "inf-candidate",
        "diverging-candidate",
        "one-spike",
        "nan-warmup",
    ],
)
def test_fast_path_hands_every_event_to_the_general_path(script: Script) -> None:
    _same(403, script=script, max_steps=400)


def test_lr_written_by_someone_else_mid_window_is_caught() -> None:
    def meddle(i: int, v: float, tuner: AutoLRS) -> float:
        if i == 300:
            tuner.optimizer.param_groups[0]["lr"] = 0.5  # a stray scheduler
        return v

    out = _same(400, script=meddle, max_steps=400)
    assert any("changed outside the tuner" in w for w in out["warnings"])


def test_resume_inside_a_fast_window_equals_the_uninterrupted_run() -> None:
    """A checkpoint taken between fast steps holds them all; resuming continues the run."""

    def build() -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS]:
        torch.manual_seed(1)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return model, opt, AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), max_steps=300, seed=0)

    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def train(model: nn.Module, opt: torch.optim.Optimizer, tuner: AutoLRS, n: int) -> None:
        for _ in range(n):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tuner.step(loss.item())

    model, opt, tuner = build()
    train(model, opt, tuner, 300)
    model2, opt2, tuner2 = build()
    train(model2, opt2, tuner2, 250)
    assert tuner2.phase == "exploit" and tuner2._fast_vals  # mid-window
    buf = io.BytesIO()
    torch.save({"m": model2.state_dict(), "o": opt2.state_dict(), "t": tuner2.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    model3, opt3, tuner3 = build()
    model3.load_state_dict(ck["m"])
    opt3.load_state_dict(ck["o"])
    tuner3.load_state_dict(ck["t"])
    train(model3, opt3, tuner3, 50)
    assert [tuple(r) for r in tuner3.history] == [tuple(r) for r in tuner.history]
    assert torch.equal(model3.weight, model.weight)


def _count_calls(
    tuner: AutoLRS,
    method: str,
    steps: int,
    tensor_until: int = 0,
    shape: tuple[int, ...] | None = None,
) -> int:
    """Train a linear model ``steps`` steps and count the calls of ``tuner.<method>``; the
    first ``tensor_until`` losses are reported as tensors (of ``shape``), the rest as floats."""
    calls = 0
    real = getattr(tuner, method)

    def counted(*a: Any, **k: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*a, **k)

    setattr(tuner, method, counted)
    model = tuner.model
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for i in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        tuner.optimizer.zero_grad()
        loss.backward()
        tuner.optimizer.step()
        if i >= tensor_until:
            tuner.step(loss.item())
        else:
            tuner.step(loss.detach() if shape is None else loss.detach().reshape(shape))
    return calls


def _linear_tuner(**kw: Any) -> AutoLRS:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return AutoLRS(model, opt, lr_bounds=(1e-3, 1.0), max_steps=400, seed=0, **kw)


@pytest.mark.parametrize("tensor", [False, True], ids=["float", "cpu-tensor"])
def test_fast_path_is_taken(tensor: bool) -> None:
    """The point of it: most exploitation and candidate steps skip the general path, for
    float losses and for scalar tensors on the CPU (``tuner.step(loss)``)."""
    tuner = _linear_tuner()
    general = _count_calls(tuner, "_step", 400, tensor_until=400 if tensor else 0)
    assert tuner.done and len(tuner.history) == 400
    assert general < 40, general  # stage boundaries, candidate ends, validations only


def test_a_cpu_tensor_loss_runs_as_its_float() -> None:
    """``tuner.step(loss)`` with a CPU tensor gives the run of ``tuner.step(loss.item())``."""
    runs = []
    for tensor in (False, True):
        tuner = _linear_tuner()
        _count_calls(tuner, "_step", 400, tensor_until=400 if tensor else 0)
        runs.append(([tuple(r) for r in tuner.history], tuner.lr, _plain(tuner.state_dict())))
    assert runs[0] == runs[1]


def test_steps_that_decline_the_fast_path_plan_nothing() -> None:
    """Losses the fast path leaves to the general path (here one-element tensors that are
    not 0-d) must never plan its window's LRs (up to 1024 of them, which once cost every
    such step ~0.2 ms)."""
    tuner = _linear_tuner()
    plans = _count_calls(tuner, "_plan_fast", 400, tensor_until=300, shape=(1,))
    assert tuner.done
    assert 0 < plans < 5  # only once float losses (the last 100 steps) take the fast path
