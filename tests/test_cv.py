"""Cross-validation and the test split: scikit-learn's folds exactly, and no leakage anywhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import model_selection as ms

from mlcli import runner
from mlcli.config.targets import instantiate
from mlcli.cv import Plan, plan
from mlcli.data import csv, preprocess
from mlcli.data.loading import build_dataset, split_config
from mlcli.engine import setup
from tests.conftest import TINY

HOMEWORK = Path(__file__).parent / "data" / "homework.csv"
HOMEWORK_ARGS = ["dataset=csv", f"dataset.path={HOMEWORK}", "dataset.target=target",
                 "dataset.drop=[id]"]  # fmt: skip


def write_grouped_csv(path: Path, n: int = 60, n_groups: int = 12) -> Path:
    """Rows of ``n_groups`` patients (a group column), two features, a 0/1 target."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "patient": [f"p{g:02d}" for g in rng.integers(0, n_groups, n)],
            "x1": rng.normal(size=n).round(3),
            "x2": rng.normal(size=n).round(3),
            "target": rng.integers(0, 2, n),
        }
    )
    frame.to_csv(path, index=False)
    return path


def write_series_csv(path: Path, n: int = 80) -> Path:
    """A noisy sine wave, one value a row (with a date column that is not used)."""
    t = np.arange(n)
    values = np.sin(t / 5) + 0.1 * np.random.default_rng(0).normal(size=n)
    pd.DataFrame({"day": t, "value": values.round(4)}).to_csv(path, index=False)
    return path


def make_plan(compose, *overrides: str) -> tuple[object, Plan]:
    """The dataset and the split plan exactly as ``runner.run`` makes them."""
    cfg = compose(*overrides)
    dataset = build_dataset(cfg)
    return dataset, plan(dataset, instantiate(cfg.cv, "cv"), *split_config(cfg))


def sklearn_folds(splitter, dataset, dev) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's own folds of the development rows, as positions in the dataset."""
    groups = dataset.groups[dev] if dataset.groups is not None else None
    return [(dev[t], dev[v]) for t, v in splitter.split(dataset.X[dev], dataset.y[dev], groups)]


def assert_same_folds(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for (train_a, val_a), (train_b, val_b) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(val_a, val_b)


# (case id, overrides; {seed} is the cv seed, scikit-learn splitter for that seed)
STRATEGIES = [
    ("kfold-classification", ["dataset=wine", "cv=kfold", "cv.seed={seed}"],
     lambda s: ms.StratifiedKFold(5, shuffle=True, random_state=s)),
    ("kfold-regression", ["dataset=diabetes", "cv=kfold", "cv.seed={seed}"],
     lambda s: ms.KFold(5, shuffle=True, random_state=s)),
    ("kfold-stratify-false", ["dataset=wine", "cv=kfold", "cv.stratify=false", "cv.seed={seed}"],
     lambda s: ms.KFold(5, shuffle=True, random_state=s)),
    ("kfold-no-shuffle", ["dataset=diabetes", "cv=kfold", "cv.shuffle=false", "cv.seed={seed}"],
     lambda s: ms.KFold(5, shuffle=False)),
    ("stratified", ["dataset=wine", "cv=stratified", "cv.n_splits=4", "cv.seed={seed}"],
     lambda s: ms.StratifiedKFold(4, shuffle=True, random_state=s)),
    ("group", ["GROUPED", "cv=group", "cv.n_splits=4", "cv.seed={seed}"],
     lambda s: ms.GroupKFold(4)),
    ("group-shuffled", ["GROUPED", "cv=group", "cv.shuffle=true", "cv.seed={seed}"],
     lambda s: ms.GroupKFold(5, shuffle=True, random_state=s)),
    ("timeseries", ["SERIES", "cv=timeseries", "cv.n_splits=4", "dataset.seed={seed}"],
     lambda s: ms.TimeSeriesSplit(4)),
    ("timeseries-gap", ["SERIES", "cv=timeseries", "cv.gap=2", "cv.max_train_size=30",
                        "dataset.seed={seed}"],
     lambda s: ms.TimeSeriesSplit(5, gap=2, max_train_size=30)),
    ("repeated-regression", ["dataset=diabetes", "cv=repeated", "cv.n_repeats=3", "cv.seed={seed}"],
     lambda s: ms.RepeatedKFold(n_splits=5, n_repeats=3, random_state=s)),
    ("repeated-classification", ["dataset=wine", "cv=repeated", "cv.seed={seed}"],
     lambda s: ms.RepeatedStratifiedKFold(n_splits=5, n_repeats=2, random_state=s)),
    ("holdout-classification", ["dataset=wine", "cv=holdout", "cv.seed={seed}"],
     lambda s: ms.StratifiedShuffleSplit(1, test_size=0.2, random_state=s)),
    ("holdout-regression", ["dataset=diabetes", "cv=holdout", "cv.seed={seed}"],
     lambda s: ms.ShuffleSplit(1, test_size=0.2, random_state=s)),
]  # fmt: skip


def _expand(overrides: list[str], seed: int, tmp_path: Path) -> list[str]:
    out = []
    for o in overrides:
        if o == "GROUPED":
            path = write_grouped_csv(tmp_path / "grouped.csv")
            out += ["dataset=csv", f"dataset.path={path}", "dataset.target=target",
                    "dataset.group=patient"]  # fmt: skip
        elif o == "SERIES":
            path = write_series_csv(tmp_path / "series.csv")
            out += ["dataset=csv", f"dataset.path={path}", "dataset.target=value",
                    "dataset.window=5"]  # fmt: skip
        else:
            out.append(o.format(seed=seed))
    return out


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize(
    ("case", "overrides", "reference"), STRATEGIES, ids=[c[0] for c in STRATEGIES]
)
def test_folds_are_exactly_scikit_learns(compose, tmp_path, case, overrides, reference, seed):
    dataset, split = make_plan(compose, *_expand(overrides, seed, tmp_path))
    expected = reference(seed)
    assert repr(split.splitter) == repr(expected)
    assert_same_folds(split.folds, sklearn_folds(expected, dataset, split.dev))


def test_cv_seed_moves_the_folds_and_the_training_seed_does_not(compose):
    base = ["dataset=wine", "cv=kfold"]
    _, a = make_plan(compose, *base)
    _, b = make_plan(compose, *base, "seed=5")  # the training seed
    _, c = make_plan(compose, *base, "cv.seed=5")
    assert_same_folds(a.folds, b.folds)
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a.folds, c.folds, strict=True))
    np.testing.assert_array_equal(a.test, c.test)  # the test split has its own seed


def test_stratified_needs_a_classification_target(compose):
    from mlcli.data import DataError

    with pytest.raises(DataError, match="stratifies by class, but the task is regression"):
        make_plan(compose, "dataset=diabetes", "cv=stratified")


def test_timeseries_validates_after_training_and_tests_on_the_last_rows(compose, tmp_path):
    overrides = _expand(["SERIES", "cv=timeseries", "cv.n_splits=4"], 0, tmp_path)
    dataset, split = make_plan(compose, *overrides)
    for train_idx, val_idx in split.folds:
        assert train_idx.max() < val_idx.min()
        assert np.all(np.diff(train_idx) == 1) and np.all(np.diff(val_idx) == 1)  # in order
    # the test split is the last rows (never a random draw), after every dev row
    n = len(dataset.y)
    np.testing.assert_array_equal(split.test, np.arange(n - len(split.test), n))
    assert split.dev.max() < split.test.min()


def test_windowed_data_tests_on_the_last_rows_whatever_the_cv(compose, tmp_path):
    overrides = _expand(["SERIES", "cv=kfold"], 0, tmp_path)
    dataset, split = make_plan(compose, *overrides)
    n = len(dataset.y)
    assert len(split.test) == int(np.ceil(0.2 * n))
    np.testing.assert_array_equal(split.test, np.arange(n - len(split.test), n))


def test_grouped_data_keeps_each_group_on_one_side(compose, tmp_path):
    overrides = _expand(["GROUPED", "cv=group", "cv.n_splits=3"], 0, tmp_path)
    dataset, split = make_plan(compose, *overrides)
    groups = dataset.groups
    assert not set(groups[split.test]) & set(groups[split.dev])  # test split: whole groups
    for train_idx, val_idx in split.folds:
        assert not set(groups[train_idx]) & set(groups[val_idx])


def _csv_with_categories_and_gaps(path: Path, poison: bool) -> Path:
    """Rows 0-29 are the training rows of the test below; rows 30-39 its val rows."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=40).round(3).astype(object)
    color = np.array(["red", "green", "blue"] * 13 + ["red"], dtype=object)
    x[[3, 17]] = ""  # missing cells in training rows
    if poison:  # only the val rows change: a huge value, an unseen category, a gap
        x[30:35] = 1e6
        color[30:35] = "purple"
        x[36] = ""
    frame = pd.DataFrame({"x": x, "color": color, "target": np.arange(40) % 2})
    frame.to_csv(path, index=False)
    return path


def test_imputation_encoding_and_scaling_come_from_training_rows_only(tmp_path):
    clean = csv(str(_csv_with_categories_and_gaps(tmp_path / "a.csv", False)), "target",
                missing="mean")  # fmt: skip
    poisoned = csv(str(_csv_with_categories_and_gaps(tmp_path / "b.csv", True)), "target",
                   missing="mean")  # fmt: skip
    assert clean.categorical == (1,) and np.isnan(clean.X[:, 0]).sum() == 2
    train_idx, val_idx = np.arange(30), np.arange(30, 40)
    cfg = {"normalize": "standard"}
    a = preprocess.fold_scaler(clean, train_idx, cfg)
    b = preprocess.fold_scaler(poisoned, train_idx, cfg)
    np.testing.assert_array_equal(a(clean.X[train_idx]), b(poisoned.X[train_idx]))
    encoded = a(clean.X[train_idx])
    # width: one numeric column + one-hot of the 3 colors seen in training rows
    assert encoded.shape == (30, 4)
    # the imputed cells hold the training rows' mean, i.e. 0 after standardization
    np.testing.assert_allclose(encoded[[3, 17], 0], 0.0, atol=1e-6)
    # impute with the training mean, then standardize the imputed training column
    column = clean.X[train_idx, 0].astype(np.float64)
    imputed = np.where(np.isnan(column), np.nanmean(column), column)
    np.testing.assert_allclose(
        encoded[:, 0], (imputed - imputed.mean()) / imputed.std(), rtol=1e-5, atol=1e-6
    )
    # an unseen category in the val rows is all zeros, not a new column
    val = b(poisoned.X[val_idx])
    assert val.shape == (10, 4) and np.all(val[:5, 1:] == 0)


def test_a_csv_run_never_lets_test_rows_reach_training_statistics_or_folds(
    compose, tmp_path, monkeypatch
):
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    fitted_on: list[np.ndarray] = []
    real_fold_tensors, real_fold_scaler = setup.fold_tensors, preprocess.fold_scaler

    def spy_tensors(dataset, train_idx, val_idx, test_idx, *args, **kwargs):
        seen.append((train_idx, val_idx, test_idx))
        return real_fold_tensors(dataset, train_idx, val_idx, test_idx, *args, **kwargs)

    def spy_scaler(dataset, train_idx, cfg):
        fitted_on.append(np.array(train_idx))
        return real_fold_scaler(dataset, train_idx, cfg)

    # Every fold strategy sets its folds up through the one fold set-up: watch it.
    monkeypatch.setattr(setup, "fold_tensors", spy_tensors)
    monkeypatch.setattr(preprocess, "fold_scaler", spy_scaler)
    cfg = compose(*HOMEWORK_ARGS, "epochs=1", "cv.n_splits=3", "progress=false")
    assert runner.run(cfg, tmp_path / "run").state == "COMPLETED"

    dataset = build_dataset(cfg)
    _, expected_test = ms.train_test_split(
        np.arange(150), test_size=0.2, random_state=0, stratify=dataset.y
    )
    assert len(seen) == 3
    for (train_idx, val_idx, test_idx), stats_rows in zip(seen, fitted_on, strict=True):
        np.testing.assert_array_equal(test_idx, np.sort(expected_test))
        assert not set(test_idx) & (set(train_idx) | set(val_idx))
        assert not set(train_idx) & set(val_idx)
        np.testing.assert_array_equal(stats_rows, train_idx)  # statistics: training rows only
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["n_test"] == 30 and status["splitter"].startswith("StratifiedKFold(n_splits=3")


def test_report_shows_test_mean_and_std_next_to_val_for_each_configuration(cli, tmp_path):
    result = cli("train", "-m", *HOMEWORK_ARGS, "optim.lr=0.01,0.003", *TINY)
    assert result.exit_code == 0, result.output
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()

    # what each configuration's folds recorded at the final epoch, straight from the results
    expected = {}
    for status_path in sweep.rglob("status.json"):
        status = json.loads(status_path.read_text())
        lr = next(float(o.split("=")[1]) for o in status["overrides"] if o.startswith("optim.lr"))
        frame = pd.read_parquet(status_path.parent / "results.parquet")
        final = frame[frame["epoch"] == frame["epoch"].max()]
        expected[lr] = {
            f"{split}/{metric}": (values.mean(), values.std(ddof=1))
            for (split, metric), values in final.groupby(["split", "metric"])["value"]
        }
        # the test split is evaluated once per fold, after the last epoch only
        assert set(frame.loc[frame["split"] == "test", "epoch"]) == {2}
        assert len(frame[(frame["split"] == "test") & (frame["metric"] == "acc")]) == 2

    csv_result = cli("report", str(sweep), "--format", "csv")
    assert csv_result.exit_code == 0, csv_result.output
    table = pd.read_csv(io.StringIO(csv_result.output))
    json_result = cli("report", str(sweep), "--format", "json")
    assert json_result.exit_code == 0, json_result.output
    records = pd.DataFrame(json.loads(json_result.output)["configurations"])
    for frame, tolerance in ((table, 1e-5), (records, 1e-9)):
        assert len(frame) == 2
        columns = list(frame.columns)
        for metric in ("acc", "loss"):
            for stat in ("mean", "std"):
                assert f"val/{metric}_{stat}" in columns and f"test/{metric}_{stat}" in columns
        for row in frame.itertuples(index=False):
            got = dict(zip(frame.columns, row, strict=True))
            lr = float(got["optim.lr"])
            for name in ("val/acc", "test/acc", "test/loss"):
                mean, std = expected[lr][name]
                assert got[f"{name}_mean"] == pytest.approx(mean, rel=tolerance)
                assert got[f"{name}_std"] == pytest.approx(std, rel=tolerance, abs=1e-9)
