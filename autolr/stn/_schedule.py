"""STN's schedule type: :class:`autolr.Schedule`, shared by every tuner (kept importable here)."""

from __future__ import annotations

from .._schedule import Schedule

__all__ = ["Schedule"]
