"""Sweeps on a cluster scheduler (SLURM through Hydra's submitit launcher): what mlcli adds.

* **Preflight**: ``hydra/launcher=submitit_slurm`` on a machine without ``sbatch``/``srun`` is a
  configuration problem (one screen, exit 2), not submitit's traceback.
* **Job ids**: each submitted job's scheduler id, by job number, in the sweep dir
  (``.mlcli/scheduler_jobs.json``), so ``mlcli status`` can ask the scheduler about it later.
* **Jobs the scheduler ended** (killed, out of time, node failure) never reach mlcli's job
  function's end: the launcher records them here as FAILED (run dir and ledger), so the failure
  table lists them and the identical command runs them again.
* **Ctrl-C** (or SIGTERM) while a sweep waits for its jobs: they are cancelled (``scancel``).
* **Detach** (``mlcli train ... --detach``): the launcher returns once the jobs are queued;
  :func:`sweep_status` later tells each job's state from its run dir and the scheduler.

Light: no torch, no pandas; submitit is imported only to ask the scheduler.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli import rundir
from mlcli.config import ConfigProblem, env
from mlcli.sweeps.index import DONE_STATES, RunRecord, best_previous, read_record, runs_by_key
from mlcli.sweeps.locks import lock_within
from mlcli.sweeps.manifest import read_manifest

JOBS_FILE = Path(".mlcli") / "scheduler_jobs.json"
"""Below a sweep dir: ``{job number: {"job_id": ..., "overrides": [...]}}``."""
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
MLCLI_SLURM_LAUNCHER = "hydra_plugins.mlcli_plugins.submitit_launcher.MlcliSlurmLauncher"
# The scheduler's states that mean a job has not started, is running, or has ended.
QUEUED_STATES = ("PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED")
RUNNING_STATES = ("RUNNING", "COMPLETING")


def is_slurm(launcher_target: str) -> bool:
    """Whether a launcher's ``_target_`` submits to SLURM (Hydra's or mlcli's launcher)."""
    return launcher_target in (SLURM_LAUNCHER, MLCLI_SLURM_LAUNCHER)


def detached() -> bool:
    """Whether this ``mlcli train`` returns once its jobs are queued (``--detach``)."""
    return os.environ.get(env.DETACH) == "1"


def launcher_problems(hydra: Any, detach: bool = False) -> list[ConfigProblem]:
    """What keeps a composed ``hydra`` node's launcher from submitting from this machine."""
    target = str(hydra.launcher.get("_target_") or "")
    slurm = is_slurm(target)
    if detach and not slurm:
        return [
            ConfigProblem(
                "--detach",
                "returns once a scheduler has queued the jobs: use it with "
                "hydra/launcher=submitit_slurm (or slurm); other launchers run the jobs here",
            )
        ]
    if not slurm:
        return []
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if not missing:
        return []
    return [
        ConfigProblem(
            "hydra/launcher",
            f"SLURM's {' and '.join(missing)} not found on PATH: hydra/launcher=submitit_slurm "
            "submits jobs to a SLURM cluster, so run the command on a machine of one (a login "
            "node). To run the sweep here, use hydra/launcher=joblib or submitit_local",
        )
    ]


def record_submission(sweep_dir: Path, jobs: list[tuple[int, str, list[str]]]) -> None:
    """Add ``(job number, scheduler job id, overrides)`` to the sweep dir's job ids (atomic)."""
    path = Path(sweep_dir) / JOBS_FILE
    known = read_submissions(sweep_dir)
    for number, job_id, overrides in jobs:
        known[str(number)] = {"job_id": str(job_id), "overrides": list(overrides)}
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, known)


def read_submissions(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """The sweep dir's job ids (empty when absent or unreadable: garbage crashes nothing)."""
    path = Path(sweep_dir) / JOBS_FILE
    try:
        document = rundir.read_json_object(path)
    except (OSError, rundir.Unreadable):
        return {}
    if document is None:
        return {}
    return {
        str(k): v
        for k, v in document.items()
        if isinstance(v, dict) and isinstance(v.get("job_id"), str)
    }


def left_out(sweep_dir: Path, numbers: list[int], detach: bool) -> dict[int, str]:
    """Jobs (by number) not to submit again, and why: done already (the session says which),
    or, with ``--detach``, still queued or running from an earlier submission."""
    done = {int(n) for n in os.environ.get(env.DONE_JOBS, "").split(",") if n.isdigit()}
    out = {n: "done" for n in numbers if n in done}
    if detach:
        submitted = read_submissions(sweep_dir)
        ids = {n: str(submitted[str(n)]["job_id"]) for n in numbers
               if str(n) in submitted and n not in out}  # fmt: skip
        states = scheduler_states(list(ids.values()))
        for n, job_id in ids.items():
            if states.get(job_id) in (*QUEUED_STATES, *RUNNING_STATES):
                out[n] = f"still {states[job_id]} as job {job_id}"
    return out


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within the block (main thread), SIGINT and SIGTERM are held back: the first one is
    handed to the handler that was in place (which raises ``KeyboardInterrupt``) once the block
    has ended, e.g. once submitted jobs' ids are known, so that they can be cancelled."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    if held:
        handler = previous[signal.Signals(held[0])]
        if callable(handler):
            handler(held[0], None)
        raise KeyboardInterrupt(signal.Signals(held[0]).name)


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the scheduler's jobs ``job_ids`` (those ended already are left as they are);
    a scheduler that does not answer is reported, not raised."""
    import subprocess

    if not job_ids:
        return
    print(f"interrupted: cancelling {len(job_ids)} job(s) of the sweep (scancel)", flush=True)
    try:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        print(f"scancel failed ({error}): cancel them yourself: scancel {' '.join(job_ids)}")


def scheduler_ended(outputs_root: Path, key: str, session: str | None, message: str) -> None:
    """A job the scheduler ended before mlcli's job function did: its run (of this session,
    still RUNNING, its lock free) becomes FAILED with ``message``."""
    for record in runs_by_key(Path(outputs_root)).get(key, []):
        if record.state != "RUNNING" or (session and record.session != session):
            continue
        with lock_within(Path(outputs_root), key, 5.0) as held:
            current = read_record(record.run_dir) if held else None
            if current is not None and current.state == "RUNNING":
                rundir.set_state(record.run_dir, "FAILED", "SchedulerEnded", message)


def scheduler_states(job_ids: list[str]) -> dict[str, str]:
    """Each SLURM job id's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED`` ...) as
    ``sacct`` tells it (through submitit's watcher); ``{}`` without a scheduler."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    import subprocess

    from submitit.slurm.slurm import SlurmInfoWatcher

    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for main in sorted({j.split("_")[0] for j in job_ids}):
        command.extend(["-j", main])
    try:
        output = subprocess.run(command, capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = SlurmInfoWatcher().read_info(output)
    return {j: str(info[j].get("State", "UNKNOWN")).split()[0] for j in job_ids if j in info}


@dataclass
class JobState:
    """One job of a sweep as ``mlcli status`` shows it."""

    number: int
    overrides: list[str]
    state: str
    """queued | running | completed | failed | interrupted | diverged | pruned | not submitted"""
    scheduler: str
    """The scheduler's job id and state (``12_3 PENDING``), or ``""``."""
    run_dir: str
    progress: str


def sweep_status(sweep_dir: Path) -> list[JobState]:
    """Every job of the sweep in ``sweep_dir``: its state from its run (the run dir of its run
    key, wherever it is) and, until it has one, from the scheduler.

    Raises :class:`ValueError` when ``sweep_dir`` holds no sweep written by ``mlcli train -m``.
    """
    manifest = read_manifest(Path(sweep_dir))
    if manifest is None or not isinstance(manifest.get("jobs"), list):
        raise ValueError(
            f"{sweep_dir} has no sweep manifest: give a sweep dir written by `mlcli train -m` "
            "(e.g. outputs/sweeps/<time>)"
        )
    jobs = [j for j in manifest["jobs"] if isinstance(j, dict)]
    submitted = read_submissions(Path(sweep_dir))
    ids = {n: str(s["job_id"]) for n, s in submitted.items()}
    states = scheduler_states(list(ids.values()))
    outputs_root = _outputs_root(Path(sweep_dir))
    index = runs_by_key(outputs_root) if outputs_root is not None else {}
    shown = []
    for number, job in enumerate(jobs):
        key = str(job.get("run_key", ""))
        previous: RunRecord | None = best_previous(index.get(key, []))
        job_id = ids.get(str(number))
        scheduled = states.get(job_id, "") if job_id else ""
        state = _state(previous, scheduled, outputs_root, key, job_id)
        shown.append(
            JobState(
                number,
                [str(o) for o in job.get("overrides", [])],
                state,
                f"{job_id} {scheduled}".strip() if job_id else "",
                str(previous.run_dir) if previous is not None else "",
                previous.progress if previous is not None else "",
            )
        )
    return shown


def print_status(sweep_dir: Path, jobs: list[JobState]) -> None:
    """``mlcli status``: one row per job, then the count of each state."""
    from collections import Counter

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if os.isatty(1) else 160)
    table = Table(title=f"{len(jobs)} job(s) of {escape(str(sweep_dir))}")
    for column in ("#", "overrides", "state", "folds", "scheduler", "run dir"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            str(job.number), escape(" ".join(job.overrides) or "(defaults)"), job.state,
            job.progress, escape(job.scheduler), escape(job.run_dir),
        )  # fmt: skip
    console.print(table)
    counts = Counter(job.state for job in jobs)
    console.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


def _state(
    run: RunRecord | None, scheduled: str, outputs_root: Path | None, key: str, job_id: str | None
) -> str:
    if run is not None and run.state in DONE_STATES:
        return run.state.lower()
    if scheduled in RUNNING_STATES:
        return "running"
    if scheduled in QUEUED_STATES:
        return "queued"
    if run is not None and run.state == "RUNNING":
        if outputs_root is not None and _held(outputs_root, key):
            return "running"
        # Nobody computes it: the scheduler ended it, or its process died.
        return f"failed ({scheduled})" if scheduled else "interrupted"
    if run is not None:
        return run.state.lower()  # FAILED, INTERRUPTED, PRUNED
    if scheduled:
        return "failed (no run)" if scheduled != "COMPLETED" else "completed (no run)"
    return "submitted" if job_id else "not submitted"


def _held(outputs_root: Path, key: str) -> bool:
    with lock_within(outputs_root, key, 0.0) as free:
        return not free


def _outputs_root(sweep_dir: Path) -> Path | None:
    """The outputs root a sweep dir lies in (the dir holding mlcli's ``.mlcli`` state), if any."""
    for directory in [sweep_dir.resolve(), *sweep_dir.resolve().parents]:
        if (directory / ".mlcli").is_dir() and directory != sweep_dir.resolve():
            return directory
    with contextlib.suppress(IndexError):
        return sweep_dir.resolve().parents[1]  # outputs/sweeps/<time>
    return None
