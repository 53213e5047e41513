"""The plain loop's rules: every batch size trains, the divergence rule, the metrics it records."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlcli import runner, tasks
from mlcli.engine import loop as train
from mlcli.rundir import read_results


def _fold(n: int, generator: torch.Generator) -> train.FoldData:
    x = torch.randn(n, 4, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return train.FoldData(x, y, x[:6], y[:6])


def _model(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(8)] if batch_norm else []
    return nn.Sequential(nn.Linear(4, 8), *norm, nn.ReLU(), nn.Linear(8, 3))


def _fit_counting_steps(n: int, batch_size: int, batch_norm: bool) -> tuple[int, list]:
    model = _model(batch_norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    optimizer.register_step_post_hook(lambda *args: steps.append(1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(0)
    rows = train.fit(
        model,
        optimizer,
        scheduler,
        _fold(n, generator),
        task="classification",
        epochs=1,
        batch_size=batch_size,
        generator=generator,
    )
    return len(steps), rows


@pytest.mark.parametrize(
    ("n", "batch_size", "batch_norm", "steps"),
    [
        (5, 1, False, 5),  # batch_size=1: every row is a step
        (5, 2, False, 3),  # a trailing batch of one row is trained on ...
        (5, 2, True, 2),  # ... unless batch norm needs more than one row
        (6, 4, True, 2),  # a trailing batch of two rows: always
        (7, 7, True, 1),
        (7, 10, False, 1),  # one batch smaller than batch_size
    ],
)
def test_every_batch_size_trains_and_only_batch_norm_drops_a_single_trailing_row(
    n, batch_size, batch_norm, steps
):
    taken, rows = _fit_counting_steps(n, batch_size, batch_norm)
    assert taken == steps == train.batches_per_epoch(n, batch_size, batch_norm)
    train_loss = next(v for _, split, metric, v in rows if (split, metric) == ("train", "loss"))
    assert train_loss > 0


def test_batch_size_one_with_batch_norm_is_refused_before_training():
    with pytest.raises(ValueError, match="batch_size=1 with a batch-norm model"):
        _fit_counting_steps(5, 1, batch_norm=True)


def test_loss_bound_is_the_factor_times_the_initial_loss_at_least_one():
    assert train.LossBound(1e4, 2.3).limit == pytest.approx(2.3e4)
    assert train.LossBound(1e4, 1e-6).limit == 1e4  # a near-perfect start: not noise-triggered
    assert train.LossBound(None, 2.3).limit is None  # diverge_factor=null: no bound
    assert train.LossBound(1e4).limit is None  # before the first step's loss is known


def test_epoch_rule_names_what_diverged():
    rule = train.epoch_divergence
    assert rule(2, 9, {"train/loss": 5.0, "val/loss": 1.0, "val/acc": 0.5}, 10.0) is None
    grown = rule(2, 9, {"train/loss": 11.0, "val/loss": 1.0}, 10.0)
    assert grown is not None and (grown.epoch, grown.step, grown.loss) == (2, 9, 11.0)
    assert "mean training loss became 11" in str(grown)
    nan = rule(3, 14, {"train/loss": 1.0, "val/acc": math.nan}, None)
    assert nan is not None and str(nan).startswith("val/acc became nan at epoch 3")
    assert rule(3, 14, {"test/r2": -math.inf}, None) is not None
    assert rule(3, 14, {"train/loss": 1e30, "train/r2": math.nan}, None) is None  # no bound


def test_diverged_error_survives_pickling_with_its_reason():
    import pickle

    error = train.DivergedError(2, 9, 11.0, "the epoch's mean training loss became 11")
    again = pickle.loads(pickle.dumps(error))
    assert (again.epoch, again.step, again.loss, str(again)) == (2, 9, 11.0, str(error))


SYNTHETIC = ["allow_targets=[tests.synthetic]", "batch_size=16"]
SMALL = ["model.d_model=16", "model.d_ff=32", "model.n_layers=1"]
TASK_RUNS = {
    "classification": ["dataset=iris", "analysis=hessian"],
    "regression": ["dataset=diabetes"],
    "tagging": [
        "dataset._target_=tests.synthetic.tagging", *SYNTHETIC, "model=attention", *SMALL,
        "model.head=token",
    ],
    "seq2seq": [
        "dataset._target_=tests.synthetic.reverse", *SYNTHETIC, "model=transformer", *SMALL,
    ],
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(TASK_RUNS))
def test_the_task_table_names_exactly_what_a_run_records(compose, tmp_path, task):
    """mlcli.tasks (read by the preflight's metric check) and the loops never drift apart."""
    cfg = compose(*TASK_RUNS[task], "epochs=1", "cv=holdout", "progress=false", "device=cpu")
    outcome = runner.run(cfg, tmp_path / task)
    assert outcome.state == "COMPLETED"
    rows = read_results(tmp_path / task / "results.parquet")
    recorded = {f"{r['split']}/{r['metric']}" for r in rows} - {"train/lr"}
    expected = set(tasks.recorded_metrics(task, cfg.analysis))
    assert recorded == expected


def test_readme_divergence_example(cli, tmp_path):
    """The docs' example: Adam at lr=1e6 ends DIVERGED where its comment says."""

    from mlcli.rundir import read_json
    from tests import docs

    readme = docs.page("guide/training.md")
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("mlcli train optim.lr=1e6")]
    command, comment = line.split("#", 1)
    result = cli(*command.split()[1:], "progress=false")
    assert result.exit_code == 1 and "DIVERGED" in result.output
    (status_path,) = (tmp_path / "outputs").rglob("status.json")
    status = read_json(status_path)
    assert status["state"] == "DIVERGED" and status["folds_completed"] == []
    error = status["error"]
    assert f"epoch {error['epoch']}, optimizer step {error['step']}" in comment.replace(
        "fold 0, ", ""
    )
    assert "mean training loss became" in error["message"]
