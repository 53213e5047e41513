"""What the lab needed from mlcli itself, built as features: parameter counts recorded and shown,
``dataset.max_rows`` and ``dataset.shuffle_labels``, ``dataset=surface``, and a diverged
configuration never ranked above finite ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcli.data import digits, surface
from mlcli.data.loading import reshaped
from mlcli.report import ReportOptions
from mlcli.report.aggregate import aggregate
from mlcli.report.collect import Collected
from tests.conftest import TINY


def test_every_run_records_its_number_of_parameters_and_the_report_shows_it(cli):
    result = cli("train", *TINY, "dataset=iris", "model.hidden=[16]")
    assert result.exit_code == 0, result.output
    (status,) = Path("outputs").rglob("status.json")
    # 4 inputs → 16 hidden → 3 classes: 4·16 + 16 + 16·3 + 3
    assert json.loads(status.read_text())["n_params"] == 4 * 16 + 16 + 16 * 3 + 3
    report = cli("report", "--format", "csv")
    assert pd.read_csv(pd.io.common.StringIO(report.stdout))["n_params"].tolist() == [131]


def test_the_parameter_count_is_of_the_model_the_folds_built(cli, tmp_path):
    """One-hot columns widen the examples: 2 numbers + a 3-category column = 5 inputs."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "b": rng.normal(size=60),
            "color": rng.choice(["red", "green", "blue"], size=60),
            "y": rng.choice(["yes", "no"], size=60),
        }
    )
    frame.to_csv(tmp_path / "rows.csv", index=False)
    args = ["dataset=csv", "dataset.path=rows.csv", "dataset.target=y", "model.hidden=[4]"]
    result = cli("train", *TINY, *args)
    assert result.exit_code == 0, result.output
    (status,) = Path("outputs").rglob("status.json")
    assert json.loads(status.read_text())["n_params"] == 5 * 4 + 4 + 4 * 2 + 2


def test_max_rows_and_shuffle_labels_are_seeded_and_keep_the_labels():
    data = digits()
    small = reshaped(data, 300, False, seed=0)
    assert len(small.y) == small.X.shape[0] == 300
    assert np.array_equal(reshaped(data, 300, False, seed=0).y, small.y)
    assert not np.array_equal(reshaped(data, 300, False, seed=1).y, small.y)
    shuffled = reshaped(data, None, True, seed=0)
    assert np.array_equal(np.bincount(shuffled.y), np.bincount(data.y))  # a permutation
    assert (shuffled.y == data.y).mean() < 0.2  # about chance (1/10) agree
    assert np.array_equal(shuffled.X, data.X)
    assert "shuffle_labels" in shuffled.notes[-1]
    assert reshaped(data, None, False, seed=0) is data


def test_shuffle_labels_reaches_the_run_and_changes_its_key(cli):
    plain = cli("train", *TINY, "dataset=iris", "--dry-run")
    shuffled = cli("train", *TINY, "dataset=iris", "dataset.shuffle_labels=true", "--dry-run")
    assert plain.exit_code == shuffled.exit_code == 0
    keys = [set(re.findall(r"\b[0-9a-f]{16}\b", r.output)) for r in (plain, shuffled)]
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1]
    bad = cli("train", *TINY, "dataset.max_rows=0")
    assert bad.exit_code == 2 and "dataset.max_rows" in bad.output


def test_the_surface_is_ill_conditioned_as_its_correlation_says():
    data = surface(n_samples=4000, correlation=0.95)
    eigenvalues = np.linalg.eigvalsh(np.cov(data.X.T))
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(39, rel=0.15)
    assert np.allclose(data.y, data.X @ np.array([1.0, -0.5]))
    with pytest.raises(ValueError, match="correlation"):
        surface(correlation=1.0)


def _collected(train_losses: dict[str, list[float]], val_loss: dict[str, list[float]]) -> Collected:
    names = list(train_losses)
    runs = pd.DataFrame(
        {
            "run_dir": names,
            "state": "COMPLETED",
            "run_key": names,
            "metric": "val/acc",
            "task": "classification",
            "n_folds": 1,
            "n_params": 100,
            "duration_s": 1.0,
            "folds_completed": [[0]] * len(names),
            "overrides": [[f"optim.lr={n}"] for n in names],
            "error": "",
            "config": [{"optim.lr": n, "dataset": "digits"} for n in names],
            "config_complete": True,
        }
    )
    rows = []
    for run, name in enumerate(names):
        for epoch, (t, v) in enumerate(zip(train_losses[name], val_loss[name], strict=True), 1):
            acc = 0.5 if v != v or v > 10 else 0.3  # the exploded run's accuracy is higher
            for split, metric, value in (("train", "loss", t), ("val", "loss", v),
                                         ("train", "acc", acc), ("val", "acc", acc)):  # fmt: skip
                rows.append((run, 0, epoch, split, metric, value))
    results = pd.DataFrame(rows, columns=["run", "fold", "epoch", "split", "metric", "value"])
    results["split"] = results["split"].astype("category")
    results["metric"] = results["metric"].astype("category")
    return Collected(runs, results)


def test_an_exploded_configuration_ranks_after_every_finite_one():
    # The exploded run's val accuracy (0.5) is above the finite one's (0.3): it still ranks last.
    collected = _collected(
        {"0.01": [1.0, 0.5, 0.45, 0.44], "10": [2.3, 1e6, 1e34, 1e34]},
        {"0.01": [1.1, 0.6, 0.55, 0.54], "10": [2.2, float("nan"), float("nan"), float("nan")]},
    )
    agg = aggregate(collected, ReportOptions(by=("optim.lr",)))
    table = agg.table
    assert table["optim.lr"].tolist() == ["0.01", "10"]
    assert any("diagnosed as diverged" in note for note in agg.notes)
    assert table.set_index("optim.lr").loc["10", "diagnosis"] == "diverged"


def test_the_gallery_states_each_full_runs_time_and_its_quick_runs(tmp_path):
    """The full gallery names each demonstration's time (wall and CPU) and its quick run's; a
    demonstration without results says it was not run."""
    from mlcli.lab import DEMOS
    from mlcli.lab.session import gallery, lab_dir

    first, second = list(DEMOS)[:2]
    for quick, seconds, cpu, jobs in ((False, 121.4, 98.2, 6), (True, 31.0, 24.6, 3)):
        out = lab_dir(tmp_path, first, quick)
        out.mkdir(parents=True)
        (out / "verdict.json").write_text(json.dumps({"claim": "c", "supported": "yes"}))
        (out / "verdict.md").write_text(f"**Supported by this run: yes.** ({'quick' * quick})")
        timing = {"seconds": seconds, "cpu_seconds": cpu, "jobs": jobs, "resumed": 0}
        (out / "timing.json").write_text(json.dumps(timing))
    page = gallery(tmp_path, tmp_path / "docs" / "lab", False, "a test machine").read_text()
    assert (
        f"`mlcli lab run {first}` ({DEMOS[first].what}; took 121 s wall (98 s CPU), 6 jobs; "
        "its `--quick` run: 31 s wall (25 s CPU), 3 jobs)." in page
    )
    assert "**Supported by this run: yes.** ()" in page  # the full run's verdict, not the quick
    assert f"`mlcli lab run {second}`: not run yet." in page
