"""Optuna's shipped sampler contract tests, run against :class:`AutoLRSSampler`.

``BasicSamplerTestCase`` (bounds, steps, NaN objectives, conditional and dynamic spaces),
``RelativeSamplerTestCase`` (relative sampling, types, ``n_jobs`` 1 and 2) and
``SingleOnlySamplerTestCase`` (multi-objective studies raise ValueError). The multi-objective
case is not subclassed: the sampler refuses multi-objective studies by design.
"""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from optuna.testing.pytest_samplers import (  # noqa: E402
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from autolr.integrations.optuna import AutoLRSSampler  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class TestAutoLRSSamplerContract(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self):
        # Few startup trials so the 10-trial contract studies reach the GP step.
        return lambda: AutoLRSSampler(seed=0, n_startup_trials=2)
