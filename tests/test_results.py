"""Atomic writes: a reader never sees half a file; long-form results round-trip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlcli.rundir import atomic_write_text, read_results, write_results


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

    from mlcli.rundir import OrderedWriter

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
    from mlcli.rundir import OrderedWriter

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    writer = OrderedWriter()
    writer.submit(full_disk)
    with pytest.raises(OSError, match="No space"):
        writer.drain()
    writer.submit(atomic_write_text, tmp_path / "after.txt", "ok")  # usable again
    writer.drain()
    assert (tmp_path / "after.txt").read_text() == "ok"


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    """The process umask for one test (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _modes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in root.rglob("*")
        if p.is_file()
    }


def test_atomic_writes_and_checkpoints_get_the_mode_open_gives(tmp_path, umask):
    from mlcli.engine import checkpoint

    atomic_write_text(tmp_path / "status.json", "{}")
    checkpoint.save(checkpoint.fold_path(tmp_path, 0), {"epoch": 1})
    with open(tmp_path / "plain.txt", "w") as handle:  # what every other writer gives
        handle.write("x")
    assert _modes(tmp_path) == dict.fromkeys(
        ["status.json", "checkpoints/fold-0.pt", "plain.txt"], oct(0o666 & ~umask)
    )


def test_every_file_of_a_sweep_and_its_report_respects_the_umask(cli, tmp_path, umask):
    args = ["-m", "seed=0,1", "model=linear", "dataset=wine", "cv.n_splits=2", "epochs=2"]
    assert cli("train", *args, "progress=false").exit_code == 0
    report = ["--format", "markdown", "--out", "report.md", "--plots", "plots"]
    assert cli("report", "outputs", *report).exit_code == 0
    modes = _modes(tmp_path)
    written = {Path(p).name for p in modes}
    for name in ("status.json", "results.parquet", "config.yaml", "overrides.yaml", "app.log"):
        assert name in written  # (and Hydra's .hydra/*.yaml, the sweep's manifest, the locks)
    assert "report.md" in modes and any(p.startswith("plots/") for p in modes)
    assert {p: m for p, m in modes.items() if m != oct(0o666 & ~umask)} == {}


def test_several_files_written_at_once_replace_their_old_versions(tmp_path):
    """A model's files are written together (synced at once, then renamed): each holds its new
    bytes, with the permissions a plain ``open`` gives, and no temp file is left."""
    from mlcli.rundir.files import atomic_write_files

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.bin").write_bytes(b"old")
    files = {tmp_path / "models" / "a.bin": b"new a", tmp_path / "models" / "b.json": b"{}\n"}
    atomic_write_files(files)
    assert {p: p.read_bytes() for p in files} == files
    assert sorted(os.listdir(tmp_path / "models")) == ["a.bin", "b.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "models" / "b.json").stat().st_mode) == 0o666 & ~umask


def test_several_files_failing_leave_the_old_ones_and_no_temp_files(tmp_path, monkeypatch):
    """A sync that fails (a full disk) renames none of the files and removes every temp file."""
    from mlcli.rundir import files as rundir_files

    (tmp_path / "a.bin").write_bytes(b"old")

    def full(path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir_files, "_fsync_path", full)
    with pytest.raises(OSError, match="No space"):
        rundir_files.atomic_write_files({tmp_path / "a.bin": b"new", tmp_path / "b.bin": b"b"})
    assert os.listdir(tmp_path) == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"old"
