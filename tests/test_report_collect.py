"""Reading run dirs robustly: half-made dirs, temp files, runs written while read, PRUNED runs."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlcli.report import ReportOptions, build_report
from mlcli.rundir import write_json, write_results

SWEEP = Path(__file__).parent / "data" / "runs" / "sweep"


def run_of(**config: str) -> Path:
    """The checked-in sweep run with these overrides (seed 0 unless given)."""
    config.setdefault("seed", "0")
    for run_dir in sorted(p for p in SWEEP.iterdir() if p.is_dir()):
        overrides = json.loads((run_dir / "status.json").read_text())["overrides"]
        if all(f"{k}={v}" in overrides for k, v in config.items()):
            return run_dir
    raise LookupError(config)


def copy_run(source: Path, target: Path, **status: object) -> Path:
    shutil.copytree(source, target)
    if status:
        data = json.loads((target / "status.json").read_text())
        data.update(status)
        write_json(target / "status.json", data)
    return target


def val_acc(run_dir: Path, folds: list[int]) -> list[float]:
    rows = pq.read_table(run_dir / "results.parquet").to_pandas()
    rows = rows[(rows["split"] == "val") & (rows["metric"] == "acc") & rows["fold"].isin(folds)]
    last = rows.groupby("fold")["epoch"].transform("max")
    return list(rows.loc[rows["epoch"] == last, "value"])


ADAM = {"optim": "adam", "optim.lr": "0.01"}
SGD = {"optim": "sgd", "optim.lr": "0.1"}


def test_temp_files_half_made_and_broken_run_dirs_are_listed_not_fatal(tmp_path):
    root = tmp_path / "runs"
    good = copy_run(run_of(**ADAM), root / "good")
    (good / ".results.parquet.k2j4h.tmp").write_bytes(b"half a parquet file")
    (good / ".status.json.x81z.tmp").write_text('{"state": "COMP')
    # A run that has just started: status.json only, no config.yaml, no results yet.
    starting = root / "starting"
    starting.mkdir(parents=True)
    status = json.loads((run_of(**SGD) / "status.json").read_text())
    write_json(starting / "status.json", {**status, "state": "RUNNING", "folds_completed": []})
    broken = copy_run(run_of(**SGD), root / "broken")
    (broken / "results.parquet").write_bytes(b"not parquet")
    unknown = root / "unknown"
    unknown.mkdir()
    (unknown / "status.json").write_text("{ not json")

    agg = build_report([root])
    states = dict(zip(agg.runs["run_dir"], agg.runs["state"], strict=True))
    assert states == {
        f"{root.as_posix()}/broken": "COMPLETED",
        f"{root.as_posix()}/good": "COMPLETED",
        f"{root.as_posix()}/starting": "RUNNING",
        f"{root.as_posix()}/unknown": "UNKNOWN",
    }
    good_row = agg.table[agg.table["optim"] == "adam"].iloc[0]
    expected = val_acc(good, [0, 1])
    assert good_row["n_folds"] == 2
    assert good_row["val/acc_mean"] == pytest.approx(np.mean(expected))
    # The starting run's config comes from its overrides; it groups with the broken sgd run.
    sgd_row = agg.table[agg.table["optim"] == "sgd"].iloc[0]
    assert sgd_row["status"] == "RUNNING,COMPLETED"
    assert sgd_row["n_folds"] == 0
    assert any("results.parquet unreadable" in note for note in agg.notes)
    assert any("config.yaml missing" in note for note in agg.notes)
    unknown_row = agg.runs[agg.runs["state"] == "UNKNOWN"].iloc[0]
    assert unknown_row["error"].startswith("status.json unreadable")


def test_pruned_runs_count_their_finished_folds_as_partial_results(tmp_path):
    root = tmp_path / "runs"
    copy_run(run_of(**ADAM), root / "adam")
    pruned = copy_run(run_of(**SGD), root / "sgd_pruned", state="PRUNED", folds_completed=[0])
    # A pruned trial next to a completed run of the same configuration stays out of its mean.
    other = copy_run(run_of(**ADAM, seed="1"), root / "adam_pruned", state="PRUNED")

    agg = build_report([root])
    table = agg.table.set_index("optim")
    assert list(agg.table["optim"]) == ["adam", "sgd"]  # the complete one ranks first
    assert not table.loc["adam", "partial"] and table.loc["adam", "n_folds"] == 2
    assert table.loc["adam", "status"] == "COMPLETED,PRUNED"
    assert table.loc["sgd", "partial"] and table.loc["sgd", "n_folds"] == 1
    assert table.loc["sgd", "val/acc_mean"] == pytest.approx(val_acc(pruned, [0])[0])
    assert table.loc["sgd", "rank"] == 2
    assert other.exists()


def test_a_configuration_with_a_diverged_run_never_ranks_above_one_without(tmp_path):
    """adam (lr 0.01) has the best val/acc, but one of its seeds DIVERGED: the mean of its
    surviving seed must not put it above sgd, whose seeds all finished."""
    root = tmp_path / "runs"
    copy_run(run_of(**ADAM), root / "adam0")
    copy_run(run_of(**ADAM, seed="1"), root / "adam1", state="DIVERGED", folds_completed=[0],
             error={"type": "DivergedError", "message": "val/loss became nan at epoch 2, "
                    "optimizer step 3", "epoch": 2, "step": 3})  # fmt: skip
    copy_run(run_of(**SGD), root / "sgd0")
    copy_run(run_of(**SGD, seed="1"), root / "sgd1")
    agg = build_report([root])
    table = agg.table.set_index("optim")
    assert table.loc["adam", "val/acc_mean"] > table.loc["sgd", "val/acc_mean"]
    assert list(agg.table["optim"]) == ["sgd", "adam"]
    assert (table.loc["sgd", "rank"], table.loc["adam", "rank"]) == (1, 2)
    assert table.loc["adam", "status"] == "COMPLETED,DIVERGED"
    assert any("DIVERGED run ranks after" in note for note in agg.notes)


def test_a_nan_in_a_completed_run_makes_the_mean_nan_not_a_smaller_average(tmp_path):
    run = copy_run(run_of(**ADAM), tmp_path / "runs" / "a")
    rows = pq.read_table(run / "results.parquet").to_pandas()
    last = rows["epoch"] == rows["epoch"].max()
    rows.loc[(rows["fold"] == 1) & (rows["split"] == "val") & (rows["metric"] == "acc") & last,
             "value"] = np.nan  # fmt: skip
    write_results(run / "results.parquet", rows.to_dict("records"))
    agg = build_report([tmp_path / "runs"])
    assert pd.isna(agg.table["val/acc_mean"].iloc[0])
    assert not pd.isna(agg.table["val/loss_mean"].iloc[0])
    assert any("non-finite" in note for note in agg.notes)


def test_reading_while_runs_are_being_written(tmp_path):
    """A writer makes runs as the runner does while the report reads them again and again.

    Each new run dir goes: status RUNNING → fold 0's results → status with fold 0 → both folds'
    results → status COMPLETED, every file replaced atomically (results before status).
    """
    root = tmp_path / "runs"
    source = run_of(**ADAM)
    both = pq.read_table(source / "results.parquet").to_pandas()
    status = json.loads((source / "status.json").read_text())
    stop, first_done = threading.Event(), threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            run = root / f"live{i}"
            run.mkdir(parents=True)
            shutil.copy(source / "config.yaml", run / "config.yaml")
            write_json(run / "status.json", {**status, "state": "RUNNING", "folds_completed": []})
            for fold in (0, 1):
                rows = both[both["fold"] <= fold].to_dict("records")
                write_results(run / "results.parquet", rows)
                folds = list(range(fold + 1))
                write_json(run / "status.json", {**status, "state": "RUNNING",
                                                 "folds_completed": folds})  # fmt: skip
            write_json(run / "status.json", status)
            first_done.set()
            i += 1

    # One run that stays half-written (interrupted after fold 0) whatever the thread timing.
    stuck = root / "stuck"
    stuck.mkdir(parents=True)
    shutil.copy(source / "config.yaml", stuck / "config.yaml")
    write_results(stuck / "results.parquet", both[both["fold"] == 0].to_dict("records"))
    write_json(stuck / "status.json", {**status, "state": "RUNNING", "folds_completed": [0]})
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert first_done.wait(timeout=60)
        seen: set[str] = set()
        for _ in range(8):
            agg = build_report([root], ReportOptions(by=("optim",)))
            seen.update(agg.runs["state"])
            n_completed = int((agg.runs["state"] == "COMPLETED").sum())
            row = agg.table.iloc[0]
            # Only COMPLETED runs count, each with both of its folds.
            assert row["n_folds"] == 2 * n_completed
            if n_completed:
                assert row["val/acc_mean"] == pytest.approx(np.mean(val_acc(source, [0, 1])))
    finally:
        stop.set()
        thread.join()
    assert "RUNNING" in seen and "COMPLETED" in seen


def test_a_sweep_dir_brings_in_the_runs_its_jobs_reused_elsewhere(tmp_path):
    from mlcli.report.collect import find_run_dirs
    from mlcli.rundir import LINK_FILE

    earlier = copy_run(run_of(**ADAM), tmp_path / "outputs" / "runs" / "earlier")
    sweep_dir = tmp_path / "outputs" / "sweeps" / "new"
    copy_run(run_of(**SGD), sweep_dir / "0")
    (sweep_dir / "1").mkdir()  # this job was skipped: its run is the earlier one
    write_json(sweep_dir / "1" / LINK_FILE, {"action": "skipped", "run_dir": str(earlier)})
    (sweep_dir / "2").mkdir()  # a link to a run that is gone is not an error
    write_json(sweep_dir / "2" / LINK_FILE, {"action": "skipped", "run_dir": str(tmp_path / "x")})
    found = [path for path, _ in find_run_dirs([sweep_dir])]
    assert sorted(found) == sorted([(sweep_dir / "0").resolve(), earlier.resolve()])
    # the earlier run is read once even when both dirs are given
    both = find_run_dirs([tmp_path / "outputs" / "runs", sweep_dir])
    assert len(both) == 2
