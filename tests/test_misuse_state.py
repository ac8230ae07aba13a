"""Misuse of state loading (HypergradientLR, STNTuner, FedHyperServer/Client, HyperSpace,
Schedule) and of STN's ``loss_fn``: each mistake raises an autolr error naming the culprit at the
point of misuse, and a refused load leaves the object exactly as it was."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from autolr import (
    AutoLRS,
    ConfigError,
    ConfigTypeError,
    HypergradientLR,
    StateError,
    stn,
)
from autolr._hypergrad import DEFAULT_TRACE_STEPS
from autolr.federated import FedHyperClient, FedHyperServer

from .conftest import round_trip

KINDS = ("hd", "stn", "server", "client")
CLASS = {
    "hd": "HypergradientLR",
    "stn": "STNTuner",
    "server": "FedHyperServer",
    "client": "FedHyperClient",
}


def _flat(values: Any) -> list[float]:
    """Every number in ``values`` (tensors, lists, floats), for exact comparisons."""
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).tolist()
    if isinstance(values, (list, tuple)):
        return [x for v in values for x in _flat(v)]
    return [float(values)]


# ---------------------------------------------------------------------- one harness per tuner
class _Harness:
    """A tiny deterministic run of one tuner: ``run(n)`` takes n steps and returns what they
    produced (LRs, losses, weights), so two harnesses that agree have the same state."""

    obj: Any
    t = 0

    def run(self, n: int) -> list[float]:
        out: list[float] = []
        for _ in range(n):
            out += self._step(torch.Generator().manual_seed(1000 + self.t))
            self.t += 1
        return out

    def _step(self, gen: torch.Generator) -> list[float]:
        raise NotImplementedError

    def copy_weights(self, other: _Harness) -> None:
        """Take ``other``'s model weights (not part of the tuner's state), as a resume would."""
        raise NotImplementedError


class _HD(_Harness):
    def __init__(self, size: int = 3, adam: bool = False, **kw: Any) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(size, 1)
        inner = (
            torch.optim.Adam(self.model.parameters(), lr=0.01)
            if adam
            else torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        )
        self.obj = HypergradientLR(inner, **kw)
        self.size = size

    def _step(self, gen: torch.Generator) -> list[float]:
        x = torch.randn(8, self.size, generator=gen)
        self.obj.zero_grad()
        (self.model(x) - x.sum(1, keepdim=True)).pow(2).mean().backward()
        self.obj.step()
        return [*self.obj.lrs, *_flat(list(self.model.parameters()))]

    def copy_weights(self, other: _Harness) -> None:
        self.model.load_state_dict(other.model.state_dict())  # type: ignore[attr-defined]


class _STN(_Harness):
    def __init__(self, n_hyper: int = 2, width: int = 8, **kw: Any) -> None:
        torch.manual_seed(0)
        self.space = stn.HyperSpace()
        for i in range(n_hyper):
            self.space.add(f"drop{i}", 0.1, low=0.0, high=0.9)
        self.net = stn.convert(
            nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Dropout(), nn.Linear(width, 1)),
            self.space,
            dropout={"2": "drop0"},
        )
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.05)
        kw.setdefault("train_steps", 1)
        loss_fn = kw.pop("loss_fn", F.mse_loss)
        with warnings.catch_warnings():  # drop1.. exist for the state checks, read by nothing
            warnings.filterwarnings("ignore", "STNTuner: hyperparameter", UserWarning)
            self.obj = stn.STNTuner(self.net, self.space, loss_fn, self.opt, **kw)

    def _step(self, gen: torch.Generator) -> list[float]:
        x = torch.randn(16, 3, generator=gen)
        y = x.sum(1, keepdim=True)
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))  # λ' and dropout
        loss = self.obj.step((x[:8], y[:8]), [(x[8:], y[8:])])
        return [loss, *self.space.values().values(), *self.space.scales().values()]

    def copy_weights(self, other: _Harness) -> None:
        self.net.load_state_dict(other.net.state_dict())  # type: ignore[attr-defined]
        self.opt.load_state_dict(other.opt.state_dict())  # type: ignore[attr-defined]


class _Server(_Harness):
    def __init__(self, shapes: tuple[tuple[int, ...], ...] = ((2, 3), (3,)), **kw: Any) -> None:
        self.params = [torch.zeros(s) for s in shapes]
        kw.setdefault("rule", "gm")
        self.obj = FedHyperServer(self.params, adapt_local_lr=True, **kw)

    def _step(self, gen: torch.Generator) -> list[float]:
        drift = [torch.full(p.shape, 0.1) for p in self.params]
        replies = [
            [p + d + 0.05 * torch.randn(p.shape, generator=gen) for p, d in zip(self.params, drift)]
            for _ in range(2)
        ]
        r = self.obj.step(replies)
        return [r.global_lr, r.local_lr, *_flat(self.params)]

    def copy_weights(self, other: _Harness) -> None:
        for p, q in zip(self.params, other.params):  # type: ignore[attr-defined]
            p.copy_(q)


class _Client(_Harness):
    def __init__(self, size: int = 2, **kw: Any) -> None:
        self.w = nn.Parameter(torch.zeros(size))
        self.opt = torch.optim.SGD([self.w], lr=0.1)
        kw.setdefault("hypergrad_lr", 5.0)
        self.obj = FedHyperClient(self.opt, **kw)
        self.obj.begin_round(0.1, [torch.ones(size)])

    def _step(self, gen: torch.Generator) -> list[float]:
        self.opt.zero_grad()
        self.w.grad = -torch.rand(self.w.shape, generator=gen)
        self.opt.step()
        return [self.obj.step(), self.obj.scale, *_flat(self.w)]

    def copy_weights(self, other: _Harness) -> None:
        with torch.no_grad():
            self.w.copy_(other.w)  # type: ignore[attr-defined]
        self.opt.load_state_dict(other.opt.state_dict())  # type: ignore[attr-defined]


HARNESS = {"hd": _HD, "stn": _STN, "server": _Server, "client": _Client}


def _make(kind: str, steps: int = 3, **kw: Any) -> _Harness:
    h = HARNESS[kind](**kw)
    h.run(steps)
    return h


def _edit(state: dict[str, Any], path: tuple[str, ...], value: Any = None, *, drop=False):
    """A copy of ``state`` with ``path`` set to ``value`` (or removed); ``state`` is untouched."""
    out = dict(state)
    if len(path) > 1:
        out[path[0]] = _edit(state[path[0]], path[1:], value, drop=drop)
    elif drop:
        del out[path[0]]
    else:
        out[path[0]] = value
    return out


def _autolrs_state() -> dict[str, Any]:
    m = nn.Linear(3, 1)
    return AutoLRS(m, torch.optim.SGD(m.parameters(), lr=0.1), max_steps=1000).state_dict()


def _refuse(h: _Harness, state: Any, *needles: str) -> str:
    """Load ``state``, expect a StateError containing every needle; return the message."""
    with pytest.raises(StateError) as info:
        h.obj.load_state_dict(state)
    msg = str(info.value)
    assert msg.startswith(f"{type(h.obj).__name__}.load_state_dict: "), msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _canon(x: Any) -> Any:
    """A comparable form of a state_dict (tensors as lists; NaN compares through repr)."""
    if isinstance(x, dict):
        return sorted((str(k), _canon(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return [_canon(v) for v in x]
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.tolist())
    return x


def _unchanged(h: _Harness, twin: _Harness) -> None:
    """``h`` (after refused loads) holds the same state as its untouched ``twin`` and continues
    exactly like it."""
    assert repr(_canon(h.obj.state_dict())) == repr(_canon(twin.obj.state_dict()))
    assert h.run(4) == twin.run(4)


def _later(kind: str) -> dict[str, Any]:
    """A valid state from further into the same run: a load that changed anything before
    refusing would leave its traces."""
    return _make(kind, steps=5).obj.state_dict()


# ---------------------------------------------------------------------- round trip, versions
@pytest.mark.parametrize("kind", KINDS)
def test_state_survives_weights_only_and_resumes_identically(kind: str) -> None:
    a = _make(kind)
    state = round_trip(a.obj.state_dict())
    assert state["version"] >= 1 and state["kind"] == CLASS[kind]
    b = _make(kind, steps=0)
    b.copy_weights(a)
    b.t = a.t
    b.obj.load_state_dict(state)
    assert b.run(4) == a.run(4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", [99, "2"])
def test_unknown_version_is_refused(kind: str, version: Any) -> None:
    h, twin = _make(kind), _make(kind)
    _refuse(h, {**_later(kind), "version": version}, f"unknown state_dict version {version!r}")
    _unchanged(h, twin)


@pytest.mark.parametrize("kind", KINDS)
def test_old_states_still_load(kind: str) -> None:
    # States written before "version"/"kind" existed (STN: version 1, without the arguments;
    # FedHyper: before the arguments were saved in full) load, and the run continues as if
    # never interrupted.
    a = _make(kind)
    state = {k: v for k, v in a.obj.state_dict().items() if k not in ("version", "kind")}
    if kind == "hd":
        old = ("optimizer_class", "lr_min", "lr_max", "rms_decay", "gain", "boost", "warmup_steps")
        state["hypergrad"] = {k: v for k, v in state["hypergrad"].items() if k not in old}
    elif kind == "server":
        keep = ("rule", "server_optimizer", "initial_global_lr", "normalize", "numel")
        state["config"] = {k: state["config"][k] for k in keep}
    else:
        del state["config"]
    if kind == "stn":
        state["version"] = 1
    b = _make(kind, steps=0)
    b.copy_weights(a)
    b.t = a.t
    b.obj.load_state_dict(round_trip(state))
    assert b.run(4) == a.run(4)


# ---------------------------------------------------------------------- another tuner's state
def _foreign(source: str) -> tuple[Any, str]:
    """A state_dict that is not the loading tuner's, and how the error must call it."""
    if source == "autolrs":
        return _autolrs_state(), "an AutoLRS state_dict"
    if source == "optimizer":
        m = nn.Linear(3, 1)
        return torch.optim.SGD(m.parameters(), lr=0.1).state_dict(), "a torch optimizer state_dict"
    if source == "model":
        return nn.Linear(3, 1).state_dict(), "a model (module) state_dict"
    name = CLASS[source]
    return _make(source, steps=1).obj.state_dict(), f"{name} state_dict"


@pytest.mark.parametrize(
    ("kind", "source"),
    [(k, s) for k in KINDS for s in ("autolrs", "optimizer", "model", *KINDS) if s != k],
)
def test_state_of_another_tuner_says_what_it_is(kind: str, source: str) -> None:
    h, twin = _make(kind), _make(kind)
    state, what = _foreign(source)
    expected = f"expected one from {CLASS[kind]}.state_dict()"
    _refuse(h, state, f"got {what}" if source in ("autolrs", "optimizer", "model") else what)
    _refuse(h, round_trip(state), expected)
    _refuse(h, [state], "got a list", expected)
    _refuse(h, None, "got None", expected)
    _unchanged(h, twin)


def test_a_renamed_kind_is_refused_even_with_the_right_keys() -> None:
    h, twin = _make("hd"), _make("hd")
    _refuse(h, {**_later("hd"), "kind": "AutoLRS"}, "got an AutoLRS state_dict")
    _unchanged(h, twin)


# ---------------------------------------------------------------------- missing / mistyped
MISSING = {
    "hd": [("hypergrad", "directions"), ("hypergrad", "rule")],
    "stn": [("hist_steps",), ("config", "train_steps")],
    "server": [("prev_delta",), ("config", "hyper_lr")],
    "client": [("last",), ("config", "max_growth")],
}


@pytest.mark.parametrize(
    ("kind", "path"), [(k, p) for k, paths in MISSING.items() for p in paths], ids=str
)
def test_missing_entry_is_named(kind: str, path: tuple[str, ...]) -> None:
    h, twin = _make(kind), _make(kind)
    where = f"'s {path[0]!r} entry" if len(path) > 1 else ""
    _refuse(h, _edit(_later(kind), path, drop=True), f"state_dict{where} lacks [{path[-1]!r}]")
    _unchanged(h, twin)


MISTYPED = {
    "hd": [(("hypergrad", "steps"), "abc", "'steps' must be an int >= 0, got 'abc'"),
           (("hypergrad", "scales"), [float("nan")], "'scales' must be a finite number >= 0"),
           (("hypergrad", "h_n"), [1, 2], "'h_n' has 2 entries in the state_dict, 1 expected"),
           (("hypergrad", "directions"), [torch.zeros(3)], "'directions' must be a dict")],
    "stn": [(("global_step",), "abc", "'global_step' must be an int >= 0, got 'abc'"),
            (("cycle_pos",), 7, "'cycle_pos' must be an int in [0, 1), got 7"),
            (("hist_values",), [[0.1, 0.2]], "'hist_values' has 1 entries in the state_dict"),
            (("last_val_loss",), "nan", "'last_val_loss' must be a number, got 'nan'")],
    "server": [(("round",), 2.5, "'round' must be an int >= 0, got 2.5"),
               (("global_lr",), -1.0, "'global_lr' must be a finite number > 0, got -1.0"),
               (("momentum_buf",), [0.0] * 9, "'momentum_buf' must be a tensor")],
    "client": [(("steps",), True, "'steps' must be an int >= 0, got True"),
               (("scale",), "x", "'scale' must be a finite number > 0, got 'x'"),
               (("config",), [], "'config' must be a dict, got []")],
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "path", "value", "needle"),
    [(k, *case) for k, cases in MISTYPED.items() for case in cases],
    ids=lambda v: str(v)[:30],
)
def test_mistyped_entry_is_named(kind: str, path: tuple[str, ...], value: Any, needle: str) -> None:
    h, twin = _make(kind), _make(kind)
    _refuse(h, _edit(_later(kind), path, value), needle)
    _unchanged(h, twin)


# ---------------------------------------------------------------------- another model
def _other_model(kind: str, variant: int) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A state saved from another model, the arguments of the tuner it is loaded into, and the
    message parts (the tensor, both shapes)."""
    if kind == "hd":
        src = _make("hd", size=5, adam=bool(variant))
        key = "['exp_avg']" if variant else "['momentum_buffer']"
        return {"adam": bool(variant)}, src.obj.state_dict(), [key, "(1, 5)", "(1, 3)"]
    if kind == "server":
        shapes = ((3, 2), (3,)) if variant == 0 else ((2, 3), (3,), (4,))
        src = _make("server", shapes=shapes)
        need = ["parameter 0", "(3, 2)", "(2, 3)"] if variant == 0 else ["3 parameter tensors"]
        return {}, src.obj.state_dict(), need
    if kind == "client":
        src = _make("client", size=3 + variant)
        return {}, src.obj.state_dict(), [f"({3 + variant},)", "(2,)"]
    # STN: the tuner holds only the space's and the hyper optimizer's tensors (the weights are
    # in the model's own state_dict); tensors of another size there are a state from elsewhere.
    state = _later("stn")
    if variant == 0:
        bad = _edit(state, ("space", "rho"), torch.zeros(5))
        return {}, bad, ["space['rho']", "(5,)", "(2,)"]
    opt = state["hyper_optimizer"]
    entry = dict(opt["state"][0], exp_avg=torch.zeros(4))
    bad = _edit(state, ("hyper_optimizer", "state"), {**opt["state"], 0: entry})
    return {}, bad, ["hyper_optimizer['state'][0]['exp_avg']", "(4,)", "(2,)"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", [0, 1])
def test_state_of_another_model_names_the_tensor_and_both_shapes(kind: str, variant: int) -> None:
    kwargs, state, needles = _other_model(kind, variant)
    h, twin = _make(kind, **kwargs), _make(kind, **kwargs)
    _refuse(h, round_trip(state), *needles, "another model")
    _unchanged(h, twin)


def test_stn_state_with_other_hyperparameters_is_refused() -> None:
    h, twin = _make("stn"), _make("stn")
    other = _make("stn", n_hyper=3).obj.state_dict()
    _refuse(h, other, "names: saved ['drop0', 'drop1', 'drop2'], this STNTuner has")
    space = stn.HyperSpace().add("drop0", 0.1, low=0.0, high=0.9).add("drop1", 0.2, low=0.05)
    with pytest.raises(StateError, match=r"drop1\.high: saved 0\.9, this HyperSpace has None"):
        space.load_state_dict(h.space.state_dict())  # type: ignore[attr-defined]
    _unchanged(h, twin)


# ---------------------------------------------------------------------- other arguments
ARGS = {
    "hd": [({"rule": "additive", "lr_bounds": (0.0, 1.0)},
            {"rule": ("'multiplicative'", "'additive'"), "hypergrad_lr": ("0.02", "0.001"),
             "lr_max": ("inf", "1.0")}),
           ({"adam": True}, {"optimizer_class": ("'SGD'", "'Adam'")}),
           ({"boost": 5.0, "warmup_steps": 3}, {"boost": ("1.0", "5.0"),
                                                "warmup_steps": ("0", "3")})],
    "stn": [({"train_steps": 2, "entropy_weight": 0.1},
             {"train_steps": ("1", "2"), "entropy_weight": ("0.001", "0.1")}),
            ({"variant": "delta", "linearize": True},
             {"variant": ("'stn'", "'delta'"), "linearize": ("False", "True")})],
    "server": [({"hypergrad_lr": 0.5, "local_lr": 0.02},
                {"hyper_lr": ("1.0", "0.5"), "initial_local_lr": ("0.01", "0.02"),
                 "local_lr_bounds": ("[0.001, 0.1]", "[0.002, 0.2]")}),
               ({"rule": "g", "normalize": True},  # also changes the defaults of β and bounds
                {"rule": ("'gm'", "'g'"), "normalize": ("False", "True"),
                 "hyper_lr": ("1.0", "0.3"), "local_hyper_lr": ("1.0", "0.3"),
                 "global_lr_bounds": ("[0.8, 5.0]", "[0.2, 5.0]")})],
    "client": [({"hypergrad_lr": 2.0, "max_growth": 1.5},
                {"hyper_lr": ("5.0", "2.0"), "max_growth": ("1.1", "1.5")}),
               ({"scale_bounds": (0.5, 2.0)}, {"scale_bounds": ("[0.1, 10.0]", "[0.5, 2.0]")})],
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "kwargs", "diffs"),
    [(k, *case) for k, cases in ARGS.items() for case in cases],
    ids=lambda v: str(v)[:40],
)
def test_other_arguments_are_all_listed_with_both_values(
    kind: str, kwargs: dict[str, Any], diffs: dict[str, tuple[str, str]]
) -> None:
    saved = _make(kind).obj.state_dict()
    h, twin = _make(kind, **kwargs), _make(kind, **kwargs)
    cls = CLASS[kind]
    msg = _refuse(h, round_trip(saved), "the state_dict was saved with different arguments")
    for arg, (old, new) in diffs.items():
        assert f"{arg}: saved {old}, this {cls} has {new}" in msg, msg
    # the same wording in every tuner: only the listed arguments, nothing else
    listed = re.findall(r"(\w+): saved .+?, this \w+ has ", msg)
    assert sorted(listed) == sorted(diffs), msg
    assert msg.endswith(f"build the {cls} with the saved arguments to resume from it")
    _unchanged(h, twin)


# ---------------------------------------------------------------------- HyperSpace, Schedule
def test_hyperspace_load_is_checked_and_atomic() -> None:
    h = _make("stn")
    space: stn.HyperSpace = h.space  # type: ignore[attr-defined]
    before = {k: v.clone() for k, v in space.state_dict().items() if torch.is_tensor(v)}
    good = round_trip(space.state_dict())
    bad_rho = _edit(good, ("rho",), torch.zeros(3))
    with pytest.raises(StateError, match=r"'rho' has shape \(3,\) in the state_dict but \(2,\)"):
        space.load_state_dict(bad_rho)
    with pytest.raises(StateError, match=r"lacks \['_origin'\]"):
        space.load_state_dict(_edit(good, ("_origin",), drop=True))
    with pytest.raises(StateError, match="got an STNTuner state_dict"):
        space.load_state_dict(h.obj.state_dict())
    with pytest.raises(StateError, match="hyperparameters"):
        stn.HyperSpace().add("drop0", 0.1, low=0.0, high=0.9).load_state_dict(good)
    after = space.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    # an unversioned extra state (written before the key existed) still loads
    old = _edit(good, ("_extra_state",), {"specs": good["_extra_state"]["specs"]})
    space.load_state_dict(old)


def test_schedule_state_is_checked() -> None:
    sched = stn.Schedule(["a", "b"], [0, 5], [[0.1, 1.0], [0.2, 2.0]], ["b"])
    state = round_trip(sched.state_dict())
    assert state["version"] == 1 and stn.Schedule.from_state_dict(state) == sched
    old = {k: v for k, v in state.items() if k not in ("version", "kind")}
    assert stn.Schedule.from_state_dict(old) == sched  # written before "version" existed
    cases = [
        (_edit(state, ("values",), [[0.1, 1.0]]), "'values' has 1 entries in the state_dict, 2"),
        (_edit(state, ("values",), [[0.1], [0.2]]), "values[0] has 1 entries"),
        (_edit(state, ("steps",), [5, 0]), "'steps' must be non-decreasing, got [5, 0]"),
        (_edit(state, ("steps",), ["0", 5]), "'steps' must be an int >= 0, got '0'"),
        (_edit(state, ("discrete",), ["c"]), "'discrete' names ['c']"),
        (_make("stn").obj.state_dict(), "got an STNTuner state_dict"),
    ]
    for bad, needle in cases:
        with pytest.raises(StateError) as info:
            stn.Schedule.from_state_dict(bad)
        assert str(info.value).startswith("Schedule.from_state_dict: ")
        assert needle in str(info.value), str(info.value)


# ---------------------------------------------------------------------- HD trace is bounded
def test_hd_trace_is_bounded_and_keeps_the_last_steps() -> None:
    full, short, off = (
        _make("hd", 0, trace=50),
        _make("hd", 0, trace=3),
        _make("hd", 0, trace=False),
    )
    for h in (full, short, off):
        h.run(7)
    assert len(full.obj.lr_trace) == 7
    assert short.obj.lr_trace == full.obj.lr_trace[-3:] and off.obj.lr_trace == []
    assert _make("hd", 0).obj.trace == DEFAULT_TRACE_STEPS == 10_000  # trace=True: bounded
    # a longer saved trace loads into a shorter one: its last steps
    resumed = _make("hd", 0, trace=2)
    resumed.obj.load_state_dict(round_trip(full.obj.state_dict()))
    assert resumed.obj.lr_trace == full.obj.lr_trace[-2:]
    with pytest.raises(ConfigError, match="trace must be a bool or an int >= 0"):
        _make("hd", 0, trace=-1)
    with pytest.raises(ConfigTypeError, match="trace must be a bool or an int"):
        _make("hd", 0, trace="all")


# ---------------------------------------------------------------------- STN loss_fn (item 8)
@pytest.mark.parametrize(("loss_fn", "got"), [("mse_loss", "str 'mse_loss'"), (None, "NoneType")])
def test_stn_loss_fn_must_be_callable_at_construction(loss_fn: Any, got: str) -> None:
    with pytest.raises(ConfigTypeError, match=r"STNTuner: loss_fn must be a callable") as info:
        _STN(loss_fn=loss_fn)
    assert got in str(info.value)


PER_EXAMPLE = [
    (nn.MSELoss(reduction="none"), "MSELoss", "(8, 1)"),
    (lambda out, y: F.mse_loss(out, y, reduction="none").sum(1), "<lambda>", "(8,)"),
    (lambda out, y: F.mse_loss(out, y).detach().item(), "<lambda>", "(float)"),
]


@pytest.mark.parametrize(("loss_fn", "name", "got"), PER_EXAMPLE, ids=["module", "fn", "float"])
def test_stn_per_example_loss_is_named_before_any_update(loss_fn: Any, name: str, got: str) -> None:
    h = _STN(loss_fn=loss_fn)
    w0 = [p.detach().clone() for p in h.net.parameters()]
    with pytest.raises(ConfigError) as info:
        h.run(1)
    msg = str(info.value)
    assert msg.startswith("STNTuner: loss_fn must return a scalar tensor"), msg
    assert f"{name}(output, target) returned" in msg and got in msg and "reduction='mean'" in msg
    # refused before anything moved: no weight step, no counter
    assert all(torch.equal(a, b) for a, b in zip(w0, h.net.parameters()))
    assert h.obj.global_step == 0 and h.obj.skipped_steps == 0


def test_stn_loss_without_a_graph_and_bad_augment_are_named() -> None:
    h = _STN(loss_fn=lambda out, y: torch.tensor(F.mse_loss(out, y).detach().item()))
    with pytest.raises(ConfigError, match="loss_fn returned a tensor without a gradient path"):
        h.run(1)
    h = _STN(augment=lambda x: x.tolist())
    with pytest.raises(ConfigError, match=r"augment returned .*list.*shape \(8, 3\)"):
        h.run(1)


def test_stn_evaluate_and_hyper_step_check_the_loss_too() -> None:
    h = _make("stn", 2)
    h.obj.loss_fn = nn.MSELoss(reduction="none")
    x = torch.randn(6, 3)
    with pytest.raises(ConfigError, match=r"MSELoss\(output, target\) returned a tensor of shape"):
        h.obj.evaluate([(x, x[:, :1])])
    with pytest.raises(ConfigError, match=r"shape \(6, 1\)"):
        h.obj.hyper_step((x, x[:, :1]))
