"""The course's rules for reading learning curves, made explicit: high bias, overfitting, good fit.

Every rule reads the fold-mean curves of one configuration (mean over its runs × folds at each
epoch) and is judged separately for each configuration:

* **training error** ``E_train``: ``1 − acc`` (classification) or ``1 − R²`` (regression) of the
  train split at the last epoch: scale-free, so it can be compared across configurations and with
  an absolute threshold. ``E_val`` likewise on the val split; the **gap** is ``E_val − E_train``.
* **high bias**: the training error itself is high: ``E_train > best + bias_margin``, where
  ``best`` is the lowest training error among the configurations reported on the same dataset
  (so the set's best configuration is never flagged by this rule), or ``E_train > bias_threshold``
  when a threshold is given (the rule to use when every configuration may be underfitting).
* **overfitting**: the val loss is lowest at an epoch ``k`` before the last epoch ``L`` and has
  risen by more than ``overfit_tolerance`` (relative) by ``L``, while the train loss kept falling
  (``train_loss[L] < train_loss[k]``). Losses are used here because they are smooth where the
  accuracy of a small val split moves in steps.
* **good fit**: neither. The reason says whether the val loss was still falling at the last epoch
  (more epochs may help).

Both high bias and overfitting can hold at once ("high bias, overfitting").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HIGH_BIAS = "high bias"
OVERFITTING = "overfitting"
GOOD_FIT = "good fit"
NO_CURVES = "no curves"


@dataclass(frozen=True)
class Rules:
    """The thresholds of the diagnosis (see the module docstring)."""

    bias_margin: float = 0.05
    """High bias when the training error exceeds the set's best by more than this."""
    bias_threshold: float | None = None
    """High bias when the training error exceeds this (off when None)."""
    overfit_tolerance: float = 0.05
    """Overfitting needs the val loss to rise by more than this fraction above its minimum."""


def _wide(curves: pd.DataFrame, split: str, metric: str, index: pd.Index) -> pd.DataFrame:
    """Fold-mean curve of split/metric: one row per configuration, one column per epoch."""
    chosen = curves[(curves["split"] == split) & (curves["metric"] == metric)]
    if chosen.empty:
        return pd.DataFrame(index=index, dtype=np.float64)
    return chosen.pivot(index="config", columns="epoch", values="mean").reindex(index=index)


def _last(wide: pd.DataFrame) -> np.ndarray:
    """Each row's value at its last epoch with a finite value (NaN when none)."""
    values = wide.to_numpy(dtype=np.float64)
    if values.size == 0:
        return np.full(len(wide), np.nan)
    finite = np.isfinite(values)
    last = values.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    picked = values[np.arange(len(values)), last]
    return np.where(finite.any(axis=1), picked, np.nan)


def _error(curves: pd.DataFrame, split: str, index: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """(``1 − acc`` or ``1 − R²`` at the last epoch, name of the measure) per configuration."""
    acc = 1.0 - _last(_wide(curves, split, "acc", index))
    r2 = 1.0 - _last(_wide(curves, split, "r2", index))
    measure = np.where(np.isfinite(acc), "1−acc", np.where(np.isfinite(r2), "1−R²", ""))
    return np.where(np.isfinite(acc), acc, r2), measure


def diagnose(
    curves: pd.DataFrame, rules: Rules | None = None, cohort: pd.Series | None = None
) -> pd.DataFrame:
    """Diagnose each configuration from its fold-mean curves.

    ``curves`` is long form with columns ``config, split, metric, epoch, mean`` (train and val
    splits; metrics ``loss`` and ``acc`` or ``r2``). ``cohort`` maps a configuration to the set
    its training error is compared with (e.g. its dataset; default: all together).

    Returns one row per configuration (index ``config``) with ``diagnosis`` (a label),
    ``reason`` (one line), ``best_val_loss_epoch``, ``train_error``, ``val_error`` and ``gap``.
    """
    rules = rules or Rules()
    columns = ["diagnosis", "reason", "best_val_loss_epoch", "train_error", "val_error", "gap"]
    if curves.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="config"))
    index = pd.Index(sorted(curves["config"].unique()), name="config")
    train_loss = _wide(curves, "train", "loss", index)
    val_loss = _wide(curves, "val", "loss", index)
    epochs = sorted(set(train_loss.columns) | set(val_loss.columns))
    train = train_loss.reindex(columns=epochs).to_numpy(dtype=np.float64)
    val = val_loss.reindex(columns=epochs).to_numpy(dtype=np.float64)
    epoch_numbers = np.asarray(epochs, dtype=np.int64)

    if not epochs:  # no loss curve at all: nothing to judge
        train = val = np.full((len(index), 1), np.nan)
        epoch_numbers = np.zeros(1, dtype=np.int64)
    rows = np.arange(len(index))
    finite = np.isfinite(val)
    has_val = finite.any(axis=1)
    k = np.argmin(np.where(finite, val, np.inf), axis=1)  # the first minimum: earliest on ties
    last = val.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    val_k, val_last = val[rows, k], val[rows, last]
    train_k, train_last = train[rows, k], train[rows, last]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = (val_last - val_k) / np.abs(val_k)
    overfit = has_val & (k < last) & (rise > rules.overfit_tolerance) & (train_last < train_k)

    train_error, measure = _error(curves, "train", index)
    val_error, _ = _error(curves, "val", index)
    groups = (
        cohort.reindex(index).fillna("").to_numpy()
        if cohort is not None
        else np.zeros(len(index), dtype=object)
    )
    best = pd.Series(train_error).groupby(groups).transform("min").to_numpy()
    high_bias = np.isfinite(train_error) & (train_error > best + rules.bias_margin)
    if rules.bias_threshold is not None:
        high_bias |= np.isfinite(train_error) & (train_error > rules.bias_threshold)

    labels, reasons = _verdicts(
        rules,
        has_val=has_val,
        high_bias=high_bias,
        overfit=overfit,
        best_epoch=epoch_numbers[k],
        last_epoch=epoch_numbers[last],
        val_k=val_k,
        rise=rise,
        train_k=train_k,
        train_last=train_last,
        train_error=train_error,
        val_error=val_error,
        measure=measure,
        best=best,
    )
    return pd.DataFrame(
        {
            "diagnosis": labels,
            "reason": reasons,
            "best_val_loss_epoch": np.where(has_val, epoch_numbers[k], -1),
            "train_error": train_error,
            "val_error": val_error,
            "gap": val_error - train_error,
        },
        index=index,
    )


def _verdicts(
    rules: Rules,
    *,
    has_val: np.ndarray,
    high_bias: np.ndarray,
    overfit: np.ndarray,
    best_epoch: np.ndarray,
    last_epoch: np.ndarray,
    val_k: np.ndarray,
    rise: np.ndarray,
    train_k: np.ndarray,
    train_last: np.ndarray,
    train_error: np.ndarray,
    val_error: np.ndarray,
    measure: np.ndarray,
    best: np.ndarray,
) -> tuple[list[str], list[str]]:
    """Each configuration's label and its reason in one line, from the rules' numbers (one
    entry per configuration in each array: see :func:`diagnose`)."""
    labels, reasons = [], []
    for i in range(len(has_val)):
        if not has_val[i]:
            labels.append(NO_CURVES)
            reasons.append("no finite val loss recorded")
            continue
        e_k, e_last = int(best_epoch[i]), int(last_epoch[i])
        parts = []
        if high_bias[i]:
            if rules.bias_threshold is not None and train_error[i] > rules.bias_threshold:
                parts.append(
                    f"train error ({measure[i]}) {train_error[i]:.3f} > threshold "
                    f"{rules.bias_threshold:g}"
                )
            else:
                parts.append(
                    f"train error ({measure[i]}) {train_error[i]:.3f} vs best {best[i]:.3f} "
                    f"in this set (margin {rules.bias_margin:g})"
                )
        if overfit[i]:
            parts.append(
                f"val loss lowest at epoch {e_k} ({val_k[i]:.4g}), {rise[i]:+.0%} by epoch "
                f"{e_last} while train loss fell {train_k[i]:.4g}→{train_last[i]:.4g}"
            )
        if not parts:
            if np.isfinite(train_error[i]):
                parts.append(f"train error ({measure[i]}) {train_error[i]:.3f}")
            if e_k == e_last:
                parts.append(
                    f"val loss still falling at the last epoch ({e_last}): try more epochs"
                )
            else:
                parts.append(
                    f"val loss lowest at epoch {e_k}, within {rules.overfit_tolerance:.0%} of it "
                    f"at epoch {e_last}"
                )
        gap = val_error[i] - train_error[i]
        if np.isfinite(gap):
            parts.append(f"gap {round(gap, 3) + 0.0:+.3f}")  # + 0.0: no "-0.000"
        label = ", ".join(
            name for name, flag in ((HIGH_BIAS, high_bias[i]), (OVERFITTING, overfit[i])) if flag
        )
        labels.append(label or GOOD_FIT)
        reasons.append("; ".join(parts))
    return labels, reasons
