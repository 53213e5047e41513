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

import contextlib
import dataclasses
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli.config import (
    CONFIG_NAME,
    GROUPS,
    ConfigProblem,
    did_you_mean,
    group_options,
    packaged_conf_dir,
    register_schemas,
    search_dirs,
    validate,
)

# Hydra flags that take a value, and those that do not.
_VALUE_FLAGS = {
    "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
    "--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun",
}  # fmt: skip
_BOOL_FLAGS = {"--multirun", "-m", "--resolve", "--run", "-r", "--hydra-help", "--version", "-h"}
# Flags after which Hydra prints something instead of running jobs: no validation needed.
_INFO_FLAGS = {"--cfg", "-c", "--info", "-i", "--hydra-help", "--version", "--shell-completion",
               "-sc"}  # fmt: skip


@dataclass
class Command:
    """A ``mlcli train`` command line, split into Hydra's flags and the overrides."""

    flags: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    info_only: bool = False
    config_dir: str | None = None
    config_name: str = CONFIG_NAME
    jobs: list[tuple[list[str], Any]] = field(default_factory=list)
    """Each job's overrides and composed config, filled in by :func:`check`."""
    admitted: list[str] = field(default_factory=list)
    """The ``allow_targets`` entries the user typed on the command line (trust comes from the
    user, not from a config file), filled in by :func:`check`."""


def split_args(args: list[str]) -> Command:
    """Separate Hydra flags (``-m``, ``--cfg job``, ``-cd DIR`` ...) from overrides."""
    command = Command()
    i = 0
    while i < len(args):
        arg = args[i]
        name, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUE_FLAGS:
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            command.flags.extend([arg] if inline else args[i : i + 2])
            i += 1 if inline else 2
            if name in ("--config-dir", "-cd"):
                command.config_dir = value
            elif name in ("--config-name", "-cn"):
                command.config_name = value
        elif name in _BOOL_FLAGS or name in _INFO_FLAGS:
            command.flags.append(arg)
            i += 1
        else:
            command.overrides.append(arg)
            i += 1
        if name in ("--multirun", "-m"):
            command.multirun = True
        if name in _INFO_FLAGS:
            command.info_only = True
    return command


def use_user_config_dirs(config_dir: str | None) -> None:
    """Put the user's ``./conf`` (or ``--config-dir``) first on Hydra's search path.

    Done by mlcli's search-path plug-in (hydra_plugins/mlcli_plugins), which reads this variable.
    """
    dirs = [str(d) for d in search_dirs(config_dir) if d != packaged_conf_dir()]
    os.environ["MLCLI_CONFIG_DIRS"] = os.pathsep.join(dirs)


def _translate(error: BaseException, overrides: list[str], config_dir: str | None) -> ConfigProblem:
    """Turn a Hydra/OmegaConf composition error into (key, what is wrong, how to fix)."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    text = str(error).strip()
    options = group_options(config_dir)
    if isinstance(error, MissingConfigException):
        for group in GROUPS:
            marker = f"'{group}/"
            if marker in text:
                wrong = text.split(marker, 1)[1].split("'", 1)[0]
                valid = options[group]
                return ConfigProblem(
                    group,
                    f"no option {wrong!r}.{did_you_mean(wrong, valid)} "
                    f"Valid choices: {', '.join(valid)}",
                )
        return ConfigProblem("config", text.splitlines()[0])
    if isinstance(error, OverrideParseException):
        return ConfigProblem("override", text.splitlines()[0])
    cause = error.__cause__ or error.__context__
    full_key = getattr(cause, "full_key", None)
    if full_key:
        first = str(cause).strip().splitlines()[0]
        schema = getattr(cause, "object_type", None)
        if first.startswith("Key '") and " not in " in first and dataclasses.is_dataclass(schema):
            leaf = str(full_key).rsplit(".", 1)[-1]
            known = [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]
            return ConfigProblem(
                str(full_key),
                f"unknown key.{did_you_mean(leaf, known)} Valid keys here: {', '.join(known)}",
            )
        return ConfigProblem(str(full_key), first)
    if isinstance(error, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'", 2)[1]
        parent, _, leaf = key.rpartition(".")
        known = list(GROUPS) if not parent else []
        return ConfigProblem(
            key,
            f"unknown key.{did_you_mean(leaf, known + _top_level_keys())} "
            f"To add a new key use +{key}=VALUE (only keys the config reads are accepted)",
        )
    return ConfigProblem("config", text.splitlines()[0] if text else type(error).__name__)


def _top_level_keys() -> list[str]:
    from mlcli.schemas import RunSchema

    return [f.name for f in dataclasses.fields(RunSchema)]


def is_hydra_override(override: str) -> bool:
    """Whether ``override`` sets Hydra's own config (``hydra.*``, ``hydra/launcher=...``)."""
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def sweeper_kind(hydra: Any) -> str:
    """``basic``, ``optuna`` (mlcli's) or ``other``, from a composed ``hydra`` node."""
    target = str(hydra.sweeper.get("_target_") or "")
    if target.endswith("BasicSweeper"):
        return "basic"
    return "optuna" if target.endswith("mlcli_plugins.optuna_sweeper.OptunaSweeper") else "other"


def base_hydra(command: Command) -> Any:
    """The ``hydra`` node composed from the command's overrides without sweep syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(command.overrides)
    fixed = [o for o, p in zip(command.overrides, parsed, strict=True) if not p.is_sweep_override()]
    return compose_job(fixed, command.config_dir, command.config_name, with_hydra=True).hydra


def study_space(command: Command, hydra: Any) -> Any:
    """The Optuna sweeper's search space of ``command`` (raises SearchSpaceError)."""
    from omegaconf import OmegaConf

    from mlcli import search_space

    task = [o for o in command.overrides if not is_hydra_override(o)]
    params = OmegaConf.to_container(hydra.sweeper.params)
    assert isinstance(params, dict)
    return search_space.parse(task, {str(k): v for k, v in params.items()})


def expand_jobs(overrides: list[str], multirun: bool, sweeper: str = "basic") -> list[list[str]]:
    """The override list of each job a basic sweep would launch (one job without ``-m``).

    Other sweepers interpret the sweep syntax themselves: their base config (the overrides
    without sweep syntax) is one job.
    """
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    if sweeper != "basic":
        return [[o for o, p in zip(overrides, parsed, strict=True) if not p.is_sweep_override()]]
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


def _study_jobs(command: Command, hydra: Any) -> tuple[list[list[str]], list[ConfigProblem]]:
    """The jobs that compose every corner of an Optuna search space, or what is wrong with it."""
    import importlib.util

    from mlcli import search_space

    problems = []
    if importlib.util.find_spec("optuna") is None:
        problems.append(
            ConfigProblem("hydra/sweeper", "optuna is not installed: pip install 'mlcli[optuna]'")
        )
    settings = hydra.sweeper
    for key, low in (("n_trials", 1), ("n_jobs", 1), ("max_failures", 0),
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
    from mlcli import security

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


@contextlib.contextmanager
def composer(config_dir: str | None, config_name: str) -> Iterator[Callable[..., Any]]:
    """``compose(overrides, with_hydra=False)`` for many jobs under one Hydra initialization
    (building the config search path costs about a fifth of composing a job)."""
    from hydra import compose, initialize_config_dir

    register_schemas()
    use_user_config_dirs(config_dir)  # read when the search path is built, in initialize
    # Hydra prints deprecation chatter for some overrides; keep the screen for our errors.
    with (
        initialize_config_dir(str(packaged_conf_dir()), version_base="1.3"),
        contextlib.redirect_stderr(io.StringIO()),
    ):

        def compose_one(overrides: list[str], with_hydra: bool = False) -> Any:
            return compose(config_name, overrides=overrides, return_hydra_config=with_hydra)

        yield compose_one


def compose_job(
    overrides: list[str], config_dir: str | None, config_name: str, with_hydra: bool = False
) -> Any:
    """Compose one job's config with Hydra's compose API (no run dir, no logging).

    ``with_hydra`` keeps the ``hydra`` node (launcher, callbacks, env_set ...) in the result.
    """
    with composer(config_dir, config_name) as compose_one:
        return compose_one(overrides, with_hydra)


def unresolved_interpolations(
    cfg: Any, overrides: list[str], whole: bool = True
) -> list[ConfigProblem]:
    """Every interpolation of a composed job (``${oc.env:NOPE}``, ``${missing.key}``) that
    cannot be resolved: in its config (unless not ``whole``), and in the ``hydra`` settings it
    sets on the command line (if ``cfg`` still holds its ``hydra`` node). Composition leaves them
    lazy; unchecked, the first one would end the command in a traceback."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import (
        InterpolationResolutionError,
        InterpolationToMissingValueError,
        MissingMandatoryValue,
    )

    problems: list[ConfigProblem] = []

    def check(node: Any, key: Any, full_key: str) -> Any:
        try:
            return node[key]
        except InterpolationResolutionError as error:
            runtime = isinstance(error, InterpolationToMissingValueError)
            if not (runtime and full_key.startswith("hydra.")):  # hydra.job.num: set at run time
                raw = str(node._get_node(key)._value())
                problems.append(_interpolation_problem(full_key, raw, error))
        except MissingMandatoryValue:
            pass  # `???`: validate() says which value is required
        return None

    def walk(node: Any, prefix: str) -> None:
        keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
        for key in keys:
            full_key = f"{prefix}[{key}]" if isinstance(node, ListConfig) else f"{prefix}{key}"
            if full_key == "hydra":
                continue
            value = check(node, key, full_key)
            if isinstance(value, DictConfig | ListConfig):
                walk(value, f"{full_key}." if isinstance(value, DictConfig) else full_key)

    if whole:
        walk(cfg, "")
    for override in overrides:
        if is_hydra_override(override):
            parent, _, leaf = override.lstrip("+~").split("=", 1)[0].rpartition(".")
            node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False)
            if isinstance(node, DictConfig) and leaf in node:
                check(node, leaf, f"{parent}.{leaf}")
    return problems


def _interpolation_problem(key: str, raw: str, error: Exception) -> ConfigProblem:
    """What is wrong with interpolation ``raw`` at ``key``, and how to fix it."""
    import re

    from omegaconf.errors import InterpolationKeyError, InterpolationToMissingValueError

    text = str(error).strip().splitlines()[0]
    env = re.search(r"Environment variable '([^']*)' not found", text)
    if env:
        name = env.group(1)
        return ConfigProblem(
            key,
            f"{raw}: the environment variable {name} is not set. Set it (export {name}=VALUE) "
            f"or give the interpolation a default: ${{oc.env:{name},VALUE}}",
        )
    if isinstance(error, InterpolationToMissingValueError):
        return ConfigProblem(
            key, f"{raw}: refers to a value that is not set (???); set it on the command line"
        )
    if isinstance(error, InterpolationKeyError):
        missing = re.search(r"Interpolation key '([^']*)' not found", text)
        name = missing.group(1) if missing else raw
        return ConfigProblem(
            key,
            f"{raw}: no key '{name}' in the composed config. An interpolation names a key by "
            "its full dotted path, e.g. ${optim.lr}; the keys: `mlcli train --cfg job`",
        )
    return ConfigProblem(key, f"{raw}: cannot be resolved ({text})")


def command_line_entries(overrides: list[str]) -> list[str]:
    """The ``allow_targets`` entries in ``overrides`` (every value of a sweep over them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a syntax error: composing the jobs reports it
        return []

    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list | tuple):
            return [s for v in value for s in strings(v)]
        return strings(value.list) if isinstance(getattr(value, "list", None), list) else []

    return [
        entry
        for override in parsed
        if override.key_or_group == "allow_targets" and not override.is_delete()
        for entry in strings(override.value())
    ]


def _allow_problems(cfg: Any, command: Command, trust_overrides: bool) -> list[ConfigProblem]:
    """``allow_targets`` entries that cannot admit anything, or that came from a config file."""
    from mlcli.allowlist import ENV, entry_problem, env_entries

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
                    f"{ENV}={entry} in the environment",
                )
            )
    return problems


def _check_job(
    command: Command, job: list[str], compose_one: Callable[..., Any], trust_overrides: bool
) -> list[ConfigProblem]:
    """Compose one job (added to ``command.jobs``) and say what is wrong with it."""
    from omegaconf import open_dict

    from mlcli import security
    from mlcli.allowlist import TargetNotAllowedError, TargetUnavailableError, admit
    from mlcli.build import resolved_targets

    try:
        cfg = compose_one(job, with_hydra=True)
    except Exception as error:
        return [_translate(error, job, command.config_dir)]
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
        return [_translate(error, command.overrides, command.config_dir)]
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
    args: list[str], trust_overrides: bool = False, typed: list[str] | None = None
) -> tuple[Command, list[ConfigProblem]]:
    """Compose and validate every job of ``mlcli train ARGS``; return the problems found.

    ``typed``: the arguments the user typed (default ``args``); an ``allow_targets`` entry
    admits code only if it is among them (not when it comes from a file: a config, or the
    command a sweep dir recorded for ``--resume``).
    """
    from mlcli import security

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
        kind = sweeper_kind(hydra) if hydra is not None else "basic"
        if kind == "optuna":
            jobs, problems = _study_jobs(command, hydra)
            if problems:
                return command, problems
        else:
            jobs = expand_jobs(command.overrides, command.multirun, kind)
    except Exception as error:
        return command, [_translate(error, command.overrides, command.config_dir)]
    seen: set[str] = set()
    with composer(command.config_dir, command.config_name) as compose_one:
        for job in jobs:
            for problem in _check_job(command, job, compose_one, trust_overrides):
                if str(problem) not in seen:
                    seen.add(str(problem))
                    problems.append(problem)
    if not problems:
        # Bad data is a config problem too: build each distinct dataset once, make its folds.
        from mlcli.data.loading import check_data

        problems.extend(check_data([cfg for _, cfg in command.jobs]))
    return command, problems
