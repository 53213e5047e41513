"""Cross-validation: split strategies (scikit-learn's splitters) and the held-out test split."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlcli.data.base import Dataset

Fold = tuple[np.ndarray, np.ndarray]


def kfold(n_splits: int = 5, shuffle: bool = True, seed: int = 0) -> Any:
    """K-fold: scikit-learn's ``KFold`` (``seed`` only matters when ``shuffle``)."""
    from sklearn.model_selection import KFold

    return KFold(n_splits=n_splits, shuffle=shuffle, random_state=seed if shuffle else None)


def holdout(val_fraction: float = 0.2, shuffle: bool = True, seed: int = 0) -> Any:
    """One train/validation split; without ``shuffle`` the last ``val_fraction`` rows validate."""
    from sklearn.model_selection import ShuffleSplit

    if shuffle:
        return ShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    return _TailSplit(val_fraction)


class _TailSplit:
    """Validate on the last rows, in order (a splitter with scikit-learn's interface)."""

    def __init__(self, val_fraction: float) -> None:
        self.val_fraction = val_fraction

    def get_n_splits(self, *args: Any, **kwargs: Any) -> int:
        return 1

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        n = len(X)
        n_val = max(1, round(n * self.val_fraction))
        index = np.arange(n)
        yield index[: n - n_val], index[n - n_val :]


def make_folds(splitter: Any, dataset: Dataset, dev_index: np.ndarray) -> list[Fold]:
    """Split the development rows (everything but the test split) into (train, val) folds.

    Indices are returned as positions in the full dataset.
    """
    y = dataset.y[dev_index]
    groups = dataset.groups[dev_index] if dataset.groups is not None else None
    folds = []
    for train_pos, val_pos in splitter.split(np.zeros((len(dev_index), 1)), y, groups):
        folds.append((dev_index[train_pos], dev_index[val_pos]))
    return folds


def hold_out_test(
    dataset: Dataset, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (dev_index, test_index): the test rows are set aside before any fold is made.

    A dataset's own test split wins; otherwise ``test_fraction`` of the rows are drawn (stratified
    by class for classification), or, for a time-ordered dataset (``meta["time_ordered"]``), the
    last ``test_fraction`` of the rows. ``test_fraction=0`` means no test split.
    """
    n = len(dataset.y)
    everything = np.arange(n)
    if dataset.test_index is not None:
        test = np.sort(dataset.test_index)
        return np.setdiff1d(everything, test), test
    if test_fraction <= 0:
        return everything, np.array([], dtype=np.int64)
    if dataset.meta.get("time_ordered"):
        # A time series is tested on its future: the last rows, never a random draw.
        n_test = max(1, round(n * test_fraction))
        return everything[: n - n_test], everything[n - n_test :]
    from sklearn.model_selection import train_test_split

    stratify = dataset.y if dataset.task == "classification" else None
    dev, test = train_test_split(
        everything, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return np.sort(dev), np.sort(test)
