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


def test_ordered_writer_keeps_the_order_and_drops_only_superseded_writes(tmp_path):
    import threading

    from mlcli.results import OrderedWriter

    order: list[str] = []
    gate = threading.Event()

    def slow(name: str) -> None:
        gate.wait(5)
        order.append(name)

    writer = OrderedWriter()
    writer.submit(slow, "first")  # running: blocks the writer until the gate opens
    writer.submit(order.append, "fold-1", replaces="fold")
    writer.submit(order.append, "fold-2", replaces="fold")  # fold-1 has not started: dropped
    writer.submit(order.append, "status")
    writer.submit(order.append, "fold-3", replaces="fold")  # fold-2 waits behind status: dropped
    gate.set()
    writer.drain()
    assert order == ["first", "status", "fold-3"]


def test_ordered_writer_raises_a_failed_write(tmp_path):
    from mlcli.results import OrderedWriter

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    writer = OrderedWriter()
    writer.submit(full_disk)
    with pytest.raises(OSError, match="No space"):
        writer.drain()
    writer.submit(atomic_write_text, tmp_path / "after.txt", "ok")  # usable again
    writer.drain()
    assert (tmp_path / "after.txt").read_text() == "ok"
