"""Dataset builders: each returns one in-memory :class:`Dataset`."""

from mlcli.data.arrays import npz
from mlcli.data.base import Dataset, Task
from mlcli.data.errors import DataError
from mlcli.data.sklearn_sets import diabetes, digits, wine
from mlcli.data.tabular import csv

__all__ = ["DataError", "Dataset", "Task", "csv", "diabetes", "digits", "npz", "wine"]
