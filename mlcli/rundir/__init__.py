"""The run dir's format: its files, written so that nothing is ever torn, and read back typed.

A run dir (Hydra's job dir) explains itself: ``config.yaml`` (the resolved config),
``overrides.yaml``, ``status.json`` (:class:`Status`: state, run key, timings, versions, folds
done, the error) and ``results.parquet`` (long form: one row per run_key, fold, epoch, split,
metric, with ``value``). A Hydra job dir whose job reused another run dir holds
``run_link.json`` instead. Every reader and writer of these files is in this package:

* :mod:`~mlcli.rundir.files`: file names, atomic writes, the ordered writer, safe reads;
* :mod:`~mlcli.rundir.status`: the status record;
* :mod:`~mlcli.rundir.results`: the results table, and the finished folds a run keeps;
* :mod:`~mlcli.rundir.links`: ``run_link.json``;
* :mod:`~mlcli.rundir.models`: ``models/``, what ``mlcli predict`` needs.

Light: no torch, no pandas (pyarrow is imported by the results readers only).
"""

from __future__ import annotations

from mlcli.rundir.files import (
    CONFIG_FILE,
    LINK_FILE,
    MAX_DOCUMENT_BYTES,
    OVERRIDES_FILE,
    RESULTS_FILE,
    RUN_FILES,
    STATUS_FILE,
    OrderedWriter,
    Unreadable,
    atomic_write_bytes,
    atomic_write_text,
    read_bytes,
    read_config,
    read_json,
    read_json_object,
    read_yaml_mapping,
    walk,
    write_json,
)
from mlcli.rundir.links import linked_run_dir, read_link, write_link
from mlcli.rundir.models import MODELS_DIR, ModelFilesError
from mlcli.rundir.results import (
    RESULT_COLUMNS,
    RESULT_READ_COLUMNS,
    Kept,
    done_folds,
    kept_folds,
    read_result_rows,
    read_results,
    read_results_table,
    write_results,
)
from mlcli.rundir.status import (
    STATES,
    UNKNOWN_STATE,
    RunError,
    Status,
    now,
    parse_status,
    read_status,
    set_state,
    write_status,
)

__all__ = [
    "CONFIG_FILE",
    "LINK_FILE",
    "MAX_DOCUMENT_BYTES",
    "MODELS_DIR",
    "OVERRIDES_FILE",
    "RESULTS_FILE",
    "RESULT_COLUMNS",
    "RESULT_READ_COLUMNS",
    "RUN_FILES",
    "STATES",
    "STATUS_FILE",
    "UNKNOWN_STATE",
    "Kept",
    "ModelFilesError",
    "OrderedWriter",
    "RunError",
    "Status",
    "Unreadable",
    "atomic_write_bytes",
    "atomic_write_text",
    "done_folds",
    "kept_folds",
    "linked_run_dir",
    "now",
    "parse_status",
    "read_bytes",
    "read_config",
    "read_json",
    "read_json_object",
    "read_link",
    "read_result_rows",
    "read_results",
    "read_results_table",
    "read_status",
    "read_yaml_mapping",
    "set_state",
    "walk",
    "write_json",
    "write_link",
    "write_results",
    "write_status",
]
