"""``dataset=csv``: a CSV file of your own, turned into one in-memory :class:`Dataset`.

Every check happens here, before any training, and a failed one raises :class:`DataError` naming
the file, the column, how many rows are bad and the first bad line (the header is line 1).
Nothing is silently turned into NaN: an empty or ``NA`` cell is an error unless
``missing=drop|mean`` says what to do with it, and a cell that is not a number in a numeric column
is always an error.

The file is read by :mod:`mlcli.data.reading` (which knows the line each row starts on) and
checked column by column with vectorized numpy operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from mlcli.data.base import Dataset, Task
from mlcli.data.errors import DataError, bad_rows
from mlcli.data.labels import TaskGuess, encode_labels, infer_task
from mlcli.data.reading import Table, as_names, as_text, listing, plain, read_table

DEFAULT_NA_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")
"""Cells that count as missing (after stripping spaces)."""

_MISSING_FIX = (
    "Fill those cells, or set dataset.missing=drop (drop such rows) or dataset.missing=mean "
    "(impute each fold with its training rows' mean)"
)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return np.nan


def _numbers(cells: np.ndarray, is_na: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cells parsed as float64 (NaN where missing or not a number); which are finite numbers.

    Python's ``float`` rules throughout: numpy's cast on the fast path, ``float`` per cell when
    some cell is not a number.
    """
    if cells.dtype.kind in "iuf":  # read as numbers already
        numbers = cells.astype(np.float64)
        return numbers, np.isfinite(numbers)
    if is_na is not None and is_na.any():
        cells = cells.copy()
        cells[is_na] = "nan"
    try:
        numbers = cells.astype(np.float64)
    except ValueError:
        numbers = np.array([_float(c) for c in cells.tolist()], dtype=np.float64)
    return numbers, np.isfinite(numbers)


def _is_na(cells: np.ndarray, na: set[str]) -> np.ndarray:
    """Which cells are empty or an NA marker."""
    missing = np.zeros(len(cells), dtype=bool)
    if cells.dtype.kind in "iuf":  # a column read as numbers: only numeric markers (-999)
        for number in {_float(marker) for marker in na}:
            if np.isfinite(number):
                missing |= cells == number
        return missing
    for marker in na:
        missing |= cells == marker
    return missing


def _missing_cells(table: Table, used: list[str], na: set[str]) -> dict[str, np.ndarray]:
    """For each column of ``used``: which cells are empty or an NA marker."""
    return {column: _is_na(table[column], na) for column in used}


def _refuse_missing(table: Table, used: list[str], is_na: dict[str, np.ndarray], fix: str) -> None:
    bad_columns = [c for c in used if is_na[c].any()]
    if not bad_columns:
        return
    # Name the column of the earliest bad cell; list the others (by first bad line) in the fix.
    bad_columns.sort(key=lambda c: int(np.argmax(is_na[c])))
    column, others = bad_columns[0], bad_columns[1:]
    mask = is_na[column]
    also = f"Columns {listing(others)} have missing cells too. " if others else ""
    raise bad_rows(
        table.where,
        column,
        "an empty or NA cell",
        table.lines[mask],
        table[column][mask].tolist(),
        fix=also + fix,
        key=table.key,
    )


def _handle_missing(
    table: Table, features: list[str], required: list[str], missing: str, na: set[str]
) -> tuple[Table, list[str]]:
    """Apply ``missing=error|drop|mean`` to one table; return it and what was done (notes).

    ``required`` columns (target, group) cannot be imputed: under ``mean`` their rows are dropped.
    """
    used = [*required, *features]
    is_na = _missing_cells(table, used, na)
    if not any(mask.any() for mask in is_na.values()):
        return table, []
    if missing == "error":
        _refuse_missing(table, used, is_na, _MISSING_FIX)
    drop_if = used if missing == "drop" else required
    drop = np.zeros(len(table.lines), dtype=bool)
    for column in drop_if:
        drop |= is_na[column]
    notes = []
    if drop.any():
        lines = table.lines[drop]
        notes.append(
            f"dropped {int(drop.sum())} of {len(drop)} rows of {table.where} with missing cells "
            f"in {', '.join(c for c in drop_if if is_na[c].any())} (dataset.missing={missing}; "
            f"first at line {int(lines[0])})"
        )
    if drop.all():
        raise bad_rows(
            table.where,
            None,
            "missing cells, leaving no row",
            table.lines,
            fix="Fill the file's empty cells",
            key=table.key,
        )
    table = table.subset(~drop)
    if missing == "mean":
        n_cells = sum(int(is_na[c][~drop].sum()) for c in features)
        if n_cells:
            notes.append(
                f"{n_cells} missing feature cells of {table.where} are imputed per fold with the "
                "training rows' mean (most frequent category for categorical columns)"
            )
    return table, notes


def _looks_like_id(name: str, numbers: np.ndarray) -> bool:
    """A distinct integer on every row that counts up, or a column named like an id."""
    if len(numbers) < 3 or not np.all(np.isfinite(numbers) & (numbers == np.round(numbers))):
        return False
    ordered = np.sort(numbers)
    if np.any(np.diff(ordered) == 0):
        return False
    lowered = name.lower()
    return (
        bool(np.all(np.diff(ordered) == 1))
        or lowered in {"id", "idx", "index"}
        or (lowered.startswith("unnamed"))
    )


def _feature_matrix(
    train: Table,
    test: Table | None,
    features: list[str],
    categorical: list[str] | None,
    na: set[str],
    notes: list[str],
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Features as float32: numbers, category codes (one-hot per fold later), NaN where missing."""
    tables = [t for t in (train, test) if t is not None]
    X = np.empty((sum(len(t.lines) for t in tables), len(features)), dtype=np.float32)
    positions: list[int] = []
    inferred: list[str] = []
    id_like: list[str] = []
    for j, column in enumerate(features):
        # Each table's column parsed once: text, missing cells, numbers, finite numbers.
        parsed = []
        for table in tables:
            text = table[column]
            is_na = _is_na(text, na)
            parsed.append((table, text, is_na, *_numbers(text, is_na)))
        _, _, train_na, _, train_finite = parsed[0]
        present = train_finite[~train_na]
        if categorical is not None:
            is_categorical = column in categorical
        else:  # inferred: a column whose values are mostly not numbers holds categories
            is_categorical = present.size > 0 and present.mean() < 0.5
            if is_categorical:
                inferred.append(column)
        if is_categorical:
            positions.append(j)
            values = np.concatenate([as_text(text) for _, text, *_ in parsed])
            is_missing = np.concatenate([is_na for _, _, is_na, _, _ in parsed])
            categories = np.unique(values[~is_missing])
            codes = np.searchsorted(categories, values).astype(np.float32)
            codes[is_missing] = np.nan
            X[:, j] = codes
            continue
        start = 0
        for table, text, is_na, numbers, finite in parsed:
            bad = ~finite & ~is_na
            if bad.any():
                raise bad_rows(
                    table.where,
                    column,
                    "a value that is not a (finite) number",
                    table.lines[bad],
                    text[bad].tolist(),
                    fix="Fix those cells; if the column holds categories, list it: "
                    f"dataset.categorical=[{column}]",
                    key=table.key,
                )
            numbers[is_na] = np.nan
            X[start : start + len(numbers), j] = numbers
            start += len(numbers)
        if _looks_like_id(column, X[: len(train.lines), j]):
            id_like.append(column)
    numeric = [c for j, c in enumerate(features) if j not in positions]
    cat_names = [features[j] for j in positions]
    notes.append(
        f"features ({len(features)}): {len(numeric)} numeric"
        + (f" ({listing(numeric)})" if numeric else "")
        + (
            f", {len(cat_names)} categorical, one-hot per fold ({listing(cat_names)}"
            + (", inferred: their values are not numbers" if inferred else "")
            + ")"
            if cat_names
            else ""
        )
    )
    for column in id_like:
        notes.append(
            f"column {column!r} looks like a row id (a distinct integer on every row): "
            f"if it is one, leave it out with dataset.drop=[{column}]"
        )
    return X, tuple(positions)


def _target(
    train: Table, test: Table | None, target: str, task: str, notes: list[str]
) -> tuple[np.ndarray, str, list[str] | None]:
    """The target as class indices or floats; the task, inferred (and said so) when ``auto``."""
    tables = [t for t in (train, test) if t is not None]
    text = train[target]
    numbers, finite = _numbers(text)
    if task == "auto":
        if finite.all():
            guess = infer_task(numbers, target)
        elif finite.mean() < 0.5:
            guess = TaskGuess("classification", f"target {target!r} holds text labels")
        else:
            bad = ~finite
            raise bad_rows(
                train.where,
                target,
                "a target that is not a number",
                train.lines[bad],
                text[bad].tolist(),
                fix="Fix them, or set dataset.task=classification if the target is a label",
                key=train.key,
            )
        task = guess.task
        notes.append(f"task: {task} (inferred: {guess.reason})")
    parsed = [_numbers(t[target]) for t in tables]
    if task == "regression":
        for table, (_, ok) in zip(tables, parsed, strict=True):
            if not ok.all():
                raise bad_rows(
                    table.where,
                    target,
                    "a regression target that is not a (finite) number",
                    table.lines[~ok],
                    table[target][~ok].tolist(),
                    fix="Fix them, or set dataset.task=classification if the target is a label",
                    key=table.key,
                )
        return np.concatenate([n for n, _ in parsed]), task, None
    numeric = all(ok.all() for _, ok in parsed)
    values = (
        np.concatenate([n for n, _ in parsed])
        if numeric
        else np.concatenate([as_text(t[target]) for t in tables])
    )
    y, names = encode_labels(values, numeric)
    train_classes = np.unique(y[: len(train.lines)])
    if len(train_classes) < 2:
        n = len(train.lines)
        raise DataError(
            train.where,
            f"all {n} rows have the same class {names[int(train_classes[0])]!r} (first at line "
            f"{int(train.lines[0])}); a classifier needs at least two classes",
            column=target,
            n_bad=n,
            line=int(train.lines[0]),
            fix="Check dataset.target, or set dataset.task=regression",
            key="dataset.target",
        )
    unseen = sorted(set(range(len(names))) - set(train_classes.tolist()))
    if unseen and test is not None:
        notes.append(
            f"{test.where} has classes that {train.where} lacks: "
            f"{listing([names[i] for i in unseen])} (no model can predict them)"
        )
    return y, "classification", names


def _select_features(
    table: Table,
    target: str,
    features: list[str] | None,
    drop: list[str],
    group: str | None,
    window: int | None,
) -> list[str]:
    """The feature columns: those given, or every column but the target, ``drop`` and ``group``."""
    table.column(target, "target ", "dataset.target")
    for name in drop:
        table.column(name, "", "dataset.drop")
    if group is not None:
        table.column(group, "group ", "dataset.group")
    if features is None:
        if window is not None:
            return []  # a windowed series predicts from its own past unless told otherwise
        excluded = {target, *drop, *([group] if group else [])}
        chosen = [c for c in table.columns if c not in excluded]
        if not chosen:
            raise DataError(
                table.where,
                f"has no feature column besides the target {target!r}",
                line=table.header_line,
                key=table.key,
            )
        return chosen
    for name in features:
        table.column(name, "feature ", "dataset.features")
        if name == target or name in drop:
            raise DataError(
                table.where,
                f"column {name!r} is in dataset.features and is also "
                + ("the target" if name == target else "in dataset.drop"),
                column=name,
                key="dataset.features",
            )
    if not features and window is None:
        raise DataError(
            table.where, "dataset.features is empty", key="dataset.features", fix="Name some"
        )
    return features


def _windowed_dataset(
    path: str,
    train: Table,
    test: Table | None,
    target: str,
    chosen: list[str],
    window: int,
    task: str,
    na: set[str],
    notes: list[str],
) -> Dataset:
    """The ``dataset.window`` case: the target series as (previous N values → next value) rows."""
    X, y, kind, class_names, test_index = _windowed(train, test, target, chosen, window, task, na,
                                                    notes)  # fmt: skip
    return Dataset(
        name=Path(path).stem,
        X=X,
        y=y,
        task=cast(Task, kind),
        class_names=class_names,
        test_index=test_index,
        source=path,
        ordered=True,
        notes=notes,
    )


def _check_categorical(path: str, categorical: list[str] | None, chosen: list[str]) -> None:
    """``dataset.categorical`` may name feature columns only."""
    for name in categorical or []:
        if name not in chosen:
            raise DataError(
                path,
                f"dataset.categorical names {name!r}, which is not a feature column",
                column=name,
                key="dataset.categorical",
                fix=f"Feature columns: {listing(chosen)}",
            )


def _windowed(
    train: Table,
    test: Table | None,
    target: str,
    features: list[str],
    window: int,
    task: str,
    na: set[str],
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, str, list[str] | None, np.ndarray | None]:
    """(previous ``window`` values → next value) rows from a series in file order.

    X has shape ``(rows, window, channels)``: the target's own past first, then any ``features``
    given. A test file continues the series: its first rows are predicted from the training file's
    last values (known at that time).
    """
    channels = [target, *features]
    tables = [t for t in (train, test) if t is not None]
    blocks = []
    for table in tables:
        _refuse_missing(
            table,
            channels,
            _missing_cells(table, channels, na),
            "A windowed series must have no gaps: fill them first (dataset.missing does not "
            "apply to windowed data)",
        )
        block = np.empty((len(table.lines), len(channels)), dtype=np.float64)
        for j, column in enumerate(channels):
            numbers, finite = _numbers(table[column])
            if not finite.all():
                raise bad_rows(
                    table.where,
                    column,
                    "a value that is not a (finite) number",
                    table.lines[~finite],
                    table[column][~finite].tolist(),
                    fix="A windowed series must be numbers",
                    key=table.key,
                )
            block[:, j] = numbers
        blocks.append(block)
    values = np.concatenate(blocks)
    n_train = len(train.lines)
    if n_train <= window:
        raise DataError(
            train.where,
            f"{n_train} rows, but dataset.window={window} needs at least {window + 1} "
            "(the window plus one value to predict)",
            column=target,
            key="dataset.window",
            fix="Use a shorter window",
        )
    from numpy.lib.stride_tricks import sliding_window_view

    X = sliding_window_view(values, window, axis=0)[:-1].transpose(0, 2, 1)
    y = values[window:, 0]
    test_index = np.arange(n_train - window, len(y)) if test is not None else None
    ignored = [c for c in train.columns if c not in channels]
    notes.append(
        f"window: the previous {window} values of {listing(channels)} predict the next "
        f"{target!r}: {len(y)} rows in file order"
        + (f" (columns not used: {listing(ignored)})" if ignored else "")
    )
    if task == "auto":
        task = "regression"
        notes.append("task: regression (inferred: a windowed series predicts its next value)")
    if task == "classification":
        labels, names = encode_labels(y, numeric=True)
        return X, labels, task, names, test_index
    return X, y, task, None, test_index


def csv(
    path: str,
    target: str,
    features: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    task: Any = "auto",
    categorical: Sequence[str] | None = None,
    missing: Any = "error",
    group: str | None = None,
    test_path: str | None = None,
    window: int | None = None,
    sep: str = ",",
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
) -> Dataset:
    """A CSV file with a header line: ``target`` is predicted from the ``features`` columns.

    ``features`` defaults to every other column but ``drop`` and ``group``. ``task`` is
    ``auto|classification|regression`` (``auto`` infers it from the target and says so).
    ``categorical`` columns are one-hot encoded per fold (default: inferred, the columns whose
    values are mostly not numbers). ``missing`` is ``error|drop|mean``. ``group`` names a column of
    group ids for grouped splits. ``test_path`` is a separate test file with the same columns.
    ``window=N`` turns the target series into (previous N values → next value) rows.
    """
    task, missing = plain(task), plain(missing)
    drop_names = as_names(drop) or []
    feature_names = as_names(features)
    categorical_names = as_names(categorical)
    na = {str(v).strip() for v in na_values}
    train = read_table(str(path), sep, "dataset.path")
    test = read_table(str(test_path), sep, "dataset.test_path") if test_path else None
    chosen = _select_features(train, target, feature_names, drop_names, group, window)
    if test is not None:
        for name in [target, *chosen]:
            test.column(name, "")
    notes = [f"read {path}: {len(train.lines)} rows, {len(train.columns)} columns "
             f"(sha256 {train.sha256[:16]})", *renamed_notes(train)]  # fmt: skip
    if test is not None:
        notes.append(
            f"test split: {test_path} ({len(test.lines)} rows, sha256 {test.sha256[:16]}); "
            "dataset.test_fraction is not used"
        )
    if window is not None:
        if group is not None or categorical_names:
            raise DataError(
                str(path),
                "dataset.window cannot be combined with dataset.group or dataset.categorical",
                key="dataset.window",
            )
        return _windowed_dataset(str(path), train, test, target, chosen, int(window), task, na,
                                 notes)  # fmt: skip
    _check_categorical(str(path), categorical_names, chosen)
    required = [target, *([group] if group else [])]
    train, dropped = _handle_missing(train, chosen, required, missing, na)
    notes.extend(dropped)
    if test is not None:
        test, dropped = _handle_missing(test, chosen, [target], missing, na)
        notes.extend(dropped)
    X, positions = _feature_matrix(train, test, chosen, categorical_names, na, notes)
    y, task, class_names = _target(train, test, target, task, notes)
    n_train = len(train.lines)
    groups = None
    if group is not None:
        _, codes = np.unique(train[group], return_inverse=True)
        groups = np.concatenate([codes, np.full(len(y) - n_train, -1)]).astype(np.int64)
        notes.append(f"groups: {int(codes.max()) + 1} distinct values of {group!r}")
    return Dataset(
        name=Path(path).stem,
        X=X,
        y=y,
        task=task,
        class_names=class_names,
        feature_names=chosen,
        test_index=np.arange(n_train, len(y)) if test is not None else None,
        groups=groups,
        source=str(path),
        categorical=positions,
        notes=notes,
        meta=_meta(train, test, target, drop_names, [chosen[j] for j in positions], na),
    )


def _meta(
    train: Table,
    test: Table | None,
    target: str,
    drop: list[str],
    categorical: list[str],
    na: set[str],
) -> dict[str, Any]:
    """What predicting needs to know of the file (``models/schema.json``): the target's base
    name, the columns left out (ids), and each categorical column's categories in code order."""
    return {
        "target_base": base_name(target, train.renamed),
        "dropped_columns": [c for c in drop if c in train.columns],
        "categories": {c: _categories(train, test, c, na).tolist() for c in categorical},
    }


def renamed_notes(table: Table) -> list[str]:
    """How a header's repeated names were read (none when it repeats none)."""
    if not table.renamed:
        return []
    return [
        f"the header of {table.where} repeats column names: read as {listing(table.renamed)} "
        "(pandas' convention: the second 'cli' is 'cli.1'); name them so in dataset settings"
    ]


def base_name(column: str, renamed: Sequence[str]) -> str:
    """A column's name as the header wrote it (``tested_positive.2`` -> ``tested_positive`` when
    the reader renamed a repeated name)."""
    return column.rsplit(".", 1)[0] if column in renamed else column


def _categories(train: Table, test: Table | None, column: str, na: set[str]) -> np.ndarray:
    """A categorical column's categories in code order (code k is the k-th), as
    :func:`_feature_matrix` numbers them."""
    values = np.concatenate([as_text(t[column]) for t in (train, test) if t is not None])
    is_missing = np.concatenate([_is_na(t[column], na) for t in (train, test) if t is not None])
    return np.unique(values[~is_missing])


def feature_rows(
    table: Table, features: list[dict[str, Any]], na: set[str], impute: bool
) -> np.ndarray:
    """The rows of ``table`` (a file to predict on) as a trained run's raw feature matrix:
    numeric columns as numbers, categorical ones as the codes of the categories the run knows
    (``features``: name, kind and categories, as ``models/schema.json`` lists them). Missing
    cells are NaN when the run imputes them (``impute``), else an error; a cell that is not a
    number, or a category the run never saw, is an error naming the column and the line."""
    X = np.empty((len(table.lines), len(features)), dtype=np.float32)
    for j, feature in enumerate(features):
        column = str(feature["name"])
        text = table[column]
        is_na = _is_na(text, na)
        if is_na.any() and not impute:
            _refuse_missing(
                table,
                [column],
                {column: is_na},
                "Fill those cells (the run was trained with dataset.missing=error or drop: it "
                "has no imputation values)",
            )
        if feature.get("kind") == "categorical":
            categories = [str(c) for c in feature.get("categories", [])]
            code_of = {c: float(k) for k, c in enumerate(categories)}
            values = as_text(text).tolist()
            codes = np.array([code_of.get(v, np.nan) for v in values], dtype=np.float32)
            unknown = np.isnan(codes) & ~is_na
            if unknown.any():
                raise bad_rows(
                    table.where,
                    column,
                    "a category the run never saw in training",
                    table.lines[unknown],
                    text[unknown].tolist(),
                    fix=f"Known categories of {column!r}: {listing(categories, 20)}",
                    key=table.key,
                )
            X[:, j] = codes
            continue
        numbers, finite = _numbers(text, is_na)
        bad = ~finite & ~is_na
        if bad.any():
            raise bad_rows(
                table.where,
                column,
                "a value that is not a (finite) number",
                table.lines[bad],
                text[bad].tolist(),
                fix=f"Column {column!r} holds numbers in the training data: fix those cells",
                key=table.key,
            )
        numbers[is_na] = np.nan
        X[:, j] = numbers
    return X
