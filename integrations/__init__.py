"""Front-end adapters (Ray Tune, Optuna, Lightning, HF Trainer, Flower), one module per framework.

Each adapter imports its framework lazily and is a thin translation of the framework's hooks
into the core searchers, predictors and tuners. A missing framework raises an
:class:`ImportError` that names the extra to install, e.g. ``pip install "autolr[ray]"``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any

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


def _check_tuner_kwargs(owner: str, kwargs: Mapping[str, Any], passes: str, allowed: str) -> None:
    """Refuse, for a callback that builds AutoLRS, the arguments it passes itself and unknown ones.

    Raises:
        ConfigTypeError: Naming ``owner``, what it passes (``passes``) and its own arguments
            (``allowed``).
    """
    from autolr import AutoLRS
    from autolr._errors import ConfigTypeError

    own = [k for k in ("model", "optimizer") if k in kwargs]
    if own:
        raise ConfigTypeError(
            f"{owner} got {own[0]}=...: the callback passes {passes} to AutoLRS itself"
        )
    unknown = set(kwargs) - set(inspect.signature(AutoLRS.__init__).parameters)
    if unknown:
        raise ConfigTypeError(
            f"{owner} got unknown argument(s) {sorted(unknown)}; the allowed ones are "
            f"{allowed} and AutoLRS's arguments"
        )


def _warn_unfinished(
    head: str, tuner: Any, skipped_by: str, stopped_by: str, *, rank_zero: bool
) -> bool:
    """Warn (on rank zero) that a callback's training ended before its tuner's budget.

    The rule and the message of the Lightning and HF callbacks' ``on_train_end``: the cause is
    the steps the Trainer counted but the tuner did not (``skipped_by``), else the Trainer
    stopping first (``stopped_by``). Returns whether there was something to say.
    """
    if tuner is None or tuner.max_steps is None or tuner.done:
        return False
    if tuner.skipped_steps:
        why = (
            f"{tuner.skipped_steps} step(s) the Trainer counted were skipped {skipped_by}: "
            "give the Trainer a few more steps than the tuner's budget"
        )
    else:
        why = (
            f"the Trainer stopped first ({stopped_by}): the model did not get the tuner's full "
            "schedule"
        )
    if rank_zero:
        import warnings

        warnings.warn(
            f"{head} at tuner step {tuner.global_step} of max_steps={tuner.max_steps} "
            f"(phase {tuner.phase!r}); {why}",
            RuntimeWarning,
            stacklevel=3,
        )
    return True
