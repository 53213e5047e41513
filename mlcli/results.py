"""The results schema, writes that cannot be torn, and collecting run dirs into one frame.

A run dir holds ``config.yaml``, ``overrides.yaml``, ``status.json`` and ``results.parquet``
(long form: one row per run_key, fold, epoch, split, metric, with ``value``). Every file is
written to a temporary name in the same directory, fsynced and ``os.replace``d, so a reader sees
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULT_COLUMNS = ("run_key", "fold", "epoch", "split", "metric", "value")
RESULTS_FILE = "results.parquet"
STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"

STATES = ("RUNNING", "COMPLETED", "FAILED", "DIVERGED", "INTERRUPTED", "PRUNED", "SKIPPED")


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new temp file next to ``path`` (``.name.<random>.tmp``), opened for writing.

    Created with mode 0o666 and the umask applied, as ``open`` would (``tempfile.mkstemp``
    makes 0600 files, which an ``os.replace`` would then leave on the final file).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 2^32 names
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader or crash ever sees a partial file.

    The file gets the permissions a plain ``open`` gives (0o666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Persist the rename itself.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic write of a text file (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write of a JSON document."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON document written by :func:`write_json`."""
    with open(path, encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


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


class OrderedWriter:
    """A run's writes, done one after another in the order given, on a thread of their own.

    Writing waits on the disk (two fsyncs a file); meanwhile the caller goes on (a run sets up
    its data and folds). The files on disk are always a prefix of what was submitted, each file
    whole, as with synchronous writes; a write that a later one of the same name supersedes
    before it starts is dropped (folds that end together). :meth:`drain` waits for every write
    and re-raises the first error.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._latest: dict[str, Future[None]] = {}

    def submit(self, write: Callable[..., None], *args: Any, replaces: str | None = None) -> None:
        """Queue ``write(*args)``; its arguments must not change afterwards. A write submitted
        with ``replaces=NAME`` drops the previous one of that name if it has not started (it
        rewrites the same files with more). Raises the error of an earlier write that failed (a
        full disk is not noticed only at the end of a run)."""
        for future in self._pending:
            if future.done() and not future.cancelled() and future.exception() is not None:
                self.drain()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcli-writer")
        if replaces is not None and replaces in self._latest:
            self._latest[replaces].cancel()  # a no-op once it runs
        future = self._pool.submit(write, *args)
        self._pending.append(future)
        if replaces is not None:
            self._latest[replaces] = future

    def drain(self) -> None:
        """Wait until everything submitted is on disk; raise the first write's error, if any."""
        pending, self._pending = self._pending, []
        self._latest = {}
        try:
            for future in pending:
                if not future.cancelled():
                    future.result()
        finally:
            for future in pending:
                future.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read a results file back into rows (used to resume a partial run)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows
