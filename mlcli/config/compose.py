"""A ``mlcli train`` command line split into Hydra's flags and overrides, expanded into its jobs
and composed with Hydra's compose API (no run dir, no logging), with Hydra's errors translated
into :class:`~mlcli.config.validate.ConfigProblem`s (the key, what is wrong, how to fix).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mlcli.config import env
from mlcli.config.paths import (
    CONFIG_NAME,
    GROUPS,
    group_options,
    packaged_conf_dir,
    register_schemas,
    search_dirs,
)
from mlcli.config.validate import NO_KEYS, ConfigProblem, did_you_mean

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
    os.environ[env.CONFIG_DIRS] = os.pathsep.join(dirs)


def translate_error(
    error: BaseException, overrides: list[str], config_dir: str | None
) -> ConfigProblem:
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
            listed = f"Valid keys here: {', '.join(known)}" if known else NO_KEYS
            return ConfigProblem(str(full_key), f"unknown key.{did_you_mean(leaf, known)} {listed}")
        return ConfigProblem(str(full_key), first)
    if isinstance(error, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'", 2)[1]
        parent, _, leaf = key.rpartition(".")
        known = list(GROUPS) if not parent else []
        if not parent and leaf in known + top_level_keys():
            shadow = next(
                (d for d in search_dirs(config_dir)[:-1] if (d / "config.yaml").is_file()), None
            )
            where = f"{shadow / 'config.yaml'}" if shadow else "the primary config"
            return ConfigProblem(
                key,
                f"mlcli reads this key, but {where} replaces mlcli's own config.yaml and does not "
                f"set it. Rename that file (groups and options in your conf folder still add to "
                f"mlcli's), or start it with the defaults list of "
                f"{packaged_conf_dir() / 'config.yaml'}",
            )
        return ConfigProblem(
            key,
            f"unknown key.{did_you_mean(leaf, known + top_level_keys())} "
            f"To add a new key use +{key}=VALUE (only keys the config reads are accepted)",
        )
    return ConfigProblem("config", text.splitlines()[0] if text else type(error).__name__)


def top_level_keys() -> list[str]:
    from mlcli.config.schemas import RunSchema

    return [f.name for f in dataclasses.fields(RunSchema)]


def is_hydra_override(override: str) -> bool:
    """Whether ``override`` sets Hydra's own config (``hydra.*``, ``hydra/launcher=...``)."""
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def sweeper_kind(hydra: Any) -> str:
    """``basic``, ``optuna`` (mlcli's) or ``other``, from a composed ``hydra`` node.

    mlcli's paired sweeper is a basic sweeper (:func:`expand_jobs` pairs its keys' values)."""
    target = str(hydra.sweeper.get("_target_") or "")
    if target.endswith(("BasicSweeper", "mlcli_plugins.paired_sweeper.PairedSweeper")):
        return "basic"
    return "optuna" if target.endswith("mlcli_plugins.optuna_sweeper.OptunaSweeper") else "other"


def base_hydra(command: Command) -> Any:
    """The ``hydra`` node composed from the command's overrides without sweep syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(command.overrides)
    fixed = [o for o, p in zip(command.overrides, parsed, strict=True) if not p.is_sweep_override()]
    return compose_job(fixed, command.config_dir, command.config_name, with_hydra=True).hydra


def sweeper_params(hydra: Any) -> list[str]:
    """The basic sweeper's ``hydra.sweeper.params`` (a config's sweep, e.g. an ``experiment=``
    preset's) as overrides, in the order Hydra's basic sweeper reads them."""
    from omegaconf import OmegaConf

    params = hydra.sweeper.get("params") if hydra is not None else None
    if not params:
        return []
    values = OmegaConf.to_container(params, resolve=False)
    assert isinstance(values, dict)
    return [f"{key!s}={value!s}" for key, value in values.items()]


def expand_jobs(
    overrides: list[str],
    multirun: bool,
    sweeper: str = "basic",
    paired: Any = (),
    params: list[str] | None = None,
) -> list[list[str]]:
    """The override list of each job a basic sweep would launch (one job without ``-m``);
    ``paired``: the paired sweeper's key groups (``hydra.sweeper.paired``), swept together.

    ``params``: the config's ``hydra.sweeper.params`` (:func:`sweeper_params`); the basic
    sweeper reads them first and the command's overrides after them, as Hydra's does. Other
    sweepers interpret the sweep syntax themselves: their base config (the overrides without
    sweep syntax) is one job.
    """
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    if sweeper != "basic":
        return [[o for o, p in zip(overrides, parsed, strict=True) if not p.is_sweep_override()]]
    if params:
        parsed = parser.parse_overrides([*params, *overrides])
    if paired:
        from mlcli.config.pairing import paired_jobs

        return paired_jobs(parsed, paired)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


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
