"""Fast unit tests of autolr.searchers' decision code against independent oracles (issue 18).

Each test runs in well under a second so that mutation testing (``make mutate``) can run
them per mutant: hand-computed unit-cube mappings, the van der Corput points, torch's own
Sobol engine and generators, the penalty formula by hand, every state check by its message,
and for the GP tiny problems (n <= 6 points) with known posteriors. No optimisation loops.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re

import numpy as np
import pytest
import torch

import autolr.searchers._gp as gp_module
from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr.searchers import GPSearcher, Param, RandomSearcher, Searcher
from autolr.searchers._base import _derive_seed, _isolated_rng, _van_der_corput

LOG = Param("lr", 1e-4, 1.0, log=True)
LIN = Param("x", -2.0, 3.0)


class _Probe(Searcher):
    """A concrete Searcher that returns what the test queued and records its inputs.

    The base class is abstract; this exposes exactly what ``suggest`` hands to and takes
    from ``_suggest_unit``, so the base class's own work (seeding, clamping, mapping) is
    what is tested.
    """

    def __init__(self, *args, out: torch.Tensor | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.out = out
        self.calls: list[tuple[int, torch.Tensor, float, float, float]] = []

    def _suggest_unit(self, n: int, pending: torch.Tensor) -> torch.Tensor:
        draws = (torch.rand(()).item(), float(np.random.rand()), random.random())
        self.calls.append((n, pending.clone(), *draws))
        return self.out if self.out is not None else torch.full((n, self.dim), 0.5)


# ----------------------------------------------------------------------------- Param
def test_param_unit_mapping_by_hand() -> None:
    p = Param("lr", 1e-4, 1.0, log=True)
    # log10 spans [-4, 0]: 1e-3 is a quarter of the way, 1e-2 half.
    assert p.to_unit(1e-3) == pytest.approx(0.25, abs=1e-12)
    assert p.from_unit(0.25) == pytest.approx(1e-3, rel=1e-12)
    assert p.from_unit(0.75) == pytest.approx(1e-1, rel=1e-12)
    q = Param("x", -2, 3)
    assert q.to_unit(0.5) == pytest.approx(0.5, abs=1e-12)
    assert q.to_unit(-1.0) == pytest.approx(0.2, abs=1e-12)
    assert q.from_unit(0.2) == pytest.approx(-1.0, abs=1e-12)
    assert q.from_unit(0.9) == pytest.approx(2.5, abs=1e-12)
    # Clipping: outside values map to the edges; endpoints are returned exactly.
    assert q.to_unit(-5.0) == 0.0 and q.to_unit(9.0) == 1.0
    assert p.to_unit(1e-9) == 0.0 and p.to_unit(5.0) == 1.0
    assert q.from_unit(-0.5) == -2.0 and q.from_unit(1.5) == 3.0
    assert q.from_unit(0.0) == -2.0 and q.from_unit(1.0) == 3.0
    assert p.from_unit(0) == 1e-4 and p.from_unit(1) == 1.0
    assert q.clip(-3) == -2.0 and q.clip(4) == 3.0 and q.clip(1) == 1.0
    assert isinstance(q.clip(1), float)


def test_param_from_unit_stays_in_bounds_despite_rounding() -> None:
    # exp(log(0.3)) rounds above 0.3; the result must be clipped to the bound.
    p = Param("lr", 1e-3, 0.3, log=True)
    for u in (1 - 1e-16, 1 - 2e-16, 0.999999999999):
        assert 1e-3 <= p.from_unit(u) <= 0.3
    assert p.from_unit(1 - 1e-16) == pytest.approx(0.3, rel=1e-12)
    # u = 1 is the upper bound itself, though exp(log) of it rounds one ulp below here.
    for lo, hi in ((1e-5, 0.7), (3e-4, 0.9)):
        below = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)))
        assert below < hi and Param("a", lo, hi, log=True).from_unit(1.0) == hi
        assert Param("a", lo, hi, log=True).from_unit(1.5) == hi


def test_param_normalises_and_validates() -> None:
    p = Param("a", np.int64(1), 2, log=np.bool_(True))  # type: ignore[arg-type]
    assert type(p.low) is float and type(p.high) is float and p.log is True
    # The flag is a bool: "no" (truthy) or 1 would silently mean log=True.
    for flag in ("no", 1, None):
        with pytest.raises(ConfigTypeError) as info:
            Param("a", 1, 2, log=flag)  # type: ignore[arg-type]
        assert str(info.value) == (
            f"log of Param 'a' must be a bool or numpy.bool, got {type(flag).__name__}"
        )
    assert repr(p) == "Param(name='a', low=1.0, high=2.0, log=True)"
    cases = [
        (("", 0, 1), ConfigError, "name must be a non-empty str, got ''"),
        ((3, 0, 1), ConfigError, "name must be a non-empty str, got 3"),
        (("a", "z", 1), ConfigTypeError, "low of Param 'a' must be a real number, got 'z'"),
        (("a", None, 1), ConfigTypeError, "low of Param 'a' must be a real number, got None"),
        (("a", 0, math.inf), ConfigError, "high of Param 'a' must be finite, got inf"),
        (("a", 1, 1), ConfigError, "low must be < high for Param 'a', got low=1.0, high=1.0"),
        (("a", 2, 1), ConfigError, "low must be < high for Param 'a', got low=2.0, high=1.0"),
    ]
    for args, err, msg in cases:
        with pytest.raises(err) as info:
            Param(*args)
        assert str(info.value) == msg
    with pytest.raises(ConfigError) as info:
        Param("a", 0, 1, log=True)
    assert str(info.value) == "low must be > 0 when log=True for Param 'a', got 0.0"
    Param("a", 1e-300, 1, log=True)  # any positive low is fine
    Param("a", -1, 0)  # non-log may start below zero


# -------------------------------------------------------------------- construction
def test_searcher_construction_and_properties() -> None:
    s = RandomSearcher([LOG, LIN], seed=7, design="stratified")
    assert s.design == "stratified"
    assert s.params == (LOG, LIN) and s.names == ("lr", "x") and s.dim == 2
    assert s.bounds == {"lr": (1e-4, 1.0), "x": (-2.0, 3.0)}
    assert s.seed == 7 and len(s) == 0
    assert RandomSearcher([LIN]).design == "sobol"
    assert repr(s) == (f"RandomSearcher(params={[LOG, LIN]!r}, seed=7, n_observations=0)")
    with pytest.raises(ConfigError) as info:
        RandomSearcher([], seed=0)
    assert str(info.value) == "params must be a non-empty sequence of Param, got an empty one"
    with pytest.raises(ConfigError) as info:
        RandomSearcher([LIN, LOG, LIN, LOG, Param("y", 0, 1)], seed=0)
    assert str(info.value) == "params must have unique names, got duplicates ['lr', 'x']"
    with pytest.raises(ConfigTypeError, match=r"params\[1\] must be"):
        RandomSearcher([LIN, (0, 1)], seed=0)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="design must be one of 'sobol', 'stratified'"):
        RandomSearcher([LIN], seed=0, design="grid")


def test_seed_bounds_and_os_seed() -> None:
    assert RandomSearcher([LIN], seed=0).seed == 0
    assert RandomSearcher([LIN], seed=2**63 - 1).seed == 2**63 - 1
    for bad in (-1, 2**63):
        with pytest.raises(ConfigError, match=r"seed must be an int in \[0, 9223372036854775807\]"):
            RandomSearcher([LIN], seed=bad)
    seeds = {RandomSearcher([LIN]).seed for _ in range(4)}
    assert len(seeds) > 1 and all(0 <= x < 2**63 for x in seeds)


# ------------------------------------------------------------------- observations
def test_configs_map_to_the_unit_cube_and_back() -> None:
    s = RandomSearcher([LOG, LIN], seed=0)
    x = s.configs_to_unit([{"lr": 1e-3, "x": 0.5, "extra": "ignored"}, {"lr": 9.0, "x": -7}])
    assert x.dtype == torch.float64 and x.shape == (2, 2)
    assert torch.allclose(x, torch.tensor([[0.25, 0.5], [1.0, 0.0]], dtype=torch.float64))
    assert s.configs_to_unit([]).shape == (0, 2)
    back = s.unit_to_configs(torch.tensor([[0.25, 0.2], [2.0, -1.0]], dtype=torch.float32))
    assert back[0]["lr"] == pytest.approx(1e-3, rel=1e-6) and back[0]["x"] == pytest.approx(-1)
    assert back[1] == {"lr": 1.0, "x": -2.0}
    assert s.unit_to_configs(torch.tensor([0.5, 0.5])) == s.unit_to_configs(
        torch.tensor([[0.5, 0.5]])
    )
    with pytest.raises(ConfigTypeError) as info:
        s.configs_to_unit([[1e-3, 0.5]])  # type: ignore[list-item]
    assert str(info.value) == "config must be a mapping of name -> float, got [0.001, 0.5]"
    with pytest.raises(ConfigError) as info:
        s.configs_to_unit([{"x": 1}])
    assert str(info.value) == "config is missing keys ['lr']; expected ['lr', 'x']"
    with pytest.raises(ConfigError) as info:
        s.configs_to_unit([{"lr": 1e-3, "x": math.nan}])
    assert str(info.value) == "config['x'] must be finite, got nan"


def test_observe_validates_and_records() -> None:
    s = RandomSearcher([LIN], seed=0)
    s.observe({"x": 9.0}, 2, noise=0)
    s.observe({"x": 1.0}, "1.5", noise=0.25)  # type: ignore[arg-type]
    s.observe({"x": 0.0}, math.nan)
    assert s.observations == [({"x": 3.0}, 2.0), ({"x": 1.0}, 1.5), ({"x": 0.0}, 3.0)]
    assert s.noises == [0.0, 0.25, None] and s.failed == [False, False, True]
    assert isinstance(s.observations[0][1], float)
    with pytest.raises(ConfigTypeError) as info:
        s.observe({"x": 1.0}, "bad")  # type: ignore[arg-type]
    assert str(info.value) == "value must be a real number, got 'bad'"
    with pytest.raises(ConfigTypeError, match="value must be a real number, got None"):
        s.observe({"x": 1.0}, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        s.observe({"x": 1.0}, 1.0, noise=-0.5)
    assert str(info.value) == "noise must be a standard deviation >= 0, got -0.5"
    with pytest.raises(ConfigError, match="noise must be finite, got inf"):
        s.observe({"x": 1.0}, 1.0, noise=math.inf)
    with pytest.raises(ConfigTypeError, match="noise must be a real number"):
        s.observe({"x": 1.0}, 1.0, noise="a")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        s.observe({"y": 1.0}, 1.0)
    assert str(info.value) == "config is missing keys ['x']; expected ['x']"
    assert len(s) == 3  # nothing recorded by a refused call
    noises = s.noises
    noises.append(1.0)
    assert s.noises == [0.0, 0.25, None]  # a copy


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # worst + max(1, worst - best): range 4 -> worst 5 + 4; range 0.5 -> 2 + 1.
        ([1.0, math.nan, 5.0, -math.inf], [1.0, 9.0, 5.0, 9.0]),
        ([1.5, math.inf, 2.0], [1.5, 3.0, 2.0]),
        ([math.nan, math.inf], [1.0, 1.0]),
        ([-3.0, math.nan], [-3.0, -2.0]),
    ],
)
def test_failures_get_the_penalty_by_hand(values: list[float], expected: list[float]) -> None:
    s = RandomSearcher([LIN], seed=0)
    for i, v in enumerate(values):
        s.observe({"x": float(i) / 2}, v)
    assert [v for _, v in s.observations] == expected
    assert s._values() == expected


def test_best_is_the_first_lowest_finite_value() -> None:
    s = RandomSearcher([LIN], seed=0)
    assert s.best() is None
    s.observe({"x": 0.0}, math.nan)
    assert s.best() is None
    s.observe({"x": 1.0}, 2.0)
    s.observe({"x": 2.0}, 1.0)
    s.observe({"x": 3.0}, -math.inf)
    s.observe({"x": -1.0}, 1.0)
    s.observe({"x": -2.0}, 1.5)
    assert s.best() == ({"x": 2.0}, 1.0)
    s.reset()
    assert len(s) == 0 and s.best() is None and s.noises == [] and s.observations == []


def test_set_bounds_clips_the_observations_and_keeps_log() -> None:
    s = RandomSearcher([LOG, LIN], seed=0)
    s.observe({"lr": 0.5, "x": 2.5}, 1.0)
    s.observe({"lr": 1e-3, "x": -1.0}, 2.0)
    s.set_bounds("lr", 1e-3, 0.1)
    assert s.params[0] == Param("lr", 1e-3, 0.1, log=True) and s.params[1] == LIN
    s.set_bounds("x", -1.5, 2.0)
    assert s.bounds == {"lr": (1e-3, 0.1), "x": (-1.5, 2.0)}
    assert [c for c, _ in s.observations] == [{"lr": 0.1, "x": 2.0}, {"lr": 1e-3, "x": -1.0}]
    with pytest.raises(ConfigError) as info:
        s.set_bounds("y", 0, 1)
    assert str(info.value) == "name must be one of ['lr', 'x'], got 'y'"
    with pytest.raises(ConfigError, match="low must be > 0 when log=True"):
        s.set_bounds("lr", 0.0, 1.0)


# ---------------------------------------------------------------------- suggestions
def test_suggest_seeds_every_rng_from_seed_and_call_count() -> None:
    s = _Probe([LIN], seed=123)
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = (torch.rand(1).item(), float(np.random.rand()), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    s.suggest(2, pending=[{"x": 0.5}])
    s.suggest()
    # The caller's streams continue as if suggest had not run.
    assert (torch.rand(1).item(), float(np.random.rand()), random.random()) == before
    for call, (n, _, t, npv, py) in enumerate(s.calls):
        seed = _derive_seed(123, call)
        assert n == (2, 1)[call]
        assert t == torch.rand((), generator=torch.Generator().manual_seed(seed)).item()
        assert npv == np.random.RandomState(seed % 2**32).rand()
        assert py == random.Random(seed).random()
    assert torch.equal(s.calls[0][1], torch.tensor([[0.5]], dtype=torch.float64))
    assert s.calls[1][1].shape == (0, 1) and s.calls[1][1].dtype == torch.float64


def test_derive_seed_is_blake2b_of_seed_and_counter() -> None:
    for seed, counter in ((0, 0), (123, 4), (2**63 - 1, 99)):
        digest = hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=8).digest()
        want = int.from_bytes(digest, "little") % 2**63
        assert _derive_seed(seed, counter) == want < 2**63
    assert _derive_seed(1, 2) != _derive_seed(12, 0)  # the separator matters


def test_isolated_rng_restores_even_on_error() -> None:
    np.random.seed(1)
    random.seed(1)
    np_state, py_state = np.random.get_state(), random.getstate()
    with pytest.raises(KeyError), _isolated_rng(2**40 + 3):
        assert float(np.random.rand()) == np.random.RandomState(3).rand()
        raise KeyError
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_suggest_clamps_and_maps_the_unit_points() -> None:
    out = torch.tensor([[-0.5, 0.25], [1.5, 0.5]], dtype=torch.float32)
    s = _Probe([LIN, LOG], seed=0, out=out)
    cfgs = s.suggest(2)
    assert cfgs[0]["x"] == -2.0 and cfgs[0]["lr"] == pytest.approx(1e-3)
    assert cfgs[1]["x"] == 3.0 and cfgs[1]["lr"] == pytest.approx(1e-2, rel=1e-12)
    assert all(type(v) is float for c in cfgs for v in c.values())
    with pytest.raises(ConfigError, match="n must be an int >= 1, got 0"):
        s.suggest(0)
    assert len(s.calls) == 1  # a refused call draws nothing


def test_van_der_corput_points() -> None:
    want = [1 / 2, 1 / 4, 3 / 4, 1 / 8, 5 / 8, 3 / 8, 7 / 8, 1 / 16, 9 / 16]
    assert [_van_der_corput(i) for i in range(1, 10)] == want
    assert _van_der_corput(0) == 0.0


def test_stratified_design_in_1d_and_sobol_otherwise() -> None:
    s = RandomSearcher([LIN], seed=3, design="stratified")
    xs = [c["x"] for c in s.suggest(3)] + [c["x"] for c in s.suggest(2)]
    # x = -2 + 5 u for u = 1/2, 1/4, 3/4, 1/8, 5/8.
    assert xs == pytest.approx([0.5, -0.75, 1.75, -1.375, 1.125], abs=1e-12)
    assert s.state_dict()["n_sobol_drawn"] == 5
    two = RandomSearcher([LIN, Param("y", 0, 1)], seed=3, design="stratified")
    ref = torch.quasirandom.SobolEngine(2, scramble=True, seed=3).draw(3, dtype=torch.float64)
    got = two.configs_to_unit(two.suggest(3))
    assert torch.allclose(got, ref, atol=1e-12)
    assert s._draw_sobol(0).shape == (0, 1) and two._draw_sobol(0).shape == (0, 2)
    assert s._draw_sobol(0).dtype == two._draw_sobol(0).dtype == torch.float64
    assert s.state_dict()["n_sobol_drawn"] == 5


def test_random_searcher_is_the_seeded_sobol_stream_across_reload() -> None:
    ref = torch.quasirandom.SobolEngine(2, scramble=True, seed=11).draw(7, dtype=torch.float64)
    s = RandomSearcher([LIN, LOG], seed=11)
    first = s.configs_to_unit(s.suggest(2))
    assert torch.allclose(first, ref[:2], atol=1e-12)
    t = RandomSearcher([LIN, LOG], seed=0)
    t.load_state_dict(s.state_dict())  # fast-forwards a fresh engine by 2
    assert torch.allclose(t.configs_to_unit(t.suggest(3)), ref[2:5], atol=1e-12)
    assert torch.allclose(s.configs_to_unit(s.suggest(3)), ref[2:5], atol=1e-12)
    s.reseed_rng(11)  # back to the start, observations kept
    s.observe({"x": 0.0, "lr": 0.1}, 1.0)
    assert torch.allclose(s.configs_to_unit(s.suggest(1)), ref[:1], atol=1e-12)
    assert s.state_dict()["n_suggest_calls"] == 1 and len(s) == 1
    s.reseed_rng(12)
    assert s.seed == 12 and s.state_dict()["n_sobol_drawn"] == 0
    with pytest.raises(ConfigError, match="seed must be an int"):
        s.reseed_rng(-1)


# ---------------------------------------------------------------------- persistence
def test_state_dict_contents() -> None:
    s = RandomSearcher([LIN, LOG], seed=5)
    empty = s.state_dict()
    assert empty["configs"].shape == (0, 2) and empty["values"].shape == (0,)
    assert empty["noises"].shape == (0,)
    s.suggest(2)
    s.suggest(1)
    s.observe({"x": 1.0, "lr": 0.1}, 2.0, noise=0.5)
    s.observe({"x": 5.0, "lr": 1e-2}, math.inf)
    state = s.state_dict()
    assert set(state) == {
        "version",
        "class",
        "param_names",
        "seed",
        "n_suggest_calls",
        "n_sobol_drawn",
        "configs",
        "values",
        "noises",
    }
    assert state["version"] == 1 and state["class"] == "RandomSearcher"
    assert state["param_names"] == ["x", "lr"] and state["seed"] == 5
    assert state["n_suggest_calls"] == 2 and state["n_sobol_drawn"] == 3
    assert state["configs"].dtype == torch.float64
    assert state["configs"].tolist() == [[1.0, 0.1], [3.0, 1e-2]]
    assert state["values"].tolist() == [2.0, math.inf]
    assert state["noises"][0] == 0.5 and math.isnan(state["noises"][1])


def test_load_state_dict_restores_everything() -> None:
    s = RandomSearcher([LIN], seed=5)
    s.suggest(2)
    s.observe({"x": 1.0}, 2.0, noise=0.5)
    s.observe({"x": 2.0}, math.nan)
    t = RandomSearcher([LIN], seed=9)
    t.observe({"x": 0.0}, 0.0)
    t.load_state_dict(s.state_dict())
    assert t.seed == 5 and len(t) == 2 and t.noises == [0.5, None]
    assert t.failed == [False, True] and t.observations == s.observations
    assert t.state_dict()["n_suggest_calls"] == 1 and t.state_dict()["n_sobol_drawn"] == 2
    # Plain lists load too, and rows are clipped into the current box.
    state = {
        **s.state_dict(),
        "configs": [[9.0], [-9.0]],
        "values": [1, 2],
        "noises": [math.nan, 0],
    }
    t.load_state_dict(state)
    assert t.observations == [({"x": 3.0}, 1.0), ({"x": -2.0}, 2.0)]
    assert t.noises == [None, 0.0]
    assert all(type(v) is float for v in t.noises if v is not None)
    # Plain float lists are read in double precision (torch's default would be float32).
    t.load_state_dict({**state, "configs": [[0.1]], "values": [0.3], "noises": [0.7]})
    assert t.observations == [({"x": 0.1}, 0.3)] and t.noises == [0.7]


def test_load_state_dict_refuses_each_bad_entry_by_message() -> None:
    s = RandomSearcher([LIN], seed=5)
    s.observe({"x": 1.0}, 2.0)
    good = s.state_dict()
    t = RandomSearcher([LIN], seed=9)
    with pytest.raises(StateError) as info:
        t.load_state_dict([1])  # type: ignore[arg-type]
    assert str(info.value) == "state must be a mapping, got list"
    cases = [
        ({"version": 2}, "state version must be 1, got 2"),
        ({"param_names": ["y"]}, "state param_names must be ['x'], got ['y']"),
        ({"values": torch.zeros(2)}, "state configs, values and noises must have the same length"),
        ({"noises": torch.zeros(0)}, "state configs, values and noises must have the same length"),
        (
            {"n_suggest_calls": -1},
            "state counters must be >= 0, got n_suggest_calls=-1, n_sobol_drawn=0",
        ),
        (
            {"n_sobol_drawn": -2},
            "state counters must be >= 0, got n_suggest_calls=0, n_sobol_drawn=-2",
        ),
        (
            {"seed": -1},
            "state 'seed' is not valid: seed must be an int in [0, 9223372036854775807], got -1",
        ),
    ]
    for change, msg in cases:
        with pytest.raises(StateError) as info:
            t.load_state_dict({**good, **change})
        assert str(info.value) == msg
    for key in good:
        if key == "class":
            continue
        bad = {k: v for k, v in good.items() if k != key}
        with pytest.raises(StateError) as info:
            t.load_state_dict(bad)
        assert str(info.value) == f"state is not a valid Searcher state_dict: no {key!r}"
    for key, value in (("configs", "abc"), ("n_suggest_calls", "x"), ("values", [[1, 2], [3]])):
        with pytest.raises(StateError, match=rf"^state {key!r} is not valid: "):
            t.load_state_dict({**good, key: value})
    # Nothing was loaded by a refused state.
    assert t.seed == 9 and len(t) == 0
    t.load_state_dict({**good, "class": "Other"})  # the class name is informative only
    assert t.seed == 5 and len(t) == 1
    assert re.fullmatch(r"RandomSearcher\(.*n_observations=1\)", repr(t))


# ------------------------------------------------------------------------------- GP
W1 = Param("lr", 1e-5, 1.0, log=True)


def _gp(params: list[Param], **kw) -> GPSearcher:
    return GPSearcher(params, **{"seed": 0, "num_restarts": 2, "raw_samples": 8, **kw})


def _observed(points: list[float], values: list[float], **kw) -> tuple[GPSearcher, torch.Tensor]:
    """A 1-D GP searcher on ``Param("x", 0, 1)`` with these observations (unit = value)."""
    s = _gp([Param("x", 0.0, 1.0)], **kw)
    for x, v in zip(points, values):
        s.observe({"x": x}, v)
    return s, s.configs_to_unit([c for c, _ in s.observations])


def test_gp_constructor_checks_and_normalises() -> None:
    s = GPSearcher(
        [LIN],
        seed=1,
        n_initial=2,
        acquisition="ucb",
        beta=3,
        num_restarts=2,
        raw_samples=2,
        fit_options={"ftol": 1e-3},
        init_hyperparameters={"covar_module.base_kernel.raw_lengthscale": np.array([1])},
        fast_1d=np.bool_(False),  # type: ignore[arg-type]
        design="stratified",
        fit_min_obs=4,
    )
    assert (s.n_initial, s.acquisition, s.beta, s.num_restarts, s.raw_samples) == (
        2,
        "ucb",
        3.0,
        2,
        2,
    )
    assert type(s.beta) is float and s.fast_1d is False and s.fit_min_obs == 4
    assert s.fit_options == {"ftol": 1e-3} and s.design == "stratified"
    ls = "covar_module.base_kernel.raw_lengthscale"
    assert s.init_hyperparameters == {ls: [1.0]}
    assert all(type(x) is float for x in s.init_hyperparameters[ls])
    assert s.fitted_hyperparameters is None and s.n_fallbacks == 0
    assert repr(s) == (
        f"GPSearcher(params={[LIN]!r}, seed=1, n_initial=2, acquisition='ucb', n_observations=0)"
    )
    d = GPSearcher([LIN], seed=0, fit_options={}, init_hyperparameters={})
    assert d.fit_options is None and d.init_hyperparameters is None
    assert (d.n_initial, d.acquisition, d.beta, d.num_restarts, d.raw_samples) == (
        3,
        "logei",
        2.0,
        8,
        256,
    )
    assert d.fast_1d is True and d.fit_min_obs == 0 and d.design == "sobol"
    opts = {"maxiter": 3}
    assert GPSearcher([LIN], fit_options=opts).fit_options is not opts  # a copy
    cases = [
        ({"n_initial": 0}, "n_initial must be an int >= 1, got 0"),
        ({"fit_min_obs": -1}, "fit_min_obs must be an int >= 0, got -1"),
        ({"acquisition": "ei"}, "acquisition must be one of 'logei', 'ucb', got 'ei'"),
        ({"beta": -0.5}, "beta must be"),
        ({"num_restarts": 0}, "num_restarts must be an int >= 1, got 0"),
        ({"num_restarts": 4, "raw_samples": 3}, "raw_samples must be an int >= 4, got 3"),
        ({"fit_options": [1]}, "fit_options must be a dict or None, got [1]"),
        ({"init_hyperparameters": [1]}, "init_hyperparameters must be a mapping or None, got [1]"),
        ({"design": "grid"}, "design must be one of 'sobol', 'stratified'"),
    ]
    for kw, msg in cases:
        with pytest.raises(ConfigError) as info:
            GPSearcher([LIN], **kw)  # type: ignore[arg-type]
        assert str(info.value).startswith(msg), str(info.value)
    GPSearcher([LIN], beta=0, num_restarts=3, raw_samples=3, n_initial=1)  # the limits pass


def test_gp_initial_design_then_fallback_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every fit failing, the points are the stratified design's, in order."""
    gp_module._load_gp_libs()

    def fail(*args, **kwargs):
        raise RuntimeError("planted fit failure")

    monkeypatch.setattr(gp_module, "fit_gpytorch_mll", fail)
    s = _gp([LIN], n_initial=4, design="stratified")
    vdc = [_van_der_corput(i) for i in range(1, 9)]
    # 1 observation + 1 pending + 2 asked = n_initial: all from the design, no GP step.
    s.observe({"x": 2.9}, 1.0)
    pts = s.configs_to_unit(s.suggest(2, pending=[{"x": -1.9}]))[:, 0].tolist()
    assert pts == pytest.approx(vdc[:2]) and s.n_fallbacks == 0
    # 3 observed, 2 asked, 1 left in the design: one design point, then one failed GP step.
    s.observe({"x": -1.0}, 2.0)
    s.observe({"x": 0.0}, 3.0)
    pts = s.configs_to_unit(s.suggest(2))[:, 0].tolist()
    assert pts == pytest.approx(vdc[2:4]) and s.n_fallbacks == 1
    s.suggest(3)
    assert s.n_fallbacks == 2 and s.state_dict()["n_sobol_drawn"] == 7
    # Every observation failed: the design goes on, no GP step (and no fallback).
    t = _gp([LIN], n_initial=1, design="stratified")
    t.observe({"x": 2.9}, math.nan)
    t.observe({"x": -1.9}, math.inf)
    assert t.configs_to_unit(t.suggest(2))[:, 0].tolist() == pytest.approx(vdc[:2])
    assert t.n_fallbacks == 0
    # Pending configs count towards the design: 1 observed + 1 pending = n_initial.
    p = _gp([LIN], n_initial=2, design="stratified")
    p.observe({"x": 2.9}, 1.0)
    assert p.configs_to_unit(p.suggest(1, pending=[{"x": -1.9}]))[0, 0] == 0.5
    assert p.n_fallbacks == 1  # it was a (failed) GP step, not a design point
    p.suggest(1)
    assert p.n_fallbacks == 1  # without the pending one the design goes on


def test_gp_replaces_duplicates_and_non_finite_rows_with_design_points() -> None:
    s = _gp([LIN], design="stratified")
    known = torch.tensor([[0.5]], dtype=torch.float64)
    x = torch.tensor(
        [[0.5], [0.3], [math.nan], [0.3 + 5e-7], [0.3 + 2e-6], [1.5], [-0.5]], dtype=torch.float64
    )
    out = s._replace_duplicates(x, known)
    # 0.5 is known: vdc 1/2 is too, so 1/4; nan -> 3/4; within 1e-6 of 0.3 -> 1/8;
    # 2e-6 away is kept; 1.5 and -0.5 are clamped.
    want = [0.25, 0.3, 0.75, 0.125, 0.3 + 2e-6, 1.0, 0.0]
    assert out[:, 0].tolist() == pytest.approx(want, abs=1e-15)
    empty = s._replace_duplicates(torch.tensor([[0.7]], dtype=torch.float64), known[:0])
    assert empty.tolist() == [[0.7]]
    # Exactly the tolerance away is not a duplicate.
    zero = torch.zeros(1, 1, dtype=torch.float64)
    edge = s._replace_duplicates(torch.tensor([[1e-6]], dtype=torch.float64), zero)
    assert edge.tolist() == [[1e-6]]
    # A point that stays a duplicate of the design's every point is kept after 16 tries.
    r = _gp([LIN], design="stratified")
    every = torch.tensor([[_van_der_corput(i)] for i in range(1, 40)], dtype=torch.float64)
    out = r._replace_duplicates(torch.tensor([[0.5]], dtype=torch.float64), every)
    assert r.state_dict()["n_sobol_drawn"] == 16 and out.tolist() == [[1 / 32]]


def test_refined_argmax_edge_cases() -> None:
    grid = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    refine = gp_module._refined_argmax
    # Vertex of the parabola through (0.25, 0), (0.5, 1), (0.75, 0.5): by hand 0.5 + 1/24.
    v = torch.tensor([-5.0, 0.0, 1.0, 0.5, -5.0], dtype=torch.float64)
    assert refine(grid, v) == pytest.approx(0.5 + 0.25 * 0.25 / 1.5, abs=1e-12)
    # Tied maxima: the first, moved a half step towards its tied neighbour.
    assert refine(grid, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)) == 0.375
    # +inf and nan count as missing (-inf): a missing neighbour stops the refinement.
    v = torch.tensor([math.inf, 2.0, 3.0, math.nan, 1.0], dtype=torch.float64)
    assert refine(grid, v) == 0.5
    v = torch.tensor([5.0, 2.0, 3.0, math.inf, 9.0], dtype=torch.float64)
    assert refine(grid, v) == 1.0
    # A neighbour at -inf becomes the lowest float: the vertex's limit, half a step away.
    v = torch.tensor([0.0, 2.0, 3.0, -math.inf, 0.0], dtype=torch.float64)
    assert refine(grid, v) == 0.375
    assert refine(grid, torch.tensor([0.0, 3.0, 0.0, 9.0, 9.5])) == 1.0
    # Refined next to the upper edge too: (0.5, 0), (0.75, 1), (1, 0.5) -> 0.75 + 1/24.
    v = torch.tensor([-9.0, -9.0, 0.0, 1.0, 0.5], dtype=torch.float64)
    assert refine(grid, v) == pytest.approx(0.75 + 0.25 * 0.25 / 1.5, abs=1e-12)
    with pytest.raises(ValueError) as info:
        refine(grid, torch.tensor([math.nan, math.inf, math.nan, math.inf, math.nan]))
    assert str(info.value) == "the acquisition function is not finite anywhere on the grid"


def test_grid_maximiser_matches_a_dense_search_and_spreads_a_batch() -> None:
    s, x = _observed([0.1, 0.4, 0.6, 0.9], [1.0, 0.2, 0.3, 1.2])
    model = s._fit_model(x, refit=False)
    empty = torch.empty(0, 1, dtype=torch.float64)
    with torch.no_grad():
        acqf = s._make_acquisition(model, x, 1, empty, direct_incumbent=True)
        (got,) = s._maximise_on_grid(acqf, 1, empty)[:, 0].tolist()
        fine = torch.linspace(0, 1, 4097, dtype=torch.float64)
        dense = acqf(fine.reshape(-1, 1, 1)).reshape(-1)
    # Within one grid step of the dense argmax, and no worse than the grid's own best.
    best = float(fine[int(dense.argmax())])
    assert abs(got - best) <= 1 / 256
    with torch.no_grad():
        at = float(acqf(torch.tensor([[[got]]], dtype=torch.float64)))
        grid = torch.linspace(0, 1, 257, dtype=torch.float64)
        assert at >= float(acqf(grid.reshape(-1, 1, 1)).max()) - 1e-9
        batch = s._make_acquisition(model, x, 3, empty, direct_incumbent=True)
        pts = s._maximise_on_grid(batch, 3, empty)
    assert pts.dtype == torch.float64
    assert pts.shape == (3, 1) and pts[0, 0] == pytest.approx(got, abs=1 / 256)
    # Greedy with the chosen points pending: three distinct points.
    assert min(abs(a - b) for a, b in itertools.combinations(pts[:, 0].tolist(), 2)) > 1e-3


def test_acquisition_kinds_and_incumbent() -> None:
    s, x = _observed([0.1, 0.4, 0.6, 0.9], [1.0, 0.2, 0.3, 1.2])
    model = s._fit_model(x, refit=False)
    empty = torch.empty(0, 1, dtype=torch.float64)
    pend = torch.tensor([[0.5]], dtype=torch.float64)
    with torch.no_grad():
        want = float(model.posterior(x).mean.max())
    a = s._make_acquisition(model, x, 1, empty)
    # One point, nothing pending: botorch's analytic LogEI on the cached posterior.
    assert isinstance(a, gp_module.LogExpectedImprovement)
    assert type(a).__name__ == "DirectLogExpectedImprovement"
    assert float(a.best_f) == pytest.approx(want, abs=1e-9)
    a = s._make_acquisition(model, x, 1, empty, direct_incumbent=True)
    assert type(a).__name__ == "DirectLogExpectedImprovement"
    assert float(a.best_f) == pytest.approx(want, abs=1e-9)
    a = s._make_acquisition(model, x, 2, pend)
    assert type(a).__name__ == "qLogExpectedImprovement"
    assert float(a.best_f) == pytest.approx(want) and torch.equal(a.X_pending, pend)
    assert type(s._make_acquisition(model, x, 1, pend)).__name__ == "qLogExpectedImprovement"
    assert s._make_acquisition(model, x, 2, empty).X_pending is None
    u, _ = _observed([0.1, 0.4], [1.0, 0.2], acquisition="ucb", beta=4.0)
    a = u._make_acquisition(model, x, 1, empty)
    assert isinstance(a, gp_module.UpperConfidenceBound)
    assert type(a).__name__ == "DirectUpperConfidenceBound" and float(a.beta) == 4.0
    a = u._make_acquisition(model, x, 1, pend)
    assert type(a).__name__ == "qUpperConfidenceBound" and torch.equal(a.X_pending, pend)
    # beta is sqrt'd by the acquisition: UCB = mean + sqrt(4) * std.
    with torch.no_grad():
        post = model.posterior(torch.tensor([[0.25]], dtype=torch.float64))
        want_ucb = float(post.mean) + 2.0 * float(post.variance.sqrt())
        assert float(
            u._make_acquisition(model, x, 1, empty)(torch.tensor([[[0.25]]]).double())
        ) == (pytest.approx(want_ucb, rel=1e-6))
    a = u._make_acquisition(model, x, 2, empty)
    assert type(a).__name__ == "qUpperConfidenceBound" and a.X_pending is None


def test_fixed_noise_variances_by_hand() -> None:
    s = _gp([Param("x", 0.0, 1.0)])
    values = [1.0, 3.0, 2.0, math.nan]
    for x, v, noise in zip([0.1, 0.4, 0.6, 0.9], values, [0.5, None, 0.0, 0.3]):
        s.observe({"x": x}, v, noise=noise)
    x = s.configs_to_unit([c for c, _ in s.observations])
    model = s._fit_model(x, refit=False)
    # The failure carries the penalty 3 + max(1, 2) = 5; Var of (1, 3, 2, 5), unbiased.
    var = float(np.var([1.0, 3.0, 2.0, 5.0], ddof=1))
    # Standardize divides the noise variances by the outcome variance.
    want = [0.25 / var, 1e-4, 1e-6, 1e-4]
    assert model.likelihood.noise.reshape(-1).tolist() == pytest.approx(want, rel=1e-9)
    assert type(model.likelihood).__name__ == "FixedNoiseGaussianLikelihood"
    assert model.train_targets.tolist() == pytest.approx(
        [-(v - 2.75) / math.sqrt(var) for v in [1.0, 3.0, 2.0, 5.0]], rel=1e-9
    )
    # A noise above the floor in absolute terms but below it relative to Var(y) is raised.
    t = _gp([Param("x", 0.0, 1.0)])
    for xv, v, noise in ((0.1, 0.0, 1e-4), (0.9, 100.0, None)):
        t.observe({"x": xv}, v, noise=noise)
    m = t._fit_model(t.configs_to_unit([c for c, _ in t.observations]), refit=False)
    assert m.likelihood.noise.reshape(-1).tolist() == pytest.approx([1e-6, 1e-4], rel=1e-9)
    # Equal values: no variance, the variances are taken absolute (scale 1).
    e = _gp([Param("x", 0.0, 1.0)])
    e.observe({"x": 0.2}, 1.0, noise=0.1)
    e.observe({"x": 0.8}, 1.0)
    m = e._fit_model(e.configs_to_unit([c for c, _ in e.observations]), refit=False)
    assert type(m.likelihood).__name__ == "FixedNoiseGaussianLikelihood"
    assert m.likelihood.noise.reshape(-1).tolist() == pytest.approx([0.01, 1e-4], rel=1e-6)
    # Var(y) = 0.125 < 1 scales the default too: 1e-4 * 0.125, i.e. 1e-4 standardised.
    f = _gp([Param("x", 0.0, 1.0)])
    f.observe({"x": 0.2}, 1.0, noise=0.1)
    f.observe({"x": 0.8}, 1.5)
    m = f._fit_model(f.configs_to_unit([c for c, _ in f.observations]), refit=False)
    assert m.likelihood.noise.reshape(-1).tolist() == pytest.approx([0.08, 1e-4], rel=1e-6)
    n = _gp([Param("x", 0.0, 1.0)])
    n.observe({"x": 0.2}, 1.0)
    n.observe({"x": 0.8}, 2.0)
    m = n._fit_model(n.configs_to_unit([c for c, _ in n.observations]), refit=False)
    assert type(m.likelihood).__name__ == "GaussianLikelihood"


def test_fit_options_and_iteration_cap_reach_the_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    gp_module._load_gp_libs()
    seen: list[dict] = []
    monkeypatch.setattr(gp_module, "fit_gpytorch_mll", lambda mll, **kw: seen.append(kw))
    for fit_options, maxiter, want in [
        (None, None, {}),
        (None, 5, {"optimizer_kwargs": {"options": {"maxiter": 5}}}),
        ({"maxiter": 3}, 5, {"optimizer_kwargs": {"options": {"maxiter": 3}}}),
        ({"maxiter": 30}, 5, {"optimizer_kwargs": {"options": {"maxiter": 5}}}),
        ({"ftol": 0.1}, None, {"optimizer_kwargs": {"options": {"ftol": 0.1}}}),
        ({"ftol": 0.1}, 4, {"optimizer_kwargs": {"options": {"ftol": 0.1, "maxiter": 4}}}),
    ]:
        s, x = _observed([0.2, 0.7], [1.0, 2.0], fit_options=fit_options)
        seen.clear()
        s._fit_model(x, maxiter=maxiter)
        assert seen == [want]
        assert s.fit_options == fit_options  # the cap does not stick
    seen.clear()
    s._fit_model(x, refit=False)
    assert seen == []


def test_hyperparameters_load_only_when_name_size_and_values_fit() -> None:
    s, x = _observed([0.2, 0.7, 0.5], [1.0, 2.0, 0.5])
    base = s._fit_model(x, refit=False)
    names = dict(base.named_parameters())
    ls = "covar_module.base_kernel.raw_lengthscale"
    os_ = "covar_module.raw_outputscale"
    mean = "mean_module.raw_constant"
    assert {ls, os_, mean} <= set(names)
    default = {n: p.detach().reshape(-1).tolist() for n, p in names.items()}
    # The constructor refuses such an init_hyperparameters; a warm start restored from a
    # state reaches the loader unchecked, which skips what does not fit.
    init = {ls: [0.7], os_: [math.nan], mean: [1.0, 2.0], "nope": [3.0]}
    t, _ = _observed([0.2, 0.7, 0.5], [1.0, 2.0, 0.5])
    t._fit_model(x, init=init, refit=False)
    got = t.fitted_hyperparameters
    assert got[ls] == [0.7] and got[os_] == default[os_] and got[mean] == default[mean]
    assert "nope" not in got
    # An explicit init replaces init_hyperparameters.
    t, _ = _observed([0.2, 0.7, 0.5], [1.0, 2.0, 0.5], init_hyperparameters={ls: [0.7]})
    t._fit_model(x, refit=False)
    assert t.fitted_hyperparameters[ls] == [0.7]
    t._fit_model(x, init={os_: [0.25]}, refit=False)
    assert t.fitted_hyperparameters[os_] == [0.25]
    assert t.fitted_hyperparameters[ls] == default[ls]


def test_covariance_module_is_reused_when_given() -> None:
    s, x = _observed([0.2, 0.7, 0.5], [1.0, 2.0, 0.5])
    first = s._fit_model(x, refit=False)
    again = s._fit_model(x, refit=False, covar=first.covar_module)
    assert again.covar_module is first.covar_module
    kernel = first.covar_module.base_kernel
    assert kernel.nu == 2.5 and kernel.ard_num_dims == 1
    assert float(kernel.raw_lengthscale_constraint.lower_bound) == pytest.approx(1e-3)
    prior = kernel.lengthscale_prior
    assert (float(prior.concentration), float(prior.rate)) == (3.0, 6.0)
    prior = first.covar_module.outputscale_prior
    assert float(prior.concentration) == 2.0 and float(prior.rate) == pytest.approx(0.15)
    assert first.covar_module.raw_outputscale.dtype == torch.float64
    assert not first.training  # eval mode


def _record_fits(s: GPSearcher, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    real = s._fit_model

    def spy(train_x, **kw):
        calls.append({k: v for k, v in kw.items() if k != "covar"} | {"covar": kw.get("covar")})
        return real(train_x, **kw)

    monkeypatch.setattr(s, "_fit_model", spy)
    return calls


@pytest.mark.parametrize(
    ("cold_n", "fit_n", "kind"),
    [
        (2, 4, "reuse"),  # 5 - 4 < 4 new observations: keep the hyperparameters
        (5, 5, "reuse"),  # no new observation
        (1, 2, "reuse"),  # 3 new
        (1, 1, "warm"),  # 4 new: warm-started fit with few iterations
        (-6, 1, "warm"),  # 11 since the last cold fit
        (-7, 1, "cold"),  # 12 since the last cold fit: from scratch
        (3, 6, "cold"),  # fitted on more observations than there are: from scratch
        (3, 2, "cold"),  # inconsistent counters
    ],
)
def test_fast_1d_refit_schedule(
    cold_n: int, fit_n: int, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, x = _observed([0.1, 0.3, 0.5, 0.7, 0.9], [1.0, 0.5, 0.2, 0.4, 1.1])
    s._fit_model_1d(x)  # the first: cold, no warm start yet
    hypers, covar = s._warm_hypers, s._warm_covar
    assert hypers == s.fitted_hyperparameters and (s._warm_cold_n, s._warm_fit_n) == (5, 5)
    s._warm_cold_n, s._warm_fit_n = cold_n, fit_n
    calls = _record_fits(s, monkeypatch)
    model = s._fit_model_1d(x)
    (call,) = calls
    if kind == "reuse":
        assert call == {"init": hypers, "refit": False, "covar": covar}
        assert (s._warm_cold_n, s._warm_fit_n, s._warm_hypers) == (cold_n, fit_n, hypers)
    elif kind == "warm":
        assert call == {"init": hypers, "maxiter": 5, "covar": covar}
        assert (s._warm_cold_n, s._warm_fit_n) == (cold_n, 5)
    else:
        assert call == {"covar": None}
        assert (s._warm_cold_n, s._warm_fit_n) == (5, 5)
    assert s._warm_covar is model.covar_module
    if kind != "reuse":
        assert s._warm_hypers == s.fitted_hyperparameters


def test_fast_1d_first_fit_and_prior_below_fit_min_obs(monkeypatch: pytest.MonkeyPatch) -> None:
    s, x = _observed([0.1, 0.5, 0.9], [1.0, 0.2, 1.1], fit_min_obs=4)
    calls = _record_fits(s, monkeypatch)
    model = s._fit_model_1d(x)
    assert calls == [{"refit": False, "covar": None}]  # the prior model, no fit
    assert s._warm_hypers is None and s.fitted_hyperparameters is None
    s.fitted_hyperparameters = {"from": [1.0]}  # an earlier fit's are kept, not replaced
    s._fit_model_1d(x)
    assert s.fitted_hyperparameters == {"from": [1.0]}
    kernel = model.covar_module
    assert float(kernel.base_kernel.lengthscale.detach()) == pytest.approx(1 / 3)
    assert float(kernel.outputscale.detach()) == pytest.approx(1.0)
    assert float(model.mean_module.constant.detach()) == 0.0
    s.observe({"x": 0.3}, 0.6)
    x = s.configs_to_unit([c for c, _ in s.observations])
    calls.clear()
    s._fit_model_1d(x)  # 4 = fit_min_obs: a fit from scratch
    assert calls == [{"covar": None}] and (s._warm_cold_n, s._warm_fit_n) == (4, 4)


def test_gp_step_failure_clears_the_warm_start(monkeypatch: pytest.MonkeyPatch) -> None:
    s, x = _observed([0.1, 0.5, 0.9], [1.0, 0.2, 1.1])
    s._fit_model_1d(x)
    assert s._warm_hypers is not None

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("planted")

    monkeypatch.setattr(s, "_fit_model", fail)
    empty = torch.empty(0, 1, dtype=torch.float64)
    assert s._gp_candidates(1, x, empty) is None
    assert (s._warm_hypers, s._warm_fit_n, s._warm_cold_n, s._warm_covar) == (None, 0, 0, None)


def test_general_path_hands_its_settings_to_the_optimiser(monkeypatch: pytest.MonkeyPatch) -> None:
    gp_module._load_gp_libs()
    seen: list[dict] = []
    real = gp_module.optimize_acqf

    def spy(acqf, **kw):
        seen.append({**kw, "acqf": type(acqf).__name__})
        return real(acqf, **kw)

    monkeypatch.setattr(gp_module, "optimize_acqf", spy)
    s = _gp([LIN, LOG], num_restarts=2, raw_samples=5)
    for xv, lr, v in ((0.0, 1e-3, 1.0), (1.0, 1e-2, 2.0), (-1.0, 1e-1, 0.5)):
        s.observe({"x": xv, "lr": lr}, v)
    x = s.configs_to_unit([c for c, _ in s.observations])
    out = s._gp_candidates(2, x, torch.empty(0, 2, dtype=torch.float64))
    assert out.shape == (2, 2) and out.dtype == torch.float64
    (kw,) = seen
    assert kw["q"] == 2 and kw["num_restarts"] == 2 and kw["raw_samples"] == 5
    assert kw["sequential"] is True
    assert kw["bounds"].tolist() == [[0.0, 0.0], [1.0, 1.0]]
    seen.clear()
    s._gp_candidates(1, x, torch.empty(0, 2, dtype=torch.float64))
    assert seen[0]["q"] == 1 and seen[0]["sequential"] is False
    assert kw["acqf"] == "qLogExpectedImprovement"
    assert seen[0]["acqf"] == "DirectLogExpectedImprovement"  # analytic for one point
    # In 1-D without the fast path the optimiser runs too.
    one = _gp([LIN], fast_1d=False)
    one.observe({"x": 0.0}, 1.0)
    one.observe({"x": 1.0}, 2.0)
    seen.clear()
    one._gp_candidates(1, one.configs_to_unit([c for c, _ in one.observations]), empty_1d())
    assert len(seen) == 1


def empty_1d() -> torch.Tensor:
    return torch.empty(0, 1, dtype=torch.float64)


def test_gp_state_dict_carries_the_warm_start() -> None:
    s, _ = _observed([0.1, 0.5, 0.9], [1.0, 0.2, 1.1])
    assert s.state_dict()["gp_warm_start"] is None
    s._warm_hypers, s._warm_fit_n, s._warm_cold_n = {"a": [1.0, 2.0]}, 3, 2
    state = s.state_dict()
    assert state["gp_warm_start"] == {"hypers": {"a": [1.0, 2.0]}, "fit_n": 3, "cold_n": 2}
    state["gp_warm_start"]["hypers"]["a"].append(9.0)
    assert s._warm_hypers == {"a": [1.0, 2.0]}  # a copy
    t, _ = _observed([], [])
    t._warm_covar = object()  # type: ignore[assignment]
    t.load_state_dict(
        {**state, "gp_warm_start": {"hypers": {3: (1, 2)}, "fit_n": 3.0, "cold_n": 2}}
    )
    assert (t._warm_hypers, t._warm_fit_n, t._warm_cold_n) == ({"3": [1.0, 2.0]}, 3, 2)
    assert t._warm_covar is None and len(t) == 3
    for bad in ({"hypers": 1.0}, {"hypers": {}, "fit_n": 1}, {"fit_n": 1, "cold_n": 1}):
        with pytest.raises(StateError, match=r"^state gp_warm_start is not valid: "):
            t.load_state_dict({**state, "gp_warm_start": bad})
    assert t._warm_fit_n == 3  # unchanged by the refused states
    t.load_state_dict({k: v for k, v in state.items() if k != "gp_warm_start"})
    assert (t._warm_hypers, t._warm_fit_n, t._warm_cold_n) == (None, 0, 0)
    with pytest.raises(StateError, match="state must be a mapping, got list"):
        t.load_state_dict([])  # type: ignore[arg-type]


@pytest.mark.parametrize("change", ["reset", "set_bounds", "reseed_rng"])
def test_gp_warm_start_is_dropped_when_it_no_longer_applies(change: str) -> None:
    s, _ = _observed([0.1, 0.5], [1.0, 0.2])
    s._warm_hypers, s._warm_fit_n, s._warm_cold_n = {"a": [1.0]}, 2, 2
    s._warm_covar = object()  # type: ignore[assignment]
    {
        "reset": s.reset,
        "set_bounds": lambda: s.set_bounds("x", 0, 2),
        "reseed_rng": lambda: s.reseed_rng(4),
    }[change]()
    assert (s._warm_hypers, s._warm_fit_n, s._warm_cold_n, s._warm_covar) == (None, 0, 0, None)
    assert len(s) == (0 if change == "reset" else 2)


def test_single_thread_block_restores_the_count_even_on_error() -> None:
    # No tensor work runs while two threads are set: in a forked process (mutmut's
    # workers) an OpenMP region would wait on the parent's pool threads forever.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with gp_module._single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError), gp_module._single_thread():
            raise KeyError
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        with gp_module._single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_gp_libraries_load_on_attribute_access() -> None:
    assert gp_module.__getattr__("GammaPrior").__name__ == "GammaPrior"
    with pytest.raises(AttributeError) as info:
        gp_module.__getattr__("no_such_name")
    assert str(info.value) == "module 'autolr.searchers._gp' has no attribute 'no_such_name'"


def test_fast_1d_single_suggestion_uses_analytic_logei(monkeypatch: pytest.MonkeyPatch) -> None:
    s, x = _observed([0.1, 0.5, 0.9], [1.0, 0.2, 1.1])
    seen: list[str] = []
    real = s._maximise_on_grid

    def spy(acqf, n, pending):
        seen.append(type(acqf).__name__)
        return real(acqf, n, pending)

    monkeypatch.setattr(s, "_maximise_on_grid", spy)
    s._gp_candidates(1, x, torch.empty(0, 1, dtype=torch.float64))
    s._gp_candidates(2, x, torch.empty(0, 1, dtype=torch.float64))
    assert seen == ["DirectLogExpectedImprovement", "qLogExpectedImprovement"]
