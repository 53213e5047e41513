"""One ``mlcli train`` command's session: it runs Hydra and accounts for every job.

:class:`Session` hands the session's id, ledger dir, ``--rerun`` and what the user admitted to
every job through ``hydra.job.env_set``, runs Hydra's sweeper and launcher, and reads afterwards
how each job ended from the session's ledger (:mod:`mlcli.sweeps.ledger`, where the jobs record
it); jobs that never reported (the launcher died) are listed too. Ctrl-C and SIGTERM interrupt
the launch; then every process the launch started is stopped (SIGTERM, then SIGKILL) before it
returns, and runs left RUNNING are marked INTERRUPTED.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlcli.config import env, security
from mlcli.sweeps import index, locks, manifest
from mlcli.sweeps.index import DONE_STATES
from mlcli.sweeps.launch import Plan, quote
from mlcli.sweeps.ledger import read_ledger

EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


@dataclass
class Outcome:
    """How a session ended."""

    entries: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    interrupted: str | None = None
    hydra_exit: int = 0


class Session:
    """One ``mlcli train`` command's jobs: their shared id, ledger dir and settings."""

    def __init__(self, result: Plan, rerun: bool, detach: bool = False) -> None:
        self.plan = result
        self.id = uuid.uuid4().hex[:12]
        self.ledger = (locks.state_dir(result.outputs_root) / "sessions" / self.id).resolve()
        self.rerun = rerun
        self.detach = detach
        """``--detach``: return once a scheduler has queued the jobs; they outlive the command
        (no ledger to record into, no session process to stop with)."""

    def _values(self) -> dict[str, str]:
        """The environment every job of the session reads."""
        from mlcli.sweeps import procs

        values = {
            env.SESSION: self.id,
            env.LEDGER_DIR: "" if self.detach else str(self.ledger),
            env.RERUN: "1" if self.rerun else "0",
            env.SESSION_PROCESS: "" if self.detach else procs.identity(),
            env.TRUST_OVERRIDES: "1" if security.trusted() else "0",
        }
        admission = os.environ.get(env.ADMITTED_TARGETS)
        if admission is not None:
            values[env.ADMITTED_TARGETS] = admission
        return values

    def overrides(self) -> list[str]:
        """Hydra overrides that hand the session to every job, in whatever process it runs."""
        from mlcli.sweeps import cluster, local_ray

        overrides = [f"+hydra.job.env_set.{k}={quote(v)}" for k, v in self._values().items()]
        if cluster.is_slurm(self.plan.launcher):  # submitit's, able to detach and see kills
            overrides.append(f"hydra.launcher._target_={cluster.MLCLI_SLURM_LAUNCHER}")
        if local_ray.is_ray(self.plan.launcher):  # Ray's, started and stopped with the launch
            overrides.append(f"hydra.launcher._target_={local_ray.MLCLI_RAY_LAUNCHER}")
        return overrides + self.plan.overrides

    def _launcher_env(self) -> dict[str, str]:
        """The environment of the launch itself (a launcher runs in this process)."""
        done = [
            str(n)
            for n, job in enumerate(self.plan.jobs)
            if not self.rerun and job.previous is not None and job.previous.state in DONE_STATES
        ]
        return {
            **self._values(),
            env.DETACH: "1" if self.detach else "0",
            env.DONE_JOBS: ",".join(done),
        }

    def launch(self, args: list[str], extra: list[str]) -> Outcome:
        """Run Hydra with ``args``; return how every job ended. Cleans up after an interrupt."""
        from mlcli.sweeps import procs

        self.ledger.mkdir(parents=True, exist_ok=True)
        if self.plan.sweep_dir is not None and self.plan.sweep_key is not None:
            jobs = [(job.overrides, job.run_key) for job in self.plan.jobs]
            manifest.write_manifest(self.plan.sweep_dir, self.plan.sweep_key, args, jobs)
        sys.argv = ["mlcli", *args, *self.overrides(), *extra]
        from mlcli.sweeps.app import hydra_main

        before = {p.pid for p in procs.descendants()}
        outcome = Outcome([], [])
        try:
            with (
                procs.interrupt_on_signals() as signals,
                composed_once(),
                env.overridden(self._launcher_env()),
            ):
                try:
                    hydra_main()
                except SystemExit as exit_:
                    code = exit_.code
                    outcome.hydra_exit = code if isinstance(code, int) else (1 if code else 0)
                except KeyboardInterrupt as error:
                    # Raised by our handler (here or in the job's task) with the signal's name.
                    named = str(error.args[0]) if error.args else ""
                    if signals.signum:
                        named = signal_name(signals.signum)
                    outcome.interrupted = named if named.startswith("SIG") else "SIGINT"
        finally:
            stopped = bool(outcome.interrupted or outcome.hydra_exit)
            if stopped:
                # Whatever the launch started (workers, their jobs) stops before we return; the
                # resource trackers stay: they clean /dev/shm up once the workers have exited.
                keep = before | _resource_trackers()
                procs.stop_processes([p for p in procs.descendants() if p.pid not in keep])
            shutdown_joblib_workers(kill=stopped)
            index.mark_stale_runs(
                self.plan.outputs_root,
                self.id,
                message=f"stopped by {outcome.interrupted or 'the end of the sweep'}",
                wait=procs.GRACE_S,  # for jobs still dying (their processes hold the locks)
            )
            outcome.entries = read_ledger(self.ledger)
            shutil.rmtree(self.ledger, ignore_errors=True)
        outcome.failures = self._failures(outcome)
        return outcome

    def _failures(self, outcome: Outcome) -> list[dict[str, Any]]:
        ended_well = ("COMPLETED", "SKIPPED", "PRUNED")  # PRUNED: a sweeper's pruner stopped it
        failures = [e for e in outcome.entries if e.get("state") not in ended_well]
        if outcome.hydra_exit and self.plan.sweep_dir is not None:
            # Jobs that never reported: the launcher stopped before they ended.
            reported = {e.get("run_key") for e in outcome.entries}
            for job in self.plan.jobs:
                if job.run_key not in reported:
                    failures.append(
                        {
                            "overrides": job.overrides,
                            "state": "NOT RUN",
                            "error": f"the launcher stopped (exit code {outcome.hydra_exit}) "
                            "before this job ended; re-run the same command to continue",
                            "run_dir": "",
                        }
                    )
        return failures


@contextlib.contextmanager
def composed_once() -> Iterator[None]:
    """Within the block, Hydra's basic sweeper launches each batch without composing its jobs
    first.

    The sweeper composes every job of a batch once to find one that does not compose before any
    runs, and the launcher then composes each again to run it. A session starts after the
    preflight (:func:`mlcli.sweeps.preflight.check`) composed and validated every job of its
    command, so the sweeper's composition finds nothing new: skipping it saves one composition
    of the two Hydra makes per job (and the preflight's).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    own = vars(BasicSweeper).get("validate_batch_is_legal")
    BasicSweeper.validate_batch_is_legal = _checked_by_the_preflight  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del BasicSweeper.validate_batch_is_legal
        else:
            BasicSweeper.validate_batch_is_legal = own  # type: ignore[method-assign]


def _checked_by_the_preflight(self: Any, batch: Any) -> None:
    """The preflight composed every job of the batch already."""


def shutdown_joblib_workers(kill: bool = False) -> None:
    """Stop the joblib launcher's worker processes now (loky keeps them for reuse otherwise),
    and free what joblib holds in /dev/shm for them.

    A session's workers must not outlive it: they hold its working directory and environment.
    ``terminate`` (not just ``shutdown``) also deletes joblib's memmapping folder, which joblib
    would leave to an ``atexit`` handler: ``mlcli`` exits without running those (see
    :func:`mlcli.cli.main`), and loky's resource tracker then warned of a leaked folder.
    """
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)  # loky's one reusable executor, if started
    if executor is not None:
        with contextlib.suppress(Exception):
            if hasattr(executor, "terminate"):  # joblib's MemmappingExecutor
                executor.terminate(kill_workers=kill)
            else:
                executor.shutdown(wait=not kill, kill_workers=kill)


def _resource_trackers() -> set[int]:
    """The pids of loky's and multiprocessing's resource trackers, if this process started them.

    Each ignores SIGTERM and exits by itself once every process sharing it has, after it has
    unlinked what they left (semaphores, joblib's folders); killed, it leaves those behind.
    """
    pids = set()
    for name in (
        "joblib.externals.loky.backend.resource_tracker",
        "multiprocessing.resource_tracker",
    ):
        tracker = getattr(sys.modules.get(name), "_resource_tracker", None)
        pid = getattr(tracker, "_pid", None)
        if isinstance(pid, int):
            pids.add(pid)
    return pids


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    import signal

    return signal.Signals(signum).name
