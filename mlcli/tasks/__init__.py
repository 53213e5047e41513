"""Per task (classification, regression, tagging, seq2seq): what a run records and how it is judged.

* the metric names the training loop records (:data:`TRAIN_METRICS`, :data:`EVAL_METRICS`; the
  preflight checks ``metric=`` against them, a test holds the loops to them);
* which metrics are better higher (:func:`higher_is_better`: the report's ranking, the Optuna
  objective's direction), and the selection metric of ``metric=auto`` (:func:`selection_metric`);
* a run's fold summary: each metric's fold mean ± std at the final epoch (:func:`summarize`).

The torch side, the loss and the metric sums both training loops call, is
:mod:`mlcli.tasks.metrics`. This module stays light (no torch, no pandas): the preflight and the
report import it. What each split records:

* ``train``: the epoch's metrics as trained (``train/lr``, a setting rather than a result, is
  recorded too but is no metric to select by); with ``analysis.hessian`` also the critical-point
  numbers (and, with ``escape``, the saddle escapes).
* ``val`` and ``test``: the whole split in eval mode (seq2seq adds greedy decoding's numbers).
"""

from __future__ import annotations

from typing import Any

SPLITS = ("train", "val", "test")
TRAIN_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "acc"),
    "regression": ("loss", "mse", "mae", "r2"),
    "tagging": ("loss", "acc"),
    "seq2seq": ("loss", "tf_acc"),
}
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    **TRAIN_METRICS,
    "seq2seq": ("loss", "tf_acc", "token_acc", "exact_match"),
}
HESSIAN_METRICS = (
    "grad_norm",
    "hess_min_eig",
    "hess_max_eig",
    "min_ratio",
    "at_saddle",
    "at_minimum",
)
"""Train-split rows of ``analysis.hessian`` (``min_ratio`` only for an exact Hessian)."""
ESCAPE_METRICS = ("escape", "escape_loss_before", "escape_loss_after")
"""Train-split rows of a saddle escape (``analysis.hessian.escape=true``)."""
AUTO_METRIC = {
    "classification": "val/acc",
    "tagging": "val/acc",
    "regression": "val/r2",
    "seq2seq": "val/exact_match",
}
"""What ``metric=auto`` selects by."""


LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err")
"""Metric names (or name endings) whose smaller values are better; every other metric (acc, r2,
exact_match...) is better higher."""


def higher_is_better(metric: str) -> bool:
    """Direction of a metric from its name: accuracy/R² up, loss/MSE/MAE down (``auto``, which
    selects an accuracy, R² or exact match, is better higher)."""
    name = metric.split("/")[-1].lower()
    return not any(name == m or name.endswith(m) for m in LOWER_IS_BETTER)


def selection_metric(metric: str, task: str) -> str:
    """Resolve ``metric=auto`` for ``task`` (:data:`AUTO_METRIC`); any other name as it is."""
    return AUTO_METRIC.get(task, "val/acc") if metric == "auto" else metric


def recorded_metrics(task: str | None, analysis: Any = None) -> list[str]:
    """The ``split/metric`` names a run of ``task`` records (``None``: any task), with the
    analyses that ``analysis`` (the run's ``analysis`` node) configures."""
    tasks = [task] if task is not None else list(TRAIN_METRICS)
    names = {f"train/{m}" for t in tasks for m in TRAIN_METRICS.get(t, ())}
    evaluated = {m for t in tasks for m in EVAL_METRICS.get(t, ())}
    names |= {f"{split}/{m}" for m in evaluated for split in ("val", "test")}
    hessian = analysis.get("hessian") if analysis is not None else None
    if hessian is not None:
        names |= {f"train/{m}" for m in HESSIAN_METRICS}
        if hessian.get("escape"):
            names |= {f"train/{m}" for m in ESCAPE_METRICS}
    return sorted(names, key=lambda n: (SPLITS.index(n.split("/")[0]), n))


def metric_problem(metric: str, task: str | None, analysis: Any = None) -> str | None:
    """What is wrong with ``metric=...`` for a run of ``task`` (None: nothing), with the valid
    names and a close match."""
    from mlcli.config.validate import did_you_mean

    if metric == "auto":
        return None
    valid = recorded_metrics(task, analysis)
    if metric in valid:
        return None
    hint = did_you_mean(metric, valid)
    if not hint and "/" not in metric and f"val/{metric}" in valid:
        hint = f" Did you mean 'val/{metric}'?"
    who = f"a {task} run" if task is not None else "any task"
    return (
        f"{metric!r} is not a metric {who} records.{hint} Valid: auto, {', '.join(valid)} "
        "(split/name; auto = " + (AUTO_METRIC.get(task, "val/acc") if task else "by task") + ")"
    )


def summarize(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Fold mean ± std (sample std, ddof=1) of each split/metric at the final epoch of the long-form
    ``rows`` (a fold's last epoch: each fold may have trained for a different number of epochs)."""
    import numpy as np

    from mlcli.rundir.results import STEP_SPLIT

    final: dict[tuple[int, str, str], tuple[int, float]] = {}
    for r in rows:
        if r["split"] == STEP_SPLIT:
            continue  # per-step rows (their epoch column counts steps)
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
