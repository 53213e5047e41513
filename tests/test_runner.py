"""The engine: golden numbers, determinism, leakage-free normalization, the test split."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from mlcli import runner
from mlcli.cv import hold_out_test, kfold, make_folds
from mlcli.data import diabetes, digits
from mlcli.data.preprocess import Normalizer
from mlcli.rundir import read_json

# From a real seeded run (torch 2.13 CPU, one thread): (epoch, split) -> loss.
GOLDEN = {
    # cv=holdout on a classification set: StratifiedShuffleSplit (cv.stratify=null, issue 4)
    "digits-mlp": {
        (1, "train"): 0.8351294994354248,
        (1, "val"): 0.2148842066526413,
        (2, "train"): 0.10277342051267624,
        (2, "val"): 0.15551131963729858,
        (2, "test"): 0.126544788479805,
    },
    "diabetes-linear": {
        (1, "train"): 1.6317808628082275,
        (1, "val"): 1.4678257703781128,
        (2, "train"): 1.196219563484192,
        (2, "val"): 1.1181628704071045,
        (2, "test"): 0.8605133295059204,
    },
}


def _losses(run_dir: Path) -> dict[tuple[int, str], float]:
    frame = pd.read_parquet(run_dir / "results.parquet")
    frame = frame[frame["metric"] == "loss"]
    return {(int(r.epoch), str(r.split)): float(r.value) for r in frame.itertuples()}


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("digits-mlp", []),
        ("diabetes-linear", ["dataset=diabetes", "model=linear"]),
    ],
)
def test_golden_two_epoch_losses(compose, tmp_path, name, overrides):
    cfg = compose("epochs=2", "cv=holdout", "progress=false", *overrides)
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    got = _losses(tmp_path / "run")
    assert got.keys() == GOLDEN[name].keys()
    keys = sorted(got)
    torch.testing.assert_close(
        torch.tensor([got[k] for k in keys]),
        torch.tensor([GOLDEN[name][k] for k in keys]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_run_dir_explains_itself(compose, tmp_path):
    cfg = compose("epochs=1", "cv.n_splits=2", "progress=false")
    runner.run(cfg, tmp_path / "run", choices={"model": "mlp"}, overrides=["epochs=1"])
    run_dir = tmp_path / "run"
    assert {"config.yaml", "overrides.yaml", "status.json", "results.parquet"} <= {
        p.name for p in run_dir.iterdir()
    }
    status = read_json(run_dir / "status.json")
    assert status["state"] == "COMPLETED"
    assert status["run_key"] == runner.run_key(cfg)
    assert status["folds_completed"] == [0, 1]
    assert status["versions"]["torch"] == torch.__version__
    assert status["threads"] == 1 and status["metric"] == "val/acc"
    assert status["choices"] == {"model": "mlp"}
    frame = pd.read_parquet(run_dir / "results.parquet")
    assert list(frame.columns) == ["run_key", "fold", "epoch", "split", "metric", "value"]
    # (train_step: the lr at each epoch's first optimizer step and wherever it changes)
    assert set(frame["split"]) == {"train", "train_step", "val", "test"}
    # The test split is evaluated once per fold, after the last epoch.
    test_rows = frame[frame["split"] == "test"]
    assert set(test_rows["epoch"]) == {1} and len(test_rows) == 2 * 2  # 2 folds x (loss, acc)


def test_run_key_ignores_display_and_paths(compose):
    a = runner.run_key(compose("progress=false", "outputs_root=elsewhere"))
    b = runner.run_key(compose("progress=true"))
    c = runner.run_key(compose("seed=1"))
    assert a == b != c


def test_same_seed_gives_identical_results_in_fresh_processes(tmp_path):
    script = (
        "import sys; from mlcli.config.compose import compose_job; from mlcli.runner import run; "
        "run(compose_job(['epochs=2','cv.n_splits=2','progress=false'], None, 'config'), "
        "sys.argv[1])"
    )
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True)
    a = pd.read_parquet(tmp_path / "a" / "results.parquet")
    b = pd.read_parquet(tmp_path / "b" / "results.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_normalization_statistics_come_from_training_rows_only():
    data = digits()
    train_idx, val_idx = np.arange(0, 100), np.arange(100, 150)
    clean = Normalizer("standard", data.X[train_idx])
    poisoned_X = data.X.copy()
    poisoned_X[val_idx] = 1e6  # a poisoned value in the val rows must not move the statistics
    poisoned = Normalizer("standard", poisoned_X[train_idx])
    np.testing.assert_array_equal(clean.shift, poisoned.shift)
    np.testing.assert_array_equal(clean.scale, poisoned.scale)
    # and the statistics are those of the training rows
    np.testing.assert_allclose(clean.shift, data.X[train_idx].mean(axis=0), rtol=1e-6)


def test_test_rows_never_reach_a_fold():
    data = digits()
    dev, test = hold_out_test(data, 0.2, seed=0)
    assert len(test) == math.ceil(0.2 * len(data.y)) and not set(dev) & set(test)
    for train_idx, val_idx in make_folds(kfold(5, True, 0), data, dev):
        assert not set(test) & (set(train_idx) | set(val_idx))
    # stratified: every class keeps about its share in the test split
    shares = np.bincount(data.y[test]) / len(test)
    np.testing.assert_allclose(shares, np.bincount(data.y) / len(data.y), atol=0.01)


def test_linear_on_diabetes_matches_ordinary_least_squares(compose, tmp_path):
    """The shipped optimizer settings reach OLS's fold-mean val R² within 0.03 on the same folds."""
    cfg = compose(
        "model=linear", "dataset=diabetes", "cv=kfold", "cv.n_splits=10", "progress=false"
    )
    runner.run(cfg, tmp_path / "run")
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    r2 = frame[(frame["split"] == "val") & (frame["metric"] == "r2")]
    mlcli_r2 = r2[r2["epoch"] == r2["epoch"].max()]["value"].mean()

    data = diabetes()
    dev, _ = hold_out_test(data, float(cfg.dataset.test_fraction), int(cfg.dataset.seed))
    folds = make_folds(kfold(10, True, int(cfg.cv.seed)), data, dev)
    ols = np.mean(
        [
            r2_score(data.y[v], LinearRegression().fit(data.X[t], data.y[t]).predict(data.X[v]))
            for t, v in folds
        ]
    )
    assert abs(mlcli_r2 - ols) < 0.03, (mlcli_r2, ols)


def test_partial_run_keeps_finished_folds(compose, tmp_path):
    cfg = compose("epochs=1", "cv.n_splits=3", "progress=false")
    full = runner.run(cfg, tmp_path / "full")
    assert full.state == "COMPLETED"
    # Simulate an interruption after fold 0: keep only fold 0's rows and status.
    partial_dir = tmp_path / "partial"
    runner.run(cfg, partial_dir)
    status = read_json(partial_dir / "status.json")
    frame = pd.read_parquet(partial_dir / "results.parquet")
    from mlcli.rundir import write_json, write_results

    write_results(partial_dir / "results.parquet", frame[frame["fold"] == 0].to_dict("records"))
    write_json(partial_dir / "status.json", {**status, "state": "RUNNING", "folds_completed": [0]})
    resumed = runner.run(cfg, partial_dir)
    assert resumed.state == "COMPLETED"
    a = pd.read_parquet(tmp_path / "full" / "results.parquet")
    b = pd.read_parquet(partial_dir / "results.parquet")
    pd.testing.assert_frame_equal(
        a.sort_values(list(a.columns[:5])).reset_index(drop=True),
        b.sort_values(list(b.columns[:5])).reset_index(drop=True),
    )
