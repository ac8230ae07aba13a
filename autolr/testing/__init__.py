"""Test helpers shipped with autolr, for contributors and for users who write their own tuners.

:mod:`autolr.testing.tuners` is the tuner contract suite: subclass
:class:`~autolr.testing.tuners.TunerContract`, give it a :class:`~autolr.testing.tuners.Harness`
that drives your tuner over a tiny model, and pytest runs every contract test against it (the
way Optuna ships ``optuna.testing.pytest_samplers``). This package imports pytest; ``import
autolr`` never imports it.
"""

from __future__ import annotations

from .tuners import Harness, TunerContract

__all__ = ["Harness", "TunerContract"]
