"""Front-end adapters (Ray Tune, Optuna, Lightning, HF Trainer, Flower), one module per framework.

Each adapter imports its framework lazily and is a thin translation of the framework's hooks
into the core searchers, predictors and tuners. A missing framework raises an
:class:`ImportError` that names the extra to install, e.g. ``pip install "autolr[ray]"``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the autolr extra that provides it.

    Args:
        module: Module to import, e.g. ``"ray.tune"``.
        extra: The autolr extra that installs it, e.g. ``"ray"``.

    Raises:
        ImportError: If the module is not installed.

    Example:
        >>> np = require("numpy", "core")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is required for this feature; install it with "
            f'pip install "autolr[{extra}]"'
        ) from exc
