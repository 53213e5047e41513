"""The run index, and what a job does with its run key: skip, continue or start a run.

A *run key* (:func:`mlcli.config.identity.run_key`) is a hash of a job's resolved config without
what cannot change its results. Before a job trains, :func:`decide` looks up the key among every
run dir below the outputs root (any dir holding ``status.json``):

* a COMPLETED (or DIVERGED: deterministic, it would diverge again) run → the job is skipped
  (a data file edited since has another content hash, hence another key: the job runs);
* an unfinished run (RUNNING left by a killed process, INTERRUPTED, FAILED) → the job continues
  in that run dir, computing only its missing folds;
* none → a new run in the job dir Hydra gave it (or a fresh sibling if that dir already holds
  another run: a run dir is never overwritten).

Decisions are taken under the run key's lock (:mod:`mlcli.sweeps.locks`). This module stays light
(no torch/pandas): the CLI uses it for ``--dry-run`` and resuming.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlcli import rundir
from mlcli.rundir import STATUS_FILE
from mlcli.sweeps.locks import lock_within

DONE_STATES = ("COMPLETED", "DIVERGED")
"""States a re-run would only repeat: the job is skipped (``--rerun`` forces it)."""
UNFINISHED_STATES = ("RUNNING", "INTERRUPTED", "FAILED", "PRUNED")
"""States a job continues from, keeping the run's finished folds (PRUNED: stopped by a sweeper's
pruner; asked for again, the run goes on from its finished folds)."""


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
        folds_completed=tuple(status.folds_completed),
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
            rundir.set_state(record.run_dir, state, kind, message)
            marked.append(record.run_dir)
    return marked
