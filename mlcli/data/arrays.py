"""``dataset=npz``: arrays of your own saved with ``numpy.savez(path, X=..., y=...)``.

``X`` is ``N×F`` (features), ``N×C×H×W`` (images) or ``N×T×F`` (sequences, with an optional
``lengths`` array of the true lengths of padded sequences); ``y`` holds ``N`` labels or values.
Optional: ``groups`` (``N`` group ids, for ``cv=group``) and a test split of the file's own,
``X_test``/``y_test`` (and ``lengths_test``). Rows are reported by index (the first row is 0).
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from mlcli.data.base import Dataset
from mlcli.data.errors import DataError, bad_rows
from mlcli.data.labels import encode_labels, infer_task
from mlcli.data.reading import existing_file, plain

_SHAPES = "N×F features, N×C×H×W images or N×T×F sequences"


def _load(path: str) -> dict[str, np.ndarray]:
    file = existing_file(path, "dataset.path")
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:  # object arrays need pickle, which is never allowed
        raise DataError(
            path,
            f"holds an array of Python objects ({error})",
            fix="Save plain numeric arrays (text labels as a fixed-width string array)",
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(
            path,
            f"is not a readable .npz archive ({error})",
            fix="Save it with numpy.savez(path, X=features, y=targets)",
        ) from None


def _finite_rows(path: str, name: str, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(
            path, f"has dtype {array.dtype}, not real numbers", column=name, fix="Save numbers"
        )
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if not finite.all():
        raise bad_rows(path, name, "NaN or infinite values", np.flatnonzero(~finite), unit="index")


def _lengths(path: str, name: str, lengths: np.ndarray, X: np.ndarray) -> np.ndarray:
    if X.ndim != 3 or lengths.shape != (len(X),) or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(
            path,
            f"has shape {lengths.shape} and dtype {lengths.dtype}; expected {len(X)} integers "
            "(one true length per N×T×F sequence)",
            column=name,
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > X.shape[1]))
    if bad.size:
        raise bad_rows(
            path,
            name,
            f"a length outside 1..{X.shape[1]} (the padded length T)",
            bad,
            lengths[bad].tolist(),
            unit="index",
        )
    return lengths.astype(np.int64)


def _checked_parts(
    path: str, arrays: dict[str, np.ndarray], parts: list[tuple[str, str, str]]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The features, targets and (where given) lengths of the training part and the test part,
    each checked: shapes that fit together, finite features."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for x_name, y_name, len_name in parts:
        X, y = arrays[x_name], arrays[y_name]
        if X.ndim not in (2, 3, 4):
            raise DataError(path, f"has shape {X.shape}; expected {_SHAPES}", column=x_name)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(X):
            raise DataError(
                path,
                f"has shape {y.shape}; expected one target per row of {x_name} ({len(X)})",
                column=y_name,
            )
        if xs and X.shape[1:] != xs[0].shape[1:]:
            raise DataError(
                path, f"rows have shape {X.shape[1:]}, X's have {xs[0].shape[1:]}", column=x_name
            )
        _finite_rows(path, x_name, X)
        xs.append(X)
        ys.append(y)
        if len_name in arrays:
            lengths.append(_lengths(path, len_name, arrays[len_name], X))
    return xs, ys, lengths


def _groups(path: str, raw: np.ndarray | None, n_train: int, n_rows: int) -> np.ndarray | None:
    """The ``groups`` array as codes (-1 for the test rows), or None when there is none."""
    if raw is None:
        return None
    if raw.shape != (n_train,):
        raise DataError(path, f"has shape {raw.shape}; expected ({n_train},)", column="groups")
    _, codes = np.unique(raw, return_inverse=True)
    return np.concatenate([codes, np.full(n_rows - n_train, -1)]).astype(np.int64)


def npz(path: str, task: Any = "auto") -> Dataset:
    """Arrays ``X`` and ``y`` (plus optional ``lengths``, ``groups``, ``X_test``, ``y_test``).

    ``task=auto`` infers classification for text labels or integers with few distinct values,
    regression otherwise, and says so in the run's notes.
    """
    task = plain(task)
    arrays = _load(path)
    for name in ("X", "y"):
        if name not in arrays:
            raise DataError(
                path,
                f"has no array {name!r} (arrays: {', '.join(sorted(arrays)) or 'none'})",
                column=name,
                fix="Save it with numpy.savez(path, X=features, y=targets)",
            )
    has_test = "X_test" in arrays or "y_test" in arrays
    if has_test and not ("X_test" in arrays and "y_test" in arrays):
        raise DataError(path, "has only one of X_test and y_test", fix="Save both, or neither")
    parts = [("X", "y", "lengths")] + ([("X_test", "y_test", "lengths_test")] if has_test else [])
    xs, ys, lengths = _checked_parts(path, arrays, parts)
    y_all = np.concatenate(ys)
    n_train = len(ys[0])
    notes = [
        f"read {path}: X {xs[0].shape}, y {ys[0].shape}" + (" + its own test split" * has_test)
    ]
    text_labels = not np.issubdtype(y_all.dtype, np.number) or y_all.dtype == np.bool_
    if not text_labels:
        _finite_rows(path, "y", ys[0])
        if has_test:
            _finite_rows(path, "y_test", ys[1])
    if task == "auto":
        if text_labels:
            task = "classification"
            notes.append("task: classification (inferred: y holds text labels)")
        else:
            guess = infer_task(ys[0].astype(np.float64), "y")
            task = guess.task
            notes.append(f"task: {task} (inferred: {guess.reason})")
    class_names = None
    if task == "classification":
        y_all, class_names = encode_labels(y_all, numeric=not text_labels)
        if len(np.unique(y_all[:n_train])) < 2:
            raise DataError(
                path,
                f"all {n_train} rows have the same class; a classifier needs at least two",
                column="y",
                n_bad=n_train,
                key="dataset.path",
            )
    elif text_labels:
        raise DataError(path, "holds text, not numbers, for a regression target", column="y")
    groups = _groups(path, arrays.get("groups"), n_train, len(y_all))
    if lengths and len(lengths) != len(parts):
        raise DataError(path, "has lengths for only one of X and X_test", column="lengths")
    return Dataset(
        name=str(path).rsplit("/", 1)[-1].removesuffix(".npz"),
        X=np.concatenate(xs),
        y=y_all,
        task=task,
        class_names=class_names,
        test_index=np.arange(n_train, len(y_all)) if has_test else None,
        groups=groups,
        source=str(path),
        lengths=np.concatenate(lengths) if lengths else None,
        notes=notes,
    )
