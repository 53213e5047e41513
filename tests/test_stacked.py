"""Stacked and parallel folds give the results of sequential training (not timed here: bench/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlcli import runner
from mlcli.engine.optim import build_optimizer
from mlcli.rundir import read_json, read_results

FAST = ["epochs=2", "cv.n_splits=2", "progress=false", "device=cpu"]


def _run(compose, path: Path, *overrides: str) -> tuple[runner.RunOutcome, dict, dict]:
    outcome = runner.run(compose(*FAST, *overrides), path)
    status = read_json(path / "status.json")
    rows = read_results(path / "results.parquet") if (path / "results.parquet").exists() else []
    values = {(r["fold"], r["epoch"], r["split"], r["metric"]): r["value"] for r in rows}
    return outcome, status, values


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # digits MLP, Adam; the folds' last batches differ in size (a ragged step)
        [
            "dataset=diabetes",
            "model.batch_norm=true",
            "optim=sgd",
            "optim.momentum=0.9",
            "clip_grad_norm=0.5",
            "scheduler=cosine",
            "batch_size=32",
        ],
        ["dataset=wine", "model=linear", "optim.weight_decay=0.01"],
        # every optimizer: fused kernels (AdamW, Adagrad) and the per-tensor loop (RMSprop)
        ["dataset=iris", "optim=adamw", "optim.weight_decay=0.05", "scheduler=linear"],
        ["dataset=iris", "optim=adagrad", "model.hidden=[16,16]"],
        ["dataset=iris", "optim=rmsprop", "optim.momentum=0.5", "clip_grad_norm=1.0"],
        # every batch size trains: batches of one row; a trailing batch of one row (60 rows a
        # fold), dropped only with batch norm; folds of 102 and 103 rows (tails of 1 and 2 rows)
        ["dataset=iris", "batch_size=1", "scheduler=cosine"],
        ["dataset=iris", "batch_size=59", "scheduler=linear"],
        # (SGD: Adam turns the float noise of the gradient of a bias before batch norm, which is
        # zero in exact arithmetic, into steps of ~lr that shift the running mean a little)
        ["dataset=iris", "batch_size=59", "model.batch_norm=true", "optim=sgd", "optim.lr=0.1"],
        ["dataset=iris", "cv.n_splits=7", "batch_size=101", "scheduler=linear"],
    ],
    ids=[
        "digits-mlp-adam",
        "diabetes-bn-sgd-clip-cosine",
        "wine-linear",
        "iris-adamw-linear-lr",
        "iris-adagrad-deep",
        "iris-rmsprop-momentum-clip",
        "iris-batch-size-1",
        "iris-single-row-tail",
        "iris-single-row-tail-bn",
        "iris-ragged-single-row-tail",
    ],
)
def test_stacked_folds_equal_sequential(compose, tmp_path, overrides):
    seq, seq_status, seq_rows = _run(compose, tmp_path / "seq", "stack_folds=off", *overrides)
    stk, stk_status, stk_rows = _run(compose, tmp_path / "stk", "stack_folds=on", *overrides)
    assert seq.state == stk.state == "COMPLETED"
    assert (seq_status["fold_training"], stk_status["fold_training"]) == ("sequential", "stacked")
    assert {k[0] for k in stk_rows} == {0, 1, *range(len(stk_status["folds_completed"]))}
    assert any(k[2] == "test" for k in stk_rows)
    _assert_same(seq_rows, stk_rows)


def test_batch_size_one_trains(compose, tmp_path):
    """A batch of one row is a step: the loss moves, the train metrics are those of real rows."""
    for mode in ("off", "on"):
        _, status, rows = _run(compose, tmp_path / mode, f"stack_folds={mode}", "dataset=iris",
                               "batch_size=1")  # fmt: skip
        assert status["state"] == "COMPLETED"
        for fold in (0, 1):
            first, second = rows[(fold, 1, "train", "loss")], rows[(fold, 2, "train", "loss")]
            assert 0 < second < first
            assert rows[(fold, 2, "train", "acc")] > 0.5  # 3 classes: chance is 1/3
            assert rows[(fold, 2, "val", "loss")] < rows[(fold, 1, "val", "loss")]


def test_auto_stacks_the_mlp_and_falls_back_for_dropout(compose, tmp_path):
    _, status, _ = _run(compose, tmp_path / "a", "stack_folds=auto")
    assert status["fold_training"] == "stacked"
    _, status, _ = _run(compose, tmp_path / "b", "stack_folds=auto", "model.dropout=0.2")
    assert status["fold_training"] == "sequential"


def test_stack_folds_on_with_dropout_fails_with_the_reason(compose, tmp_path):
    with pytest.raises(ValueError, match="dropout"):
        runner.run(compose(*FAST, "stack_folds=on", "model.dropout=0.2"), tmp_path / "run")
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "FAILED"
    assert "dropout" in status["error"]["message"]


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["dataset=diabetes", "optim=sgd", "optim.lr=1000", "epochs=3"], None),
        # finite but exploding: Adam at lr=1e6 (val loss ~1e14, as COMPLETED before the bound)
        (["optim.lr=1e6"], "the epoch's mean training loss became"),
        # no bound: the val loss is NaN while every training loss is finite
        (["dataset=wine", "optim=sgd", "optim.lr=1e6", "diverge_factor=null"], "val/loss became"),
    ],
    ids=["nan-loss", "bound", "nan-val"],
)
def test_divergence_is_recorded_as_sequential_training_does(compose, tmp_path, args, what):
    seq, seq_status, seq_rows = _run(compose, tmp_path / "seq", "stack_folds=off", *args)
    stk, stk_status, stk_rows = _run(compose, tmp_path / "stk", "stack_folds=on", *args)
    assert seq.state == stk.state == "DIVERGED"
    assert seq_status["error"] == stk_status["error"]
    assert what is None or what in seq_status["error"]["message"]
    assert seq_status["folds_completed"] == stk_status["folds_completed"]
    _assert_same(seq_rows, stk_rows)
    _, par_status, par_rows = _run(compose, tmp_path / "par", "stack_folds=off",
                                   "parallel_folds=2", *args)  # fmt: skip
    assert par_status["error"] == seq_status["error"] and par_rows == seq_rows


def test_stacked_resume_computes_only_missing_folds(compose, tmp_path):
    _, _, full = _run(compose, tmp_path / "full", "stack_folds=on")
    cfg = compose(*FAST, "stack_folds=on")
    path = tmp_path / "partial"
    runner.run(cfg, path)
    status = read_json(path / "status.json")
    rows = [r for r in read_results(path / "results.parquet") if r["fold"] == 0]
    from mlcli import rundir as results

    results.write_results(path / "results.parquet", rows)
    status["folds_completed"] = [0]
    results.write_json(path / "status.json", status)
    runner.run(cfg, path)
    again = {
        (r["fold"], r["epoch"], r["split"], r["metric"]): r["value"]
        for r in read_results(path / "results.parquet")
    }
    _assert_same(full, again)


def test_parallel_folds_are_bit_identical_to_sequential(compose, tmp_path):
    args = ["stack_folds=off", "model.dropout=0.1"]
    _, _, seq_rows = _run(compose, tmp_path / "seq", *args)
    _, status, par_rows = _run(compose, tmp_path / "par", *args, "parallel_folds=2")
    assert status["fold_training"] == "parallel"
    assert seq_rows == par_rows


def _deep(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def test_foreach_optimizer_makes_the_same_updates(compose):
    models = [_deep(), _deep()]  # six parameter tensors: foreach pays
    node = compose("optim=adam").optim
    fast = build_optimizer(node, models[0].parameters(), [])
    plain = torch.optim.Adam(models[1].parameters(), lr=float(node.lr))
    assert fast.defaults["foreach"] is True
    x = torch.randn(16, 5)
    for _ in range(5):
        for model, optimizer in zip(models, (fast, plain), strict=True):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_few_parameter_tensors_keep_the_per_tensor_loop(compose):
    node = compose("optim=adam").optim
    assert build_optimizer(node, nn.Linear(5, 3).parameters(), []).defaults["foreach"] is None
    assert build_optimizer(node, _deep().parameters(), []).defaults["foreach"] is True
    forced = compose("optim=adam", "+optim.foreach=false").optim
    assert build_optimizer(forced, _deep().parameters(), []).defaults["foreach"] is False


def test_how_folds_are_trained_does_not_change_the_run_key(compose):
    keys = {
        runner.run_key(compose(*FAST, f"stack_folds={mode}", f"parallel_folds={n}"))
        for mode in ("auto", "on", "off")
        for n in (1, 2)
    }
    assert len(keys) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["stack_folds=on"],  # README "Speed" examples, with one epoch on two folds
        ["stack_folds=off", "parallel_folds=2", "model.dropout=0.2"],
    ],
)
def test_readme_speed_examples(cli, tmp_path, args):
    result = cli("train", *args, "epochs=1", "cv.n_splits=2", "progress=false")
    assert result.exit_code == 0, result.output
    (status_path,) = Path("outputs").glob("runs/*/status.json")
    assert read_json(status_path)["state"] == "COMPLETED"
