"""Early stopping: the one rule every training path applies, per fold.

A fold stops once its monitored val metric (``early_stopping.monitor``, by default the run's
selection metric) has not improved on its best by more than ``min_delta`` for ``patience``
epochs in a row; with ``restore_best`` the fold's weights go back to its best epoch's before its
test rows are evaluated and its model is saved. The plain loop, each member of a stack (its
update masked once it stops), the parallel workers, the stacked grid and a fold resumed from its
checkpoint all call :meth:`EarlyStopping.update` with the epoch's recorded metrics, so they stop
at the same epochs. :func:`stop_and_best` applies the same rule to a fold's recorded rows (what
``status.json`` and the report read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlcli.tasks import higher_is_better


@dataclass
class EarlyStopping:
    """One fold's early-stopping state: its best monitored value and epoch so far, how many
    epochs since, and whether it stopped."""

    patience: int
    monitor: str
    min_delta: float = 0.0
    restore_best: bool = True
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    weights: dict[str, Any] | None = field(default=None, repr=False)
    """The best epoch's weights (a state dict), kept when ``restore_best``."""

    @classmethod
    def of(cls, cfg: Any, metric: str) -> EarlyStopping | None:
        """The rule a run's config asks for (None when ``early_stopping.patience`` is null);
        ``metric``: the run's selection metric, the default monitor."""
        node = cfg.get("early_stopping") or {}
        patience = node.get("patience")
        if patience is None:
            return None
        monitor = str(node.get("monitor") or "auto")
        monitor = metric if monitor == "auto" else monitor
        return cls(
            int(patience),
            monitor,
            float(node.get("min_delta") or 0.0),
            bool(node.get("restore_best", True)),
        )

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Judge ``epoch`` by its ``split/metric`` values; whether it is the new best (then
        ``stopped`` says whether training ends after it)."""
        if self.monitor not in metrics:
            raise ValueError(
                f"early_stopping.monitor={self.monitor!r} is not a metric this run records "
                f"(it records {', '.join(sorted(metrics))}); set early_stopping.monitor to one "
                "of the val metrics"
            )
        value = float(metrics[self.monitor])
        up = higher_is_better(self.monitor)
        improved = (
            self.best is None
            or (up and value > self.best + self.min_delta)
            or (not up and value < self.best - self.min_delta)
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= self.patience
        return improved

    def keep(self, state_dict: dict[str, Any]) -> None:
        """After an improving epoch: keep a copy of the model's weights (``restore_best``)."""
        if self.restore_best:
            self.weights = {k: v.detach().clone() for k, v in state_dict.items()}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (plain numbers, and the best weights)."""
        return {
            "weights": self.weights,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state` returned."""
        best = state["best"]
        self.best = None if best is None else float(best)
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped = bool(state["stopped"])
        self.weights = state.get("weights")


def stop_and_best(
    rows: list[dict[str, Any]], rule: EarlyStopping | None, monitor: str
) -> tuple[int, int] | None:
    """A fold's last epoch and its best epoch by ``monitor`` (the rule's, else the earliest
    best value), from its long-form rows; None when it has no val rows."""
    split, name = monitor.split("/", 1)
    curve = sorted(
        (int(r["epoch"]), float(r["value"]))
        for r in rows
        if r["split"] == split and r["metric"] == name
    )
    if not curve:
        return None
    last = max(int(r["epoch"]) for r in rows if r["split"] in ("train", "val"))
    judge = EarlyStopping(
        rule.patience if rule else 10**9, monitor, rule.min_delta if rule else 0.0
    )
    for epoch, value in curve:
        judge.update(epoch, {monitor: value})
    return last, judge.best_epoch
