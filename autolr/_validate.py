"""Argument checks shared by every tuner, searcher, predictor and integration.

Each checker returns the value in its canonical type (``int``, ``float``, a ``(low, high)``
tuple, ...) or raises an autolr error whose message names the argument, the value it got and
what is allowed. Range and choice failures raise :class:`~autolr.ConfigError` (a
:class:`ValueError`); a value of the wrong kind raises :class:`~autolr.ConfigTypeError` (a
:class:`TypeError`; from ``check_int``/``check_float`` it is also a ``ConfigError``, since
the checkers they replaced raised that).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import ConfigError, ConfigTypeError

__all__ = [
    "check_bounds",
    "check_callable",
    "check_choice",
    "check_float",
    "check_instance",
    "check_int",
    "scalar_value",
]


class _WrongTypeError(ConfigTypeError, ConfigError):
    """A value of the wrong kind: a :class:`ConfigTypeError` that is also a :class:`ConfigError`.

    Several checkers this module replaced raised :class:`ConfigError` (a ``ValueError``) for a
    non-int count; raising both keeps every ``except`` written against either working.
    """


def _to_float(value: Any) -> float | None:
    """``value`` as a float if it is a real number (or a one-element tensor/array), else None."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) or hasattr(type(value), "__float__")
    ):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor of several elements
        return None


def _fmt(x: float) -> str:
    # ``g`` keeps 1e-06 and 0.5 short; ints print without a trailing ".0".
    return str(x) if isinstance(x, int) else f"{x:g}"


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Check that ``value`` is an integer within ``[minimum, maximum]``.

    Args:
        name: Argument name used in the error message.
        value: The value to check. ``bool`` is rejected; numpy integers are accepted.
        minimum: Smallest allowed value (inclusive), or ``None`` for no lower bound.
        maximum: Largest allowed value (inclusive), or ``None`` for no upper bound.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        ConfigTypeError: ``value`` is not an integer (the error is also a
            :class:`ConfigError`, as the checkers this one replaced raised).
        ConfigError: ``value`` is outside the allowed range.
    """
    allowed = f"an int{_int_range(minimum, maximum)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _WrongTypeError(f"{name} must be {allowed}, got {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return v


def _float_range(
    minimum: float | None,
    maximum: float | None,
    min_inclusive: bool,
    max_inclusive: bool,
) -> str:
    if minimum is not None and maximum is not None:
        lo = "[" if min_inclusive else "("
        hi = "]" if max_inclusive else ")"
        return f" in {lo}{_fmt(minimum)}, {_fmt(maximum)}{hi}"
    if minimum is not None:
        return f" {'>=' if min_inclusive else '>'} {_fmt(minimum)}"
    if maximum is not None:
        return f" {'<=' if max_inclusive else '<'} {_fmt(maximum)}"
    return ""


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    finite: bool = True,
) -> float:
    """Check that ``value`` is a real number within the given range.

    Args:
        name: Argument name used in the error message.
        value: The value to check. Ints, numpy scalars and one-element tensors are accepted;
            ``bool`` is rejected.
        minimum: Lower bound, or ``None`` for none.
        maximum: Upper bound, or ``None`` for none.
        min_inclusive: Whether ``value == minimum`` is allowed.
        max_inclusive: Whether ``value == maximum`` is allowed.
        finite: Reject ``nan`` and ``±inf``. With ``finite=False`` infinities may pass the
            range check; ``nan`` never passes a range check.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        ConfigTypeError: ``value`` is not a real number (also a :class:`ConfigError`).
        ConfigError: ``value`` is not finite (when required) or outside the range.
    """
    rng = _float_range(minimum, maximum, min_inclusive, max_inclusive)
    allowed = f"a {'finite ' if finite else ''}float{rng}"
    v = _to_float(value)
    if v is None:
        raise _WrongTypeError(f"{name} must be {allowed}, got {value!r}")
    bad = finite and not math.isfinite(v)
    if minimum is not None:
        bad = bad or not (v >= minimum if min_inclusive else v > minimum)
    if maximum is not None:
        bad = bad or not (v <= maximum if max_inclusive else v < maximum)
    if bad:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return v


def check_bounds(
    name: str, value: Any, *, positive: bool = False, allow_equal: bool = False
) -> tuple[float, float]:
    """Check that ``value`` is a ``(low, high)`` pair of finite numbers with ``low < high``.

    Args:
        name: Argument name used in the error message.
        value: Any iterable of exactly two real numbers (tuple, list, ...).
        positive: Also require ``low > 0`` (e.g. for log-scale LR ranges).
        allow_equal: Accept ``low == high`` (a clip range that pins the value).

    Returns:
        ``(low, high)`` as Python floats.

    Raises:
        ConfigError: ``value`` is not a pair of finite numbers with ``low < high`` (and
            ``low > 0`` when ``positive``). A value that is not a pair of numbers raises an
            error that is also a :class:`ConfigTypeError`.
    """
    rule = f"{'0 < ' if positive else ''}low {'<=' if allow_equal else '<'} high, both finite"
    allowed = f"a pair (low, high) with {rule}"
    try:
        items = list(value)
    except TypeError:
        items = None
    lo, hi = (None, None) if items is None or len(items) != 2 else map(_to_float, items)
    if lo is None or hi is None:
        raise _WrongTypeError(f"{name} must be {allowed}, got {value!r}")
    if (
        not (math.isfinite(lo) and math.isfinite(hi))
        or (lo > hi if allow_equal else lo >= hi)
        or (positive and lo <= 0)
    ):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return lo, hi


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``.

    Args:
        name: Argument name used in the error message.
        value: The value to check.
        choices: The allowed strings.

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigError: ``value`` is not one of ``choices`` (also when it is not a string, so
            callers catching :class:`ValueError` see every bad choice).
    """
    allowed = tuple(choices)
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(repr(c) for c in allowed)
        raise ConfigError(f"{name} must be one of {listed}, got {value!r}")
    return value


def check_callable(name: str, value: Any) -> Callable[..., Any]:
    """Check that ``value`` is callable.

    Args:
        name: Argument name used in the error message.
        value: The value to check.

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigTypeError: ``value`` is not callable.
    """
    if not callable(value):
        raise ConfigTypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")
    return value


def _type_name(t: type) -> str:
    """``t``'s shortest public dotted path (``torch.optim.Optimizer``, ``int``)."""
    if t.__module__ == "builtins":
        return t.__qualname__
    parts = t.__module__.split(".")
    for i in range(1, len(parts) + 1):
        path = ".".join(parts[:i])
        if getattr(sys.modules.get(path), t.__qualname__, None) is t:
            return f"{path}.{t.__qualname__}"
    return f"{t.__module__}.{t.__qualname__}"


def check_instance(name: str, value: Any, types: type | tuple[type, ...]) -> Any:
    """Check that ``value`` is an instance of ``types``.

    Args:
        name: Argument name used in the error message.
        value: The value to check.
        types: A type or a tuple of types, as for :func:`isinstance`.

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigTypeError: ``value`` is not an instance of ``types``.
    """
    if not isinstance(value, types):
        tup = types if isinstance(types, tuple) else (types,)
        wanted = " or ".join(_type_name(t) for t in tup)
        article = "an" if wanted[0].lower() in "aeiou" else "a"
        raise ConfigTypeError(f"{name} must be {article} {wanted}, got {type(value).__name__}")
    return value


def scalar_value(tensor: Any, rule: str) -> float:
    """The value of a one-element tensor (a loss a user's code returned) as a float.

    Args:
        tensor: A torch tensor.
        rule: What was required, for the message (``"loss must be a scalar"``).

    Raises:
        ConfigError: ``tensor`` has another number of elements (the message names its shape).
    """
    if tensor.numel() != 1:
        raise ConfigError(f"{rule}, got a tensor of shape {tuple(tensor.shape)}")
    return float(tensor.detach().float().item())
