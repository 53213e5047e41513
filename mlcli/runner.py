"""``run(cfg, run_dir)``: open the run, plan its folds, fit them, write each fold, finish.

Knows nothing of argv. A run dir explains itself (:mod:`mlcli.rundir`): ``config.yaml``
(resolved), ``overrides.yaml``, ``status.json`` and ``results.parquet``. Results are rewritten
atomically after every fold, so a run that stops keeps its finished folds, and running it again
into the same dir computes only the missing ones.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mlcli
from mlcli import rundir
from mlcli.config import enum_name, env, security
from mlcli.config.identity import data_files, run_key
from mlcli.config.targets import check_target, find_targets, instantiate, root_cause
from mlcli.cv import plan
from mlcli.data.images import picture_rows
from mlcli.data.loading import build_dataset, split_config
from mlcli.engine import (
    DivergedError,
    EpochEnd,
    FoldPlan,
    FoldRows,
    Precomputed,
    checkpoint,
    count_parameters,
    fit_folds,
    resolve_device,
    seed_everything,
    set_up_process,
)
from mlcli.engine.fold import fit_refit
from mlcli.engine.saved import TextPredictor, load_predictor, schema_of, score, score_text
from mlcli.engine.stopping import EarlyStopping, stop_and_best
from mlcli.loggers import RunLogs
from mlcli.rundir.models import FINAL, model_name, save_model, write_schema
from mlcli.tasks import selection_metric, summarize

log = logging.getLogger("mlcli")


class Pruned(Exception):
    """A fold hook stopped the run after one of its folds (an Optuna trial's pruner)."""


class FoldHook(Protocol):
    """Called after every fold with the run's rows so far (an Optuna sweep's trial); may stop the
    run by raising :class:`Pruned`."""

    @property
    def prunes(self) -> bool:
        """Whether it may stop the run (its folds then finish one at a time, never stacked)."""
        ...

    def info(self) -> dict[str, Any]:
        """What status.json records about it (``trial``)."""
        ...

    def __call__(
        self, rows: list[dict[str, Any]], folds_done: list[int], n_folds: int, metric: str
    ) -> None:
        """After a fold: the rows so far, the folds done, how many folds, the metric."""
        ...


@dataclass
class RunOutcome:
    """What a run ended as."""

    state: str
    run_key: str
    run_dir: Path
    summary: dict[str, tuple[float, float]] = field(default_factory=dict)
    error: str | None = None


def run(
    cfg: DictConfig,
    run_dir: Path,
    *,
    choices: dict[str, str] | None = None,
    overrides: list[str] | None = None,
    reporter: Any = None,
    session: str | None = None,
    fold_hook: FoldHook | None = None,
    precomputed: Precomputed | None = None,
) -> RunOutcome:
    """Run one cross-validated experiment into ``run_dir``; return how it ended.

    ``session`` names the ``mlcli train`` command that runs it (recorded in status.json).
    ``reporter`` (optional) gets ``start(n_folds, epochs, done_folds, metric)``, ``epoch(fold,
    epoch, metrics)``, ``fold_done(fold)`` and, if it has one, ``stacked(n_folds)`` calls for a
    live display. ``fold_hook`` (an Optuna sweep's trial) is called after every fold and may
    stop the run (state PRUNED).
    ``precomputed``: this run's folds, trained already by the stacked launcher.
    """
    opened = OpenRun.open(cfg, Path(run_dir), choices, overrides, session, fold_hook)
    try:
        opened.logs = RunLogs.open(cfg, opened.run_dir, opened.key, choices, overrides)
        fold_plan = plan_folds(cfg, opened.key, opened.done, opened.run_dir)
        opened.planned(fold_plan)
        if reporter is not None:
            reporter.start(len(fold_plan.folds), int(cfg.epochs), opened.done, opened.metric)
            fold_plan.on_stacked = getattr(reporter, "stacked", None)
        fold_plan.on_epoch = _both(reporter.epoch if reporter is not None else None, opened.logs)
        fold_plan.on_lr = opened.logs.lr if opened.logs is not None else None
        fold_plan.settle = opened.writer.drain  # no write in flight while a fold sets up or forks
        fold_plan.one_at_a_time = fold_hook is not None and fold_hook.prunes
        for fold, rows in fit_folds(fold_plan, precomputed):
            opened.write_fold(fold, rows, fold_plan)
            if opened.logs is not None:
                opened.logs.fold_done(fold, rows)
            if reporter is not None:
                reporter.fold_done(fold)
            if fold_hook is not None:
                fold_hook(opened.rows, sorted(opened.done), len(fold_plan.folds), opened.metric)
        opened.write_final(fold_plan)
    except Pruned as error:
        return opened.finish("PRUNED", error)
    except DivergedError as error:
        return opened.finish("DIVERGED", error)
    except KeyboardInterrupt as error:
        opened.finish("INTERRUPTED", error)
        raise
    except BaseException as error:
        opened.finish("FAILED", error)
        raise
    return opened.finish("COMPLETED")


def _both(display: EpochEnd | None, logs: RunLogs | None) -> EpochEnd | None:
    """The epoch-end hook of a run: the live display's and the loggers' (either, both, none)."""
    if logs is None:
        return display
    if display is None:
        return logs.epoch

    def epoch_end(fold: int, epoch: int, metrics: dict[str, float]) -> None:
        display(fold, epoch, metrics)
        logs.epoch(fold, epoch, metrics)

    return epoch_end


def plan_folds(
    cfg: DictConfig, key: str, done: Iterable[int] = (), run_dir: Path | None = None
) -> FoldPlan:
    """The run's device, its data, the test split set aside before any fold is made
    (:func:`mlcli.cv.plan`) and its folds, all seeded by the run's seed; ``done``: the folds an
    earlier attempt finished."""
    device = resolve_device(enum_name(cfg.device))
    seed_everything(int(cfg.seed))
    dataset = build_dataset(cfg)
    splitter = instantiate(cfg.cv, "cv", cfg.get("allow_targets", []))
    split = plan(dataset, splitter, *split_config(cfg))
    return FoldPlan(cfg, key, dataset, split, device, run_dir, set(done))


class OpenRun:
    """A run dir being written: its status, the rows of its finished folds, and the writer that
    puts every file on disk in order (on a thread of its own, while the run goes on: what is on
    disk is always a whole prefix of what was written)."""

    def __init__(self, run_dir: Path, key: str, status: rundir.Status, kept: rundir.Kept) -> None:
        self.run_dir, self.key, self.status = run_dir, key, status
        self.rows: list[dict[str, Any]] = list(kept.rows)
        self.done: set[int] = set(kept.folds)
        self.writer = rundir.OrderedWriter()
        self.started = time.perf_counter()
        self.logs: RunLogs | None = None  # the run's loggers (logger=[...]), if any

    @classmethod
    def open(
        cls,
        cfg: DictConfig,
        run_dir: Path,
        choices: dict[str, str] | None,
        overrides: list[str] | None,
        session: str | None,
        fold_hook: FoldHook | None,
    ) -> OpenRun:
        """Open ``run_dir`` for run ``cfg``: keep the folds an earlier attempt finished (whatever
        of them can be trusted), write the config, the overrides and a RUNNING status."""
        run_dir.mkdir(parents=True, exist_ok=True)
        key = run_key(cfg)
        set_up_process(int(cfg.threads))
        kept = rundir.kept_folds(run_dir, key)
        for note in kept.notes:
            log.warning("%s", note)
        allow = list(cfg.get("allow_targets") or [])
        status = rundir.Status(
            run_key=key,
            data_files=data_files(cfg.dataset),  # hashed once per process: no second read
            started=rundir.now(),
            pid=os.getpid(),
            choices=dict(choices or {}),
            overrides=list(overrides or []),
            device=enum_name(cfg.device),
            gpu=os.environ.get(env.ASSIGNED_GPU),
            threads=int(cfg.threads),
            versions=versions(),
            folds_completed=sorted(kept.folds),
            resumed_folds=sorted(kept.folds),
            notes=list(kept.notes),
            session=session,
            trial=fold_hook.info() if fold_hook is not None else None,
            trust_overrides=security.trusted(),
            allowed_targets={
                name: {"target": target, "reason": check_target(name, target, allow)}
                for name, target in find_targets(cfg)
            },
        )
        opened = cls(run_dir, key, status, kept)
        config = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=False)
        opened.writer.submit(rundir.atomic_write_text, run_dir / rundir.CONFIG_FILE, config)
        listed = OmegaConf.to_yaml(OmegaConf.create(list(overrides or [])))
        opened.writer.submit(rundir.atomic_write_text, run_dir / rundir.OVERRIDES_FILE, listed)
        opened.writer.submit(rundir.write_json, run_dir / rundir.STATUS_FILE, status.document())
        return opened

    @property
    def metric(self) -> str:
        """The selection metric (known once the run is planned)."""
        return self.status.metric or ""

    def planned(self, fold_plan: FoldPlan) -> None:
        """Record what the plan found: the device, the task and its metric, the folds."""
        dataset, split = fold_plan.dataset, fold_plan.split
        for note in [*dataset.notes, f"folds: {split.splitter!r}"]:
            log.info("%s", note)
        status = self.status
        status.device = str(fold_plan.device)
        status.task = dataset.task
        status.metric = selection_metric(str(fold_plan.cfg.metric), dataset.task)
        status.n_folds = len(split.folds)
        status.n_test = len(split.test)
        status.splitter = repr(split.splitter)
        status.data_notes = list(dataset.notes)
        status.fold_epochs = {}
        for fold in sorted(self.done):
            self._fold_epochs(fold, [r for r in self.rows if r["fold"] == fold], fold_plan)
        if self.saves_models(fold_plan.cfg):
            schema = schema_of(fold_plan.cfg, dataset, len(split.folds))
            self.writer.submit(write_schema, self.run_dir, schema)

    @staticmethod
    def saves_models(cfg: DictConfig) -> bool:
        """Whether the run keeps its models (``save_models``, or a final model to make)."""
        return bool(cfg.get("save_models", True)) or enum_name(cfg.get("final", "none")) != "none"

    def _fold_epochs(self, fold: int, rows: list[dict[str, Any]], fold_plan: FoldPlan) -> None:
        """Record fold ``fold``'s last and best epoch (by early stopping's rule) in the status."""
        rule = EarlyStopping.of(fold_plan.cfg, fold_plan.metric)
        found = stop_and_best(rows, rule, rule.monitor if rule else fold_plan.metric)
        if found is not None and self.status.fold_epochs is not None:
            self.status.fold_epochs[str(fold)] = {"last": found[0], "best": found[1]}

    def write_fold(self, fold: int, rows: FoldRows, fold_plan: FoldPlan) -> None:
        """Queue a finished fold's files: the results with its rows, then the status listing it
        (folds that finish together, stacked, need only the last of their writes)."""
        self.rows.extend(rows)
        self.done.add(fold)
        self._fold_epochs(fold, rows, fold_plan)
        if rows.model is not None and self.saves_models(fold_plan.cfg):
            weights = {k: v.numpy() for k, v in rows.model.items()}
            preprocess = rows.preprocess or {}
            self.writer.submit(save_model, self.run_dir, model_name(fold), weights, preprocess)
        self.status.fold_training = fold_plan.trained_by
        self.status.stacked_grid = fold_plan.trained_info
        self.status.folds_completed = sorted(self.done)
        self.writer.submit(
            _save_fold, self.run_dir, list(self.rows), self.status.document(), replaces="fold"
        )
        if self.status.n_params is None:  # after the first fold is queued: its preprocessing
            # is known (one-hot columns widen the examples); the next status write records it
            shape = (rows.preprocess or {}).get("in_shape")
            in_shape = tuple(int(d) for d in shape) if shape is not None else None
            # Counting builds the model once more (the user's code, maybe): the fold is on disk
            # first, so that a run killed meanwhile keeps it.
            self.writer.drain()
            self.status.n_params = count_parameters(fold_plan, in_shape)

    def write_final(self, fold_plan: FoldPlan) -> None:
        """The final model (``final``), once every fold is done: ``refit`` trains and saves one
        model on every non-test row for the epochs cross-validation chose; the final model
        (that, or the fold ensemble) is scored on the test split once, into rows of split
        ``final`` (fold -1)."""
        cfg = fold_plan.cfg
        kind = enum_name(cfg.get("final", "none"))
        if kind == "none":
            return
        epochs = int(cfg.epochs)
        info: dict[str, Any] = {"kind": kind}
        if kind == "refit":
            bests = [e["best"] for e in (self.status.fold_epochs or {}).values()]
            if EarlyStopping.of(cfg, fold_plan.metric) is not None and bests:
                epochs = max(1, round(float(np.mean(bests))))
            info["epochs"] = epochs
            fold_plan.settle()
            refit = fit_refit(fold_plan, epochs)
            assert refit.model is not None
            weights = {k: v.numpy() for k, v in refit.model.items()}
            self.writer.submit(save_model, self.run_dir, FINAL, weights, refit.preprocess or {})
        self.status.final_model = info
        test = fold_plan.test_idx
        if len(test):
            self.writer.drain()  # the models are on disk: score what predict will load
            dataset = fold_plan.dataset
            predictor = load_predictor(self.run_dir, list(cfg.get("allow_targets") or ()))
            if isinstance(predictor, TextPredictor):  # the user's text, read as predict reads it
                values = score_text(predictor, dataset, test)
            else:
                x_test = picture_rows(dataset, test)  # (pictures on disk: decoded now)
                values = score(dataset.task, predictor.predict(x_test), dataset.y[test])
            for metric, value in values.items():
                self.rows.append({"run_key": self.key, "fold": -1, "epoch": epochs,
                                  "split": "final", "metric": metric, "value": value})  # fmt: skip
        self.writer.submit(
            _save_fold, self.run_dir, list(self.rows), self.status.document(), replaces="fold"
        )

    def finish(self, state: str, error: BaseException | None = None) -> RunOutcome:
        """The final status, written last (after every fold's files); how the run ended."""
        self.writer.drain()
        status = self.status
        status.state = state
        status.ended = rundir.now()
        status.duration_s = round(time.perf_counter() - self.started, 3)
        if error is not None:
            cause = root_cause(error)
            diverged = cause if isinstance(cause, DivergedError) else None
            status.error = rundir.RunError(
                type(cause).__name__,
                str(cause),
                diverged.epoch if diverged is not None else None,
                diverged.step if diverged is not None else None,
            )
        rundir.write_status(self.run_dir, status)
        if self.logs is not None:
            self.logs.finish(state, self.rows)
        summary = summarize(self.rows) if state == "COMPLETED" else {}
        message = str(error) if error is not None and state in ("PRUNED", "DIVERGED") else None
        return RunOutcome(state, self.key, self.run_dir, summary=summary, error=message)


def _save_fold(run_dir: Path, rows: list[dict[str, Any]], status: dict[str, Any]) -> None:
    """After a fold: results (with the fold's rows), then the status that lists the fold; the
    finished folds' checkpoints are then no longer needed."""
    rundir.write_results(run_dir / rundir.RESULTS_FILE, rows)
    rundir.write_json(run_dir / rundir.STATUS_FILE, status)
    for fold in status["folds_completed"]:
        checkpoint.fold_path(run_dir, fold).unlink(missing_ok=True)


def preload(optimizers: bool = True) -> None:
    """Import what every run needs, so that job processes forked from this one inherit it.

    Without it each job's child would pay these lazy imports again (seconds: scikit-learn's
    splitters and datasets, and ``torch._dynamo``, which the first step of a ``torch.optim``
    optimizer other than Adam/AdamW imports: ``optimizers=False`` when no job of this process
    will step one; :func:`mlcli.engine.optim.imports_dynamo`).
    """
    import sklearn.datasets
    import sklearn.model_selection  # noqa: F401

    _git_sha(os.getcwd())
    if optimizers:
        import torch._dynamo  # noqa: F401


@functools.cache
def _git_sha(cwd: str) -> str | None:
    """The commit checked out in ``cwd`` (asked once per process and directory: jobs forked
    from a process that asked already inherit the answer)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
            cwd=cwd,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, Any]:
    """What produced a result: library versions, platform and thread count."""
    return {
        "mlcli": mlcli.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "git_sha": _git_sha(os.getcwd()),
    }
