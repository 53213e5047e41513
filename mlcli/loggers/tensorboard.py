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
import time
from pathlib import Path
from typing import Any

from mlcli.loggers.base import WRITE_SECONDS, Metrics, RunInfo

TB_DIR = "tb"
MEAN_RUN = "mean"
EVENTS_GLOB = "events.out.tfevents.*"


def tag(name: str) -> str:
    """``split/metric`` → TensorBoard's ``metric/split`` (``val/loss`` → ``loss/val``), so a
    metric's splits share one chart, as the course's ``Loss/train``, ``Loss/valid``."""
    split, metric = name.split("/", 1)
    return f"{metric}/{split}"


class TensorBoardLogger:
    """Event files per fold and for the fold mean (see the module).

    Scalars are kept and handed to the writers in bursts, every :data:`WRITE_SECONDS` and at a
    fold's end: each hand-over wakes a writer's thread, and one per epoch per fold (the default,
    ten queued events) made the training thread wait for the GIL often enough to cost ~6%."""

    def __init__(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.info = info
        self.root = info.run_dir / TB_DIR
        self.writer_class = SummaryWriter
        self.writers: dict[int, Any] = {}
        self.pending: dict[int, list[tuple[str, float, int]]] = {}
        self.written = time.monotonic()

    def _open(self, path: Path, fresh: bool) -> Any:
        if fresh:  # an earlier attempt's events of this run would mix with the new ones
            for old in path.glob(EVENTS_GLOB):
                old.unlink()
        return self.writer_class(log_dir=str(path), max_queue=1000, flush_secs=WRITE_SECONDS)

    def fold_start(self, fold: int, fresh: bool) -> None:
        """Open ``tb/fold<fold>``."""
        self.writers[fold] = self._open(self.root / f"fold{fold}", fresh)
        self.pending[fold] = []

    def _add(self, fold: int, scalars: list[tuple[str, float, int]]) -> None:
        if fold not in self.writers:
            self.fold_start(fold, False)
        self.pending[fold].extend(scalars)
        if time.monotonic() - self.written > WRITE_SECONDS:
            for each in self.writers:
                self._write(each)
            self.written = time.monotonic()

    def _write(self, fold: int) -> None:
        write_scalars(self.writers[fold], self.pending[fold])
        self.pending[fold] = []

    def epoch(self, fold: int, epoch: int, metrics: Metrics) -> None:
        """Each value at step ``epoch``."""
        self._add(fold, [(tag(name), value, epoch) for name, value in metrics.items()])

    def step_lr(self, fold: int, steps: list[tuple[int, float]]) -> None:
        """``lr/step`` at each optimizer step given."""
        self._add(fold, [("lr/step", lr, step) for step, lr in steps])

    def fold_end(self, fold: int, final: Metrics) -> None:
        """The fold's scalars and its hparams summary written, its file closed."""
        if fold not in self.writers:
            self.fold_start(fold, False)
        self._write(fold)
        write_hparams(self.writers[fold], self.info.hparams, final)
        self.writers.pop(fold).close()

    def end_run(self, state: str, means: dict[int, Metrics], final: Metrics) -> None:
        """The fold-mean run (rewritten whole), then every file closed."""
        for fold in list(self.writers):  # a fold that did not finish (diverged, interrupted)
            self._write(fold)
            self.writers.pop(fold).close()
        mean_dir = self.root / MEAN_RUN
        if mean_dir.is_dir():
            shutil.rmtree(mean_dir)
        if not means:
            return
        writer = self._open(mean_dir, True)
        last = max(means)
        tests = {k: v for k, v in final.items() if k.startswith("test/")}
        scalars = [
            (tag(name), value, epoch)
            for epoch, metrics in [*sorted(means.items()), (last, tests)]
            for name, value in metrics.items()
        ]
        write_scalars(writer, scalars)
        write_hparams(writer, {**self.info.hparams, "state": state}, final)
        writer.close()


def write_scalars(writer: Any, scalars: list[tuple[str, float, int]]) -> None:
    """``(tag, value, step)`` scalars into ``writer``: one event per step, holding all of that
    step's values (as TensorFlow writes them; ``add_scalar`` would make an event for each)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    by_step: dict[int, list[Any]] = {}
    for name, value, step in scalars:
        by_step.setdefault(step, []).append(Summary.Value(tag=name, simple_value=value))
    for step, values in sorted(by_step.items()):
        writer.file_writer.add_summary(Summary(value=values), step)


def write_hparams(writer: Any, hparams: dict[str, Any], final: Metrics) -> None:
    """An hparams summary into ``writer``'s own event file: the options, and as its metrics the
    tags of ``final`` (already logged in this run, so TensorBoard shows their last values)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    metrics = {tag(name): value for name, value in final.items() if not name.endswith("/lr")}
    if not hparams:
        hparams = {"run_key": "?"}
    for summary in hparams_summary(hparams, metrics):
        writer.file_writer.add_summary(summary)
