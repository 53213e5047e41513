"""``mlcli predict RUN_DIR --data FILE``: a run's final model on new rows, written as
``id,<target>`` (a homework's submission file).

The run dir holds everything it needs (``models/``, :mod:`mlcli.rundir.models`): the input
schema, every fold's weights and fitted preprocessing (and the refit model's). The steps:

1. a reader for the kind of data the run was trained on turns the file into the run's raw
   feature matrix (:data:`READERS`: a CSV file by column name, extra columns ignored with a note,
   missing ones an error; an NPZ file's ``X`` array; a text run's file split into tokens as its
   training file was: a CSV text or source column, CoNLL sentences) and finds the id of each row;
2. the final model predicts (:func:`mlcli.engine.saved.load_predictor`: the refit model, or the
   mean of the fold models), each model through its own preprocessing;
3. a writer for the run's task lays the predictions out (:data:`WRITERS`: class names, or one
   probability column per class with ``--proba``; values in the target's units; a tag per
   token, one row each; a decoded text), named by the target's base name (a target picked as
   ``tested_positive.2`` is written ``tested_positive``).

Bad input (a missing column, a cell that is not a number, a category the run never saw, a run
without models) raises a typed error before anything is written; the file is written
atomically.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcli import rundir
from mlcli.data.errors import DataError
from mlcli.rundir.models import ModelFilesError, read_schema


class PredictError(ValueError):
    """A ``predict`` request that cannot be served (the message says why and how to fix it)."""


@dataclass
class Rows:
    """What a reader makes of a prediction file: the raw feature matrix, each row's id, the id
    column's name, and notes for the user."""

    X: np.ndarray
    ids: np.ndarray
    id_name: str
    notes: list[str] = field(default_factory=list)


def _ids(
    found: dict[str, np.ndarray],
    n: int,
    id_column: str | None,
    schema: dict[str, Any],
    where: str,
    origin: str = "dataset.drop",
) -> tuple[np.ndarray, str, str]:
    """The rows' ids: ``--id-column``, else a column the run left out of its features (its
    ``dataset.drop``; a text run's ``dataset.id_column``: ``origin``) that the file has, else
    the row number; with a note saying which."""
    if id_column is not None:
        if id_column not in found:
            raise DataError(
                where,
                f"has no id column {id_column!r} (--id-column)",
                column=id_column,
                line=1,
                fix=f"Columns: {', '.join(list(found)[:30])}",
                key="--id-column",
            )
        return found[id_column], id_column, f"ids from column {id_column!r} (--id-column)"
    for name in schema.get("id_columns") or []:
        if name in found:
            return found[name], name, f"ids from column {name!r} (the run's {origin})"
    return np.arange(n), "id", "ids are row numbers (0, 1, ...): give --id-column to use a column"


def read_csv_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """A CSV file with the training columns (the target may be absent; extra columns are
    ignored, with a note): read by pyarrow when every cell it needs is clean
    (:func:`_clean_csv_rows`), else cell by cell, which names what is wrong and where."""
    features = list(schema.get("features") or [])
    if not features:
        raise PredictError(
            f"this run's data ({schema.get('dataset')}) has no named columns: give an .npz file "
            f"with an array X of shape (rows, {', '.join(map(str, schema['in_shape']))})"
        )
    return _clean_csv_rows(path, schema, id_column) or _careful_csv_rows(path, schema, id_column)


def _looks_numeric(value: str, finite: bool = False) -> bool:
    """Whether ``value`` reads as a number (``finite``: as a finite one)."""
    try:
        number = float(value)
    except ValueError:
        return False
    return bool(np.isfinite(number)) or not finite


def _clean_csv_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows | None:
    """The rows of a clean CSV file, read by pyarrow's C++ parser (no Python per cell); None
    when the careful reader must look at it: the file is not UTF-8, its header has quotes or
    misses a column, a row has another width, a numeric cell is not a finite number, a cell is
    missing where the run cannot impute, a category is unknown, or the run's NA markers or
    categories look like numbers (whose reading depends on the whole column). What it returns
    equals what the careful reader returns for the same file."""
    import pyarrow as pa
    import pyarrow.csv as pv

    from mlcli.data.reading import Table, dedupe_names, listing
    from mlcli.data.tabular import renamed_notes

    features = [dict(f) for f in schema.get("features") or []]
    sep = str(schema.get("sep") or ",")
    sep = {"tab": "\t", "\\t": "\t"}.get(sep, sep)
    na = {str(v).strip() for v in schema.get("na_values") or []}
    categorical = [f for f in features if f.get("kind") == "categorical"]
    numbers_as_text = any(_looks_numeric(v, finite=True) for v in na) or any(
        _looks_numeric(str(c)) for f in categorical for c in f.get("categories", [])
    )
    if len(sep) != 1 or numbers_as_text or not path.is_file() or len(features) < 1:
        return None
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    first = raw[: raw.find(b"\n")] if b"\n" in raw else raw
    header = first.decode("utf-8-sig").removesuffix("\r")
    if '"' in header or not header.strip():
        return None
    columns, renamed = dedupe_names(
        [name.strip() or f"Unnamed: {i}" for i, name in enumerate(header.split(sep))]
    )
    names = [str(f["name"]) for f in features]
    if not set(names) <= set(columns) or len(columns) < 2:  # one column: blank lines are rows
        return None
    if id_column is not None and id_column not in columns:
        return None
    id_name, said = _id_source(schema, columns, id_column)
    wanted = [*names, *([id_name] if id_name in columns and id_name not in names else [])]
    types = {str(f["name"]): pa.string() if f in categorical else pa.float64() for f in features}
    try:
        table = pv.read_csv(
            pa.py_buffer(raw),
            read_options=pv.ReadOptions(column_names=columns, skip_rows=1),
            parse_options=pv.ParseOptions(delimiter=sep),
            convert_options=pv.ConvertOptions(
                column_types=types,
                include_columns=wanted,
                null_values=sorted(na),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    n = table.num_rows
    if n == 0:
        return None
    X = _clean_matrix(table, features, schema.get("missing") == "mean")
    if X is None:
        return None
    notes = renamed_notes(Table(str(path), "--data", columns, {}, np.zeros(0), 1, "", renamed))
    target = str(schema.get("target"))
    extra = [c for c in columns if c not in set(names) and c not in (id_name, target)]
    if extra:
        notes.append(f"columns not used by the model (ignored): {listing(extra)}")
    notes.append(said)
    if id_name in columns:
        id_values = table.column(id_name).combine_chunks()
        if pa.types.is_integer(id_values.type) or pa.types.is_floating(id_values.type):
            ids = _as_numpy(id_values) if not id_values.null_count else _python_values(id_values)
        else:
            ids = _python_values(id_values)
    else:
        ids = np.arange(n)
    return Rows(X, np.asarray(ids), id_name, notes)


def _id_source(
    schema: dict[str, Any], columns: list[str], id_column: str | None
) -> tuple[str, str]:
    """The id column's name (``--id-column``, else the column the run dropped as an id, else
    ``id`` for row numbers) and the note that says where the ids come from."""
    if id_column is not None:
        return id_column, f"ids from column {id_column!r} (--id-column)"
    dropped = [c for c in schema.get("id_columns") or [] if c in columns]
    if dropped:
        return dropped[0], f"ids from column {dropped[0]!r} (the run's dataset.drop)"
    return "id", "ids are row numbers (0, 1, ...): give --id-column to use a column"


def _clean_matrix(table: Any, features: list[dict[str, Any]], impute: bool) -> np.ndarray | None:
    """The feature matrix of a pyarrow table (category codes, numbers; NA cells NaN, imputed
    later by the preprocessing); None where the careful reader must look: a missing cell the
    run cannot impute, an unknown category, a number that is not finite."""
    import pyarrow.compute as pc

    X = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, feature in enumerate(features):
        column = table.column(str(feature["name"]))
        if column.null_count and not impute:
            return None
        if feature.get("kind") == "categorical":
            code_of = {str(c): float(k) for k, c in enumerate(feature.get("categories", []))}
            cells = pc.utf8_trim_whitespace(column).to_pylist()
            codes = np.array([code_of.get(c, np.nan) for c in cells], dtype=np.float64)
            if np.isnan(codes).sum() != column.null_count:  # a category the run never saw
                return None
            X[:, j] = codes
        else:
            if pc.any(pc.invert(pc.is_finite(column))).as_py():  # nulls skipped: NA cells
                return None
            X[:, j] = _as_numpy(column)
    return X


def _as_numpy(values: Any) -> np.ndarray:
    """A numeric Arrow column as a numpy array (int64, or float64 with nulls as NaN), read
    from its buffers: pyarrow's own conversions import pandas (~0.7 s)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    integer = pa.types.is_integer(values.type) and not values.null_count
    values = pc.cast(values, pa.int64() if integer else pa.float64())
    dtype = np.dtype(np.int64 if integer else np.float64)
    validity, data = values.buffers()[:2]
    n, offset = len(values), values.offset
    out = np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize).copy()
    if values.null_count:
        bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
        out[bits[offset : offset + n] == 0] = np.nan
    return out


def _python_values(values: Any) -> np.ndarray:
    """An Arrow column as a 1-D object array of its Python values."""
    out = np.empty(len(values), dtype=object)
    out[:] = values.to_pylist()
    return out


def _careful_csv_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """A CSV file read cell by cell (:func:`mlcli.data.reading.read_table`): every problem
    named with its column and line."""
    from mlcli.data.reading import listing, read_table
    from mlcli.data.tabular import feature_rows, renamed_notes

    features = list(schema.get("features") or [])
    table = read_table(str(path), str(schema.get("sep") or ","), "--data")
    for feature in features:
        table.column(str(feature["name"]), "feature ", key="--data")
    names = {str(f["name"]) for f in features}
    notes = []
    notes.extend(renamed_notes(table))
    ids, id_name, said = _ids(table.cells, len(table.lines), id_column, schema, str(path))
    target = str(schema.get("target"))
    extra = [c for c in table.columns if c not in names and c not in (id_name, target)]
    if extra:
        notes.append(f"columns not used by the model (ignored): {listing(extra)}")
    notes.append(said)
    na = {str(v).strip() for v in schema.get("na_values") or []}
    X = feature_rows(table, features, na, impute=schema.get("missing") == "mean")
    return Rows(X, np.asarray(ids), id_name, notes)


def read_npz_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """An ``.npz`` file whose ``X`` has one example per row, in the run's input shape
    (``ids``: an optional array of ids)."""
    from mlcli.data.reading import existing_file

    file = existing_file(str(path), "--data")
    try:
        with np.load(file, allow_pickle=False) as arrays:
            found = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as error:
        raise DataError(str(path), f"is not a readable .npz file ({error})", key="--data") from None
    if "X" not in found:
        raise DataError(str(path), f"has no array 'X' (it has {sorted(found)})", key="--data")
    X = found["X"]
    shape = tuple(int(d) for d in schema["in_shape"])
    if X.ndim < 1 or tuple(X.shape[1:]) != shape or X.dtype.kind not in "iuf":
        raise DataError(
            str(path),
            f"X is {X.dtype} of shape {X.shape}; the run was trained on numbers of shape "
            f"(rows, {', '.join(map(str, shape))})",
            column="X",
            key="--data",
        )
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(axis=1))[0])
        raise DataError(str(path), f"X has a value that is not a finite number (row {row})",
                        column="X", key="--data")  # fmt: skip
    columns = {k: v for k, v in found.items() if k != "X" and v.shape[:1] == (len(X),)}
    ids, id_name, said = _ids(
        columns, len(X), id_column or ("ids" if "ids" in columns else None), schema, str(path)
    )
    return Rows(X, np.asarray(ids), "id" if id_name == "ids" else id_name, [said])


def _text_column_rows(
    path: Path, schema: dict[str, Any], id_column: str | None, column: str, what: str
) -> Rows:
    """Rows of one text column of a CSV/TSV file (``what``: the column's role), split into
    tokens as the run's file was; an empty text is an error naming its line."""
    from mlcli.data.reading import as_text, listing, read_table
    from mlcli.data.textfiles import tokenized

    text = schema["text"]
    table = read_table(str(path), str(text.get("sep") or ","), "--data")
    table.column(column, f"{what} ", key="--data")
    texts = [str(t) for t in as_text(table[column]).tolist()]
    tokens = tokenized(
        str(path), column, texts, table.lines, text["tokenizer"], text["lowercase"], "--data"
    )
    named = [text["id_column"]] if text.get("id_column") else []
    ids, id_name, said = _ids(
        table.cells, len(texts), id_column, {"id_columns": named}, str(path), "dataset.id_column"
    )
    notes = []
    extra = [c for c in table.columns if c not in (column, id_name)]
    if extra:
        notes.append(f"columns not used by the model (ignored): {listing(extra)}")
    notes.append(said)
    return Rows(_objects(tokens), np.asarray(ids), id_name, notes)


def _objects(rows: list[list[str]]) -> np.ndarray:
    """A list of token rows as a 1-D object array (one row of tokens a cell)."""
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out


def read_text_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """A CSV/TSV file with the run's text column (``dataset.text``; its labels, if any, are
    ignored): ``X`` holds each text's raw tokens."""
    return _text_column_rows(path, schema, id_column, str(schema["text"]["column"]), "text")


def read_source_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """Sources to decode: the run's source column (``dataset.source``) of a CSV/TSV file, or,
    for a run trained on two aligned files, one sentence a line."""
    text = schema["text"]
    if not text.get("lines"):
        return _text_column_rows(path, schema, id_column, str(text["column"]), "source")
    from mlcli.data.reading import existing_file
    from mlcli.data.textfiles import tokenized

    file = existing_file(str(path), "--data")
    try:
        lines = file.read_text(encoding="utf-8-sig").removesuffix("\n").split("\n")
    except UnicodeDecodeError:
        raise DataError(
            str(path), "is not UTF-8 text", fix="Save it as UTF-8", key="--data"
        ) from None
    lines = [line.removesuffix("\r") for line in lines]
    tokens = tokenized(str(path), None, lines, np.arange(1, len(lines) + 1), text["tokenizer"],
                       text["lowercase"], "--data")  # fmt: skip
    if id_column is not None:
        raise PredictError(f"--id-column {id_column}: {path} is one sentence a line, no columns")
    return Rows(_objects(tokens), np.arange(len(tokens)), "id", ["ids are line numbers - 1"])


def read_conll_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """A CoNLL-style file of sentences to tag: one token a line (alone, or with the fields of
    the training file, its tags then ignored), a blank line between sentences; the ids are the
    sentences' numbers (0, 1, ...)."""
    from mlcli.data.textfiles import conll_sentences

    text = schema["text"]
    column = int(text.get("token_column") or 0)
    sep = text.get("sep")
    sep = None if sep is None else {"tab": "\t", "\\t": "\t"}.get(sep, sep)

    def first_line(fields: list[str], number: int, line: str) -> None:
        if len(fields) > 1 and not -len(fields) <= column < len(fields):
            raise DataError(
                str(path),
                f"line {number} has {len(fields)} fields, no token field {column} (the run's "
                "dataset.token_column)",
                line=number,
                fix="Write one token a line, or the fields of the training file",
                key="--data",
            )

    sentences, starts = conll_sentences(str(path), sep, first_line, "--data")
    if id_column is not None:
        raise PredictError(f"--id-column {id_column}: a CoNLL file has no columns; its "
                           "sentences are numbered")  # fmt: skip
    pick = 0 if len(sentences[0][0]) == 1 else column
    tokens = [[fields[pick] for fields in sentence] for sentence in sentences]
    if text["lowercase"]:
        tokens = [[t.lower() for t in sentence] for sentence in tokens]
    notes = [f"ids are the sentences' numbers (0, 1, ...; sentence 0 starts at line {starts[0]})"]
    if len(sentences[0][0]) > 1:
        notes.append(f"tokens from field {column} of each line (the other fields are ignored)")
    return Rows(_objects(tokens), np.arange(len(tokens)), "id", notes)


def read_picture_rows(path: Path, schema: dict[str, Any], id_column: str | None) -> Rows:
    """A folder of pictures (recursively; labelled by name or folder, or not at all), decoded
    as the run's were (its channels and size): each picture's file stem is its id (``Id``)."""
    from mlcli.data.images import folder_pictures

    if id_column is not None:
        raise PredictError(
            f"--id-column {id_column}: a folder of pictures has no columns; each picture's id "
            "is its file name without the extension"
        )
    pictures = schema["pictures"]
    size = (int(pictures["size"][0]), int(pictures["size"][1]))
    files, X = folder_pictures(path, int(pictures["channels"]), size, "--data")
    ids = [f.stem for f in files]
    notes = [f"{len(files)} pictures in {path}, ids are the file names without extension"]
    if len(set(ids)) < len(ids):  # the same name in two subfolders: the path tells them apart
        ids = [str(f.relative_to(path).with_suffix("")) for f in files]
        notes[0] = f"{len(files)} pictures in {path}, ids are their paths in it without extension"
    return Rows(X, np.asarray(ids, dtype=object), "Id", notes)


READERS: dict[str, Callable[[Path, dict[str, Any], str | None], Rows]] = {
    "csv": read_csv_rows,
    "npz": read_npz_rows,
    "text": read_text_rows,
    "tagged": read_conll_rows,
    "pairs": read_source_rows,
    "pictures": read_picture_rows,
}
"""A reader per kind of prediction file: a text run's (``text``: a CSV text column,
``tagged``: CoNLL sentences, ``pairs``: sources to decode), a picture run's folder
(``pictures``), else by its suffix (``.npz``, else CSV)."""


TTA_SEED = 0
"""The seed of ``--tta``'s augmented views (a prediction repeats exactly)."""


def picture_views(predictor: Any, X: np.ndarray, schema: dict[str, Any], tta: int) -> np.ndarray:
    """The final model's class probabilities on pictures ``X`` (``(N, C, H, W)`` in [0, 1])
    averaged over ``tta`` views: the pictures as they are, then ``tta - 1`` views augmented by
    the run's training augmentation (seeded by :data:`TTA_SEED`; torch's global generator is
    left as it was). ``tta=1`` is the plain prediction."""
    prediction = predictor.predict(X)
    if tta == 1:
        return np.asarray(prediction)
    import torch
    from omegaconf import OmegaConf

    from mlcli.config.targets import factory

    augment = factory(OmegaConf.create(schema["pictures"]["augment"]), "augment")()
    total = np.asarray(prediction, dtype=np.float64)
    pixels = torch.from_numpy(X)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TTA_SEED)
        for _ in range(tta - 1):
            view = augment(pixels).numpy().astype(np.float32, copy=False)
            total += predictor.predict(view)
    return total / tta


def check_tta(tta: int, schema: dict[str, Any]) -> None:
    """Refuse ``--tta`` values that cannot be served: below 1, a run that is not on pictures,
    or views of a run trained without augmentation."""
    if tta < 1:
        raise PredictError(f"--tta {tta}: give the number of views to average, 1 or more")
    if tta == 1:
        return
    pictures = schema.get("pictures")
    if not pictures:
        raise PredictError(
            f"--tta {tta} averages augmented views of pictures; this run's data "
            f"({schema.get('dataset')}) are not pictures: leave --tta out"
        )
    if not pictures.get("augment"):
        raise PredictError(
            f"--tta {tta}: the run trained without augmentation (augment=none), so there are no "
            "augmented views to average; leave --tta out, or train with augment=flip_crop "
            "(or standard, randaugment)"
        )


def classification_columns(
    prediction: np.ndarray, schema: dict[str, Any], proba: bool
) -> dict[str, np.ndarray]:
    """Class names (or, ``proba``, one probability column per class, named by the class)."""
    names = [str(n) for n in schema.get("class_names") or range(prediction.shape[1])]
    if proba:
        return {name: prediction[:, k] for k, name in enumerate(names)}
    return {str(schema["target_base"]): np.asarray(names, dtype=object)[prediction.argmax(1)]}


def regression_columns(
    prediction: np.ndarray, schema: dict[str, Any], proba: bool
) -> dict[str, np.ndarray]:
    """Values in the target's units."""
    if proba:
        raise PredictError("--proba is for classification runs; this run is a regression")
    return {str(schema["target_base"]): prediction}


ROW = "_row"
"""A writer's column giving each output row's input row, when a row gives several (one a
token): ``predict`` repeats the ids by it and leaves it out of the file."""


def tagging_columns(
    prediction: np.ndarray, schema: dict[str, Any], proba: bool
) -> dict[str, np.ndarray]:
    """One row a token: its index in the sentence and its tag's name (``proba``: one
    probability column per tag), from per-token probabilities ``(N, T, C)`` (NaN past each
    sentence's end)."""
    names = [str(n) for n in schema.get("class_names") or range(prediction.shape[2])]
    rows, index = np.nonzero(~np.isnan(prediction[:, :, 0]))
    kept = prediction[rows, index]
    columns: dict[str, np.ndarray] = {ROW: rows, "token_index": index}
    if proba:
        return columns | {name: kept[:, k] for k, name in enumerate(names)}
    return columns | {"tag": np.asarray(names, dtype=object)[kept.argmax(1)]}


def seq2seq_columns(
    prediction: np.ndarray, schema: dict[str, Any], proba: bool
) -> dict[str, np.ndarray]:
    """Each source's decoded text."""
    if proba:
        raise PredictError("--proba is for classification and tagging runs; this run decodes text")
    return {str(schema["target_base"]): prediction}


WRITERS: dict[str, Callable[[np.ndarray, dict[str, Any], bool], dict[str, np.ndarray]]] = {
    "classification": classification_columns,
    "regression": regression_columns,
    "tagging": tagging_columns,
    "seq2seq": seq2seq_columns,
}
"""A writer per task: the prediction's output columns (after the id; :data:`ROW` when a row
gives several)."""


@dataclass
class Predicted:
    """What ``predict`` wrote: where, how many rows, its columns, notes."""

    out: Path
    n_rows: int
    columns: list[str]
    notes: list[str]


def best_run(sweep_dir: Path) -> tuple[Path, str]:
    """The run dir of the report's top configuration in ``sweep_dir`` (by the runs' selection
    metric) that has saved models; and a note saying which it is."""
    from mlcli.report.aggregate import ReportError, ReportOptions, aggregate
    from mlcli.report.collect import collect

    try:
        agg = aggregate(collect([sweep_dir]), ReportOptions())
    except ReportError as error:
        raise PredictError(f"--best: {error}") from None
    for group in agg.table.index:
        runs = agg.runs[(agg.runs["group"] == group) & (agg.runs["state"] == "COMPLETED")]
        for shown in runs["run_dir"]:
            path = Path(str(shown))
            if (path / rundir.MODELS_DIR / "schema.json").is_file():
                label = agg.labels.get(group, "")
                return (
                    path,
                    f"--best: {path} (rank {agg.table.loc[group, 'rank']} by "
                    f"{agg.rank_metric}{': ' + label if label else ''})",
                )
    raise PredictError(f"--best: no completed run under {sweep_dir} has saved models")


def predict(
    run_dir: Path,
    data: Path,
    out: Path,
    *,
    id_column: str | None = None,
    proba: bool = False,
    fmt: str | None = None,
    best: bool = False,
    allow: Sequence[str] = (),
    tta: int = 1,
) -> Predicted:
    """Predict ``data`` with the final model of the run in ``run_dir`` (``best``: the top run of
    the sweep in ``run_dir``) and write ``out`` (``fmt``: csv | parquet; default from the
    suffix). ``allow``: modules whose callables the run's model config may name (``--allow``,
    as ``allow_targets`` for ``train``; the run dir's own ``allow_targets`` admit nothing). A
    picture run reads a folder of pictures; ``tta`` averages that many views of them
    (:func:`picture_views`)."""
    from mlcli.config.allowlist import entry_problem

    for entry in allow:
        problem = entry_problem(entry)
        if problem is not None:
            raise PredictError(f"--allow {entry}: {problem}")
    notes: list[str] = []
    if best:
        run_dir, said = best_run(run_dir)
        notes.append(said)
    kind = fmt or ("parquet" if out.suffix == ".parquet" else "csv")
    if kind not in ("csv", "parquet"):
        raise PredictError(f"--format {kind}: choose csv or parquet")
    if out.is_dir():
        raise PredictError(f"--out {out}: is a directory; give a file name (e.g. {out}/sub.csv)")
    schema = _predictable_schema(run_dir)
    writer = WRITERS[str(schema.get("task"))]
    check_tta(tta, schema)
    text = schema.get("text")
    if text:
        reader = READERS[str(text["kind"])]
    elif schema.get("pictures"):
        reader = READERS["pictures"]
    else:
        reader = READERS["npz" if data.suffix == ".npz" else "csv"]
    rows = reader(data, schema, id_column)
    notes.extend(rows.notes)
    prediction = _prediction(_load_predictor(run_dir, bool(text), allow), rows, schema, tta, notes)
    produced = writer(prediction, schema, proba)
    repeat = produced.pop(ROW, None)
    ids = rows.ids if repeat is None else rows.ids[repeat]
    columns = {rows.id_name: ids, **produced}
    _write(out, columns, kind)
    return Predicted(out, len(ids), list(columns), notes)


def _predictable_schema(run_dir: Path) -> dict[str, Any]:
    """The run's input schema, if ``predict`` reads its inputs and writes its task."""
    try:
        schema = read_schema(run_dir)
    except ModelFilesError as error:
        raise PredictError(str(error)) from None
    text = schema.get("text")
    if not text and (schema.get("variable_length") or schema.get("vocab_size") is not None):
        raise PredictError(
            "predict reads fixed-size inputs and the user's text (dataset=text|tagged|pairs); "
            "this run's are sequences of another kind (a text run saved before predict read "
            "text: train it again, mlcli train <the same overrides> --rerun)"
        )
    if str(schema.get("task")) not in WRITERS:
        raise PredictError(f"predict writes classification, regression, tagging and seq2seq; "
                           f"this run is a {schema.get('task')} run")  # fmt: skip
    return schema


def _load_predictor(run_dir: Path, text: bool, allow: Sequence[str]) -> Any:
    """The run's final model: in numpy where :mod:`mlcli.inference` serves it (no torch
    import), else rebuilt with torch."""
    from mlcli.inference import load_array_predictor

    try:
        fast = None if text else load_array_predictor(run_dir)
        if fast is not None:
            return fast
        from mlcli.engine.saved import load_predictor

        return load_predictor(run_dir, allow)
    except ModelFilesError as error:
        raise PredictError(str(error)) from None


def _prediction(
    predictor: Any, rows: Rows, schema: dict[str, Any], tta: int, notes: list[str]
) -> Any:
    """The predictor applied to the rows as their kind needs (text, pictures, a matrix)."""
    if schema.get("text"):
        from mlcli.engine.saved import TextPredictor

        assert isinstance(predictor, TextPredictor)
        try:
            prediction = predictor.predict(list(rows.X))
        except ValueError as error:  # an ensemble of models that cannot decode together
            raise PredictError(str(error)) from None
        if predictor.cut:
            notes.append(f"{predictor.cut} rows longer than the run's longest training row "
                         "were cut to its length")  # fmt: skip
        return prediction
    if schema.get("pictures"):
        if tta > 1:
            notes.append(f"probabilities averaged over {tta} views (1 plain, {tta - 1} augmented)")
        return picture_views(predictor, rows.X, schema, tta)
    return predictor.predict(rows.X)


def _write(out: Path, columns: dict[str, np.ndarray], kind: str) -> None:
    """The predictions as CSV (the csv module, quoting only what needs it) or Parquet
    (pyarrow), written atomically."""
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: _arrow_column(values) for name, values in columns.items()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
    else:
        import csv

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(list(columns))
        writer.writerows(zip(*(np.asarray(v).tolist() for v in columns.values()), strict=True))
        data = text.getvalue().encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_bytes(out, data)


def _arrow_column(values: np.ndarray) -> Any:
    """One output column as an Arrow array (an object column of names or texts as strings)."""
    import pyarrow as pa

    values = np.asarray(values)
    if values.dtype.kind in "OUT":
        return pa.array([None if v is None else str(v) for v in values.tolist()], pa.string())
    return pa.array(values)
