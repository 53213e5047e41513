"""Garbage on disk never crashes a command: every kind of broken run file (tests/garbage.py) next
to good runs. Runs that may meet a FIFO run in a subprocess with a timeout first: a reader that
opens one blocks for ever."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mlcli import sweeps as sweep
from mlcli.report import build_report
from mlcli.report.command import render
from tests import garbage

TIMEOUT = 180  # seconds: a reader that opens a FIFO never returns


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A test that blocks (an in-process open of a FIFO) fails instead of never ending."""

    def stop(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for 10 minutes: a FIFO opened?")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(600)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _mlcli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The mlcli command in a real process (a hang is a failure, not a stuck test run)."""
    return subprocess.run(
        [sys.executable, "-m", "mlcli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _outputs(tmp_path: Path) -> tuple[Path, list[garbage.Kind]]:
    """outputs/good (the shipped runs, one of them with harmless garbage) and outputs/garbage."""
    root = tmp_path / "outputs"
    shutil.copytree(garbage.RUNS, root / "good")
    garbage.harmless(root / "good" / "sweep" / "0")
    return root, garbage.build(root / "garbage")


def _bad_files(root: Path, kinds: list[garbage.Kind], reader: str) -> list[str]:
    """The files ``reader`` must skip with a note (chmod 000 does not stop root from reading)."""
    return [
        kind.path(root / "garbage").as_posix()
        for kind in kinds
        if reader in kind.readers
        and not (kind.name == "status_chmod_000" and garbage.readable(kind.path(root / "garbage")))
    ]


def _noted(notes: list[str], bad: str) -> list[str]:
    """Notes naming the file ``bad`` (as ``DIR: FILE ...`` or as its path)."""
    directory, name = bad.rsplit("/", 1)
    return [n for n in notes if n.startswith((f"{directory}: {name} ", f"{bad}: "))]


def _assert_one_note_per_bad_file(notes: list[str], root: Path, bad_files: list[str]) -> None:
    about_files = [n for n in notes if n.startswith(root.as_posix())]
    for bad in bad_files:
        assert len(_noted(about_files, bad)) == 1, (bad, about_files)
    assert len(about_files) == len(bad_files), about_files  # none about the good runs


def _ranked(configurations: list[dict]) -> list[dict]:
    return [c for c in configurations if c["rank"] is not None]


def _good_runs(runs: list[dict], root: Path) -> list[dict]:
    return [r for r in runs if r["run_dir"].startswith(f"{root.as_posix()}/good/")]


def test_report_over_every_kind_of_garbage_reports_the_good_runs_with_their_numbers(tmp_path):
    root = tmp_path / "outputs"
    shutil.copytree(garbage.RUNS, root / "good")
    baseline = build_report([root / "good"])
    expected = json.loads(render(baseline, "json", {}))
    garbage.harmless(root / "good" / "sweep" / "0")
    kinds = garbage.build(root / "garbage")
    bad_files = _bad_files(root, kinds, "report")
    assert len(kinds) >= 25 and len(bad_files) >= 35

    # A real process first: a FIFO opened by mistake would block it, not this test run.
    done = _mlcli("report", str(root), "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    document = json.loads(done.stdout)
    assert _ranked(document["configurations"]) == _ranked(expected["configurations"])
    assert _good_runs(document["runs"], root) == _good_runs(expected["runs"], root)
    _assert_one_note_per_bad_file(document["notes"], root, bad_files)

    agg = build_report([root])
    ranked = agg.table[agg.table["rank"].notna()].reset_index(drop=True)
    expected_table = baseline.table[baseline.table["rank"].notna()].reset_index(drop=True)
    # The config columns come in the order the first runs' overrides name them.
    assert sorted(ranked.columns) == sorted(expected_table.columns)
    pd.testing.assert_frame_equal(ranked[expected_table.columns], expected_table, check_exact=True)
    assert len(ranked) == 4  # the four good configurations, with the same numbers
    states = dict(zip(agg.runs["run_dir"], agg.runs["state"], strict=True))
    for kind in kinds:
        shown = (root / "garbage" / kind.name).as_posix()
        if kind.bad == "status.json" and kind.path(root / "garbage").as_posix() in bad_files:
            assert states[shown] == "UNKNOWN"  # listed, never in the numbers
        elif kind.bad == "run_link.json":
            assert shown not in states
    _assert_one_note_per_bad_file(agg.notes, root, bad_files)


def test_report_in_process_prints_one_note_naming_each_skipped_file(cli, tmp_path):
    root, kinds = _outputs(tmp_path)
    assert _mlcli("report", str(root), cwd=tmp_path).returncode == 0  # no FIFO is opened
    result = cli("report", str(root))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for bad in _bad_files(root, kinds, "report"):
        assert len(_noted(lines, bad)) == 1, bad


def test_run_index_and_sweep_lookup_skip_garbage_with_a_note(tmp_path):
    root, kinds = _outputs(tmp_path)
    signal.alarm(120)  # the FIFO named status.json would block the lookup for ever
    # What every job does under its lock: look its run key up below the outputs root.
    assert sweep.decide(root, "a-new-key", tmp_path / "job").action == "new"
    notes: list[str] = []
    records = sweep.scan_runs(root, notes)
    status_files = [b for b in _bad_files(root, kinds, "index") if b.endswith("status.json")]
    usable = {p.parent for p in root.rglob("status.json")} - {Path(b).parent for b in status_files}
    assert {r.run_dir for r in records} == usable
    assert {root / "good" / "sweep" / str(n) for n in range(8)} <= usable
    for bad in status_files:
        assert len(_noted(notes, bad)) == 1, (bad, notes)
    assert len(notes) == len(status_files)
    manifest_notes: list[str] = []
    assert sweep.find_sweep(root, "x", manifest_notes) is None
    manifests = [b for b in _bad_files(root, kinds, "index") if b.endswith("sweep.json")]
    assert sorted(n.split(": ", 1)[0] for n in manifest_notes) == sorted(manifests)


def test_train_and_dry_run_with_garbage_below_the_outputs_root(cli, tmp_path):
    root, kinds = _outputs(tmp_path)
    args = ["dataset=wine", "model=linear", "epochs=1", "cv.n_splits=2", "progress=false",
            f"outputs_root={root}"]  # fmt: skip
    bad_files = _bad_files(root, kinds, "index")

    done = _mlcli("train", "-m", "seed=0,1", *args, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    output = " ".join((done.stdout + done.stderr).split())
    assert "2 job(s), nothing run" in output and "0 done (would be skipped)" in output
    for bad in bad_files:
        assert output.count(f"{bad}: ") == 1, bad

    done = _mlcli("train", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    output = " ".join(done.stderr.split())
    for bad in bad_files:
        if bad.endswith("status.json"):
            assert output.count(f"{bad}: ") == 1, bad
    (ran,) = [r for r in sweep.scan_runs(root / "runs")]
    assert ran.state == "COMPLETED" and ran.folds_completed == (0, 1)

    # In-process too (no FIFO was opened by the real processes above): a sweep that runs.
    result = cli("train", "-m", "seed=2,3", *args)
    assert result.exit_code == 0
    states = [r.state for r in sweep.scan_runs(root / "sweeps")]
    assert states == ["COMPLETED", "COMPLETED"]


# --------------------------------------------------------------------------------------------------
# A run whose files became garbage is recomputed, not failed for ever.


TINY_RUN = ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"]


def _results_frame(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "results.parquet")
    return frame.sort_values(["fold", "epoch", "split", "metric"]).reset_index(drop=True)


def _make_garbage_of_results(run_dir: Path, how: str) -> None:
    path = run_dir / "results.parquet"
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "fold_as_text":
        table = pq.read_table(path)
        text = pa.array([str(v) for v in table["fold"].to_pylist()])
        pq.write_table(table.drop_columns(["fold"]).append_column("fold", text), path)
    elif how == "missing_fold":  # a valid table without the rows of fold 1
        table = pq.read_table(path)
        pq.write_table(table.filter(pc.equal(table["fold"], 0)), path)
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "fold_as_text", "missing_fold"])
def test_run_with_unreadable_results_is_recomputed_to_the_same_numbers(compose, tmp_path, how):
    from mlcli import runner

    cfg = compose(*TINY_RUN)
    assert runner.run(cfg, tmp_path / "clean").state == "COMPLETED"
    broken = tmp_path / "broken"
    assert runner.run(cfg, broken).state == "COMPLETED"
    status = json.loads((broken / "status.json").read_text())
    (broken / "status.json").write_text(json.dumps({**status, "state": "RUNNING"}))
    _make_garbage_of_results(broken, how)

    outcome = runner.run(cfg, broken)
    assert outcome.state == "COMPLETED"
    pd.testing.assert_frame_equal(_results_frame(broken), _results_frame(tmp_path / "clean"))
    after = json.loads((broken / "status.json").read_text())
    assert after["state"] == "COMPLETED" and after["resumed_folds"] == []
    (note,) = after["notes"]
    assert note.startswith(f"{broken / 'results.parquet'}: ") and "computed again" in note


def test_a_fold_in_training_resumes_from_its_checkpoint_when_the_results_are_garbage(
    compose, tmp_path
):
    from mlcli import runner
    from mlcli.engine import checkpoint
    from tests.test_checkpoint import CHECKPOINTED, _StopAt

    cfg = compose(*CHECKPOINTED)
    assert runner.run(cfg, tmp_path / "straight").state == "COMPLETED"
    run_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, run_dir, reporter=_StopAt(fold=1, epoch=2))
    assert checkpoint.fold_path(run_dir, 1).is_file()  # fold 1 was in training
    (run_dir / "results.parquet").write_bytes(b"PAR1 and then nothing")  # fold 0's rows lost

    assert runner.run(cfg, run_dir).state == "COMPLETED"
    pd.testing.assert_frame_equal(
        _results_frame(run_dir), _results_frame(tmp_path / "straight"), check_exact=True
    )
    status = json.loads((run_dir / "status.json").read_text())
    assert "fold(s) 0 are computed again" in status["notes"][0]


def test_a_garbage_checkpoint_is_not_loaded_and_its_fold_starts_afresh(compose, tmp_path, caplog):
    from mlcli import runner
    from mlcli.engine import checkpoint
    from tests.test_checkpoint import CHECKPOINTED, _StopAt

    cfg = compose(*CHECKPOINTED)
    assert runner.run(cfg, tmp_path / "straight").state == "COMPLETED"
    run_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, run_dir, reporter=_StopAt(fold=1, epoch=2))
    saved = checkpoint.fold_path(run_dir, 1)
    saved.write_bytes(saved.read_bytes()[:100])  # torn by hand: not a checkpoint any more

    assert runner.run(cfg, run_dir).state == "COMPLETED"
    pd.testing.assert_frame_equal(
        _results_frame(run_dir), _results_frame(tmp_path / "straight"), check_exact=True
    )
    assert any(
        str(saved) in r.getMessage() and "starts from its first epoch" in r.getMessage()
        for r in caplog.records
    )


def test_a_fifo_in_place_of_the_results_of_a_run_to_continue(cli, tmp_path):
    args = [*TINY_RUN, "stack_folds=off"]
    assert cli("train", *args).exit_code == 0
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").rglob("status.json")]
    clean = _results_frame(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "state": "INTERRUPTED"}))
    (run_dir / "results.parquet").unlink()
    os.mkfifo(run_dir / "results.parquet")

    done = _mlcli("train", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "continuing" in done.stdout and run_dir.name in done.stdout
    assert json.loads((run_dir / "status.json").read_text())["state"] == "COMPLETED"
    pd.testing.assert_frame_equal(_results_frame(run_dir), clean)


def test_stacked_launcher_keeps_only_the_folds_the_runner_keeps(tmp_path):
    from mlcli.rundir import done_folds as _done_folds

    source = garbage.COMPLETED_RUN
    key = json.loads((source / "status.json").read_text())["run_key"]
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    assert _done_folds(run_dir, key) == {0, 1}
    (run_dir / "results.parquet").write_bytes(b"garbage")
    assert _done_folds(run_dir, key) == set()  # recomputed, as the runner will
    (run_dir / "status.json").write_text('["not", "a", "status"]')
    assert _done_folds(run_dir, key) == set()


# --------------------------------------------------------------------------------------------------
# Interpolations that cannot be resolved are configuration errors.


@pytest.mark.parametrize(
    ("args", "key", "says"),
    [
        (["epochs=${oc.env:MLCLI_TEST_NOPE}"], "epochs", "MLCLI_TEST_NOPE is not set"),
        (["optim.lr=${missing.key}"], "optim.lr", "no key 'missing.key'"),
        (["+extra=${oc.env:MLCLI_TEST_NOPE}"], "extra", "MLCLI_TEST_NOPE is not set"),
        (["model.hidden=[${missing.key},4]"], "model.hidden[0]", "no key 'missing.key'"),
        (["-m", "seed=0,1", "epochs=${oc.env:MLCLI_TEST_NOPE}"], "epochs", "is not set"),
        (["hydra.run.dir=${oc.env:MLCLI_TEST_NOPE}"], "hydra.run.dir", "is not set"),
        (["epochs=${missing.key}", "--cfg", "job", "--resolve"], "epochs", "no key"),
        (["optim=mine"], "optim.lr", "MLCLI_TEST_LR is not set"),  # the user's ./conf
        (["optim=mine"], "optim.momentum", "no key 'nowhere'"),
    ],
)
def test_unresolvable_interpolations_are_a_one_screen_error(cli, tmp_path, args, key, says):
    conf = tmp_path / "conf" / "optim"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(
        "_target_: torch.optim.SGD\n_partial_: true\n"
        "lr: ${oc.env:MLCLI_TEST_LR}\nmomentum: ${nowhere}\n"
    )
    result = cli("train", *args, "progress=false")
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert f"{key}: " in output and says in output
    assert "Nothing was run or written" in output and "Traceback" not in output
    assert not (tmp_path / "outputs").exists()
