"""``mlcli lab``: the course's demonstrations, each an ordinary mlcli sweep plus a figure and a
verdict computed from its results.

Each demonstration (:class:`~mlcli.lab.base.Demo`) is the ``experiment=`` preset of its name in
``conf/experiment/`` (so ``mlcli train -m +experiment=NAME`` runs the same sweep), overrides
that shrink it for ``--quick``, and an analysis that reads the sweep's run dirs through the
report's collect library and returns a :class:`~mlcli.lab.base.Verdict` (the claim, the numbers,
``supported``: yes / no / inconclusive, and the rule) after drawing its figure.
"""

from __future__ import annotations

from mlcli.lab import fitting, optimization
from mlcli.lab.base import INCONCLUSIVE, NO, YES, Demo, LabRuns, Verdict

DEMOS: dict[str, Demo] = {
    demo.name: demo
    for demo in (
        Demo(
            "curve_fit",
            "regression: a curve as a constant plus a sum of sigmoids",
            "sums of N sigmoids / ReLU pairs fit a piecewise-linear curve (error vs N)",
            ("model.n_units=1,4,16", "epochs=150", "dataset.n_samples=200"),
            fitting.curve_fit,
            ("curve_fit.png",),
        ),
        Demo(
            "deep_vs_shallow",
            "why deep: deeper beats wider at the same number of parameters",
            "1, 2 and 3 hidden layers of ~290 parameters on a 12-piece curve",
            ("epochs=150", "seed=0,1", "dataset.n_samples=600"),
            fitting.deep_vs_shallow,
            ("deep_vs_shallow.png",),
        ),
        Demo(
            "model_size",
            "model bias vs overfitting: train and val error against model size",
            "MLPs from 1 to 512×512 hidden units on 100 noisy samples",
            ("epochs=200", "model.hidden=[1],[16],[256]"),
            fitting.model_size,
            ("model_size.png",),
        ),
        Demo(
            "optimization_issue",
            "a large training loss: model bias or an optimization issue",
            "a plain 6-layer sigmoid MLP vs a 1-layer one, then with batch norm",
            ("epochs=8", "dataset.max_rows=600"),
            optimization.optimization_issue,
            ("optimization_issue.png",),
        ),
        Demo(
            "critical_points",
            "critical points: local minimum or saddle point (minimum ratio)",
            "gradient norm, Hessian eigenvalues and minimum ratio at the end of many seeds",
            ("seed=range(0,6)",),
            optimization.critical_points,
            ("critical_points.png",),
        ),
        Demo(
            "batch_size",
            "batch size: time per epoch, noise, accuracy, flat vs sharp minima",
            "batch sizes 8 to 1024 for the same epochs; the loss between the two extremes",
            ("batch_size=8,128,1024", "dataset.max_rows=800"),
            optimization.batch_size,
            ("batch_size.png",),
        ),
        Demo(
            "momentum",
            "momentum: escaping a saddle point",
            "SGD with momentum 0, 0.5, 0.9 on a 3-layer sigmoid MLP that starts on a plateau",
            ("epochs=20", "optim.momentum=0.0,0.9"),
            optimization.momentum,
            ("momentum.png",),
        ),
        Demo(
            "optimizers",
            "adaptive learning rates: SGD, Adagrad, RMSProp, Adam",
            "trajectories on an ill-conditioned error surface",
            ("epochs=30",),
            optimization.optimizers,
            ("optimizers.png",),
        ),
        Demo(
            "warmup",
            "warmup: early Transformer training at a high learning rate",
            "a post-LN Transformer with and without a linear warmup",
            ("epochs=8", "dataset.n_samples=1000", "scheduler.warmup_steps=30"),
            optimization.warmup,
            ("warmup.png",),
        ),
        Demo(
            "batchnorm",
            "batch normalization smooths the error surface",
            "an MLP with and without batch norm at several learning rates",
            ("epochs=4", "optim.lr=0.1,2.0", "dataset.max_rows=800"),
            optimization.batchnorm,
            ("batchnorm.png",),
        ),
        Demo(
            "holdout_vs_kfold",
            "N-fold cross-validation vs one validation split",
            "the spread of the accuracy estimate over split seeds",
            ("cv.seed=range(0,4)", "epochs=8"),
            fitting.holdout_vs_kfold,
            ("holdout_vs_kfold.png",),
        ),
        Demo(
            "random_labels",
            "overfitting: a big network memorizes random labels",
            "a wide MLP on true and on shuffled digit labels",
            ("epochs=60", "dataset.max_rows=200"),
            fitting.random_labels,
            ("random_labels.png",),
        ),
    )
}
"""Every demonstration, by name (``mlcli lab list``)."""

__all__ = ["DEMOS", "INCONCLUSIVE", "NO", "YES", "Demo", "LabRuns", "Verdict"]
