"""Early stopping: one rule in every fold path (sequential, stacked, parallel, checkpoint
resume); each fold's rows end at its stop epoch, status.json records its last and best epoch,
the restored weights are the best epoch's, and the report's best epoch agrees."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlcli import rundir, runner
from mlcli.data.preprocess import fold_tensors
from mlcli.engine import checkpoint
from mlcli.engine.loop import evaluate
from mlcli.engine.saved import rebuild
from mlcli.engine.stopping import EarlyStopping
from mlcli.report.aggregate import ReportOptions, aggregate
from mlcli.report.collect import collect
from mlcli.rundir.models import load_model, read_schema

# wine with a large learning rate: val loss turns up within a few epochs, so folds stop early.
STOPPING = [
    "dataset=wine", "model=mlp", "optim.lr=0.05", "epochs=60", "cv.n_splits=3",
    "early_stopping.patience=3", "early_stopping.monitor=val/loss", "progress=false",
]  # fmt: skip


def _rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "results.parquet")


def _fold_epochs(run_dir: Path) -> dict[str, dict[str, int]]:
    return rundir.read_json(run_dir / "status.json")["fold_epochs"]


def test_the_rule_stops_after_patience_epochs_without_an_improvement_beyond_min_delta():
    rule = EarlyStopping(patience=2, monitor="val/loss", min_delta=0.1)
    seen = [rule.update(e, {"val/loss": v}) for e, v in enumerate([1.0, 0.95, 0.85, 0.9], 1)]
    assert seen == [True, False, True, False] and not rule.stopped  # 0.95 is within min_delta
    rule.update(5, {"val/loss": 0.8})
    assert rule.stopped and rule.best_epoch == 3
    up = EarlyStopping(patience=1, monitor="val/acc")
    assert up.update(1, {"val/acc": 0.5}) and up.update(2, {"val/acc": 0.6})
    assert not up.update(3, {"val/acc": 0.55}) and up.stopped


def test_folds_stop_early_and_the_status_records_their_last_and_best_epochs(compose, tmp_path):
    cfg = compose(*STOPPING, "stack_folds=off")
    assert runner.run(cfg, tmp_path / "run").state == "COMPLETED"
    rows = _rows(tmp_path / "run")
    epochs = _fold_epochs(tmp_path / "run")
    assert sorted(epochs) == ["0", "1", "2"]
    for fold, recorded in epochs.items():
        curve = rows[(rows["fold"] == int(fold)) & (rows["split"] == "val")]
        loss = curve[curve["metric"] == "loss"].set_index("epoch")["value"]
        assert recorded["last"] == curve["epoch"].max() < 60  # its rows end where it stopped
        assert recorded["last"] == recorded["best"] + 3  # patience epochs after its best
        assert loss.idxmin() == recorded["best"]
        test = rows[(rows["fold"] == int(fold)) & (rows["split"] == "test")]
        assert set(test["epoch"]) == {recorded["last"]}
    # The report's best epoch is the folds' mean best epoch (what final=refit trains for).
    agg = aggregate(collect([tmp_path / "run"]), ReportOptions(metric="val/loss"))
    mean_best = round(np.mean([e["best"] for e in epochs.values()]))
    assert int(agg.table["best_epoch"].iloc[0]) == mean_best


def test_restored_weights_reproduce_the_best_epochs_recorded_val_metric_exactly(compose, tmp_path):
    cfg = compose(*STOPPING, "stack_folds=off")
    run_dir = tmp_path / "run"
    runner.run(cfg, run_dir)
    rows, epochs = _rows(run_dir), _fold_epochs(run_dir)
    plan = runner.plan_folds(cfg, "key")
    schema = read_schema(run_dir)
    for fold in range(3):
        train_idx, val_idx = plan.folds[fold]
        data = fold_tensors(plan.dataset, train_idx, val_idx, plan.test_idx, cfg.dataset,
                            plan.device)  # fmt: skip
        model = rebuild(schema, *load_model(run_dir, f"fold-{fold}"))
        values = evaluate(model, data.x_val, data.y_val, "classification", 0.0, 1.0)
        best = epochs[str(fold)]["best"]
        at_best = rows[(rows["fold"] == fold) & (rows["split"] == "val") & (rows["epoch"] == best)]
        recorded = at_best.set_index("metric")["value"]
        assert float(values["loss"]) == recorded["loss"]
        assert float(values["acc"]) == recorded["acc"]
        assert best < epochs[str(fold)]["last"]  # the weights went back: not the last epoch's


def test_stacked_folds_stop_at_the_same_epochs_with_the_same_weights_as_sequential(
    compose, tmp_path
):
    sequential, stacked = tmp_path / "sequential", tmp_path / "stacked"
    runner.run(compose(*STOPPING, "stack_folds=off"), sequential)
    runner.run(compose(*STOPPING, "stack_folds=on"), stacked)
    assert rundir.read_json(stacked / "status.json")["fold_training"] == "stacked"
    assert _fold_epochs(sequential) == _fold_epochs(stacked)
    assert len({e["last"] for e in _fold_epochs(stacked).values()}) > 1  # they stop apart
    for fold in range(3):
        alone, member = (load_model(d, f"fold-{fold}")[0] for d in (sequential, stacked))
        assert alone.keys() == member.keys()
        for name in alone:
            np.testing.assert_allclose(member[name], alone[name], rtol=1e-4, atol=1e-5)
    a, b = _rows(sequential), _rows(stacked)
    assert len(a) == len(b)
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-4, atol=1e-5)


def test_parallel_folds_stop_exactly_as_sequential_ones(compose, tmp_path):
    runner.run(compose(*STOPPING, "stack_folds=off"), tmp_path / "sequential")
    runner.run(compose(*STOPPING, "stack_folds=off", "parallel_folds=2"), tmp_path / "parallel")
    assert rundir.read_json(tmp_path / "parallel/status.json")["fold_training"] == "parallel"
    pd.testing.assert_frame_equal(_rows(tmp_path / "sequential"), _rows(tmp_path / "parallel"))


class _StopAt:
    """A progress reporter that interrupts the run after (fold, epoch), like Ctrl-C would."""

    def __init__(self, fold: int, epoch: int) -> None:
        self.at = (fold, epoch)

    def start(self, *args: object) -> None: ...

    def fold_done(self, fold: int) -> None: ...

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        if (fold, epoch) == self.at:
            raise KeyboardInterrupt


def test_a_fold_resumed_from_its_checkpoint_stops_where_an_uninterrupted_one_does(
    compose, tmp_path
):
    cfg = compose(*STOPPING, "stack_folds=off", "checkpoint_every=1")
    runner.run(cfg, tmp_path / "straight")
    straight_epochs = _fold_epochs(tmp_path / "straight")
    # Interrupted after the best epoch of fold 1, while it waits out its patience.
    stop = straight_epochs["1"]["best"] + 1
    run_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, run_dir, reporter=_StopAt(fold=1, epoch=stop))
    saved = checkpoint.load(checkpoint.fold_path(run_dir, 1))
    assert saved["early_stopping"]["best_epoch"] == straight_epochs["1"]["best"]
    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)
    assert runner.run(cfg, run_dir).state == "COMPLETED"
    assert _fold_epochs(run_dir) == straight_epochs
    pd.testing.assert_frame_equal(_rows(tmp_path / "straight"), _rows(run_dir))
    for fold in range(3):
        a, b = (load_model(d, f"fold-{fold}")[0] for d in (tmp_path / "straight", run_dir))
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize(
    ("monitor", "says"),
    [("val/los", "Did you mean 'val/loss'"), ("train/loss", "watches a val metric")],
)
def test_a_monitor_that_is_no_val_metric_exits_2_before_training(cli, tmp_path, monitor, says):
    result = cli("train", "dataset=wine", "epochs=1", "early_stopping.patience=2",
                 f"early_stopping.monitor={monitor}", "progress=false")  # fmt: skip
    assert result.exit_code == 2
    assert "early_stopping.monitor" in result.output and says in " ".join(result.output.split())
    assert not (tmp_path / "outputs").exists()
