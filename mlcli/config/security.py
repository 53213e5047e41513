"""What a command line or a shared config file may make mlcli do.

Configs and sweep commands get copied between students and from the internet. Besides the
``_target_`` allowlist (:mod:`mlcli.config.allowlist`), three Hydra features can run code or touch
arbitrary files before mlcli's own code runs:

* ``hydra.job.env_set.*`` sets environment variables for the job (e.g.
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` switches torch's safe loading off);
* ``hydra.callbacks.*`` are instantiated by Hydra itself, with any ``_target_``;
* ``hydra.searchpath`` and the logging configs (``hydra/job_logging``, ``hydra/hydra_logging``,
  ``hydra.job_logging.*``) load configs from, or write logs to, any path, and Python's logging
  ``dictConfig`` calls any factory given as ``()``.

Each is refused, from the command line and in the composed Hydra config alike, unless the user
passes ``--trust-overrides``; that choice is recorded in every run's ``status.json``. Logging
configs are judged by what they do: a handler is a stream (stdout/stderr), null or file handler,
and a file handler writes only Hydra's own ``<job>.log`` in the job's dir; a user's conf dir that
shadows the chosen logging option is refused.

No setting writes outside the outputs root or into someone else's files
(:func:`write_problems`, :func:`reuse_problem`): ``hydra.output_subdir``, ``hydra.job.name`` and
``hydra.sweep.subdir`` are plain relative names; a run or sweep dir that exists must be one mlcli
wrote and holds no symbolic link (Hydra opens ``<job>.log`` and ``.hydra/*.yaml`` with a plain
``open``, which follows one); an Optuna storage file that exists must be a study; the outputs
root is a directory and not the filesystem root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlcli.config import env
from mlcli.config.validate import ConfigProblem

DANGEROUS_PREFIXES: tuple[str, ...] = (
    "hydra.job.env_set",
    "hydra.searchpath",
    "hydra.callbacks",
    "hydra.job_logging",
    "hydra.hydra_logging",
)
DANGEROUS_GROUPS = ("hydra/job_logging", "hydra/hydra_logging", "hydra/callbacks")
LAUNCHER_CODE_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("ray", "init", "runtime_env"),
    ("ray", "remote", "runtime_env"),
    ("setup",),
)
"""Launcher settings that run code or set the jobs' environment: Ray's ``runtime_env``
(``env_vars`` such as ``LD_PRELOAD``, ``pip``, ``py_modules``, a setup hook) and submitit's
``setup`` (shell lines in the sbatch script)."""
DANGEROUS_PREFIXES += tuple(".".join(("hydra.launcher", *path)) for path in LAUNCHER_CODE_SETTINGS)
# Logging configs Hydra ships; anything else comes from a file someone wrote.
SAFE_LOGGING_CHOICES = {"default", "disabled", "none", "stdout", None}

_FIX = "refused unless you pass --trust-overrides (only do that for a command you wrote yourself)"


def trusted() -> bool:
    """True when the current command was started with ``--trust-overrides``."""
    return os.environ.get(env.TRUST_OVERRIDES) == "1"


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].strip()


def dangerous_overrides(overrides: list[str]) -> list[ConfigProblem]:
    """Command-line overrides that could run code or read/write arbitrary files."""
    problems = []
    for override in overrides:
        key = _key(override)
        nested_target = key.startswith("hydra.") and "_target_" in key
        if key.startswith(DANGEROUS_PREFIXES) or key in DANGEROUS_GROUPS or nested_target:
            problems.append(
                ConfigProblem(key, f"this Hydra override can run code or touch files: {_FIX}")
            )
    return problems


def _has_factory(node: Any) -> bool:
    """True if a logging config uses ``()`` (a custom factory: any callable) anywhere."""
    if isinstance(node, dict):
        return "()" in node or any(_has_factory(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_factory(v) for v in node)
    return False


def hydra_config_problems(hydra: Any, user_dirs: Iterable[Path] = ()) -> list[ConfigProblem]:
    """Check a composed ``hydra`` node, wherever its settings came from (command line or files);
    ``user_dirs``: the user's config dirs (./conf or --config-dir), searched before mlcli's."""
    from omegaconf import OmegaConf

    problems: list[ConfigProblem] = []
    if hydra.get("callbacks"):
        names = ", ".join(str(k) for k in hydra.callbacks)
        problems.append(ConfigProblem("hydra.callbacks", f"callbacks ({names}) run code: {_FIX}"))
    if hydra.job.get("env_set"):
        names = ", ".join(str(k) for k in hydra.job.env_set)
        problems.append(
            ConfigProblem("hydra.job.env_set", f"sets environment variables ({names}): {_FIX}")
        )
    for setting in LAUNCHER_CODE_SETTINGS:
        node = hydra.get("launcher")
        for part in setting:
            node = node.get(part) if hasattr(node, "get") else None
        if node:
            key = ".".join(("hydra.launcher", *setting))
            problems.append(ConfigProblem(key, f"a launcher setting that runs code: {_FIX}"))
    extra = [str(p) for p in hydra.get("searchpath", [])]
    if extra:
        problems.append(
            ConfigProblem(
                "hydra.searchpath",
                f"adds config paths {extra}: {_FIX}; "
                "put your configs in ./conf or pass --config-dir instead",
            )
        )
    choices = hydra.runtime.choices
    for group in ("hydra/job_logging", "hydra/hydra_logging"):
        choice = choices.get(group)
        if choice not in SAFE_LOGGING_CHOICES:
            problems.append(
                ConfigProblem(group, f"a logging config from a file ({choice}): {_FIX}")
            )
        shadows = [d / group / f"{choice}.yaml" for d in user_dirs if choice is not None]
        for path in [p for p in shadows if p.exists()]:
            problems.append(
                ConfigProblem(group, f"{path} replaces Hydra's logging config {choice!r}: {_FIX}")
            )
    for name in ("job_logging", "hydra_logging"):
        container = OmegaConf.to_container(hydra[name], resolve=False)
        if _has_factory(container):
            problems.append(
                ConfigProblem(f"hydra.{name}", f"a logging factory '()' calls any code: {_FIX}")
            )
        else:
            problems.extend(_logging_problems(f"hydra.{name}", container, name == "job_logging"))
    for key, target in _hydra_targets(OmegaConf.to_container(hydra, resolve=False)):
        problems.append(ConfigProblem(f"hydra.{key}", f"builds {target!r}: {_FIX}"))
    return problems


def _hydra_targets(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``_target_``s in the ``hydra`` node other than the launcher's and the sweeper's own
    (Hydra instantiates those only from its registered plug-ins; nested ones it builds as is)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_" and prefix not in ("launcher", "sweeper"):
                found.append((child, str(value)))
            elif prefix or key != "callbacks":  # callbacks: refused above
                found.extend(_hydra_targets(value, child))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_hydra_targets(value, f"{prefix}[{i}]"))
    return found


# --------------------------------------------------------------------------------------------------
# Logging configs: what Hydra passes to logging.config.dictConfig.

_HANDLER_CLASSES = {"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler"}
_STREAMS = {"ext://sys.stdout", "ext://sys.stderr"}
_JOB_LOG = "${hydra.runtime.output_dir}/${hydra.job.name}.log"
_KEYS = {
    "": {"version", "formatters", "filters", "handlers", "loggers", "root",
         "disable_existing_loggers", "incremental"},
    "formatters": {"format", "datefmt", "style", "validate", "defaults"},
    "filters": {"name"},
    "handlers": {"class", "level", "formatter", "filters", "stream", "filename", "mode",
                 "encoding", "delay", "errors"},
    "loggers": {"level", "handlers", "propagate", "filters"},
}  # fmt: skip


def _logging_problems(key: str, config: Any, job: bool) -> list[ConfigProblem]:
    """What in a logging config could run code or write a file other than the job's log."""
    if config is None:
        return []
    if not isinstance(config, dict):
        return [ConfigProblem(key, f"not a logging config: {config!r}")]
    problems = []

    def refuse(where: str, what: str) -> None:
        problems.append(ConfigProblem(f"{key}.{where}".rstrip("."), f"{what}: {_FIX}"))

    for name in set(config) - _KEYS[""]:
        refuse(str(name), "not a setting of Python's logging config")
    sections = {s: config.get(s) or {} for s in ("formatters", "filters", "handlers", "loggers")}
    sections["loggers"] = {**sections["loggers"], "": config.get("root") or {}}
    for section, entries in sections.items():
        if not isinstance(entries, dict):
            refuse(section, f"must be a mapping, got {entries!r}")
            continue
        for entry, settings in entries.items():
            where = f"{section}.{entry}" if entry != "" else "root"
            if not isinstance(settings, dict):
                refuse(where, f"must be a mapping, got {settings!r}")
                continue
            for name in set(settings) - _KEYS[section]:
                refuse(f"{where}.{name}", f"the setting {name!r} is not allowed in {section}")
            if section == "handlers":
                _handler(settings, job, lambda what, w=where: refuse(w, what))
    for path, value in _strings(config):
        if value.startswith(("ext://", "cfg://")) and not (
            value in _STREAMS and path.endswith(".stream")
        ):
            refuse(path, f"{value!r} reaches an object outside the config")
    return problems


def _handler(settings: dict[str, Any], job: bool, refuse: Any) -> None:
    klass = settings.get("class")
    if klass not in _HANDLER_CLASSES:
        refuse(f"class {klass!r} is not one of {', '.join(sorted(_HANDLER_CLASSES))}")
    if "stream" in settings and settings["stream"] not in _STREAMS:
        refuse(f"stream {settings['stream']!r} is not one of {', '.join(sorted(_STREAMS))}")
    if klass == "logging.FileHandler":
        if not job or settings.get("filename") != _JOB_LOG:
            refuse(
                f"a file handler may write only the job's own log ({_JOB_LOG}), "
                f"not {settings.get('filename')!r}"
            )
        if settings.get("mode", "a") not in ("a", "w"):
            refuse(f"mode {settings.get('mode')!r} is not 'a' or 'w'")
    elif "filename" in settings or "mode" in settings:
        refuse(f"{klass} takes no file")


def _strings(node: Any, path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------------
# Writes: nothing outside the outputs root, nothing into someone else's files.

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.=,+-]*")
MLCLI_MARKERS = ("status.json", "sweep.json", ".hydra", "run_link.json")
"""Entries of a dir mlcli (or Hydra for mlcli) wrote: a run dir, a sweep dir, a job dir."""


def _plain(value: str) -> bool:
    """A file name inside a dir: no ``/``, not ``.`` or ``..``."""
    return bool(_PLAIN_NAME.fullmatch(value)) and value not in (".", "..")


def write_problems(cfg: Any, multirun: bool) -> list[ConfigProblem]:
    """Settings of a composed job (with its ``hydra`` node) that would write outside the outputs
    root or into files mlcli did not write."""
    from omegaconf import OmegaConf

    problems = []
    hydra = cfg.hydra
    for key in ("output_subdir", "job.name"):
        value = OmegaConf.select(hydra, key, throw_on_missing=False)
        if value is None or OmegaConf.is_missing(hydra, key):
            continue
        if not _plain(str(value)):
            problems.append(
                ConfigProblem(
                    f"hydra.{key}",
                    f"{value!r} is not a plain name (letters, digits, _ . - and no / or ..): "
                    "it names a file or dir inside the run dir",
                )
            )
    root = Path(str(cfg.outputs_root))
    if root.exists() and not root.is_dir():
        problems.append(ConfigProblem("outputs_root", f"{root} is not a directory"))
    elif root.resolve() == Path(root.resolve().anchor):
        problems.append(
            ConfigProblem(
                "outputs_root",
                f"{str(root)!r} is the filesystem root: choose a directory of your own, "
                "e.g. outputs_root=outputs",
            )
        )
    keys = ("sweep.dir", "sweep.subdir") if multirun else ("run.dir",)
    for key in keys:
        raw = _raw(hydra, key)
        if key == "sweep.subdir" and raw in ("${hydra.job.num}", "${hydra.job.id}"):
            continue  # Hydra's default: the job's number
        try:
            if isinstance(raw, str) and not any(s in raw for s in ("${hydra:", "hydra.job.")):
                value = OmegaConf.select(hydra, key, throw_on_missing=True)
            else:  # needs the job's own settings: resolve it as the job will (slower)
                job = _as_job(cfg)
                with _hydra_config(job):
                    value = OmegaConf.select(job.hydra, key, throw_on_missing=True)
        except Exception as error:
            problems.append(
                ConfigProblem(f"hydra.{key}", f"cannot be resolved before the run: {error}")
            )
            continue
        if key == "sweep.subdir":
            parts = Path(str(value)).parts
            if Path(str(value)).is_absolute() or ".." in parts:
                problems.append(
                    ConfigProblem(
                        "hydra.sweep.subdir",
                        f"{value!r} leaves the sweep dir: use a relative name such as "
                        "${hydra.job.num}",
                    )
                )
            continue
        problem = reuse_problem(Path(str(value)))
        if problem:
            problems.append(ConfigProblem(f"hydra.{key}", problem))
    return problems


def _raw(node: Any, key: str) -> Any:
    """The value at dotted ``key`` below ``node`` as written (interpolations unresolved)."""
    for part in key.split("."):
        node = node._get_node(part)
        if node is None:
            return None
    return node._value()


def _as_job(cfg: Any) -> Any:
    """``cfg`` as a job of a sweep sees it (``hydra.job.num`` and ``id`` set)."""
    import copy

    from omegaconf import OmegaConf, open_dict, read_write

    if not OmegaConf.is_missing(cfg.hydra.job, "num"):
        return cfg
    job = copy.deepcopy(cfg)
    with read_write(job.hydra.job), open_dict(job.hydra.job):
        job.hydra.job.num = 0
        job.hydra.job.id = "0"
    return job


def _hydra_config(cfg: Any) -> Any:
    """Within the block, ``${hydra:...}`` resolves against ``cfg`` (as it will in the job)."""
    import contextlib

    from hydra.core.hydra_config import HydraConfig

    @contextlib.contextmanager
    def scope() -> Any:
        instance = HydraConfig.instance()
        previous = instance.cfg
        instance.set_config(cfg)
        try:
            yield
        finally:
            instance.cfg = previous

    return scope()


SUBMITIT_DIR = ".submitit"
"""submitit's folder in a sweep dir (job pickles, logs, and links of its own to its submission
scripts); mlcli never writes inside it."""


def _symlink_below(directory: Path) -> Path | None:
    """The first symbolic link inside ``directory`` (its whole tree, but the inside of a sweep
    dir's ``.submitit`` folder), or None."""
    for parent, subdirs, files in os.walk(directory):
        for name in [*subdirs, *files]:
            if os.path.islink(os.path.join(parent, name)):
                return Path(parent, name)
        if Path(parent) == Path(directory) and SUBMITIT_DIR in subdirs:
            subdirs.remove(SUBMITIT_DIR)
    return None


def reuse_problem(directory: Path) -> str | None:
    """Why mlcli must not write into ``directory`` (None: it does not exist, is empty, or is a
    run, job or sweep dir of mlcli's without symbolic links)."""
    if os.path.islink(directory):
        return f"{directory} is a symbolic link: mlcli writes no run through one"
    if not directory.exists():
        return None
    if not directory.is_dir():
        return f"{directory} exists and is not a directory"
    entries = os.listdir(directory)
    if entries and not any(marker in entries for marker in MLCLI_MARKERS):
        return (
            f"{directory} already holds files mlcli did not write ({', '.join(sorted(entries)[:3])}"
            f"{', ...' if len(entries) > 3 else ''}): choose a new dir"
        )
    link = _symlink_below(directory)
    if link is not None:
        return (
            f"{link} is a symbolic link, and mlcli writes into {directory} again: remove the link "
            "(mlcli never writes through one) or choose a new dir"
        )
    return None


def storage_problem(storage: Any) -> ConfigProblem | None:
    """An Optuna ``storage`` that names an existing file which is not a study (Optuna would
    append to it, or write a database into it)."""
    if storage is None:
        return None
    url = str(storage)
    if url.startswith("sqlite:///"):
        path, header, kind = Path(url[len("sqlite:///") :]), b"SQLite format 3\x00", "SQLite"
    elif "://" in url:
        return None  # a database server, not a file
    else:
        path, header, kind = Path(url), b"", "journal"
    if not path.exists():
        return None
    if not path.is_file():
        return ConfigProblem("hydra.sweeper.storage", f"{path} exists and is not a file")
    try:
        with open(path, "rb") as handle:
            start = handle.read(4096)
    except OSError as error:
        return ConfigProblem("hydra.sweeper.storage", f"{path} cannot be read: {error}")
    if not start:
        return None  # an empty file: nothing in it to lose
    if kind == "SQLite":
        ok = start.startswith(header)
    else:
        first = start.split(b"\n", 1)[0]
        ok = first.startswith(b"{") and b'"op_code"' in first
    if ok:
        return None
    return ConfigProblem(
        "hydra.sweeper.storage",
        f"{path} exists and is not an Optuna {kind} study: Optuna would write into it. "
        "Choose a new file (or leave storage unset: the study lives in the sweep dir)",
    )
