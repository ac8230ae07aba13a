"""HypergradientLR misuse and edge cases: each is refused loudly at the point of misuse, leaves
the wrapper as it was, or (huge/tiny/complex gradients, removed parameters) just works."""

from __future__ import annotations

import copy
import io
import math
import re
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from autolr import ConfigError, ConfigTypeError, HypergradientLR, StateError
from autolr._hypergrad import dot_and_norms

WHERE = r"^HypergradientLR\.load_state_dict: "


def _step(opt: HypergradientLR, model: torch.nn.Module, seed: int) -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


def _trained(cls: type = torch.optim.Adam, steps: int = 3, **kw: Any):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = HypergradientLR(cls(model.parameters(), lr=1e-2, **kw))
    for t in range(steps):
        _step(opt, model, t)
    return model, opt


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _snapshot(opt: HypergradientLR) -> Any:
    return copy.deepcopy((opt.optimizer.state_dict(), opt.state_dict()["hypergrad"], opt.lrs))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


# ---------------------------------------------------------------------- removed parameters
def test_a_parameter_removed_from_its_group_is_forgotten_and_the_state_saves() -> None:
    model, opt = _trained(torch.optim.SGD)
    assert len(opt._dirs) == 2
    opt.param_groups[0]["params"] = [model.weight]  # e.g. the bias frozen mid-run
    assert list(opt.state_dict()["hypergrad"]["directions"]) == [0]  # before the next step too
    _step(opt, model, 10)
    assert list(opt._dirs) == [model.weight]  # the step dropped the bias's direction
    state = _round_trip(opt.state_dict())
    fresh = HypergradientLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, 3))], lr=1e-2))
    fresh.load_state_dict(state)
    assert fresh.steps == 4 and len(fresh._dirs) == 1


def test_optimizer_state_of_a_removed_parameter_is_named_at_state_dict() -> None:
    # torch's own state_dict raises a bare KeyError for it
    model, opt = _trained(torch.optim.SGD, momentum=0.9)
    opt.param_groups[0]["params"] = [model.weight]
    _step(opt, model, 10)
    with pytest.raises(
        StateError,
        match=r"^HypergradientLR\.state_dict: the wrapped optimizer holds state for 1 "
        r"parameter\(s\) that are in no param group any more, which torch cannot save; "
        r"delete it first \(del opt\.state\[p\] for each removed p\) or put the parameters back$",
    ):
        opt.state_dict()
    del opt.state[model.bias]
    assert list(opt.state_dict()["hypergrad"]["directions"]) == [0]


# ---------------------------------------------------------------------- add_param_group
@pytest.mark.parametrize(
    "group,message",
    [
        ({"lr": torch.tensor(0.01)}, r"param_groups\[1\]\['lr'\] is a Tensor; HypergradientLR"),
        ({"lr": "fast"}, r"^param_groups\[1\]\['lr'\] must be a float, got 'fast'$"),
        ({"lr": True}, r"^param_groups\[1\]\['lr'\] must be a float, got True$"),
    ],
)
def test_a_refused_group_is_not_left_in_the_wrapped_optimizer(group, message) -> None:
    model, opt = _trained()
    with pytest.raises(ConfigTypeError, match=message):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], **group})
    assert len(opt.param_groups) == 1 and len(opt.scales) == 1
    _step(opt, model, 10)  # the wrapper still works
    assert opt.steps == 4


def test_a_non_float_lr_set_between_steps_is_named_before_anything_moves() -> None:
    model, opt = _trained()
    before = _snapshot(opt), [p.detach().clone() for p in model.parameters()]
    opt.param_groups[0]["lr"] = "fast"
    with pytest.raises(ConfigTypeError, match=r"^param_groups\[0\]\['lr'\] must be a float"):
        _step(opt, model, 10)
    opt.param_groups[0]["lr"] = 1e-2
    assert _same((_snapshot(opt), [p.detach() for p in model.parameters()]), before)


# ---------------------------------------------------------------------- wrapped optimizer state
def _corrupt(state: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    bad = copy.deepcopy(state)
    node = bad["optimizer"]
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return bad


BAD_INNER = [  # (optimizer class and kwargs, path in the torch state, bad value, message)
    ((torch.optim.Adam, {}), ("param_groups", 0, "lr"), "fast",
     r"optimizer\['param_groups'\]\[0\]\['lr'\] must be a number, got 'fast'$"),
    ((torch.optim.Adam, {}), ("param_groups", 0, "lr"), torch.tensor(0.01),
     r"optimizer\['param_groups'\]\[0\]\['lr'\] must be a float >= 0 \(HypergradientLR needs "
     r"float LRs\), got tensor\(0\.0100\)$"),
    ((torch.optim.Adam, {}), ("param_groups", 0, "lr"), math.nan,
     r"optimizer\['param_groups'\]\[0\]\['lr'\] must be a float >= 0"),
    ((torch.optim.SGD, {}), ("param_groups", 0, "lr"), -0.1,
     r"optimizer\['param_groups'\]\[0\]\['lr'\] must be a float >= 0"),
    ((torch.optim.Adam, {}), ("param_groups", 0, "eps"), None,
     r"optimizer\['param_groups'\]\[0\]\['eps'\] must be a number, got None$"),
    ((torch.optim.AdamW, {}), ("param_groups", 0, "betas"), (0.9, "x"),
     r"optimizer\['param_groups'\]\[0\]\['betas'\] must be a list of 2 numbers, got \(0\.9, 'x'\)"),
    ((torch.optim.Adam, {}), ("param_groups", 0, "betas"), (0.9, 0.99, 0.5),
     r"optimizer\['param_groups'\]\[0\]\['betas'\] must be a list of 2 numbers"),
    ((torch.optim.SGD, {"momentum": 0.9}), ("param_groups", 0, "momentum"), "0.9",
     r"optimizer\['param_groups'\]\[0\]\['momentum'\] must be a number, got '0\.9'$"),
    ((torch.optim.Adam, {}), ("state", 0, "exp_avg_sq"), KeyError,
     r"optimizer\['state'\]\[0\] lacks \['exp_avg_sq'\]: the state comes from another "
     r"optimizer setup$"),
    ((torch.optim.Adam, {}), ("state", 1, "step"), KeyError,
     r"optimizer\['state'\]\[1\] lacks \['step'\]"),
    ((torch.optim.Adam, {"amsgrad": True}), ("state", 0, "max_exp_avg_sq"), KeyError,
     r"optimizer\['state'\]\[0\] lacks \['max_exp_avg_sq'\]"),
    ((torch.optim.Adam, {}), ("state", 0, "step"), "x",
     r"optimizer\['state'\]\[0\]\['step'\] must be a finite number >= 0, got 'x'$"),
    ((torch.optim.Adam, {}), ("state", 0, "step"), torch.tensor(-1.0),
     r"optimizer\['state'\]\[0\]\['step'\] must be a finite number >= 0"),
    ((torch.optim.AdamW, {}), ("state", 0, "exp_avg"), [0.0, 0.0, 0.0],
     r"optimizer\['state'\]\[0\]\['exp_avg'\] must be a tensor, got \[0\.0, 0\.0, 0\.0\]$"),
    ((torch.optim.Adam, {}), ("state", 0), torch.zeros(1, 3),
     r"optimizer\['state'\]\[0\] must be a dict, got tensor"),
    ((torch.optim.SGD, {"momentum": 0.9}), ("state", 0, "momentum_buffer"), "x",
     r"optimizer\['state'\]\[0\]\['momentum_buffer'\] must be a tensor or None, got 'x'$"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_INNER, ids=lambda c: "-".join(map(str, c[1])))
def test_a_corrupt_wrapped_optimizer_state_is_refused_and_changes_nothing(case) -> None:
    (cls, kw), path, value, message = case
    _, saved = _trained(cls, 5, **kw)
    state = _corrupt(_round_trip(saved.state_dict()), path, value)
    _, opt = _trained(cls, 2, **kw)
    before = _snapshot(opt)
    with pytest.raises(StateError, match=WHERE + message):
        opt.load_state_dict(state)
    assert _same(_snapshot(opt), before)


def test_states_torch_itself_accepts_still_load() -> None:
    # an Adam entry that is empty (torch initialises it at the next step); an SGD momentum
    # entry without its buffer (torch starts it from the gradient); a float Adam step (older
    # torch); an int weight decay
    for cls, kw, path, value in (
        (torch.optim.Adam, {}, ("state", 0), {}),
        (torch.optim.SGD, {"momentum": 0.9}, ("state", 0, "momentum_buffer"), KeyError),
        (torch.optim.Adam, {}, ("state", 0, "step"), 5.0),
        (torch.optim.SGD, {}, ("param_groups", 0, "weight_decay"), 0),
    ):
        _, saved = _trained(cls, 5, **kw)
        state = _corrupt(saved.state_dict(), path, value)
        model2, opt = _trained(cls, 2, **kw)
        opt.load_state_dict(state)
        _step(opt, model2, 20)
        assert opt.steps == 6 and all(math.isfinite(lr) for lr in opt.lrs)


# ---------------------------------------------------------------------- huge and tiny gradients
def _scaled_run(scale: float, dtype: torch.dtype, rule: str, steps: int = 20) -> HypergradientLR:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(100, dtype=dtype))
    opt = HypergradientLR(torch.optim.SGD([w], lr=1e-3), rule=rule, hypergrad_lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        g = torch.randn(100, generator=gen, dtype=torch.float64) + 0.5
        w.grad = (g * scale).to(dtype)
        opt.step()
    return opt


@pytest.mark.parametrize("rule", ["multiplicative", "rms"])
@pytest.mark.parametrize(
    "dtype,scale",
    [(torch.float32, 1e19), (torch.float32, 1e30), (torch.float32, 1e-25),
     (torch.float64, 1e19), (torch.float64, 1e-30)],
)  # fmt: skip
def test_normalised_rules_adapt_where_float32_squares_overflow_or_vanish(rule, dtype, scale):
    ref = _scaled_run(1.0, dtype, rule)
    opt = _scaled_run(scale, dtype, rule)
    assert opt.skipped_hyper_steps == 0
    assert len(set(r[0] for r in ref.lr_trace)) > 10  # the reference LR really moves
    assert [r[0] for r in opt.lr_trace] == pytest.approx([r[0] for r in ref.lr_trace], rel=1e-5)


def test_multiplicative_rule_is_scale_free_up_to_float64s_limit() -> None:
    ref = _scaled_run(1.0, torch.float64, "multiplicative")
    opt = _scaled_run(1e300, torch.float64, "multiplicative")
    assert opt.skipped_hyper_steps == 0
    assert [r[0] for r in opt.lr_trace] == pytest.approx([r[0] for r in ref.lr_trace], rel=1e-6)


def test_rms_rule_skips_and_counts_an_h_whose_square_overflows_float64() -> None:
    # h ≈ 1e200² overflows; h² must not enter the running mean (an inf RMS would freeze the LR)
    opt = _scaled_run(1.0, torch.float64, "rms", steps=5)
    w = opt.param_groups[0]["params"][0]
    for _ in range(3):
        opt.zero_grad()
        w.grad = torch.full((100,), 1e200, dtype=torch.float64)
        opt.step()
    assert opt.skipped_hyper_steps == 3 and math.isfinite(opt._h_sq[0])


def test_additive_rule_still_skips_an_h_float32_cannot_hold() -> None:
    opt = _scaled_run(1e19, torch.float32, "additive", steps=3)
    assert opt.skipped_hyper_steps == 2 and opt.lrs == [1e-3]


def test_a_zero_gradient_gives_h_zero_not_a_skip() -> None:
    # a zero G·G also sends the row to the float64 recount, which must not change it
    w = torch.nn.Parameter(torch.ones(3))
    opt = HypergradientLR(torch.optim.SGD([w], lr=0.1, momentum=0.5))
    hs = []
    for g in ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]):
        opt.zero_grad()
        w.grad = torch.tensor(g)
        opt.step()
        hs.append(opt.last_hypergradients[0])
    # D after step 2 is the momentum buffer 0.5·[1, 2, 3]: cos([1, 1, 1], D) = 6/√42
    assert hs[:2] == [None, 0.0] and hs[2] == pytest.approx(-6 / math.sqrt(42), rel=1e-6)
    assert opt.skipped_hyper_steps == 0


# ---------------------------------------------------------------------- complex parameters
COMPLEX_CASES = {
    "sgd": (torch.optim.SGD, {"lr": 0.05}),
    "nesterov-wd": (
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    ),
    "adam-amsgrad": (torch.optim.Adam, {"lr": 0.05, "amsgrad": True}),
    "adamw": (torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
}


@pytest.mark.parametrize("name", list(COMPLEX_CASES))
def test_a_complex_parameter_adapts_like_its_real_view(name) -> None:
    """torch's optimizers treat a complex parameter as (real, imaginary) pairs: so does HD."""
    cls, kw = COMPLEX_CASES[name]
    z0 = torch.tensor([0.5 + 0.2j, -0.3 - 1.0j, 0.1j], dtype=torch.complex64)
    # other curvatures for the real and imaginary parts: successive gradients turn, and a
    # cosine of the real parts alone differs from the true one
    curv = torch.tensor([[1.0, 4.0], [0.5, 2.0], [3.0, 0.2]])
    target = torch.tensor([[1.0, -1.0], [0.0, 0.5], [-2.0, 0.0]])
    runs = []
    for p in (torch.nn.Parameter(z0.clone()), torch.nn.Parameter(torch.view_as_real(z0).clone())):
        opt = HypergradientLR(cls([p], **kw), hypergrad_lr=0.1)
        for _ in range(10):
            pairs = torch.view_as_real(p) if p.is_complex() else p
            opt.zero_grad()
            (curv * (pairs - target) ** 2).sum().backward()
            opt.step()
        runs.append((opt, p))
    (zopt, z), (ropt, r) = runs
    assert len(set(row[0] for row in ropt.lr_trace)) > 5
    assert [x[0] for x in zopt.lr_trace] == pytest.approx([x[0] for x in ropt.lr_trace])
    assert torch.allclose(torch.view_as_real(z.detach()), r.detach(), atol=1e-6)


def test_complex_directions_round_trip_and_a_real_one_is_refused() -> None:
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    opt = HypergradientLR(torch.optim.Adam([z], lr=0.1))
    for _ in range(2):
        opt.zero_grad()
        (z * (1 + 2j)).real.sum().backward()
        opt.step()
    state = _round_trip(opt.state_dict())
    fresh = HypergradientLR(torch.optim.Adam([torch.nn.Parameter(torch.ones(3) * (1 + 0j))]))
    fresh.load_state_dict(state)
    assert torch.equal(fresh._dirs[fresh.param_groups[0]["params"][0]], opt._dirs[z])
    state["hypergrad"]["directions"][0] = torch.ones(3)
    with pytest.raises(
        StateError,
        match=WHERE + r"directions\[0\] has dtype torch\.float32 in the state_dict but "
        r"parameter 0 has torch\.complex64 here",
    ):
        fresh.load_state_dict(state)


def test_dot_and_norms_counts_imaginary_parts() -> None:
    a = [torch.tensor([1 + 2j, 3j])]
    b = [torch.tensor([2 - 1j, 1 + 1j])]
    assert dot_and_norms(a, b).tolist() == [3.0, 14.0, 7.0]


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize("bounds", [{0.0, 1.0}, {0: 1e-3, 1: 1.0}, frozenset({1.0}), 5, "ab"])
def test_lr_bounds_must_be_an_ordered_pair(bounds) -> None:
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    message = f"lr_bounds must be a pair (low, high), got {bounds!r}"
    for exc in (ConfigTypeError, ConfigError):
        with pytest.raises(exc, match="^" + re.escape(message) + "$"):
            HypergradientLR(sgd, lr_bounds=bounds)
    with warnings.catch_warnings():  # refused before the deprecated arguments are looked at
        warnings.simplefilter("error")
        with pytest.raises(ConfigTypeError, match="^" + re.escape(message) + "$"):
            HypergradientLR(sgd, lr_bounds=bounds, lr_min=0.1)


def test_lr_bounds_take_lists_arrays_and_tensors() -> None:
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    for bounds in ([0.0, 1.0], np.array([0.0, 1.0]), torch.tensor([0.0, 1.0]), (0, 1)):
        assert HypergradientLR(sgd, lr_bounds=bounds).lr_bounds == (0.0, 1.0)
    with pytest.raises(ConfigError, match=r"lr_bounds must be a pair \(low, high\)"):
        HypergradientLR(sgd, lr_bounds=np.array([[0.0, 1.0]]))


def test_numpy_counts_are_ints_and_survive_weights_only_load() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    opt = HypergradientLR(
        torch.optim.SGD([w], lr=0.1), trace=np.int64(100), warmup_steps=np.int64(10)
    )
    assert (opt.trace, opt.warmup_steps) == (100, 10)
    assert type(opt.trace) is int and type(opt.warmup_steps) is int
    opt.zero_grad()
    w.sum().backward()
    opt.step()
    fresh = HypergradientLR(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))]), warmup_steps=10)
    fresh.load_state_dict(_round_trip(opt.state_dict()))
    assert fresh.lr_trace == opt.lr_trace
    for bad in (np.float64(5.0), True):  # a bool is the on/off form, not a count
        if bad is True:
            assert HypergradientLR(torch.optim.SGD([w], lr=0.1), trace=bad).trace == 10_000
        else:
            with pytest.raises(ConfigTypeError, match="trace must be a bool or an int >= 0"):
                HypergradientLR(torch.optim.SGD([w], lr=0.1), trace=bad)


# ---------------------------------------------------------------------- the loaded trace
def _two_groups(steps: int) -> HypergradientLR:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = HypergradientLR(torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1))
    for _ in range(steps):
        opt.zero_grad()
        (a.pow(2).sum() + b.pow(2).sum()).backward()
        opt.step()
    return opt


@pytest.mark.parametrize(
    "trace,row,got,expected",
    [([[]], 0, 0, "1 to 2"), ([[0.1, 0.1, 0.1]], 0, 3, "1 to 2"),
     ([[0.1, 0.1], [0.1]], 1, 1, "2 to 2")],
)  # fmt: skip
def test_trace_rows_must_hold_one_lr_per_group(trace, row, got, expected) -> None:
    opt = _two_groups(2)
    state = opt.state_dict()
    state["hypergrad"]["trace"] = trace
    before = _snapshot(opt)
    with pytest.raises(
        StateError,
        match=WHERE + rf"'trace' row {row} has {got} LRs in the state_dict, {expected} expected "
        r"\(one per param group at its step\)$",
    ):
        opt.load_state_dict(state)
    assert _same(_snapshot(opt), before)


def test_a_group_added_mid_run_saves_loads_and_exports_from_its_first_step() -> None:
    opt = HypergradientLR(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1))
    c = torch.nn.Parameter(torch.ones(2))

    def step() -> None:
        opt.zero_grad()
        sum(p.pow(2).sum() for g in opt.param_groups for p in g["params"]).backward()
        opt.step()

    step()
    opt.add_param_group({"params": [c], "lr": 0.2})
    with pytest.raises(ConfigError, match=r"group 1 was added after the last step"):
        opt.export_schedule(group=1)
    step()
    step()
    fresh = HypergradientLR(
        torch.optim.SGD([{"params": [torch.nn.Parameter(torch.ones(2))]},
                         {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.2}], lr=0.1)
    )  # fmt: skip
    fresh.load_state_dict(_round_trip(opt.state_dict()))  # rows of 1, then 2 LRs
    assert [len(r) for r in fresh.lr_trace] == [1, 2, 2]
    with pytest.warns(RuntimeWarning, match=r"group 1 was added at step 1; the schedule starts"):
        sched = fresh.export_schedule(group=1)
    assert sched.steps[0] == 1 and sched.per_step()[1:] == [r[1] for r in opt.lr_trace[1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fresh.export_schedule(group=0).n_steps == 3
