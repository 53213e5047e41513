"""The diagnosis rules on constructed curves: high bias, overfitting, good fit, and their edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcli.report.diagnose import GOOD_FIT, HIGH_BIAS, NO_CURVES, OVERFITTING, Rules, diagnose

EPOCHS = np.arange(1, 11)


def curves(config: str, **series: np.ndarray) -> pd.DataFrame:
    """Long-form fold-mean curves from split_metric=values keyword arguments."""
    frames = []
    for name, values in series.items():
        split, metric = name.split("_", 1)
        frames.append(
            pd.DataFrame(
                {
                    "config": config,
                    "split": split,
                    "metric": metric,
                    "epoch": np.arange(1, len(values) + 1),
                    "mean": np.asarray(values, dtype=float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def falling(start: float, end: float) -> np.ndarray:
    return np.geomspace(start, end, len(EPOCHS))


# A model that fits: train and val loss fall together; train accuracy reaches 0.99.
GOOD = dict(
    train_loss=falling(1.0, 0.05),
    val_loss=falling(1.1, 0.08),
    train_acc=np.linspace(0.6, 0.99, 10),
    val_acc=np.linspace(0.55, 0.97, 10),
)
# Underfits: the training error itself stays high (train accuracy 0.70).
BIAS = dict(
    train_loss=falling(1.2, 0.8),
    val_loss=falling(1.25, 0.85),
    train_acc=np.linspace(0.4, 0.70, 10),
    val_acc=np.linspace(0.4, 0.69, 10),
)
# Overfits: val loss is lowest at epoch 4 and climbs while train loss keeps falling.
OVERFIT = dict(
    train_loss=falling(1.0, 0.01),
    val_loss=np.array([1.0, 0.6, 0.4, 0.30, 0.33, 0.37, 0.42, 0.48, 0.55, 0.62]),
    train_acc=np.linspace(0.6, 1.0, 10),
    val_acc=np.array([0.6, 0.75, 0.85, 0.90, 0.90, 0.89, 0.88, 0.88, 0.87, 0.86]),
)


def test_each_case_gets_its_label_and_reason():
    frame = pd.concat(
        [curves("good", **GOOD), curves("bias", **BIAS), curves("overfit", **OVERFIT)]
    )
    result = diagnose(frame)
    assert result.loc["good", "diagnosis"] == GOOD_FIT
    assert result.loc["bias", "diagnosis"] == HIGH_BIAS
    assert result.loc["overfit", "diagnosis"] == OVERFITTING

    # The reasons name the numbers the rule used.
    assert "train error (1−acc) 0.300 vs best 0.000" in result.loc["bias", "reason"]
    assert "val loss lowest at epoch 4 (0.3), +107% by epoch 10" in result.loc["overfit", "reason"]
    assert "still falling at the last epoch (10)" in result.loc["good", "reason"]
    assert result.loc["overfit", "best_val_loss_epoch"] == 4
    assert result.loc["good", "best_val_loss_epoch"] == 10
    # gap = val error − train error at the last epoch
    assert result.loc["overfit", "gap"] == pytest.approx((1 - 0.86) - (1 - 1.0))
    assert result.loc["bias", "train_error"] == pytest.approx(0.30)


def test_high_bias_is_relative_to_the_best_in_the_set_unless_a_threshold_is_given():
    alone = diagnose(curves("bias", **BIAS))
    assert alone.loc["bias", "diagnosis"] == GOOD_FIT  # it is the best of a set of one
    absolute = diagnose(curves("bias", **BIAS), Rules(bias_threshold=0.1))
    assert absolute.loc["bias", "diagnosis"] == HIGH_BIAS
    assert "train error (1−acc) 0.300 > threshold 0.1" in absolute.loc["bias", "reason"]
    # A wide margin forgives it.
    both = pd.concat([curves("good", **GOOD), curves("bias", **BIAS)])
    assert diagnose(both, Rules(bias_margin=0.5)).loc["bias", "diagnosis"] == GOOD_FIT


def test_the_best_training_error_is_taken_per_dataset():
    frame = pd.concat([curves("good", **GOOD), curves("bias", **BIAS)])
    cohort = pd.Series({"good": "digits", "bias": "wine"})
    result = diagnose(frame, cohort=cohort)
    assert (result["diagnosis"] == GOOD_FIT).all()


def test_a_val_rise_within_the_tolerance_or_with_train_stalling_is_not_overfitting():
    small_rise = dict(OVERFIT, val_loss=np.r_[OVERFIT["val_loss"][:4], np.full(6, 0.31)])
    assert diagnose(curves("c", **small_rise)).loc["c", "diagnosis"] == GOOD_FIT
    assert "within 5% of it at epoch 10" in diagnose(curves("c", **small_rise)).loc["c", "reason"]
    # Train loss no lower at the end than at the val minimum: unstable, not overfitting.
    stalled = dict(OVERFIT, train_loss=np.r_[falling(1.0, 0.2)[:4], np.full(6, 0.6)])
    assert diagnose(curves("c", **stalled)).loc["c", "diagnosis"] == GOOD_FIT
    strict = diagnose(curves("c", **small_rise), Rules(overfit_tolerance=0.01))
    assert strict.loc["c", "diagnosis"] == OVERFITTING


def test_both_labels_at_once_and_ties_pick_the_earliest_epoch():
    underfit_and_overfit = dict(
        OVERFIT, train_acc=np.linspace(0.4, 0.6, 10), val_acc=np.linspace(0.4, 0.5, 10)
    )
    frame = pd.concat([curves("good", **GOOD), curves("both", **underfit_and_overfit)])
    assert diagnose(frame).loc["both", "diagnosis"] == f"{HIGH_BIAS}, {OVERFITTING}"

    tie = dict(GOOD, val_loss=np.array([1.0, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]))
    assert diagnose(curves("t", **tie)).loc["t", "best_val_loss_epoch"] == 3


def test_regression_uses_one_minus_r2_and_missing_curves_are_said():
    regression = dict(
        train_loss=falling(1.0, 0.3),
        val_loss=falling(1.0, 0.35),
        train_r2=np.linspace(0.0, 0.7, 10),
        val_r2=np.linspace(0.0, 0.65, 10),
    )
    result = diagnose(curves("reg", **regression), Rules(bias_threshold=0.2))
    assert result.loc["reg", "diagnosis"] == HIGH_BIAS
    assert "train error (1−R²) 0.300" in result.loc["reg", "reason"]

    no_val = diagnose(curves("x", train_loss=falling(1.0, 0.1)))
    assert no_val.loc["x", "diagnosis"] == NO_CURVES
    assert diagnose(curves("x", train_loss=[])).empty
