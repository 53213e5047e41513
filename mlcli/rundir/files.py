"""Run files on disk: their names, writes that cannot be torn, reads that garbage never crashes.

**Writes.** Every file is written to a temporary name in the same directory, fsynced and
``os.replace``d (:func:`atomic_write_bytes`), so a reader sees either the old file or the new
one, never half of one; a run's writes go one after another on a thread of their own
(:class:`OrderedWriter`).

**Reads.** Everything mlcli reads back from an outputs tree (``status.json``, ``config.yaml``,
``results.parquet``, ``run_link.json``, ``sweep.json``) may be garbage: a file from another
tool, a hand edit, a truncated copy, a FIFO or a directory with the name of a run file. Every
such read goes through :mod:`mlcli.rundir`, with one rule:

* **Only regular files are opened** (``open`` of a FIFO blocks until a writer comes; a device, a
  directory or a symlink loop is no run file), and no document above :data:`MAX_DOCUMENT_BYTES`.
* **A file is read whole into the values mlcli wrote, or not at all**: not UTF-8, not JSON or
  YAML, nested too deep, not an object, a field of the wrong type, a results table without the
  columns and types mlcli writes → :class:`Unreadable`, whose message names the file and what is
  wrong. A missing file is ``None``, never an error.

What an unreadable file means is the caller's decision, always with a note naming the file: the
report lists the run as UNKNOWN (status) or leaves its results out, the run index leaves the run
out, a run that continues recomputes the folds it can no longer trust.

Light: no torch, no pandas.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# A run dir: the resolved config, the overrides, the status and the results (long form).
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
STATUS_FILE = "status.json"
RESULTS_FILE = "results.parquet"
RUN_FILES = (STATUS_FILE, RESULTS_FILE, CONFIG_FILE)
LINK_FILE = "run_link.json"
"""Written into a Hydra job dir whose job was skipped or continued in an earlier run dir."""


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


MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
"""The largest JSON or YAML document read (mlcli writes a few KB; a sweep manifest of 10,000
jobs is ~3 MB)."""


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
        raise Unreadable(path, f"holds {json_type(document)}, not a JSON object")
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
        raise Unreadable(path, f"holds {json_type(document)}, not a YAML mapping")
    return document


def json_type(value: Any) -> str:
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


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config of the run in ``run_dir`` (``config.yaml``), or None."""
    return read_yaml_mapping(Path(run_dir) / CONFIG_FILE)


# --------------------------------------------------------------------------------------------------
# Writes


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


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """:func:`atomic_write_bytes` of several files (a model's weights and preprocessing): each
    written to its temp file and synced, the syncs at once (a journal commits them together,
    not one after another), then renamed, then each directory synced once. Each file is whole
    or absent, as with one write at a time."""
    written: list[tuple[Path, Path]] = []
    try:
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _create_temp(path)
            written.append((tmp, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(files[path])
        with ThreadPoolExecutor(max_workers=len(written) or 1) as pool:
            list(pool.map(_fsync_path, [tmp for tmp, _ in written]))
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for folder in {path.parent for path in files}:
        _fsync_path(folder)


def _fsync_path(path: Path) -> None:
    """``fsync`` a file or directory by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic write of a text file (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(payload: dict[str, Any]) -> bytes:
    """A JSON document as :func:`write_json` writes it."""
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write of a JSON document."""
    atomic_write_bytes(path, json_bytes(payload))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON document written by :func:`write_json`."""
    with open(path, encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


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
