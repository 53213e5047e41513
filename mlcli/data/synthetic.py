"""Seeded synthetic datasets: everything comes from ``generator_seed`` (= ``dataset.seed``)."""

from __future__ import annotations

import numpy as np

from mlcli.data.base import EOS, PAD, Dataset

# Token ids below this are special (PAD, BOS, EOS); content tokens start here.
FIRST_CONTENT_TOKEN = EOS + 1


def piecewise_linear_curve(
    n_pieces: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a continuous zig-zag on [-1, 1]: (knot_x, knot_y), ``n_pieces + 1`` of each.

    Knots are evenly spaced; their heights alternate in sign with magnitudes in [0.5, 1.5], so
    every piece has a clearly different slope and no straight line fits.
    """
    knot_x = np.linspace(-1.0, 1.0, n_pieces + 1)
    signs = np.where(np.arange(n_pieces + 1) % 2 == 0, 1.0, -1.0) * rng.choice([-1.0, 1.0])
    knot_y = signs * rng.uniform(0.5, 1.5, size=n_pieces + 1)
    return knot_x, knot_y


def curve(
    n_samples: int = 500,
    n_pieces: int = 5,
    noise_std: float = 0.1,
    generator_seed: int = 0,
) -> Dataset:
    """A seeded 1-D piecewise-linear curve plus Gaussian noise: y = f(x) + ε, ε ~ N(0, σ²).

    ``x`` is uniform on [-1, 1]; f is :func:`piecewise_linear_curve`. ``meta`` holds the knots
    and ``noise_variance`` (σ²), the smallest expected squared error any model can reach on new
    data, and ``noise_variance_sample``, the mean of the noise actually drawn.
    """
    rng = np.random.default_rng(generator_seed)
    knot_x, knot_y = piecewise_linear_curve(n_pieces, rng)
    x = rng.uniform(-1.0, 1.0, size=n_samples)
    noise = rng.normal(0.0, noise_std, size=n_samples)
    return Dataset(
        name="curve",
        X=x[:, None],
        y=np.interp(x, knot_x, knot_y) + noise,
        task="regression",
        feature_names=["x"],
        source=f"generated: {n_pieces}-piece linear curve + N(0, {noise_std}²) noise",
        meta={
            "noise_variance": noise_std**2,
            "noise_variance_sample": float(np.mean(noise**2)),
            "knot_x": knot_x,
            "knot_y": knot_y,
        },
    )


def seq_reverse(
    n_samples: int = 4000,
    n_symbols: int = 10,
    min_length: int = 3,
    max_length: int = 12,
    generator_seed: int = 0,
) -> Dataset:
    """Sequence to sequence: output the input tokens in reverse order, then ``EOS``.

    Sources are distinct random sequences (lengths uniform in [min_length, max_length]) of
    ``n_symbols`` content tokens (ids 3 .. n_symbols + 2; 0, 1, 2 are PAD, BOS, EOS): ``X``
    int64 (N, max_length) padded with PAD; ``y`` int64 (N, max_length + 1), the reversed tokens,
    EOS, then PAD. ``vocab_size`` = n_symbols + 3. Because sources are distinct, no test
    sequence was seen in training.
    """
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    capacity = sum(n_symbols**length for length in range(min_length, max_length + 1))
    if n_samples > capacity // 2:
        raise ValueError(
            f"only {capacity} distinct sequences exist; ask for at most {capacity // 2} samples"
            " or allow more symbols or longer sequences"
        )
    rng = np.random.default_rng(generator_seed)
    seen: set[bytes] = set()
    X = np.full((n_samples, max_length), PAD, dtype=np.int64)
    y = np.full((n_samples, max_length + 1), PAD, dtype=np.int64)
    lengths = np.zeros(n_samples, dtype=np.int64)
    row = 0
    while row < n_samples:
        length = int(rng.integers(min_length, max_length + 1))
        tokens = rng.integers(FIRST_CONTENT_TOKEN, FIRST_CONTENT_TOKEN + n_symbols, size=length)
        if tokens.tobytes() in seen:
            continue
        seen.add(tokens.tobytes())
        X[row, :length] = tokens
        y[row, :length] = tokens[::-1]
        y[row, length] = EOS
        lengths[row] = length
        row += 1
    return Dataset(
        name="seq_reverse",
        X=X,
        y=y,
        task="seq2seq",
        source=f"generated: reverse random sequences of {n_symbols} symbols",
        lengths=lengths,
        vocab_size=n_symbols + FIRST_CONTENT_TOKEN,
        meta={"n_symbols": n_symbols, "min_length": min_length, "max_length": max_length},
    )


def surface(
    n_samples: int = 256,
    correlation: float = 0.95,
    weights: tuple[float, float] = (1.0, -0.5),
    generator_seed: int = 0,
) -> Dataset:
    """An ill-conditioned error surface: linear regression on two correlated features.

    ``x₁ ~ N(0, 1)``, ``x₂ = ρ·x₁ + √(1 − ρ²)·z`` and ``y = w·x`` without noise. With
    ``model=linear`` the mean squared error is a quadratic bowl in the two weights whose Hessian
    is the features' covariance ``[[1, ρ], [ρ, 1]]`` (after standardization): eigenvalues
    ``1 ± ρ``, a condition number of ``(1 + ρ)/(1 − ρ)`` (39 at ρ = 0.95), a long narrow valley
    that plain gradient descent zig-zags along and adaptive learning rates cope with. The
    weights' trajectory is recorded by ``analysis=trajectory``.
    """
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    rng = np.random.default_rng(generator_seed)
    x1 = rng.normal(size=n_samples)
    x2 = correlation * x1 + np.sqrt(1.0 - correlation**2) * rng.normal(size=n_samples)
    X = np.stack([x1, x2], axis=1)
    w = np.asarray(weights, dtype=np.float64)
    condition = (1.0 + correlation) / (1.0 - correlation)
    return Dataset(
        name="surface",
        X=X,
        y=X @ w,
        task="regression",
        feature_names=["x1", "x2"],
        source=f"generated: y = w·x on two features of correlation {correlation}",
        meta={"correlation": correlation, "condition_number": condition, "weights": list(w)},
    )
