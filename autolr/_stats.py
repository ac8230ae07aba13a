"""A standard deviation that does not overflow on huge (finite) values.

Losses and objective values reach the tuners unchecked in size. ``(v - mean) ** 2`` raises
``OverflowError`` once ``|v - mean|`` passes ~1.3e154, and a product turns into ``inf`` there
although the deviation itself is representable. :func:`std_dev` computes it plainly (bit for
bit as before for ordinary values) and rescales only when the plain sum overflows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["std_dev"]


def std_dev(values: Sequence[float], mean: float, *denominators: float) -> float:
    """``sqrt(sum((v - mean)^2) / d1 / d2 ...)``, finite whenever the result is.

    Example:
        >>> std_dev([1.0, 3.0], 2.0, 1), std_dev([1e300, -1e300], 0.0, 2)
        (1.4142135623730951, 1e+300)
    """
    total = sum((v - mean) * (v - mean) for v in values)
    if total == math.inf:
        # Squares past the float range: the same sum on values scaled into it.
        scale = max(abs(v - mean) for v in values)
        total = sum(((v - mean) / scale) * ((v - mean) / scale) for v in values)
        for d in denominators:
            total /= d
        return scale * math.sqrt(total)
    for d in denominators:
        total /= d
    return math.sqrt(total)
