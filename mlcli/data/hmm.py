"""Sequence labelling data from a seeded hidden Markov model, with its Bayes-optimal accuracy.

The labels are the hidden states. Because the true model is known, the best accuracy any tagger
can reach is known too: decoding each token with its posterior marginal (forward-backward)
maximizes the expected number of correct tags, so its accuracy on the data is the Bayes-optimal
per-token accuracy. Viterbi decoding (the single most probable state sequence) is stored beside
it; it maximizes whole-sequence accuracy and is at most as good per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlcli.data.base import IGNORE_INDEX, Dataset


@dataclass
class HMM:
    """A discrete HMM: ``start`` (S,), ``transition`` (S, S) rows = from, ``emission`` (S, V)."""

    start: np.ndarray
    transition: np.ndarray
    emission: np.ndarray

    @property
    def n_states(self) -> int:
        """Number of hidden states (tags)."""
        return int(self.transition.shape[0])

    @property
    def n_symbols(self) -> int:
        """Number of observable symbols."""
        return int(self.emission.shape[1])


def random_hmm(
    rng: np.random.Generator,
    n_states: int,
    symbols_per_state: int,
    stay: float,
    emission_noise: float,
) -> HMM:
    """Draw an HMM whose states persist and emit telling but noisy symbols.

    Transition rows put ``stay`` on the diagonal and spread the rest with a Dirichlet(1) draw, so
    neighbouring tokens carry information about each other. Each state owns
    ``symbols_per_state`` symbols and emits one of them (Dirichlet(1) weights) with probability
    ``1 - emission_noise``, otherwise any symbol uniformly: the noise is what context has to undo.
    """
    n_symbols = n_states * symbols_per_state
    start = rng.dirichlet(np.ones(n_states))
    transition = np.zeros((n_states, n_states))
    emission = np.full((n_states, n_symbols), emission_noise / n_symbols)
    for i in range(n_states):
        others = rng.dirichlet(np.ones(n_states - 1)) * (1.0 - stay)
        transition[i] = np.insert(others, i, stay)
        own = slice(i * symbols_per_state, (i + 1) * symbols_per_state)
        emission[i, own] += (1.0 - emission_noise) * rng.dirichlet(np.ones(symbols_per_state))
    return HMM(start, transition, emission)


def sample(
    hmm: HMM, lengths: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample (observations, states), each (N, max(lengths)) int64, padded with 0."""
    n, t_max = len(lengths), int(lengths.max())
    states = np.zeros((n, t_max), dtype=np.int64)
    observations = np.zeros((n, t_max), dtype=np.int64)
    cum_start = np.cumsum(hmm.start)
    cum_transition = np.cumsum(hmm.transition, axis=1)
    cum_emission = np.cumsum(hmm.emission, axis=1)

    def draw(cumulative: np.ndarray) -> np.ndarray:
        # Inverse-CDF sampling, one uniform per row; min() guards against cumsum rounding.
        index = (rng.random((len(cumulative), 1)) > cumulative).sum(axis=1)
        return np.minimum(index, cumulative.shape[1] - 1)

    current = draw(np.broadcast_to(cum_start, (n, hmm.n_states)))
    for t in range(t_max):
        if t > 0:
            current = draw(cum_transition[current])
        states[:, t] = current
        observations[:, t] = draw(cum_emission[current])
    valid = np.arange(t_max) < lengths[:, None]
    return np.where(valid, observations, 0), np.where(valid, states, 0)


def posterior_marginals(hmm: HMM, observations: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """P(state_t = s | whole sequence) by scaled forward-backward: (N, T, S); padding is 0."""
    n, t_max = observations.shape
    valid = np.arange(t_max) < lengths[:, None]
    emit = hmm.emission[:, observations].transpose(1, 2, 0)  # (N, T, S): P(o_t | s)
    alpha = np.zeros((n, t_max, hmm.n_states))
    a = hmm.start * emit[:, 0]
    alpha[:, 0] = a / a.sum(axis=1, keepdims=True)
    for t in range(1, t_max):
        a = (alpha[:, t - 1] @ hmm.transition) * emit[:, t]
        a = a / np.where(valid[:, t, None], a.sum(axis=1, keepdims=True), 1.0)
        alpha[:, t] = np.where(valid[:, t, None], a, 0.0)
    beta = np.ones((n, t_max, hmm.n_states))
    for t in range(t_max - 2, -1, -1):
        b = (emit[:, t + 1] * beta[:, t + 1]) @ hmm.transition.T
        b = b / b.sum(axis=1, keepdims=True)
        # beta stays 1 at each sequence's last step and beyond.
        beta[:, t] = np.where((t + 1 < lengths)[:, None], b, 1.0)
    gamma = alpha * beta
    total = gamma.sum(axis=2, keepdims=True)
    return np.where(valid[..., None], gamma / np.where(total > 0, total, 1.0), 0.0)


def viterbi(hmm: HMM, observations: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The most probable state sequence of each row: (N, T) int64; padding is 0."""
    n, t_max = observations.shape
    valid = np.arange(t_max) < lengths[:, None]
    with np.errstate(divide="ignore"):
        log_start, log_transition = np.log(hmm.start), np.log(hmm.transition)
        log_emit = np.log(hmm.emission)[:, observations].transpose(1, 2, 0)
    score = log_start + log_emit[:, 0]
    back = np.zeros((n, t_max, hmm.n_states), dtype=np.int64)
    identity = np.broadcast_to(np.arange(hmm.n_states), (n, hmm.n_states))
    for t in range(1, t_max):
        candidates = score[:, :, None] + log_transition  # (N, from, to)
        best_from = candidates.argmax(axis=1)
        new_score = np.take_along_axis(candidates, best_from[:, None, :], axis=1)[:, 0]
        new_score = new_score + log_emit[:, t]
        # Past a sequence's end its score is frozen and the backpointer is the identity.
        score = np.where(valid[:, t, None], new_score, score)
        back[:, t] = np.where(valid[:, t, None], best_from, identity)
    path = np.zeros((n, t_max), dtype=np.int64)
    state = score.argmax(axis=1)
    for t in range(t_max - 1, -1, -1):
        path[:, t] = state
        state = back[np.arange(n), t, state]
    return np.where(valid, path, 0)


def context_free_predictions(hmm: HMM, observations: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The best tags that see only each token and its position: argmax_s P(s_t = s) P(o_t | s)."""
    t_max = observations.shape[1]
    prior = np.zeros((t_max, hmm.n_states))
    prior[0] = hmm.start
    for t in range(1, t_max):
        prior[t] = prior[t - 1] @ hmm.transition
    score = prior[None] * hmm.emission[:, observations].transpose(1, 2, 0)
    return np.where(np.arange(t_max) < lengths[:, None], score.argmax(axis=2), 0)


def tag_accuracy(predictions: np.ndarray, y: np.ndarray) -> float:
    """Per-token accuracy over the positions whose target is not ``IGNORE_INDEX``."""
    valid = y != IGNORE_INDEX
    return float((predictions[valid] == y[valid]).mean())


def hmm_tagging(
    n_samples: int = 2000,
    n_states: int = 5,
    symbols_per_state: int = 3,
    min_length: int = 8,
    max_length: int = 32,
    stay: float = 0.8,
    emission_noise: float = 0.4,
    generator_seed: int = 0,
) -> Dataset:
    """Tag each observed symbol with the hidden state of a seeded HMM (per-token labels).

    ``X`` is one-hot observations, float32 (N, max_length, n_symbols), zero rows at padding;
    ``y`` the hidden states, int64 (N, max_length), ``IGNORE_INDEX`` at padding; lengths are
    uniform in [min_length, max_length]. ``meta`` holds the true HMM, the Bayes-optimal
    (posterior-marginal) and Viterbi per-token accuracies on all rows, the best accuracy without
    context (``context_free_accuracy``: each token and its position alone), both decoders'
    predictions (``bayes_predictions``, ``viterbi_predictions``) so the same figures can be
    computed on any subset (e.g. the test rows) with :func:`tag_accuracy`.
    """
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    rng = np.random.default_rng(generator_seed)
    hmm = random_hmm(rng, n_states, symbols_per_state, stay, emission_noise)
    n_symbols = hmm.n_symbols
    lengths = rng.integers(min_length, max_length + 1, size=n_samples)
    observations, states = sample(hmm, lengths, rng)
    valid = np.arange(max_length) < lengths[:, None]
    if observations.shape[1] < max_length:  # pad to max_length so shapes do not depend on luck
        extra = max_length - observations.shape[1]
        observations = np.pad(observations, ((0, 0), (0, extra)))
        states = np.pad(states, ((0, 0), (0, extra)))
    y = np.where(valid, states, IGNORE_INDEX)
    bayes = np.where(valid, posterior_marginals(hmm, observations, lengths).argmax(axis=2), 0)
    best_path = viterbi(hmm, observations, lengths)
    X = np.eye(n_symbols, dtype=np.float32)[observations] * valid[..., None]
    return Dataset(
        name="hmm_tagging",
        X=X,
        y=y,
        task="tagging",
        class_names=[f"state {s}" for s in range(n_states)],
        feature_names=[f"symbol {v}" for v in range(n_symbols)],
        source=f"generated: seeded hidden Markov model ({n_states} states, {n_symbols} symbols)",
        lengths=lengths,
        meta={
            "bayes_accuracy": tag_accuracy(bayes, y),
            "viterbi_accuracy": tag_accuracy(best_path, y),
            "context_free_accuracy": tag_accuracy(
                context_free_predictions(hmm, observations, lengths), y
            ),
            "bayes_predictions": bayes,
            "viterbi_predictions": best_path,
            "observations": observations,
            "hmm": hmm,
        },
    )
