"""Schemas of the ``dataset`` group."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from mlcli.config.schemas.base import Missing, Normalize, TaskChoice, Tokenizer, bound

# Cells that count as missing (kept in sync with mlcli.data.tabular.DEFAULT_NA_VALUES; this
# module must not import pandas).
NA_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")

# Generated datasets draw their data from ``generator_seed``. ``dataset.seed`` stays the runner's
# seed of the random test split: the runner strips it from what the builder receives, and an
# interpolation (``${.seed}``) cannot reach it from the builder's detached node.


@dataclass
class BuiltinDatasetSchema:
    """A dataset that ships with mlcli (generated or loaded from an installed package)."""

    _target_: str = "???"
    test_fraction: float = bound(0.2, ge=0.0, lt=1.0)  # rows held out as the test split
    normalize: Normalize = Normalize.standard  # feature scaling, fitted per fold on train rows
    normalize_target: bool = True  # standardize a regression target for training
    seed: int = 0  # the test split's seed (not the folds', not the weights')
    max_rows: int | None = bound(None, ge=1)  # keep a random subset of this many rows (seeded)
    shuffle_labels: bool = False  # permute the targets over the rows (seeded): random labels


@dataclass
class SunspotsSchema(BuiltinDatasetSchema):
    """Yearly sunspots: predict the next year from ``window`` previous years; the test rows are
    the last ``test_fraction`` of the series."""

    window: int = bound(9, ge=1, le=300)


@dataclass
class CurveSchema(BuiltinDatasetSchema):
    """A seeded piecewise-linear curve plus Gaussian noise of standard deviation ``noise_std``."""

    n_samples: int = bound(500, ge=10)
    n_pieces: int = bound(5, ge=1)
    noise_std: float = bound(0.1, ge=0.0)
    generator_seed: int = 0


@dataclass
class SurfaceSchema(BuiltinDatasetSchema):
    """Two correlated features, y = w·x: an ill-conditioned quadratic error surface."""

    n_samples: int = bound(256, ge=10)
    correlation: float = bound(0.95, ge=0.0, lt=1.0)
    weights: list[float] = field(default_factory=lambda: [1.0, -0.5])
    generator_seed: int = 0


@dataclass
class HmmTaggingSchema(BuiltinDatasetSchema):
    """Per-token tags (hidden states) of sequences sampled from a seeded hidden Markov model."""

    n_samples: int = bound(2000, ge=10)
    n_states: int = bound(5, ge=2)
    symbols_per_state: int = bound(3, ge=1)
    min_length: int = bound(8, ge=1)
    max_length: int = bound(32, ge=1)
    stay: float = bound(0.8, ge=0.0, le=1.0)
    emission_noise: float = bound(0.4, ge=0.0, le=1.0)
    generator_seed: int = 0
    # One-hot observations need no scaling (and padding must stay all-zero).
    normalize: Normalize = Normalize.none


@dataclass
class SeqReverseSchema(BuiltinDatasetSchema):
    """Sequence to sequence: reverse a random token sequence (lengths min_length..max_length)."""

    n_samples: int = bound(4000, ge=10)
    n_symbols: int = bound(10, ge=2)
    min_length: int = bound(3, ge=1)
    max_length: int = bound(12, ge=1)
    generator_seed: int = 0
    # Token ids are categories, never scaled.
    normalize: Normalize = Normalize.none


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


class ImageLabels(enum.Enum):
    """How a picture's class is read: its folder, its file name's prefix, or whichever fits."""

    auto = "auto"
    folder = "folder"
    prefix = "prefix"


class ImageCache(enum.Enum):
    """Where decoded pictures live: memory, none (read per batch), auto (memory if they fit)."""

    auto = "auto"
    memory = "memory"
    none = "none"


@dataclass
class ImagesDatasetSchema(BuiltinDatasetSchema):
    """A folder of pictures of the user's own (``mlcli.data.images``)."""

    _target_: str = "mlcli.data.images"
    path: str = "???"
    labels: ImageLabels = ImageLabels.auto
    channels: int = bound(3, ge=1, le=3)
    size: Any = 64
    test_path: str | None = None
    skip_bad: bool = False
    cache: ImageCache = ImageCache.auto
    cache_max_mb: float = bound(2048.0, gt=0.0)
    num_workers: int = bound(0, ge=0, le=64)
    pin_memory: bool = True
    normalize: Normalize = Normalize.channel


@dataclass
class TokenizedSchema(BuiltinDatasetSchema):
    """The tokenization of the user's text, fitted on each fold's training rows: the tokens seen
    ``min_freq`` times there, at most ``vocab_size`` ids (4 special ones included; null = all),
    each text cut to ``max_length`` tokens."""

    path: str = "???"
    tokenizer: Tokenizer = Tokenizer.word
    vocab_size: int | None = bound(None, ge=5)
    min_freq: int = bound(1, ge=1)
    lowercase: bool = True
    max_length: int = bound(64, ge=1)
    # Token ids are categories, never scaled.
    normalize: Normalize = Normalize.none


@dataclass
class TextSchema(TokenizedSchema):
    """One label per text: column ``text`` of a CSV/TSV file labelled by column ``target``."""

    _target_: str = "mlcli.data.text"
    text: str = "text"
    target: str = "label"
    id_column: str | None = None
    sep: str = ","


@dataclass
class TaggedSchema(TokenizedSchema):
    """One tag per token: a CoNLL-style file (``token TAG`` a line, blank lines between
    sentences)."""

    _target_: str = "mlcli.data.tagged"
    token_column: int = 0
    tag_column: int = -1
    sep: str | None = None
    max_length: int = bound(128, ge=1)


@dataclass
class PairsSchema(TokenizedSchema):
    """Sentence pairs (seq2seq): two columns of a CSV/TSV file, or two aligned files."""

    _target_: str = "mlcli.data.pairs"
    source: str = "source"
    target: str = "target"
    target_path: str | None = None
    sep: str = ","


SCHEMAS: dict[str, type] = {
    "builtin": BuiltinDatasetSchema,
    "sunspots": SunspotsSchema,
    "curve": CurveSchema,
    "surface": SurfaceSchema,
    "hmm_tagging": HmmTaggingSchema,
    "seq_reverse": SeqReverseSchema,
    "csv": CsvDatasetSchema,
    "npz": NpzDatasetSchema,
    "images": ImagesDatasetSchema,
    "text": TextSchema,
    "tagged": TaggedSchema,
    "pairs": PairsSchema,
}
