"""``run(cfg, run_dir)``: seed, data, test split, folds, fit, write. Knows nothing of argv.

A run dir explains itself: ``config.yaml`` (resolved), ``overrides.yaml``, ``status.json`` and
``results.parquet``. Results are rewritten atomically after every fold, so a run that stops keeps
its finished folds, and running it again into the same dir computes only the missing ones.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mlcli
from mlcli import rundir
from mlcli.analysis import loss_function
from mlcli.config import enum_name, security
from mlcli.config.identity import data_files, run_key
from mlcli.config.targets import check_target, factory, find_targets, instantiate, root_cause
from mlcli.cv import plan
from mlcli.data.base import Dataset
from mlcli.data.loading import build_dataset, split_config
from mlcli.data.preprocess import fold_tensors
from mlcli.engine import checkpoint
from mlcli.engine.loop import DivergedError, LossBound, batches_per_epoch, fit, has_batch_norm
from mlcli.engine.optim import optimizer_factory
from mlcli.engine.stacked import fold_results
from mlcli.models import model_factory
from mlcli.sweeps.study import FoldReporter, TrialPruned
from mlcli.tasks import selection_metric

log = logging.getLogger("mlcli")


def preload(optimizers: bool = True) -> None:
    """Import what every run needs, so that job processes forked from this one inherit it.

    Without it each job's child would pay these lazy imports again (seconds: scikit-learn's
    splitters and datasets, and ``torch._dynamo``, which the first ``torch.optim`` optimizer a
    process builds imports: ``optimizers=False`` when no job of this process will build one).
    """
    import sklearn.datasets
    import sklearn.model_selection  # noqa: F401

    _git_sha(os.getcwd())
    if optimizers:
        import torch._dynamo  # noqa: F401


def derived_seed(*numbers: int) -> int:
    """A well-mixed 32-bit seed from several integers (e.g. run seed and fold)."""
    return int(np.random.SeedSequence([abs(int(n)) for n in numbers]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is available")
    return torch.device(name)


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


@dataclass(frozen=True)
class Builders:
    """What each fold of a run builds afresh, composed once per run
    (:func:`mlcli.config.targets.factory`): ``model(in_shape)``, ``optimizer(params)``,
    ``scheduler(optimizer, total_steps=...)``, ``analyzer(loss_fn=..., out_dir=..., fold=...,
    seed=...)``."""

    model: Callable[[tuple[int, ...] | None], torch.nn.Module]
    optimizer: Callable[[Any], torch.optim.Optimizer]
    scheduler: Callable[..., Any]
    analyzer: Callable[..., Any]

    @classmethod
    def for_run(cls, cfg: DictConfig, dataset: Dataset) -> Builders:
        """The builders of run ``cfg`` on ``dataset`` (targets checked against the allowlist)."""
        allow = list(cfg.get("allow_targets") or [])
        return cls(
            model=model_factory(cfg.model, dataset, allow),
            optimizer=optimizer_factory(cfg.optim, allow),
            scheduler=factory(cfg.scheduler, "scheduler", allow),
            analyzer=factory(cfg.analysis, "analysis", allow),
        )


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
    fold_hook: FoldReporter | None = None,
) -> RunOutcome:
    """Run one cross-validated experiment into ``run_dir``; return how it ended.

    ``session`` names the ``mlcli train`` command that runs it (recorded in status.json).
    ``reporter`` (optional) gets ``start(n_folds, epochs)``, ``epoch(fold, epoch, metrics)`` and
    ``fold_done(fold)`` calls for a live display. ``fold_hook`` (an Optuna sweep's trial) is
    called after every fold with the rows so far and may stop the run (state PRUNED).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_key(cfg)
    torch.set_num_threads(int(cfg.threads))

    allow = list(cfg.get("allow_targets") or [])
    status_path = run_dir / rundir.STATUS_FILE
    # A run continued in its dir keeps its finished folds (whatever of them can be trusted).
    kept = rundir.kept_folds(run_dir, key)
    rows, done_folds = kept.rows, kept.folds
    for note in kept.notes:
        log.warning("%s", note)

    # Every file of the run is written in order on a writer thread, while the run sets up its
    # data and folds; what is on disk is always a whole prefix of what was written.
    writer = rundir.OrderedWriter()
    writer.submit(
        rundir.atomic_write_text,
        run_dir / rundir.CONFIG_FILE,
        OmegaConf.to_yaml(cfg, resolve=True, sort_keys=False),
    )
    writer.submit(
        rundir.atomic_write_text,
        run_dir / rundir.OVERRIDES_FILE,
        OmegaConf.to_yaml(OmegaConf.create(list(overrides or []))),
    )
    status: dict[str, Any] = {
        "state": "RUNNING",
        "run_key": key,
        # The content hashes the run key covers (hashed once per process: no second read).
        "data_files": data_files(cfg.dataset),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ended": None,
        "duration_s": None,
        "pid": os.getpid(),
        "choices": dict(choices or {}),
        "overrides": list(overrides or []),
        "device": enum_name(cfg.device),
        "threads": int(cfg.threads),
        "versions": versions(),
        "folds_completed": sorted(done_folds),
        "resumed_folds": sorted(done_folds),  # finished before this attempt: not recomputed
        "notes": list(kept.notes),  # what an earlier attempt left that could not be trusted
        "session": session,
        "error": None,
        **({"trial": fold_hook.info()} if fold_hook is not None else {}),
        "trust_overrides": security.trusted(),
        "allowed_targets": {
            key: {"target": target, "reason": check_target(key, target, allow)}
            for key, target in find_targets(cfg)
        },
    }
    writer.submit(rundir.write_json, status_path, dict(status))
    started = time.perf_counter()

    def finish(state: str, error: BaseException | None = None) -> None:
        writer.drain()  # the folds' files first: the final status is the last write
        status["state"] = state
        status["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        status["duration_s"] = round(time.perf_counter() - started, 3)
        if error is not None:
            error = root_cause(error)
            status["error"] = {"type": type(error).__name__, "message": str(error)}
            if isinstance(error, DivergedError):
                status["error"].update(epoch=error.epoch, step=error.step)
        rundir.write_json(status_path, status)

    try:
        device = resolve_device(enum_name(cfg.device))
        status["device"] = str(device)
        seed_everything(int(cfg.seed))
        dataset = build_dataset(cfg)
        splitter = instantiate(cfg.cv, "cv", cfg.get("allow_targets", []))
        # The test split is set aside before any fold is made (mlcli.cv.plan).
        split = plan(dataset, splitter, *split_config(cfg))
        folds, test_idx = split.folds, split.test
        for note in [*dataset.notes, f"folds: {split.splitter!r}"]:
            log.info("%s", note)
        status.update(
            task=dataset.task,
            metric=selection_metric(str(cfg.metric), dataset.task),
            n_folds=len(folds),
            n_test=len(test_idx),
            splitter=repr(split.splitter),
            data_notes=list(dataset.notes),
        )
        if reporter is not None:
            reporter.start(len(folds), int(cfg.epochs), done_folds, status["metric"])

        built: list[Builders] = []  # made when a fold first trains on its own

        def run_fold(fold: int, fold_reporter: Any) -> list[dict[str, Any]]:
            # The folds before this one are on disk before it builds anything: a run killed
            # while it trains keeps them all (stacked folds, which end together, write once).
            writer.drain()
            if not built:
                built.append(Builders.for_run(cfg, dataset))
            train_idx, val_idx = folds[fold]
            return _run_fold(
                cfg,
                key,
                fold,
                dataset,
                train_idx,
                val_idx,
                test_idx,
                device,
                fold_reporter,
                run_dir,
                built[0],
            )

        if int(cfg.get("parallel_folds", 1)) > 1:
            writer.drain()  # no write in flight while fold processes are forked
        if fold_hook is not None and fold_hook.prunes and enum_name(cfg.stack_folds) == "auto":
            # A pruner judges folds as they finish: stacked folds would all finish at once.
            cfg = cfg.copy()
            cfg.stack_folds = "off"
        # Sequential, stacked (stack_folds) or in parallel processes (parallel_folds).
        for fold, fold_rows in fold_results(
            cfg, key, dataset, folds, done_folds, test_idx, device, reporter, run_fold, status
        ):
            rows.extend(fold_rows)
            done_folds.add(fold)
            status["folds_completed"] = sorted(done_folds)
            # Folds that finish together (stacked) need only the last of their writes.
            writer.submit(_save_fold, run_dir, list(rows), dict(status), replaces="fold")
            if reporter is not None:
                reporter.fold_done(fold)
            if fold_hook is not None:
                fold_hook(rows, sorted(done_folds), len(folds), status["metric"])
    except TrialPruned as error:
        finish("PRUNED", error)
        return RunOutcome("PRUNED", key, run_dir, error=str(error))
    except DivergedError as error:
        finish("DIVERGED", error)
        return RunOutcome("DIVERGED", key, run_dir, error=str(error))
    except KeyboardInterrupt as error:
        finish("INTERRUPTED", error)
        raise
    except BaseException as error:
        finish("FAILED", error)
        raise
    finish("COMPLETED")
    return RunOutcome("COMPLETED", key, run_dir, summary=summarize(rows))


def _save_fold(run_dir: Path, rows: list[dict[str, Any]], status: dict[str, Any]) -> None:
    """After a fold: results (with the fold's rows), then the status that lists the fold; the
    finished folds' checkpoints are then no longer needed."""
    rundir.write_results(run_dir / rundir.RESULTS_FILE, rows)
    rundir.write_json(run_dir / rundir.STATUS_FILE, status)
    for fold in status["folds_completed"]:
        checkpoint.fold_path(run_dir, fold).unlink(missing_ok=True)


def _run_fold(
    cfg: DictConfig,
    key: str,
    fold: int,
    dataset: Dataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    device: torch.device,
    reporter: Any,
    run_dir: Path,
    builders: Builders,
) -> list[dict[str, Any]]:
    """Fresh model, optimizer and scheduler; fit; return the fold's long-form rows.

    With ``checkpoint_every`` set, the fold saves a checkpoint every that many epochs and, if it
    finds one of its own, resumes from it (see :mod:`mlcli.engine.checkpoint`).
    """
    data = fold_tensors(dataset, train_idx, val_idx, test_idx, cfg.dataset, device)
    # Each fold is seeded from (seed, fold) alone, so a fold computed on resume is the same.
    fold_seed = derived_seed(int(cfg.seed), fold)
    bound = LossBound(cfg.get("diverge_factor"))

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, torch.Generator]:
        seed_everything(fold_seed)
        # One-hot columns are fitted per fold, so the width comes from the fold's tensors.
        model = builders.model(tuple(data.x_train.shape[1:])).to(device)
        optimizer = builders.optimizer(model.parameters())
        steps_per_epoch = batches_per_epoch(
            len(train_idx), int(cfg.batch_size), has_batch_norm(model)
        )
        scheduler = builders.scheduler(optimizer, total_steps=int(cfg.epochs) * steps_per_epoch)
        generator = torch.Generator().manual_seed(derived_seed(int(cfg.seed), fold, 1))
        return model, optimizer, scheduler, generator

    model, optimizer, scheduler, generator = build()
    analyzer = builders.analyzer(
        loss_fn=loss_function(dataset.task),
        out_dir=run_dir / "analysis",
        fold=fold,
        seed=fold_seed,
    )

    every = int(cfg.get("checkpoint_every") or 0)
    ckpt_path = checkpoint.fold_path(run_dir, fold) if run_dir is not None else None
    start_epoch = 1
    done_rows: list[tuple[int, str, str, float]] = []  # this fold's rows, epoch by epoch
    state = _fold_checkpoint(ckpt_path, key, fold) if every else None
    if state is not None:
        try:
            start_epoch, done_rows = checkpoint.resume(
                state,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                generator=generator,
                device=device,
            )
            initial = state.get("loss_initial")  # the divergence bound's reference
            bound.initial = float(initial) if isinstance(initial, (int, float)) else None
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            # Half restored: the fold starts again from freshly built (and seeded) objects.
            log.warning(
                "%s: does not fit fold %d (%s: %s); the fold starts from its first epoch",
                ckpt_path, fold, type(error).__name__, error,
            )  # fmt: skip
            model, optimizer, scheduler, generator = build()
            start_epoch, done_rows = 1, []
            bound.initial = None

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            split, metric = name.split("/", 1)
            done_rows.append((epoch, split, metric, value))
        if every and ckpt_path is not None and epoch % every == 0 and epoch < int(cfg.epochs):
            # Saved before anything else runs: the random states are those epoch+1 starts from.
            state = checkpoint.capture(
                run_key=key,
                fold=fold,
                epoch=epoch,
                rows=done_rows,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                generator=generator,
                device=device,
                loss_initial=bound.initial,
            )
            checkpoint.save(ckpt_path, state)
        if reporter is not None:
            reporter.epoch(fold, epoch, metrics)

    fold_rows = fit(
        model,
        optimizer,
        scheduler,
        data,
        task=dataset.task,
        epochs=int(cfg.epochs),
        batch_size=int(cfg.batch_size),
        generator=generator,
        clip_grad_norm=cfg.get("clip_grad_norm"),
        on_epoch=on_epoch,
        start_epoch=start_epoch,
        analyzer=analyzer if analyzer.active else None,
        bound=bound,
    )
    # Rows of the epochs before a checkpoint resume came from the checkpoint.
    previous_rows = [r for r in done_rows if r[0] < start_epoch]
    return [
        {"run_key": key, "fold": fold, "epoch": e, "split": s, "metric": m, "value": v}
        for e, s, m, v in [*previous_rows, *fold_rows]
    ]


def _fold_checkpoint(path: Path | None, key: str, fold: int) -> dict[str, Any] | None:
    """The checkpoint fold ``fold`` of run ``key`` left at ``path``, or None (none, another
    run's, or one that is no checkpoint: then with a warning, and the fold starts afresh)."""
    if path is None or not os.path.lexists(path):
        return None
    try:
        state = checkpoint.load(path)
    except (FileNotFoundError, checkpoint.CheckpointUnreadableError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("%s; fold %d starts from its first epoch", error, fold)
        return None
    return state if state.get("run_key") == key and state.get("fold") == fold else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Fold mean ± std (sample std, ddof=1) of each split/metric at the final epoch."""
    final: dict[tuple[int, str, str], tuple[int, float]] = {}
    for r in rows:
        k = (r["fold"], r["split"], r["metric"])
        if k not in final or r["epoch"] >= final[k][0]:
            final[k] = (r["epoch"], r["value"])
    by_metric: dict[str, list[float]] = {}
    for (_, split, metric), (_, value) in sorted(final.items()):
        by_metric.setdefault(f"{split}/{metric}", []).append(value)
    out = {}
    for name, values in by_metric.items():
        arr = np.asarray(values, dtype=np.float64)
        out[name] = (float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)
    return out
