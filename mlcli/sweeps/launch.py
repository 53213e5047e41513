"""The launch plan of ``mlcli train``: what the command will do, worked out before anything is
written (the session then launches it: :mod:`mlcli.sweeps.session`).

* **Plan** (before anything is written): each job's run key and whether it is already done; for
  a multirun, the sweep dir: the dir of the earlier identical sweep if there is one (so a plain
  re-run of an interrupted sweep continues where it stopped, job N in job dir N), the one
  ``--resume`` names, or a new one. With the joblib launcher, the number of workers is capped so
  that workers × ``threads`` ≤ cores.
* **Dry run**: :func:`print_plan` lists every job, its run key and whether it is done.
* **Resume**: ``--resume SWEEP_DIR`` continues the sweep recorded there (:func:`resume_args`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli import rundir
from mlcli.config import security
from mlcli.config.compose import Command
from mlcli.config.identity import run_key
from mlcli.sweeps.index import DONE_STATES, RunRecord, best_previous, runs_by_key
from mlcli.sweeps.manifest import (
    MANIFEST_FILE,
    find_sweep,
    load_manifest,
    read_manifest,
    sweep_key,
)


class PlanError(ValueError):
    """A ``--resume``/``--rerun`` request that does not fit the sweep dirs found."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class Job:
    """One job of the command: its overrides, run key and the run it would reuse."""

    overrides: list[str]
    run_key: str
    previous: RunRecord | None

    @property
    def status(self) -> str:
        """``done (COMPLETED)``, ``partial (2/5 folds)`` or ``new``."""
        if self.previous is None:
            return "new"
        if self.previous.state in DONE_STATES:
            return f"done ({self.previous.state})"
        return f"partial ({self.previous.progress}, {self.previous.state})"


@dataclass
class Plan:
    """What a ``mlcli train`` command will do."""

    jobs: list[Job]
    outputs_root: Path
    multirun: bool
    sweep_dir: Path | None = None
    continuing: bool = False
    overrides: list[str] = field(default_factory=list)
    """Hydra overrides mlcli adds (sweep dir, number of joblib workers)."""
    notes: list[str] = field(default_factory=list)
    sweeper: str = "basic"
    """``basic``, ``optuna`` (mlcli's: its jobs are the study's trials) or ``other``."""
    sweep_key: str | None = None
    """Identity of the sweep (the identical command continues it in the same sweep dir)."""
    study: dict[str, Any] = field(default_factory=dict)
    """For the Optuna sweeper: its settings and search space, for --dry-run."""
    launcher: str = ""
    """The ``_target_`` of the multirun's Hydra launcher."""


def quote(value: str) -> str:
    """A Hydra override value as a quoted string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _explicit(overrides: list[str], key: str) -> str | None:
    for override in overrides:
        name, sep, value = override.partition("=")
        if sep and name.lstrip("+") == key:
            return value.strip("'\"")
    return None


def _hydra_config(command: Command) -> Any:
    """The first job's config with its ``hydra`` node (sweep dir, launcher) resolved."""
    from mlcli.config.compose import compose_job

    overrides = [o for o, _ in command.jobs[:1]] or [[]]
    return compose_job(overrides[0], command.config_dir, command.config_name, with_hydra=True)


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan(command: Command, rerun: bool = False, resume: Path | None = None) -> Plan:
    """Work out the session for ``command`` (already checked); writes nothing."""
    from omegaconf import OmegaConf

    configs = [cfg for _, cfg in command.jobs]
    outputs_root = Path(str(configs[0].outputs_root))
    notes: list[str] = []  # run dirs and sweep manifests below outputs_root that are garbage
    index = runs_by_key(outputs_root, notes)
    jobs = []
    for overrides, cfg in command.jobs:
        key = run_key(cfg)
        jobs.append(Job(overrides, key, None if rerun else best_previous(index.get(key, []))))
    result = Plan(jobs, outputs_root, command.multirun, notes=notes)
    for job in jobs:  # the job continues in that run dir: mlcli writes into it again
        if job.previous is not None and job.previous.state not in DONE_STATES:
            _check_reuse(job.previous.run_dir)
    from mlcli.config.compose import sweeper_kind

    if not command.multirun:
        previous = jobs[0].previous
        if previous is not None and _explicit(command.overrides, "hydra.run.dir") is None:
            # Reuse the run's dir rather than leave an empty new one behind.
            _check_reuse(previous.run_dir)
            result.overrides.append(f"hydra.run.dir={quote(str(previous.run_dir))}")
        return result
    hydra_cfg = _hydra_config(command).hydra  # composed for a sweep only: a run needs none of it
    result.sweeper = sweeper_kind(hydra_cfg)
    n_jobs = len(jobs)
    if result.sweeper == "basic":
        result.sweep_key = sweep_key([job.run_key for job in result.jobs])
        _plan_sweep_dir(result, command, hydra_cfg, rerun, resume)
    elif result.sweeper == "optuna":
        n_jobs = _plan_study(result, command, hydra_cfg)
        _plan_sweep_dir(result, command, hydra_cfg, rerun, resume)

    launcher = OmegaConf.select(hydra_cfg, "launcher._target_", default="") or ""
    result.launcher = str(launcher)
    if str(launcher).endswith("JoblibLauncher"):
        threads = max(int(cfg.threads) for cfg in configs)
        limit = max(1, cores() // threads)
        asked = int(hydra_cfg.launcher.n_jobs)
        workers = asked if asked > 0 else max(1, cores() + 1 + asked)  # joblib: -1 = all cores
        if workers > limit and _explicit(command.overrides, "hydra.launcher.n_jobs") is not None:
            result.notes.append(
                f"hydra.launcher.n_jobs={asked} × threads={threads} exceeds {cores()} cores: "
                f"using {limit} workers"
            )
        workers = min(workers, limit, n_jobs)
        result.overrides.append(f"hydra.launcher.n_jobs={workers}")
    return result


# Settings that do not change which trials a study proposes: a re-run with other values of these
# continues the same study (raise n_trials to extend it).
_STUDY_RUNTIME_KEYS = ("n_trials", "n_jobs", "max_failures", "params", "_target_")


def _plan_study(result: Plan, command: Command, hydra_cfg: Any) -> int:
    """An Optuna study's identity (base config, search space, sampler...); its jobs at once."""
    import json

    from omegaconf import OmegaConf

    from mlcli.sweeps.preflight import study_space

    space = study_space(command, hydra_cfg)
    settings = OmegaConf.to_container(hydra_cfg.sweeper, resolve=True, enum_to_str=True)
    assert isinstance(settings, dict)
    identity = {k: v for k, v in settings.items() if k not in _STUDY_RUNTIME_KEYS}
    text = json.dumps([result.jobs[0].run_key, space.key(), identity], sort_keys=True, default=str)
    result.sweep_key = sweep_key(["optuna", text])
    result.study = {
        "settings": settings,
        "space": {key: p.describe() for key, p in space.params.items()},
        "fixed": space.fixed,
    }
    result.jobs = []  # the trials are asked while the study runs
    return int(settings["n_jobs"])


def _plan_sweep_dir(
    result: Plan, command: Command, hydra_cfg: Any, rerun: bool, resume: Path | None
) -> None:
    key = result.sweep_key
    assert key is not None
    explicit = _explicit(command.overrides, "hydra.sweep.dir")
    if resume is not None:
        result.sweep_dir, result.continuing = resume, True
    elif explicit is not None:
        result.sweep_dir = Path(explicit)
        manifest = read_manifest(result.sweep_dir, result.notes)
        if manifest is not None and (rerun or manifest.get("sweep_key") != key):
            raise PlanError(
                "hydra.sweep.dir",
                f"{explicit} already holds another sweep (or --rerun was given): choose a new dir",
            )
        result.continuing = manifest is not None
    elif not rerun and (found := find_sweep(result.outputs_root, key, result.notes)):
        result.sweep_dir, result.continuing = found, True
    else:
        result.sweep_dir = Path(str(hydra_cfg.sweep.dir))
    if explicit is None:
        result.overrides.append(f"hydra.sweep.dir={quote(str(result.sweep_dir))}")
    _check_reuse(result.sweep_dir)


def _check_reuse(directory: Path) -> None:
    """Refuse a run or sweep dir that mlcli would write into again but must not (a file of
    someone else's, or a symbolic link that a write would follow)."""
    problem = security.reuse_problem(Path(directory))
    if problem is not None:
        raise PlanError(str(directory), problem)


def resume_args(sweep_dir: Path, args: list[str]) -> list[str]:
    """The command line to continue the sweep in ``sweep_dir`` (its recorded one if none given)."""
    if not sweep_dir.is_dir():
        raise PlanError("--resume", f"{sweep_dir} is not a directory")
    try:
        manifest = load_manifest(sweep_dir)
    except rundir.Unreadable as error:
        raise PlanError(
            "--resume", f"{error}: not a sweep mlcli can continue (give another sweep dir)"
        ) from None
    if manifest is None:
        raise PlanError(
            "--resume",
            f"{sweep_dir} has no {MANIFEST_FILE}: it is not a sweep dir written by "
            "`mlcli train -m` (a sweep dir is e.g. outputs/sweeps/<time>)",
        )
    if not args:
        return list(manifest["args"])
    return args


def with_overrides(args: list[str], added: list[str]) -> list[str]:
    """``args`` with the overrides ``added`` (``--fail-fast``'s, ``--zip``'s) set once each: an
    override of the same key already there (e.g. in the command a sweep dir recorded, which
    ``--resume`` replays) is replaced, not repeated."""
    from mlcli.config.compose import split_args

    keys = {o.partition("=")[0].lstrip("+~") for o in added}
    overrides = set(split_args(args).overrides)
    kept = [a for a in args if a not in overrides or a.partition("=")[0].lstrip("+~") not in keys]
    return [*kept, *added]


def check_resume(sweep_dir: Path, result: Plan) -> None:
    """``--resume DIR`` with overrides: they must describe the sweep recorded in DIR."""
    manifest = read_manifest(sweep_dir) or {}
    if manifest.get("sweep_key") != result.sweep_key:
        recorded = " ".join(manifest.get("args", []))
        raise PlanError(
            "--resume",
            f"these overrides describe another sweep than the one in {sweep_dir} "
            f"(`mlcli train {recorded}`); give no overrides to continue it as it was",
        )


def print_plan(result: Plan) -> None:
    """``--dry-run``: every job with its overrides, run key and whether it is already done."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    if result.sweeper == "optuna":
        _print_study(console, result)
        return
    table = Table(title=f"{len(result.jobs)} job(s), nothing run (--dry-run)")
    for column in ("#", "overrides", "run key", "status", "run dir"):
        table.add_column(column, overflow="fold")
    for n, job in enumerate(result.jobs):
        where = str(job.previous.run_dir) if job.previous else ""
        table.add_row(
            str(n), escape(" ".join(job.overrides) or "(defaults)"), job.run_key, job.status,
            escape(where),
        )  # fmt: skip
    console.print(table)
    done = sum(1 for j in result.jobs if j.previous and j.previous.state in DONE_STATES)
    partial = sum(1 for j in result.jobs if j.previous) - done
    line = f"{done} done (would be skipped), {partial} partial, {len(result.jobs) - done - partial}"
    console.print(line + " new")
    if result.sweep_dir is not None:
        how = "continuing" if result.continuing else "new"
        console.print(f"sweep dir ({how}): {escape(str(result.sweep_dir))}")
    for note in result.notes:
        console.print(escape(note))


def _print_study(console: Any, result: Plan) -> None:
    """``--dry-run`` of an Optuna study: its search space, settings and sweep dir."""
    from rich.markup import escape
    from rich.table import Table

    settings = result.study["settings"]
    table = Table(title=f"Optuna study: {settings['n_trials']} trials, nothing run (--dry-run)")
    table.add_column("key")
    table.add_column("searched over")
    for key, described in result.study["space"].items():
        table.add_row(escape(key), escape(described))
    console.print(table)
    console.print("fixed: " + escape(" ".join(result.study["fixed"]) or "(defaults)"))
    shown = ("sampler", "seed", "direction", "pruner", "n_jobs", "max_failures", "study_name")
    console.print(", ".join(f"{k}={settings.get(k)}" for k in shown))
    if result.sweep_dir is not None:
        how = "continuing its study" if result.continuing else "new"
        console.print(f"sweep dir ({how}): {escape(str(result.sweep_dir))}")
