"""Find run dirs and read them into two frames: one row per run, and every result row (long form).

A run dir is any directory holding an entry named ``status.json``. Runs may be written while
they are read: every file is replaced atomically by its writer, so a reader sees a whole old
file or a whole new one; leftover temporary files (``.name.*.tmp``) are never read.

Garbage never stops a report (every read goes through :mod:`mlcli.rundir`: regular files only,
each read whole into typed values or refused), and each file refused gets one note naming it:

* a status.json that cannot be read (a FIFO or a directory, not UTF-8 or not JSON, not an
  object, a field of the wrong type) → the run is listed as UNKNOWN and never enters the numbers;
* a config.yaml that cannot be read → the run's config comes from its overrides;
* a results.parquet that is not mlcli's table (columns missing or of other types, nulls, no rows
  for a fold its status lists as done) → the run is listed, its results are left out;
* a run_link.json that is garbage or leads to no run → skipped.

Results are read columnar (pyarrow, only the columns needed, strings dictionary-encoded), for
the runs whose state can enter the numbers only, and concatenated once, so the cost is one small
read per run dir plus vectorized work on the rows.
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

from mlcli import rundir
from mlcli.rundir import CONFIG_FILE, LINK_FILE, RESULTS_FILE, STATUS_FILE, UNKNOWN_STATE, read_link
from mlcli.rundir import RESULT_READ_COLUMNS as READ_COLUMNS

_SAFE_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ReportError(ValueError):
    """Nothing to report, or a report option that does not fit the runs found."""


@dataclass
class Collected:
    """What was read: ``runs`` (one row per run dir) and ``results`` (long form)."""

    runs: pd.DataFrame
    """Columns: run_dir (as shown), state, run_key, metric, task, n_folds, n_params (of the
    model; None when the run did not record it), duration_s, folds_completed,
    overrides, error (one line or ""), config (flattened dict: dotted keys + group choices +
    ``data_files``: the data files' short content hashes, when the run recorded them),
    config_complete (False when config.yaml was unreadable and the config comes from overrides,
    or status.json was unreadable and the group choices are unknown), best_epochs (each fold's
    best epoch as early stopping recorded it, fold -> epoch; empty without early stopping),
    best_by (the metric early stopping monitored)."""
    results: pd.DataFrame
    """Columns: run (row number in ``runs``), fold, epoch, split, metric, value; the rows of the
    runs whose state can enter the numbers (COMPLETED, PRUNED) only."""
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


def find_run_dirs(roots: list[Path], notes: list[str] | None = None) -> list[tuple[Path, str]]:
    """Every run dir below ``roots``: (resolved path, path as shown), naturally sorted, unique.

    The shown path starts with the root as the user gave it, so output does not depend on where
    the command runs from (and hidden dirs such as Hydra's ``.hydra`` are not searched). A job
    dir whose job reused an earlier run (``run_link.json``: skipped, or continued elsewhere)
    brings that run in, so a sweep dir's report has every job of the sweep; a link that is
    garbage or leads to no run is skipped, with a note in ``notes`` when given.
    """
    found: dict[Path, str] = {}
    skipped: list[str] = []
    for root in roots:
        if not root.exists():
            raise ReportError(
                f"{root}: no such file or directory (pass the run or sweep dirs to read; "
                "`mlcli train` writes them below outputs/)"
            )
        if not root.is_dir():
            raise ReportError(f"{root}: not a directory (pass a run dir or a folder of runs)")
        for directory, names in rundir.walk(root):
            if STATUS_FILE in names:
                found.setdefault(directory.resolve(), directory.as_posix())
            elif LINK_FILE in names:
                shown = directory.as_posix()
                try:
                    linked = read_link(directory)
                except rundir.Unreadable as error:
                    skipped.append(f"{shown}: {LINK_FILE} unreadable ({error.reason}); skipped")
                    continue
                if linked is None:
                    continue  # removed meanwhile
                try:
                    if not os.path.lexists(linked / STATUS_FILE):
                        raise OSError("no run there")
                    resolved = linked.resolve()
                except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
                    skipped.append(
                        f"{shown}: {LINK_FILE} names {linked}, which holds no run; skipped"
                    )
                    continue
                found.setdefault(resolved, linked.as_posix())
    if notes is not None:
        notes.extend(skipped)
    return sorted(found.items(), key=lambda item: _natural_key(item[1]))


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


def _read_run(path: Path, shown: str) -> tuple[dict[str, Any], list[str]]:
    """One run dir's row and notes; never raises, whatever its files hold.

    A status.json that cannot be read (see :mod:`mlcli.rundir`) makes the run UNKNOWN, which
    never enters the numbers; a config.yaml that cannot be read is replaced by the overrides.
    """
    notes = []
    complete = True
    try:
        status = rundir.read_status(path)
        if status is None:
            raise rundir.Unreadable(path / STATUS_FILE, "missing")  # removed meanwhile
    except rundir.Unreadable as error:
        reason = f"{STATUS_FILE} unreadable ({error.reason})"
        status = rundir.Status(state=UNKNOWN_STATE, error=rundir.RunError("", reason))
        notes.append(f"{shown}: {reason}; listed as {UNKNOWN_STATE}, never in the numbers")
        complete = False  # without its group choices: it does not decide what varies
    overrides = list(status.overrides)
    try:
        loaded = rundir.read_config(path)
        problem = f"{CONFIG_FILE} missing"
    except rundir.Unreadable as error:
        loaded, problem = None, f"{CONFIG_FILE} unreadable ({error.reason})"
    if loaded is None:
        config = _override_config(overrides)
        complete = False
        notes.append(f"{shown}: {problem}; its config comes from its overrides")
    else:
        config = flatten(loaded)
    config.update(status.choices)
    files = status.data_files  # other versions of a data file: not replicates
    if files:
        config["data_files"] = " ".join(f"{k}:{str(v)[:12]}" for k, v in sorted(files.items()))
    row = {
        "run_dir": shown,
        "state": status.state,
        "run_key": status.run_key,
        "metric": status.metric,
        "task": status.task,
        "n_folds": status.n_folds,
        "n_params": status.n_params,
        "duration_s": status.duration_s,
        "folds_completed": list(status.folds_completed),
        "overrides": overrides,
        "error": status.error_line,
        "config": config,
        "config_complete": complete,
        "best_epochs": _stopped_best_epochs(status, config),
        "best_by": str(config.get("early_stopping.monitor") or status.metric),
    }
    return row, notes


def _stopped_best_epochs(status: rundir.Status, config: dict[str, Any]) -> dict[int, int]:
    """Each fold's best epoch by early stopping's monitor, by fold, as status.json records it
    (``fold_epochs``); empty for a run without early stopping."""
    if config.get("early_stopping.patience") is None:
        return {}
    found = {}
    for fold, epochs in (status.fold_epochs or {}).items():
        best = epochs.get("best") if isinstance(epochs, dict) else None
        if isinstance(best, int) and not isinstance(best, bool) and str(fold).lstrip("-").isdigit():
            found[int(fold)] = best
    return found


NUMBER_STATES = ("COMPLETED", "PRUNED")
"""The states whose results can enter the numbers (see :mod:`mlcli.report.aggregate`): only
their results are read."""


def _read_results(path: Path, folds_completed: list[int]) -> Any:
    """The results table of one run dir (pyarrow), None when there is none, or why it cannot be
    read (a string)."""
    try:
        table = rundir.read_results_table(path, tuple(folds_completed))
    except rundir.Unreadable as error:
        return error.reason
    if table is None and folds_completed:
        return f"missing, although {STATUS_FILE} lists completed folds"
    return table if table is None else per_epoch(table)


def per_epoch(table: Any) -> Any:
    """A results table without its per-step rows (split ``train_step``, whose epoch column
    counts optimizer steps): the report's curves and numbers are per epoch."""
    import pyarrow.compute as pc

    split = table.column("split")
    if not any(rundir.STEP_SPLIT in chunk.dictionary.to_pylist() for chunk in split.chunks):
        return table
    return table.filter(pc.not_equal(split.cast("string"), rundir.STEP_SPLIT))


def collect(roots: list[Path], threads: int = 8) -> Collected:
    """Read every run dir below ``roots`` into a :class:`Collected`."""
    import pyarrow as pa

    notes: list[str] = []
    dirs = find_run_dirs(roots, notes)
    if not dirs:
        raise ReportError(
            f"no runs found below {', '.join(map(str, roots))} (a run dir holds {STATUS_FILE}); "
            "run `mlcli train` first, or pass the sweep dir"
        )
    # Status before results: a run that is COMPLETED in its status has its final results on disk.
    rows = []
    for path, shown in dirs:
        row, run_notes = _read_run(path, shown)
        rows.append(row)
        notes.extend(run_notes)
    wanted = [i for i, row in enumerate(rows) if row["state"] in NUMBER_STATES]
    tables: list[Any] = [None] * len(rows)
    # pyarrow releases the GIL while it reads, so a few threads overlap the file system's latency.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        read = pool.map(_read_results, [dirs[i][0] for i in wanted],
                        [rows[i]["folds_completed"] for i in wanted])  # fmt: skip
        for index, table in zip(wanted, read, strict=True):
            tables[index] = table
    for index, table in enumerate(tables):
        if isinstance(table, str):
            notes.append(
                f"{dirs[index][1]}: {RESULTS_FILE} unreadable ({table}); its results are left out"
            )
    results = _to_frame(tables)
    del tables
    pa.default_memory_pool().release_unused()  # the per-file buffers: ~40% of the peak memory
    return Collected(pd.DataFrame(rows), results, notes)


def _to_frame(tables: list[Any]) -> pd.DataFrame:
    """One long frame (run, fold, epoch, split, metric, value) from the per-run tables."""
    import numpy as np
    import pyarrow as pa

    pieces = []
    for index, table in enumerate(tables):
        if table is not None and not isinstance(table, str) and table.num_rows:
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
