"""Parallel folds: the folds of a run trained in ``parallel_folds`` worker processes.

For compute-bound models (a CNN) stacking gains nothing; a second core does. Workers are forked
from the run's process, so they share its dataset and config without pickling them, and each
fold is set up exactly as in sequential training (its own seeds, one torch thread): the results
are bit-identical. Results are yielded in fold order; a diverged fold raises where sequential
training would (the folds after it, computed meanwhile, are discarded).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from mlcli.engine.divergence import DivergedError

_RUN_FOLD: Callable[[int], Any] | None = None


def _work(fold: int) -> tuple[str, Any]:
    """In a worker: train one fold; a divergence comes back as data (raised in fold order)."""
    assert _RUN_FOLD is not None
    try:
        return "rows", _RUN_FOLD(fold)
    except DivergedError as error:
        return "diverged", error


def parallel_fold_results(
    n_workers: int, pending: list[int], run_fold: Callable[[int], Any]
) -> Iterator[tuple[int, Any]]:
    """Train ``pending`` folds in ``n_workers`` forked processes; yield ``(fold, rows)``."""
    global _RUN_FOLD
    _RUN_FOLD = run_fold
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            futures: dict[int, Future[tuple[str, Any]]] = {
                fold: pool.submit(_work, fold) for fold in pending
            }
            try:
                for fold in pending:
                    kind, value = futures[fold].result()
                    if kind == "diverged":
                        raise value
                    yield fold, value
            finally:
                for future in futures.values():
                    future.cancel()
    finally:
        _RUN_FOLD = None
