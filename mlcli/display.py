"""Rich output: the live progress of a run and the fold-summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class ProgressReporter:
    """A progress bar over fold × epoch showing the current fold, epoch and val metric."""

    def __init__(self, metric: str, console: Console | None = None) -> None:
        self.metric = metric
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.n_folds = 0
        self.epochs = 0

    def start(self, n_folds: int, epochs: int, done_folds: set[int], metric: str = "") -> None:
        """Begin the display; folds already finished count as done."""
        self.n_folds, self.epochs = n_folds, epochs
        self.metric = metric or self.metric
        self.progress.start()
        self.task = self.progress.add_task(
            "starting", total=n_folds * epochs, completed=len(done_folds) * epochs
        )

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch finished."""
        value = metrics.get(self.metric, metrics.get("val/loss"))
        shown = self.metric if self.metric in metrics else "val/loss"
        self.progress.update(
            self.task,
            advance=1,
            description=f"fold {fold + 1}/{self.n_folds}  epoch {epoch}/{self.epochs}  "
            f"{shown}={value:.4f}",
        )

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
