"""Shared plumbing of the ``autolr bench --study`` modules: settings, reference, summary."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from .tasks import TASKS

__all__ = ["gmean", "grid_best", "study_meta", "study_settings"]


def gmean(values: Sequence[float]) -> float:
    """Geometric mean of the positive ``values``; inf if any is not finite or none is positive."""
    vals = [v for v in values if v > 0]
    if not vals or any(not math.isfinite(v) for v in vals):
        return math.inf
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def grid_best(runs: Sequence[dict[str, Any]], field: str) -> dict[tuple[str, int], float]:
    """Per ``(task, seed)``: the best final validation loss of the runs with ``field`` ==
    ``"cosine"`` (the grid-best cosine every study compares with)."""
    best: dict[tuple[str, int], float] = {}
    for r in runs:
        if r[field] == "cosine":
            key = (r["task"], r["seed"])
            v = r["final_val"]
            # A diverged run is NaN in memory and None once written to JSON: never the best.
            v = v if v is not None and math.isfinite(v) else math.inf
            best[key] = min(best.get(key, math.inf), v)
    return best


def study_meta(start: float, **fields: Any) -> dict[str, Any]:
    """A study's ``meta`` record: ``fields``, then elapsed time since ``start``
    (``time.perf_counter()``), CPU count, Python version and the command that ran it."""
    return {
        **fields,
        "elapsed_s": time.perf_counter() - start,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "command": "autolr bench " + " ".join(sys.argv[2:]),
    }


def study_settings(
    args: Any, *, quick_tasks: Sequence[str], tasks: Sequence[str], quick_grid: int, full_grid: int
) -> tuple[bool, int, int, list[str]]:
    """``(quick, seeds, grid, task names)`` of a study run from its command-line ``args``.

    ``--quick`` picks ``quick_tasks``, one seed and ``quick_grid`` cosine LRs; an explicit
    ``--tasks`` (anything but the full bench list the CLI fills in) replaces the tasks.
    Fails first, naming the extra, if the bench extra is missing.
    """
    from autolr.integrations import require

    require("sklearn", "bench")
    quick = bool(args.quick)
    seeds = args.seeds or (1 if quick else 3)
    grid = args.grid or (quick_grid if quick else full_grid)
    names = list(quick_tasks if quick else tasks)
    if getattr(args, "tasks", None) and set(args.tasks) != set(TASKS):
        names = list(args.tasks)  # --tasks given explicitly
    return quick, seeds, grid, names
