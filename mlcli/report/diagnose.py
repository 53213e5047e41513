"""The course's guide for reading learning curves, made explicit, with the numbers behind each
verdict and the next step the course gives.

Every rule reads the fold-mean curves of one configuration (mean over its runs × folds at each
epoch) and is judged separately for each configuration. ``L`` is the last epoch with a finite
val loss, ``k`` the epoch of the lowest val loss (the earliest on ties).

* **training error** ``E_train``: ``1 − acc`` (classification) or ``1 − R²`` (regression) of the
  train split at the last epoch: scale-free, so it can be compared across configurations and with
  an absolute threshold. ``E_val`` likewise on the val split; the **gap** is ``E_val − E_train``.

The labels, in the order they are tried (the first that holds is the diagnosis):

1. **diverged**: a train or val loss is NaN or infinite at some epoch, or the last train loss is
   more than ``explode_factor`` × the first epoch's. Never ranked above a finite configuration.
2. **unstable**: the val loss rose by more than ``overfit_tolerance`` (relative) past its best
   while the train loss did not fall (``train_loss[L] ≥ train_loss[k]``), or the last train loss
   is more than ``unstable_tolerance`` above the lowest train loss of the run.
3. **overfitting**: the val loss rose by more than ``overfit_tolerance`` past its best while the
   train loss fell (``train_loss[L] < train_loss[k]``): a small training loss, a large val loss.
4. **optimization issue**: a larger model (more parameters) on the same dataset ends with a
   train loss more than ``optimization_margin`` (relative) above a smaller model's: a larger
   model can do at least what a smaller one does, so its training loss is an optimization
   problem, not bias (the course's deep vs shallow network).
5. **not converged**: train and val loss both still fall by more than ``converge_tolerance``
   (relative, per epoch) over the last ``max(2, epochs // 5)`` epochs: train longer.
6. **model bias**: the training error itself is high: ``E_train > best + bias_margin``, where
   ``best`` is the lowest training error among the configurations reported on the same dataset
   (so the set's best configuration is never flagged by this rule), or ``E_train >
   bias_threshold`` when a threshold is given (the rule to use when every configuration may be
   underfitting).
7. **good fit**: none of these.

Losses are used for the curve rules because they are smooth where the accuracy of a small val
split moves in steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DIVERGED = "diverged"
UNSTABLE = "unstable"
OVERFITTING = "overfitting"
OPTIMIZATION = "optimization issue"
NOT_CONVERGED = "not converged"
MODEL_BIAS = "model bias"
GOOD_FIT = "good fit"
NO_CURVES = "no curves"
FAILED_LABELS = frozenset([DIVERGED])
"""Labels whose configurations rank after every finite one."""

NEXT_STEP = {
    DIVERGED: "lower the learning rate, clip gradients (clip_grad_norm=1) or add a warmup",
    UNSTABLE: "lower the learning rate, add a warmup or normalization (model.batch_norm=true)",
    OVERFITTING: "stop early (report --at best), regularize (dropout, weight decay), more data "
    "or augmentation",
    OPTIMIZATION: "an optimization problem, not bias: momentum, an adaptive lr (optim=adam), "
    "batch normalization, or more epochs",
    NOT_CONVERGED: "train longer (more epochs) or a larger learning rate",
    MODEL_BIAS: "a more flexible model (more units, layers or features)",
    GOOD_FIT: "",
}
"""The course's next step for each label."""


@dataclass(frozen=True)
class Rules:
    """The thresholds of the diagnosis (see the module docstring)."""

    bias_margin: float = 0.05
    """Model bias when the training error exceeds the set's best by more than this."""
    bias_threshold: float | None = None
    """Model bias when the training error exceeds this (off when None)."""
    overfit_tolerance: float = 0.05
    """Overfitting (or unstable) needs the val loss to rise by more than this fraction above its
    minimum."""
    explode_factor: float = 10.0
    """Diverged when the last train loss exceeds the first epoch's by this factor."""
    unstable_tolerance: float = 0.25
    """Unstable when the last train loss exceeds the run's lowest by more than this fraction."""
    converge_tolerance: float = 0.01
    """Not converged while train and val loss fall by more than this fraction per epoch."""
    optimization_margin: float = 0.1
    """Optimization issue when a larger model's train loss exceeds a smaller one's by more than
    this fraction."""


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


@dataclass
class _Curve:
    """One configuration's loss curves and the numbers the rules read."""

    epochs: np.ndarray
    train: np.ndarray
    val: np.ndarray
    recorded: tuple[bool, bool] = (True, True)
    """Whether the train and the val loss were recorded at all (rows exist, maybe NaN)."""

    @property
    def has_val(self) -> bool:
        return bool(np.isfinite(self.val).any())

    def numbers(self) -> dict[str, float]:
        """k, L, the losses there, the rise of the val loss, the per-epoch falls at the end."""
        finite = np.isfinite(self.val)
        k = int(np.argmin(np.where(finite, self.val, np.inf)))
        last = len(self.val) - 1 - int(np.argmax(finite[::-1]))
        window = max(2, len(self.epochs) // 5)
        start = max(0, last - window)
        span = max(1, last - start)
        train_finite = self.train[np.isfinite(self.train)]
        with np.errstate(divide="ignore", invalid="ignore"):
            return {
                "k": k,
                "last": last,
                "best_epoch": int(self.epochs[k]),
                "last_epoch": int(self.epochs[last]),
                "val_k": float(self.val[k]),
                "val_last": float(self.val[last]),
                "rise": float((self.val[last] - self.val[k]) / abs(self.val[k])),
                "train_k": float(self.train[k]),
                "train_last": float(self.train[last]),
                "train_first": float(train_finite[0]) if train_finite.size else np.nan,
                "train_min": float(train_finite.min()) if train_finite.size else np.nan,
                "train_fall": float((self.train[start] - self.train[last]) / self.train[start])
                / span,
                "val_fall": float((self.val[start] - self.val[last]) / self.val[start]) / span,
                "window": span,
            }


def _curve_label(c: _Curve, rules: Rules) -> tuple[str, str] | None:
    """Diverged, unstable, overfitting or not converged from one configuration's own curves, with
    the numbers (``None``: none of them)."""
    diverged = _non_finite(c)
    if diverged is not None:
        return DIVERGED, diverged
    if not c.has_val:
        return None
    n = c.numbers()
    if not np.isfinite(n["train_last"]):  # no train curve: only the val rules apply
        rose = n["k"] < n["last"] and n["rise"] > rules.overfit_tolerance
        return (UNSTABLE, f"val loss rose {n['rise']:+.0%} past its best") if rose else None
    if n["train_last"] > rules.explode_factor * max(n["train_first"], 1e-12):
        return DIVERGED, (
            f"train loss {n['train_first']:.4g} (epoch {int(c.epochs[0])}) → "
            f"{n['train_last']:.4g} (epoch {n['last_epoch']}), over {rules.explode_factor:g}×"
        )
    rose = n["k"] < n["last"] and n["rise"] > rules.overfit_tolerance
    val_text = (
        f"val loss lowest at epoch {n['best_epoch']} ({n['val_k']:.4g}), {n['rise']:+.0%} by "
        f"epoch {n['last_epoch']}"
    )
    if rose and not n["train_last"] < n["train_k"]:
        return UNSTABLE, (
            f"{val_text} while train loss rose too {n['train_k']:.4g}→{n['train_last']:.4g}"
        )
    if n["train_last"] > (1 + rules.unstable_tolerance) * n["train_min"]:
        return UNSTABLE, (
            f"train loss {n['train_last']:.4g} at epoch {n['last_epoch']}, "
            f"{n['train_last'] / n['train_min'] - 1:+.0%} above its lowest {n['train_min']:.4g}"
        )
    if rose:
        return OVERFITTING, (
            f"{val_text} while train loss fell {n['train_k']:.4g}→{n['train_last']:.4g}"
        )
    return None


def _non_finite(c: _Curve) -> str | None:
    """Which loss is NaN or infinite, at which epoch (``None``: all finite). A curve that was
    not recorded at all (every value NaN) is not a divergence."""
    for name, values, recorded in zip(("train", "val"), (c.train, c.val), c.recorded, strict=True):
        bad = ~np.isfinite(values)
        if recorded and bad.any():
            first = int(np.argmax(bad))
            seen = values[np.isfinite(values)]
            peak = f" (largest finite {np.abs(seen).max():.3g})" if seen.size else ""
            return f"{name} loss {values[first]} at epoch {int(c.epochs[first])}{peak}"
    return None


def _still_falling(c: _Curve, rules: Rules) -> str | None:
    """Why the losses are still falling at the end (``None`` when they are not)."""
    n = c.numbers()
    tol = rules.converge_tolerance
    if n["train_fall"] > tol and n["val_fall"] > tol:
        return (
            f"train and val loss still falling at epoch {n['last_epoch']} "
            f"({n['train_fall']:.1%} and {n['val_fall']:.1%} per epoch over the last "
            f"{n['window']} epochs, > {tol:.0%})"
        )
    return None


def diagnose(
    curves: pd.DataFrame,
    rules: Rules | None = None,
    cohort: pd.Series | None = None,
    n_params: pd.Series | None = None,
) -> pd.DataFrame:
    """Diagnose each configuration from its fold-mean curves.

    ``curves`` is long form with columns ``config, split, metric, epoch, mean`` (train and val
    splits; metrics ``loss`` and ``acc`` or ``r2``). ``cohort`` maps a configuration to the set
    it is compared with (e.g. its dataset; default: all together); ``n_params`` maps it to its
    model's number of parameters (the optimization-issue rule needs it).

    Returns one row per configuration (index ``config``) with ``diagnosis`` (a label),
    ``reason`` (the numbers, then ``next:`` the course's next step), ``best_val_loss_epoch``,
    ``train_error``, ``val_error`` and ``gap``.
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
    if not epochs:
        train = val = np.full((len(index), 1), np.nan)
    numbers = np.asarray(epochs if epochs else [0], dtype=np.int64)
    losses = curves[curves["metric"] == "loss"]
    recorded = [set(losses.loc[losses["split"] == split, "config"]) for split in ("train", "val")]
    found = [
        _Curve(*_observed(numbers, train[i], val[i]), (name in recorded[0], name in recorded[1]))
        for i, name in enumerate(index)
    ]

    train_error, measure = _error(curves, "train", index)
    val_error, _ = _error(curves, "val", index)
    groups = (
        cohort.reindex(index).fillna("").to_numpy()
        if cohort is not None
        else np.zeros(len(index), dtype=object)
    )
    sizes = (
        n_params.reindex(index).to_numpy(dtype=np.float64)
        if n_params is not None
        else np.full(len(index), np.nan)
    )
    labels, reasons, best_epochs = _labels(
        found, rules, groups, sizes, train_error, val_error, measure
    )
    return pd.DataFrame(
        {
            "diagnosis": labels,
            "reason": reasons,
            "best_val_loss_epoch": best_epochs,
            "train_error": train_error,
            "val_error": val_error,
            "gap": val_error - train_error,
        },
        index=index,
    )


def _labels(
    found: list[_Curve],
    rules: Rules,
    groups: np.ndarray,
    sizes: np.ndarray,
    train_error: np.ndarray,
    val_error: np.ndarray,
    measure: np.ndarray,
) -> tuple[list[str], list[str], list[int]]:
    """Each configuration's label, reason (numbers, gap, next step) and best val-loss epoch."""
    labels: list[str] = []
    reasons: list[str] = []
    best_epochs: list[int] = []
    judged = [_curve_label(c, rules) for c in found]
    finite_loss = np.array(
        [
            c.numbers()["train_last"] if c.has_val and (j is None or j[0] != DIVERGED) else np.nan
            for c, j in zip(found, judged, strict=True)
        ]
    )
    best = pd.Series(train_error).groupby(groups).transform("min").to_numpy()
    for i, c in enumerate(found):
        if not c.has_val and judged[i] is None:
            labels.append(NO_CURVES)
            reasons.append("no finite val loss recorded")
            best_epochs.append(-1)
            continue
        label, reason = judged[i] or _set_label(
            i, c, rules, groups, sizes, finite_loss, train_error, measure, best
        )
        gap = val_error[i] - train_error[i]
        parts = [reason]
        if np.isfinite(gap):
            parts.append(f"gap {round(gap, 3) + 0.0:+.3f}")  # + 0.0: no "-0.000"
        if NEXT_STEP.get(label):
            parts.append(f"next: {NEXT_STEP[label]}")
        labels.append(label)
        reasons.append("; ".join(parts))
        best_epochs.append(int(c.numbers()["best_epoch"]) if c.has_val else -1)
    return labels, reasons, best_epochs


def _observed(
    epochs: np.ndarray, train: np.ndarray, val: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epochs up to the last one where either curve has a value (the trailing epochs of
    configurations that ran fewer epochs than others are dropped)."""
    seen = ~(np.isnan(train) & np.isnan(val))
    if not seen.any():
        return epochs[:1], train[:1], val[:1]
    end = len(seen) - int(np.argmax(seen[::-1]))
    return epochs[:end], train[:end], val[:end]


def _set_label(
    i: int,
    c: _Curve,
    rules: Rules,
    groups: np.ndarray,
    sizes: np.ndarray,
    train_loss: np.ndarray,
    train_error: np.ndarray,
    measure: np.ndarray,
    best: np.ndarray,
) -> tuple[str, str]:
    """Optimization issue, not converged, model bias or good fit: the rules that compare a
    configuration with the others of its set (or read how its curves end)."""
    same = (groups == groups[i]) & np.isfinite(train_loss) & np.isfinite(sizes)
    smaller = same & (sizes < sizes[i])
    if np.isfinite(sizes[i]) and np.isfinite(train_loss[i]) and smaller.any():
        j = int(np.flatnonzero(smaller)[np.argmin(train_loss[smaller])])
        if train_loss[i] > (1 + rules.optimization_margin) * train_loss[j]:
            return OPTIMIZATION, (
                f"train loss {train_loss[i]:.4g} with {int(sizes[i]):,} parameters vs "
                f"{train_loss[j]:.4g} with {int(sizes[j]):,} in this set (margin "
                f"{rules.optimization_margin:.0%})"
            )
    falling = _still_falling(c, rules)
    if falling is not None:
        return NOT_CONVERGED, falling
    error = train_error[i]
    if np.isfinite(error):
        if rules.bias_threshold is not None and error > rules.bias_threshold:
            return MODEL_BIAS, (
                f"train error ({measure[i]}) {error:.3f} > threshold {rules.bias_threshold:g}"
            )
        if error > best[i] + rules.bias_margin:
            return MODEL_BIAS, (
                f"train error ({measure[i]}) {error:.3f} vs best {best[i]:.3f} in this set "
                f"(margin {rules.bias_margin:g})"
            )
    n = c.numbers()
    parts = [f"train error ({measure[i]}) {error:.3f}"] if np.isfinite(error) else []
    if n["k"] == n["last"]:
        parts.append(f"val loss lowest at the last epoch ({n['last_epoch']})")
    else:
        parts.append(
            f"val loss lowest at epoch {n['best_epoch']}, within {rules.overfit_tolerance:.0%} "
            f"of it at epoch {n['last_epoch']}"
        )
    return GOOD_FIT, "; ".join(parts)
