"""Job runner shared by ``autolr bench`` and its studies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["imap_jobs"]

J = TypeVar("J")


def imap_jobs(fn: Callable[[J], Any], jobs: Iterable[J], n_jobs: int = 1) -> Iterator[Any]:
    """Yield ``fn(job)`` for each job: in order here, or as they finish from ``n_jobs`` workers.

    Workers are spawned (not forked) so each starts with a clean torch / Ray / Optuna state;
    ``fn`` must therefore be a module-level function.

    Example:
        >>> list(imap_jobs(abs, [-1, 2, -3]))
        [1, 2, 3]
    """
    if n_jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(n_jobs) as pool:
            yield from pool.imap_unordered(fn, jobs)
    else:
        for job in jobs:
            yield fn(job)
