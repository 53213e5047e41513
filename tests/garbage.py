"""Garbage on disk where mlcli looks for runs: every kind of broken run file, in one folder.

:func:`build` writes one entry per :data:`KINDS` item below a folder. Each kind names the file
that is bad and which commands read it (``report``: ``mlcli report``; ``index``: the run index
and sweep manifests that ``mlcli train`` scans below its outputs root), so a test can ask for
exactly one note per bad file a command reads.

Run dirs that hold garbage are copies of two real runs of ``tests/data/runs``, changed so that
they never join the good runs' configurations: a COMPLETED one with ``optim.lr=0.5`` (a value
the good runs do not have) and the FAILED one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RUNS = Path(__file__).parent / "data" / "runs"
COMPLETED_RUN = RUNS / "sweep" / "3"  # sgd, lr=0.1, seed=1
FAILED_RUN = RUNS / "failed"
HUGE_BYTES = 40 * 1024 * 1024  # above the largest document mlcli reads (32 MiB)

Maker = Callable[[Path], None]


@dataclass(frozen=True)
class Kind:
    """One kind of garbage: the entry ``name`` below the folder, and its bad file."""

    name: str
    bad: str
    """The bad file, relative to the entry (``status.json``)."""
    readers: frozenset[str]
    """Commands that read the bad file: ``report`` and/or ``index``."""
    make: Maker

    def path(self, folder: Path) -> Path:
        """The bad file below ``folder``."""
        return folder / self.name / self.bad


def _completed(run_dir: Path) -> None:
    """A COMPLETED run that is not one of the good ones (lr 0.5, its own run key)."""
    shutil.copytree(COMPLETED_RUN, run_dir)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("  lr: 0.1\n", "  lr: 0.5\n"))
    status = json.loads((run_dir / "status.json").read_text())
    status["overrides"] = [o.replace("optim.lr=0.1", "optim.lr=0.5") for o in status["overrides"]]
    status["run_key"] = f"garbage-{run_dir.name}"
    (run_dir / "status.json").write_text(json.dumps(status))


def _failed(run_dir: Path) -> None:
    shutil.copytree(FAILED_RUN, run_dir)


def _status(**fields: object) -> Maker:
    """A COMPLETED run whose status.json has these fields (wrong types)."""

    def make(run_dir: Path) -> None:
        _completed(run_dir)
        status = json.loads((run_dir / "status.json").read_text())
        status.update(fields)
        (run_dir / "status.json").write_text(json.dumps(status))

    return make


def _replace(name: str, base: Maker, write: Callable[[Path], None]) -> Maker:
    """``base``'s run dir with file ``name`` replaced by what ``write`` makes."""

    def make(run_dir: Path) -> None:
        base(run_dir)
        path = run_dir / name
        if path.is_file():
            path.unlink()
        write(path)

    return make


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _loop(path: Path) -> None:
    path.symlink_to(path.name)  # resolves to itself: ELOOP


def _directory(path: Path) -> None:
    path.mkdir()


def _unreadable(path: Path) -> None:
    shutil.copy(COMPLETED_RUN / "status.json", path)
    status = json.loads(path.read_text())
    status["overrides"] = [o.replace("optim.lr=0.1", "optim.lr=0.5") for o in status["overrides"]]
    status["run_key"] = "garbage-chmod000"
    status["state"] = "FAILED"  # readable (as root), it is still never in the numbers
    path.write_text(json.dumps(status))
    path.chmod(0)


def _huge(path: Path) -> None:
    status = json.loads((COMPLETED_RUN / "status.json").read_text())
    status["data_notes"] = ["x" * HUGE_BYTES]
    path.write_text(json.dumps(status))


def _deep(path: Path) -> None:
    depth = 200_000
    path.write_text('{"state": "COMPLETED", "run_key": "deep", "x": ' + "[" * depth + "]" * depth)


def _table(columns: dict[str, pa.Array]) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.table(columns), path)


def _results_with(**changes: pa.Array | None) -> Callable[[Path], None]:
    """The real results with columns replaced (None: dropped)."""

    def write(path: Path) -> None:
        table = pq.read_table(COMPLETED_RUN / "results.parquet")
        for name, column in changes.items():
            table = table.drop_columns([name])
            if column is not None:
                table = table.append_column(name, column)
        pq.write_table(table, path)

    return write


def _n_rows() -> int:
    return pq.ParquetFile(COMPLETED_RUN / "results.parquet").metadata.num_rows


def _as_text(column: str) -> pa.Array:
    values = pq.read_table(COMPLETED_RUN / "results.parquet")[column].to_pylist()
    return pa.array([str(v) for v in values], pa.string())


def _truncated(path: Path) -> None:
    data = (COMPLETED_RUN / "results.parquet").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_rows(path: Path) -> None:
    table = pq.read_table(COMPLETED_RUN / "results.parquet")
    pq.write_table(table.slice(0, 0), path)


def _link(payload: object) -> Maker:
    def make(job_dir: Path) -> None:
        job_dir.mkdir()
        (job_dir / "run_link.json").write_text(json.dumps(payload))

    return make


def _link_to_file(job_dir: Path) -> None:
    job_dir.mkdir()
    (job_dir / "notes.txt").write_text("not a run dir")
    link = {"action": "skipped", "run_dir": str(job_dir / "notes.txt")}
    (job_dir / "run_link.json").write_text(json.dumps(link))


def _manifest(write: Callable[[Path], None]) -> Maker:
    def make(sweep_dir: Path) -> None:
        sweep_dir.mkdir()
        write(sweep_dir / "sweep.json")

    return make


REPORT, INDEX = frozenset({"report"}), frozenset({"index"})
BOTH = REPORT | INDEX
STATUS, RESULTS, CONFIG = "status.json", "results.parquet", "config.yaml"

KINDS: list[Kind] = [
    # status.json: what makes a dir a run dir; both the report and the run index read it.
    Kind("status_empty", STATUS, BOTH, _replace(STATUS, _completed, _bytes(b""))),
    Kind("status_truncated", STATUS, BOTH, _replace(STATUS, _completed, _bytes(b'{"state": "CO'))),
    Kind("status_list", STATUS, BOTH, _replace(STATUS, _completed, _bytes(b'["COMPLETED"]'))),
    Kind("status_number", STATUS, BOTH, _replace(STATUS, _completed, _bytes(b"42"))),
    Kind("status_null", STATUS, BOTH, _replace(STATUS, _completed, _bytes(b"null"))),
    Kind("status_state_int", STATUS, BOTH, _status(state=3)),
    Kind("status_folds_string", STATUS, BOTH, _status(folds_completed="0,1")),
    Kind("status_folds_dict", STATUS, BOTH, _status(folds_completed={"0": True})),
    Kind("status_n_folds_string", STATUS, BOTH, _status(n_folds="2")),
    Kind("status_run_key_list", STATUS, BOTH, _status(run_key=["c50e6e2c4f09620b"])),
    Kind("status_choices_list", STATUS, BOTH, _status(choices=["optim=sgd"])),
    Kind("status_overrides_string", STATUS, BOTH, _status(overrides="optim=sgd optim.lr=0.5")),
    Kind("status_error_list", STATUS, BOTH, _status(error=["ValueError", "boom"])),
    Kind(
        "status_not_utf8",
        STATUS,
        BOTH,
        _replace(STATUS, _completed, _bytes(b'{"state": "COMPLETED\xff\xfe", "run_key": "x"}')),
    ),
    Kind("status_deep", STATUS, BOTH, _replace(STATUS, _completed, _deep)),
    Kind("status_huge", STATUS, BOTH, _replace(STATUS, _completed, _huge)),
    Kind("status_directory", STATUS, BOTH, _replace(STATUS, _completed, _directory)),
    Kind("status_fifo", STATUS, BOTH, _replace(STATUS, _completed, _fifo)),
    Kind("status_symlink_loop", STATUS, BOTH, _replace(STATUS, _completed, _loop)),
    Kind("status_chmod_000", STATUS, BOTH, _replace(STATUS, _completed, _unreadable)),
    # results.parquet of a COMPLETED run: the report reads it.
    Kind("results_empty", RESULTS, REPORT, _replace(RESULTS, _completed, _bytes(b""))),
    Kind("results_truncated", RESULTS, REPORT, _replace(RESULTS, _completed, _truncated)),
    Kind(
        "results_other_table",
        RESULTS,
        REPORT,
        _replace(RESULTS, _completed, _table({"a": pa.array([1, 2]), "b": pa.array(["x", "y"])})),
    ),
    Kind(
        "results_no_value",
        RESULTS,
        REPORT,
        _replace(RESULTS, _completed, _results_with(value=None)),
    ),
    Kind(
        "results_value_text",
        RESULTS,
        REPORT,
        _replace(RESULTS, _completed, _results_with(value=_as_text("value"))),
    ),
    Kind(
        "results_fold_float",
        RESULTS,
        REPORT,
        _replace(
            RESULTS,
            _completed,
            _results_with(fold=pa.array([0.5] * _n_rows(), pa.float64())),
        ),
    ),
    Kind(
        "results_fold_text",
        RESULTS,
        REPORT,
        _replace(RESULTS, _completed, _results_with(fold=_as_text("fold"))),
    ),
    Kind(
        "results_epoch_null",
        RESULTS,
        REPORT,
        _replace(
            RESULTS, _completed, _results_with(epoch=pa.array([None] * _n_rows(), pa.int32()))
        ),
    ),
    Kind("results_zero_rows", RESULTS, REPORT, _replace(RESULTS, _completed, _zero_rows)),
    Kind("results_fifo", RESULTS, REPORT, _replace(RESULTS, _completed, _fifo)),
    Kind("results_directory", RESULTS, REPORT, _replace(RESULTS, _completed, Path.mkdir)),
    # config.yaml of a FAILED run: the report reads it (its config then comes from overrides).
    Kind("config_not_utf8", CONFIG, REPORT, _replace(CONFIG, _failed, _bytes(b"optim: s\xe9d\n"))),
    Kind("config_scalar", CONFIG, REPORT, _replace(CONFIG, _failed, _bytes(b"just some text\n"))),
    Kind("config_list", CONFIG, REPORT, _replace(CONFIG, _failed, _bytes(b"- optim\n- sgd\n"))),
    Kind(
        "config_python_tag",
        CONFIG,
        REPORT,
        _replace(CONFIG, _failed, _bytes(b"optim: !!python/object/apply:os.system [id]\n")),
    ),
    Kind("config_fifo", CONFIG, REPORT, _replace(CONFIG, _failed, _fifo)),
    # run_link.json of a Hydra job dir whose job ran elsewhere: the report follows it.
    Kind("link_nowhere", "run_link.json", REPORT, _link({"run_dir": "/nonexistent/run"})),
    Kind("link_list", "run_link.json", REPORT, _link(["skipped", "/tmp"])),
    Kind("link_number", "run_link.json", REPORT, _link({"run_dir": 42})),
    Kind("link_to_file", "run_link.json", REPORT, _link_to_file),
    # sweep.json of a sweep dir: `mlcli train -m` looks for an earlier identical sweep.
    Kind("sweep_list", "sweep.json", INDEX, _manifest(_bytes(b'[{"sweep_key": "x"}]'))),
    Kind("sweep_not_utf8", "sweep.json", INDEX, _manifest(_bytes(b'{"sweep_key": "\xff"}'))),
    Kind("sweep_fifo", "sweep.json", INDEX, _manifest(_fifo)),
    Kind(
        "sweep_wrong_types",
        "sweep.json",
        INDEX,
        _manifest(_bytes(b'{"sweep_key": ["x"], "created": 5, "args": "a b"}')),
    ),
]


def build(folder: Path, kinds: list[Kind] | None = None) -> list[Kind]:
    """Write every kind of garbage (or ``kinds``) below ``folder``; return the kinds written."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = KINDS if kinds is None else kinds
    for kind in chosen:
        kind.make(folder / kind.name)
    return chosen


def readable(path: Path) -> bool:
    """Whether this process can read ``path`` (chmod 000 does not stop root)."""
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def harmless(run_dir: Path) -> None:
    """Garbage mlcli never has to read, in a good run dir: its results keep their numbers.

    An extra column in results.parquet (read: only the columns the report needs) and an
    overrides.yaml that is not UTF-8 (never read: status.json has the overrides).
    """
    table = pq.read_table(run_dir / "results.parquet")
    table = table.append_column("note", pa.array(["extra"] * table.num_rows))
    pq.write_table(table, run_dir / "results.parquet")
    (run_dir / "overrides.yaml").write_bytes(b"- optim=s\xe9d\n")
