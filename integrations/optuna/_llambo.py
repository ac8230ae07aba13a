"""Optuna sampler driven by :class:`~autolr.searchers._llm.LLMSearcher` (LLAMBO).

Loaded lazily as ``autolr.integrations.optuna.LLAMBOSampler``: it needs the ``llm`` extra
(openai), which ``import autolr.integrations.optuna`` must not import.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from autolr._errors import ConfigError, ConfigTypeError
from autolr.searchers._base import _cpu_default_device
from autolr.searchers._llm import LLMSearcher
from autolr.searchers._llm_client import LLMClient, client_or_new

from ._base import _NumericSampler
from ._common import (
    _check_single_objective,
    _derive_seed,
    _from_param,
    _sign,
    _to_param,
    seed_or_random,
)

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["LLAMBOSampler"]

# LLMSearcher options the sampler forwards (the connection and seed are the sampler's own).
_SEARCHER_OPTIONS = (
    "n_initial",
    "n_candidates",
    "min_candidates",
    "n_samples",
    "alpha",
    "max_context",
    "max_rounds",
    "dup_tol",
    "digits",
)


class LLAMBOSampler(_NumericSampler):
    """LLM-proposal sampler (LLAMBO): numeric parameters through :class:`LLMSearcher`.

    Numeric parameters (float/int, linear or log, with or without ``step``) found in every
    trial so far are proposed jointly by an ``LLMSearcher`` that is rebuilt for each trial
    from the storage: COMPLETE trials are its observations (values negated for
    ``direction="maximize"``), FAIL trials and non-finite values are failures, RUNNING
    trials are pending. Nothing is kept in memory between trials except the client (its
    cache and counters), so several processes sharing a storage decide alike; each trial's
    searcher is seeded with ``(seed, trial number)``, so with the client's cache a study
    replays offline exactly. Every LLM failure falls back to the searcher's GP for that
    trial (``trial.system_attrs["autolr:source"]`` says ``"llm"``, ``"llm-warm"`` or
    ``"gp-fallback"``). Categorical parameters and parameters outside the intersection
    space go to ``independent_sampler``. Multi-objective studies raise ValueError.

    Args:
        task: Short description of what is tuned (model, data, metric) for the prompts.
        objective: Name of the study's value in the prompts.
        seed: Seed of all randomness (``None``: drawn from the OS).
        client: A shared :class:`~autolr.searchers._llm_client.LLMClient`; ``None`` builds
            one from ``base_url``, ``api_key``, ``model``, ``cache_dir``, ``cache_mode``
            (environment variables as in ``LLMClient``).
        timeout: Most seconds one trial's suggestion waits for the LLM.
        independent_sampler: Sampler of categorical/other params. Default: uniform draws
            seeded by ``(seed, trial number, parameter name)``, as ``AutoLRSSampler``'s
            (workers sharing a seed draw distinct first trials).
        searcher_options: Further ``LLMSearcher`` options (``n_initial``, ``n_candidates``,
            ``min_candidates``, ``n_samples``, ``alpha``, ``max_context``, ``max_rounds``,
            ``dup_tol``, ``digits``).

    Raises:
        ConfigError, ConfigTypeError: On invalid arguments.

    Example:
        >>> import optuna
        >>> from autolr.integrations.optuna import LLAMBOSampler
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> sampler = LLAMBOSampler(seed=0, base_url="http://127.0.0.1:9/v1", model="m",
        ...                         timeout=0.2)  # nothing listens: every trial falls back
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=3)
        >>> study.trials[-1].system_attrs["autolr:source"]
        'gp-fallback'
    """

    def __init__(
        self,
        *,
        task: str = "",
        objective: str = "objective",
        seed: int | None = None,
        client: LLMClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_mode: str | None = None,
        timeout: float = 30.0,
        independent_sampler: BaseSampler | None = None,
        searcher_options: Mapping[str, Any] | None = None,
    ) -> None:
        if searcher_options is not None and not isinstance(searcher_options, Mapping):
            raise ConfigTypeError(
                "searcher_options must be a mapping of LLMSearcher options (e.g. "
                f"{{'n_initial': 5}}), got {type(searcher_options).__name__} "
                f"{searcher_options!r}"[:200]
            )
        self._seed = seed_or_random(seed)
        options = dict(searcher_options or {})
        unknown = sorted((k for k in options if k not in _SEARCHER_OPTIONS), key=repr)
        if unknown:
            raise ConfigError(
                f"searcher_options has unknown keys {unknown}; allowed: {list(_SEARCHER_OPTIONS)}"
            )
        # One suggestion at a time: the searcher seeds and restores the global RNGs.
        self._lock = threading.RLock()
        self._init_space(independent_sampler, self._lock)
        self.client = client_or_new(
            client,
            base_url=base_url,
            api_key=api_key,
            model=model,
            cache_dir=cache_dir,
            cache_mode=cache_mode,
        )
        self._task, self._objective, self._timeout = task, objective, timeout
        self._options = options
        #: Diagnostics of the last ``sample_relative`` call (not state; per process).
        self.last_info: dict[str, Any] = {}
        # Validate the searcher options now rather than at the first trial.
        self._searcher([_to_param("x", FloatDistribution(0.0, 1.0))], 0, "")

    def __repr__(self) -> str:
        return f"LLAMBOSampler(seed={self._seed}, model={self.client.model!r})"

    def _searcher(self, params: Sequence[Any], seed: int, objective: str) -> LLMSearcher:
        return LLMSearcher(
            params,
            task=self._task,
            objective=objective or self._objective,
            client=self.client,
            timeout=self._timeout,
            seed=seed,
            **self._options,
        )

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Samples all numeric parameters of ``trial`` jointly through the LLM."""
        _check_single_objective(study, type(self).__name__)
        space, extra = self._split(study, trial, search_space)
        if not space:
            return extra
        params = [_to_param(n, d) for n, d in space.items()]
        sign = _sign(study)
        objective = self._objective if sign > 0 else f"negative {self._objective}"
        with self._lock, _cpu_default_device():
            searcher = self._searcher(params, _derive_seed(self._seed, trial.number), objective)
            pending = []
            for t, cfg in self._configs(study.get_trials(deepcopy=False), trial, space):
                if t.state == TrialState.COMPLETE:
                    v = t.value
                    searcher.observe(cfg, float("nan") if v is None else sign * float(v))
                elif t.state == TrialState.FAIL:
                    searcher.observe(cfg, float("nan"))
                elif t.state == TrialState.RUNNING:
                    pending.append(cfg)
            (values,) = searcher.suggest(1, pending=pending)
            self.last_info = {
                "source": searcher.last_source,
                "n_observations": len(searcher),
                "n_pending": len(pending),
                "events": list(searcher.events),
            }
        out = {n: _from_param(values[n], d) for n, d in space.items()}
        # Other workers see this trial as pending at once (same keys as AutoLRSSampler).
        self._share(study, trial, out, searcher.last_source)
        return {**out, **extra}
