"""The tuner contract suite: what every autolr tuner promises, as pytest tests.

A tuner passes the contract when

1. its ``state_dict()`` carries ``version`` and ``kind``, survives ``torch.save`` +
   ``torch.load(..., weights_only=True)`` and loads into a fresh tuner, which then continues
   exactly like the original;
2. a run checkpointed at any step (mid-stage, mid-search) and resumed in a fresh setup (new
   model, optimizer and tuner, states and RNG restored) ends bit for bit where the
   uninterrupted run ends: the same LRs and the same weights at every step;
3. a NaN or infinite input (loss, gradient, client reply) never leaves non-finite weights or
   LRs behind and never escapes as a raw torch error: the tuner raises an
   :class:`~autolr.AutoLRError`, or warns and recovers;
4. a bad configuration raises an :class:`~autolr.AutoLRError` at construction, naming the
   argument;
5. a state_dict of something else (another tuner, a torch optimizer, a module) or of an unknown
   ``version`` raises :class:`~autolr.StateError` and leaves the tuner as it was.

Use it the way Optuna's ``optuna.testing.pytest_samplers`` is used: write a :class:`Harness`
for your tuner and subclass :class:`TunerContract` with a ``harness`` fixture::

    from autolr.testing import Harness, TunerContract

    class MyHarness(Harness):
        def __init__(self) -> None:
            torch.manual_seed(0)
            self.model = torch.nn.Linear(4, 1)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
            self.tuner = MyTuner(self.model, self.opt)
        def step(self, t, corrupt=None): ...          # one step of a user's loop
        def observe(self): ...                        # LRs and weights, compared bit for bit
        @classmethod
        def bad_configs(cls): ...                     # (argument, builder) pairs

    class TestMyTuner(TunerContract):
        @pytest.fixture
        def harness(self):
            return MyHarness
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
import torch
from torch import nn

from .._errors import AutoLRError, StateError
from .._snapshot import capture_rng_state, restore_rng_state

__all__ = ["Harness", "TunerContract", "canonical", "roundtrip"]


def roundtrip(obj: Any) -> Any:
    """``obj`` after ``torch.save`` and ``torch.load(..., weights_only=True)``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def canonical(x: Any) -> Any:
    """A comparable form of a state_dict: tensors as dtype, shape and values, every float by
    its exact ``repr`` (so NaN equals NaN, and 0.1 differs from 0.1 + 1e-17)."""
    if isinstance(x, dict):
        return sorted((str(k), canonical(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return [canonical(v) for v in x]
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), tuple(x.shape), repr(x.detach().cpu().tolist()))
    if isinstance(x, float):
        return repr(x)
    return x


def _flat(values: Iterable[Any]) -> torch.Tensor:
    """Every number in ``values`` (tensors, floats) as one float64 vector."""
    parts = [
        v.detach().to("cpu", torch.float64).reshape(-1)
        if isinstance(v, torch.Tensor)
        else torch.tensor([float(v)], dtype=torch.float64)
        for v in values
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


class Harness:
    """A tiny deterministic training run driven by one tuner; subclass it per tuner.

    ``__init__`` builds the model, optimizer and tuner (seeding what it needs so that two
    harnesses start equal) and stores the tuner as :attr:`tuner`. The contract builds a fresh
    harness for every run and for every resume, as a new process would.

    Attributes:
        tuner: The object under test (has ``state_dict``/``load_state_dict``).
        steps: Length of the runs the contract compares.
        cuts: Steps after which the resume test checkpoints; put one mid-stage/mid-search.
        nonfinite_at: Steps whose input the non-finite test corrupts.
    """

    tuner: Any
    steps: int = 24
    cuts: Sequence[int] = (10,)
    nonfinite_at: Sequence[int] = (5,)

    def step(self, t: int, corrupt: float | None = None) -> None:
        """Run step ``t`` of the user's loop, with batches drawn from the global torch RNG.

        With ``corrupt`` (``nan`` or ``inf``), feed the tuner that non-finite value where its
        input comes from: the loss and the gradients, a client's reply, a broadcast update.
        """
        raise NotImplementedError

    def observe(self) -> list[Any]:
        """LRs, hyperparameters and weights after a step; two equal runs observe equal values."""
        raise NotImplementedError

    def finite(self) -> list[Any]:
        """Values that must stay finite whatever the input (default: :meth:`observe`)."""
        return self.observe()

    def checkpoint(self) -> dict[str, Any]:
        """Everything a resume needs besides the RNG: the tuner's state under ``"tuner"``, and
        the model's and optimizer's where the tuner does not own them."""
        return {"tuner": self.tuner.state_dict()}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load what :meth:`checkpoint` returned (after a ``weights_only`` round trip)."""
        self.tuner.load_state_dict(ckpt["tuner"])

    @classmethod
    def bad_configs(cls) -> Iterable[tuple[str, Callable[[], Any]]]:
        """``(argument, build)`` pairs: ``build()`` must raise an AutoLRError naming
        ``argument`` (a regular expression searched in the message)."""
        return ()

    def foreign_states(self) -> list[Any]:
        """States that are not this tuner's: other tuners', a torch optimizer's, a module's."""
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        own = self.tuner.state_dict()
        mine = own.get("kind")
        states: list[Any] = [model.state_dict(), opt.state_dict(), None, [1, 2]]
        # every key in place but another class's name: only the "kind" check can refuse it
        states.append({**own, "kind": f"Not{mine}"})
        for kind, make in _OTHER_TUNERS.items():
            if kind != mine:
                states.append(make())
        return states


def _hd_state() -> dict[str, Any]:
    from .._hypergrad import HypergradientLR

    model = nn.Linear(3, 1)
    return HypergradientLR(torch.optim.SGD(model.parameters(), lr=0.1)).state_dict()


def _client_state() -> dict[str, Any]:
    from ..federated import FedHyperClient

    model = nn.Linear(3, 1)
    return FedHyperClient(torch.optim.SGD(model.parameters(), lr=0.1)).state_dict()


# Cheap states of other tuners (no GP, no data): a tuner must refuse each one that is not its own.
_OTHER_TUNERS: dict[str, Callable[[], dict[str, Any]]] = {
    "HypergradientLR": _hd_state,
    "FedHyperClient": _client_state,
}

HarnessFactory = type[Harness]


def _run(h: Harness, start: int, stop: int) -> list[torch.Tensor]:
    out = []
    for t in range(start, stop):
        h.step(t)
        out.append(_flat(h.observe()))
    return out


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor], what: str) -> None:
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        if not (g.shape == w.shape and torch.equal(g.isnan(), w.isnan())) or not torch.equal(
            g.nan_to_num(), w.nan_to_num()
        ):
            diff = (g - w).abs().nan_to_num(math.inf).max().item() if g.shape == w.shape else None
            raise AssertionError(f"{what}: compared step {i} differs (max |diff| {diff})\n{g}\n{w}")


class TunerContract:
    """The contract tests; subclass with a ``harness`` fixture returning a harness factory."""

    @pytest.fixture
    def harness(self) -> HarnessFactory:
        raise NotImplementedError("override the `harness` fixture: return a Harness subclass")

    # ------------------------------------------------------------------ state round trip
    def test_state_dict_names_its_kind_and_version(self, harness: HarnessFactory) -> None:
        h = harness()
        state = h.tuner.state_dict()
        assert isinstance(state, dict)
        version = state.get("version")
        assert isinstance(version, int) and not isinstance(version, bool) and version >= 1, (
            f"state_dict()['version'] must be an int >= 1, got {version!r}"
        )
        assert state.get("kind") == type(h.tuner).__name__, (
            f"state_dict()['kind'] must be {type(h.tuner).__name__!r}, got {state.get('kind')!r}"
        )

    def test_state_round_trip_weights_only(self, harness: HarnessFactory) -> None:
        a = harness()
        torch.manual_seed(1234)
        _run(a, 0, a.cuts[0])
        saved = a.tuner.state_dict()
        ckpt = roundtrip(a.checkpoint())
        b = harness()
        b.restore(ckpt)
        # Loading is faithful: the fresh tuner saves what it loaded.
        assert canonical(b.tuner.state_dict()) == canonical(saved)
        torch.manual_seed(99)
        want = _run(a, a.cuts[0], a.steps)
        torch.manual_seed(99)
        got = _run(b, a.cuts[0], a.steps)
        _assert_same(got, want, "continuation after a weights_only round trip")

    # ------------------------------------------------------------------ resume
    def test_resume_equals_uninterrupted(self, harness: HarnessFactory) -> None:
        ref = harness()
        torch.manual_seed(1234)
        want = _run(ref, 0, ref.steps)
        for cut in ref.cuts:
            first = harness()
            torch.manual_seed(1234)
            got = _run(first, 0, cut)
            ckpt = roundtrip({"run": first.checkpoint(), "rng": capture_rng_state()})
            del first
            torch.manual_seed(4321)  # a fresh process: unrelated RNG until restored
            second = harness()
            second.restore(ckpt["run"])
            restore_rng_state(ckpt["rng"])
            got += _run(second, cut, ref.steps)
            _assert_same(got, want, f"run resumed after step {cut} vs uninterrupted")

    # ------------------------------------------------------------------ non-finite input
    @pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
    def test_nonfinite_input_leaves_finite_state(
        self, harness: HarnessFactory, value: float
    ) -> None:
        h = harness()
        torch.manual_seed(1234)
        bad = set(h.nonfinite_at)
        for t in range(h.steps):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # one warning per misuse is allowed
                    h.step(t, value if t in bad else None)
            except AutoLRError:
                continue  # a clear autolr error is an allowed answer; anything else escapes
            values = _flat(h.finite())
            assert bool(values.isfinite().all()), (
                f"non-finite values after step {t} (input corrupted at {sorted(bad)}): {values}"
            )

    # ------------------------------------------------------------------ bad configuration
    def test_bad_configuration_raises_autolr_error(self, harness: HarnessFactory) -> None:
        configs = list(harness.bad_configs())
        assert configs, "the harness lists no bad configurations"
        for argument, build in configs:
            try:
                build()
            except AutoLRError as err:
                assert re.search(argument, str(err)), f"{err!r} does not name {argument!r}"
            else:
                pytest.fail(f"a bad {argument!r} built without an AutoLRError")

    # ------------------------------------------------------------------ refused states
    def test_foreign_state_raises_state_error(self, harness: HarnessFactory) -> None:
        h = harness()
        torch.manual_seed(1234)
        _run(h, 0, 2)
        before = canonical(h.tuner.state_dict())
        for state in h.foreign_states():
            with pytest.raises(StateError):
                h.tuner.load_state_dict(state)
            with pytest.raises(StateError):
                h.tuner.load_state_dict(roundtrip(state))
        assert canonical(h.tuner.state_dict()) == before, "a refused load changed the tuner"

    @pytest.mark.parametrize("version", [999, 0, "1"], ids=["999", "0", "str"])
    def test_unknown_version_raises_state_error(
        self, harness: HarnessFactory, version: Any
    ) -> None:
        h = harness()
        torch.manual_seed(1234)
        _run(h, 0, 2)
        state = h.tuner.state_dict()
        before = canonical(state)
        with pytest.raises(StateError, match="version"):
            h.tuner.load_state_dict({**state, "version": version})
        assert canonical(h.tuner.state_dict()) == before, "a refused load changed the tuner"
