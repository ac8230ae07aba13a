"""``import autolr`` stays light and warning-clean; subpackages raise autolr's error types.

* ``import autolr`` (and ``autolr.searchers`` / ``autolr.predictors``) loads no GP library
  (botorch, gpytorch, linear_operator), no scipy and no framework; a GP loads them when it
  first needs them, with the same suggestions as when they were loaded already.
* Under ``-W error::DeprecationWarning`` neither the import nor a GP search fails on
  third-party deprecations raised while those libraries import.
* ``autolr.searchers`` and ``autolr.predictors`` raise ``ConfigError`` /
  ``ConfigTypeError`` / ``StateError``, so ``except autolr.AutoLRError`` catches them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import autolr
from autolr import AutoLRError, ConfigError, ConfigTypeError, StateError
from autolr.predictors import ExponentialPredictor
from autolr.searchers import GPSearcher, Param, RandomSearcher

ROOT = Path(autolr.__file__).resolve().parents[1]
HEAVY = (
    "botorch",
    "gpytorch",
    "linear_operator",
    "scipy",
    "ray",
    "optuna",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "flwr",
    "openai",
)


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter that imports this checkout's autolr."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_autolr_loads_no_gp_library_scipy_or_framework() -> None:
    code = (
        "import sys, json\n"
        "import autolr, autolr.searchers, autolr.predictors\n"
        "from autolr.searchers import GPSearcher, Param\n"
        "s = GPSearcher([Param('lr', 1e-4, 1.0, log=True)], seed=0, n_initial=2)\n"
        "s.suggest()  # the quasi-random start needs no GP\n"
        f"before = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "s.observe({'lr': 0.01}, 1.0); s.observe({'lr': 0.1}, 2.0); s.suggest()\n"
        "print(json.dumps([before, 'botorch' in sys.modules, s.n_fallbacks]))\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    before, gp_loaded, fallbacks = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == []
    assert gp_loaded and fallbacks == 0  # the first GP step loaded botorch and used it


def test_import_autolr_under_deprecation_errors() -> None:
    code = "import autolr, autolr.searchers, autolr.predictors"
    out = _python(code, "-W", "error::DeprecationWarning")
    assert out.returncode == 0, out.stderr[-3000:]


_GP_RUN = """
import json, math
from autolr.predictors import ExponentialPredictor
from autolr.searchers import GPSearcher, Param


def run():
    out = []
    for params in ([Param("lr", 1e-4, 1.0, log=True)],
                   [Param("lr", 1e-4, 1.0, log=True), Param("wd", 0.0, 1.0)]):
        s = GPSearcher(params, seed=0, n_initial=2, num_restarts=2, raw_samples=16)
        for _ in range(4):
            (cfg,) = s.suggest()
            s.observe(cfg, (math.log10(cfg["lr"]) + 2) ** 2 + cfg.get("wd", 0.0))
            out.append(cfg)
        out.append(s.n_fallbacks)
    curve = [1.0 + math.exp(-0.3 * i) for i in range(12)]
    out.append(ExponentialPredictor().forecast(curve, 40).value)
    return out
"""


def test_gp_under_deprecation_errors_suggests_as_when_already_loaded() -> None:
    """The first GP step of a process (which imports botorch) under
    ``-W error::DeprecationWarning`` proposes what this process proposes."""
    out = _python(_GP_RUN + "print(json.dumps(run()))\n", "-W", "error::DeprecationWarning")
    assert out.returncode == 0, out.stderr[-3000:]
    there = json.loads(out.stdout.strip().splitlines()[-1])
    ns: dict = {}
    exec(compile(_GP_RUN, "gp_run", "exec"), ns)
    here = ns["run"]()
    assert there == here
    assert there[4] == 0 and there[9] == 0  # no fallback: the GP really ran


# ------------------------------------------------------------------------- error types
_LIN = [Param("x", 0.0, 1.0)]


def _bad_state(searcher_cls: type) -> Callable[[], None]:
    def call() -> None:
        s = searcher_cls(_LIN, seed=0)
        state = s.state_dict()
        state["seed"] = "abc"
        s.load_state_dict(state)

    return call


def _bad_warm_start() -> None:
    s = GPSearcher(_LIN, seed=0)
    state = s.state_dict()
    state["gp_warm_start"] = {"hypers": {}, "fit_n": "many"}
    s.load_state_dict(state)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Param("x", 1.0, 0.0), ConfigError, "low must be < high"),
        (lambda: Param("x", "low", 1.0), ConfigTypeError, "low of Param 'x'"),
        (lambda: RandomSearcher([]), ConfigError, "params"),
        (lambda: RandomSearcher([("x", 0, 1)]), ConfigTypeError, r"params\[0\] must be a"),
        (lambda: RandomSearcher(_LIN, seed="0"), ConfigTypeError, "seed"),
        (lambda: RandomSearcher(_LIN, design="grid"), ConfigError, "design"),
        (lambda: GPSearcher(_LIN, n_initial=0), ConfigError, "n_initial"),
        (lambda: GPSearcher(_LIN, acquisition="ei"), ConfigError, "acquisition"),
        (lambda: RandomSearcher(_LIN).suggest(0), ConfigError, "n must be"),
        (lambda: RandomSearcher(_LIN).observe({"x": 0.5}, "low"), ConfigTypeError, "value"),
        (lambda: RandomSearcher(_LIN).observe([0.5], 1.0), ConfigTypeError, "config"),
        (lambda: RandomSearcher(_LIN).set_bounds("y", 0, 1), ConfigError, "name must be"),
        (_bad_state(RandomSearcher), StateError, "seed"),
        (_bad_warm_start, StateError, "gp_warm_start"),
        (lambda: ExponentialPredictor(trim=0.9), ConfigError, "trim"),
        (lambda: ExponentialPredictor().forecast([[1.0, 2.0]], 5), ConfigError, "values"),
        (lambda: ExponentialPredictor().forecast([1.0, 2.0], "x"), ConfigError, "target"),
        (lambda: ExponentialPredictor().load_state_dict({"bogus": 1}), StateError, "unknown"),
        (lambda: ExponentialPredictor().load_state_dict({"trim": 0.9}), StateError, "trim"),
        (lambda: ExponentialPredictor().load_state_dict([1]), StateError, "mapping"),
    ],
)
def test_searchers_and_predictors_raise_autolr_errors(
    call: Callable[[], object], error: type[AutoLRError], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, AutoLRError)
    # still the builtin type existing callers catch
    assert isinstance(info.value, TypeError if error is ConfigTypeError else ValueError)


def test_optuna_adapter_rejects_multi_objective_with_config_error() -> None:
    optuna = pytest.importorskip("optuna")
    from autolr.integrations.optuna import AutoLRSSampler, ForecastPruner

    study = optuna.create_study(directions=["minimize", "minimize"])
    with pytest.raises(ConfigError, match="single-objective studies only; got 2"):
        AutoLRSSampler(seed=0).gp_data(study)
    study.ask()
    with pytest.raises(ConfigError, match="ForecastPruner"):
        ForecastPruner().prune(study, study.trials[0])


def test_every_public_exception_is_an_autolr_error() -> None:
    """``except autolr.AutoLRError`` catches whatever autolr raises on purpose, including the
    LLM client's transport errors (``LLMClient.complete`` raises ``LLMError`` to its caller)."""
    import importlib

    found = []
    for name in ("autolr", "autolr.searchers", "autolr.predictors", "autolr.federated",
                 "autolr.stn", "autolr.testing"):  # fmt: skip
        mod = importlib.import_module(name)
        for attr in mod.__all__:
            obj = getattr(mod, attr)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found.append(obj)
                assert issubclass(obj, AutoLRError) or issubclass(obj, Warning), (name, attr)
    from autolr.searchers import LLMError

    assert LLMError in found and issubclass(LLMError, AutoLRError)


@pytest.mark.parametrize(
    "build",
    [
        "AutoLRS(m, opt, lr_bounds=(1e-3, 1.0), max_steps=200)",
        # The core the Ray scheduler builds in its driver (before any trial reports).
        "StageSearch.for_variant('budget', max_steps=200, structure={}, policy=None, "
        "lr_bounds=(1e-3, 1.0))",
    ],
    ids=["AutoLRS", "StageSearch"],
)
def test_autolrs_imports_its_gp_before_training(build: str) -> None:
    """The GP's one-time imports (botorch, and sympy behind torch.broadcast_shapes) and one
    throwaway 1-D GP step happen when the decision core is built (``AutoLRS(...)``, the Ray
    scheduler's ``StageSearch``), not inside the training step or barrier that makes the
    first GP suggestion; the caller's random streams are untouched."""
    code = (
        "import sys, json, random, numpy as np, torch\n"
        "from autolr import AutoLRS\n"
        "from autolr._autolrs._stage import StageSearch\n"
        "from autolr.searchers import _gp\n"
        "m = torch.nn.Linear(2, 1)\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "before = ['botorch' in sys.modules, 'sympy' in sys.modules, _gp._warmed_1d]\n"
        "torch.manual_seed(5); np.random.seed(5); random.seed(5)\n"
        f"{build}\n"
        "draws = [torch.rand(1).item(), float(np.random.rand()), random.random()]\n"
        "torch.manual_seed(5); np.random.seed(5); random.seed(5)\n"
        "same = draws == [torch.rand(1).item(), float(np.random.rand()), random.random()]\n"
        "after = ['botorch' in sys.modules, 'sympy' in sys.modules, _gp._warmed_1d]\n"
        "print(json.dumps([before, after, same]))\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    before, after, same = json.loads(out.stdout.strip().splitlines()[-1])
    # (autolr's own imports may load sympy)
    assert before[0] is False and before[2] is False and all(after) and same
