"""Schemas of the ``cv`` group."""

from __future__ import annotations

from dataclasses import dataclass

from mlcli.schemas.base import bound


@dataclass
class KFoldSchema:
    """K-fold cross-validation (scikit-learn's ``KFold``)."""

    _target_: str = "mlcli.cv.kfold"
    n_splits: int = bound(5, ge=2)
    shuffle: bool = True
    seed: int = 0


@dataclass
class HoldoutSchema:
    """One train/validation split."""

    _target_: str = "mlcli.cv.holdout"
    val_fraction: float = bound(0.2, gt=0.0, lt=1.0)
    shuffle: bool = True
    seed: int = 0


SCHEMAS: dict[str, type] = {"kfold": KFoldSchema, "holdout": HoldoutSchema}
