"""How folds are fitted: one :func:`fit_folds` for every way of training a run's folds.

The runner plans a run's folds (:class:`FoldPlan`: config, data, folds, device) and hands them
to :func:`fit_folds`, which picks a strategy (:mod:`~mlcli.engine.strategies`: precomputed by the
stacked launcher, stacked, parallel or sequential) and yields each fold's rows in fold order.
Inside:

* :mod:`~mlcli.engine.setup`: seeds, the device, the run's builders, the fold plan, and the one
  fold set-up every strategy uses (fold tensors → fold seed → model → batch order);
* :mod:`~mlcli.engine.fold`: one fold from start to end, with its checkpoints
  (:mod:`~mlcli.engine.checkpoint`);
* :mod:`~mlcli.engine.loop`: the training loop (``fit``) and evaluation, read top to bottom;
  :mod:`~mlcli.engine.divergence`: when a fold has diverged;
* :mod:`~mlcli.engine.stacked`: the folds of a run (or of a grid) as one stacked model, its loop,
  and :mod:`~mlcli.engine.member_optim`, the optimizer with per-member hyperparameters;
* :mod:`~mlcli.engine.parallel`: folds in worker processes; :mod:`~mlcli.engine.optim`:
  optimizer construction.
"""

from __future__ import annotations

from mlcli.engine.divergence import DivergedError
from mlcli.engine.loop import EpochEnd, FoldRows, MetricRow
from mlcli.engine.setup import (
    FoldPlan,
    FoldSetup,
    count_parameters,
    resolve_device,
    seed_everything,
    set_up_fold,
    set_up_process,
)
from mlcli.engine.strategies import FoldStrategy, Precomputed, fit_folds

__all__ = [
    "DivergedError",
    "EpochEnd",
    "FoldPlan",
    "FoldRows",
    "FoldSetup",
    "FoldStrategy",
    "MetricRow",
    "Precomputed",
    "count_parameters",
    "fit_folds",
    "resolve_device",
    "seed_everything",
    "set_up_fold",
    "set_up_process",
]
