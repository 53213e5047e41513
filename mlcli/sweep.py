"""Run identity across commands: the run index, per-key locks, skip/continue, sweep manifests.

A *run key* is a hash of a job's resolved config without what cannot change its results (paths,
display, launcher). Before a job trains, :func:`decide` looks up the key among every run dir
below the outputs root (any dir holding ``status.json``):

* a COMPLETED (or DIVERGED: deterministic, it would diverge again) run → the job is skipped
  (a data file edited since has another content hash, hence another key: the job runs);
* an unfinished run (RUNNING left by a killed process, INTERRUPTED, FAILED) → the job continues
  in that run dir, computing only its missing folds;
* none → a new run in the job dir Hydra gave it (or a fresh sibling if that dir already holds
  another run: a run dir is never overwritten).

Decisions are taken under an exclusive ``flock`` on ``<outputs_root>/.mlcli/locks/<key>.lock``
that the job holds until it ends, so two processes never compute the same run at once and a
RUNNING status whose lock is free belongs to a process that died.

A multirun writes ``sweep.json`` (its jobs and their keys) into its sweep dir; the identical
command finds it again and continues in the same dir, so job dirs line up with job numbers.

This module stays light (no torch/pandas): the CLI uses it for ``--dry-run`` and resuming.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlcli import rundir
from mlcli.config import NON_RESULT_KEYS
from mlcli.data_identity import data_files
from mlcli.results import STATUS_FILE, read_json, write_json

DONE_STATES = ("COMPLETED", "DIVERGED")
"""States a re-run would only repeat: the job is skipped (``--rerun`` forces it)."""
UNFINISHED_STATES = ("RUNNING", "INTERRUPTED", "FAILED", "PRUNED")
"""States a job continues from, keeping the run's finished folds (PRUNED: stopped by a sweeper's
pruner; asked for again, the run goes on from its finished folds)."""

MANIFEST_FILE = "sweep.json"
LINK_FILE = "run_link.json"
"""Written into a Hydra job dir whose job was skipped or continued in an earlier run dir."""
STATE_DIR = ".mlcli"

# Environment of a `mlcli train` session, set for every job through Hydra's hydra.job.env_set.
SESSION_ENV = "MLCLI_SESSION"
LEDGER_ENV = "MLCLI_LEDGER_DIR"
RERUN_ENV = "MLCLI_RERUN"
PROCESS_ENV = "MLCLI_SESSION_PROCESS"
"""The ``mlcli`` process of the session (:func:`mlcli.procs.identity`): its jobs stop with it."""
STOP_FILE = "STOP"
DATA_FILES_KEY = "data_files"
"""Where the run key (and status.json) hold the data files' content hashes."""


def run_key(cfg: Any) -> str:
    """A stable hash of the resolved config, without keys that do not change results, and of the
    content of the data files its dataset names (:func:`mlcli.data_identity.data_files`): an
    edited data file makes another experiment. A dataset that names no file (mlcli's built-in
    sets) adds nothing."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    for key in (*NON_RESULT_KEYS, "hydra"):
        container.pop(key, None)
    files = data_files(container.get("dataset"))
    if files:
        container[DATA_FILES_KEY] = files  # no config key has this name (the schema refuses it)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# The run index: status.json files below the outputs root.


@dataclass(frozen=True)
class RunRecord:
    """What a run dir's ``status.json`` says about it."""

    run_dir: Path
    run_key: str
    state: str
    folds_completed: tuple[int, ...]
    n_folds: int | None
    started: str
    session: str | None

    @property
    def progress(self) -> str:
        """``2/5 folds`` (or ``2 folds`` before the number of folds is known)."""
        total = f"/{self.n_folds}" if self.n_folds else ""
        return f"{len(self.folds_completed)}{total} folds"


def _walk_run_dirs(root: Path) -> Iterator[Path]:
    """Dirs below ``root`` holding an entry named ``status.json`` (of any kind: a FIFO or a
    directory of that name is read, and refused, by :func:`read_record`); hidden dirs (.hydra,
    .mlcli) are not entered."""
    if not root.is_dir():
        return
    for directory, names in rundir.walk(root):
        if STATUS_FILE in names:
            yield directory


def read_record(run_dir: Path, notes: list[str] | None = None) -> RunRecord | None:
    """The run in ``run_dir``, or None when there is none or it cannot be used (never raises:
    a sweep never fails over another run's files). Why a status.json was left out is appended
    to ``notes`` when given."""
    try:
        status = rundir.read_status(run_dir)
    except rundir.Unreadable as error:
        if notes is not None:
            notes.append(f"{error}; left out of the run index")
        return None
    if status is None:
        return None  # vanished meanwhile
    if status.run_key is None:
        if notes is not None:
            notes.append(
                f"{run_dir / STATUS_FILE}: no run_key (not written by mlcli); "
                "left out of the run index"
            )
        return None
    return RunRecord(
        run_dir=run_dir,
        run_key=status.run_key,
        state=status.state,
        folds_completed=status.folds_completed,
        n_folds=status.n_folds,
        started=status.started,
        session=status.session,
    )


def scan_runs(root: Path, notes: list[str] | None = None) -> list[RunRecord]:
    """Every usable run below ``root`` (files are replaced atomically, so no read is torn);
    a note for each status.json left out is appended to ``notes`` when given."""
    records = (read_record(path, notes) for path in _walk_run_dirs(Path(root)))
    return [r for r in records if r is not None]


def runs_by_key(root: Path, notes: list[str] | None = None) -> dict[str, list[RunRecord]]:
    """The index: run key → its runs below ``root`` (see :func:`scan_runs` for ``notes``)."""
    index: dict[str, list[RunRecord]] = {}
    for record in scan_runs(root, notes):
        index.setdefault(record.run_key, []).append(record)
    return index


def best_previous(records: list[RunRecord]) -> RunRecord | None:
    """The run a job should reuse: a finished one, else the unfinished one furthest along."""
    done = [r for r in records if r.state in DONE_STATES]
    if done:
        completed = [r for r in done if r.state == "COMPLETED"]
        return max(completed or done, key=lambda r: r.started)
    unfinished = [r for r in records if r.state in UNFINISHED_STATES]
    if unfinished:
        return max(unfinished, key=lambda r: (len(r.folds_completed), r.started))
    return None


# --------------------------------------------------------------------------------------------------
# Per-key locks.


def state_dir(outputs_root: Path) -> Path:
    """mlcli's bookkeeping below the outputs root (locks, sessions); never a run dir."""
    return Path(outputs_root) / STATE_DIR


def _lock_path(outputs_root: Path, key: str) -> Path:
    return state_dir(outputs_root) / "locks" / f"{key}.lock"


_HELD: dict[str, int] = {}
"""Lock files this process holds (path → pid): taking one again within it is a no-op."""


@contextlib.contextmanager
def key_lock(outputs_root: Path, key: str) -> Iterator[None]:
    """Hold the exclusive lock of run ``key`` (waits while another process computes it).

    ``flock`` locks die with their process, so a SIGKILLed job never leaves a stale lock.
    """
    path = _lock_path(outputs_root, key)
    held = str(path.resolve())
    if _HELD.get(held) == os.getpid():  # this process holds it already (the stacked launcher)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[held] = os.getpid()
        yield
    finally:
        _HELD.pop(held, None)
        os.close(fd)  # releases the lock (children forked meanwhile have exited)


def is_locked(outputs_root: Path, key: str) -> bool:
    """Whether a live process holds run ``key``'s lock right now."""
    with lock_within(outputs_root, key, 0.0) as held:
        return not held


@contextlib.contextmanager
def lock_within(outputs_root: Path, key: str, timeout: float) -> Iterator[bool]:
    """Hold run ``key``'s lock if it is free within ``timeout`` seconds: yields whether it is."""
    path = _lock_path(outputs_root, key)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield True  # never locked: nobody holds it
        return
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
        yield True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# What a job does with its run key.


@dataclass(frozen=True)
class Decision:
    """Where a job runs: ``new`` (fresh run), ``continue`` (an unfinished run) or ``skip``."""

    action: Literal["new", "continue", "skip"]
    run_dir: Path
    previous: RunRecord | None = None


def fresh_dir(job_dir: Path) -> Path:
    """``job_dir`` itself when it holds no run, else the first free sibling ``job_dir-N``."""
    candidate, n = job_dir, 1
    while (candidate / STATUS_FILE).exists():
        candidate = job_dir.with_name(f"{job_dir.name}-{n}")
        n += 1
    return candidate


def decide(outputs_root: Path, key: str, job_dir: Path, rerun: bool = False) -> Decision:
    """Skip, continue or start run ``key`` (call it holding :func:`key_lock`)."""
    if not rerun:
        previous = best_previous(runs_by_key(outputs_root).get(key, []))
        if previous is not None:
            action: Literal["continue", "skip"] = (
                "skip" if previous.state in DONE_STATES else "continue"
            )
            return Decision(action, previous.run_dir, previous)
    own = read_record(job_dir)
    if own is not None and not rerun and own.run_key == key:
        return Decision("continue", job_dir, own)
    return Decision("new", fresh_dir(job_dir))


def write_link(job_dir: Path, decision: Decision, key: str) -> None:
    """Leave a note in a Hydra job dir whose job ran (or was found) in another run dir."""
    write_json(
        job_dir / LINK_FILE,
        {
            "action": "skipped" if decision.action == "skip" else "continued",
            "run_key": key,
            "run_dir": str(decision.run_dir.resolve()),
            "state": decision.previous.state if decision.previous else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def read_link(job_dir: Path) -> Path | None:
    """The run dir that a Hydra job dir's ``run_link.json`` names, or None when it has none
    (raises :class:`mlcli.rundir.Unreadable` for a link that is not mlcli's)."""
    path = Path(job_dir) / LINK_FILE
    link = rundir.read_json_object(path)
    if link is None:
        return None
    target = link.get("run_dir")
    if not isinstance(target, str) or not target:
        raise rundir.Unreadable(path, "run_dir is not a path")
    return Path(target)


def linked_run_dir(job_dir: Path) -> Path:
    """The run dir of a Hydra job dir: itself, or the one its ``run_link.json`` names."""
    try:
        linked = read_link(job_dir)
    except rundir.Unreadable:
        linked = None
    return linked or Path(job_dir)


def mark_stale_runs(
    outputs_root: Path,
    session: str,
    state: str = "INTERRUPTED",
    message: str = "",
    wait: float = 0.0,
) -> list[Path]:
    """Runs of ``session`` still RUNNING although no process holds them: set them to ``state``.

    Used after a sweep was stopped (a SIGKILLed worker cannot write its own status). A lock
    still held may belong to a process of the session that is dying (killed by joblib's abort,
    its fds not closed yet): each such lock is waited for, ``wait`` seconds for all of them, and
    the run's state is set holding it.
    """
    marked = []
    deadline = time.monotonic() + wait
    for record in scan_runs(outputs_root):
        if record.session != session or record.state != "RUNNING":
            continue
        timeout = max(0.0, deadline - time.monotonic())
        with lock_within(outputs_root, record.run_key, timeout) as held:
            current = read_record(record.run_dir) if held else None
            if current is None or current.session != session or current.state != "RUNNING":
                continue  # still computed, or it recorded its own end meanwhile
            kind = "Interrupted" if state == "INTERRUPTED" else ""
            set_state(record.run_dir, state, kind, message)
            marked.append(record.run_dir)
    return marked


def set_state(run_dir: Path, state: str, error_type: str, message: str) -> None:
    """Rewrite a run's state (and error) in its status.json, keeping everything else."""
    path = run_dir / STATUS_FILE
    try:
        status = rundir.read_json_object(path) or {}
    except rundir.Unreadable:
        status = {}  # garbage in place of the run's status: this write replaces it
    status["state"] = state
    status["ended"] = status.get("ended") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if error_type:
        status["error"] = {"type": error_type, "message": message}
    write_json(path, status)


# --------------------------------------------------------------------------------------------------
# Sweep manifests: the identical command continues in the same sweep dir.


def sweep_key(job_keys: list[str]) -> str:
    """Identity of a sweep: its jobs' run keys in launch order (job N ↔ job dir N)."""
    return hashlib.sha256("\n".join(job_keys).encode("utf-8")).hexdigest()[:16]


def load_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    """The ``sweep.json`` of ``sweep_dir``, or None when it has none; raises
    :class:`mlcli.rundir.Unreadable` for one that is not mlcli's (fields of other types)."""
    path = Path(sweep_dir) / MANIFEST_FILE
    manifest = rundir.read_json_object(path)
    if manifest is None:
        return None
    for key, kind, name in (
        ("sweep_key", str, "a string"),
        ("created", str, "a string"),
        ("args", list, "a list"),
        ("jobs", list, "a list"),
    ):
        if not isinstance(manifest.get(key), kind):
            raise rundir.Unreadable(path, f"{key} is not {name}")
    if not all(isinstance(arg, str) for arg in manifest["args"]):
        raise rundir.Unreadable(path, "args holds something other than strings")
    return manifest


def read_manifest(sweep_dir: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """The ``sweep.json`` of ``sweep_dir``, or None (a note in ``notes`` if it is garbage)."""
    try:
        return load_manifest(sweep_dir)
    except rundir.Unreadable as error:
        if notes is not None:
            notes.append(f"{error}; not a sweep mlcli can continue")
        return None


def find_sweep(outputs_root: Path, key: str, notes: list[str] | None = None) -> Path | None:
    """The most recent sweep dir below ``outputs_root`` whose manifest has sweep key ``key``
    (a note in ``notes`` for each manifest that is garbage)."""
    found: list[tuple[str, Path]] = []
    root = Path(outputs_root)
    if not root.is_dir():
        return None
    for directory, names in rundir.walk(root, into_runs=False):
        if MANIFEST_FILE in names and STATUS_FILE not in names:
            manifest = read_manifest(directory, notes)
            if manifest and manifest["sweep_key"] == key:
                found.append((manifest["created"], directory))
    return max(found)[1] if found else None


def write_manifest(
    sweep_dir: Path, key: str, args: list[str], jobs: list[tuple[list[str], str]]
) -> None:
    """Record a sweep's command and jobs (overrides, run key) in ``sweep_dir/sweep.json``."""
    previous = read_manifest(sweep_dir) or {}
    write_json(
        Path(sweep_dir) / MANIFEST_FILE,
        {
            "sweep_key": key,
            "created": previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": args,
            "jobs": [
                {"num": n, "overrides": overrides, "run_key": job_key}
                for n, (overrides, job_key) in enumerate(jobs)
            ],
        },
    )


# --------------------------------------------------------------------------------------------------
# The session of one `mlcli train` command, as its jobs see it.


@dataclass(frozen=True)
class Session:
    """Settings the CLI hands to every job of one command (through the environment)."""

    id: str | None
    ledger: Path | None
    rerun: bool
    process: str | None = None
    """The :func:`mlcli.procs.identity` of the session's ``mlcli`` process."""

    @classmethod
    def from_env(cls) -> Session:
        """The session this process's job belongs to (empty outside ``mlcli train``)."""
        ledger = os.environ.get(LEDGER_ENV)
        return cls(
            id=os.environ.get(SESSION_ENV) or None,
            ledger=Path(ledger) if ledger else None,
            rerun=os.environ.get(RERUN_ENV, "0") == "1",
            process=os.environ.get(PROCESS_ENV) or None,
        )

    def record(self, entry: dict[str, Any]) -> None:
        """Add how a job ended to the ledger the CLI reads afterwards (one file per job)."""
        if self.ledger is None:
            return
        import uuid

        entry = {**entry, "time": time.time()}
        write_json(self.ledger / f"{uuid.uuid4().hex}.json", entry)

    def request_stop(self) -> None:
        """``on_failure=stop``: jobs that have not started yet will not run."""
        if self.ledger is not None:
            (self.ledger / STOP_FILE).touch()

    @property
    def stop_requested(self) -> bool:
        """Whether an earlier job of this session failed under ``on_failure=stop``."""
        return self.ledger is not None and (self.ledger / STOP_FILE).exists()


def read_ledger(ledger: Path) -> list[dict[str, Any]]:
    """Every entry jobs recorded in ``ledger``, in the order they were recorded."""
    entries = []
    for path in Path(ledger).glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            entries.append(read_json(path))
    return sorted(entries, key=lambda e: float(e.get("time", 0.0)))
