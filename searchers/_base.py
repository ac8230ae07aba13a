"""Search-space parameters and the abstract :class:`Searcher` (minimisation).

Everything a concrete searcher needs that is not model specific lives here:
parameter validation, the unit-cube mapping of configs, observation
bookkeeping (including the penalty for failed runs), a deterministic Sobol
stream, RNG isolation around ``suggest`` and a ``torch.load(weights_only=True)``
safe ``state_dict``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import math
import random
import secrets
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._validate import check_choice, check_instance, check_int

__all__ = ["Param", "Searcher"]

# All searcher-internal arithmetic runs in double precision on the CPU: the
# problems are tiny and float32 GPs are numerically fragile.
_DTYPE = torch.float64
_DEVICE = torch.device("cpu")


def _cpu_default_device() -> contextlib.AbstractContextManager:
    """Keeps the GP on the CPU when the user made another device the default.

    botorch and gpytorch build their modules and constants on the default device; with
    ``torch.set_default_device("cuda")`` they would meet this package's CPU tensors and every
    GP step would fail (and fall back to quasi-random points). Entered only when needed: a
    ``torch.device`` context is a torch-function mode that intercepts every torch call
    (~20 % of a GP step at 200 observations).
    """
    if torch.get_default_device().type == "cpu":
        return contextlib.nullcontext()
    return torch.device("cpu")


_STATE_VERSION = 1
# One searcher step at a time in a process: ``suggest`` seeds the process-global RNGs (torch,
# numpy, random) and restores them afterwards, and the GP step changes torch's thread count;
# two threads doing so interleaved would draw from each other's seeds and restore each
# other's states. Module-level, because the RNGs are; reentrant, because a step may load the
# GP libraries under it. Code outside the searchers that uses the global RNGs in another
# thread meanwhile is not serialised: it may see the searcher's seeded stream.
_RNG_LOCK = threading.RLock()


def _as_finite_float(value: Any, what: str) -> float:
    """Converts ``value`` to a finite float or raises naming ``what``."""
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigTypeError(f"{what} must be a real number, got {value!r}") from exc
    if not math.isfinite(out):
        raise ConfigError(f"{what} must be finite, got {out!r}")
    return out


@dataclass(frozen=True)
class Param:
    """One real-valued search dimension.

    Args:
        name: Key of the parameter in config dicts; non-empty.
        low: Lower bound (finite, ``> 0`` when ``log``).
        high: Upper bound (finite, ``> low``).
        log: Search uniformly in ``log(x)`` instead of ``x``.

    Example:
        >>> p = Param("lr", 1e-4, 1.0, log=True)
        >>> round(p.to_unit(1e-2), 6)
        0.5
        >>> p.from_unit(1.0)
        1.0
    """

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty str, got {self.name!r}")
        # Normalise ints / numpy scalars to float so equality and repr are stable.
        low = _as_finite_float(self.low, f"low of Param {self.name!r}")
        high = _as_finite_float(self.high, f"high of Param {self.name!r}")
        if not low < high:
            raise ConfigError(
                f"low must be < high for Param {self.name!r}, got low={low!r}, high={high!r}"
            )
        # A flag, not a truthy value: log="no" would silently search in log space.
        check_instance(f"log of Param {self.name!r}", self.log, (bool, np.bool_))
        if self.log and low <= 0.0:
            raise ConfigError(f"low must be > 0 when log=True for Param {self.name!r}, got {low!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "log", bool(self.log))

    def clip(self, x: float) -> float:
        """Clips ``x`` into ``[low, high]``."""
        return min(max(float(x), self.low), self.high)

    def to_unit(self, x: float) -> float:
        """Maps ``x`` (clipped into the bounds) to ``[0, 1]`` (log-space when ``log``)."""
        x = self.clip(x)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            u = (math.log(x) - lo) / (hi - lo)
        else:
            u = (x - self.low) / (self.high - self.low)
        return min(max(u, 0.0), 1.0)

    def from_unit(self, u: float) -> float:
        """Maps ``u`` in ``[0, 1]`` back to a value; the result is clipped to the bounds."""
        u = float(u)
        # Exact endpoints: users compare against the bounds they wrote.
        if u <= 0.0:
            return self.low
        if u >= 1.0:
            return self.high
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            x = math.exp(lo + u * (hi - lo))
        else:
            x = self.low + u * (self.high - self.low)
        # exp/log round trips can land one ulp outside the bounds.
        return self.clip(x)


def _derive_seed(seed: int, counter: int) -> int:
    """Deterministic, platform-independent 63-bit seed from ``(seed, counter)``."""
    digest = hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Seeds torch/numpy/python RNGs for the block and restores the caller's state.

    The torch CPU generator is forked; numpy and ``random`` are saved and restored
    too because third-party code called inside (scipy, botorch) may touch them.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            # CPU only, the generator fork_rng restores: torch.manual_seed would also reseed
            # (and leave reseeded) the CUDA generators of a training run on the GPU.
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % (2**32))
            random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _penalised(values: Sequence[float]) -> list[float]:
    """``values`` with every non-finite one (a failure) replaced by the penalty: the worst
    finite value plus ``max(1, range of finite values)``, ``1.0`` when none is finite, and
    the largest float where that sum overflows."""
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        worst, best = max(finite), min(finite)
        penalty = worst + max(1.0, worst - best)
        if penalty == math.inf:  # finite values near the float limit (1e308): still finite
            penalty = sys.float_info.max
    else:
        penalty = 1.0
    return [v if math.isfinite(v) else penalty for v in values]


class Searcher(abc.ABC):
    """Base class of black-box minimisers over a box of :class:`Param`.

    Subclasses implement :meth:`_suggest_unit`, which works in the unit cube.
    ``suggest`` runs it with all RNGs seeded from ``(seed, number of suggest calls)``
    and restores the caller's global RNG state afterwards, so results are
    reproducible and restorable from :meth:`state_dict`. Searchers in different threads
    take turns (a process-wide lock around that block), so each suggests exactly what it
    would alone; one searcher instance is not meant to be shared between threads.

    Non-finite observed values (diverged runs) are stored as failures and scored
    with a penalty: the worst finite value plus ``max(1, range of finite values)``
    (``1.0`` when no value is finite). The penalty is recomputed whenever the
    observations change, so it always stays worse than every finite value.

    Args:
        params: The search dimensions; non-empty, unique names.
        seed: Seed of all randomness; ``None`` draws one from the OS (and stores it,
            so ``state_dict`` still reproduces the run).
        design: Quasi-random points before a model takes over: ``"sobol"`` (scrambled
            Sobol) or ``"stratified"``, which in one dimension is the van der Corput
            sequence 1/2, 1/4, 3/4, 1/8, ... (every prefix spreads evenly and stays off
            the edges; a scrambled 1-D Sobol prefix of 3 points can sit at both ends), and
            in more dimensions the scrambled Sobol sequence.

    Example:
        >>> from autolr.searchers import Param, RandomSearcher
        >>> s = RandomSearcher([Param("lr", 1e-4, 1.0, log=True)], seed=0)
        >>> (cfg,) = s.suggest()
        >>> s.observe(cfg, 0.5)
        >>> len(s)
        1
    """

    def __init__(
        self, params: Sequence[Param], *, seed: int | None = None, design: str = "sobol"
    ) -> None:
        check_choice("design", design, ("sobol", "stratified"))
        self.design = design
        if isinstance(params, (Param, str)) or not isinstance(params, Iterable):
            raise ConfigTypeError(
                f"params must be a sequence of Param (e.g. [Param(...)]), got {params!r}"
            )
        params = tuple(params)
        if not params:
            raise ConfigError("params must be a non-empty sequence of Param, got an empty one")
        for i, p in enumerate(params):
            check_instance(f"params[{i}]", p, Param)
        names = [p.name for p in params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"params must have unique names, got duplicates {dupes}")
        self._params: tuple[Param, ...] = params
        self._seed = self._check_seed(seed)
        self._n_suggest_calls = 0
        self._n_sobol_drawn = 0
        self._sobol: torch.quasirandom.SobolEngine | None = None
        # Observations, row-aligned; configs are stored clipped, in original units.
        self._configs: list[tuple[float, ...]] = []
        self._raw_values: list[float] = []
        self._noises: list[float | None] = []

    # ------------------------------------------------------------------ space
    @property
    def params(self) -> tuple[Param, ...]:
        """The search dimensions, in order."""
        return self._params

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in order."""
        return tuple(p.name for p in self._params)

    @property
    def dim(self) -> int:
        """Number of search dimensions."""
        return len(self._params)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """``{name: (low, high)}`` in original units."""
        return {p.name: (p.low, p.high) for p in self._params}

    @property
    def seed(self) -> int:
        """The seed all randomness derives from."""
        return self._seed

    def set_bounds(self, name: str, low: float, high: float) -> None:
        """Moves the box of one parameter (e.g. below an LR that diverged).

        Observations are kept and clipped into the new box; the random streams continue.
        Bounds are configuration, not state: re-apply them before ``load_state_dict``.

        Raises:
            ConfigError: If ``name`` is unknown or the new bounds are invalid.
        """
        if name not in self.names:
            raise ConfigError(f"name must be one of {list(self.names)}, got {name!r}")
        i = self.names.index(name)
        old = self._params[i]
        new = Param(name, low, high, log=old.log)
        self._params = (*self._params[:i], new, *self._params[i + 1 :])
        self._configs = [self._clip_row(row) for row in self._configs]

    def _clip_row(self, row: Sequence[float]) -> tuple[float, ...]:
        """One config's values (in parameter order) clipped into the box."""
        return tuple(p.clip(x) for p, x in zip(self._params, row))

    def _config_tuple(self, config: Mapping[str, float], what: str) -> tuple[float, ...]:
        """Validates a config and returns its clipped values in parameter order."""
        if not isinstance(config, Mapping):
            raise ConfigTypeError(f"{what} must be a mapping of name -> float, got {config!r}")
        missing = [n for n in self.names if n not in config]
        if missing:
            raise ConfigError(f"{what} is missing keys {missing}; expected {list(self.names)}")
        # Extra keys are ignored: configs often carry non-searched settings.
        return tuple(
            p.clip(_as_finite_float(config[p.name], f"{what}[{p.name!r}]")) for p in self._params
        )

    def configs_to_unit(self, configs: Sequence[Mapping[str, float]]) -> torch.Tensor:
        """Maps configs to an ``n x d`` float64 tensor in the unit cube (values clipped)."""
        rows = [self._config_tuple(c, "config") for c in configs]
        return self._tuples_to_unit(rows)

    def _tuples_to_unit(self, rows: Sequence[tuple[float, ...]]) -> torch.Tensor:
        data = [[p.to_unit(x) for p, x in zip(self._params, row)] for row in rows]
        return torch.tensor(data, dtype=_DTYPE, device=_DEVICE).reshape(len(data), self.dim)

    def unit_to_configs(self, x: torch.Tensor) -> list[dict[str, float]]:
        """Maps an ``n x d`` unit-cube tensor to config dicts (clipped to the bounds)."""
        rows = x.detach().to(device=_DEVICE, dtype=_DTYPE).reshape(-1, self.dim).tolist()
        return [{p.name: p.from_unit(u) for p, u in zip(self._params, row)} for row in rows]

    # ----------------------------------------------------------- observations
    def observe(
        self, config: Mapping[str, float], value: float, *, noise: float | None = None
    ) -> None:
        """Records the outcome of evaluating ``config`` (lower is better).

        Args:
            config: Parameter values; out-of-bounds values are clipped, extra keys ignored.
            value: Observed objective; nan/inf marks a failed run and is scored with a
                penalty instead.
            noise: Optional observation-noise standard deviation in units of ``value``.

        Example:
            >>> s.observe({"lr": 0.01}, 1.25, noise=0.1)  # doctest: +SKIP
        """
        row = self._config_tuple(config, "config")
        try:
            val = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigTypeError(f"value must be a real number, got {value!r}") from exc
        if noise is not None:
            noise = _as_finite_float(noise, "noise")
            if noise < 0.0:
                raise ConfigError(f"noise must be a standard deviation >= 0, got {noise!r}")
        self._configs.append(row)
        self._raw_values.append(val)
        self._noises.append(noise)

    def _values(self) -> list[float]:
        """Observed values with failures replaced by the current penalty."""
        return _penalised(self._raw_values)

    @property
    def observations(self) -> list[tuple[dict[str, float], float]]:
        """``(config, value)`` pairs in observation order; failures carry the penalty."""
        return [(dict(zip(self.names, row)), v) for row, v in zip(self._configs, self._values())]

    @property
    def failed(self) -> list[bool]:
        """Per observation: whether its value was non-finite (and is penalised)."""
        return [not math.isfinite(v) for v in self._raw_values]

    @property
    def noises(self) -> list[float | None]:
        """Per observation: the noise standard deviation given to :meth:`observe`."""
        return list(self._noises)

    def best(self) -> tuple[dict[str, float], float] | None:
        """The finite observation with the lowest value (first on ties), or ``None``."""
        best_i: int | None = None
        for i, v in enumerate(self._raw_values):
            if math.isfinite(v) and (best_i is None or v < self._raw_values[best_i]):
                best_i = i
        if best_i is None:
            return None
        return dict(zip(self.names, self._configs[best_i])), self._raw_values[best_i]

    def reset(self) -> None:
        """Forgets all observations; the random streams continue where they were."""
        self._configs.clear()
        self._raw_values.clear()
        self._noises.clear()

    def __len__(self) -> int:
        return len(self._raw_values)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(params={list(self._params)!r}, seed={self._seed}, "
            f"n_observations={len(self)})"
        )

    # ------------------------------------------------------------ suggestions
    def suggest(
        self, n: int = 1, *, pending: Sequence[Mapping[str, float]] = ()
    ) -> list[dict[str, float]]:
        """Proposes ``n`` new configs within the bounds.

        Args:
            n: Number of configs (``>= 1``).
            pending: Configs already running but not yet observed; suggestions avoid them.

        Returns:
            ``n`` config dicts keyed by parameter name.

        Example:
            >>> cfgs = s.suggest(2, pending=[{"lr": 0.01}])  # doctest: +SKIP
        """
        check_int("n", n, minimum=1)
        pending_x = self.configs_to_unit(list(pending))
        call = self._n_suggest_calls
        self._n_suggest_calls += 1
        if self._draws_rng(n, len(pending_x)):
            with _RNG_LOCK, _isolated_rng(_derive_seed(self._seed, call)):
                x = self._suggest_unit(n, pending_x)
        else:
            x = self._suggest_unit(n, pending_x)
        x = x.detach().to(device=_DEVICE, dtype=_DTYPE).reshape(n, self.dim).clamp(0.0, 1.0)
        return self.unit_to_configs(x)

    def _preload(self) -> None:
        """Import what suggestions will need; tuners call it at construction.

        A GP's libraries take ~1.5 s to import once per process; inside the first GP
        suggestion that stalls a training step mid-run.
        """
        return None  # nothing to import by default

    def _draws_rng(self, n: int, n_pending: int) -> bool:
        """Whether :meth:`_suggest_unit` may use the global RNGs (then they are seeded).

        Seeding and restoring them costs about 0.2 ms, a share of a candidate switch on
        millisecond steps; a suggestion from the searcher's own design stream skips it.
        """
        return True

    @abc.abstractmethod
    def _suggest_unit(self, n: int, pending: torch.Tensor) -> torch.Tensor:
        """Returns an ``n x d`` tensor of new points in the unit cube.

        Called with torch/numpy/python RNGs seeded deterministically; ``pending`` is
        ``m x d`` (possibly ``m == 0``) in the unit cube.
        """

    def _draw_sobol(self, n: int) -> torch.Tensor:
        """Next ``n`` points of this searcher's scrambled Sobol stream (``n x d``).

        The stream depends only on the seed and the count drawn so far, which
        ``state_dict`` records; it uses its own generator, not the global one.
        """
        if n == 0:  # SobolEngine.draw(0) raises on a fresh engine
            return torch.empty(0, self.dim, dtype=_DTYPE, device=_DEVICE)
        if self.design == "stratified" and self.dim == 1:
            first = self._n_sobol_drawn + 1
            self._n_sobol_drawn += n
            pts = [_van_der_corput(i) for i in range(first, first + n)]
            return torch.tensor(pts, dtype=_DTYPE, device=_DEVICE).reshape(n, 1)
        if self._sobol is None:
            self._sobol = torch.quasirandom.SobolEngine(self.dim, scramble=True, seed=self._seed)
            if self._n_sobol_drawn:
                self._sobol.fast_forward(self._n_sobol_drawn)
        x = self._sobol.draw(n, dtype=_DTYPE)
        self._n_sobol_drawn += n
        return x

    # ---------------------------------------------------------------- seeding
    @staticmethod
    def _check_seed(seed: int | None) -> int:
        if seed is None:
            return secrets.randbits(63)
        return check_int("seed", seed, minimum=0, maximum=2**63 - 1)

    def reseed_rng(self, seed: int | None) -> None:
        """Restarts all random streams from ``seed``; observations are kept.

        Afterwards the searcher suggests exactly what a fresh searcher with this seed
        and the same observations would.
        """
        self._seed = self._check_seed(seed)
        self._n_suggest_calls = 0
        self._n_sobol_drawn = 0
        self._sobol = None

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically; plain types and tensors only.

        Example:
            >>> import io
            >>> buf = io.BytesIO(); torch.save(s.state_dict(), buf)  # doctest: +SKIP
        """
        n = len(self._raw_values)
        return {
            "version": _STATE_VERSION,
            "class": type(self).__name__,
            "param_names": list(self.names),
            "seed": self._seed,
            "n_suggest_calls": self._n_suggest_calls,
            "n_sobol_drawn": self._n_sobol_drawn,
            "configs": torch.tensor(self._configs, dtype=_DTYPE, device=_DEVICE).reshape(
                n, self.dim
            ),
            "values": torch.tensor(self._raw_values, dtype=_DTYPE, device=_DEVICE).reshape(n),
            # nan encodes "no noise given" so the entry stays a plain tensor.
            "noises": torch.tensor(
                [math.nan if s is None else s for s in self._noises], dtype=_DTYPE, device=_DEVICE
            ).reshape(n),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores observations, seed and stream positions from :meth:`state_dict`."""
        if not isinstance(state, Mapping):
            raise StateError(f"state must be a mapping, got {type(state).__name__}")

        def field(key: str, convert: Any) -> Any:
            if key not in state:
                raise StateError(f"state is not a valid Searcher state_dict: no {key!r}")
            try:
                return convert(state[key])
            except (TypeError, ValueError, RuntimeError) as exc:
                raise StateError(f"state {key!r} is not valid: {exc}") from exc

        def rows(x: Any) -> torch.Tensor:
            return torch.as_tensor(x, dtype=_DTYPE, device=_DEVICE).reshape(-1, self.dim)

        def flat(x: Any) -> torch.Tensor:
            return torch.as_tensor(x, dtype=_DTYPE, device=_DEVICE).reshape(-1)

        version = field("version", lambda x: x)
        names = field("param_names", list)
        configs, values, noises = (
            field("configs", rows),
            field("values", flat),
            field("noises", flat),
        )
        # Integers as state_dict writes them: int("3") or int(2.7) would hide a corrupted state.
        seed = field("seed", lambda x: self._check_seed(check_int("seed", x)))
        n_calls = field("n_suggest_calls", lambda x: check_int("n_suggest_calls", x))
        n_sobol = field("n_sobol_drawn", lambda x: check_int("n_sobol_drawn", x))
        if version != _STATE_VERSION:
            raise StateError(f"state version must be {_STATE_VERSION}, got {version!r}")
        if names != list(self.names):
            raise StateError(f"state param_names must be {list(self.names)}, got {names}")
        if not len(configs) == len(values) == len(noises):
            raise StateError("state configs, values and noises must have the same length")
        if n_calls < 0 or n_sobol < 0:
            raise StateError(
                f"state counters must be >= 0, got n_suggest_calls={n_calls}, "
                f"n_sobol_drawn={n_sobol}"
            )
        # What observe() refuses: non-finite configs, and noise that is neither nan (none
        # given) nor a finite standard deviation >= 0.
        bad_rows = (~torch.isfinite(configs)).any(dim=-1).nonzero().reshape(-1).tolist()
        if bad_rows:
            i = bad_rows[0]
            raise StateError(
                f"state configs must be finite, got {configs[i].tolist()} in row {i} "
                f"({len(bad_rows)} such row{'s' if len(bad_rows) > 1 else ''})"
            )
        bad_noise = (~(noises.isnan() | (torch.isfinite(noises) & (noises >= 0)))).nonzero()
        if bad_noise.numel():
            i = int(bad_noise.reshape(-1)[0])
            raise StateError(
                "state noises must be nan (none given) or finite standard deviations >= 0, "
                f"got {float(noises[i])!r} at row {i}"
            )
        self._seed = seed
        self._n_suggest_calls = n_calls
        self._n_sobol_drawn = n_sobol
        self._sobol = None
        self._configs = [self._clip_row(row) for row in configs.tolist()]
        self._raw_values = [float(v) for v in values.tolist()]
        self._noises = [None if math.isnan(s) else float(s) for s in noises.tolist()]


def _van_der_corput(i: int) -> float:
    """The ``i``-th point (``i >= 1``) of the base-2 van der Corput sequence: 1/2, 1/4, 3/4..."""
    x, denom = 0.0, 1.0
    while i:
        denom *= 2.0
        i, bit = divmod(i, 2)
        x += bit / denom
    return x
