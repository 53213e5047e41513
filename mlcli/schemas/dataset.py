"""Schemas of the ``dataset`` group."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlcli.schemas.base import Missing, Normalize, TaskChoice, bound

# Cells that count as missing (kept in sync with mlcli.data.tabular.DEFAULT_NA_VALUES; this
# module must not import pandas).
NA_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")


@dataclass
class BuiltinDatasetSchema:
    """A dataset that ships with mlcli (generated or loaded from an installed package)."""

    _target_: str = "???"
    test_fraction: float = bound(0.2, ge=0.0, lt=1.0)
    normalize: Normalize = Normalize.standard
    normalize_target: bool = True
    seed: int = 0


@dataclass
class CsvDatasetSchema(BuiltinDatasetSchema):
    """A CSV file of the user's own (``mlcli.data.csv``)."""

    _target_: str = "mlcli.data.csv"
    path: str = "???"
    target: str = "???"
    features: list[str] | None = None
    drop: list[str] = field(default_factory=list)
    task: TaskChoice = TaskChoice.auto
    categorical: list[str] | None = None
    missing: Missing = Missing.error
    group: str | None = None
    test_path: str | None = None
    window: int | None = bound(None, ge=1)
    sep: str = ","
    na_values: list[str] = field(default_factory=lambda: list(NA_VALUES))


@dataclass
class NpzDatasetSchema(BuiltinDatasetSchema):
    """Arrays of the user's own saved with ``numpy.savez`` (``mlcli.data.npz``)."""

    _target_: str = "mlcli.data.npz"
    path: str = "???"
    task: TaskChoice = TaskChoice.auto


SCHEMAS: dict[str, type] = {
    "builtin": BuiltinDatasetSchema,
    "csv": CsvDatasetSchema,
    "npz": NpzDatasetSchema,
}
