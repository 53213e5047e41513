"""The diagnosis rules on constructed curves: the course's guide (diverged, unstable,
overfitting, optimization issue, not converged, model bias, good fit), and their edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcli.report.diagnose import (
    DIVERGED,
    GOOD_FIT,
    MODEL_BIAS,
    NO_CURVES,
    NOT_CONVERGED,
    OPTIMIZATION,
    OVERFITTING,
    UNSTABLE,
    Rules,
    diagnose,
)

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


def settling(start: float, end: float, n: int = len(EPOCHS)) -> np.ndarray:
    """Falls from ``start`` and levels off at ``end`` (converged by the last epochs)."""
    return end + (start - end) * 0.3 ** np.arange(n)


# A model that fits: train and val loss fall together and level off; train accuracy 0.99.
GOOD = dict(
    train_loss=settling(1.0, 0.05),
    val_loss=settling(1.1, 0.08),
    train_acc=np.linspace(0.6, 0.99, 10),
    val_acc=np.linspace(0.55, 0.97, 10),
)
# Underfits: the training error itself stays high (train accuracy 0.70), losses level off.
BIAS = dict(
    train_loss=settling(1.2, 0.8),
    val_loss=settling(1.25, 0.85),
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
    assert result.loc["bias", "diagnosis"] == MODEL_BIAS
    assert result.loc["overfit", "diagnosis"] == OVERFITTING

    # The reasons name the numbers the rule used.
    assert "train error (1−acc) 0.300 vs best 0.000" in result.loc["bias", "reason"]
    assert "val loss lowest at epoch 4 (0.3), +107% by epoch 10" in result.loc["overfit", "reason"]
    assert "val loss lowest at the last epoch (10)" in result.loc["good", "reason"]
    # Each label but good fit ends with the course's next step.
    assert "next: a more flexible model" in result.loc["bias", "reason"]
    assert "next: stop early" in result.loc["overfit", "reason"]
    assert result.loc["overfit", "best_val_loss_epoch"] == 4
    assert result.loc["good", "best_val_loss_epoch"] == 10
    # gap = val error − train error at the last epoch
    assert result.loc["overfit", "gap"] == pytest.approx((1 - 0.86) - (1 - 1.0))
    assert result.loc["bias", "train_error"] == pytest.approx(0.30)


def test_model_bias_is_relative_to_the_best_in_the_set_unless_a_threshold_is_given():
    alone = diagnose(curves("bias", **BIAS))
    assert alone.loc["bias", "diagnosis"] == GOOD_FIT  # it is the best of a set of one
    absolute = diagnose(curves("bias", **BIAS), Rules(bias_threshold=0.1))
    assert absolute.loc["bias", "diagnosis"] == MODEL_BIAS
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
    assert diagnose(curves("c", **stalled)).loc["c", "diagnosis"] == UNSTABLE
    strict = diagnose(curves("c", **small_rise), Rules(overfit_tolerance=0.01))
    assert strict.loc["c", "diagnosis"] == OVERFITTING


def test_overfitting_comes_before_bias_and_ties_pick_the_earliest_epoch():
    underfit_and_overfit = dict(
        OVERFIT, train_acc=np.linspace(0.4, 0.6, 10), val_acc=np.linspace(0.4, 0.5, 10)
    )
    frame = pd.concat([curves("good", **GOOD), curves("both", **underfit_and_overfit)])
    assert diagnose(frame).loc["both", "diagnosis"] == OVERFITTING

    tie = dict(GOOD, val_loss=np.r_[1.0, 0.5, np.full(8, 0.3)])
    assert diagnose(curves("t", **tie)).loc["t", "best_val_loss_epoch"] == 3


def test_regression_uses_one_minus_r2_and_missing_curves_are_said():
    regression = dict(
        train_loss=settling(1.0, 0.3),
        val_loss=settling(1.0, 0.35),
        train_r2=np.linspace(0.0, 0.7, 10),
        val_r2=np.linspace(0.0, 0.65, 10),
    )
    result = diagnose(curves("reg", **regression), Rules(bias_threshold=0.2))
    assert result.loc["reg", "diagnosis"] == MODEL_BIAS
    assert "train error (1−R²) 0.300" in result.loc["reg", "reason"]

    no_val = diagnose(curves("x", train_loss=falling(1.0, 0.1)))
    assert no_val.loc["x", "diagnosis"] == NO_CURVES
    assert diagnose(curves("x", train_loss=[])).empty


# The four cases of the course's guide that the old rules got wrong.


def test_an_exploding_or_nan_run_is_diverged_never_bias():
    exploded = dict(
        train_loss=np.r_[2.3, 2.0, 5.0, 1e6, 1e34, np.full(5, 1e34)],
        val_loss=np.r_[2.2, 2.1, np.full(8, np.nan)],
        train_acc=np.full(10, 0.1),
        val_acc=np.full(10, 0.1),
    )
    frame = pd.concat([curves("good", **GOOD), curves("boom", **exploded)])
    result = diagnose(frame)
    assert result.loc["boom", "diagnosis"] == DIVERGED
    assert "val loss nan at epoch 3" in result.loc["boom", "reason"]
    assert "lower the learning rate" in result.loc["boom", "reason"]
    # Finite but exploding: more than explode_factor × the first epoch's train loss.
    finite = dict(exploded, val_loss=np.r_[2.2, 2.1, np.geomspace(10, 1e9, 8)])
    assert diagnose(curves("boom", **finite)).loc["boom", "diagnosis"] == DIVERGED
    # Only the val loss is NaN (the train loss stayed finite): diverged too, not "no curves".
    nan_val = dict(GOOD, val_loss=np.full(10, np.nan))
    assert diagnose(curves("v", **nan_val)).loc["v", "diagnosis"] == DIVERGED


def test_a_val_loss_rising_past_its_best_is_never_good_fit():
    # The issue's run: val loss 0.21 at epoch 2, 2.30 at epoch 15, the train loss rising too.
    val = np.r_[0.5, 0.21, np.linspace(0.3, 2.30, 13)]
    rising_train = dict(train_loss=np.r_[0.6, 0.2, np.linspace(0.25, 1.9, 13)], val_loss=val)
    result = diagnose(curves("r", **rising_train))
    assert result.loc["r", "diagnosis"] == UNSTABLE
    assert "val loss lowest at epoch 2 (0.21), +995% by epoch 15" in result.loc["r", "reason"]
    # The same val curve with the train loss falling: overfitting.
    falling_train = dict(train_loss=np.geomspace(0.6, 0.01, 15), val_loss=val)
    assert diagnose(curves("f", **falling_train)).loc["f", "diagnosis"] == OVERFITTING
    # A train loss that climbs well above its lowest (val flat): unstable.
    climbing = dict(train_loss=np.r_[settling(1.0, 0.1, 7), 0.2, 0.3, 0.4], val_loss=np.full(10, 1))
    assert diagnose(curves("c", **climbing)).loc["c", "diagnosis"] == UNSTABLE


def test_losses_still_falling_at_the_last_epoch_are_not_converged():
    # A linear model stopped at 20 epochs: both losses falling ~4% an epoch, R² 0.68.
    epochs = 20
    still = dict(
        train_loss=np.geomspace(1.0, 0.32, epochs),
        val_loss=np.geomspace(1.05, 0.34, epochs),
        train_r2=np.linspace(0.0, 0.68, epochs),
        val_r2=np.linspace(0.0, 0.66, epochs),
    )
    converged = dict(
        train_loss=settling(1.0, 0.02, epochs),
        val_loss=settling(1.0, 0.03, epochs),
        train_r2=np.full(epochs, 0.98),
        val_r2=np.full(epochs, 0.97),
    )
    result = diagnose(pd.concat([curves("short", **still), curves("long", **converged)]))
    assert result.loc["short", "diagnosis"] == NOT_CONVERGED  # not model bias: train longer
    assert "still falling at epoch 20" in result.loc["short", "reason"]
    assert "next: train longer" in result.loc["short", "reason"]
    assert result.loc["long", "diagnosis"] == GOOD_FIT
    # A looser tolerance calls the same run converged, and then it is model bias.
    loose = diagnose(
        pd.concat([curves("short", **still), curves("long", **converged)]),
        Rules(converge_tolerance=0.1),
    )
    assert loose.loc["short", "diagnosis"] == MODEL_BIAS


def test_a_larger_model_with_a_higher_training_loss_is_an_optimization_issue():
    shallow = dict(GOOD)
    deep = dict(BIAS)  # stuck: higher train loss, higher train error
    frame = pd.concat([curves("shallow", **shallow), curves("deep", **deep)])
    sizes = pd.Series({"shallow": 1_000, "deep": 5_000})
    result = diagnose(frame, n_params=sizes)
    assert result.loc["deep", "diagnosis"] == OPTIMIZATION
    assert (
        "train loss 0.8 with 5,000 parameters vs 0.05002 with 1,000" in result.loc["deep", "reason"]
    )
    assert result.loc["shallow", "diagnosis"] == GOOD_FIT
    # The smaller model stuck instead: that is model bias, not an optimization issue.
    swapped = diagnose(frame, n_params=pd.Series({"shallow": 5_000, "deep": 1_000}))
    assert swapped.loc["deep", "diagnosis"] == MODEL_BIAS
    # Without parameter counts, or on another dataset, there is nothing to compare with.
    assert diagnose(frame).loc["deep", "diagnosis"] == MODEL_BIAS
    apart = diagnose(frame, cohort=pd.Series({"shallow": "a", "deep": "b"}), n_params=sizes)
    assert apart.loc["deep", "diagnosis"] == GOOD_FIT
