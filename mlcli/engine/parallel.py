"""Parallel folds: the folds of a run trained in ``parallel_folds`` worker processes.

For compute-bound models (a CNN) stacking gains nothing; a second core does. Workers are forked
from the run's process, so they share its dataset and config without pickling them, and each
fold is set up exactly as in sequential training (its own seeds, one torch thread): the results
are bit-identical. Results are yielded in fold order; a diverged fold raises its
:class:`~mlcli.engine.divergence.DivergedError` where sequential training would (the folds after
it, computed meanwhile, are discarded).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_RUN_FOLD: Callable[[int], Any] | None = None
"""The fold function of the pool being forked: the workers inherit it (a closure over the run's
data and config, which is never pickled)."""


def _work(fold: int) -> Any:
    """In a worker: train one fold. A divergence is raised as it is (the exception pickles) and
    re-raised by the parent when it reaches that fold."""
    assert _RUN_FOLD is not None
    return _RUN_FOLD(fold)


def parallel_fold_results(
    n_workers: int, pending: list[int], run_fold: Callable[[int], Any]
) -> Iterator[tuple[int, Any]]:
    """Train ``pending`` folds in ``n_workers`` forked processes; yield ``(fold, rows)``."""
    global _RUN_FOLD
    _RUN_FOLD = run_fold
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            futures: dict[int, Future[Any]] = {fold: pool.submit(_work, fold) for fold in pending}
            try:
                for fold in pending:
                    yield fold, futures[fold].result()  # raises the fold's DivergedError
            finally:
                for future in futures.values():
                    future.cancel()
    finally:
        _RUN_FOLD = None
