"""``results.parquet``: a run's results in long form, one row per (run_key, fold, epoch, split,
metric) with its ``value``; written whole after every fold, read back typed. The split
:data:`STEP_SPLIT` counts optimizer steps in its ``epoch`` column.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.rundir.files import RESULTS_FILE, Unreadable, atomic_write_bytes, read_bytes
from mlcli.rundir.status import read_status

RESULT_COLUMNS = ("run_key", "fold", "epoch", "split", "metric", "value")
STEP_SPLIT = "train_step"
"""The split of per-optimizer-step rows (``train_step/lr``: the learning rate at each epoch's
first step and wherever it changes): their ``epoch`` column holds the step, counted from 1 over
the fold. Every other split's rows are per epoch."""


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write long-form result rows as a Parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "run_key": pa.array([r["run_key"] for r in rows], pa.string()),
            "fold": pa.array([r["fold"] for r in rows], pa.int32()),
            "epoch": pa.array([r["epoch"] for r in rows], pa.int32()),
            "split": pa.array([r["split"] for r in rows], pa.string()),
            "metric": pa.array([r["metric"] for r in rows], pa.string()),
            "value": pa.array([r["value"] for r in rows], pa.float64()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read a results file back into rows (used to resume a partial run)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


RESULT_READ_COLUMNS = ("fold", "epoch", "split", "metric", "value")
"""The results columns the readers need (``run_key`` is not needed: one run a file)."""


@functools.cache
def _results_schema() -> Any:
    """The columns the readers return, with their types."""
    import pyarrow as pa

    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            ("fold", pa.int32()),
            ("epoch", pa.int32()),
            ("split", text),
            ("metric", text),
            ("value", pa.float64()),
        ]
    )


def _check_schema(path: Path, schema: Any) -> None:
    import pyarrow as pa

    def text(t: Any) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))

    checks = {
        "fold": (pa.types.is_integer, "integers"),
        "epoch": (pa.types.is_integer, "integers"),
        "split": (text, "strings"),
        "metric": (text, "strings"),
        "value": (lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "numbers"),
    }
    missing = [name for name in RESULT_READ_COLUMNS if schema.get_field_index(name) < 0]
    if missing:
        raise Unreadable(path, f"not an mlcli results table (no column {', '.join(missing)})")
    for name, (ok, wanted) in checks.items():
        found = schema.field(name).type
        if not ok(found):
            raise Unreadable(path, f"column {name} holds {found}, not {wanted}")


def read_results_table(run_dir: Path, folds_completed: tuple[int, ...] = ()) -> Any:
    """The results of the run in ``run_dir`` (a pyarrow Table with :data:`RESULT_READ_COLUMNS`:
    fold and epoch int32, split and metric dictionary-encoded, value float64), or None when
    there are none yet.

    Raises :class:`Unreadable` for a file that is not such a table: columns missing or of other
    types, nulls, or no rows for a fold that ``folds_completed`` (its status) says is done.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(run_dir) / RESULTS_FILE
    data = read_bytes(path, limit=None)
    if data is None:
        return None

    def parquet(**options: Any) -> Any:
        return pq.ParquetFile(pa.BufferReader(data), **options)

    try:
        try:
            # ParquetFile.read, one thread per file: ~4× less overhead than read_table.
            with parquet(read_dictionary=["split", "metric"]) as file:
                table = file.read(columns=list(RESULT_READ_COLUMNS), use_threads=False)
        except KeyError:  # a column is missing: say which
            with parquet() as file:
                _check_schema(path, file.schema_arrow)
            raise
        if not table.schema.equals(_results_schema()):  # what mlcli writes: nothing to check
            _check_schema(path, table.schema)
            table = table.cast(_results_schema())
        if any(table.column(name).null_count for name in RESULT_READ_COLUMNS):
            raise Unreadable(path, "holds empty (null) entries, which mlcli never writes")
    except (OSError, KeyError, pa.ArrowException) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "invalid"
        raise Unreadable(path, f"not a readable Parquet table ({first})") from None
    if folds_completed:
        present = set(pc.unique(table.column("fold")).to_pylist())
        lost = sorted(set(folds_completed) - present)
        if lost:
            raise Unreadable(
                path, f"has no rows for fold(s) {lost}, which status.json lists as completed"
            )
    return table


def read_result_rows(
    run_dir: Path, run_key: str, folds: set[int] | None = None
) -> list[dict[str, Any]]:
    """The result rows (long form, as :func:`mlcli.rundir.write_results` takes them) of the run
    in ``run_dir``: all of them, or those of ``folds``, each of which must have rows (raises
    :class:`Unreadable` otherwise)."""
    table = read_results_table(run_dir, tuple(sorted(folds or ())))
    if table is None:
        if folds:
            raise Unreadable(Path(run_dir) / RESULTS_FILE, "missing")
        return []
    return [
        {"run_key": run_key, **row}
        for row in table.to_pylist()
        if folds is None or row["fold"] in folds
    ]


@dataclass(frozen=True)
class Kept:
    """What a run continued in its dir keeps from earlier attempts."""

    folds: set[int]
    """Finished folds whose results are on disk: not computed again."""
    rows: list[dict[str, Any]]
    """Their result rows."""
    notes: list[str]
    """What could not be trusted, and what is computed again instead."""


def kept_folds(run_dir: Path, run_key: str) -> Kept:
    """The finished folds of run ``run_key`` in ``run_dir`` that a new attempt keeps.

    A fold is kept when the status lists it as completed and the results file holds its rows.
    A status or results file that cannot be read keeps nothing (a note says why): those folds
    are computed again, from scratch (a finished fold's checkpoint is deleted once its results
    are on disk), so such a run ends COMPLETED instead of failing on every attempt.
    """
    try:
        status = read_status(run_dir)
    except Unreadable as error:
        return Kept(set(), [], [f"{error}; the run starts afresh"])
    if status is None or status.run_key != run_key or not status.folds_completed:
        return Kept(set(), [], [])
    folds = set(status.folds_completed)
    try:
        rows = read_result_rows(run_dir, run_key, folds)
    except Unreadable as error:
        again = ", ".join(map(str, sorted(folds)))
        return Kept(set(), [], [f"{error}; fold(s) {again} are computed again"])
    return Kept(folds, rows, [])


def done_folds(run_dir: Path, run_key: str) -> set[int]:
    """The finished folds a new attempt of run ``run_key`` in ``run_dir`` keeps (those
    :func:`kept_folds` keeps): what a stacked grid leaves out of its stack."""
    return kept_folds(run_dir, run_key).folds
