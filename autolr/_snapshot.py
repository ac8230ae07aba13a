"""In-memory snapshots of a training state: model, optimizer, registered extras and RNGs.

AutoLRS restores the stage-start state once per candidate, so restores must be cheap (no disk
round trip, unlike the original code's ``torch.save`` per stage) and *bitwise* exact, including
momentum buffers and the random streams that drive dropout and data sampling.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ._errors import ConfigError, ConfigTypeError, StateError
from ._statecheck import _state_optimizer
from ._validate import check_instance

__all__ = [
    "Snapshot",
    "Stateful",
    "capture_rng_state",
    "restore_rng_state",
    "state_finite",
    "tensors_finite",
]


@runtime_checkable
class Stateful(Protocol):
    """Anything with ``state_dict()`` / ``load_state_dict()`` (GradScaler, LR scheduler, EMA...)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Rebuild ``obj`` with every tensor replaced by ``fn(tensor)`` (containers copied)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_map_tensors(v, fn) for v in obj)
    return obj


def _iter_tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _iter_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _iter_tensors(v)


def _available(device: torch.device) -> torch.device:
    """``device`` if this process can use it, else the CPU."""
    if device.type == "cpu" or device.type == "meta":
        return device
    backend = getattr(torch, device.type, None)
    ok = backend is not None and getattr(backend, "is_available", lambda: False)()
    if ok and device.index is not None:
        ok = device.index < backend.device_count()
    return device if ok else torch.device("cpu")


def capture_rng_state() -> dict[str, Any]:
    """Return the python, numpy, torch CPU and CUDA RNG states as plain values and tensors.

    The result survives ``torch.load(..., weights_only=True)`` (numpy's key becomes a tensor).
    """
    return _RngState.capture().plain()


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`.

    The whole state is checked first: a malformed one changes no generator.

    Raises:
        StateError: If ``state`` is not what :func:`capture_rng_state` returns (or its
            numpy state is of another bit generator than numpy's global one).
    """
    try:
        rng = _RngState.from_plain(state)
    except StateError as exc:
        raise StateError(f"restore_rng_state: {exc}") from None
    rng.restore()


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for every pair, as one fused call where torch has it.

    ``torch._foreach_copy_`` is private API (present from torch 2.1 to at least 2.14): a
    torch without it gets the plain loop, the same copies one call at a time.
    """
    fused = getattr(torch, "_foreach_copy_", None)
    if fused is not None:
        fused(dst, src)
        return
    for d, s in zip(dst, src):
        d.copy_(s)


class _RngState:
    """The RNG states as the libraries give them, restored without conversion.

    Snapshots and the tuner's validation pass capture and restore these on every candidate
    switch; the plain form (:func:`capture_rng_state`) is built only for a checkpoint, as
    converting both ways cost about 0.2 ms a switch.
    """

    __slots__ = ("cuda", "numpy", "python", "torch")

    def __init__(self, python: Any, numpy: Any, torch_: torch.Tensor, cuda: Any) -> None:
        self.python, self.numpy, self.torch, self.cuda = python, numpy, torch_, cuda

    @classmethod
    def capture(cls) -> _RngState:
        # Only touch CUDA when the user already initialised it: querying the state would
        # otherwise create a CUDA context on machines that never use the GPU.
        cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = list(torch.cuda.get_rng_state_all())
        return cls(
            random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state(), cuda
        )

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)

    def nbytes(self) -> int:
        """Bytes of the torch, CUDA and numpy states (python's 625 ints not counted)."""
        cuda = sum(t.numel() * t.element_size() for t in self.cuda or ())
        return (
            self.torch.numel() * self.torch.element_size()
            + self.numpy["state"]["key"].nbytes
            + cuda
        )

    def plain(self) -> dict[str, Any]:
        """The form of :func:`capture_rng_state`."""
        np_state = self.numpy
        state: dict[str, Any] = {
            "python": _py_state_to_plain(self.python),
            "numpy": {
                "bit_generator": np_state["bit_generator"],
                "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                "pos": int(np_state["state"]["pos"]),
                "has_gauss": int(np_state["has_gauss"]),
                "gauss": float(np_state["gauss"]),
            },
            "torch": self.torch.clone(),
        }
        if self.cuda is not None:
            state["cuda"] = [t.clone() for t in self.cuda]
        return state

    @classmethod
    def from_plain(cls, state: Any) -> _RngState:
        """The states of a :meth:`plain` form, checked so that :meth:`restore` cannot fail.

        Every entry is checked (and set on a throwaway generator of its library) before
        anything is built; a problem raises :class:`StateError` naming the entry. CUDA
        states of devices this machine lacks are dropped (as tensors saved on a missing
        device load to the CPU).
        """
        if not isinstance(state, Mapping):
            raise StateError(f"the RNG state must be a dict, got {_describe(state)}")
        missing = [k for k in ("python", "numpy", "torch") if k not in state]
        if missing:
            raise StateError(f"the RNG state lacks {missing}")
        python = _py_state_from_plain(state["python"])
        numpy = _np_state_from_plain(state["numpy"])
        torch_ = _torch_state_from_plain(state["torch"])
        cuda = _cuda_states_from_plain(state["cuda"]) if "cuda" in state else None
        return cls(python, numpy, torch_, cuda)


# The plain forms' sizes: random.getstate()'s 624 MT19937 words and position; numpy's
# MT19937 key of 624 uint32 words and its position.
_MT_WORDS = 624


def _py_state_to_plain(st: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = st
    return [int(version), list(internal), gauss]


def _py_state_from_plain(st: Any) -> tuple[Any, ...]:
    """``random.getstate()``'s tuple from its plain form, or a StateError."""
    want = "[version, 625 ints, gauss] as random.getstate() gives"
    if not isinstance(st, (list, tuple)) or len(st) != 3:
        raise StateError(f"its 'python' state must be {want}, got {_short(st)}")
    version, internal, gauss = st
    words = internal if isinstance(internal, (list, tuple)) else ()
    ok = (
        _int(version)
        and len(words) == _MT_WORDS + 1
        and all(_int(w) and 0 <= w < 2**32 for w in words[:-1])
        and _int(words[-1])
        and 0 <= words[-1] <= _MT_WORDS
        and (gauss is None or (_real(gauss) and math.isfinite(gauss)))
    )
    if not ok:
        raise StateError(f"its 'python' state must be {want}, got {_short(st)}")
    out = (int(version), tuple(int(w) for w in words), None if gauss is None else float(gauss))
    try:  # what restore does, on a generator of its own
        random.Random().setstate(out)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StateError(f"its 'python' state is not a random.getstate() state: {exc}") from None
    return out


def _np_state_from_plain(st: Any) -> dict[str, Any]:
    """``np.random.get_state(legacy=False)``'s dict from its plain form, or a StateError."""
    if not isinstance(st, Mapping):
        raise StateError(f"its 'numpy' state must be a dict, got {_describe(st)}")
    missing = [k for k in ("bit_generator", "key", "pos", "has_gauss", "gauss") if k not in st]
    if missing:
        raise StateError(f"its 'numpy' state lacks {missing}")
    live = np.random.get_state(legacy=False)["bit_generator"]
    if st["bit_generator"] != live or live != "MT19937":
        raise StateError(
            f"its 'numpy' state is of the {_short(st['bit_generator'])} bit generator; "
            f"numpy's global RNG here uses {live!r} (a Snapshot keeps MT19937 states)"
        )
    key, pos = st["key"], st["pos"]
    if not (
        isinstance(key, torch.Tensor)
        and key.shape == (_MT_WORDS,)
        and not key.is_floating_point()
        and not key.is_complex()
        and key.dtype != torch.bool
    ):
        raise StateError(
            f"its 'numpy' key must be an integer tensor of shape ({_MT_WORDS},), got "
            f"{_describe(key)}"
        )
    words = _cpu_copy(key, "its 'numpy' key").to(torch.int64).numpy()
    if words.min() < 0 or words.max() >= 2**32:
        raise StateError("its 'numpy' key holds values outside [0, 2**32)")
    if not (_int(pos) and 0 <= pos <= _MT_WORDS):
        raise StateError(f"its 'numpy' pos must be an int in [0, {_MT_WORDS}], got {_short(pos)}")
    has_gauss, gauss = st["has_gauss"], st["gauss"]
    if not (_int(has_gauss) and has_gauss in (0, 1)):
        raise StateError(f"its 'numpy' has_gauss must be 0 or 1, got {_short(has_gauss)}")
    if not (_real(gauss) and math.isfinite(gauss)):
        raise StateError(f"its 'numpy' gauss must be a finite float, got {_short(gauss)}")
    out = {
        "bit_generator": live,
        "state": {"key": words.astype(np.uint32), "pos": int(pos)},
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    try:  # what restore does, on a generator of its own
        np.random.RandomState().set_state(out)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise StateError(f"its 'numpy' state is not an MT19937 state: {exc}") from None
    return out


def _torch_state_from_plain(t: Any) -> torch.Tensor:
    """A copy of the torch CPU generator state ``t`` (a uint8 tensor), or a StateError."""
    if not isinstance(t, torch.Tensor):
        raise StateError(f"its 'torch' state must be a tensor, got {_describe(t)}")
    out = _cpu_copy(t, "its 'torch' state")
    try:  # what restore does, on a generator of its own
        torch.Generator().set_state(out)
    except (TypeError, RuntimeError) as exc:
        live = torch.get_rng_state()
        raise StateError(
            f"its 'torch' state ({_describe(t)}) is not a torch CPU generator state (this "
            f"torch's is {_describe(live)}): {str(exc).splitlines()[0]}"
        ) from None
    return out


# Sizes CUDA generators accept: seed and philox offset (8 bytes each), or the seed alone.
_CUDA_STATE_SIZES = (16, 8)


def _cuda_states_from_plain(states: Any) -> list[torch.Tensor]:
    """Copies of the CUDA generator states ``states``, or a StateError.

    Where CUDA is available, states beyond the devices present are dropped:
    ``torch.cuda.set_rng_state_all`` would fail on the first of them (or, before CUDA is
    initialised, at its initialisation).
    """
    if not isinstance(states, (list, tuple)):
        raise StateError(f"its 'cuda' states must be a list of tensors, got {_describe(states)}")
    out = []
    for i, t in enumerate(states):
        if not (
            isinstance(t, torch.Tensor)
            and t.dtype == torch.uint8
            and t.dim() == 1
            and t.numel() in _CUDA_STATE_SIZES
        ):
            raise StateError(
                f"its 'cuda' state {i} must be a uint8 tensor of {_CUDA_STATE_SIZES[0]} (or "
                f"{_CUDA_STATE_SIZES[1]}) bytes, as torch.cuda.get_rng_state() gives, got "
                f"{_describe(t)}"
            )
        out.append(_cpu_copy(t, f"its 'cuda' state {i}"))
    if torch.cuda.is_available():
        out = out[: torch.cuda.device_count()]
    return out


def _cpu_copy(t: torch.Tensor, what: str) -> torch.Tensor:
    """A CPU copy of ``t`` (one the caller's state no longer shares), or a StateError."""
    try:
        return t.detach().to("cpu", copy=True)
    except (RuntimeError, NotImplementedError, TypeError) as exc:  # a meta tensor, ...
        raise StateError(f"{what} cannot be copied to the CPU: {exc}") from None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Snapshot:
    """In-memory copy of a training state that can be restored bitwise.

    Captures the model (parameters and buffers), the optimizer (state and param groups), any
    registered extra objects with ``state_dict``/``load_state_dict`` (``GradScaler``, LR
    scheduler, EMA, ...) and, optionally, the python/numpy/torch/CUDA RNG states. Tensors stay
    on the device they live on unless ``offload="cpu"``, in which case they are copied to host
    memory and moved back to their original device on restore.

    Args:
        model: The module whose ``state_dict`` is captured. A wrapper that holds no state
            of its own (``torch.compile``'s module, ``DistributedDataParallel``,
            ``DataParallel``) is seen through: the state is kept under the wrapped module's
            names, so a checkpoint taken with the wrapper loads without it and the other way.
        optimizer: The optimizer whose ``state_dict`` is captured.
        extras: Extra stateful objects by name.
        offload: ``None`` (keep tensors where they are) or ``"cpu"``.
        rng: Whether to capture and restore RNG states (a ``bool``).

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> snap = Snapshot(model, opt)
        >>> snap.capture()
        >>> model(torch.ones(1, 2)).sum().backward(); opt.step()
        >>> snap.restore()  # weights and momentum are back, bit for bit
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        extras: Mapping[str, Stateful] | None = None,
        offload: str | None = None,
        rng: bool = True,
    ) -> None:
        check_instance("model", model, nn.Module)
        if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "param_groups"):
            raise ConfigTypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        check_instance("rng", rng, bool)
        if offload not in (None, "cpu"):
            raise ConfigError(f"offload must be None or 'cpu', got {offload!r}")
        self.model = model
        # The module whose state_dict is kept: names without the wrappers' prefixes.
        self._module = _inner_module(model)
        self.optimizer = optimizer
        self.extras: dict[str, Stateful] = {}
        for name, obj in (extras or {}).items():
            self.register(name, obj)
        self.offload = offload
        self.rng = rng
        self._state: dict[str, Any] | None = None
        self._rng: _RngState | None = None
        self._devices: list[torch.device] = []

    def register(self, name: str, obj: Stateful) -> None:
        """Add an extra stateful object (captured from the next :meth:`capture` on)."""
        if not isinstance(obj, Stateful):
            raise ConfigTypeError(
                f"extra {name!r} must have state_dict() and load_state_dict(), "
                f"got {type(obj).__name__}"
            )
        self.extras[name] = obj

    @property
    def empty(self) -> bool:
        """Whether nothing has been captured yet."""
        return self._state is None

    def capture(self) -> None:
        """Copy the current state into memory (replacing any earlier copy).

        A capture of the structure already held copies into the held tensors (as
        :meth:`restore` does the other way, under the same conditions).
        """
        extras = {name: obj.state_dict() for name, obj in self.extras.items()}
        if self._capture_in_place():
            # Model and optimizer copied into the held tensors, on their devices.
            self._state["extras"] = _map_tensors(extras, _copy)  # type: ignore[index]
            self._devices = [t.device for t in _iter_tensors(self._state)]
        else:
            state = {
                "model": self._module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "extras": extras,
            }
            devices: list[torch.device] = []

            def copy(t: torch.Tensor) -> torch.Tensor:
                devices.append(t.device)
                # detach + copy: the optimizer's state_dict references its live buffers,
                # which the next optimizer step would mutate in place.
                if self.offload == "cpu":
                    return t.detach().to("cpu", copy=True)
                return t.detach().clone()

            self._state = _map_tensors(state, copy)
            self._devices = devices
        self._rng = _RngState.capture() if self.rng else None

    def restore(self) -> None:
        """Load the captured state back into the live objects.

        When the model and optimizer still have the captured structure and nothing
        customises their loading, the captured tensors are copied into the live ones (the
        live tensors and parameter groups stay the same objects); otherwise the state dicts
        are loaded with ``load_state_dict``. Either way the result is the same.

        Raises:
            StateError: If nothing was captured.
        """
        if self._state is None:
            raise StateError("Snapshot.restore() called before capture()")
        if self._restore_in_place():
            extras = _map_tensors(self._state["extras"], _copy)
        else:
            devices = iter(self._devices)

            def back(t: torch.Tensor) -> torch.Tensor:
                # Always copy: load_state_dict may keep the given tensors (the optimizer
                # keeps 'step' as is), and later in-place updates must not corrupt the
                # snapshot.
                return t.to(next(devices), copy=True)

            live = _map_tensors(self._state, back)
            self._module.load_state_dict(live["model"])
            self.optimizer.load_state_dict(live["optimizer"])
            extras = live["extras"]
        for name, obj in self.extras.items():
            if name in extras:
                obj.load_state_dict(extras[name])
        if self.rng and self._rng is not None:
            self._rng.restore()

    def _restore_in_place(self) -> bool:
        """Copy the model's and optimizer's captured tensors into the live ones, if it is safe.

        What ``load_state_dict`` would leave behind, at a fraction of its Python cost (a
        candidate switch restores on every one; ~1.7 ms of charlm's 2 ms restore was the
        two ``load_state_dict`` calls). Only when the live objects have exactly the captured
        structure (the same tensors by name and parameter, shapes, dtypes and devices, the
        same group and state keys) and nothing customises saving or loading (hooks, a
        module's own ``_load_from_state_dict`` or extra state): else ``False``, with nothing
        changed, and the caller loads the state dicts.
        """
        return self._copy_in_place(to_live=True)

    def _capture_in_place(self) -> bool:
        """:meth:`_restore_in_place` the other way: copy the live tensors into the held ones."""
        return self._copy_in_place(to_live=False)

    def _copy_in_place(self, *, to_live: bool) -> bool:
        found = self._pairs()
        if found is None:
            return False
        pairs, slots = found
        live_t, held_t = [live for live, _ in pairs], [held for _, held in pairs]
        dst, src = (live_t, held_t) if to_live else (held_t, live_t)
        if dst:  # (_foreach_copy_ rejects empty lists)
            with torch.no_grad():
                _copy_all(dst, src)
        for live, held, key in slots:
            if to_live:
                live[key] = held[key]
            else:
                held[key] = live[key]
        return True

    def _pairs(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[Any]] | None:
        """The tensors and plain values to copy between live objects and snapshot, if safe."""
        if self.offload is not None or self._state is None:
            return None
        model = _model_pairs(self._module, self._state["model"])
        if model is None:
            return None
        opt = _optimizer_pairs(self.optimizer, self._state["optimizer"])
        if opt is None:
            return None
        return model + opt[0], opt[1]

    def nbytes(self) -> int:
        """Bytes held by the captured tensors."""
        if self._state is None:
            return 0
        held = sum(t.numel() * t.element_size() for t in _iter_tensors(self._state))
        return held + (0 if self._rng is None else self._rng.nbytes())

    def state_dict(self) -> dict[str, Any]:
        """The captured state (tensors on CPU) for checkpointing; ``{}`` when empty."""
        if self._state is None:
            return {}
        # Always a copy: the next capture may write into the held tensors.
        state = _map_tensors(self._state, lambda t: t.detach().to("cpu", copy=True))
        if self._rng is not None:
            state["rng"] = self._rng.plain()
        return {"state": state, "devices": [str(d) for d in self._devices]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (tensors go back to their devices on restore).

        The state is checked against this snapshot's model and optimizer first (parameter
        names, shapes and dtypes; parameter groups, their sizes and hyperparameters, as
        ``autolr``'s tuners check an optimizer state; optimizer buffers; registered extras;
        the RNG states, which must be ones this machine's generators accept); on an error
        nothing changes. RNG states of CUDA devices this machine lacks are dropped.

        Raises:
            StateError: If ``state`` is not a Snapshot state or was taken of another model
                or optimizer.
        """
        self._state, self._rng, self._devices = self._parse_state(state)

    def _parse_state(
        self, state: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, _RngState | None, list[torch.device]]:
        """The checked contents of :meth:`load_state_dict`'s ``state``; changes nothing."""
        if not isinstance(state, Mapping):
            raise StateError(f"not a Snapshot state_dict: got {type(state).__name__}")
        if not state:
            return None, None, []
        try:
            # A snapshot saved on a GPU machine stays loadable where that device is missing
            # (e.g. resuming a CUDA run's checkpoint on a CPU box): such tensors go to the CPU.
            devices = [_available(torch.device(d)) for d in state["devices"]]
            raw = state["state"]
            parts = {k: raw[k] for k in ("model", "optimizer", "extras")}
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise StateError(f"not a Snapshot state_dict: {exc!r}") from exc
        live = self._module.state_dict()
        parts["model"] = _without_wrappers(parts["model"], live)
        self._check_parts(parts, live)
        rng = None
        if "rng" in raw:
            try:
                rng = _RngState.from_plain(raw["rng"])
            except StateError as exc:
                raise StateError(f"Snapshot state_dict: invalid 'rng' entry: {exc}") from None
        count = sum(1 for _ in _iter_tensors(parts))
        if count != len(devices):
            raise StateError(
                f"Snapshot state_dict holds {count} tensors but {len(devices)} device entries"
            )
        it = iter(devices)
        keep_on_cpu = self.offload == "cpu"

        def place(t: torch.Tensor) -> torch.Tensor:
            dev = next(it)
            return t.clone() if keep_on_cpu else t.to(dev, copy=True)

        body = _map_tensors(parts, place)
        return body, rng, devices

    def _check_parts(self, parts: Mapping[str, Any], live: Mapping[str, Any]) -> None:
        """Raise StateError unless ``parts`` fits this model (``live``: its state_dict),
        optimizer and extras."""
        saved = parts["model"]
        if not isinstance(saved, Mapping):
            raise StateError("Snapshot state_dict: its 'model' entry is not a state_dict")
        missing = [k for k in live if k not in saved]
        extra = [k for k in saved if k not in live]
        if missing or extra:
            raise StateError(
                "the snapshot is of another model: "
                + "; ".join(
                    f"{what} {', '.join(repr(k) for k in keys[:5])}"
                    + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                    for what, keys in (("this model has no", extra), ("it lacks", missing))
                    if keys
                )
            )
        for name, t in live.items():
            s = saved[name]
            if isinstance(t, torch.Tensor) and (
                not isinstance(s, torch.Tensor) or s.shape != t.shape or s.dtype != t.dtype
            ):
                raise StateError(
                    f"the snapshot is of another model: {name!r} is {_describe(s)} in the "
                    f"state, {_describe(t)} in this model"
                )
        opt = parts["optimizer"]
        groups = opt.get("param_groups") if isinstance(opt, Mapping) else None
        state = opt.get("state") if isinstance(opt, Mapping) else None
        if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
            raise StateError("Snapshot state_dict: its 'optimizer' entry is not a state_dict")
        for i, g in enumerate(groups):
            ids = g.get("params") if isinstance(g, Mapping) else None
            if not isinstance(ids, (list, tuple)) or not all(_int(k) for k in ids):
                raise StateError(
                    f"Snapshot state_dict: its optimizer's param_groups[{i}] is not a "
                    f"parameter group (its 'params' must be a list of parameter ids), got "
                    f"{_short(g)}"
                )
        ids = [k for g in groups for k in g["params"]]
        if len(set(ids)) != len(ids):
            raise StateError(
                "Snapshot state_dict: its optimizer's param_groups list a parameter id twice"
            )
        live_groups = self.optimizer.param_groups
        sizes = [len(g["params"]) for g in groups]
        live_sizes = [len(g["params"]) for g in live_groups]
        if sizes != live_sizes:
            raise StateError(
                f"the snapshot is of another optimizer: its parameter groups hold {sizes} "
                f"parameters, this optimizer's {live_sizes}"
            )
        # Group keys and hyperparameter types (an Adam state in an SGD, lr="fast") and the
        # per-parameter entries SGD and Adam read unchecked at their next step.
        _state_optimizer("Snapshot", "optimizer", self.optimizer, opt)
        params = [p for g in live_groups for p in g["params"]]
        index = dict(zip((i for g in groups for i in g["params"]), params))
        names = {id(p): n for n, p in self._module.named_parameters()}
        for key, entry in state.items():
            p = index.get(key)
            if p is None:
                raise StateError(
                    f"the snapshot's optimizer state has an entry {key!r} that no parameter "
                    "group lists"
                )
            if not isinstance(entry, Mapping):
                raise StateError(
                    f"Snapshot state_dict: the optimizer state of parameter "
                    f"{names.get(id(p), key)!r} must be a dict, got {_describe(entry)}"
                )
            live_entry = self.optimizer.state.get(p, {})
            for buf, t in entry.items():
                ref = live_entry.get(buf)
                if isinstance(ref, torch.Tensor):
                    want = ref.shape  # the live buffer, whatever its layout
                elif buf in _PARAM_SHAPED:
                    want = p.shape
                else:
                    continue
                if isinstance(t, torch.Tensor) and t.shape != want:
                    raise StateError(
                        f"the snapshot is of another model: optimizer state {buf!r} of "
                        f"parameter {names.get(id(p), key)!r} has shape {tuple(t.shape)}, "
                        f"this optimizer expects {tuple(want)}"
                    )
        extras = parts["extras"]
        if not isinstance(extras, Mapping):
            raise StateError("Snapshot state_dict: its 'extras' entry is not a mapping")
        unknown = [n for n in extras if n not in self.extras]
        if unknown:
            raise StateError(
                f"the snapshot holds extras {unknown} that are not registered here (pass "
                f"extras= or register() them before load_state_dict); registered: "
                f"{sorted(self.extras)}"
            )


def _inner_module(model: nn.Module) -> nn.Module:
    """The module inside wrappers that hold no state and only prefix its ``state_dict`` keys.

    ``torch.compile``'s ``OptimizedModule`` (``_orig_mod.``), ``DistributedDataParallel`` and
    ``DataParallel`` (``module.``), nested in any order. A run usually compiles or wraps its
    model only to train; its snapshots must still fit the bare model (resuming without
    ``torch.compile``, evaluating on one process).
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif _compiled(model):
            model = model._orig_mod
        else:
            return model


def _compiled(model: nn.Module) -> bool:
    # torch._dynamo is loaded once anything was compiled: checking costs no import.
    frame = sys.modules.get("torch._dynamo.eval_frame")
    return frame is not None and isinstance(model, frame.OptimizedModule)


_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _without_wrappers(saved: Any, live: Mapping[str, Any]) -> Any:
    """``saved`` with wrapper prefixes taken off its keys where that makes them ``live``'s.

    Snapshots from before :func:`_inner_module` (autolr before 2026-12-07) kept the
    wrappers' prefixes. Only a prefix on every key is taken off, and only when the result
    is exactly this model's names; anything else is left for the check to report.
    """
    if not isinstance(saved, Mapping) or saved.keys() == live.keys():
        return saved
    keys = list(saved)
    while keys:
        prefix = next(
            (p for p in _WRAPPER_PREFIXES if all(str(k).startswith(p) for k in keys)), None
        )
        if prefix is None:
            return saved
        keys = [str(k)[len(prefix) :] for k in keys]
        if set(keys) == live.keys():
            return dict(zip(keys, saved.values()))
    return saved


# Per-parameter buffers of torch's optimizers that always have the parameter's shape.
_PARAM_SHAPED = frozenset(
    ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "acc_delta",
     "sum", "exp_inf", "grad_avg", "prev", "step_size", "ax")
)  # fmt: skip


def tensors_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether every entry of every tensor is finite (``None``s are skipped); one host sync
    per device.

    Entry by entry, never through a norm: the norm of large finite values overflows (a
    float16 gradient's norm passes 65504 long before any entry does).
    """
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if t is not None:
            by_device.setdefault(t.device, []).append(torch.isfinite(t).all())
    if not by_device:
        return True
    # One flag per device: tensors on several devices cannot be stacked together (a model
    # sharded across GPUs; Adam's ``step`` counters stay on the CPU beside CUDA weights).
    flags = [torch.stack(fs).all() for fs in by_device.values()]
    if len(flags) == 1:
        return bool(flags[0])
    return bool(torch.stack([f.cpu() for f in flags]).all())


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


# Modules whose _load_from_state_dict only adds what an older checkpoint lacks (BatchNorm's
# num_batches_tracked); a snapshot of the same module always has it.
_PLAIN_LOADERS = (
    nn.Module._load_from_state_dict,
    nn.modules.batchnorm._NormBase._load_from_state_dict,
)
_IMMUTABLE = (float, int, bool, str, type(None))


def _model_pairs(
    model: nn.Module, saved: Mapping[str, Any]
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``(live, captured)`` tensors of ``model``, or ``None`` if it loads in its own way."""
    for m in model.modules():
        kind = type(m)
        if (
            kind._load_from_state_dict not in _PLAIN_LOADERS
            or kind.get_extra_state is not nn.Module.get_extra_state
            or m._load_state_dict_pre_hooks
            or m._load_state_dict_post_hooks
            or m._state_dict_hooks
            or m._state_dict_pre_hooks
        ):
            return None
    live = model.state_dict(keep_vars=True)
    if live.keys() != saved.keys():
        return None
    pairs = []
    for name, t in live.items():
        c = saved[name]
        if not (isinstance(t, torch.Tensor) and isinstance(c, torch.Tensor) and _same_kind(t, c)):
            return None
        pairs.append((t.detach(), c))
    return pairs


def _optimizer_pairs(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[dict, dict, Any]]] | None:
    """``(live, captured)`` tensors of ``optimizer``'s state and groups, and the slots
    ``(live dict, captured dict, key)`` of their plain values; ``None`` if the structures
    differ or a hook customises saving or loading."""
    for name in (
        "_optimizer_load_state_dict_pre_hooks",
        "_optimizer_load_state_dict_post_hooks",
        "_optimizer_state_dict_pre_hooks",
        "_optimizer_state_dict_post_hooks",
    ):
        if getattr(optimizer, name, None):
            return None
    groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    if len(groups) != len(saved_groups):
        return None
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    slots: list[tuple[dict, dict, Any]] = []

    def pair(live: dict, kept: dict, key: Any) -> bool:
        cur, value = live[key], kept[key]
        if isinstance(value, torch.Tensor):
            if not (isinstance(cur, torch.Tensor) and _same_kind(cur, value)):
                return False
            pairs.append((cur, value))
        elif _plain_value(value) and _plain_value(cur):
            slots.append((live, kept, key))
        else:
            return False
        return True

    live_state, saved_state = optimizer.state, saved["state"]
    n_stated = 0
    for group, sg in zip(groups, saved_groups):
        if group.keys() != sg.keys() or len(group["params"]) != len(sg["params"]):
            return None
        if not all(pair(group, sg, key) for key in sg if key != "params"):
            return None
        for p, idx in zip(group["params"], sg["params"]):
            st = live_state.get(p)
            sv = saved_state.get(idx)
            if sv is None:
                continue  # (state created since the capture fails the count below)
            if st is None or st.keys() != sv.keys() or not all(pair(st, sv, k) for k in sv):
                return None
            n_stated += 1
    # load_state_dict would drop state created since the capture: leave that to it.
    if n_stated != len(saved_state) or sum(1 for v in live_state.values() if v) != n_stated:
        return None
    return pairs, slots


def _plain_value(v: Any) -> bool:
    """Immutable, so a live object and the snapshot may share it."""
    return isinstance(v, _IMMUTABLE) or (
        isinstance(v, tuple) and all(isinstance(x, _IMMUTABLE) for x in v)
    )


def _same_kind(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` can be copied into ``a`` as ``load_state_dict`` would leave it."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
        and a.layout == b.layout == torch.strided  # sparse and other layouts: load them
        and not a.is_quantized
        and a.device.type != "meta"
    )


def state_finite(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> bool:
    """Whether every floating tensor of ``model`` (and of ``optimizer``'s state) is finite.

    One host sync. The in-loop AutoLRS's and the Ray ``TuneCheckpointer``'s test of whether
    a non-finite loss left the training state intact.
    """
    ts = list(model.state_dict().values())
    if optimizer is not None:
        ts += [v for st in optimizer.state.values() for v in st.values()]
    return tensors_finite(
        t for t in ts if isinstance(t, torch.Tensor) and torch.is_floating_point(t)
    )


def _describe(t: Any) -> str:
    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__}"
    return f"shape {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
