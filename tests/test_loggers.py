"""Loggers (``logger=[tensorboard]``, ``logger=[mlflow]``) and the per-step lr rows.

Event files are read back with TensorBoard's own reader, MLflow runs with MLflow's own client;
both are compared with the run's ``results.parquet``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcli import runner
from mlcli.config.identity import run_key
from mlcli.loggers.tensorboard import TensorBoardLogger
from mlcli.report.collect import collect

# Two folds of digits (718 training rows: 12 steps an epoch) with a 20-step linear warmup.
WARMUP = [
    "epochs=3", "cv.n_splits=2", "progress=false", "scheduler.warmup=linear",
    "scheduler.warmup_steps=20", "optim.lr=0.01",
]  # fmt: skip
STRATEGIES = {
    "stacked": ["stack_folds=on"],
    "sequential": ["stack_folds=off"],
    "parallel": ["stack_folds=off", "parallel_folds=2"],
}


def _accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return events


def _events(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every scalar (dir_name, tag, step, value) and hparam (dir_name, tag, value) of the
    TensorBoard runs under ``run_dir/tb``, read back with TensorBoard's own reader."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars, hparams = [], []
    for path in sorted((run_dir / "tb").iterdir()):
        events = _accumulator(path)
        for tag in events.Tags()["scalars"]:
            scalars += [(path.name, tag, e.step, e.value) for e in events.Scalars(tag)]
        content = events.PluginTagToContent("hparams").get("_hparams_/session_start_info")
        if content is not None:
            info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
            for name, value in info.hparams.items():
                kind = value.WhichOneof("kind")
                hparams.append((path.name, name, getattr(value, kind)))
    return (
        pd.DataFrame(scalars, columns=["dir_name", "tag", "step", "value"]),
        pd.DataFrame(hparams, columns=["dir_name", "tag", "value"]),
    )


def _f32(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)  # event files hold float32 scalars


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_tensorboard_events_hold_the_results_per_fold_the_lr_per_step_and_hparams(
    compose, tmp_path, strategy
):
    cfg = compose(*WARMUP, *STRATEGIES[strategy], "logger=[tensorboard]")
    outcome = runner.run(cfg, tmp_path / "run", choices={"optim": "adam"},
                         overrides=["optim.lr=0.01", "logger=[tensorboard]"])  # fmt: skip
    assert outcome.state == "COMPLETED"
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    scalars, hparams = _events(tmp_path / "run")
    # One TensorBoard run per fold and the fold mean: no stray sub-run from the hparams.
    assert sorted(p.name for p in (tmp_path / "run" / "tb").iterdir()) == ["fold0", "fold1", "mean"]
    for fold in (0, 1):
        events = scalars[scalars["dir_name"] == f"fold{fold}"]
        rows = results[results["fold"] == fold]
        for split in ("train", "val", "test"):
            for metric, expected in rows[rows["split"] == split].groupby("metric"):
                logged = events[events["tag"] == f"{metric}/{split}"].sort_values("step")
                assert logged["step"].tolist() == expected["epoch"].tolist(), (metric, split)
                np.testing.assert_array_equal(_f32(logged["value"]), _f32(expected["value"]))
        # The lr per optimizer step: the whole 20-step warmup, then each epoch's first step.
        lr = events[events["tag"] == "lr/step"].sort_values("step")
        steps = rows[rows["split"] == "train_step"].sort_values("epoch")
        assert lr["step"].tolist() == steps["epoch"].tolist()
        assert lr["step"].tolist() == [*range(1, 21), 25]
        np.testing.assert_allclose(lr["value"], [0.01 * s / 20 for s in range(1, 21)] + [0.01],
                                   rtol=1e-6)  # fmt: skip
        chosen = hparams[hparams["dir_name"] == f"fold{fold}"].set_index("tag")["value"]
        assert chosen["optim"] == "adam" and float(chosen["optim.lr"]) == 0.01
        assert "logger" not in chosen.index  # what changes no result is no hparam
    # The mean run: per epoch, the fold mean of each value.
    mean = scalars[(scalars["dir_name"] == "mean") & (scalars["tag"] == "acc/val")]
    per_epoch = results[(results["split"] == "val") & (results["metric"] == "acc")]
    expected_mean = per_epoch.groupby("epoch")["value"].mean()
    np.testing.assert_allclose(mean.sort_values("step")["value"], expected_mean, rtol=1e-6)
    assert "optim" in set(hparams[hparams["dir_name"] == "mean"]["tag"])


def test_hparams_name_metrics_the_run_logged(compose, tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = compose(*WARMUP, "epochs=1", "logger=[tensorboard]")
    assert runner.run(cfg, tmp_path / "run", choices={"model": "mlp"}).state == "COMPLETED"
    events = _accumulator(tmp_path / "run" / "tb" / "fold0")
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"acc/val", "loss/val", "acc/test"} <= metrics
    assert metrics <= set(events.Tags()["scalars"])  # TensorBoard shows each one's last value


def test_the_per_step_lr_rows_and_stacked_equal_sequential(compose, tmp_path):
    rows = {}
    for name in ("stacked", "sequential"):
        cfg = compose(*WARMUP, *STRATEGIES[name])
        assert runner.run(cfg, tmp_path / name).state == "COMPLETED"
        frame = pd.read_parquet(tmp_path / name / "results.parquet")
        rows[name] = frame[frame["split"] == "train_step"].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows["stacked"], rows["sequential"], check_exact=True)
    # A constant lr: one row per epoch (its first step), nothing per step.
    cfg = compose("epochs=3", "cv.n_splits=2", "progress=false")
    runner.run(cfg, tmp_path / "constant")
    frame = pd.read_parquet(tmp_path / "constant" / "results.parquet")
    steps = frame[(frame["split"] == "train_step") & (frame["fold"] == 0)]
    assert steps["epoch"].tolist() == [1, 13, 25] and set(steps["value"]) == {0.01}


def test_the_report_reads_per_epoch_rows_only(compose, tmp_path):
    cfg = compose(*WARMUP)
    runner.run(cfg, tmp_path / "run")
    collected = collect([tmp_path])
    assert "train_step" not in set(collected.results["split"])
    assert collected.results["epoch"].max() == 3  # no optimizer step read as an epoch
    outcome = runner.run(cfg, tmp_path / "run")  # the finished run is found again
    assert "train_step/lr" not in outcome.summary


def test_logger_is_not_part_of_the_run_key(compose):
    plain = compose("epochs=1")
    assert run_key(compose("epochs=1", "logger=[tensorboard,mlflow]")) == run_key(plain)
    assert run_key(compose("epochs=2")) != run_key(plain)


def test_a_failing_logger_warns_once_and_changes_no_result(compose, tmp_path, monkeypatch, caplog):
    def broken(self, fold, epoch, metrics):
        raise OSError("No space left on device")

    monkeypatch.setattr(TensorBoardLogger, "epoch", broken)
    args = ["epochs=2", "cv.n_splits=2", "progress=false", "stack_folds=off"]
    with caplog.at_level(logging.WARNING, logger="mlcli"):
        logged = runner.run(compose(*args, "logger=[tensorboard]"), tmp_path / "logged")
    assert logged.state == "COMPLETED"
    assert [r.getMessage() for r in caplog.records if "logger tensorboard" in r.getMessage()] == [
        "logger tensorboard: OSError: No space left on device; it logs nothing more for this run "
        "(its results are unaffected)"
    ]
    plain = runner.run(compose(*args), tmp_path / "plain")
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "logged" / "results.parquet"),
        pd.read_parquet(tmp_path / "plain" / "results.parquet"),
        check_exact=True,
    )
    assert logged.run_key == plain.run_key


def test_an_unknown_or_missing_logger_is_refused_before_training(cli, tmp_path, monkeypatch):
    result = cli("train", "logger=[wandb]")
    assert result.exit_code == 2 and "logger" in result.output
    assert "tensorboard" in result.output and "mlflow" in result.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    result = cli("train", "logger=[mlflow]")
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "pip install 'mlcli[mlflow]'" in text, result.output
    assert "Traceback" not in result.output and not (tmp_path / "outputs").exists()


def test_a_plain_run_imports_no_logger_package(compose, tmp_path):
    code = (
        "import sys; from mlcli import runner; from mlcli.config.compose import compose_job;"
        "cfg = compose_job(['epochs=1', 'cv.n_splits=2', 'progress=false'], None, 'config');"
        f"runner.run(cfg, {str(tmp_path / 'run')!r});"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard')"
        " or m.startswith('torch.utils.tensorboard')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _mlflow_runs(outputs: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlcli")
    return client, list(client.search_runs([experiment.experiment_id]))


def test_mlflow_one_parent_run_per_job_with_its_folds_nested(compose, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outputs = tmp_path / "outputs"
    args = [*WARMUP, "cv.n_splits=3", "epochs=2", f"outputs_root={outputs}", "logger=[mlflow]"]
    for seed in (0, 1):  # two jobs
        cfg = compose(*args, f"seed={seed}")
        done = runner.run(cfg, outputs / "runs" / f"job{seed}", choices={"optim": "adam"})
        assert done.state == "COMPLETED"
    client, runs = _mlflow_runs(outputs)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == ["job0", "job1"]
    for parent in parents:
        run_dir = Path(parent.data.tags["mlcli.run_dir"])
        assert parent.info.status == "FINISHED" and parent.data.params["optim.lr"] == "0.01"
        assert parent.data.params["seed"] == run_dir.name[-1]
        assert parent.data.tags["mlcli.choice.optim"] == "adam"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.data.tags["mlcli.fold"] for c in children) == ["0", "1", "2"]
        results = pd.read_parquet(run_dir / "results.parquet")
        for child in children:
            rows = results[results["fold"] == int(child.data.tags["mlcli.fold"])]
            history = client.get_metric_history(child.info.run_id, "val/acc")
            expected = rows[(rows["split"] == "val") & (rows["metric"] == "acc")]
            assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
                zip(expected["epoch"], expected["value"], strict=True)
            )
            lr = client.get_metric_history(child.info.run_id, "train_step/lr")
            assert (
                sorted(m.step for m in lr) == rows[rows["split"] == "train_step"]["epoch"].tolist()
            )
        mean = client.get_metric_history(parent.info.run_id, "val/acc")
        val = results[(results["split"] == "val") & (results["metric"] == "acc")]
        np.testing.assert_allclose(
            [m.value for m in sorted(mean, key=lambda m: m.step)],
            val.groupby("epoch")["value"].mean(),
        )
    assert all(
        r.info.artifact_uri.startswith((outputs / "mlflow-artifacts").as_uri()) for r in runs
    )
    # A job's artifacts are its run dir: MLflow's client lists and downloads its own files.
    for parent in parents:
        run_dir = Path(parent.data.tags["mlcli.run_dir"])
        listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"config.yaml", "results.parquet", "status.json"} <= listed
        assert listed == {p.name for p in run_dir.iterdir()}
        got = client.download_artifacts(parent.info.run_id, "results.parquet", str(tmp_path))
        assert Path(got).read_bytes() == (run_dir / "results.parquet").read_bytes()


def test_mlflow_a_continued_job_logs_into_its_own_parent_run(compose, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outputs = tmp_path / "outputs"
    cfg = compose(*WARMUP, "epochs=1", "stack_folds=off", f"outputs_root={outputs}",
                  "logger=[mlflow]")  # fmt: skip

    class StopAfterFold0:
        def start(self, *args: object) -> None: ...

        def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
            if fold == 1:
                raise KeyboardInterrupt

        def fold_done(self, fold: int) -> None: ...

    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, outputs / "runs" / "job", reporter=StopAfterFold0())
    _, runs = _mlflow_runs(outputs)
    status = {r.data.tags.get("mlcli.fold"): r.info.status for r in runs}
    assert status == {"": "KILLED", "0": "FINISHED", "1": "KILLED"}  # the job, its folds
    assert runner.run(cfg, outputs / "runs" / "job").state == "COMPLETED"
    _, runs = _mlflow_runs(outputs)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.data.tags["mlcli.fold"]: r for r in runs if r not in parents}
    assert sorted(children) == ["0", "1"]  # fold 1 trained again: its first child replaced
    assert all(c.info.status == "FINISHED" for c in children.values())
