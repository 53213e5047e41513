"""Critical points: known answers, Lanczos vs exact, the saddle escape, and the run integration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mlcli import runner
from mlcli.analysis import FlatModel, analyze, loss_function
from mlcli.data import digits
from tests.conftest import TINY


def test_saddle_of_w1_squared_minus_w2_squared():
    found = analyze(lambda w: w[0] ** 2 - w[1] ** 2, torch.zeros(2))
    assert found.verdict == "saddle point"
    np.testing.assert_allclose(found.eigenvalues, [-2.0, 2.0], atol=1e-6)
    assert found.grad_norm == 0.0 and found.min_ratio == 0.5


def test_minimum_of_w1_squared_plus_w2_squared():
    found = analyze(lambda w: w[0] ** 2 + w[1] ** 2, torch.zeros(2))
    assert found.verdict == "local minimum"
    np.testing.assert_allclose(found.eigenvalues, [2.0, 2.0], atol=1e-6)
    assert found.min_ratio == 1.0


def test_point_with_a_gradient_is_not_critical():
    found = analyze(lambda w: w[0] ** 2 + w[1] ** 2, torch.tensor([1.0, 0.0]))
    assert found.verdict == "not critical"
    assert found.grad_norm == pytest.approx(2.0)
    assert "gradient norm 2" in found.reason


def test_flat_point():
    found = analyze(lambda w: (w**4).sum(), torch.zeros(3))
    assert found.verdict == "flat"


def test_lanczos_extremes_match_the_exact_hessian_on_an_mlp():
    torch.manual_seed(0)
    data = digits()
    x = torch.from_numpy(data.X[:128]).reshape(128, -1) / 16.0
    y = torch.from_numpy(data.y[:128])
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))  # 2,410 parameters
    flat = FlatModel(model, x, y, loss_function("classification"))
    n = flat.flat().numel()
    assert 2000 < n < 5000
    exact = analyze(flat.loss, flat.flat(), exact_max_params=n)
    lanczos = analyze(flat.loss, flat.flat(), exact_max_params=0, k=5)
    assert exact.method.startswith("exact") and lanczos.method.startswith("Lanczos")
    assert lanczos.max_eig == pytest.approx(exact.max_eig, rel=0.01)
    assert lanczos.min_eig == pytest.approx(exact.min_eig, rel=0.01, abs=1e-4)
    assert 0.0 < exact.min_ratio < 1.0  # a random-init network sits far from any minimum
    assert np.isnan(lanczos.min_ratio)  # needs the full spectrum: not guessed


def _saddle_model(in_shape, out_features):
    """y = w2 · (w1 · x) with w1 = w2 = 0: zero gradient, Hessian with a negative eigenvalue."""
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(int(np.prod(in_shape)), 1, bias=False), nn.Linear(1, 1, bias=False)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


@pytest.fixture
def saddle_module(tmp_path, monkeypatch):
    # An admitted module admits what it defines (not what it imports): a builder of its own.
    (tmp_path / "saddle.py").write_text(
        "from tests.test_analysis import _saddle_model\n\n\n"
        "def SaddleNet(in_shape, out_features):\n"
        "    return _saddle_model(in_shape, out_features)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def _frame_values(run_dir, split, metric):
    frame = pd.read_parquet(run_dir / "results.parquet")
    rows = frame[(frame["split"] == split) & (frame["metric"] == metric)]
    return rows.sort_values("epoch")["value"].to_numpy()


def _losses(run_dir):
    frame = pd.read_parquet(run_dir / "results.parquet")
    train = frame[(frame["split"] == "train") & (frame["metric"] == "loss")]
    return train.sort_values("epoch")["value"].to_numpy(), frame


def test_escape_leaves_a_saddle_that_gradient_descent_cannot(compose, tmp_path, saddle_module):
    common = (
        "dataset=diabetes", "model=linear", "model._target_=saddle.SaddleNet",
        "allow_targets=[saddle]", "optim=sgd", "optim.lr=0.01", "cv=holdout", "epochs=4",
        "progress=false", "analysis=hessian", "analysis.hessian.grad_tol=1e-4",
    )  # fmt: skip
    runner.run(compose(*common), tmp_path / "plain")
    plain, _ = _losses(tmp_path / "plain")
    assert plain[-1] == pytest.approx(plain[0], rel=1e-6)
    plain_val = _frame_values(tmp_path / "plain", "val", "loss")
    assert np.ptp(plain_val) == 0.0  # gradient exactly zero: the weights never move
    findings = json.loads((tmp_path / "plain" / "analysis" / "fold0.json").read_text())
    assert findings["findings"][-1]["verdict"] == "saddle point"

    runner.run(compose(*common, "analysis.hessian.escape=true"), tmp_path / "escape")
    escaped, frame = _losses(tmp_path / "escape")
    steps = frame[frame["metric"] == "escape"]
    assert len(steps) >= 1 and steps["epoch"].min() == 1
    before = frame[frame["metric"] == "escape_loss_before"]["value"].iloc[0]
    after = frame[frame["metric"] == "escape_loss_after"]["value"].iloc[0]
    assert after < before
    assert escaped[-1] < plain[-1] * 0.9  # training went on downhill after the escape


def test_analysis_through_the_cli_writes_rows_verdicts_and_plots(cli, tmp_path):
    result = cli(
        "train", "analysis=[hessian,landscape]", "model=linear", "dataset=wine",
        "analysis.landscape.points_2d=5", "analysis.landscape.points_1d=7", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = (p.parent for p in (tmp_path / "outputs").rglob("status.json"))
    frame = pd.read_parquet(run_dir / "results.parquet")
    for metric in ("grad_norm", "hess_min_eig", "hess_max_eig", "min_ratio", "at_saddle"):
        assert len(frame[frame["metric"] == metric]) == 2, metric  # one per fold, final epoch
    for fold in (0, 1):
        verdict = json.loads((run_dir / "analysis" / f"fold{fold}.json").read_text())
        assert verdict["findings"][0]["verdict"] in {
            "not critical", "local minimum", "saddle point", "flat"
        }  # fmt: skip
        for suffix in ("_1d.png", "_2d.png", ".npz"):
            assert (run_dir / "analysis" / f"landscape_fold{fold}{suffix}").stat().st_size > 0
    # and `mlcli report` shows them (fold mean ± std of the analysis rows, split train)
    report = cli("report", str(tmp_path / "outputs"), "--format", "csv")
    assert report.exit_code == 0, report.output
    header = report.output.splitlines()[0].split(",")
    for column in ("train/grad_norm_mean", "train/hess_min_eig_mean", "train/at_saddle_mean"):
        assert column in header
