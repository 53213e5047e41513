"""Dataset builders: each returns one in-memory :class:`Dataset`."""

from mlcli.data.base import Dataset, Task
from mlcli.data.sklearn_sets import diabetes, digits, wine

__all__ = ["Dataset", "Task", "diabetes", "digits", "wine"]
