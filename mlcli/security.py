"""What a command line or a shared config file may make mlcli do.

Configs and sweep commands get copied between students and from the internet. Besides the
``_target_`` allowlist (:mod:`mlcli.build`), three Hydra features can run code or touch arbitrary
files before mlcli's own code runs:

* ``hydra.job.env_set.*`` sets environment variables for the job (e.g.
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` switches torch's safe loading off);
* ``hydra.callbacks.*`` are instantiated by Hydra itself, with any ``_target_``;
* ``hydra.searchpath`` and the logging configs (``hydra/job_logging``, ``hydra/hydra_logging``,
  ``hydra.job_logging.*``) load configs from, or write logs to, any path, and Python's logging
  ``dictConfig`` calls any factory given as ``()``.

Each is refused, from the command line and in the composed Hydra config alike, unless the user
passes ``--trust-overrides``; that choice is recorded in every run's ``status.json``.
"""

from __future__ import annotations

import os
from typing import Any

from mlcli.config import ConfigProblem

TRUST_ENV = "MLCLI_TRUST_OVERRIDES"
DANGEROUS_PREFIXES = (
    "hydra.job.env_set",
    "hydra.searchpath",
    "hydra.callbacks",
    "hydra.job_logging",
    "hydra.hydra_logging",
)
DANGEROUS_GROUPS = ("hydra/job_logging", "hydra/hydra_logging", "hydra/callbacks")
# Logging configs Hydra ships; anything else comes from a file someone wrote.
SAFE_LOGGING_CHOICES = {"default", "disabled", "none", "stdout", None}

_FIX = "refused unless you pass --trust-overrides (only do that for a command you wrote yourself)"


def trusted() -> bool:
    """True when the current command was started with ``--trust-overrides``."""
    return os.environ.get(TRUST_ENV) == "1"


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


def hydra_config_problems(hydra: Any) -> list[ConfigProblem]:
    """Check a composed ``hydra`` node, wherever its settings came from (command line or files)."""
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
        if choices.get(group) not in SAFE_LOGGING_CHOICES:
            problems.append(
                ConfigProblem(group, f"a logging config from a file ({choices.get(group)}): {_FIX}")
            )
    for name in ("job_logging", "hydra_logging"):
        container = OmegaConf.to_container(hydra[name], resolve=False)
        if _has_factory(container):
            problems.append(
                ConfigProblem(f"hydra.{name}", f"a logging factory '()' calls any code: {_FIX}")
            )
    return problems
