"""Dataset builders: each returns one in-memory :class:`Dataset`."""

from mlcli.data.arrays import npz
from mlcli.data.base import BOS, EOS, IGNORE_INDEX, PAD, Dataset, Task
from mlcli.data.errors import DataError
from mlcli.data.hmm import hmm_tagging
from mlcli.data.images import images
from mlcli.data.shipped import japanese_vowels, mnist1d, sunspots
from mlcli.data.sklearn_sets import breast_cancer, diabetes, digits, iris, wine
from mlcli.data.synthetic import curve, seq_reverse, surface
from mlcli.data.tabular import csv
from mlcli.data.textfiles import pairs, tagged, text

__all__ = [
    "BOS",
    "EOS",
    "IGNORE_INDEX",
    "PAD",
    "DataError",
    "Dataset",
    "Task",
    "breast_cancer",
    "csv",
    "curve",
    "diabetes",
    "digits",
    "hmm_tagging",
    "images",
    "iris",
    "japanese_vowels",
    "mnist1d",
    "npz",
    "pairs",
    "seq_reverse",
    "sunspots",
    "surface",
    "tagged",
    "text",
    "wine",
]
