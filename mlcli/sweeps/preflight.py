"""Compose and validate every job of a command before anything runs or is written.

Hydra alone reports one problem at a time, exits 1 and may already have created a run dir. The
CLI calls :func:`check` first: it splits Hydra's own flags from the overrides, expands a basic
sweep into its jobs, composes each job with Hydra's compose API, and collects every problem
(unknown group option, unknown key, wrong type, out-of-range or missing value, a ``_target_``
whose object is off the allowlist or that cannot be imported, an ``allow_targets`` entry that
comes from a file instead of the command line, a dangerous Hydra setting, a write outside the
outputs root) with the key it concerns and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlcli.config import ConfigProblem, packaged_conf_dir, search_dirs, validate
from mlcli.config.compose import (
    Command,
    base_hydra,
    command_line_entries,
    composer,
    expand_jobs,
    is_hydra_override,
    split_args,
    sweeper_kind,
    sweeper_params,
    translate_error,
    unresolved_interpolations,
)
from mlcli.config.pairing import PairingError


def study_space(command: Command, hydra: Any) -> Any:
    """The Optuna sweeper's search space of ``command`` (raises SearchSpaceError)."""
    from omegaconf import OmegaConf

    from mlcli.sweeps import search_space

    task = [o for o in command.overrides if not is_hydra_override(o)]
    params = OmegaConf.to_container(hydra.sweeper.params)
    assert isinstance(params, dict)
    return search_space.parse(task, {str(k): v for k, v in params.items()})


def _study_jobs(command: Command, hydra: Any) -> tuple[list[list[str]], list[ConfigProblem]]:
    """The jobs that compose every corner of an Optuna search space, or what is wrong with it."""
    import importlib.util

    from mlcli.sweeps import search_space

    problems = []
    if importlib.util.find_spec("optuna") is None:
        problems.append(
            ConfigProblem("hydra/sweeper", "optuna is not installed: pip install 'mlcli[optuna]'")
        )
    settings = hydra.sweeper
    for key, low in (("n_trials", 1), ("n_jobs", 1), ("max_failures", 1),
                     ("pruner_startup_trials", 0), ("pruner_warmup_folds", 0),
                     ("n_startup_trials", 0)):  # fmt: skip
        value = settings.get(key)
        if value is not None and int(value) < low:
            problems.append(ConfigProblem(f"hydra.sweeper.{key}", f"must be >= {low}, got {value}"))
    if not 0.0 < float(settings.percentile) < 100.0:
        problems.append(
            ConfigProblem(
                "hydra.sweeper.percentile", f"must be in (0, 100), got {settings.percentile}"
            )
        )
    problems.extend(_objective_problems(settings))
    from mlcli.config import security

    storage = security.storage_problem(settings.get("storage"))
    if storage is not None:
        problems.append(storage)
    sampler = str(getattr(settings.sampler, "value", settings.sampler))
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        problems.append(
            ConfigProblem(
                "hydra.sweeper.sampler", "cmaes needs the cmaes package: pip install cmaes"
            )
        )
    try:
        space = study_space(command, hydra)
        if sampler == "grid":
            search_space.grid(space)
    except search_space.SearchSpaceError as error:
        problems.append(ConfigProblem(error.key, str(error)))
        return [], problems
    hydra_overrides = [o for o in command.overrides if is_hydra_override(o)]
    return [[*hydra_overrides, *job] for job in space.validation_jobs()], problems


def _objective_problems(settings: Any) -> list[ConfigProblem]:
    """``direction`` against ``metrics`` (one each, or one ``auto``); a pruner needs one."""
    from mlcli.sweeps.study import StudyError, directions

    metrics = [str(m) for m in settings.get("metrics") or []]
    try:
        found = directions(settings.direction, metrics or ["auto"], mlcli_job=True)
    except StudyError as error:
        return [ConfigProblem("hydra.sweeper.direction", str(error))]
    pruner = str(getattr(settings.pruner, "value", settings.pruner))
    if len(found) > 1 and pruner != "none":
        return [
            ConfigProblem(
                "hydra.sweeper.pruner",
                f"{pruner} prunes single-objective studies; this one has {len(found)} metrics: "
                "drop the pruner (hydra.sweeper.pruner=none) or give one metric",
            )
        ]
    return []


def _allow_problems(cfg: Any, command: Command, trust_overrides: bool) -> list[ConfigProblem]:
    """``allow_targets`` entries that cannot admit anything, or that came from a config file."""
    from mlcli.config.allowlist import entry_problem, env_entries
    from mlcli.config.env import ALLOW_TARGETS

    problems = []
    admitted = {*command.admitted, *env_entries()}
    for entry in [str(e) for e in cfg.get("allow_targets") or []]:
        problem = entry_problem(entry)
        if problem is not None:
            problems.append(ConfigProblem("allow_targets", problem))
        elif entry not in admitted and not trust_overrides:
            problems.append(
                ConfigProblem(
                    "allow_targets",
                    f"{entry!r} comes from a config file, and a config file cannot admit code "
                    f"(it may come from someone else's repository). If you trust {entry}, admit "
                    f"it yourself: `allow_targets=[{entry}]` on the command line or "
                    f"{ALLOW_TARGETS}={entry} in the environment",
                )
            )
    return problems


def _check_job(
    command: Command, job: list[str], compose_one: Callable[..., Any], trust_overrides: bool
) -> list[ConfigProblem]:
    """Compose one job (added to ``command.jobs``) and say what is wrong with it."""
    from omegaconf import open_dict

    from mlcli.config import security
    from mlcli.config.allowlist import TargetNotAllowedError, TargetUnavailableError, admit
    from mlcli.config.targets import resolved_targets

    try:
        cfg = compose_one(job, with_hydra=True)
    except Exception as error:
        return [translate_error(error, job, command.config_dir)]
    from omegaconf.errors import InterpolationResolutionError

    unresolved = unresolved_interpolations(cfg, job, whole=False)  # hydra.* set by the command
    found: list[ConfigProblem] = []
    if not unresolved:
        try:
            if not trust_overrides:
                found.extend(security.hydra_config_problems(cfg.hydra, _user_dirs(command)))
            found.extend(security.write_problems(cfg, command.multirun))
        except InterpolationResolutionError as error:
            first = str(error).strip().splitlines()[0]
            found.append(ConfigProblem("hydra", f"an interpolation cannot be resolved: {first}"))
    with open_dict(cfg):
        cfg.pop("hydra")
    try:
        found.extend(validate(cfg))  # resolves every value: the first one that cannot be raises
    except InterpolationResolutionError:
        unresolved.extend(unresolved_interpolations(cfg, []))  # all of them, on this path only
    if unresolved:
        return unresolved
    command.jobs.append((job, cfg))
    if cfg.get("batch_size") == 1 and cfg.model.get("batch_norm") is True:
        found.append(
            ConfigProblem(
                "batch_size",
                "1 with model.batch_norm=true: batch norm needs more than one row per training "
                "batch; use batch_size >= 2 or model.batch_norm=false",
            )
        )
    found.extend(_allow_problems(cfg, command, trust_overrides))
    allow = [
        str(e)
        for e in cfg.get("allow_targets") or []
        if trust_overrides or str(e) in command.admitted
    ]
    for key, target in resolved_targets(cfg):
        try:
            admit(key, target, allow, resolve=False, entries_checked=True)
        except (TargetNotAllowedError, TargetUnavailableError) as error:
            found.append(ConfigProblem(f"{key}._target_", str(error)))
    return found


def _resolvable(command: Command) -> list[ConfigProblem]:
    """``--cfg ... --resolve``: the interpolations Hydra will resolve, checked first."""
    try:
        jobs = expand_jobs(command.overrides, command.multirun)
    except Exception as error:
        return [translate_error(error, command.overrides, command.config_dir)]
    problems: list[ConfigProblem] = []
    with composer(command.config_dir, command.config_name) as compose_one:
        for job in jobs:
            try:
                cfg = compose_one(job, with_hydra=True)
            except Exception:
                continue  # Hydra reports composition errors itself
            for problem in unresolved_interpolations(cfg, job):
                if problem not in problems:
                    problems.append(problem)
    return problems


def _user_dirs(command: Command) -> list[Path]:
    return [d for d in search_dirs(command.config_dir) if d != packaged_conf_dir()]


def check(
    args: list[str],
    trust_overrides: bool = False,
    typed: list[str] | None = None,
    detach: bool = False,
) -> tuple[Command, list[ConfigProblem]]:
    """Compose and validate every job of ``mlcli train ARGS``; return the problems found.

    ``detach``: the command returns once its jobs are queued (a scheduler's launcher only).

    ``typed``: the arguments the user typed (default ``args``); an ``allow_targets`` entry
    admits code only if it is among them (not when it comes from a file: a config, or the
    command a sweep dir recorded for ``--resume``).
    """
    from mlcli.config import security

    command = split_args(args)
    command.admitted = command_line_entries(split_args(args if typed is None else typed).overrides)
    if command.config_dir and not Path(command.config_dir).is_dir():
        return command, [
            ConfigProblem("--config-dir", f"{command.config_dir!r} is not a directory")
        ]
    problems: list[ConfigProblem] = []
    if not trust_overrides:
        problems.extend(security.dangerous_overrides(command.overrides))
    hydra_help = "--hydra-help" in command.flags
    if command.info_only and hydra_help and not problems and not trust_overrides:
        # Hydra's help configures logging from the composed config: check it like a run's.
        try:
            hydra = base_hydra(command)
        except Exception:
            hydra = None  # Hydra reports a config that does not compose, and runs nothing
        if hydra is not None:
            problems.extend(security.hydra_config_problems(hydra, _user_dirs(command)))
    if command.info_only and not problems and "--resolve" in command.flags:
        return command, _resolvable(command)  # Hydra would end in a traceback otherwise
    if command.info_only or problems:
        return command, problems
    try:
        hydra = base_hydra(command) if command.multirun else None
        if hydra is None and detach:
            return command, [ConfigProblem("--detach", "detaches from a sweep: add -m")]
        # Listed after every job's own problems (a dangerous setting among them).
        from mlcli.sweeps.cluster import launcher_problems

        launcher = launcher_problems(hydra, detach) if hydra is not None else []
        kind = sweeper_kind(hydra) if hydra is not None else "basic"
        if kind == "optuna":
            jobs, problems = _study_jobs(command, hydra)
            if problems:
                return command, problems
        else:
            paired = hydra.sweeper.get("paired") if hydra is not None else None
            params = sweeper_params(hydra)
            if params and not trust_overrides:
                problems.extend(security.dangerous_overrides(params))
                if problems:
                    return command, problems
            jobs = expand_jobs(command.overrides, command.multirun, kind, paired or (), params)
    except PairingError as error:
        return command, [ConfigProblem(error.key, str(error))]
    except Exception as error:
        return command, [translate_error(error, command.overrides, command.config_dir)]
    seen: set[str] = set()
    with composer(command.config_dir, command.config_name) as compose_one:
        for job in jobs:
            for problem in _check_job(command, job, compose_one, trust_overrides):
                if str(problem) not in seen:
                    seen.add(str(problem))
                    problems.append(problem)
    problems.extend(launcher)
    if not problems:
        # Bad data is a config problem too: build each distinct dataset once, make its folds.
        problems.extend(check_data([cfg for _, cfg in command.jobs]))
    return command, problems


def check_data(cfgs: list[Any]) -> list[ConfigProblem]:
    """Build each distinct dataset of ``cfgs`` once and make its folds; report bad data, and a
    selection metric (``metric=``) that the dataset's task does not record.

    Only mlcli's own builders and splitters run here (a user's code is not run twice, nor
    before the job); a problem other than :class:`DataError` is left for the job to report.
    The metric of a job whose dataset a user's builder makes is checked against every task's.
    """
    from omegaconf import OmegaConf

    from mlcli.config.targets import instantiate, root_cause
    from mlcli.cv import plan
    from mlcli.data.errors import DataError
    from mlcli.data.loading import build_dataset, is_own, split_config
    from mlcli.tasks import metric_problem

    problems: list[ConfigProblem] = []
    built: dict[str, Any] = {}  # a Dataset, or None when it cannot be built
    planned: set[str] = set()
    metrics: set[str] = set()

    def check_metric(cfg: Any, task: str | None) -> None:
        monitor = (cfg.get("early_stopping") or {}).get("monitor")
        for key, name in (("metric", str(cfg.metric)), ("early_stopping.monitor", monitor)):
            if name is None:
                continue
            message = metric_problem(str(name), task, cfg.get("analysis"))
            if message is None and key != "metric" and not str(name).startswith("val/"):
                message = f"{name!r}: early stopping watches a val metric (val/...)"
            if message is not None and message not in metrics:
                metrics.add(message)
                problems.append(ConfigProblem(key, message))

    for cfg in cfgs:
        if not is_own(cfg.dataset, "mlcli.data."):
            check_metric(cfg, None)
            continue
        data_key = OmegaConf.to_yaml(cfg.dataset)
        if data_key not in built:
            try:
                built[data_key] = build_dataset(cfg)
            except Exception as error:  # a builder's DataError arrives wrapped by Hydra
                built[data_key] = None
                cause = root_cause(error)
                if isinstance(cause, DataError):
                    problems.append(ConfigProblem(cause.key, str(cause)))
                # anything else is not a data problem: the job records it as its failure
        dataset = built[data_key]
        if dataset is not None:
            check_metric(cfg, dataset.task)
        split_key = data_key + OmegaConf.to_yaml(cfg.cv)
        own_cv = is_own(cfg.cv, "mlcli.cv.")
        if dataset is None or not own_cv or split_key in planned:
            continue
        planned.add(split_key)
        try:
            splitter = instantiate(cfg.cv, "cv", cfg.get("allow_targets", []))
            plan(dataset, splitter, *split_config(cfg))
        except Exception as error:
            cause = root_cause(error)
            if isinstance(cause, DataError):
                problems.append(ConfigProblem(cause.key, str(cause)))
    return problems
