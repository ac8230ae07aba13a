"""What the GP and LLM samplers share: the numeric search space and independent draws."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

from autolr._validate import check_instance

from ._common import _check_single_objective, _contains, _per_trial_draw
from ._storage import _RELATIVE_PARAMS_KEY, _SOURCE_KEY, _trial_params, _write_chunked

if TYPE_CHECKING:
    from optuna.study import Study


def _is_numeric(dist: BaseDistribution) -> bool:
    return isinstance(dist, (FloatDistribution, IntDistribution)) and not dist.single()


class _NumericSampler(BaseSampler):
    """Samples numeric parameters jointly (``sample_relative`` of the subclass); categorical
    parameters and parameters outside the intersection space go to ``independent_sampler``,
    by default uniform draws seeded by ``(seed, trial number, parameter name)``."""

    _seed: int

    def _init_space(
        self, independent_sampler: BaseSampler | None, lock: threading.Lock | None = None
    ) -> None:
        if independent_sampler is not None:
            check_instance("independent_sampler", independent_sampler, BaseSampler)
        # None: the default, per-trial random draws of sample_independent.
        self._independent_sampler = independent_sampler
        self._search_space = IntersectionSearchSpace(include_pruned=True)
        # IntersectionSearchSpace caches a cursor into the study's trials and is not
        # thread-safe (n_jobs > 1).
        self._space_lock = lock if lock is not None else threading.Lock()

    def reseed_rng(self) -> None:
        """Draws a fresh seed (Optuna calls this per worker thread when ``n_jobs > 1``)."""
        with self._space_lock:
            self._seed = secrets.randbits(63)
            if self._independent_sampler is not None:
                self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Numeric, non-single distributions common to all trials so far."""
        _check_single_objective(study, type(self).__name__)
        with self._space_lock:
            space = self._search_space.calculate(study)
        return {name: dist for name, dist in space.items() if _is_numeric(dist)}

    def _split(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
        """The numeric part of ``search_space`` (sorted by name) and draws for the rest.

        infer_relative_search_space only returns numeric distributions, but callers may
        pass any space: the others are drawn by the independent sampler.
        """
        space = {n: search_space[n] for n in sorted(search_space) if _is_numeric(search_space[n])}
        extra = {
            n: self.sample_independent(study, trial, n, d)
            for n, d in search_space.items()
            if n not in space
        }
        return space, extra

    @staticmethod
    def _configs(
        trials: Iterable[FrozenTrial],
        trial: FrozenTrial | None,
        space: dict[str, BaseDistribution],
    ) -> Iterator[tuple[FrozenTrial, dict[str, float]]]:
        """The trials other than ``trial`` that have every ``space`` parameter (relative
        params another process stored included), with those values."""
        for t in trials:
            if trial is not None and t.number == trial.number:
                continue
            p = _trial_params(t)
            if all(n in p and _contains(d, p[n]) for n, d in space.items()):
                yield t, {n: float(p[n]) for n in space}

    def _share(
        self,
        study: Study,
        trial: FrozenTrial,
        params: dict[str, Any],
        source: str,
        overwrite: bool = False,
    ) -> None:
        """Stores the relative params so other workers see this trial as pending at once,
        and where they came from (``"sobol"``, ``"gp"``, ``"llm"``, ``"sobol-dedup"``...)."""
        study._storage.set_trial_system_attr(trial._trial_id, _SOURCE_KEY, source)
        _write_chunked(study, trial, _RELATIVE_PARAMS_KEY, params, terminate=overwrite)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """A random draw for a parameter outside the joint space (categoricals, dynamic
        spaces, every parameter of the first trials); see ``independent_sampler``."""
        _check_single_objective(study, type(self).__name__)
        if self._independent_sampler is None:
            return _per_trial_draw(self._seed, study, trial, param_name, param_distribution)
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self._independent_sampler is not None:
            self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self._independent_sampler is not None:
            self._independent_sampler.after_trial(study, trial, state, values)
