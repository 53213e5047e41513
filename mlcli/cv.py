"""Cross-validation: split strategies (scikit-learn's splitters) and the held-out test split.

Every ``conf/cv`` option builds a scikit-learn splitter, so for the same ``cv.seed`` mlcli's folds
are exactly scikit-learn's. :func:`plan` is the one place a run's rows are divided: it sets the
test split aside first (:func:`hold_out_test`), then splits the remaining development rows into
(train, val) folds. The runner and the preflight both call it, so a split that cannot be made
(fewer rows than folds, a single group...) is reported before any training.

``stratify: null`` (the default of ``kfold``, ``repeated`` and ``holdout``) resolves by task, as
scikit-learn's ``cross_val_score(cv=5)`` does: stratified by class for classification, plain for
regression. ``true``/``false`` force it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcli.data.base import Dataset
from mlcli.data.errors import DataError

Fold = tuple[np.ndarray, np.ndarray]


@dataclass
class ByTask:
    """A splitter chosen when the task is known (``stratify: null``)."""

    classification: Any
    regression: Any

    def resolve(self, task: str) -> Any:
        """The splitter for ``task``."""
        return self.classification if task == "classification" else self.regression

    def get_n_splits(self, *args: Any, **kwargs: Any) -> int:
        """Number of folds (the same for both choices)."""
        return int(self.regression.get_n_splits())

    def split(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: which splitter applies depends on the task (use :func:`resolve` first)."""
        raise TypeError(
            "this splitter depends on the task (cv.stratify=null): call "
            "mlcli.cv.resolve(splitter, dataset) or mlcli.cv.make_folds(...) instead"
        )


@dataclass
class NeedsClasses:
    """A stratified splitter, which only a classification target can use."""

    splitter: Any
    option: str

    def get_n_splits(self, *args: Any, **kwargs: Any) -> int:
        """Number of folds."""
        return int(self.splitter.get_n_splits())

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        """The stratified splitter's folds (``y`` holds class labels)."""
        return self.splitter.split(X, y, groups)


def _by_task(stratify: bool | None, stratified: Any, plain: Any, option: str) -> Any:
    if stratify is None:
        return ByTask(stratified, plain)
    return NeedsClasses(stratified, option) if stratify else plain


def kfold(
    n_splits: int = 5, shuffle: bool = True, seed: int = 0, stratify: bool | None = None
) -> Any:
    """K-fold: scikit-learn's ``KFold``, or ``StratifiedKFold`` (classification, by default).

    ``seed`` only matters when ``shuffle``.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    state = seed if shuffle else None
    return _by_task(
        stratify,
        StratifiedKFold(n_splits=n_splits, shuffle=shuffle, random_state=state),
        KFold(n_splits=n_splits, shuffle=shuffle, random_state=state),
        "cv.stratify=true",
    )


def stratified(n_splits: int = 5, shuffle: bool = True, seed: int = 0) -> Any:
    """Stratified k-fold (scikit-learn's ``StratifiedKFold``): each fold keeps the class shares."""
    from sklearn.model_selection import StratifiedKFold

    state = seed if shuffle else None
    return NeedsClasses(
        StratifiedKFold(n_splits=n_splits, shuffle=shuffle, random_state=state), "cv=stratified"
    )


def group(n_splits: int = 5, shuffle: bool = False, seed: int = 0) -> Any:
    """Group k-fold (scikit-learn's ``GroupKFold``): a group's rows are never split across folds.

    The groups are the dataset's group column (``dataset.group``).
    """
    from sklearn.model_selection import GroupKFold

    return GroupKFold(n_splits=n_splits, shuffle=shuffle, random_state=seed if shuffle else None)


def timeseries(
    n_splits: int = 5, gap: int = 0, max_train_size: int | None = None, test_size: int | None = None
) -> Any:
    """Expanding-window splits (scikit-learn's ``TimeSeriesSplit``): validation always follows
    training, rows are never shuffled, and the test split is the last rows."""
    from sklearn.model_selection import TimeSeriesSplit

    return TimeSeriesSplit(
        n_splits=n_splits, gap=gap, max_train_size=max_train_size, test_size=test_size
    )


def repeated(
    n_splits: int = 5, n_repeats: int = 2, seed: int = 0, stratify: bool | None = None
) -> Any:
    """``n_repeats`` × k-fold with a different shuffle each time (``RepeatedKFold``, or
    ``RepeatedStratifiedKFold`` for classification by default): ``n_splits × n_repeats`` folds."""
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    return _by_task(
        stratify,
        RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed),
        RepeatedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed),
        "cv.stratify=true",
    )


def holdout(
    val_fraction: float = 0.2, shuffle: bool = True, seed: int = 0, stratify: bool | None = None
) -> Any:
    """One train/validation split (``ShuffleSplit``, or ``StratifiedShuffleSplit`` for
    classification by default); without ``shuffle`` the last ``val_fraction`` rows validate."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    if not shuffle:
        return _TailSplit(val_fraction)
    return _by_task(
        stratify,
        StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed),
        ShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed),
        "cv.stratify=true",
    )


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

    def __repr__(self) -> str:
        return f"TailSplit(val_fraction={self.val_fraction})"


def _where(dataset: Dataset) -> str:
    """The file a dataset came from (for messages), else its name."""
    return dataset.source if dataset.source and Path(dataset.source).is_file() else dataset.name


def resolve(splitter: Any, dataset: Dataset) -> Any:
    """The concrete scikit-learn splitter for ``dataset`` (``stratify: null`` picks by task)."""
    if isinstance(splitter, ByTask):
        return splitter.resolve(dataset.task)
    if isinstance(splitter, NeedsClasses):
        if dataset.task != "classification":
            raise DataError(
                _where(dataset),
                f"{splitter.option} stratifies by class, but the task is {dataset.task}",
                fix="Use cv=kfold (or cv.stratify=false), or set dataset.task=classification",
                key="cv",
            )
        return splitter.splitter
    return splitter


def is_ordered(splitter: Any, dataset: Dataset) -> bool:
    """Rows in time order: the test split is then the last rows, never a random draw."""
    from sklearn.model_selection import TimeSeriesSplit

    return dataset.ordered or isinstance(splitter, TimeSeriesSplit)


def make_folds(splitter: Any, dataset: Dataset, dev_index: np.ndarray) -> list[Fold]:
    """Split the development rows (everything but the test split) into (train, val) folds.

    Indices are returned as positions in the full dataset.
    """
    splitter = resolve(splitter, dataset)
    y = dataset.y[dev_index]
    groups = dataset.groups[dev_index] if dataset.groups is not None else None
    folds = []
    for train_pos, val_pos in splitter.split(np.zeros((len(dev_index), 1)), y, groups):
        folds.append((dev_index[train_pos], dev_index[val_pos]))
    return folds


def hold_out_test(
    dataset: Dataset, test_fraction: float, seed: int, ordered: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return (dev_index, test_index): the test rows are set aside before any fold is made.

    A dataset's own test split wins. Otherwise ``test_fraction`` of the rows are held out: the
    last rows when the rows are in time order (``ordered``, ``dataset.ordered`` or
    ``meta["time_ordered"]``); whole groups
    when the dataset has a group column (``GroupShuffleSplit``, so no group is on both sides);
    else a random draw, stratified by class for classification. ``test_fraction=0``: no test split.
    """
    n = len(dataset.y)
    everything = np.arange(n)
    if dataset.test_index is not None:
        test = np.sort(dataset.test_index)
        return np.setdiff1d(everything, test), test
    if test_fraction <= 0:
        return everything, np.array([], dtype=np.int64)
    if ordered or dataset.ordered or dataset.meta.get("time_ordered"):
        n_test = math.ceil(n * test_fraction)  # as train_test_split rounds
        return everything[: n - n_test], everything[n - n_test :]
    if dataset.groups is not None:
        from sklearn.model_selection import GroupShuffleSplit

        split = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        dev, test = next(split.split(everything, groups=dataset.groups))
        return np.sort(dev), np.sort(test)
    from sklearn.model_selection import train_test_split

    stratify = dataset.y if dataset.task == "classification" else None
    dev, test = train_test_split(
        everything, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return np.sort(dev), np.sort(test)


@dataclass
class Plan:
    """How a run's rows are divided: development rows, test rows, folds, and the splitter used."""

    dev: np.ndarray
    test: np.ndarray
    folds: list[Fold]
    splitter: Any


def plan(dataset: Dataset, splitter: Any, test_fraction: float, seed: int) -> Plan:
    """Set the test split aside, then make the folds; a split that cannot be made is a DataError.

    ``seed`` draws the test split (``dataset.seed``); the folds use the splitter's own seed.
    """
    where = _where(dataset)
    concrete = resolve(splitter, dataset)
    ordered = is_ordered(concrete, dataset)
    stratified_test = dataset.test_index is None and test_fraction > 0 and not ordered
    if stratified_test and dataset.groups is None and dataset.task == "classification":
        counts = np.bincount(dataset.y, minlength=dataset.n_classes)
        single = [i for i, c in enumerate(counts) if c == 1]
        if single:
            labels = ", ".join(repr(dataset.class_names[i]) if dataset.class_names else str(i)
                               for i in single)  # fmt: skip
            raise DataError(
                where,
                f"{len(single)} class(es) have a single row ({labels}); a test split stratified "
                "by class needs at least 2 rows of each",
                n_bad=len(single),
                key="dataset.test_fraction",
                fix="Add rows of those classes, leave them out, or set dataset.test_fraction=0",
            )
    try:
        dev, test = hold_out_test(dataset, test_fraction, seed, ordered)
    except ValueError as error:  # e.g. a class with one row cannot be stratified
        raise DataError(
            where,
            f"cannot hold out dataset.test_fraction={test_fraction:g} of {len(dataset.y)} rows "
            f"({error})",
            key="dataset.test_fraction",
            fix="Use another test_fraction (0 = no test split), or more data",
        ) from None
    n_splits = int(concrete.get_n_splits())
    from sklearn.model_selection import (
        GroupKFold,
        RepeatedKFold,
        RepeatedStratifiedKFold,
        TimeSeriesSplit,
    )

    if isinstance(concrete, GroupKFold):
        if dataset.groups is None:
            raise DataError(
                where,
                "cv=group splits by groups, but the dataset has no group column",
                key="dataset.group",
                fix="Name the column: dataset.group=COLUMN (csv), or save a groups array (npz)",
            )
        n_groups = len(np.unique(dataset.groups[dev]))
        if n_groups < n_splits:
            raise DataError(
                where,
                f"{n_groups} groups left for cross-validation, fewer than cv.n_splits={n_splits}",
                key="cv.n_splits",
                fix=f"Use at most cv.n_splits={max(2, n_groups)} folds",
            )
    if isinstance(concrete, RepeatedKFold | RepeatedStratifiedKFold):
        n_splits = int(concrete.cvargs["n_splits"])
    # TimeSeriesSplit trains its first fold on rows before the first val block: one row more.
    extra = int(isinstance(concrete, TimeSeriesSplit))
    if len(dev) < n_splits + extra:
        held = f" after setting aside {len(test)} test rows" if len(test) else ""
        raise DataError(
            where,
            f"{len(dev)} rows are left for cross-validation{held}, fewer than the "
            f"{n_splits} folds of cv",
            n_bad=len(dev),
            key="cv.n_splits",
            fix=f"Use fewer folds (cv.n_splits={max(2, len(dev) - extra)}), a smaller "
            "dataset.test_fraction, or more data",
        )
    try:
        folds = make_folds(concrete, dataset, dev)
    except ValueError as error:
        raise DataError(
            where, f"the folds cannot be made: {error}", key="cv", fix="Use fewer folds"
        ) from None
    return Plan(dev, test, folds, concrete)
