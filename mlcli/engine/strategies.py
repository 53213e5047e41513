"""How a run's folds are trained: one :func:`fit_folds`, a few strategies behind one interface.

A strategy says why it cannot train a plan's pending folds (:meth:`FoldStrategy.reason_not`), or
trains them (:meth:`FoldStrategy.run`), yielding ``(fold, rows)`` in fold order and raising
:class:`~mlcli.engine.divergence.DivergedError` where sequential training would stop.
:func:`fit_folds` takes the first strategy that can, in this order, and records its name
(``status.json``: ``fold_training``):

1. :class:`Precomputed`: the stacked launcher trained the folds already (a stacked grid);
2. :class:`Stacked`: the folds as one stacked model (``stack_folds``);
3. :class:`Parallel`: in ``parallel_folds`` worker processes;
4. :class:`Sequential`: one after another.

Every strategy sets each fold up alike (:func:`mlcli.engine.setup.set_up_fold`), so the choice
changes how long a run takes, not what it computes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlcli.engine.divergence import DivergedError
from mlcli.engine.fold import fit_fold
from mlcli.engine.loop import FoldRows
from mlcli.engine.setup import FoldPlan
from mlcli.engine.stacked import stacking_reason, train_stacked


class FoldStrategy(Protocol):
    """A way to train a plan's pending folds."""

    name: str
    """What ``status.json`` records as ``fold_training``."""
    info: dict[str, Any] | None
    """What ``status.json`` records besides (``stacked_grid``), or None."""

    def reason_not(self, plan: FoldPlan) -> str | None:
        """Why this strategy does not train ``plan``'s pending folds (None: it does). A strategy
        the config demands (``stack_folds=on``) raises instead of declining."""
        ...

    def run(self, plan: FoldPlan) -> Iterator[tuple[int, FoldRows]]:
        """Train the pending folds: ``(fold, rows)`` in fold order."""
        ...


def in_fold_order(
    results: Mapping[int, FoldRows | DivergedError], pending: list[int]
) -> Iterator[tuple[int, FoldRows]]:
    """Each pending fold's rows, in fold order, raising a fold's divergence where it comes."""
    for fold in pending:
        result = results[fold]
        if isinstance(result, DivergedError):
            raise result
        yield fold, result


@dataclass
class Precomputed:
    """Folds of one run that the stacked launcher trained already (:mod:`mlcli.sweeps.grid`):
    each fold's rows or its divergence, and what the launcher says of the grid."""

    results: dict[int, FoldRows | DivergedError]
    info: dict[str, Any] | None = field(default_factory=dict)
    name: str = "stacked grid"

    def reason_not(self, plan: FoldPlan) -> str | None:
        """Declines unless every pending fold is among the trained ones."""
        missing = [f for f in plan.pending if f not in self.results]
        return f"fold(s) {missing} were not trained by the stacked launcher" if missing else None

    def run(self, plan: FoldPlan) -> Iterator[tuple[int, FoldRows]]:
        """The trained folds' rows."""
        yield from in_fold_order(self.results, plan.pending)


class Stacked:
    """The pending folds as one stacked model (:mod:`mlcli.engine.stacked`); they end together."""

    name: str = "stacked"
    info: dict[str, Any] | None = None

    def reason_not(self, plan: FoldPlan) -> str | None:
        """:func:`~mlcli.engine.stacked.stacking_reason`."""
        return stacking_reason(plan)

    def run(self, plan: FoldPlan) -> Iterator[tuple[int, FoldRows]]:
        """Train the stack, then yield its folds."""
        if plan.on_stacked is not None:
            plan.on_stacked(len(plan.pending))
        yield from in_fold_order(train_stacked(plan, plan.on_epoch), plan.pending)


class Parallel:
    """The pending folds in ``parallel_folds`` forked worker processes
    (:mod:`mlcli.engine.parallel`); the workers report no progress."""

    name: str = "parallel"
    info: dict[str, Any] | None = None

    def reason_not(self, plan: FoldPlan) -> str | None:
        """Declines for ``parallel_folds=1`` or a single pending fold."""
        if int(plan.cfg.get("parallel_folds", 1)) <= 1:
            return "parallel_folds=1"
        return "one fold to train" if len(plan.pending) < 2 else None

    def run(self, plan: FoldPlan) -> Iterator[tuple[int, FoldRows]]:
        """Fork the workers (no write in flight), then yield the folds as they come, in order."""
        from mlcli.engine.parallel import parallel_fold_results

        plan.settle()
        workers = int(plan.cfg.parallel_folds)
        # A live display belongs to the parent's terminal: the workers report no progress.
        yield from parallel_fold_results(workers, plan.pending, lambda f: fit_fold(plan, f))


class Sequential:
    """The pending folds one after another, each written before the next sets up."""

    name: str = "sequential"
    info: dict[str, Any] | None = None

    def reason_not(self, plan: FoldPlan) -> str | None:
        """Never declines."""
        return None

    def run(self, plan: FoldPlan) -> Iterator[tuple[int, FoldRows]]:
        """Each fold, once the folds before it are on disk (a run killed while it trains keeps
        them all)."""
        for fold in plan.pending:
            plan.settle()
            yield fold, fit_fold(plan, fold, plan.on_epoch)


def strategies(precomputed: Precomputed | None = None) -> list[FoldStrategy]:
    """The strategies :func:`fit_folds` tries, in order."""
    return [
        *([precomputed] if precomputed is not None else []),
        Stacked(),
        Parallel(),
        Sequential(),
    ]


def fit_folds(
    plan: FoldPlan, precomputed: Precomputed | None = None
) -> Iterator[tuple[int, FoldRows]]:
    """Train ``plan``'s pending folds with the first strategy that can (its name recorded in
    ``plan.trained_by``); yield ``(fold, rows)`` in fold order. ``precomputed``: the folds the
    stacked launcher trained for this run."""
    for strategy in strategies(precomputed):
        if strategy.reason_not(plan) is None:
            plan.trained_by, plan.trained_info = strategy.name, strategy.info
            yield from strategy.run(plan)
            return
