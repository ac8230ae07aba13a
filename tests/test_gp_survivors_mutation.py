"""GPSearcher: the warning filters of the GP step and the grid maximiser's pending points.

Written for the open `_gp.py` survivors of the mutation run of issue 18 (mutation/README.md).
Warnings are planted through a spy around the real ``optimize_acqf`` (so they are raised
inside the GP step, where botorch's own would be), with the category and module each filter
is about; the real optimiser then runs as usual.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import autolr.searchers._gp as gp_module
from autolr.searchers import GPSearcher, Param

F64 = torch.float64


def _general_path_searcher() -> tuple[GPSearcher, torch.Tensor]:
    s = GPSearcher([Param("x", -2.0, 3.0), Param("lr", 1e-4, 1.0, log=True)], seed=0,
                   num_restarts=2, raw_samples=5)  # fmt: skip
    for xv, lr, v in ((0.0, 1e-3, 1.0), (1.0, 1e-2, 2.0), (-1.0, 1e-1, 0.5)):
        s.observe({"x": xv, "lr": lr}, v)
    return s, s.configs_to_unit([c for c, _ in s.observations])


def _gp_step_with(monkeypatch: pytest.MonkeyPatch, plant: Callable[[], None]) -> list[Any]:
    """Runs one general-path GP step whose optimiser first calls ``plant``; the warnings
    that reach the caller."""
    gp_module._load_gp_libs()
    real = gp_module.optimize_acqf

    def planting(acqf: Any, **kw: Any) -> Any:
        plant()
        return real(acqf, **kw)

    monkeypatch.setattr(gp_module, "optimize_acqf", planting)
    s, x = _general_path_searcher()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = s._gp_candidates(1, x, torch.empty(0, 2, dtype=F64))
    assert out is not None and out.shape == (1, 2)
    return [(w.category, str(w.message)) for w in record]


def test_gp_step_silences_only_the_gp_libraries_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    gp_module._load_gp_libs()  # imports them as autolr does (their import-time deprecations)
    from botorch.exceptions.warnings import BotorchWarning, InputDataWarning
    from gpytorch.utils.warnings import GPInputWarning, NumericalWarning

    silenced = [
        (module, category)
        for category in (BotorchWarning, InputDataWarning, NumericalWarning, GPInputWarning)
        for module in ("botorch.models.gp", "autolr.x")  # by category, from any module
    ]
    # optimize_acqf re-raises failed restarts as a plain RuntimeWarning: by module
    silenced.append(("botorch.optim.optimize", RuntimeWarning))
    passed = [  # a RuntimeWarning of another module; any UserWarning, botorch's own too
        ("torch.nn.modules", RuntimeWarning),
        ("botorchx", RuntimeWarning),  # the filter's regex is r"botorch\.", a package prefix
        ("autolr.x", UserWarning),
        ("botorch.optim.optimize", UserWarning),
    ]

    def plant() -> None:
        for i, (module, category) in enumerate(silenced + passed):
            warnings.warn_explicit(f"planted {i}", category, "lib.py", 1, module=module)

    got = _gp_step_with(monkeypatch, plant)
    n = len(silenced)
    assert got == [(category, f"planted {n + i}") for i, (_, category) in enumerate(passed)]


def test_grid_maximiser_holds_the_chosen_points_pending_exactly() -> None:
    s = GPSearcher([Param("x", 0.0, 1.0)], seed=0, num_restarts=2, raw_samples=8)
    for xv, v in ((0.1, 1.0), (0.4, 0.2), (0.6, 0.3), (0.9, 1.2)):
        s.observe({"x": xv}, v)
    x = s.configs_to_unit([c for c, _ in s.observations])
    model = s._fit_model(x, refit=False)
    empty = torch.empty(0, 1, dtype=F64)
    with torch.no_grad():
        acqf = s._make_acquisition(model, x, 3, empty, direct_incumbent=True)
    seen: list[torch.Tensor] = []
    real = acqf.set_X_pending

    def spy(pending: torch.Tensor) -> None:
        seen.append(pending.clone())
        real(pending)

    acqf.set_X_pending = spy  # type: ignore[method-assign]
    pts = s._maximise_on_grid(acqf, 3, empty)[:, 0].tolist()
    # The first point is a refined grid point, not a float32 value, so a float32 copy of it
    # would show; what is held pending is exactly what was chosen, in float64.
    assert float(torch.tensor(pts[0], dtype=torch.float32)) != pts[0]
    assert [p.dtype for p in seen] == [F64, F64]
    assert [p[:, 0].tolist() for p in seen] == [pts[:1], pts[:2]]


# Written for the survivors of the 2026-12-07 run on the prior model's GP step (`_targets`,
# `log_scaled`, the kernels; mutation/README.md).


def test_log_scaled_noise_is_relative_to_the_value() -> None:
    import math

    assert gp_module.log_scaled(2.0, 0.2) == (math.log(2.0), 0.1)  # delta method: std / value
    assert gp_module.log_scaled(0.5, None) == (math.log(0.5), None)


def test_a_zero_noise_is_floored_relative_to_the_values_spread() -> None:
    s = GPSearcher([Param("lr", 1e-3, 1.0, log=True)], seed=0, log_values=False)
    for cfg, v in zip(s.suggest(3), [1.0, 2.0, 4.0]):
        s.observe(cfg, v, noise=0.0)
    _, yvar = s._targets()
    spread = float(torch.tensor([1.0, 2.0, 4.0], dtype=F64).var())  # 7/3, not 1
    assert yvar.reshape(-1).tolist() == pytest.approx([gp_module._MIN_REL_NOISE_VAR * spread] * 3)


def test_the_gp_kernels_hold_double_precision_hyperparameters() -> None:
    gp_module._load_gp_libs()
    for kernel in (gp_module._prior_kernel(), gp_module._matern_kernel(2)):
        assert {p.dtype for p in kernel.parameters()} == {F64}
