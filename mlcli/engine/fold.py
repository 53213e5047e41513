"""One fold from start to end, as the sequential and the parallel strategy train it: set up,
resumed from its own checkpoint if it left one, fitted; its rows in long form.

With ``checkpoint_every=N`` the fold saves a checkpoint every N epochs and, if it finds one of its
own, resumes from it bit for bit (:mod:`mlcli.engine.checkpoint`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from mlcli.analysis import loss_function
from mlcli.data.preprocess import fold_tensors
from mlcli.engine import checkpoint
from mlcli.engine.divergence import LossBound
from mlcli.engine.loop import (
    EpochEnd,
    FoldRows,
    LrSteps,
    MetricRow,
    batches_per_epoch,
    epoch_rows,
    fit,
    has_batch_norm,
    long_rows,
    lr_step_rows,
)
from mlcli.engine.setup import (
    FINAL_VOCABULARY_FILE,
    Builders,
    FoldPlan,
    FoldSetup,
    save_vocabulary,
    set_up_fold,
)
from mlcli.engine.stopping import EarlyStopping

log = logging.getLogger("mlcli")


def fit_fold(
    plan: FoldPlan, fold: int, on_epoch: EpochEnd | None = None, on_lr: LrSteps | None = None
) -> FoldRows:
    """Fresh model, optimizer and scheduler for fold ``fold`` of ``plan``; fit; its rows.

    ``on_epoch(fold, epoch, metrics)`` is called at every epoch's end (the progress display,
    loggers), after ``on_lr(fold, steps)`` (:data:`~mlcli.engine.loop.LrSteps`).
    """
    cfg, builders, run_dir = plan.cfg, plan.builders(), plan.run_dir
    assert run_dir is not None, "a fold trained on its own writes into its run's dir"
    setup, optimizer, scheduler = _build(plan, fold, builders)
    analyzer = builders.analyzer(
        loss_fn=loss_function(plan.dataset.task),
        out_dir=run_dir / "analysis",
        fold=fold,
        seed=setup.seed,
    )
    bound = LossBound(cfg.get("diverge_factor"))
    stopper = EarlyStopping.of(cfg, plan.metric)
    every = int(cfg.get("checkpoint_every") or 0)
    path = checkpoint.fold_path(run_dir, fold)
    start_epoch = 1
    done_rows: list[MetricRow] = []  # this fold's rows, epoch by epoch (its checkpoints hold them)
    state = checkpoint.fold_state(path, plan.key, fold) if every else None
    if state is not None:
        try:
            start_epoch, done_rows = checkpoint.resume(
                state, **_objects(setup, optimizer, scheduler, plan)
            )
            initial = state.get("loss_initial")  # the divergence bound's reference
            bound.initial = float(initial) if isinstance(initial, (int, float)) else None
            if stopper is not None:
                stopper.restore(state["early_stopping"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            # Half restored: the fold starts again from freshly built (and seeded) objects.
            log.warning(
                "%s: does not fit fold %d (%s: %s); the fold starts from its first epoch",
                path, fold, type(error).__name__, error,
            )  # fmt: skip
            setup, optimizer, scheduler = _build(plan, fold, builders, setup)
            start_epoch, done_rows = 1, []
            bound.initial = None
            stopper = EarlyStopping.of(cfg, plan.metric)
    previous = list(done_rows)  # the rows of the epochs before start_epoch (its checkpoint's)

    def epoch_end(fold: int, epoch: int, metrics: dict[str, float]) -> None:
        done_rows.extend(epoch_rows(epoch, metrics))
        if every and epoch % every == 0 and epoch < int(cfg.epochs):
            # Saved before anything else runs: the random states are those epoch+1 starts from.
            objects = _objects(setup, optimizer, scheduler, plan)
            state = checkpoint.capture(run_key=plan.key, fold=fold, epoch=epoch, rows=done_rows,
                                       loss_initial=bound.initial, **objects)  # fmt: skip
            if stopper is not None:
                state["early_stopping"] = stopper.state()
            checkpoint.save(path, state)
        if on_epoch is not None:
            on_epoch(fold, epoch, metrics)

    rows = fit(
        setup.model,
        optimizer,
        scheduler,
        setup.data,
        task=plan.dataset.task,
        epochs=int(cfg.epochs),
        batch_size=int(cfg.batch_size),
        generator=setup.generator,
        clip_grad_norm=cfg.get("clip_grad_norm"),
        fold=fold,
        on_epoch=epoch_end,
        on_lr=_keeping(done_rows, on_lr),
        start_epoch=start_epoch,
        analyzer=analyzer if analyzer.active else None,
        bound=bound,
        stopper=stopper,
    )
    # Rows of the epochs before a checkpoint resume came from the checkpoint.
    model, preprocess = setup.model.state_dict(), setup.data.preprocess
    return long_rows(plan.key, fold, [*previous, *rows], model=model, preprocess=preprocess)


def _keeping(rows: list[MetricRow], on_lr: LrSteps | None) -> LrSteps:
    """A fold's per-step lr hook: the epoch's ``train_step/lr`` rows kept with its other rows
    (its checkpoints hold them), then ``on_lr``."""

    def lr_steps(fold: int, steps: list[tuple[int, float]]) -> None:
        rows.extend(lr_step_rows(steps))
        if on_lr is not None:
            on_lr(fold, steps)

    return lr_steps


def _build(
    plan: FoldPlan, fold: int, builders: Builders, again: FoldSetup | None = None
) -> tuple[FoldSetup, torch.optim.Optimizer, Any]:
    """The fold set up (``again``: rebuilt on the tensors it has) with its optimizer and its
    schedule over the fold's optimizer steps."""
    setup = set_up_fold(plan, fold, builders.model, again.data if again is not None else None)
    optimizer = builders.optimizer(setup.model.parameters())
    steps_per_epoch = batches_per_epoch(
        len(setup.data.x_train), int(plan.cfg.batch_size), has_batch_norm(setup.model)
    )
    scheduler = builders.scheduler(optimizer, total_steps=int(plan.cfg.epochs) * steps_per_epoch)
    return setup, optimizer, scheduler


def _objects(
    setup: FoldSetup, optimizer: torch.optim.Optimizer, scheduler: Any, plan: FoldPlan
) -> dict[str, Any]:
    """What a fold's checkpoint captures and restores: its model, optimizer, schedule, batch
    order, and the device they are on."""
    return {
        "model": setup.model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "generator": setup.generator,
        "device": plan.device,
    }


def fit_refit(plan: FoldPlan, epochs: int) -> FoldRows:
    """``final=refit``: one model trained on every non-test row for ``epochs`` epochs, its
    preprocessing fitted on those rows, seeded as one more fold (``K``) would be; its rows are
    its test rows (evaluated once). Training watches no val split: its rows stand in for one
    (early stopping does not apply: ``epochs`` is what cross-validation chose)."""
    cfg, builders = plan.cfg, plan.builders()
    rows = np.setdiff1d(np.arange(len(plan.dataset.y)), plan.test_idx)
    data = fold_tensors(plan.dataset, rows, rows, plan.test_idx, cfg.dataset, plan.device)
    save_vocabulary(plan, FINAL_VOCABULARY_FILE, data)
    setup = set_up_fold(plan, len(plan.folds), builders.model, data)
    optimizer = builders.optimizer(setup.model.parameters())
    steps_per_epoch = batches_per_epoch(
        len(data.x_train), int(cfg.batch_size), has_batch_norm(setup.model)
    )
    scheduler = builders.scheduler(optimizer, total_steps=epochs * steps_per_epoch)
    metric_rows = fit(
        setup.model,
        optimizer,
        scheduler,
        data,
        task=plan.dataset.task,
        epochs=epochs,
        batch_size=int(cfg.batch_size),
        generator=setup.generator,
        clip_grad_norm=cfg.get("clip_grad_norm"),
        fold=len(plan.folds),
        bound=LossBound(cfg.get("diverge_factor")),
    )
    return long_rows(
        plan.key,
        len(plan.folds),
        [r for r in metric_rows if r[1] == "test"],
        model=setup.model.state_dict(),
        preprocess=data.preprocess,
    )
