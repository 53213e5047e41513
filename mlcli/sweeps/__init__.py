"""Sweeps: what ``mlcli train`` does around Hydra, and what each job does with its run key.

* :mod:`~mlcli.sweeps.preflight`: every job of a command composed and checked before anything runs;
* :mod:`~mlcli.sweeps.launch`: the launch plan (run keys, done or not, the sweep dir);
* :mod:`~mlcli.sweeps.session`: the session that runs Hydra and accounts for every job;
* :mod:`~mlcli.sweeps.app`: the Hydra application and its job function (lock, decide, train in
  a child process, record); :mod:`~mlcli.sweeps.procs`: those child processes;
* :mod:`~mlcli.sweeps.index`, :mod:`~mlcli.sweeps.locks`, :mod:`~mlcli.sweeps.manifest`: the
  run index and skip/continue decisions, per-key locks, sweep manifests;
* :mod:`~mlcli.sweeps.grid`: stacked grids (``hydra/launcher=stacked``);
* :mod:`~mlcli.sweeps.study` and :mod:`~mlcli.sweeps.search_space`: the Optuna sweeper's study;
* :mod:`~mlcli.sweeps.cluster` and :mod:`~mlcli.sweeps.local_ray`: what mlcli adds to SLURM's
  and Ray's launchers (``hydra_plugins.mlcli_plugins`` holds the launchers themselves);
* :mod:`~mlcli.sweeps.jobs`: whether a Hydra task is mlcli's job or another app's (both plug-ins
  serve other apps too).

The names below are the light part (no torch, pandas or Hydra): the CLI's ``--dry-run`` and
resuming use them.
"""

from __future__ import annotations

from mlcli.config.identity import run_key
from mlcli.rundir import LINK_FILE
from mlcli.sweeps.index import (
    DONE_STATES,
    UNFINISHED_STATES,
    Decision,
    RunRecord,
    best_previous,
    decide,
    mark_stale_runs,
    read_record,
    runs_by_key,
    scan_runs,
)
from mlcli.sweeps.locks import is_locked, key_lock, lock_within, state_dir
from mlcli.sweeps.manifest import (
    MANIFEST_FILE,
    find_sweep,
    load_manifest,
    read_manifest,
    sweep_key,
    write_manifest,
)

__all__ = [
    "DONE_STATES",
    "LINK_FILE",
    "MANIFEST_FILE",
    "UNFINISHED_STATES",
    "Decision",
    "RunRecord",
    "best_previous",
    "decide",
    "find_sweep",
    "is_locked",
    "key_lock",
    "load_manifest",
    "lock_within",
    "mark_stale_runs",
    "read_manifest",
    "read_record",
    "run_key",
    "runs_by_key",
    "scan_runs",
    "state_dir",
    "sweep_key",
    "write_manifest",
]
