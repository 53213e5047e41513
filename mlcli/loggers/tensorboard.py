"""TensorBoard event files: one run per fold under ``<run dir>/tb/fold<k>``, and the fold mean
as a run of its own, ``<run dir>/tb/mean``.

Tags are ``<metric>/<split>`` per epoch (x = epoch: ``loss/train``, ``loss/val``, ``acc/val``,
``lr/train``; a fold's test metrics at its last epoch: ``acc/test``), and ``lr/step`` per
optimizer step (x = step, counted from 1 over the fold: each epoch's first step and every
change, so a warmup shows step by step). Each run also holds an hparams summary (the chosen
options, and its final metrics as its own tags), written into the run's own event file:
``SummaryWriter.add_hparams`` would open a stray sub-run per call (pytorch#32651).

Needs the ``tensorboard`` package (``pip install 'mlcli[tensorboard]'``), imported only here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mlcli.loggers import Metrics, RunInfo

TB_DIR = "tb"
MEAN_RUN = "mean"
EVENTS_GLOB = "events.out.tfevents.*"


def tag(name: str) -> str:
    """``split/metric`` → TensorBoard's ``metric/split`` (``val/loss`` → ``loss/val``), so a
    metric's splits share one chart, as the course's ``Loss/train``, ``Loss/valid``."""
    split, metric = name.split("/", 1)
    return f"{metric}/{split}"


class TensorBoardLogger:
    """Event files per fold and for the fold mean (see the module)."""

    def __init__(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.info = info
        self.root = info.run_dir / TB_DIR
        self.writer_class = SummaryWriter
        self.writers: dict[int, Any] = {}

    def _writer(self, fold: int) -> Any:
        if fold not in self.writers:
            self.fold_start(fold, False)
        return self.writers[fold]

    def _open(self, path: Path, fresh: bool) -> Any:
        if fresh:  # an earlier attempt's events of this run would mix with the new ones
            for old in path.glob(EVENTS_GLOB):
                old.unlink()
        return self.writer_class(log_dir=str(path), flush_secs=30)

    def fold_start(self, fold: int, fresh: bool) -> None:
        """Open ``tb/fold<fold>``."""
        self.writers[fold] = self._open(self.root / f"fold{fold}", fresh)

    def epoch(self, fold: int, epoch: int, metrics: Metrics) -> None:
        """Each value at step ``epoch``."""
        writer = self._writer(fold)
        for name, value in metrics.items():
            writer.add_scalar(tag(name), value, epoch)

    def step_lr(self, fold: int, steps: list[tuple[int, float]]) -> None:
        """``lr/step`` at each optimizer step given."""
        writer = self._writer(fold)
        for step, lr in steps:
            writer.add_scalar("lr/step", lr, step)

    def fold_end(self, fold: int, final: Metrics) -> None:
        """The fold's hparams summary, then its file closed."""
        writer = self._writer(fold)
        write_hparams(writer, self.info.hparams, final)
        writer.close()

    def end_run(self, state: str, means: dict[int, Metrics], final: Metrics) -> None:
        """The fold-mean run (rewritten whole), then every file closed."""
        for writer in self.writers.values():
            writer.close()  # a fold that did not finish (diverged, interrupted)
        mean_dir = self.root / MEAN_RUN
        if mean_dir.is_dir():
            shutil.rmtree(mean_dir)
        if not means:
            return
        writer = self._open(mean_dir, True)
        for epoch, metrics in sorted(means.items()):
            self._add(writer, epoch, metrics)
        last = max(means)
        self._add(writer, last, {k: v for k, v in final.items() if k.startswith("test/")})
        write_hparams(writer, {**self.info.hparams, "state": state}, final)
        writer.close()

    @staticmethod
    def _add(writer: Any, step: int, metrics: Metrics) -> None:
        for name, value in metrics.items():
            writer.add_scalar(tag(name), value, step)


def write_hparams(writer: Any, hparams: dict[str, Any], final: Metrics) -> None:
    """An hparams summary into ``writer``'s own event file: the options, and as its metrics the
    tags of ``final`` (already logged in this run, so TensorBoard shows their last values)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    metrics = {tag(name): value for name, value in final.items() if not name.endswith("/lr")}
    if not hparams:
        hparams = {"run_key": "?"}
    for summary in hparams_summary(hparams, metrics):
        writer.file_writer.add_summary(summary)
