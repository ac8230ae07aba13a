"""Bayesian optimisation with a botorch Gaussian process (minimisation)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from botorch.acquisition import (
    AcquisitionFunction,
    LogExpectedImprovement,
    UpperConfidenceBound,
    qLogExpectedImprovement,
    qUpperConfidenceBound,
)
from botorch.exceptions.errors import BotorchError, ModelFittingError
from botorch.exceptions.warnings import BotorchWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from gpytorch.utils.errors import NanError, NotPSDError
from gpytorch.utils.warnings import GPInputWarning, NumericalWarning

from ._base import _DEVICE, _DTYPE, Param, Searcher

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
# quasi-random points rather than crash a training run.
_FIT_ERRORS: tuple[type[BaseException], ...] = (
    BotorchError,
    ModelFittingError,
    NotPSDError,
    NanError,
    RuntimeError,
    ValueError,
    torch.linalg.LinAlgError,
    ArithmeticError,
)


class GPSearcher(Searcher):
    """GP-based Bayesian optimisation (Matérn-5/2 ARD, LogEI or UCB).

    The first ``n_initial`` configs (counting pending ones) come from a scrambled
    Sobol sequence. Afterwards a ``SingleTaskGP`` is fitted in double precision
    on the CPU to the unit-cube inputs (log-space for log params) and
    standardised outcomes, and the acquisition function is maximised over the
    unit cube. Observed noise (``observe(..., noise=...)``) switches the model to
    fixed heteroskedastic noise; observations without one then get a variance of
    ``1e-4 * Var(y)``. Without any noise given, a homoskedastic noise level is
    inferred. Whenever fitting or optimisation fails (degenerate data, linear
    algebra errors), or a candidate duplicates a known point, quasi-random points
    are used instead.

    Args:
        params: The search dimensions.
        seed: Seed of all randomness; ``None`` draws one from the OS.
        n_initial: Number of quasi-random configs before the GP takes over (``>= 1``).
        acquisition: ``"logei"`` (log expected improvement) or ``"ucb"``.
        beta: Exploration weight of ``"ucb"`` (``mean - sqrt(beta) * std`` is minimised).
        num_restarts: Restarts of the acquisition optimiser.
        raw_samples: Random samples used to pick the restart points.
        fit_options: Options of the L-BFGS-B fit of the GP hyperparameters (scipy's
            ``options``, e.g. ``{"ftol": 1e-6}``); ``None`` keeps botorch's defaults.
            Looser tolerances make each suggestion cheaper.
        init_hyperparameters: Starting values of the GP hyperparameters for the fit (a warm
            start), as in :attr:`fitted_hyperparameters` of an earlier fit: ``{name: flat
            list of raw values}``. Entries whose name or size does not match the model, or
            that are not finite, are ignored (the default initialisation is kept).

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
    ) -> None:
        if isinstance(n_initial, bool) or not isinstance(n_initial, int) or n_initial < 1:
            raise ValueError(f"n_initial must be an int >= 1, got {n_initial!r}")
        if acquisition not in _ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {_ACQUISITIONS}, got {acquisition!r}")
        if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite float >= 0, got {beta!r}")
        if isinstance(num_restarts, bool) or not isinstance(num_restarts, int) or num_restarts < 1:
            raise ValueError(f"num_restarts must be an int >= 1, got {num_restarts!r}")
        if (
            isinstance(raw_samples, bool)
            or not isinstance(raw_samples, int)
            or raw_samples < num_restarts
        ):
            raise ValueError(
                f"raw_samples must be an int >= num_restarts ({num_restarts}), got {raw_samples!r}"
            )
        if fit_options is not None and not isinstance(fit_options, dict):
            raise ValueError(f"fit_options must be a dict or None, got {fit_options!r}")
        if init_hyperparameters is not None and not isinstance(init_hyperparameters, Mapping):
            raise ValueError(
                f"init_hyperparameters must be a mapping or None, got {init_hyperparameters!r}"
            )
        super().__init__(params, seed=seed)
        self.fit_options = dict(fit_options) if fit_options else None
        self.init_hyperparameters = (
            {str(k): [float(x) for x in v] for k, v in init_hyperparameters.items()}
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

    def __repr__(self) -> str:
        return (
            f"GPSearcher(params={list(self.params)!r}, seed={self.seed}, "
            f"n_initial={self.n_initial}, acquisition={self.acquisition!r}, "
            f"n_observations={len(self)})"
        )

    # ---------------------------------------------------------------- suggest
    def _suggest_unit(self, n: int, pending: torch.Tensor) -> torch.Tensor:
        train_x = self._tuples_to_unit(self._configs)
        n_known = len(train_x) + len(pending)
        n_sobol = min(n, max(0, self.n_initial - n_known))
        # Without any finite observation the GP would only see the constant penalty.
        if all(self.failed):
            n_sobol = n
        chosen = self._draw_sobol(n_sobol)
        n_gp = n - n_sobol
        if n_gp > 0:
            gp_x = self._gp_candidates(n_gp, train_x, torch.cat([pending, chosen]))
            if gp_x is None:
                self.n_fallbacks += 1
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
        with warnings.catch_warnings():
            # botorch/gpytorch warn about standardisation, jitter, restarts... on
            # exactly the small, degenerate data this searcher must tolerate.
            warnings.simplefilter("ignore", BotorchWarning)
            warnings.simplefilter("ignore", NumericalWarning)
            warnings.simplefilter("ignore", GPInputWarning)
            # optimize_acqf re-raises failed restarts as a plain RuntimeWarning.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"botorch\.")
            try:
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
            except _FIT_ERRORS:
                return None
        cand = cand.detach().to(device=_DEVICE, dtype=_DTYPE).reshape(n, self.dim)
        return cand

    def _fit_model(self, train_x: torch.Tensor) -> SingleTaskGP:
        # Minimisation is done by maximising -y, the convention botorch is built for.
        values = torch.tensor(self._values(), dtype=_DTYPE, device=_DEVICE)
        train_y = (-values).unsqueeze(-1)
        train_yvar = None
        if any(s is not None for s in self._noises):
            var_y = float(values.var()) if len(values) > 1 else 0.0
            scale = var_y if var_y > 0 else 1.0
            failed = self.failed
            yvar = [
                _DEFAULT_REL_NOISE_VAR * scale
                if s is None or bad
                else max(s * s, _MIN_REL_NOISE_VAR * scale)
                for s, bad in zip(self._noises, failed)
            ]
            train_yvar = torch.tensor(yvar, dtype=_DTYPE, device=_DEVICE).unsqueeze(-1)
        d = self.dim
        # Matérn-5/2 with ARD and the priors botorch used as its default for years
        # (lengthscale ~ Gamma(3, 6) on the unit cube); botorch >= 0.12 defaults to
        # an RBF kernel with dimension-scaled priors meant for high-dimensional BO.
        covar = ScaleKernel(
            MaternKernel(
                nu=2.5,
                ard_num_dims=d,
                lengthscale_prior=GammaPrior(3.0, 6.0),
                lengthscale_constraint=GreaterThan(1e-3),
            ),
            outputscale_prior=GammaPrior(2.0, 0.15),
        ).to(dtype=_DTYPE)
        model = SingleTaskGP(
            train_x,
            train_y,
            train_Yvar=train_yvar,
            covar_module=covar,
            outcome_transform=Standardize(m=1),
        )
        if self.init_hyperparameters:
            self._load_hyperparameters(model, self.init_hyperparameters)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        if self.fit_options:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": dict(self.fit_options)})
        else:
            fit_gpytorch_mll(mll)
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
        self, model: SingleTaskGP, train_x: torch.Tensor, n: int, pending: torch.Tensor
    ) -> AcquisitionFunction:
        x_pending = pending if len(pending) else None
        if self.acquisition == "ucb":
            if n == 1 and x_pending is None:
                return UpperConfidenceBound(model, beta=self.beta)
            return qUpperConfidenceBound(model, beta=self.beta, X_pending=x_pending)
        # Incumbent = best posterior mean at the observed points: equals the best
        # observation for (near) noise-free data and is not fooled by a lucky noisy one.
        with torch.no_grad():
            best_f = model.posterior(train_x).mean.max()
        if n == 1 and x_pending is None:
            return LogExpectedImprovement(model, best_f=best_f)
        return qLogExpectedImprovement(model, best_f=best_f, X_pending=x_pending)
