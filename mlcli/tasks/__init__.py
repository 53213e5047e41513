"""What each task records: the metric names of the training loop and the default selection metric.

One table, read by the preflight (``metric=`` must name a metric the run's task records), by the
runner (``metric=auto``) and by the tests that hold :mod:`mlcli.engine.loop` and
:mod:`mlcli.analysis` to it. Light: no torch, no pandas.

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
    from mlcli.config import did_you_mean

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
