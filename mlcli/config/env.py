"""Every ``MLCLI_*`` environment variable, in one place.

``mlcli train`` hands a session's settings to each of its jobs through the environment (set in
its own process and, through ``hydra.job.env_set``, in whatever process a launcher runs a job
in); the user sets the first one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

ALLOW_TARGETS = "MLCLI_ALLOW_TARGETS"
"""Set by the user: module namespaces (comma-separated) whose callables configs may build."""
ADMITTED_TARGETS = "MLCLI_ADMITTED_TARGETS"
"""JSON set by ``mlcli train`` for its jobs: the ``allow_targets`` the user typed, whether
``--trust-overrides`` was given, and the working directory (:class:`mlcli.config.allowlist.
Admission`)."""
TRUST_OVERRIDES = "MLCLI_TRUST_OVERRIDES"
"""``1`` when the command was given ``--trust-overrides`` (recorded in every run's status)."""
CONFIG_DIRS = "MLCLI_CONFIG_DIRS"
"""The user's config dirs (``./conf`` or ``--config-dir``, os.pathsep-separated), which mlcli's
search-path plug-in puts before mlcli's own."""

SESSION = "MLCLI_SESSION"
"""The id of the ``mlcli train`` command a job belongs to."""
LEDGER_DIR = "MLCLI_LEDGER_DIR"
"""Where each job of the session records how it ended."""
RERUN = "MLCLI_RERUN"
"""``1`` with ``--rerun``: jobs run again although a finished run of them exists."""
SESSION_PROCESS = "MLCLI_SESSION_PROCESS"
"""The session's ``mlcli`` process (:func:`mlcli.sweeps.procs.identity`): its jobs stop with it."""

DETACH = "MLCLI_DETACH"
"""``1`` with ``--detach``: the SLURM launcher returns once the jobs are queued."""
DONE_JOBS = "MLCLI_DONE_JOBS"
"""The numbers of a sweep's jobs that are done already (comma-separated): the SLURM launcher
does not submit them again."""
ASSIGNED_GPU = "MLCLI_ASSIGNED_GPU"
"""Set in a job's child: the GPU mlcli gave the job (:mod:`mlcli.sweeps.gpus`), in status.json."""

OPTUNA_SPEC = "MLCLI_OPTUNA_SPEC"
"""An Optuna sweep's spec file (storage, study, pruner) that its jobs report their folds to."""
OPTUNA_TRIAL = "MLCLI_OPTUNA_TRIAL"
"""The number of the Optuna trial a job is."""

MALLOC = "MLCLI_MALLOC"
"""``system``: a training process keeps glibc's allocator settings (:mod:`mlcli.engine.memory`)."""

ALL = (
    ALLOW_TARGETS,
    ADMITTED_TARGETS,
    TRUST_OVERRIDES,
    CONFIG_DIRS,
    SESSION,
    LEDGER_DIR,
    RERUN,
    SESSION_PROCESS,
    DETACH,
    DONE_JOBS,
    ASSIGNED_GPU,
    OPTUNA_SPEC,
    OPTUNA_TRIAL,
    MALLOC,
)


@contextlib.contextmanager
def overridden(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the block, then as they were."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
