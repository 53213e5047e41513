"""Schemas of the ``cv`` group.

``stratify: null`` resolves by task: stratified by class for classification, plain for
regression (as scikit-learn's ``cross_val_score(cv=5)`` does); ``true``/``false`` force it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcli.config.schemas.base import bound


@dataclass
class KFoldSchema:
    """K-fold cross-validation (scikit-learn's ``KFold``/``StratifiedKFold``)."""

    _target_: str = "mlcli.cv.kfold"
    n_splits: int = bound(5, ge=2)
    shuffle: bool = True
    seed: int = 0
    stratify: bool | None = None


@dataclass
class StratifiedSchema:
    """Stratified k-fold (scikit-learn's ``StratifiedKFold``), classification only."""

    _target_: str = "mlcli.cv.stratified"
    n_splits: int = bound(5, ge=2)
    shuffle: bool = True
    seed: int = 0


@dataclass
class GroupSchema:
    """Group k-fold (scikit-learn's ``GroupKFold``) over the dataset's group column."""

    _target_: str = "mlcli.cv.group"
    n_splits: int = bound(5, ge=2)
    shuffle: bool = False
    seed: int = 0


@dataclass
class TimeSeriesSchema:
    """Expanding-window splits (scikit-learn's ``TimeSeriesSplit``), never shuffled."""

    _target_: str = "mlcli.cv.timeseries"
    n_splits: int = bound(5, ge=2)
    gap: int = bound(0, ge=0)
    max_train_size: int | None = bound(None, ge=1)
    test_size: int | None = bound(None, ge=1)


@dataclass
class RepeatedSchema:
    """``n_repeats`` × k-fold (scikit-learn's ``RepeatedKFold``/``RepeatedStratifiedKFold``)."""

    _target_: str = "mlcli.cv.repeated"
    n_splits: int = bound(5, ge=2)
    n_repeats: int = bound(2, ge=1)
    seed: int = 0
    stratify: bool | None = None


@dataclass
class HoldoutSchema:
    """One train/validation split."""

    _target_: str = "mlcli.cv.holdout"
    val_fraction: float = bound(0.2, gt=0.0, lt=1.0)
    shuffle: bool = True
    seed: int = 0
    stratify: bool | None = None


SCHEMAS: dict[str, type] = {
    "kfold": KFoldSchema,
    "stratified": StratifiedSchema,
    "group": GroupSchema,
    "timeseries": TimeSeriesSchema,
    "repeated": RepeatedSchema,
    "holdout": HoldoutSchema,
}
