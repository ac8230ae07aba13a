"""Bayesian optimisation with a botorch Gaussian process (minimisation)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._validate import check_choice, check_float, check_instance, check_int

from ._base import _DEVICE, _DTYPE, _RNG_LOCK, Param, Searcher, _cpu_default_device, _penalised

if TYPE_CHECKING:
    # Loaded at runtime by _load_gp_libs() on first use (see there).
    from botorch.acquisition import (
        AcquisitionFunction,
        LogExpectedImprovement,
        UpperConfidenceBound,
        qLogExpectedImprovement,
        qUpperConfidenceBound,
    )
    from botorch.acquisition.analytic import _log_ei_helper
    from botorch.exceptions.warnings import BotorchWarning
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from botorch.optim.utils import get_parameters_and_bounds
    from botorch.utils.transforms import t_batch_mode_transform
    from gpytorch.constraints import GreaterThan
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.likelihoods import FixedNoiseGaussianLikelihood
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import GammaPrior
    from gpytorch.settings import min_variance
    from gpytorch.utils.warnings import GPInputWarning, NumericalWarning
    from linear_operator.utils.cholesky import psd_safe_cholesky

__all__ = ["GPSearcher"]

_ACQUISITIONS = ("logei", "ucb")
# Suggestions closer than this (unit cube, Euclidean) to a known point are
# replaced: a duplicate teaches the model nothing and can make K singular.
_DUPLICATE_TOL = 1e-6
# Noise variance given to observations without ``noise`` when other observations
# have one (fixed heteroskedastic noise): (1 % of the outcome std)^2, i.e. 1e-4 in
# standardised units -- botorch's own floor for inferred noise.
_DEFAULT_REL_NOISE_VAR = 1e-4
# Lower bound on user-given noise variances, relative to the outcome variance, so
# that noise=0 on duplicated configs cannot make the kernel matrix singular.
_MIN_REL_NOISE_VAR = 1e-6
# Everything fitting/optimising may raise on degenerate data; we then fall back to
# quasi-random points rather than crash a training run. Completed with botorch's and
# gpytorch's error types by _load_gp_libs().
_FIT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ValueError,
    torch.linalg.LinAlgError,
    ArithmeticError,
)
# botorch, gpytorch and linear_operator (and the scipy they import) are needed only once a GP
# is fitted, so `import autolr` does not load them: _load_gp_libs() binds these module
# globals on first use. Module attribute access (tests patch ``fit_gpytorch_mll`` /
# ``optimize_acqf`` here) loads them too, through __getattr__.
_GP_LIBS = {
    "AcquisitionFunction": "botorch.acquisition",
    "LogExpectedImprovement": "botorch.acquisition",
    "UpperConfidenceBound": "botorch.acquisition",
    "qLogExpectedImprovement": "botorch.acquisition",
    "qUpperConfidenceBound": "botorch.acquisition",
    "BotorchError": "botorch.exceptions.errors",
    "ModelFittingError": "botorch.exceptions.errors",
    "BotorchWarning": "botorch.exceptions.warnings",
    "fit_gpytorch_mll": "botorch.fit",
    "SingleTaskGP": "botorch.models",
    "Standardize": "botorch.models.transforms.outcome",
    "optimize_acqf": "botorch.optim",
    "_log_ei_helper": "botorch.acquisition.analytic",
    "t_batch_mode_transform": "botorch.utils.transforms",
    "get_parameters_and_bounds": "botorch.optim.utils",
    "FixedNoiseGaussianLikelihood": "gpytorch.likelihoods",
    "GreaterThan": "gpytorch.constraints",
    "MaternKernel": "gpytorch.kernels",
    "ScaleKernel": "gpytorch.kernels",
    "ExactMarginalLogLikelihood": "gpytorch.mlls",
    "GammaPrior": "gpytorch.priors",
    "NanError": "linear_operator.utils.errors",
    "NotPSDError": "linear_operator.utils.errors",
    "GPInputWarning": "gpytorch.utils.warnings",
    "min_variance": "gpytorch.settings",
    "NumericalWarning": "gpytorch.utils.warnings",
    "psd_safe_cholesky": "linear_operator.utils.cholesky",
}
_gp_libs_loaded = False


def _load_gp_libs() -> None:
    """Imports botorch/gpytorch once and binds the names of ``_GP_LIBS`` in this module."""
    global _FIT_ERRORS, _gp_libs_loaded
    if _gp_libs_loaded:
        return
    # Under the searchers' lock: catch_warnings swaps process-global state, which two
    # threads entering and leaving it interleaved would leave modified.
    with _RNG_LOCK:
        if _gp_libs_loaded:
            return
        with warnings.catch_warnings():
            # Third-party deprecations raised while these libraries import (e.g. their
            # module-level ``torch.jit.script`` calls, which torch now deprecates) are not
            # the user's to fix; under ``-W error::DeprecationWarning`` they would make the
            # first GP suggestion fail. Only the import is covered, not our own calls.
            warnings.simplefilter("ignore", DeprecationWarning)
            modules = {m: importlib.import_module(m) for m in sorted(set(_GP_LIBS.values()))}
            # gpytorch's kernels call torch.broadcast_shapes, whose first call imports sympy
            # (~0.35 s): here, with the other imports, not inside the first suggestion.
            torch.broadcast_shapes((1,), (1,))
        g = globals()
        for name, module in _GP_LIBS.items():
            g[name] = getattr(modules[module], name)
        _FIT_ERRORS = (
            g["BotorchError"],
            g["ModelFittingError"],
            g["NotPSDError"],
            g["NanError"],
            *_FIT_ERRORS,
        )
        _gp_libs_loaded = True


_warmed_1d = False


def _matern_kernel(dim: int) -> ScaleKernel:
    """The searcher's kernel, with no data: Matérn-5/2 with ARD times an output scale.

    With the priors botorch used as its default for years (lengthscale ~ Gamma(3, 6) on the
    unit cube); botorch >= 0.12 defaults to an RBF kernel with dimension-scaled priors
    meant for high-dimensional BO.
    """
    return ScaleKernel(
        MaternKernel(
            nu=2.5,
            ard_num_dims=dim,
            lengthscale_prior=GammaPrior(3.0, 6.0),
            lengthscale_constraint=GreaterThan(1e-3),
        ),
        outputscale_prior=GammaPrior(2.0, 0.15),
    ).to(dtype=_DTYPE)


def _set_prior_hypers(kernel: ScaleKernel) -> None:
    """The 1-D prior model's hyperparameters: lengthscale a third of the box, outputscale 1."""
    kernel.base_kernel.lengthscale = torch.full_like(
        kernel.base_kernel.lengthscale, _PRIOR_LENGTHSCALE
    )
    kernel.outputscale = torch.ones_like(kernel.outputscale)


@functools.cache
def _prior_kernel() -> ScaleKernel:
    """The 1-D prior model's kernel, built once per process (~1 ms a build).

    Never changed after this call, so threads may share it: evaluating a kernel reads its
    hyperparameters only.
    """
    with torch.no_grad():
        kernel = _matern_kernel(1)
        _set_prior_hypers(kernel)
    kernel.requires_grad_(False)
    return kernel.eval()


def _warm_1d_path() -> None:
    """One throwaway 1-D GP step per process (~7 ms), for :meth:`GPSearcher._preload`.

    The first GP step of a process pays one-time costs beyond the imports (torch kernels
    and botorch helpers used for the first time): 4-18 ms more on the first run of a
    bench task, inside a ``tuner.step`` mid-run. A tuner pays them at construction instead.
    The step seeds and restores the global RNGs like any GP suggestion, so the caller's
    random streams are untouched.
    """
    global _warmed_1d
    if _warmed_1d:
        return
    _warmed_1d = True
    # The budget variant's first GP step: 3 stratified points, fixed hyperparameters.
    s = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, design="stratified", fit_min_obs=6)
    for config in s.suggest(3):
        s.observe(config, 1.0 + config["lr"], noise=0.01)  # the tuner gives forecast stds
    s.suggest(1)


def __getattr__(name: str) -> Any:
    # PEP 562: only called for names not (yet) bound in the module.
    if name in _GP_LIBS:
        _load_gp_libs()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# 1-D fast path (``fast_1d``). The acquisition is evaluated on this many equally spaced
# points of [0, 1] in one batched forward pass (spacing 1/256, then refined by a parabola
# through the best three): exact to grid resolution in 1-D, and much cheaper than
# multi-start L-BFGS. 513 or 1025 points gave the same search quality in tests, for
# 0.2-0.6 ms more per call at 30 observations.
_GRID_SIZE = 257
# GP hyperparameters move little when one observation joins a handful, so they are refitted
# only once this many observations arrived since the last fit (the model always sees all
# data; in between it keeps the last fitted hyperparameters) ...
_REFIT_EVERY = 4
# ... by a fit warm-started at the previous optimum and capped at this many L-BFGS-B
# iterations (it starts close; botorch accepts a fit that stops at the cap) ...
_WARM_MAXITER = 5
# ... and from scratch (default initialisation, full convergence) once this many arrived
# since the last such fit, so a chain of warm starts cannot stay in a poor local optimum.
_COLD_REFIT_EVERY = 12
# Fixed lengthscale below ``fit_min_obs`` observations: the mode of its Gamma(3, 6) prior.
_PRIOR_LENGTHSCALE = 1.0 / 3.0


# fit_options accepted: scipy's L-BFGS-B options that matter with exact gradients, and
# their checks (an unknown key or a wrong type would otherwise surface in the middle of a
# training loop, from scipy, at the first GP fit).
_FIT_OPTION_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "maxiter": lambda k, v: check_int(k, v, minimum=1),
    "maxfun": lambda k, v: check_int(k, v, minimum=1),
    "maxcor": lambda k, v: check_int(k, v, minimum=1),
    "maxls": lambda k, v: check_int(k, v, minimum=1),
    "ftol": lambda k, v: check_float(k, v, minimum=0),
    "gtol": lambda k, v: check_float(k, v, minimum=0),
}
# The raw hyperparameters of the models this searcher builds, with their sizes (``None``:
# one per dimension); the inferred-noise model adds the noise (tests compare these names
# with the models' own).
_HYPER_SIZES: dict[str, int | None] = {
    "covar_module.base_kernel.raw_lengthscale": None,
    "covar_module.raw_outputscale": 1,
    "mean_module.raw_constant": 1,
    "likelihood.noise_covar.raw_noise": 1,
}
# Modelled values whose variance exceeds this are scaled down (by a power of two, exactly)
# before the fit: beyond it the outcome standardisation squares them to inf (from a spread of
# ~1e154 on), and the posterior variance in original units, the standardised one times the
# variance, overflows a little earlier.
_MAX_TARGET_VAR = 1e300


def _checked_fit_options(options: dict[Any, Any]) -> dict[str, float | int]:
    """``fit_options`` with known keys and values of the right type, or ConfigError."""
    unknown = sorted(repr(k) for k in options if k not in _FIT_OPTION_CHECKS)
    if unknown:
        raise ConfigError(
            f"fit_options has unknown keys {', '.join(unknown)}; allowed: "
            f"{', '.join(_FIT_OPTION_CHECKS)}"
        )
    return {k: _FIT_OPTION_CHECKS[k](f"fit_options[{k!r}]", v) for k, v in options.items()}


def _checked_hyperparameters(values: Mapping[Any, Any], dim: int) -> dict[str, list[float]]:
    """``init_hyperparameters`` as ``{name: list of floats}``: known names, the model's sizes,
    finite real numbers (raw, i.e. unconstrained, values: any sign), or ConfigError."""
    out: dict[str, list[float]] = {}
    for name, v in values.items():
        what = f"init_hyperparameters[{name!r}]"
        if name not in _HYPER_SIZES:
            raise ConfigError(
                f"init_hyperparameters has an unknown name {name!r}; known: "
                f"{', '.join(_HYPER_SIZES)}"
            )
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            raise ConfigTypeError(
                f"{what} must be a flat list of real numbers (as in fitted_hyperparameters), "
                f"got {v!r}"
            )
        if hasattr(v, "tolist"):  # numpy arrays, tensors: their elements as Python numbers
            raw = v.tolist()
            items = raw if isinstance(raw, list) else [raw]
        else:
            items = list(v)
        size = dim if _HYPER_SIZES[name] is None else _HYPER_SIZES[name]
        if len(items) != size:
            raise ConfigError(f"{what} must have {size} value(s), got {len(items)}: {v!r}")
        out[name] = [check_float(f"{what}[{i}]", x) for i, x in enumerate(items)]
    return out


def _scaled_down(
    values: torch.Tensor, noises: Sequence[float | None]
) -> tuple[torch.Tensor, list[float | None]]:
    """``values`` and ``noises`` divided by the power of two just above ``max |values|``
    (exact but for noises that underflow, which the noise floor covers)."""
    k = math.frexp(float(values.abs().max()))[1]  # max |values| < 2**k (finite: penalised)
    values = values * math.ldexp(1.0, -k)
    return values, [None if s is None else math.ldexp(s, -k) for s in noises]


def log_scaled(value: float, noise: float | None) -> tuple[float, float | None]:
    """A positive loss and its noise standard deviation on the log scale a GP models.

    A GP on raw losses spends its resolution on the bad configurations (2.2 beside 0.06 makes
    0.06 and 0.08 look alike), while a search is decided among the good ones, whose
    differences are relative. The noise follows by the delta method: ``std / value``.
    """
    return math.log(value), None if noise is None else noise / value


class GPSearcher(Searcher):
    """GP-based Bayesian optimisation (Matérn-5/2 ARD, LogEI or UCB).

    The first ``n_initial`` configs (counting pending ones) come from a scrambled
    Sobol sequence. Afterwards a ``SingleTaskGP`` is fitted in double precision
    on the CPU to the unit-cube inputs (log-space for log params) and
    standardised outcomes, and the acquisition function is maximised over the
    unit cube. Observed noise (``observe(..., noise=...)``) switches the model to
    fixed heteroskedastic noise; observations without one then get a variance of
    ``1e-4 * Var(y)``. Without any noise given, a homoskedastic noise level is
    inferred. Modelled values so spread that their variance would overflow (a loss that
    blew up to 1e200) are scaled down by a power of two first, which changes nothing else
    (the standardisation divides the scale out). Whenever fitting or optimisation fails
    (degenerate data, linear algebra errors), or a candidate duplicates a known point,
    quasi-random points are used instead.

    In one dimension (``fast_1d``, the AutoLRS case) a suggestion typically costs a
    few milliseconds instead of ~100: the acquisition function is evaluated on a dense
    grid of the unit interval in one batched pass (then refined by a parabola), on one
    thread, and the hyperparameters are refitted only every fourth new observation,
    warm-started from the previous fit with a few L-BFGS-B iterations, and from scratch
    every twelfth; in between the model (always on all data) keeps the last fitted ones.
    The warm start is part of :meth:`state_dict`.

    An acquisition function of one point at a time (every suggestion without pending
    points) reads the posterior from one cached Cholesky factor instead of gpytorch's
    prediction machinery (same values; a 3-d suggestion costs about half as much). LogEI's
    gradient and, with given noise, the gradient of the fit's loss are written out instead
    of taken by autograd (same values; together another third off a 3-d suggestion).

    Args:
        params: The search dimensions.
        seed: Seed of all randomness; ``None`` draws one from the OS.
        n_initial: Number of quasi-random configs before the GP takes over (``>= 1``).
        acquisition: ``"logei"`` (log expected improvement) or ``"ucb"``.
        beta: Exploration weight of ``"ucb"`` (``mean - sqrt(beta) * std`` is minimised).
        num_restarts: Restarts of the acquisition optimiser (unused by the 1-D fast path).
        raw_samples: Random samples used to pick the restart points (likewise).
        fit_options: Options of the L-BFGS-B fit of the GP hyperparameters (scipy's
            ``options``, e.g. ``{"ftol": 1e-6}``); ``None`` keeps botorch's defaults.
            Looser tolerances make each suggestion cheaper. Allowed keys: ``maxiter``,
            ``maxfun``, ``maxcor``, ``maxls`` (ints ``>= 1``), ``ftol``, ``gtol`` (finite
            floats ``>= 0``); anything else is a :class:`~autolr.ConfigError`.
        init_hyperparameters: Starting values of the GP hyperparameters for the fit (a warm
            start), as in :attr:`fitted_hyperparameters` of an earlier fit: ``{name: flat
            list of raw values}``, finite real numbers (raw: unconstrained, any sign). Names
            are those of :attr:`fitted_hyperparameters` (the lengthscale has one value per
            dimension, the others one); an unknown name, a wrong size or a non-finite value
            is a :class:`~autolr.ConfigError`. The noise entry applies only while the noise
            is inferred (no ``noise`` observed); otherwise it is ignored.
        fast_1d: Use the fast path above for one-dimensional searches; ``False`` runs the
            general path (a full fit and multi-start L-BFGS on every call) in 1-D too.
            Without effect in more dimensions.
        design: Initial design, ``"sobol"`` or ``"stratified"`` (see :class:`Searcher`).
        fit_min_obs: With fewer observations than this, the 1-D fast path does not fit the
            hyperparameters: it uses lengthscale 1/3 of the box (the mode of the
            lengthscale prior), outputscale 1 (the variance of the standardised
            observations) and mean 0. A handful of points barely constrains them, and the
            fit is about 90 % of such a suggestion's cost (0 = always fit).
        log_values: Model the logarithm of the values (noise standard deviations become
            relative, ``noise / value``) while every finite value is positive; otherwise,
            and by default, the values themselves. For losses, standardised raw values
            spend the model's range on the bad region and leave the good one flat. What is
            observed (:attr:`observations`, :meth:`best`, :meth:`state_dict`) stays raw.

    Example:
        >>> import math
        >>> from autolr.searchers import GPSearcher, Param
        >>> s = GPSearcher([Param("lr", 1e-4, 1.0, log=True)], seed=0, n_initial=2)
        >>> for _ in range(4):
        ...     (cfg,) = s.suggest()
        ...     s.observe(cfg, (math.log10(cfg["lr"]) + 2) ** 2)
        >>> s.best() is not None
        True
    """

    def __init__(
        self,
        params: Sequence[Param],
        *,
        seed: int | None = None,
        n_initial: int = 3,
        acquisition: str = "logei",
        beta: float = 2.0,
        num_restarts: int = 8,
        raw_samples: int = 256,
        fit_options: dict[str, float | int] | None = None,
        init_hyperparameters: Mapping[str, Sequence[float]] | None = None,
        fast_1d: bool = True,
        design: str = "sobol",
        fit_min_obs: int = 0,
        log_values: bool = False,
    ) -> None:
        check_int("n_initial", n_initial, minimum=1)
        check_instance("log_values", log_values, bool)
        check_int("fit_min_obs", fit_min_obs, minimum=0)
        check_choice("acquisition", acquisition, _ACQUISITIONS)
        check_float("beta", beta, minimum=0)
        check_int("num_restarts", num_restarts, minimum=1)
        check_int("raw_samples", raw_samples, minimum=num_restarts)
        check_instance("fast_1d", fast_1d, (bool, np.bool_))
        if fit_options is not None and not isinstance(fit_options, dict):
            raise ConfigError(f"fit_options must be a dict or None, got {fit_options!r}")
        if init_hyperparameters is not None and not isinstance(init_hyperparameters, Mapping):
            raise ConfigError(
                f"init_hyperparameters must be a mapping or None, got {init_hyperparameters!r}"
            )
        super().__init__(params, seed=seed, design=design)
        self.fit_options = _checked_fit_options(fit_options) if fit_options else None
        self.init_hyperparameters = (
            _checked_hyperparameters(init_hyperparameters, self.dim)
            if init_hyperparameters
            else None
        )
        #: Raw hyperparameters of the last successful GP fit (``{name: flat list}``, plain
        #: floats; ``None`` before one), e.g. to warm-start the next searcher through
        #: ``init_hyperparameters``. Diagnostic, not part of ``state_dict``.
        self.fitted_hyperparameters: dict[str, list[float]] | None = None
        self.n_initial = n_initial
        self.acquisition = acquisition
        self.beta = float(beta)
        self.num_restarts = num_restarts
        self.raw_samples = raw_samples
        #: Suggest calls whose GP step fell back to quasi-random points (diagnostic,
        #: not part of ``state_dict``).
        self.n_fallbacks = 0
        self._gp_error = ""  # why the last GP step fell back (for the warning)
        self.fast_1d = bool(fast_1d)  # numpy's bool_ too
        self.fit_min_obs = fit_min_obs
        self.log_values = log_values
        # Warm start of the 1-D path: the hyperparameters of its last fit and the number of
        # observations at that fit and at the last fit from scratch (part of state_dict).
        self._warm_hypers: dict[str, list[float]] | None = None
        self._warm_fit_n = 0
        self._warm_cold_n = 0
        # The kernel module of the last 1-D model, reused because building one costs about
        # as much as a forward pass; a cache only, its values are those of _warm_hypers.
        self._warm_covar: ScaleKernel | None = None

    def __repr__(self) -> str:
        return (
            f"GPSearcher(params={list(self.params)!r}, seed={self.seed}, "
            f"n_initial={self.n_initial}, acquisition={self.acquisition!r}, "
            f"n_observations={len(self)})"
        )

    def _modelled(self) -> tuple[list[float], list[float | None]]:
        """The values and noise standard deviations the GP is fitted to (see ``log_values``);
        failures carry the penalty of :meth:`_values`, on the modelled scale."""
        raw = self._raw_values
        finite = [v for v in raw if math.isfinite(v)]
        if not (self.log_values and finite and min(finite) > 0):
            return self._values(), list(self._noises)
        pairs = zip(raw, self._noises)
        scaled = [log_scaled(v, n) if math.isfinite(v) else (v, None) for v, n in pairs]
        return _penalised([v for v, _ in scaled]), [n for _, n in scaled]

    # ------------------------------------------------- state of the warm start
    def _clear_warm_start(self) -> None:
        self._warm_hypers = None
        self._warm_fit_n = self._warm_cold_n = 0
        self._warm_covar = None

    def reset(self) -> None:
        """Forgets all observations (and the warm start); the random streams continue."""
        super().reset()
        self._clear_warm_start()

    def set_bounds(self, name: str, low: float, high: float) -> None:
        """Moves the box of one parameter; see :meth:`Searcher.set_bounds`."""
        super().set_bounds(name, low, high)
        # The unit-cube inputs moved, so fitted lengthscales no longer describe them.
        self._clear_warm_start()

    def reseed_rng(self, seed: int | None) -> None:
        """Restarts all random streams from ``seed``; see :meth:`Searcher.reseed_rng`."""
        super().reseed_rng(seed)
        # A fresh searcher has no warm start either.
        self._clear_warm_start()

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Searcher.state_dict` plus the warm start of the 1-D path."""
        state = super().state_dict()
        state["gp_warm_start"] = (
            None
            if self._warm_hypers is None
            else {
                "hypers": {k: list(v) for k, v in self._warm_hypers.items()},
                "fit_n": self._warm_fit_n,
                "cold_n": self._warm_cold_n,
            }
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; states without a warm start (older versions,
        other searchers) make the next fit start from scratch."""
        warm = state.get("gp_warm_start") if isinstance(state, Mapping) else None
        if warm is not None:
            try:
                hypers = {str(k): [float(x) for x in v] for k, v in warm["hypers"].items()}
                fit_n, cold_n = int(warm["fit_n"]), int(warm["cold_n"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise StateError(f"state gp_warm_start is not valid: {exc!r}") from exc
        super().load_state_dict(state)
        self._clear_warm_start()
        if warm is not None:
            self._warm_hypers, self._warm_fit_n, self._warm_cold_n = hypers, fit_n, cold_n

    # ---------------------------------------------------------------- suggest
    def suggest(
        self, n: int = 1, *, pending: Sequence[Mapping[str, float]] = ()
    ) -> list[dict[str, float]]:
        """Proposes ``n`` new configs; see :meth:`Searcher.suggest`."""
        if isinstance(n, int) and len(self) + len(pending) + n > self.n_initial:
            # Import botorch before the seeded block: what it draws then cannot depend on
            # whether this process imported it already.
            _load_gp_libs()
        return super().suggest(n, pending=pending)

    def _preload(self) -> None:
        _load_gp_libs()
        if self.fast_1d and self.dim == 1:
            _warm_1d_path()

    def _n_design(self, n: int, n_known: int) -> int:
        """How many of ``n`` suggestions come from the design (the rest from the GP)."""
        # Without any finite observation the GP would only see the constant penalty.
        if all(self.failed):
            return n
        return min(n, max(0, self.n_initial - n_known))

    def _draws_rng(self, n: int, n_pending: int) -> bool:
        # The design streams (Sobol with its own generator, van der Corput) draw nothing
        # from the global RNGs; duplicates are replaced from the same streams.
        return self._n_design(n, len(self._configs) + n_pending) < n

    def _suggest_unit(self, n: int, pending: torch.Tensor) -> torch.Tensor:
        train_x = self._tuples_to_unit(self._configs)
        n_sobol = self._n_design(n, len(train_x) + len(pending))
        chosen = self._draw_sobol(n_sobol)
        n_gp = n - n_sobol
        if n_gp > 0:
            gp_x = self._gp_candidates(n_gp, train_x, torch.cat([pending, chosen]))
            if gp_x is None:
                self.n_fallbacks += 1
                if self.n_fallbacks == 1:
                    # Said once: degenerate data can make a fit fail now and then, but a
                    # GP that never works (a broken install, an environment it cannot run
                    # in) would otherwise turn the search into random search unnoticed.
                    warnings.warn(
                        f"GPSearcher: the GP step failed ({self._gp_error}); this suggestion "
                        "is a quasi-random point instead. Later failures of this searcher "
                        "are only counted in n_fallbacks.",
                        RuntimeWarning,
                        stacklevel=4,  # the caller of suggest()
                    )
                gp_x = self._draw_sobol(n_gp)
            chosen = torch.cat([chosen, gp_x])
        return self._replace_duplicates(chosen, torch.cat([train_x, pending]))

    def _replace_duplicates(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Swaps non-finite or (near-)duplicate rows for fresh Sobol points."""
        out = []
        for row in x:
            for _ in range(16):  # a Sobol point is a duplicate with probability ~0
                others = torch.cat([known, *[r.unsqueeze(0) for r in out]])
                finite = bool(torch.isfinite(row).all())
                if finite and (
                    others.numel() == 0 or torch.cdist(row[None], others).min() >= _DUPLICATE_TOL
                ):
                    break
                row = self._draw_sobol(1)[0]
            out.append(row.clamp(0.0, 1.0))
        return torch.stack(out)

    def _gp_candidates(
        self, n: int, train_x: torch.Tensor, pending: torch.Tensor
    ) -> torch.Tensor | None:
        """``n x d`` acquisition maximisers, or ``None`` if the GP step failed."""
        _load_gp_libs()
        with warnings.catch_warnings(), _cpu_default_device():
            # botorch/gpytorch warn about standardisation, jitter, restarts... on
            # exactly the small, degenerate data this searcher must tolerate.
            warnings.simplefilter("ignore", BotorchWarning)
            warnings.simplefilter("ignore", NumericalWarning)
            warnings.simplefilter("ignore", GPInputWarning)
            # optimize_acqf re-raises failed restarts as a plain RuntimeWarning.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"botorch\.")
            try:
                if self.fast_1d and self.dim == 1:
                    with _single_thread():
                        if n == 1 and not len(pending):
                            x = self._prior_candidate(train_x)
                            if x is not None:
                                return x
                        model = self._fit_model_1d(train_x)
                        # Not inference_mode: botorch caches constant tensors across calls,
                        # and inference tensors among them would break later autograd.
                        with torch.no_grad():
                            acqf = self._make_acquisition(
                                model, train_x, n, pending, direct_incumbent=True
                            )
                            return self._maximise_on_grid(acqf, n, pending)
                model = self._fit_model(train_x)
                acqf = self._make_acquisition(model, train_x, n, pending)
                bounds = torch.stack(
                    [torch.zeros(self.dim, dtype=_DTYPE), torch.ones(self.dim, dtype=_DTYPE)]
                )
                cand, _ = optimize_acqf(
                    acqf,
                    bounds=bounds,
                    q=n,
                    num_restarts=self.num_restarts,
                    raw_samples=self.raw_samples,
                    sequential=n > 1,
                )
            except _FIT_ERRORS as exc:
                # Start the next fit from scratch rather than from what may have caused this.
                self._clear_warm_start()
                self._gp_error = f"{type(exc).__name__}: {exc}"
                return None
        cand = cand.detach().to(device=_DEVICE, dtype=_DTYPE).reshape(n, self.dim)
        return cand

    def _fit_model_1d(self, train_x: torch.Tensor) -> SingleTaskGP:
        """The model of the 1-D path: a refit only every few observations (see the class)."""
        n_obs = len(train_x)
        if n_obs < self.fit_min_obs:
            return self._prior_model(train_x)
        hypers = self._warm_hypers
        if (
            hypers is None
            or not self._warm_cold_n <= self._warm_fit_n <= n_obs
            or n_obs - self._warm_cold_n >= _COLD_REFIT_EVERY
        ):
            model = self._fit_model(train_x)
            self._warm_cold_n = n_obs
        elif n_obs - self._warm_fit_n < _REFIT_EVERY:
            model = self._fit_model(train_x, init=hypers, refit=False, covar=self._warm_covar)
            self._warm_covar = model.covar_module
            return model
        else:
            model = self._fit_model(
                train_x, init=hypers, maxiter=_WARM_MAXITER, covar=self._warm_covar
            )
        self._warm_hypers = self.fitted_hyperparameters
        self._warm_fit_n = n_obs
        self._warm_covar = model.covar_module
        return model

    def _prior_model(self, train_x: torch.Tensor) -> SingleTaskGP:
        """The 1-D model with fixed hyperparameters (see ``fit_min_obs``); no fit."""
        fitted = self.fitted_hyperparameters  # _fit_model records the unfitted values
        model = self._fit_model(train_x, refit=False)
        self.fitted_hyperparameters = fitted
        with torch.no_grad():
            _set_prior_hypers(model.covar_module)
            model.mean_module.constant.fill_(0.0)
        return model

    def _prior_candidate(self, train_x: torch.Tensor) -> torch.Tensor | None:
        """The 1-D prior model's LogEI maximiser without building the model (``1 x 1``).

        ``None`` where it does not apply: a model to fit, UCB, or no observation noise
        given (the model then infers it). Building the ``SingleTaskGP`` of
        :meth:`_prior_model` (kernel, priors, likelihood, outcome transform) was ~2.5 ms
        of a ~4 ms suggestion, the budget variant's one GP step per run. Its posterior is
        computed from the same pieces (botorch's ``Standardize`` and gpytorch's fixed-noise
        likelihood on this call's data, and one kernel module with the prior's
        hyperparameters, built once per process): the same values, bit for bit (tested).
        """
        if len(train_x) >= self.fit_min_obs or self.acquisition != "logei":
            return None
        train_y, train_yvar = self._targets()
        if train_yvar is None:
            return None
        with torch.no_grad():
            post = _DirectPosterior.prior(train_x, train_y, train_yvar)
            if post.stdv is None:
                return None
            best_f = post.best_mean_at_train()

        def log_ei(x: torch.Tensor) -> torch.Tensor:  # the DirectLogEI forward, maximize=True
            return _DirectLogEI.apply(x.reshape(-1, x.shape[-1]), post, best_f, True)

        return self._maximise_on_grid(log_ei, 1, train_x[:0])

    def _targets(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``train_Y`` and ``train_Yvar`` (``n x 1``; ``None`` when no noise was given) of the GP.

        Minimisation is done by maximising -y, the convention botorch is built for.
        """
        modelled, noises = self._modelled()
        values = torch.tensor(modelled, dtype=_DTYPE, device=_DEVICE)
        var_y = float(values.var()) if len(values) > 1 else 0.0
        if not var_y <= _MAX_TARGET_VAR:
            # A huge finite value (a loss that blew up to 1e200): the standardisation would
            # square it to inf and every GP step would fail. Values and noise scaled by one
            # power of two are the same data to the model (Standardize divides the scale
            # out, exactly); ordinary data never comes here.
            values, noises = _scaled_down(values, noises)
            var_y = float(values.var())
        train_y = (-values).unsqueeze(-1)
        if all(s is None for s in noises):
            return train_y, None
        scale = var_y if var_y > 0 else 1.0
        yvar = [
            _DEFAULT_REL_NOISE_VAR * scale
            if s is None or bad
            else max(s * s, _MIN_REL_NOISE_VAR * scale)
            for s, bad in zip(noises, self.failed)
        ]
        return train_y, torch.tensor(yvar, dtype=_DTYPE, device=_DEVICE).unsqueeze(-1)

    def _fit_model(
        self,
        train_x: torch.Tensor,
        *,
        init: Mapping[str, list[float]] | None = None,
        maxiter: int | None = None,
        refit: bool = True,
        covar: ScaleKernel | None = None,
    ) -> SingleTaskGP:
        """The GP on all observations, its hyperparameters fitted by maximum likelihood.

        Args:
            train_x: The observed configs in the unit cube (``n x d``).
            init: Starting hyperparameters; ``None`` uses ``init_hyperparameters``.
            maxiter: Cap on the L-BFGS-B iterations (below any in ``fit_options``).
            refit: ``False`` keeps the starting hyperparameters (no fit).
            covar: The kernel module of an earlier model, to reuse (its hyperparameters
                are overwritten by ``init``); ``None`` builds a new one.
        """
        _load_gp_libs()
        train_y, train_yvar = self._targets()
        if covar is None:
            covar = _matern_kernel(self.dim)
        model = SingleTaskGP(
            train_x,
            train_y,
            train_Yvar=train_yvar,
            covar_module=covar,
            outcome_transform=Standardize(m=1),
        )
        init = self.init_hyperparameters if init is None else init
        if init:
            self._load_hyperparameters(model, init)
        if refit:
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            options = dict(self.fit_options or {})
            if maxiter is not None:
                options["maxiter"] = min(maxiter, int(options.get("maxiter", maxiter)))
            kwargs: dict[str, Any] = {}
            closure = _direct_mll_closure(mll)
            if closure is not None:
                kwargs["closure"] = closure
            if options:
                kwargs["optimizer_kwargs"] = {"options": options}
            fit_gpytorch_mll(mll, **kwargs)
        model.eval()
        self.fitted_hyperparameters = {
            name: [float(x) for x in p.detach().reshape(-1).tolist()]
            for name, p in model.named_parameters()
        }
        return model

    @staticmethod
    def _load_hyperparameters(model: SingleTaskGP, values: Mapping[str, list[float]]) -> None:
        """Copies matching, finite raw values into the model (a warm start of the fit)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                v = values.get(name)
                if v is None or len(v) != p.numel() or not all(math.isfinite(x) for x in v):
                    continue
                p.copy_(torch.tensor(v, dtype=p.dtype, device=p.device).reshape(p.shape))

    def _make_acquisition(
        self,
        model: SingleTaskGP,
        train_x: torch.Tensor,
        n: int,
        pending: torch.Tensor,
        *,
        direct_incumbent: bool = False,
    ) -> AcquisitionFunction:
        x_pending = pending if len(pending) else None
        single = n == 1 and x_pending is None
        direct = (
            _DirectPosterior(model, train_x)
            if single and _DirectPosterior.supports(model)
            else None
        )
        if self.acquisition == "ucb":
            if single:
                return _analytic(UpperConfidenceBound, direct, model, beta=self.beta)
            return qUpperConfidenceBound(model, beta=self.beta, X_pending=x_pending)
        # Incumbent = best posterior mean at the observed points: equals the best
        # observation for (near) noise-free data and is not fooled by a lucky noisy one.
        with torch.no_grad():
            if direct is not None:
                best_f = direct.best_mean_at_train()
            elif direct_incumbent:
                best_f = _best_posterior_mean_at_train(model, train_x)
            else:
                best_f = model.posterior(train_x).mean.max()
        if single:
            return _analytic(LogExpectedImprovement, direct, model, best_f=best_f)
        return qLogExpectedImprovement(model, best_f=best_f, X_pending=x_pending)

    def _maximise_on_grid(
        self,
        acqf: AcquisitionFunction | Callable[[torch.Tensor], torch.Tensor],
        n: int,
        pending: torch.Tensor,
    ) -> torch.Tensor:
        """``n x 1`` maximisers of a 1-D acquisition on a dense grid (greedy for ``n > 1``)."""
        grid = torch.linspace(0.0, 1.0, _GRID_SIZE, dtype=_DTYPE, device=_DEVICE)
        chosen: list[float] = []
        for i in range(n):
            if i:  # sequential greedy, as optimize_acqf(sequential=True) does
                taken = torch.tensor(chosen, dtype=_DTYPE, device=_DEVICE).reshape(-1, 1)
                acqf.set_X_pending(torch.cat([pending, taken]))
            with torch.no_grad():
                # One forward pass: a t-batch of _GRID_SIZE single points.
                values = acqf(grid.reshape(-1, 1, 1)).reshape(-1)
            chosen.append(_refined_argmax(grid, values))
        return torch.tensor(chosen, dtype=_DTYPE, device=_DEVICE).reshape(n, 1)


class _DirectPosterior:
    """The exact posterior of a fitted :class:`SingleTaskGP` at new points, from one Cholesky.

    ``model.posterior`` runs gpytorch's prediction machinery: about 2-5 ms of Python a call,
    and the acquisition optimiser calls it 20-60 times a suggestion, which made a 3-d
    suggestion several times slower than Optuna's ``GPSampler``. The posterior of an exact GP
    is ``m + k* (K + noise)^-1 (y - m)`` and ``k** - k* (K + noise)^-1 k*^T`` in the
    standardised outcome space; with the Cholesky factor of ``K + noise`` computed once, a
    call is one kernel evaluation and a triangular solve. The values are gpytorch's (the
    same hyperparameters, noise and outcome transform; the tests compare values and
    gradients with botorch's own acquisitions).
    """

    def __init__(self, model: SingleTaskGP, train_x: torch.Tensor) -> None:
        with torch.no_grad():  # constants of every call: no graph into the hyperparameters
            self._setup(
                train_x,
                model.covar_module,
                model.likelihood.noise,  # fixed or inferred
                model.mean_module.constant,
                model.train_targets,
                model.outcome_transform,
                written_out=self.supports(model),
            )

    @classmethod
    def prior(
        cls, train_x: torch.Tensor, train_y: torch.Tensor, train_yvar: torch.Tensor
    ) -> _DirectPosterior:
        """The posterior of :meth:`GPSearcher._prior_model` on this data, without the model.

        The pieces ``SingleTaskGP`` would build from ``train_y`` and ``train_yvar``
        (``n x 1``): its ``Standardize`` outcome transform and fixed-noise likelihood, and
        the prior's kernel (:func:`_prior_kernel`); mean constant 0.
        """
        transform = Standardize(m=1)
        y, yvar = transform(train_y, train_yvar, X=train_x)
        transform.eval()
        noise = FixedNoiseGaussianLikelihood(noise=yvar.squeeze(-1)).noise
        self = cls.__new__(cls)
        zero = torch.zeros((), dtype=_DTYPE, device=_DEVICE)
        self._setup(train_x, _prior_kernel(), noise, zero, y.squeeze(-1), transform, True)
        return self

    def _setup(
        self,
        train_x: torch.Tensor,
        kernel: ScaleKernel,
        noise: torch.Tensor,
        constant: torch.Tensor,
        targets: torch.Tensor,
        transform: Any,
        written_out: bool,
    ) -> None:
        self.transform = transform
        self.k_train = kernel(train_x).to_dense()
        noise = noise.reshape(-1).expand(len(train_x))
        self.chol = psd_safe_cholesky(self.k_train + torch.diag_embed(noise))
        self.mean = constant.detach().reshape(())
        resid = (targets - self.mean).unsqueeze(-1)
        self.alpha = torch.cholesky_solve(resid, self.chol)
        # Standardize's constants (the only outcome transform the searcher builds), for
        # the written-out LogEI; None leaves botorch's forward in charge.
        t = self.transform
        std = isinstance(t, Standardize) and t.means.numel() == 1
        self.loc = t.means.detach().reshape(()) if std else None
        self.stdv = t.stdvs.detach().reshape(()) if std else None
        # This searcher's kernel, Matérn-5/2 (ARD) times an output scale, written out
        # with its hyperparameters as constants: gpytorch's module call and its
        # autograd graph through the raw hyperparameters cost ~4x the arithmetic. Only
        # mean_and_sigma needs them; the incumbent (best_mean_at_train) takes any kernel.
        if written_out:
            self.outputscale = kernel.outputscale.detach().reshape(())
            self.lengthscale = kernel.base_kernel.lengthscale.detach().reshape(-1)
            self.train_z = train_x / self.lengthscale

    @staticmethod
    def supports(model: SingleTaskGP) -> bool:
        """Whether ``model``'s kernel is the one written out here (see ``_fit_model``)."""
        kernel = model.covar_module
        return (
            isinstance(kernel, ScaleKernel)
            and type(kernel.base_kernel) is MaternKernel
            and kernel.base_kernel.nu == 2.5
        )

    def best_mean_at_train(self) -> torch.Tensor:
        """``model.posterior(train_x).mean.max()`` (a scalar tensor)."""
        best = (self.mean + (self.k_train @ self.alpha).squeeze(-1)).max()
        return self.transform.untransform(best.reshape(1, 1))[0].reshape(())

    def mean_and_sigma(
        self, x: torch.Tensor, compute_sigma: bool = True, min_var: float = 1e-12
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``AnalyticAcquisitionFunction._mean_and_sigma`` for ``x`` of shape ``... x 1 x d``."""
        shape = (*x.shape[:-2], 1)
        mean, var = _StandardisedPosterior.apply(x.reshape(-1, x.shape[-1]), self)
        if not compute_sigma:
            return self.transform.untransform(mean.unsqueeze(-1))[0].reshape(shape), None
        mean, var = self.transform.untransform(mean.unsqueeze(-1), var.unsqueeze(-1))
        # gpytorch's MultivariateNormal.variance floor (1e-10 in float64). botorch's posterior
        # computes the variance of the untransformed distribution, so the floor applies there.
        var = var.clamp_min(min_variance.value(var.dtype))
        return mean.reshape(shape), var.clamp_min(min_var).sqrt().reshape(shape)


def _direct_mll_closure(mll: ExactMarginalLogLikelihood) -> Any:
    """The loss closure botorch's fit would build for ``mll`` (its negative marginal log
    likelihood per point and the gradients of its raw hyperparameters), with this
    searcher's kernel written out; ``None`` (botorch's own) for any other model.

    gpytorch's lazily evaluated kernel and likelihood cost ~2.6 ms a call on 50 points, and
    the fit calls it ~10 times a suggestion. Written out: the Matérn-5/2 kernel on fixed
    distances, one Cholesky factor (``psd_safe_cholesky``, as gpytorch's), the Gaussian log
    density with its gradient in closed form (:class:`_MaternLogLikelihood`), and the same
    priors through the model's own prior modules. Only for fixed
    (given) observation noise, the case of every searcher here that receives noise; tests
    compare value and gradients with botorch's closure.
    """
    model = mll.model
    if not (
        _DirectPosterior.supports(model)
        and isinstance(model.likelihood, FixedNoiseGaussianLikelihood)
        and getattr(model, "input_transform", None) is None
    ):
        return None
    # fit_gpytorch_mll_scipy's parameters, in its order: the gradients must line up.
    params = [p for p in get_parameters_and_bounds(mll)[0].values() if p.requires_grad]
    kernel = model.covar_module
    base = kernel.base_kernel
    x = model.train_inputs[0]
    y = model.train_targets
    n = y.shape[-1]
    noise = torch.diag_embed(model.likelihood.noise.detach().reshape(-1).expand(n))
    diff2 = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2)  # n x n x d: fixed during the fit
    priors = [(module, prior, closure) for _, module, prior, closure, _ in mll.named_priors()]

    def closure() -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        for p in params:
            p.grad = None
        ll = _MaternLogLikelihood.apply(
            base.lengthscale.reshape(-1),
            kernel.outputscale.reshape(()),
            model.mean_module.constant.reshape(()),
            diff2,
            y,
            noise,
        )
        for module, prior, prior_closure in priors:
            ll = ll + prior.log_prob(prior_closure(module)).sum()
        loss = -ll / n
        loss.backward()
        return loss.detach(), tuple(p.grad for p in params)

    return closure


def _matern52_parts(sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matérn-5/2 at squared scaled distances ``sq``, as gpytorch computes it: the polynomial
    ``1 + sqrt(5) r + 5/3 r^2``, ``sqrt(5) r`` and ``exp(-sqrt(5) r)`` (correlation = first x
    last), with gpytorch's distance floor, which keeps sqrt's gradient finite at ``r = 0``."""
    r5 = math.sqrt(5.0) * sq.clamp_min(1e-30).sqrt()
    return 1.0 + r5 + (5.0 / 3.0) * sq, r5, torch.exp(-r5)


def _matern52_radial(
    outputscale: torch.Tensor, r5: torch.Tensor, damp: torch.Tensor
) -> torch.Tensor:
    """``-2 s dM/d(r^2) = 5/3 s (1 + sqrt(5) r) exp(-sqrt(5) r)``: times ``(x_i - x) / l^2``
    the kernel's gradient in ``x``, times ``dx^2 / l^3`` its derivative in ``l``."""
    return (5.0 / 3.0) * outputscale * (1.0 + r5) * damp


def _posterior_parts(
    post: _DirectPosterior, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Standardised mean and variance of ``post`` at ``b x d`` points (before the outcome
    transform and the variance floor), and what :func:`_posterior_grad` needs."""
    xz = x / post.lengthscale
    diff = post.train_z.unsqueeze(1) - xz.unsqueeze(0)  # n x b x d
    sq = diff.pow(2).sum(-1)
    poly, r5, damp = _matern52_parts(sq)
    cross = post.outputscale * poly * damp  # k(train_x, x)
    mean = post.mean + (cross * post.alpha).sum(0)
    v = torch.linalg.solve_triangular(post.chol, cross, upper=False)
    var = post.outputscale - (v * v).sum(0)  # a stationary kernel's k(x, x)
    return mean, var, (diff, r5, damp, v)


def _posterior_grad(
    post: _DirectPosterior,
    saved: Sequence[torch.Tensor],
    grad_mean: torch.Tensor,
    grad_var: torch.Tensor,
) -> torch.Tensor:
    """Gradient at the ``b x d`` points of ``grad_mean . mean + grad_var . var``.

    For Matérn-5/2, ``dk_i/dx = -5/3 s (1 + sqrt(5) r_i) exp(-sqrt(5) r_i) (x - x_i) / l^2``,
    so ``d mean = alpha^T dk`` and ``d var = -2 (K^-1 k)^T dk``: one more triangular solve.
    """
    diff, r5, damp, v = saved
    # diff holds (x_i - x) / l, hence no minus sign.
    radial = _matern52_radial(post.outputscale, r5, damp)  # n x b
    w = torch.linalg.solve_triangular(post.chol.mT, v, upper=True)  # K^-1 k, n x b
    coeff = radial * (post.alpha * grad_mean - 2.0 * w * grad_var)  # n x b
    return (coeff.unsqueeze(-1) * diff).sum(0) / post.lengthscale


class _MaternLogLikelihood(torch.autograd.Function):
    """Gaussian log density of the (standardised) targets under the Matérn-5/2 GP with fixed
    noise, ``log N(y | c, s M(l) + D)``, with its gradient in ``(l, s, c)`` written out.

    Autograd's backward through the kernel matrix and the Cholesky factor was most of a
    fit's loss evaluation. With ``alpha = K^-1 (y - c)`` and ``W = (alpha alpha^T - K^-1)/2``:
    ``d/dc = sum(alpha)``, ``d/ds = <W, M>`` and, as ``dM/d(r^2) = -5/6 (1 + sqrt(5) r)
    exp(-sqrt(5) r)``, ``d/dl_d = <W, 5/3 s (1 + sqrt(5) r) exp(-sqrt(5) r) dx_d^2> / l_d^3``.
    ``diff2`` holds the squared coordinate differences ``dx_d^2`` of the training points
    (``n x n x d``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lengthscale: torch.Tensor,
        outputscale: torch.Tensor,
        constant: torch.Tensor,
        diff2: torch.Tensor,
        y: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        sq = diff2 @ lengthscale.pow(-2)  # squared scaled distances, one matrix product
        poly, r5, damp = _matern52_parts(sq)
        corr = poly * damp
        chol = psd_safe_cholesky(outputscale * corr + noise)  # as gpytorch's log_prob
        resid = (y - constant).unsqueeze(-1)
        z = torch.linalg.solve_triangular(chol, resid, upper=False)
        n = y.shape[-1]
        ll = -0.5 * z.pow(2).sum() - chol.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)
        ctx.save_for_backward(lengthscale, outputscale, diff2, r5, damp, corr, chol, z)
        return ll

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None, None]:
        lengthscale, outputscale, diff2, r5, damp, corr, chol, z = ctx.saved_tensors
        alpha = torch.linalg.solve_triangular(chol.mT, z, upper=True)  # n x 1
        w = 0.5 * (alpha @ alpha.mT - torch.cholesky_inverse(chol))
        d_scale = (w * corr).sum()
        radial = w * _matern52_radial(outputscale, r5, damp)
        n, d = diff2.shape[0], diff2.shape[-1]
        d_length = (radial.reshape(1, n * n) @ diff2.reshape(n * n, d)).reshape(d)
        d_length = d_length / lengthscale.pow(3)
        d_const = alpha.sum()
        return grad * d_length, grad * d_scale, grad * d_const, None, None, None


class _StandardisedPosterior(torch.autograd.Function):
    """:func:`_posterior_parts` with the written-out gradient of :func:`_posterior_grad`.

    The acquisition optimiser differentiates the acquisition 20-60 times a suggestion, and
    autograd's backward through the kernel and the triangular solve was a third of a 3-d
    suggestion. Tests compare values and gradients with botorch's own acquisitions.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, post: _DirectPosterior
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var, saved = _posterior_parts(post, x)
        ctx.post = post
        ctx.save_for_backward(*saved)
        return mean, var

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_mean: torch.Tensor, grad_var: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return _posterior_grad(ctx.post, ctx.saved_tensors, grad_mean, grad_var), None


class _DirectLogEI(torch.autograd.Function):
    """botorch's ``LogExpectedImprovement`` at ``b x d`` points of a :class:`_DirectPosterior`
    (the same operations, values equal), with its gradient written out.

    After the posterior's, the backward through botorch's numerically careful
    ``_log_ei_helper`` (two masked branches, ~40 autograd nodes) was what remained of the
    acquisition's cost. With ``u = +-(mean - best_f) / sigma`` and ``h(u) = phi(u) + u Phi(u)``,
    ``d log h / du = Phi(u) / h(u)``, taken as ``exp(log_ndtr(u) - log_h(u))`` (finite for
    any ``u`` the forward handles); so ``d/dmean = +-ratio / sigma`` and
    ``d/dsigma = (1 - u ratio) / sigma``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, post: _DirectPosterior, best_f: torch.Tensor, maximize: bool
    ) -> torch.Tensor:
        mean_s, var_s, saved = _posterior_parts(post, x)
        stdv = post.stdv
        mean = post.loc + stdv * mean_s
        raw = stdv * stdv * var_s
        floor = max(min_variance.value(var_s.dtype), 1e-12)  # as mean_and_sigma, min_var
        sigma = raw.clamp_min(floor).sqrt()
        u = (mean - best_f) / sigma
        if not maximize:
            u = -u
        log_h = _log_ei_helper(u)
        ctx.post, ctx.maximize = post, maximize
        live = raw > floor  # where the floor is not in force
        ctx.save_for_backward(*saved, u, log_h, sigma, live)
        return log_h + sigma.log()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None, None]:
        *saved, u, log_h, sigma, live = ctx.saved_tensors
        post: _DirectPosterior = ctx.post
        ratio = torch.exp(torch.special.log_ndtr(u) - log_h)  # d log h / du
        d_mean = (ratio if ctx.maximize else -ratio) / sigma
        d_sigma = (1.0 - u * ratio) / sigma
        stdv = post.stdv
        grad_mean = grad * d_mean * stdv
        # sigma = stdv sqrt(var_s): d sigma / d var_s = stdv^2 / (2 sigma).
        grad_var = torch.where(live, grad * d_sigma * stdv * stdv / (2.0 * sigma), 0.0)
        return _posterior_grad(post, saved, grad_mean, grad_var), None, None, None


@functools.cache
def _direct_acquisition(base: type) -> type:
    """``base`` (an analytic botorch acquisition) reading a :class:`_DirectPosterior`.

    Built on first use, because botorch is imported lazily (see ``_load_gp_libs``).
    """

    class Direct(base):  # type: ignore[misc, valid-type]
        direct: _DirectPosterior

        def _mean_and_sigma(
            self, X: torch.Tensor, compute_sigma: bool = True, min_var: float = 1e-12
        ) -> tuple[torch.Tensor, torch.Tensor | None]:
            return self.direct.mean_and_sigma(X, compute_sigma, min_var)

    if issubclass(base, LogExpectedImprovement):

        class DirectLogEI(Direct):
            @t_batch_mode_transform(expected_q=1)
            def forward(self, X: torch.Tensor) -> torch.Tensor:
                if self.direct.stdv is None:
                    return super().forward(X)
                flat = X.reshape(-1, X.shape[-1])
                value = _DirectLogEI.apply(flat, self.direct, self.best_f, self.maximize)
                return value.reshape(X.shape[:-2])

        Direct = DirectLogEI

    Direct.__name__ = Direct.__qualname__ = f"Direct{base.__name__}"
    return Direct


def _analytic(
    base: type, direct: _DirectPosterior | None, model: SingleTaskGP, **kwargs: Any
) -> AcquisitionFunction:
    """``base(model, **kwargs)``, reading ``direct``'s posterior when there is one."""
    if direct is None:
        return base(model, **kwargs)
    acqf = _direct_acquisition(base)(model, **kwargs)
    acqf.direct = direct
    return acqf


def _best_posterior_mean_at_train(model: SingleTaskGP, train_x: torch.Tensor) -> torch.Tensor:
    """``model.posterior(train_x).mean.max()`` for this searcher's model, computed directly
    (see :class:`_DirectPosterior`)."""
    return _DirectPosterior(model, train_x).best_mean_at_train()


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Limits torch to one intra-op thread for the block, then restores the count.

    The 1-D GP's tensors are tiny, so extra threads only add synchronisation; on a busy CPU
    (data-loader workers, other jobs) each parallel op then waits for a descheduled thread,
    which made a suggestion 10-20x slower in measurements.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _refined_argmax(grid: torch.Tensor, values: torch.Tensor) -> float:
    """Argmax of ``values`` on the equally spaced ``grid``, moved to the vertex of the
    parabola through it and its neighbours (stays within half a grid step).

    Raises:
        ValueError: If no value is finite.
    """
    values = torch.nan_to_num(values, nan=-math.inf, posinf=-math.inf)
    i = int(values.argmax())
    if not math.isfinite(float(values[i])):
        raise ValueError("the acquisition function is not finite anywhere on the grid")
    x = float(grid[i])
    if 0 < i < len(grid) - 1:
        left, mid, right = (float(v) for v in values[i - 1 : i + 2])
        curvature = left - 2.0 * mid + right
        # A strict maximum of finite values: the vertex lies within [-1/2, 1/2] steps.
        if math.isfinite(curvature) and curvature < 0.0:
            x += 0.5 * (left - right) / curvature * float(grid[1] - grid[0])
    return x
