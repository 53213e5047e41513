"""Shared pieces of the structured-config schemas (no torch/pandas import: the CLI uses them)."""

from __future__ import annotations

import enum
from dataclasses import field
from typing import Any


def bound(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value range (``gt``, ``ge``, ``lt``, ``le``) mlcli validates.

    OmegaConf checks types only; :func:`mlcli.config.validate` reads these bounds.
    """
    return field(default=default, metadata=bounds)


class Device(enum.Enum):
    """Where training runs: ``auto`` picks CUDA when it is available."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Normalize(enum.Enum):
    """Feature scaling, fitted on each fold's training rows only."""

    standard = "standard"
    minmax = "minmax"
    none = "none"


class Warmup(enum.Enum):
    """Learning-rate warmup: ``constant`` holds ``warmup_lr``, ``linear`` ramps up from ~0."""

    none = "none"
    constant = "constant"
    linear = "linear"


# `continue` is a keyword, hence the functional form; OmegaConf matches members by name.
OnFailure = enum.Enum("OnFailure", [("continue", "continue"), ("stop", "stop")])
"""What a sweep does after a job fails: run the other jobs (``continue``) or start no more."""
