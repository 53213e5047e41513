"""The run key covers the content of the data files a run reads: an edited file is new data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mlcli import sweeps as sweep
from mlcli.config import identity as data_identity
from mlcli.config import packaged_conf_dir
from mlcli.report import build_report
from tests.conftest import TINY

ROWS = "x1,x2,target\n" + "".join(f"{i * 0.5:.1f},{(i * 7) % 5},{i % 2}\n" for i in range(40))
CSV_ARGS = ["dataset=csv", "dataset.path=data.csv", "dataset.target=target", *TINY]


def _statuses(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("status.json"))]


def test_a_rerun_after_editing_the_csv_trains_again(cli, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(ROWS)
    assert cli("train", *CSV_ARGS).exit_code == 0
    again = cli("train", *CSV_ARGS)
    assert again.exit_code == 0 and "skipped (already COMPLETED)" in again.output
    later = data.stat().st_mtime_ns + 5_000_000_000
    os.utime(data, ns=(later, later))  # touched, same bytes: the same experiment
    assert "skipped (already COMPLETED)" in cli("train", *CSV_ARGS).output

    data.write_text(ROWS.replace("\n1.0,", "\n1.5,", 1))  # one cell edited
    planned = cli("train", *CSV_ARGS, "--dry-run")
    assert planned.exit_code == 0 and "new" in planned.output, planned.output
    edited = cli("train", *CSV_ARGS)
    assert edited.exit_code == 0 and "skipped" not in edited.output, edited.output

    first, second = _statuses(tmp_path / "outputs")
    assert first["state"] == second["state"] == "COMPLETED"
    assert first["run_key"] != second["run_key"]
    digests = {s["data_files"]["data.csv"] for s in (first, second)}
    old = hashlib.sha256(ROWS.encode()).hexdigest()
    assert digests == {old, hashlib.sha256(data.read_bytes()).hexdigest()}
    # The report does not pool the two as replicates of one configuration.
    report = build_report([tmp_path / "outputs"])
    assert report.group_columns == ["data_files"] and len(report.table) == 2
    assert set(report.table["data_files"]) == {f"data.csv:{d[:12]}" for d in digests}


def test_each_file_is_hashed_once_per_process_until_it_changes(compose, tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text(ROWS)
    test_file = tmp_path / "test.csv"
    test_file.write_text(ROWS)
    reads: list[str] = []
    real = hashlib.file_digest

    def counting(file, digest):  # type: ignore[no-untyped-def]
        reads.append(file.name)
        return real(file, digest)

    monkeypatch.setattr(data_identity.hashlib, "file_digest", counting)
    cfg = compose(*CSV_ARGS, "dataset.test_path=test.csv")
    keys = {sweep.run_key(cfg) for _ in range(3)}
    assert len(keys) == 1 and sorted(reads) == ["data.csv", "test.csv"]
    test_file.write_text(ROWS + "9.0,1,1\n")  # the test file is data the run reads, too
    assert sweep.run_key(cfg) not in keys
    assert sorted(reads) == ["data.csv", "test.csv", "test.csv"]


def test_an_npz_file_is_part_of_the_key(compose, tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, X=np.zeros((20, 3)), y=np.arange(20) % 2)
    cfg = compose("dataset=npz", "dataset.path=arrays.npz")
    before = sweep.run_key(cfg)
    np.savez(path, X=np.ones((20, 3)), y=np.arange(20) % 2)
    assert sweep.run_key(cfg) != before


@pytest.mark.parametrize(
    "option",
    sorted(
        p.stem
        for p in (packaged_conf_dir() / "dataset").glob("*.yaml")
        if p.stem not in ("csv", "npz")
    ),
)
def test_built_in_datasets_name_no_file_and_keep_their_keys(compose, option):
    cfg = compose(f"dataset={option}")
    assert data_identity.data_files(cfg.dataset) == {}


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "sub").mkdir()
    node = {"path": str(fifo), "other": [str(tmp_path / "sub"), "/dev/null", "\0bad", ","]}
    assert data_identity.data_files(node) == {}  # nothing opened: a FIFO would block
