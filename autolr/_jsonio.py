"""Strict JSON output shared by results files (benchmarks, the federated simulator)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["json_safe", "write_json"]


def json_safe(x: Any) -> Any:
    """Copy of ``x`` with non-finite floats as ``None`` (strict JSON has no NaN/inf).

    Example:
        >>> json_safe({"a": [1.0, float("nan")], "b": (float("inf"), "x")})
        {'a': [1.0, None], 'b': [None, 'x']}
    """
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` to ``path`` as strict JSON (indent 1), non-finite floats as ``null``."""
    with open(path, "w") as fh:
        json.dump(json_safe(obj), fh, indent=1, allow_nan=False)
