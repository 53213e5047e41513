"""Reading run files back into typed values; garbage on disk never crashes a command.

Everything mlcli reads back from an outputs tree (``status.json``, ``config.yaml``,
``results.parquet``, ``run_link.json``, ``sweep.json``) may be garbage: a file from another
tool, a hand edit, a truncated copy, a FIFO or a directory with the name of a run file. Every
such read goes through this module, with one rule:

* **Only regular files are opened** (``open`` of a FIFO blocks until a writer comes; a device, a
  directory or a symlink loop is no run file), and no document above :data:`MAX_DOCUMENT_BYTES`.
* **A file is read whole into the values mlcli wrote, or not at all**: not UTF-8, not JSON or
  YAML, nested too deep, not an object, a field of the wrong type, a results table without the
  columns and types mlcli writes → :class:`Unreadable`, whose message names the file and what is
  wrong. A missing file is ``None``, never an error.

What an unreadable file means is the caller's decision, always with a note naming the file: the
report lists the run as UNKNOWN (status) or leaves its results out, the run index leaves the run
out, a run that continues recomputes the folds it can no longer trust.

This module stays light (no torch/pandas; pyarrow is imported by the results readers only).
"""

from __future__ import annotations

import functools
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.results import CONFIG_FILE, RESULTS_FILE, STATUS_FILE

MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
"""The largest JSON or YAML document read (mlcli writes a few KB; a sweep manifest of 10,000
jobs is ~3 MB)."""
UNKNOWN_STATE = "UNKNOWN"
RESULT_READ_COLUMNS = ("fold", "epoch", "split", "metric", "value")
"""The results columns the readers need (``run_key`` is not needed: one run a file)."""


class Unreadable(ValueError):
    """A run file that exists but is not what mlcli writes; ``str()`` names the file and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def read_bytes(path: Path, limit: int | None = MAX_DOCUMENT_BYTES) -> bytes | None:
    """The bytes of the regular file ``path`` (symlinks followed), or None when there is none.

    The file is checked before it is opened (a FIFO is never opened) and again once open, with
    ``O_NONBLOCK``, so nothing swapped in between can block the read.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:  # a symlink loop, a permission denied on the way
        raise Unreadable(path, f"cannot be read ({_reason(error)})") from None
    if not stat.S_ISREG(mode):
        raise Unreadable(path, f"{_kind(mode)}, not a file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # replaced between the two calls: as if it were not there yet
    except OSError as error:
        raise Unreadable(path, f"cannot be read ({_reason(error)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(path, f"{_kind(info.st_mode)}, not a file")
        if limit is not None and info.st_size > limit:
            raise Unreadable(
                path, f"{info.st_size:,} bytes: larger than any file mlcli writes ({limit:,})"
            )
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            return handle.read()
    except OSError as error:
        raise Unreadable(path, f"cannot be read ({_reason(error)})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unreadable(path, f"not UTF-8 text (byte {error.start})") from None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        document = json.loads(_text(path, data))
    except json.JSONDecodeError as error:
        raise Unreadable(path, f"not valid JSON ({error.msg}, line {error.lineno})") from None
    except RecursionError:
        raise Unreadable(path, "JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise Unreadable(path, f"holds {_json_type(document)}, not a JSON object")
    return document


def read_yaml_mapping(path: Path) -> dict[str, Any] | None:
    """The YAML mapping in ``path`` (safe loader: tags such as ``!!python/object`` are refused),
    or None when there is no such file."""
    import yaml

    data = read_bytes(path)
    if data is None:
        return None
    safe_loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(_text(path, data), Loader=safe_loader)
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "invalid"
        raise Unreadable(path, f"not valid YAML ({first})") from None
    except RecursionError:
        raise Unreadable(path, "YAML nested too deeply") from None
    if not isinstance(document, dict):
        raise Unreadable(path, f"holds {_json_type(document)}, not a YAML mapping")
    return document


def _json_type(value: Any) -> str:
    """``a list``, ``an object``, ``null``...: what a JSON/YAML value is, for messages."""
    if value is None:
        return "null"
    for kind, name in (
        (bool, "a boolean"),
        (int | float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "an object"),
    ):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------------------------------
# status.json


@dataclass(frozen=True)
class Status:
    """What a run's ``status.json`` says, each field of the type mlcli writes."""

    state: str
    run_key: str | None
    folds_completed: tuple[int, ...]
    n_folds: int | None
    metric: str | None
    task: str | None
    overrides: tuple[str, ...]
    choices: dict[str, str]
    error: str
    """The error in one line (``Type: message``), or ``""``."""
    started: str
    session: str | None
    document: dict[str, Any]
    """The whole document (for a runner that rewrites it)."""


def _field(path: Path, document: dict[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    """``document[key]`` (None when absent) if it is None or of one of ``kinds`` (a boolean is no
    integer here)."""
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise Unreadable(path, f"{key} is {_json_type(value)}, not {wanted}")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _ints(path: Path, key: str, value: list[Any] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Unreadable(path, f"{key} holds something other than integers")
    return tuple(value)


def _error_line(path: Path, error: Any) -> str:
    if error is None or error == "":
        return ""
    if isinstance(error, str):
        text = error
    elif isinstance(error, dict):
        kind, message = error.get("type") or "Error", error.get("message") or ""
        if not isinstance(kind, str) or not isinstance(message, str):
            raise Unreadable(path, "error.type and error.message must be strings")
        text = f"{kind}: {message}"
    else:
        raise Unreadable(path, f"error is {_json_type(error)}, not an object or a string")
    return " ".join(text.split())


def parse_status(path: Path, document: dict[str, Any]) -> Status:
    """The typed view of a status document read from ``path`` (raises :class:`Unreadable`)."""
    state = _field(path, document, "state", (str,))
    overrides = _field(path, document, "overrides", (list,)) or []
    if not all(isinstance(o, str) for o in overrides):
        raise Unreadable(path, "overrides holds something other than strings")
    choices = _field(path, document, "choices", (dict,)) or {}
    if not all(v is None or isinstance(v, str | int | float) for v in choices.values()):
        raise Unreadable(path, "choices holds something other than option names")
    n_folds = _field(path, document, "n_folds", (int,))
    return Status(
        state=state or UNKNOWN_STATE,
        run_key=_field(path, document, "run_key", (str,)),
        folds_completed=_ints(
            path, "folds_completed", _field(path, document, "folds_completed", (list,))
        ),
        n_folds=n_folds,
        metric=_field(path, document, "metric", (str,)),
        task=_field(path, document, "task", (str,)),
        overrides=tuple(overrides),
        choices={str(k): str(v) for k, v in choices.items()},
        error=_error_line(path, document.get("error")),
        started=_field(path, document, "started", (str,)) or "",
        session=_field(path, document, "session", (str,)),
        document=document,
    )


def read_status(run_dir: Path) -> Status | None:
    """The status of the run in ``run_dir``, or None when it has no status.json."""
    path = Path(run_dir) / STATUS_FILE
    document = read_json_object(path)
    return None if document is None else parse_status(path, document)


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config of the run in ``run_dir`` (``config.yaml``), or None."""
    return read_yaml_mapping(Path(run_dir) / CONFIG_FILE)


# --------------------------------------------------------------------------------------------------
# results.parquet


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
    """The result rows (long form, as :func:`mlcli.results.write_results` takes them) of the run
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


# --------------------------------------------------------------------------------------------------
# Finding run dirs


RUN_FILES = (STATUS_FILE, RESULTS_FILE, CONFIG_FILE)


def walk(root: Path, into_runs: bool = True) -> Iterator[tuple[Path, set[str]]]:
    """Every dir below ``root`` (sorted; hidden dirs such as ``.hydra`` not entered; below a run
    dir only if ``into_runs``) with the names of its entries of any kind: a directory named
    ``status.json`` is listed, not entered, so that its reader can say it is no file."""
    for directory, subdirs, files in os.walk(root):
        names = set(files)
        names.update(name for name in RUN_FILES if name in subdirs)
        if STATUS_FILE in names and not into_runs:
            subdirs[:] = []
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in RUN_FILES)
        yield Path(directory), names
