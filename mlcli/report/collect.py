"""Find run dirs and read them into two frames: one row per run, and every result row (long form).

A run dir is any directory holding ``status.json``. Runs may be written while they are read:
every file is replaced atomically by its writer, so a reader sees a whole old file or a whole new
one; leftover temporary files (``.name.*.tmp``) are never read; a run dir whose other files are
missing or unreadable is still listed, with the state its status gives (or ``UNKNOWN``).

Results are read columnar (pyarrow, only the columns needed, strings dictionary-encoded) and
concatenated once, so the cost is one small read per run dir plus vectorized work on the rows.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlcli.results import CONFIG_FILE, RESULTS_FILE, STATUS_FILE
from mlcli.sweep import LINK_FILE, linked_run_dir

READ_COLUMNS = ("fold", "epoch", "split", "metric", "value")
UNKNOWN_STATE = "UNKNOWN"
_SAFE_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ReportError(ValueError):
    """Nothing to report, or a report option that does not fit the runs found."""


@dataclass
class Collected:
    """What was read: ``runs`` (one row per run dir) and ``results`` (long form)."""

    runs: pd.DataFrame
    """Columns: run_dir (as shown), state, run_key, metric, task, n_folds, folds_completed,
    overrides, error (one line or ""), config (flattened dict: dotted keys + group choices +
    ``data_files``: the data files' short content hashes, when the run recorded them),
    config_complete (False when config.yaml was unreadable and the config comes from overrides)."""
    results: pd.DataFrame
    """Columns: run (row number in ``runs``), fold, epoch, split, metric, value."""
    notes: list[str] = field(default_factory=list)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}``; lists become JSON text (hashable)."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = json.dumps(node) if isinstance(node, list) else node
    return out


def _natural_key(path: str) -> list[Any]:
    """Sort ``sweep/2`` before ``sweep/10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def find_run_dirs(roots: list[Path]) -> list[tuple[Path, str]]:
    """Every run dir below ``roots``: (resolved path, path as shown), naturally sorted, unique.

    The shown path starts with the root as the user gave it, so output does not depend on where
    the command runs from (and hidden dirs such as Hydra's ``.hydra`` are not searched). A job
    dir whose job reused an earlier run (``run_link.json``: skipped, or continued elsewhere)
    brings that run in, so a sweep dir's report has every job of the sweep.
    """
    found: dict[Path, str] = {}
    for root in roots:
        if not root.exists():
            raise ReportError(
                f"{root}: no such file or directory (pass the run or sweep dirs to read; "
                "`mlcli train` writes them below outputs/)"
            )
        if not root.is_dir():
            raise ReportError(f"{root}: not a directory (pass a run dir or a folder of runs)")
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            if STATUS_FILE in files:
                path = Path(directory)
                found.setdefault(path.resolve(), path.as_posix())
            elif LINK_FILE in files:
                linked = linked_run_dir(Path(directory))
                if (linked / STATUS_FILE).is_file():
                    found.setdefault(linked.resolve(), linked.as_posix())
    return sorted(found.items(), key=lambda item: _natural_key(item[1]))


def _error_text(error: Any) -> str:
    if not error:
        return ""
    if isinstance(error, dict):
        text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    else:
        text = str(error)
    return " ".join(text.split())


def _override_config(overrides: list[str]) -> dict[str, Any]:
    """A config rebuilt from overrides, for a run dir whose config.yaml cannot be read."""
    config: dict[str, Any] = {}
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and not key.startswith("hydra"):
            try:
                config[key] = yaml.load(value, Loader=_SAFE_YAML_LOADER)
            except yaml.YAMLError:
                config[key] = value
    return config


def _read_run(path: Path, shown: str) -> tuple[dict[str, Any], str | None]:
    """One run dir's row (never raises for a missing or half-made run dir) and a note."""
    note = None
    complete = True
    try:
        status = json.loads((path / STATUS_FILE).read_text(encoding="utf-8"))
        if not isinstance(status, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        status = {"state": UNKNOWN_STATE, "error": f"status.json unreadable: {error}"}
    overrides = [str(o) for o in status.get("overrides") or []]
    try:
        loaded = yaml.load(
            (path / CONFIG_FILE).read_text(encoding="utf-8"), Loader=_SAFE_YAML_LOADER
        )
        config = flatten(loaded if isinstance(loaded, dict) else {})
    except (OSError, yaml.YAMLError):
        config = _override_config(overrides)
        complete = False
        note = f"{shown}: {CONFIG_FILE} missing or unreadable; its config comes from its overrides"
    config.update({str(k): str(v) for k, v in (status.get("choices") or {}).items()})
    files = status.get("data_files")  # runs on other versions of a data file are not replicates
    if isinstance(files, dict) and files:
        config["data_files"] = " ".join(f"{k}:{str(v)[:12]}" for k, v in sorted(files.items()))
    row = {
        "run_dir": shown,
        "state": str(status.get("state") or UNKNOWN_STATE),
        "run_key": status.get("run_key"),
        "metric": status.get("metric"),
        "task": status.get("task"),
        "n_folds": status.get("n_folds"),
        "folds_completed": list(status.get("folds_completed") or []),
        "overrides": overrides,
        "error": _error_text(status.get("error")),
        "config": config,
        "config_complete": complete,
    }
    return row, note


def _schema() -> Any:
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


def _read_results(path: Path) -> Any:
    """The results table of one run dir (pyarrow), or None when there is none (yet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # ParquetFile.read, one thread per file: ~4× less overhead than read_table on small files.
        with pq.ParquetFile(path / RESULTS_FILE, read_dictionary=["split", "metric"]) as file:
            return file.read(columns=list(READ_COLUMNS), use_threads=False)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException):
        return "unreadable"


def collect(roots: list[Path], threads: int = 8) -> Collected:
    """Read every run dir below ``roots`` into a :class:`Collected`."""
    import pyarrow as pa

    dirs = find_run_dirs(roots)
    if not dirs:
        raise ReportError(
            f"no runs found below {', '.join(map(str, roots))} (a run dir holds {STATUS_FILE}); "
            "run `mlcli train` first, or pass the sweep dir"
        )
    notes: list[str] = []
    # Status before results: a run that is COMPLETED in its status has its final results on disk.
    rows = []
    for path, shown in dirs:
        row, note = _read_run(path, shown)
        rows.append(row)
        if note:
            notes.append(note)
    # pyarrow releases the GIL while it reads, so a few threads overlap the file system's latency.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        tables = list(pool.map(_read_results, [path for path, _ in dirs]))
    for index, table in enumerate(tables):
        if isinstance(table, str):
            notes.append(f"{dirs[index][1]}: {RESULTS_FILE} unreadable; its results are left out")
    results = _to_frame(tables)
    del tables
    pa.default_memory_pool().release_unused()  # the per-file buffers: ~40% of the peak memory
    return Collected(pd.DataFrame(rows), results, notes)


def _to_frame(tables: list[Any]) -> pd.DataFrame:
    """One long frame (run, fold, epoch, split, metric, value) from the per-run tables."""
    import numpy as np
    import pyarrow as pa

    pieces = []
    schema = _schema()
    for index, table in enumerate(tables):
        if table is not None and not isinstance(table, str) and table.num_rows:
            table = table.select(list(READ_COLUMNS)).cast(schema)
            run = pa.array(np.full(table.num_rows, index, dtype=np.int32))
            pieces.append(table.append_column("run", run))
    if not pieces:
        return pd.DataFrame(
            {
                "run": pd.Series(dtype="int32"),
                "fold": pd.Series(dtype="int32"),
                "epoch": pd.Series(dtype="int32"),
                "split": pd.Categorical([]),
                "metric": pd.Categorical([]),
                "value": pd.Series(dtype="float64"),
            }
        )
    results = pa.concat_tables(pieces).to_pandas()  # dictionaries → one categorical each
    return results[["run", *READ_COLUMNS]]
