"""Small seeded sequence datasets for tests (used as ``dataset._target_=tests.synthetic.NAME``)."""

from __future__ import annotations

import numpy as np

from mlcli.data.base import EOS, PAD, Dataset

VOCAB = 8  # PAD, BOS, EOS and 5 content tokens


def _lengths(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    return rng.integers(low, high + 1, size=n)


def tagging(n: int = 96, max_length: int = 10) -> Dataset:
    """Token ids 3..7; the tag of a token is its parity (0/1)."""
    rng = np.random.default_rng(0)
    lengths = _lengths(rng, n, 3, max_length)
    x = np.zeros((n, max_length), np.int64)
    y = np.full((n, max_length), -100, np.int64)
    for i, length in enumerate(lengths):
        tokens = rng.integers(3, VOCAB, size=length)
        x[i, :length] = tokens
        y[i, :length] = tokens % 2
    return Dataset("tagging", x, y, "tagging", lengths=lengths, vocab_size=VOCAB)


def vectors(n: int = 96, max_length: int = 12) -> Dataset:
    """Variable-length 2-feature sequences; the class is the sign of the first feature's mean."""
    rng = np.random.default_rng(0)
    lengths = _lengths(rng, n, 2, max_length)
    x = np.zeros((n, max_length, 2), np.float32)
    y = np.zeros(n, np.int64)
    for i, length in enumerate(lengths):
        x[i, :length] = rng.normal(size=(length, 2)) + np.array([rng.choice([-1.0, 1.0]), 5.0])
        y[i] = int(x[i, :length, 0].mean() > 0)
    return Dataset("vectors", x, y, "classification", lengths=lengths)


def reverse(n: int = 96, max_length: int = 6) -> Dataset:
    """Reverse a sequence of token ids 3..7; targets end with EOS, padded with PAD."""
    rng = np.random.default_rng(0)
    lengths = _lengths(rng, n, 2, max_length)
    x = np.full((n, max_length), PAD, np.int64)
    y = np.full((n, max_length + 1), PAD, np.int64)
    for i, length in enumerate(lengths):
        tokens = rng.integers(3, VOCAB, size=length)
        x[i, :length] = tokens
        y[i, : length + 1] = np.r_[tokens[::-1], EOS]
    return Dataset("reverse", x, y, "seq2seq", lengths=lengths, vocab_size=VOCAB)
