"""Rich output: the live progress of a run and the fold-summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


class ProgressReporter:
    """A progress bar over fold × epoch: where the run is, its loss and selection metric,
    the time spent and the time left.

    Sequential folds read ``fold 2/5  epoch 7/20``; folds that train together as one stacked
    model (:meth:`stacked`) read ``5 folds stacked  epoch 7/20``, with each number the mean
    over the folds at that epoch.
    """

    def __init__(self, metric: str, console: Console | None = None) -> None:
        self.metric = metric
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[numbers]}"),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.n_folds = 0
        self.epochs = 0
        self.n_stacked = 0
        self._epoch_metrics: dict[int, dict[int, dict[str, float]]] = {}

    def start(self, n_folds: int, epochs: int, done_folds: set[int], metric: str = "") -> None:
        """Begin the display; folds already finished count as done."""
        self.n_folds, self.epochs = n_folds, epochs
        self.metric = metric or self.metric
        self.progress.start()
        self.task = self.progress.add_task(
            "starting", total=n_folds * epochs, completed=len(done_folds) * epochs, numbers=""
        )

    def stacked(self, n_folds: int) -> None:
        """The next ``n_folds`` folds train together, as one stacked model."""
        self.n_stacked = n_folds
        if self.task is not None:
            self.progress.update(self.task, description=f"{n_folds} folds stacked")

    def _shown(self, metrics: dict[str, float]) -> str:
        names = ["train/loss"]
        names.append(self.metric if self.metric in metrics else "val/loss")
        return "  ".join(
            f"{name} {metrics[name]:.4g}" for name in dict.fromkeys(names) if name in metrics
        )

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch of one fold finished (stacked folds report each of theirs)."""
        if self.n_stacked > 1:
            at = self._epoch_metrics.setdefault(epoch, {})
            at[fold] = metrics
            self._epoch_metrics = {epoch: at}  # earlier epochs are done with
            names = set.intersection(*(set(m) for m in at.values()))
            mean = {n: sum(m[n] for m in at.values()) / len(at) for n in names}
            where = f"{self.n_stacked} folds stacked  epoch {epoch}/{self.epochs}"
            numbers = self._shown(mean) + (" (fold mean)" if len(at) > 1 else "")
        else:
            where = f"fold {fold + 1}/{self.n_folds}  epoch {epoch}/{self.epochs}"
            numbers = self._shown(metrics)
        self.progress.update(self.task, advance=1, description=where, numbers=numbers)

    def fold_done(self, fold: int) -> None:
        """A fold finished (its results are on disk)."""

    def stop(self) -> None:
        """End the display."""
        self.progress.stop()


def summary_table(summary: dict[str, tuple[float, float]], n_folds: int, title: str) -> Table:
    """Each split/metric's fold mean ± std at the final epoch."""
    table = Table(title=title)
    table.add_column("split/metric")
    table.add_column(f"mean ± std over {n_folds} folds", justify="right")
    order = {"train": 0, "val": 1, "test": 2}
    for name in sorted(summary, key=lambda n: (order.get(n.split("/")[0], 3), n)):
        mean, std = summary[name]
        table.add_row(name, f"{mean:.4f} ± {std:.4f}")
    return table
