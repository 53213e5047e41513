"""Every dataset builds offline, follows the data contract, is deterministic, and its stated facts
(own splits, time order, noise variance, Bayes-optimal tagging accuracy) hold."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import numpy as np
import pytest

from mlcli import data, runner
from mlcli.cv import hold_out_test
from mlcli.data import BOS, EOS, IGNORE_INDEX, PAD
from mlcli.data.hmm import HMM, posterior_marginals, random_hmm, sample, tag_accuracy, viterbi
from mlcli.data.shipped import sunspots_series
from mlcli.rundir import read_json
from tests import docs

QUICK = ["epochs=1", "cv=holdout", "progress=false"]

FILES = Path(data.__file__).parent / "files"

# name -> (task, X shape, X dtype, y shape, out_features), with the packaged config's defaults.
CONTRACT = {
    "iris": ("classification", (150, 4), np.float32, (150,), 3),
    "breast_cancer": ("classification", (569, 30), np.float32, (569,), 2),
    "sunspots": ("regression", (300, 9), np.float32, (300,), 1),
    "curve": ("regression", (500, 1), np.float32, (500,), 1),
    "japanese_vowels": ("classification", (640, 29, 12), np.float32, (640,), 9),
    "mnist1d": ("classification", (5000, 1, 40), np.float32, (5000,), 10),
    "hmm_tagging": ("tagging", (2000, 32, 15), np.float32, (2000, 32), 5),
    "seq_reverse": ("seq2seq", (4000, 12), np.int64, (4000, 13), 13),
}


def _build(compose, name: str, *overrides: str) -> data.Dataset:
    return runner.build_dataset(compose(f"dataset={name}", *overrides))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dataset tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_dataset_builds_offline_with_the_contracts_shapes(compose, name):
    task, x_shape, x_dtype, y_shape, out_features = CONTRACT[name]
    dataset = _build(compose, name)
    assert dataset.name == name and dataset.source
    assert dataset.task == task
    assert dataset.X.shape == x_shape and dataset.X.dtype == x_dtype
    assert dataset.y.shape == y_shape
    assert dataset.y.dtype == (np.float32 if task == "regression" else np.int64)
    assert dataset.out_features == out_features
    assert dataset.in_shape == x_shape[1:]
    if task == "classification":
        assert set(np.unique(dataset.y)) == set(range(out_features))


@pytest.mark.parametrize("name", ["curve", "hmm_tagging", "seq_reverse"])
def test_generated_datasets_are_deterministic_per_generator_seed(compose, name):
    first = _build(compose, name, "dataset.n_samples=300")
    again = _build(compose, name, "dataset.n_samples=300")
    other = _build(compose, name, "dataset.n_samples=300", "dataset.generator_seed=1")
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.y, again.y)
    assert not np.array_equal(first.X, other.X)


def test_shipped_files_are_small():
    sizes = {path.name: path.stat().st_size for path in FILES.iterdir() if path.is_file()}
    assert {"sunspots_yearly.csv", "japanese_vowels.npz", "mnist1d.npz", "README.md"} <= set(sizes)
    assert all(size < 1_000_000 for size in sizes.values()), sizes


# ---- own splits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_train", "n_test"), [("japanese_vowels", 270, 370), ("mnist1d", 4000, 1000)]
)
def test_own_train_test_split(compose, name, n_train, n_test):
    dataset = _build(compose, name)
    dev, test = hold_out_test(dataset, test_fraction=0.2, seed=0)
    assert (len(dev), len(test)) == (n_train, n_test)
    np.testing.assert_array_equal(test, np.arange(n_train, n_train + n_test))


def test_japanese_vowels_sequences_are_zero_padded_after_their_length():
    dataset = data.japanese_vowels()
    assert dataset.lengths is not None
    assert dataset.lengths.min() == 7 and dataset.lengths.max() == 29
    assert int(dataset.lengths.sum()) == 9961
    steps = np.arange(29)[None, :]
    assert np.all(dataset.X[steps >= dataset.lengths[:, None]] == 0)
    # Every valid frame has non-zero coefficients (a real LPC frame is never all zero).
    assert np.all(np.abs(dataset.X[steps < dataset.lengths[:, None]]).sum(axis=1) > 0)
    np.testing.assert_array_equal(np.bincount(dataset.y[:270]), [30] * 9)
    np.testing.assert_array_equal(
        np.bincount(dataset.y[270:]), [31, 35, 88, 44, 29, 24, 40, 50, 29]
    )


def test_mnist1d_matches_the_generated_benchmark():
    dataset = data.mnist1d()
    # Class counts of the 4000 training rows that mnist1d's make_dataset (seed 42) produced.
    np.testing.assert_array_equal(
        np.bincount(dataset.y[:4000]), [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]
    )
    # make_dataset centres the whole set and scales it to unit standard deviation.
    assert abs(float(dataset.X.mean())) < 1e-5
    assert float(dataset.X.std()) == pytest.approx(1.0, abs=1e-5)


# ---- sunspots: windows and time order --------------------------------------------------------


def test_sunspots_windows_hold_the_previous_years():
    years, values = sunspots_series()
    assert (years[0], years[-1], len(years)) == (1700, 2008, 309)
    assert (values[0], values[-1]) == (5.0, 2.9)
    dataset = data.sunspots(window=4)
    assert dataset.X.shape == (305, 4)
    np.testing.assert_array_equal(dataset.X[10], values[10:14].astype(np.float32))
    assert dataset.y[10] == np.float32(values[14])
    assert dataset.meta["years"][10] == 1714


def test_sunspots_test_rows_are_the_last_ones(compose):
    cfg = compose("dataset=sunspots", "dataset.seed=7")
    dataset = runner.build_dataset(cfg)
    assert dataset.meta["time_ordered"] is True
    dev, test = hold_out_test(dataset, float(cfg.dataset.test_fraction), int(cfg.dataset.seed))
    np.testing.assert_array_equal(dev, np.arange(240))
    np.testing.assert_array_equal(test, np.arange(240, 300))
    assert dataset.meta["years"][test[0]] == 1949 and dataset.meta["years"][test[-1]] == 2008


# ---- curve ------------------------------------------------------------------------------------


def test_curve_noise_has_the_stated_variance_and_no_line_fits():
    dataset = data.curve(n_samples=4000, noise_std=0.2, generator_seed=3)
    meta = dataset.meta
    x = dataset.X[:, 0].astype(np.float64)
    residual = dataset.y - np.interp(x, meta["knot_x"], meta["knot_y"])
    assert meta["noise_variance"] == pytest.approx(0.04)
    assert float(np.mean(residual**2)) == pytest.approx(meta["noise_variance_sample"], rel=1e-4)
    # Sample variance of 4000 Gaussian draws: relative standard error sqrt(2/4000) ≈ 2.2%.
    assert meta["noise_variance_sample"] == pytest.approx(0.04, rel=0.1)
    # A straight line leaves an error far above the noise floor: the curve needs a non-linear model.
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(design, dataset.y, rcond=None)
    assert float(np.mean((design @ coef - dataset.y) ** 2)) > 5 * meta["noise_variance"]


# ---- hmm_tagging ------------------------------------------------------------------------------


def _brute_force(hmm: HMM, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior marginals (T, S) and the most probable path, by enumerating every state path."""
    length = len(observations)
    marginals = np.zeros((length, hmm.n_states))
    best, best_path = -1.0, None
    for path in itertools.product(range(hmm.n_states), repeat=length):
        p = hmm.start[path[0]] * hmm.emission[path[0], observations[0]]
        for t in range(1, length):
            p *= hmm.transition[path[t - 1], path[t]] * hmm.emission[path[t], observations[t]]
        marginals[np.arange(length), path] += p
        if p > best:
            best, best_path = p, path
    return marginals / marginals.sum(axis=1, keepdims=True), np.asarray(best_path)


def test_forward_backward_and_viterbi_match_brute_force_enumeration():
    rng = np.random.default_rng(0)
    hmm = HMM(
        start=rng.dirichlet(np.ones(3)),
        transition=rng.dirichlet(np.ones(3), size=3),
        emission=rng.dirichlet(np.ones(4), size=3),
    )
    lengths = np.array([1, 3, 6, 6, 4])
    observations = np.where(
        np.arange(6) < lengths[:, None], rng.integers(0, 4, size=(len(lengths), 6)), 0
    )
    posterior = posterior_marginals(hmm, observations, lengths)
    paths = viterbi(hmm, observations, lengths)
    for i, length in enumerate(lengths):
        marginals, best_path = _brute_force(hmm, observations[i, :length])
        np.testing.assert_allclose(posterior[i, :length], marginals, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(paths[i, :length], best_path)
        # Expected per-token accuracy of a decoder = sum over tokens of P(its tag | observations):
        # posterior decoding is the maximum; the Viterbi path can only match or fall below it.
        expected_bayes = marginals.max(axis=1).sum()
        expected_viterbi = marginals[np.arange(length), best_path].sum()
        assert expected_bayes >= expected_viterbi - 1e-12
    assert np.all(posterior[lengths[:, None] <= np.arange(6)] == 0)


def test_hmm_sampler_follows_the_true_model():
    rng = np.random.default_rng(1)
    hmm = random_hmm(rng, n_states=3, symbols_per_state=2, stay=0.8, emission_noise=0.3)
    np.testing.assert_allclose(hmm.transition.sum(axis=1), 1.0)
    np.testing.assert_allclose(hmm.emission.sum(axis=1), 1.0)
    lengths = np.full(4000, 20)
    observations, states = sample(hmm, lengths, rng)
    stays = (states[:, 1:] == states[:, :-1]).mean()
    assert stays == pytest.approx(0.8, abs=0.01)
    for s in range(3):
        counts = np.bincount(observations[states == s], minlength=6) / (states == s).sum()
        np.testing.assert_allclose(counts, hmm.emission[s], atol=0.01)


def test_hmm_tagging_contract_and_stored_accuracies(compose):
    dataset = _build(compose, "hmm_tagging")
    assert dataset.lengths is not None
    valid = np.arange(32)[None, :] < dataset.lengths[:, None]
    assert dataset.lengths.min() >= 8 and dataset.lengths.max() <= 32
    assert np.all(dataset.y[~valid] == IGNORE_INDEX) and np.all(dataset.y[valid] >= 0)
    assert np.all(dataset.X[~valid] == 0)
    np.testing.assert_array_equal(dataset.X[valid].sum(axis=1), 1.0)  # one-hot observations
    meta = dataset.meta
    bayes = tag_accuracy(meta["bayes_predictions"], dataset.y)
    best_path = tag_accuracy(meta["viterbi_predictions"], dataset.y)
    assert meta["bayes_accuracy"] == bayes and meta["viterbi_accuracy"] == best_path
    # Golden values of the default dataset (generator_seed 0): learnable, not trivial, and
    # context matters (a tagger that sees one token at a time tops out far lower).
    assert bayes == pytest.approx(0.8218, abs=1e-4)
    assert best_path == pytest.approx(0.8094, abs=1e-4)
    assert meta["context_free_accuracy"] == pytest.approx(0.6838, abs=1e-4)
    assert best_path <= bayes


# ---- seq_reverse ------------------------------------------------------------------------------


def test_seq_reverse_targets_are_reversed_sources_ending_with_eos(compose):
    dataset = _build(compose, "seq_reverse")
    assert dataset.lengths is not None and dataset.vocab_size == 13
    assert dataset.lengths.min() == 3 and dataset.lengths.max() == 12
    for source, target, length in zip(dataset.X, dataset.y, dataset.lengths, strict=True):
        assert np.all(source[:length] >= 3) and np.all(source[length:] == PAD)
        np.testing.assert_array_equal(target[:length], source[:length][::-1])
        assert target[length] == EOS and np.all(target[length + 1 :] == PAD)
    assert BOS not in dataset.y
    assert len({row.tobytes() for row in dataset.X}) == len(dataset.X)  # sources are distinct


def test_seq_reverse_refuses_more_samples_than_distinct_sequences():
    with pytest.raises(ValueError, match="distinct sequences"):
        data.seq_reverse(n_samples=100, n_symbols=2, min_length=2, max_length=3)


# ---- end to end -------------------------------------------------------------------------------


def _readme_dataset_commands() -> list[str]:
    section = docs.page("guide/datasets.md")
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_lists_every_dataset_option():
    section = docs.page("guide/datasets.md")
    for path in (Path(__file__).parents[1] / "conf" / "dataset").glob("*.yaml"):
        assert f"| `{path.stem}` |" in section, path.stem


@pytest.mark.parametrize(
    "command",
    [
        *_readme_dataset_commands(),
        "mlcli train dataset=iris model=linear",
        "mlcli train dataset=breast_cancer model=mlp",
    ],
)
def test_train_runs_on_the_dataset(cli, command):
    args = command.split()
    assert args[:2] == ["mlcli", "train"]
    # The README's commands with one epoch on one split: enough to show each trains end to end.
    result = cli(*args[1:], *QUICK)
    assert result.exit_code == 0, result.output
    (status_path,) = Path("outputs").rglob("status.json")
    status = read_json(status_path)
    assert status["state"] == "COMPLETED"
    name = next(a.split("=")[1] for a in args if a.startswith("dataset="))
    expected_test = {
        "sunspots": 60,
        "japanese_vowels": 370,
        "mnist1d": 1000,
        "curve": 100,
        "iris": 30,
        "breast_cancer": 114,
    }
    assert status["n_test"] == expected_test[name]
