"""Atomic writes: a reader never sees half a file; long-form results round-trip."""

from __future__ import annotations

import os

import pytest

from mlcli.results import atomic_write_text, read_results, write_results


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "status.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["status.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.parquet"
    rows = [{"run_key": "k", "fold": 0, "epoch": 1, "split": "val", "metric": "acc", "value": 0.5}]
    write_results(target, rows)
    with pytest.raises(KeyError):
        write_results(target, [{"run_key": "k"}])  # malformed: fails before the rename
    assert read_results(target) == rows
    assert sorted(os.listdir(tmp_path)) == ["results.parquet"]
