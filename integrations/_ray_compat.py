"""Moved to ``autolr.integrations.ray._compat``; this old name stays importable.

Every attribute is read from the new module (it needs Ray, as the package does).
"""

from __future__ import annotations

from typing import Any

from .ray import _compat

__all__ = list(_compat.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_compat, name)
