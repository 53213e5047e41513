"""The live progress of a run: where it is, its loss and selection metric, time spent and left."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from mlcli import runner
from mlcli.display import ProgressReporter


def _run(compose, stack_folds: str) -> tuple[str, pd.DataFrame]:
    buffer = io.StringIO()
    reporter = ProgressReporter("val/acc", Console(file=buffer, width=160))
    cfg = compose("dataset=wine", "epochs=3", "cv.n_splits=3", f"stack_folds={stack_folds}")
    outcome = runner.run(cfg, Path("run"), reporter=reporter)
    reporter.stop()
    assert outcome.state == "COMPLETED"
    return buffer.getvalue(), pd.read_parquet(Path("run") / "results.parquet")


def _at(results: pd.DataFrame, split: str, metric: str, epoch: int) -> pd.Series:
    rows = results[
        (results["split"] == split) & (results["metric"] == metric) & (results["epoch"] == epoch)
    ]
    return rows.sort_values("fold")["value"]


@pytest.mark.parametrize("stack_folds", ["on", "off"])
def test_progress_shows_where_loss_metric_elapsed_and_eta(compose, stack_folds):
    text, results = _run(compose, stack_folds)
    line = text.strip().splitlines()[-1]
    assert "9/9" in line and "eta" in line and "0:00:" in line
    if stack_folds == "on":
        # Folds that train together are not "fold 3/3": the numbers are their mean.
        assert line.startswith("3 folds stacked  epoch 3/3")
        loss = _at(results, "train", "loss", 3).mean()
        acc = _at(results, "val", "acc", 3).mean()
        assert f"train/loss {loss:.4g}  val/acc {acc:.4g} (fold mean)" in line
    else:
        assert line.startswith("fold 3/3  epoch 3/3")
        loss = _at(results, "train", "loss", 3).iloc[-1]
        acc = _at(results, "val", "acc", 3).iloc[-1]
        assert f"train/loss {loss:.4g}  val/acc {acc:.4g}" in line
