"""Schemas of the ``dataset`` group."""

from __future__ import annotations

from dataclasses import dataclass

from mlcli.schemas.base import Normalize, bound

# Generated datasets draw their data from ``generator_seed``. ``dataset.seed`` stays the runner's
# seed of the random test split: the runner strips it from what the builder receives, and an
# interpolation (``${.seed}``) cannot reach it from the builder's detached node.


@dataclass
class BuiltinDatasetSchema:
    """A dataset that ships with mlcli (generated or loaded from an installed package)."""

    _target_: str = "???"
    test_fraction: float = bound(0.2, ge=0.0, lt=1.0)
    normalize: Normalize = Normalize.standard
    normalize_target: bool = True
    seed: int = 0


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


SCHEMAS: dict[str, type] = {
    "builtin": BuiltinDatasetSchema,
    "sunspots": SunspotsSchema,
    "curve": CurveSchema,
    "hmm_tagging": HmmTaggingSchema,
    "seq_reverse": SeqReverseSchema,
}
