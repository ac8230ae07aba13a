"""Exception hierarchy of autolr.

Configuration errors also subclass :class:`ValueError` / :class:`TypeError` so callers can
catch either the autolr type or the builtin one.
"""

from __future__ import annotations

__all__ = ["AutoLRError", "ConfigError", "ConfigTypeError", "StateError"]


class AutoLRError(Exception):
    """Base class of every error raised by autolr."""


class ConfigError(AutoLRError, ValueError):
    """An argument has an invalid value (bounds, step counts, ...)."""


class ConfigTypeError(AutoLRError, TypeError):
    """An argument has the wrong type (e.g. an optimizer that is not a torch optimizer)."""


class StateError(AutoLRError, ValueError):
    """A ``state_dict`` does not match the object it is loaded into."""
