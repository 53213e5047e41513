"""Datasets read from small files shipped inside mlcli (``mlcli/data/files/``, sources in its
README.md); ``mlcli/data/files/extract_shipped_data.py`` regenerates them. Nothing is downloaded."""

from __future__ import annotations

import itertools
from importlib import resources
from typing import Any

import numpy as np

from mlcli.data.base import Dataset


def _file(name: str) -> Any:
    return resources.files("mlcli.data").joinpath("files", name)


def sunspots_series() -> tuple[np.ndarray, np.ndarray]:
    """Yearly mean sunspot numbers 1700-2008: (years int64, values float64)."""
    with _file("sunspots_yearly.csv").open("r") as handle:
        table = np.loadtxt(handle, delimiter=",", comments="#", skiprows=4)
    return table[:, 0].astype(np.int64), table[:, 1]


def sunspots(window: int = 9) -> Dataset:
    """Predict a year's sunspot number from the ``window`` years before it (an AR-style task).

    Row i has the inputs ``x[i : i + window]`` (oldest first) and the target ``x[i + window]``;
    309 years give ``309 - window`` rows, in time order. ``meta["time_ordered"]`` tells the
    runner to hold out the *last* rows as the test split (``dataset.test_fraction``), never a
    random draw. ``meta["years"]`` is the year of each target.
    """
    years, values = sunspots_series()
    if not 1 <= window < len(values):
        raise ValueError(f"window must be in [1, {len(values) - 1}], got {window}")
    inputs = np.lib.stride_tricks.sliding_window_view(values[:-1], window)
    return Dataset(
        name="sunspots",
        X=inputs,
        y=values[window:],
        task="regression",
        feature_names=[f"t-{lag}" for lag in range(window, 0, -1)],
        source="yearly mean sunspot numbers 1700-2008 (NOAA NGDC, via statsmodels), shipped",
        meta={"time_ordered": True, "years": years[window:], "window": window},
    )


def japanese_vowels() -> Dataset:
    """UEA JapaneseVowels: 640 utterances of /ae/ by 9 speakers; classify the speaker.

    Each utterance is 7-29 frames of 12 LPC cepstrum coefficients: ``X`` is float32
    (640, 29, 12), zero-padded after each utterance's ``lengths``. Its own split: the first 270
    rows train (30 per speaker), the last 370 test (``test_index``).
    """
    with _file("japanese_vowels.npz").open("rb") as handle, np.load(handle) as archive:
        frames, lengths, labels = archive["frames"], archive["lengths"], archive["y"]
        n_train = int(archive["n_train"])
    lengths = lengths.astype(np.int64)
    X = np.zeros((len(lengths), int(lengths.max()), frames.shape[1]), dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for i, (begin, end) in enumerate(itertools.pairwise(offsets)):
        X[i, : end - begin] = frames[begin:end]
    return Dataset(
        name="japanese_vowels",
        X=X,
        y=labels,
        task="classification",
        class_names=[f"speaker {k}" for k in range(1, 10)],
        feature_names=[f"lpc {c}" for c in range(1, frames.shape[1] + 1)],
        test_index=np.arange(n_train, len(lengths)),
        source="UEA/UCR archive JapaneseVowels (Kudo et al. 1999, UCI), sktime's copy, shipped",
        lengths=lengths,
        meta={"max_length": int(lengths.max())},
    )


def mnist1d() -> Dataset:
    """MNIST-1D (Greydanus 2020): 5000 one-dimensional signals of length 40, 10 digit classes.

    Generated once by the ``mnist1d`` package's own ``make_dataset`` with its default arguments
    (seed 42) and shipped. ``X`` is float32 (5000, 1, 40): one channel, so a Conv1d applies
    directly (an MLP flattens it). Its own split, as in the paper: the first 4000 rows train,
    the last 1000 test (``test_index``).
    """
    with _file("mnist1d.npz").open("rb") as handle, np.load(handle) as archive:
        x, y, n_train = archive["x"], archive["y"], int(archive["n_train"])
    return Dataset(
        name="mnist1d",
        X=x[:, None, :],
        y=y,
        task="classification",
        class_names=[str(c) for c in range(10)],
        test_index=np.arange(n_train, len(y)),
        source="MNIST-1D (Greydanus 2020) from the mnist1d package's make_dataset, shipped",
    )
