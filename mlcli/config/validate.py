"""Validation beyond what OmegaConf checks: value ranges and mandatory values, and the one
problem record every check reports (:class:`ConfigProblem`: the key, what is wrong, how to fix).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a composed config."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


_BOUND_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


NO_KEYS = "This option has no keys to set."
"""What an unknown-key error says where the option takes no keys at all (``model=linear``)."""


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
                listed = f"Valid keys here: {valid}" if valid else NO_KEYS
                problems.append(
                    ConfigProblem(
                        full_key,
                        f"unknown key (nothing reads it).{did_you_mean(str(key), known)} {listed}",
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
    problems.extend(logger_problems(cfg))
    return problems


def logger_problems(cfg: Any) -> list[ConfigProblem]:
    """A logger whose package is not installed (looked up, not imported: no start-up cost)."""
    import importlib.util

    from mlcli.config.paths import enum_name

    problems = []
    for logger in (cfg.get("logger") or []) if hasattr(cfg, "get") else []:
        name = enum_name(logger)
        if importlib.util.find_spec(name) is None:
            problems.append(
                ConfigProblem(
                    "logger",
                    f"logger={name} needs the {name} package, which is not installed: "
                    f"pip install 'mlcli[{name}]' (or leave {name} out of logger=[...])",
                )
            )
    return problems


def did_you_mean(word: str, choices: list[str]) -> str:
    """Return ' Did you mean X?' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
