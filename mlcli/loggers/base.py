"""What every logger is: the :class:`Logger` Protocol and what it knows of its run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

WRITE_SECONDS = 10
"""How often a logger hands what it was given to its files or store while a fold trains (and
at every fold's end)."""

Metrics = dict[str, float]
"""``split/metric`` → value (``val/acc``), as the engine's epoch-end hook passes them."""


@dataclass(frozen=True)
class RunInfo:
    """What a logger knows of the run it logs."""

    run_dir: Path
    run_key: str
    outputs_root: Path
    hparams: dict[str, str | int | float | bool]
    """The chosen options: group choices and the command's overrides (TensorBoard's hparams)."""
    params: dict[str, str] = field(default_factory=dict)
    """The resolved config, flattened to ``key.sub: value`` (MLflow's params)."""


class Logger(Protocol):
    """Where a run logs as it trains. Calls come in this order per fold: ``fold_start``, then
    per epoch ``step_lr`` and ``epoch``, then ``fold_end``; ``end_run`` once, last."""

    def fold_start(self, fold: int, fresh: bool) -> None:
        """A fold starts logging (``fresh``: from its first epoch, not from a checkpoint)."""
        ...

    def epoch(self, fold: int, epoch: int, metrics: Metrics) -> None:
        """An epoch's ``split/metric`` values (a fold's test metrics come at its last epoch)."""
        ...

    def step_lr(self, fold: int, steps: list[tuple[int, float]]) -> None:
        """``(optimizer step, lr)`` pairs: an epoch's first step and every change of lr."""
        ...

    def fold_end(self, fold: int, final: Metrics) -> None:
        """A fold finished; ``final``: its values at its last epoch (test included)."""
        ...

    def end_run(self, state: str, means: dict[int, Metrics], final: Metrics) -> None:
        """The run ended as ``state``; ``means``: per epoch, the fold mean of each metric over
        the finished folds; ``final``: the fold means at the last epoch (test included)."""
        ...
