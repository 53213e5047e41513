"""Schemas of the ``dataset`` group."""

from __future__ import annotations

from dataclasses import dataclass

from mlcli.schemas.base import Normalize, bound


@dataclass
class BuiltinDatasetSchema:
    """A dataset that ships with mlcli (generated or loaded from an installed package)."""

    _target_: str = "???"
    test_fraction: float = bound(0.2, ge=0.0, lt=1.0)
    normalize: Normalize = Normalize.standard
    normalize_target: bool = True
    seed: int = 0


SCHEMAS: dict[str, type] = {"builtin": BuiltinDatasetSchema}
