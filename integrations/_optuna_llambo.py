"""Former home of ``LLAMBOSampler``; import it from :mod:`autolr.integrations.optuna`."""

from __future__ import annotations

from autolr.integrations.optuna._llambo import LLAMBOSampler

__all__ = ["LLAMBOSampler"]
