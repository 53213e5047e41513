"""Checkpoints resume bit for bit; writes are never torn; divergence stops at once.

The kill tests fork the test process (fast: nothing to import again) and SIGKILL the child.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlcli import rundir as results
from mlcli import runner
from mlcli import sweeps as sweep
from mlcli.engine import checkpoint
from mlcli.engine import fold as fold_module
from mlcli.report.collect import collect
from mlcli.tasks import metrics as task_metrics

CHECKPOINTED = [
    "model=mlp", "model.dropout=0.3", "dataset=wine", "epochs=4", "cv.n_splits=2",
    "checkpoint_every=1", "progress=false",
]  # fmt: skip


class _StopAt:
    """A progress reporter that interrupts the run after (fold, epoch), like Ctrl-C would."""

    def __init__(self, fold: int, epoch: int) -> None:
        self.at = (fold, epoch)

    def start(self, *args: object) -> None: ...

    def fold_done(self, fold: int) -> None: ...

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        if (fold, epoch) == self.at:
            raise KeyboardInterrupt


def _interrupted_then_resumed(cfg, run_dir: Path) -> pd.DataFrame:
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, run_dir, reporter=_StopAt(fold=1, epoch=2))
    status = results.read_json(run_dir / "status.json")
    assert status["state"] == "INTERRUPTED" and status["folds_completed"] == [0]
    saved = checkpoint.load(checkpoint.fold_path(run_dir, 1))
    assert (saved["fold"], saved["epoch"]) == (1, 2)
    # The global generators move on before the next attempt, as in a new process.
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    assert runner.run(cfg, run_dir).state == "COMPLETED"
    assert not checkpoint.fold_path(run_dir, 1).exists()  # the fold is done: checkpoint gone
    return pd.read_parquet(run_dir / "results.parquet")


def test_checkpoint_resumed_run_is_identical_to_an_uninterrupted_one(compose, tmp_path):
    cfg = compose(*CHECKPOINTED)
    assert runner.run(cfg, tmp_path / "straight").state == "COMPLETED"
    straight = pd.read_parquet(tmp_path / "straight" / "results.parquet")
    resumed = _interrupted_then_resumed(cfg, tmp_path / "resumed")
    pd.testing.assert_frame_equal(straight, resumed, check_exact=True)


def test_without_the_random_states_a_resumed_run_differs(compose, tmp_path, monkeypatch):
    cfg = compose(*CHECKPOINTED)
    runner.run(cfg, tmp_path / "straight")
    straight = pd.read_parquet(tmp_path / "straight" / "results.parquet")
    monkeypatch.setattr(checkpoint, "restore_rng", lambda *args: None)
    resumed = _interrupted_then_resumed(cfg, tmp_path / "resumed")
    key = ["fold", "epoch", "split", "metric"]
    merged = straight.merge(resumed, on=["run_key", *key], suffixes=("", "_resumed"))
    differs = merged[merged["value"] != merged["value_resumed"]]
    # Folds and epochs before the checkpoint agree; fold 1 after it does not (batch order, dropout).
    assert not differs.empty and set(differs["fold"]) == {1} and differs["epoch"].min() == 3


def test_a_resumed_fold_keeps_the_divergence_bound_taken_from_its_first_loss(
    compose, tmp_path, monkeypatch
):
    """The bound is diverge_factor × the fold's loss at initialization: a fold resumed from a
    checkpoint (which never sees its first step again) gets it back from the checkpoint."""
    calls: list[tuple[int, float | None, float | None]] = []
    real_fit = fold_module.fit

    def recording_fit(*args, bound, start_epoch, **kwargs):
        before = bound.initial
        rows = real_fit(*args, bound=bound, start_epoch=start_epoch, **kwargs)
        calls.append((start_epoch, before, bound.initial))
        return rows

    monkeypatch.setattr(fold_module, "fit", recording_fit)
    cfg = compose(*CHECKPOINTED)
    runner.run(cfg, tmp_path / "straight")
    (_, none, first_loss_0), (_, _, first_loss_1) = calls
    assert none is None and math.isfinite(first_loss_1) and first_loss_0 != first_loss_1
    calls.clear()
    _interrupted_then_resumed(cfg, tmp_path / "resumed")
    assert calls[-1] == (3, first_loss_1, first_loss_1)  # fold 1, resumed after epoch 2


def test_checkpoints_load_weights_only_even_when_the_environment_says_otherwise(
    tmp_path, monkeypatch
):
    path = tmp_path / "evil.pt"
    checkpoint.save(path, {"payload": pd.Timestamp("2020-01-01")})  # not a plain tensor/number
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(checkpoint.CheckpointRefusedError, match="refuses it"):
        checkpoint.load(path)


def test_checkpoint_holds_every_random_state(compose, tmp_path):
    generator = torch.Generator().manual_seed(7)
    state = checkpoint.rng_state(generator, torch.device("cpu"))

    def draw() -> tuple:
        return (
            torch.rand(3),
            np.random.rand(3),
            random.random(),
            torch.randperm(9, generator=generator),
        )

    first = draw()
    checkpoint.restore_rng(state, generator, torch.device("cpu"))
    again = draw()
    assert torch.equal(first[0], again[0]) and torch.equal(first[3], again[3])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


# --------------------------------------------------------------------------------------------------
# Writes that cannot be torn.


def _write_runs(root: Path, writer: int, count: int) -> None:
    """One writer process: `count` runs, each with one result row (results first, then status)."""
    for i in range(count):
        run_dir = root / f"w{writer:02d}" / f"{i:03d}"
        row = {"run_key": f"w{writer}-{i}", "fold": 0, "epoch": 1, "split": "val", "metric": "acc",
               "value": writer + i / 1000}  # fmt: skip
        results.atomic_write_text(run_dir / "config.yaml", "seed: 0\n")
        results.write_results(run_dir / "results.parquet", [row])
        results.write_json(
            run_dir / "status.json", {"run_key": row["run_key"], "state": "COMPLETED"}
        )


def _fork(body) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            body()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


@pytest.mark.slow
def test_sixteen_processes_writing_at_once_lose_nothing_and_readers_never_fail(tmp_path):
    root = tmp_path / "outputs"
    pending = {_fork(lambda w=w: _write_runs(root, w, 100)) for w in range(16)}
    reads = 0
    while pending:
        if root.exists() and any(root.rglob("status.json")):
            got = collect([root])  # what `mlcli report` reads, while the writes go on
            assert set(got.runs["state"]) == {"COMPLETED"} and not got.notes
            # a run whose status is there has its results there too: never half a run
            assert set(range(len(got.runs))) <= set(got.results["run"])
            reads += 1
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                pending.remove(pid)
        time.sleep(0.2)
    got = collect([root])
    assert len(got.results) == 1600 and not got.results.duplicated(["run"]).any()
    assert len(got.runs) == 1600 and got.runs["run_key"].is_unique and reads > 0


def test_kill_9_during_writes_leaves_every_finished_file_readable(tmp_path):
    big = [{"run_key": "k", "fold": f, "epoch": e, "split": "val", "metric": "m", "value": e / 7}
           for f in range(10) for e in range(2000)]  # fmt: skip
    state = {"model": torch.nn.Linear(200, 200).state_dict(), "epoch": 3}

    def write_forever(round_: int) -> None:
        for i in range(10**6):
            run_dir = tmp_path / "runs" / f"{round_}-{i}"
            results.write_results(tmp_path / "same" / "results.parquet", big)
            results.write_json(tmp_path / "same" / "status.json", {"run_key": "k", "i": i})
            checkpoint.save(tmp_path / "same" / "fold-0.pt", state)
            results.write_results(run_dir / "results.parquet", big[:100])

    rng = random.Random(0)
    for round_ in range(15):
        pid = _fork(lambda r=round_: write_forever(r))
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for path in tmp_path.rglob("*"):
            if path.is_dir() or path.name.startswith("."):
                continue  # temp files of interrupted writes: ignored by every reader
            if path.suffix == ".parquet":
                assert len(results.read_results(path)) in (100, len(big))
            elif path.suffix == ".json":
                assert results.read_json(path)["run_key"] == "k"
            else:
                assert checkpoint.load(path)["epoch"] == 3
    assert (tmp_path / "same" / "results.parquet").exists()
    assert sweep.scan_runs(tmp_path) != []  # leftover temp files do not confuse the index


# --------------------------------------------------------------------------------------------------
# Divergence.


def test_diverging_run_stops_at_the_first_non_finite_loss_and_clipping_keeps_it_finite(
    compose, tmp_path, monkeypatch
):
    losses: list[float] = []
    real_loss = task_metrics.loss

    def recording_loss(task, output, target):
        loss = real_loss(task, output, target)
        if torch.is_grad_enabled():  # training steps only, not evaluation
            losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(task_metrics, "loss", recording_loss)
    # No growth bound: this is the per-step check of a loss that becomes NaN/inf.
    args = ["optim=sgd", "optim.lr=50", "dataset=diabetes", "model=linear", "cv=holdout",
            "epochs=5", "progress=false", "diverge_factor=null"]  # fmt: skip
    outcome = runner.run(compose(*args), tmp_path / "diverged")
    assert outcome.state == "DIVERGED"
    status = json.loads((tmp_path / "diverged" / "status.json").read_text())
    first_bad = next(i for i, loss in enumerate(losses) if not math.isfinite(loss))
    # stopped at that very step: no optimizer step was taken with a non-finite loss
    assert status["error"]["step"] == first_bad == len(losses) - 1
    assert status["state"] == "DIVERGED" and status["error"]["type"] == "DivergedError"

    losses.clear()
    clipped = runner.run(compose(*args, "clip_grad_norm=1.0"), tmp_path / "clipped")
    assert clipped.state == "COMPLETED" and all(math.isfinite(v) for v in losses)
    frame = pd.read_parquet(tmp_path / "clipped" / "results.parquet")
    assert np.isfinite(frame["value"]).all()
