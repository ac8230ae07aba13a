"""Renamed arguments and attributes: the old name keeps working for one release.

Each use of an old name gives exactly one :class:`DeprecationWarning` that names the new one.
The names are listed in the README's "Conventions" table.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigError

__all__ = ["Renamed", "RenamedAttribute", "take_renamed"]


class Renamed(dict[str, Any]):
    """``{new name: value}`` for the arguments given under an old name.

    :meth:`name` gives the name the caller used, so an error about the value names what the
    caller wrote.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}

    def name(self, new: str) -> str:
        """The name the caller passed the argument ``new`` under."""
        return self.names.get(new, new)


def _warn(owner: str, old: str, new: str, what: str, stacklevel: int) -> None:
    warnings.warn(
        f"{owner}: the {what} {old!r} is deprecated and will be removed in the next release; "
        f"use {new!r}",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def take_renamed(
    owner: str,
    given: Mapping[str, Any],
    renames: Mapping[str, str],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> Renamed:
    """Resolve old keyword names passed through ``**given`` to their new names.

    Args:
        owner: Class name for the messages.
        given: The ``**kwargs`` the constructor received (only old names belong there).
        renames: ``{old name: new name}``.
        current: The values the new-named parameters received.
        defaults: The new-named parameters' defaults (to tell whether both names were passed).

    Returns:
        ``{new name: value}`` for every new-named parameter an old name set (warned once each);
        its :meth:`Renamed.name` gives the name each argument was passed under.

    Raises:
        TypeError: An unknown keyword (as Python raises for a misspelt argument).
        ConfigError: Both the old and the new name of one argument were passed.
    """
    out = Renamed()
    for old, value in given.items():
        new = renames.get(old)
        if new is None:
            raise TypeError(f"{owner}() got an unexpected keyword argument {old!r}")
        if current[new] is not defaults[new] and current[new] != defaults[new]:
            raise ConfigError(
                f"{owner}: got both {new}={current[new]!r} and its deprecated old name "
                f"{old}={value!r}; pass only {new}"
            )
        # stacklevel 3: the warning points at the caller of the constructor
        _warn(owner, old, new, "argument", stacklevel=3)
        out[new] = value
        out.names[new] = old
    return out


class RenamedAttribute:
    """Class attribute that forwards an old attribute name to its new one, with a warning.

    Example:
        >>> class A:
        ...     old = RenamedAttribute("new")
        ...     def __init__(self): self.new = 1
    """

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = ""
        self.owner = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name
        self.owner = owner.__name__

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        _warn(self.owner, self.old, self.new, "attribute", stacklevel=2)
        return getattr(obj, self.new)

    def __set__(self, obj: Any, value: Any) -> None:
        _warn(self.owner, self.old, self.new, "attribute", stacklevel=2)
        setattr(obj, self.new, value)
