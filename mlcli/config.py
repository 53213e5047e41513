"""Where configs live, the structured-config schemas, and validation before any work.

This module must stay cheap to import: the CLI uses it for ``--help``, completion and errors, so it
imports neither torch nor pandas. Hydra is imported lazily by the functions that need it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUPS: tuple[str, ...] = ("dataset", "model", "optim", "scheduler", "cv", "analysis")
"""The config groups every experiment is made of, in the order of the defaults list."""

CONFIG_NAME = "config"

NON_RESULT_KEYS: tuple[str, ...] = (
    "outputs_root",
    "progress",
    "allow_targets",
    "stack_folds",  # stacked, parallel and sequential folds compute the same results
    "parallel_folds",
    "on_failure",
    "checkpoint_every",
)
"""Top-level keys that never change what a run computes: not in the run key, not report columns."""


def packaged_conf_dir() -> Path:
    """Return the directory holding mlcli's own configs.

    An installed wheel carries them as ``mlcli/conf``; a source checkout (editable install) keeps
    them in the repository's top-level ``conf/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mlcli's configs were not found next to {here}")


def user_conf_dir(cwd: Path | None = None) -> Path | None:
    """Return ``./conf`` when the user has one that is not mlcli's own packaged conf dir."""
    candidate = (cwd or Path.cwd()) / "conf"
    if not candidate.is_dir():
        return None
    if candidate.resolve() == packaged_conf_dir():
        return None
    return candidate.resolve()


def search_dirs(config_dir: str | None = None) -> list[Path]:
    """Config directories in search order: ``--config-dir`` or ``./conf`` first, then mlcli's."""
    dirs: list[Path] = []
    if config_dir:
        dirs.append(Path(config_dir).resolve())
    else:
        user = user_conf_dir()
        if user is not None:
            dirs.append(user)
    dirs.append(packaged_conf_dir())
    return dirs


def group_options(config_dir: str | None = None) -> dict[str, list[str]]:
    """List each group's options by reading the config directories (no Hydra import: instant)."""
    options: dict[str, set[str]] = {group: set() for group in GROUPS}
    for directory in search_dirs(config_dir):
        for group in GROUPS:
            group_dir = directory / group
            if group_dir.is_dir():
                options[group].update(p.stem for p in group_dir.glob("*.yaml"))
    return {group: sorted(names) for group, names in options.items()}


_STORED_IN: list[Any] = []
"""The ConfigStore the schemas were stored in (storing converts each dataclass: ~20 ms)."""


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (once per store)."""
    from hydra.core.config_store import ConfigStore

    from mlcli.schemas import SCHEMAS

    store = ConfigStore.instance()
    if _STORED_IN and _STORED_IN[0] is store:
        return
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}".rstrip("/"), name=name, node=schema)
    _STORED_IN[:] = [store]


# --------------------------------------------------------------------------------------------------
# Validation beyond what OmegaConf checks: value ranges and mandatory values.


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a composed config."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


_BOUND_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _violates(value: float, bound: str, limit: float) -> bool:
    return {
        "gt": value <= limit,
        "ge": value < limit,
        "lt": value >= limit,
        "le": value > limit,
    }[bound]


def _walk(node: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    """Yield (dotted key, DictConfig, schema type) for every structured node below ``node``."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    yield prefix, node, schema
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from _walk(child, f"{prefix}.{key!s}" if prefix else str(key))


def validate(cfg: Any) -> list[ConfigProblem]:
    """Check a composed config: mandatory values present, numbers inside their schema's range."""
    from omegaconf import OmegaConf

    problems: list[ConfigProblem] = []
    for key in OmegaConf.missing_keys(cfg):
        problems.append(
            ConfigProblem(
                key, f"a value is required; set it with `{key}=VALUE` on the command line"
            )
        )
    for prefix, node, schema in _walk(cfg, ""):
        if schema is None or not dataclasses.is_dataclass(schema):
            continue
        known = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in known:
                full_key = f"{prefix}.{key}" if prefix else str(key)
                valid = ", ".join(k for k in known if not k.startswith("_"))
                problems.append(
                    ConfigProblem(
                        full_key,
                        f"unknown key (nothing reads it).{did_you_mean(str(key), known)} "
                        f"Valid keys here: {valid}",
                    )
                )
        for f in dataclasses.fields(schema):
            bounds = {k: v for k, v in f.metadata.items() if k in _BOUND_TEXT}
            if not bounds or f.name not in node or OmegaConf.is_missing(node, f.name):
                continue
            value = node[f.name]
            if value is None or isinstance(value, bool):
                continue
            for bound, limit in bounds.items():
                if _violates(float(value), bound, float(limit)):
                    rule = " and ".join(f"{_BOUND_TEXT[b]} {lim:g}" for b, lim in bounds.items())
                    full_key = f"{prefix}.{f.name}" if prefix else f.name
                    problems.append(ConfigProblem(full_key, f"got {value!r}, must be {rule}"))
                    break
    return problems


def did_you_mean(word: str, choices: list[str]) -> str:
    """Return ' Did you mean X?' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def env_flag(name: str) -> bool:
    """True when an environment variable is set to a truthy value."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
