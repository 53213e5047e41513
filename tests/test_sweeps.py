"""Sweeps that survive: kill and resume, failures that stop nothing, signals, launchers, dry run.

Sweeps run on wine with a linear model (milliseconds a fold); the test-only models below fail on
purpose or stop at a known point (``./PAUSE`` armed) so a test can kill a sweep mid-job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from mlcli import sweeps as sweep
from mlcli.sweeps import launch
from mlcli.sweeps.preflight import check

TEST_MODELS = '''
import json, math, os, signal, sys, time
from pathlib import Path
from torch import nn

_folds_built = 0  # per job process: each job runs in a child process of its own


def _linear(in_shape, out_features):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), out_features))


def _completed_runs():
    count = 0
    for path in Path("outputs").rglob("status.json"):
        try:
            count += json.loads(path.read_text())["state"] == "COMPLETED"
        except (OSError, ValueError, KeyError):
            pass
    return count


def pausing(in_shape, out_features, pause_after=0, pause_fold=1):
    """While ./PAUSE exists: build fold `pause_fold` of a job only after touching ./PAUSED and
    sleeping for good, once `pause_after` runs are COMPLETED (a test then kills the sweep)."""
    global _folds_built
    _folds_built += 1
    if Path("PAUSE").exists() and _folds_built >= pause_fold and _completed_runs() >= pause_after:
        Path("PAUSED").touch()
        time.sleep(600)
    return _linear(in_shape, out_features)


def faulty(in_shape, out_features, mode="ok"):
    if mode.startswith("raise"):
        raise RuntimeError(f"{mode}: cannot build the model")
    if mode == "exit":
        sys.exit(3)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return _linear(in_shape, out_features)
'''

# Sequential folds: these tests interrupt and resume a run fold by fold.
FAST = ["dataset=wine", "epochs=2", "progress=false", "stack_folds=off"]


@pytest.fixture
def test_models(tmp_path, monkeypatch):
    """./sweep_models.py and ./conf/model/{pausing,faulty}.yaml, importable in-process too."""
    (tmp_path / "sweep_models.py").write_text(TEST_MODELS)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "pausing.yaml").write_text(
        "_target_: sweep_models.pausing\npause_after: 0\npause_fold: 1\n"
    )
    (tmp_path / "conf" / "model" / "faulty.yaml").write_text(
        "_target_: sweep_models.faulty\nmode: ok\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _statuses(root: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in root.rglob("status.json")}


def _results(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in root.rglob("results.parquet")])


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    """`python -m mlcli train ARGS` in its own process group (so a test can kill all of it)."""
    with open(tmp_path / "first-run.log", "wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "mlcli", "train", *args],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, (path.parent / "first-run.log").read_text()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _group_alive(pgid: int) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


# 12 jobs × 5 folds; the sweep pauses (for good) in fold 3 of a job once 5 runs are COMPLETED.
TWELVE = [
    "-m", "optim=sgd,adam", "optim.lr=0.01,0.02,0.05", "seed=0,1", "model=pausing",
    "model.pause_after=5", "model.pause_fold=3", "cv.n_splits=5", "allow_targets=[sweep_models]",
    *FAST,
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_killed_sweep_resumes_with_the_same_command(cli, test_models, tmp_path, launcher):
    args = [*TWELVE, f"hydra/launcher={launcher}"]
    (tmp_path / "PAUSE").touch()
    first = _start(tmp_path, *args)
    _wait_for(tmp_path / "PAUSED", first)
    os.killpg(first.pid, signal.SIGKILL)  # the whole process group: CLI, workers, jobs
    first.wait()
    for name in _shm_entries(first.pid):  # loky's resource tracker was killed too: clean up
        shutil.rmtree(f"/dev/shm/{name}", ignore_errors=True)
        Path(f"/dev/shm/{name}").unlink(missing_ok=True)

    before = _statuses(tmp_path / "outputs")
    completed = {d for d, s in before.items() if s["state"] == "COMPLETED"}
    partial = {d: s["folds_completed"] for d, s in before.items() if s["state"] == "RUNNING"}
    # the paused job (and, under joblib, whatever the other worker was running) kept some folds
    assert len(completed) >= 5 and any(0 < len(f) < 5 for f in partial.values())

    (tmp_path / "PAUSE").unlink()
    result = cli("train", *args)  # the identical command
    assert result.exit_code == 0, result.output
    assert "continuing the sweep in" in result.output
    # (under joblib the jobs' own notices go to the workers' output, not to this one)
    assert f"12 jobs: {12 - len(completed)} COMPLETED, {len(completed)} SKIPPED" in result.output

    after = _statuses(tmp_path / "outputs")
    assert len(after) == 12 and {s["state"] for s in after.values()} == {"COMPLETED"}
    ran = {d for d, s in after.items() if d not in completed}
    assert len(ran) == 12 - len(completed)  # exactly the missing jobs ran
    for run_dir in completed:  # skipped: untouched
        assert after[run_dir]["started"] == before[run_dir]["started"]
    for run_dir, status in after.items():
        if run_dir in ran:  # the interrupted job computed only its missing folds
            assert status["resumed_folds"] == partial.get(run_dir, [])
    results = _results(tmp_path / "outputs")
    folds = results[["run_key", "fold"]].drop_duplicates()
    assert len(folds) == 12 * 5 and folds["run_key"].nunique() == 12
    assert not results.duplicated(["run_key", "fold", "epoch", "split", "metric"]).any()
    assert not list((tmp_path / "outputs").rglob(sweep.LINK_FILE))  # same sweep dir, same dirs


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_failing_exiting_and_killed_jobs_do_not_stop_the_others(
    cli, test_models, tmp_path, launcher
):
    modes = "ok1,ok2,raise1,exit,ok3,kill,raise2,ok4"
    result = cli(
        "train", "-m", "model=faulty", f"model.mode={modes}", "allow_targets=[sweep_models]",
        "cv.n_splits=2", f"hydra/launcher={launcher}", *FAST,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "4 job(s) did not complete" in text
    for mode, error in [
        ("raise1", "RuntimeError: raise1: cannot build the model"),
        ("raise2", "RuntimeError: raise2: cannot build the model"),
        ("exit", "SystemExit: 3"),
        ("kill", "terminated by SIGKILL"),
    ]:
        assert f"model.mode={mode}" in text and error in text
    states = {s["overrides"][1]: s["state"] for s in _statuses(tmp_path / "outputs").values()}
    assert states == {f"model.mode={m}": "COMPLETED" for m in ("ok1", "ok2", "ok3", "ok4")} | {
        f"model.mode={m}": "FAILED" for m in ("raise1", "raise2", "exit", "kill")
    }


def test_fail_fast_starts_no_more_jobs(cli, test_models, tmp_path):
    result = cli(
        "train", "-m", "model=faulty", "model.mode=ok1,raise,ok2,ok3",
        "allow_targets=[sweep_models]", "cv.n_splits=2", "--fail-fast", *FAST,
    )  # fmt: skip
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "3 job(s) did not complete" in text
    assert "4 jobs: 2 CANCELLED, 1 COMPLETED, 1 FAILED" in text
    states = sorted(s["state"] for s in _statuses(tmp_path / "outputs").values())
    assert states == ["COMPLETED", "FAILED"]  # ok2, ok3 never started


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "basic"])
def test_sigterm_to_a_sweep_stops_everything(test_models, tmp_path, launcher):
    (tmp_path / "PAUSE").touch()
    args = ["-m", "model=pausing", "seed=0,1,2,3", "allow_targets=[sweep_models]", "cv.n_splits=2"]
    parent = _start(tmp_path, *args, f"hydra/launcher={launcher}", *FAST)
    _wait_for(tmp_path / "PAUSED", parent)
    assert len(_group_alive(parent.pid)) >= 2  # the CLI, (workers), the jobs
    signalled = time.monotonic()
    parent.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` would
    code = parent.wait(timeout=10)
    assert code == 143 and time.monotonic() - signalled < 10
    deadline = time.monotonic() + 10
    while _group_alive(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_alive(parent.pid) == []

    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "outputs").rglob("*") if p.is_file()}
    time.sleep(1.0)
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing written after exit
    states = [s["state"] for s in _statuses(tmp_path / "outputs").values()]
    assert "INTERRUPTED" in states and set(states) <= {"INTERRUPTED", "COMPLETED"}
    log = (tmp_path / "first-run.log").read_text()
    assert "interrupted by SIGTERM" in log
    assert _shm_entries(parent.pid) == set() and "leaked" not in log, log  # loky cleaned up


def _shm_entries(pid: int) -> set[str]:
    """What loky and joblib keep in /dev/shm for process ``pid`` (semaphores, memmap folders)."""
    shm = Path("/dev/shm")
    names = [p.name for p in shm.iterdir()] if shm.is_dir() else []
    return {n for n in names if f"loky-{pid}-" in n or f"joblib_memmapping_folder_{pid}_" in n}


def _by_run_key(root: Path) -> dict[str, list[pd.DataFrame]]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for run_dir, status in sorted(_statuses(root).items()):
        frame = pd.read_parquet(run_dir / "results.parquet").sort_values(
            ["fold", "epoch", "split", "metric"], ignore_index=True
        )
        frames.setdefault(status["run_key"], []).append(frame)
    return frames


@pytest.mark.slow
def test_kill_9_of_a_joblib_parent_stops_its_workers_and_the_runs_resume(
    cli, test_models, tmp_path
):
    (tmp_path / "PAUSE").touch()
    args = [
        "-m", "model=pausing", "model.pause_fold=2", "seed=0,1,2", "allow_targets=[sweep_models]",
        "cv.n_splits=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST,
    ]  # fmt: skip
    in_flight = min(2, launch.cores())  # one job per worker, each paused in its fold 1
    parent = _start(tmp_path, *args)
    deadline = time.monotonic() + 240
    while sum(s["folds_completed"] == [0] for s in _statuses(tmp_path / "outputs").values()) < (
        in_flight
    ):
        assert parent.poll() is None, (tmp_path / "first-run.log").read_text()
        assert time.monotonic() < deadline, "the jobs did not reach their fold 1"
        time.sleep(0.1)
    assert len(_group_alive(parent.pid)) >= 1 + 2 * in_flight  # the CLI, workers, their jobs

    os.kill(parent.pid, signal.SIGKILL)  # the parent alone
    parent.wait()
    killed = time.monotonic()
    while _group_alive(parent.pid) and time.monotonic() - killed < 10:
        time.sleep(0.1)
    assert _group_alive(parent.pid) == []  # workers, jobs and loky's resource tracker
    assert _shm_entries(parent.pid) == set()
    # The jobs in flight stopped and said so; the job not started yet left nothing.
    states = [s["state"] for s in _statuses(tmp_path / "outputs").values()]
    assert states == ["INTERRUPTED"] * in_flight

    (tmp_path / "PAUSE").unlink()
    result = cli("train", *args)  # the identical command
    assert result.exit_code == 0, result.output
    assert "3 jobs: 3 COMPLETED" in result.output
    resumed = _statuses(tmp_path / "outputs").values()
    assert (
        sorted(len(s["resumed_folds"]) for s in resumed) == [0] * (3 - in_flight) + [1] * in_flight
    )
    # The same results as a sweep that was never interrupted (the launcher changes no result).
    basic = [a for a in args if not a.startswith(("hydra/launcher", "hydra.launcher"))]
    assert cli("train", *basic, "--rerun").exit_code == 0
    frames = _by_run_key(tmp_path / "outputs")
    assert len(frames) == 3 and all(len(pair) == 2 for pair in frames.values())
    for first, second in frames.values():
        pd.testing.assert_frame_equal(first, second, check_exact=True)


@pytest.mark.slow
def test_a_joblib_sweep_leaves_nothing_in_dev_shm_and_warns_of_no_leak(tmp_path):
    args = ["-m", "seed=0,1", "model=linear", "cv.n_splits=2", "hydra/launcher=joblib", *FAST]
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "mlcli", "train", *args],  # `mlcli`: exits without atexit handlers
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Until every process holding the pipes has exited: loky's resource tracker, which warns of
    # leaks and cleans up after the others, too.
    out, err = sweep_process.communicate(timeout=300)
    assert sweep_process.returncode == 0, out + err
    assert "2 jobs: 2 COMPLETED" in err
    assert "leaked" not in err and "resource_tracker" not in err, err
    assert _shm_entries(sweep_process.pid) == set()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from mlcli import sweeps as sweep
with sweep.key_lock(Path(sys.argv[1]), "k"):
    print("held", flush=True)
    time.sleep(1.0)  # a job's process that takes a moment to die
"""


def test_a_stale_run_is_marked_once_its_dying_process_lets_go_of_the_lock(tmp_path):
    from mlcli.rundir import write_json

    root = tmp_path / "outputs"
    run_dir = root / "runs" / "r"
    write_json(run_dir / "status.json", {"state": "RUNNING", "run_key": "k", "session": "s1"})
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(root)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert sweep.mark_stale_runs(root, "s1") == []  # computed by a live process
        assert sweep.mark_stale_runs(root, "s2", wait=5.0) == []  # not this session's
        assert sweep.mark_stale_runs(root, "s1", wait=30.0) == [run_dir]  # waited for it
    assert json.loads((run_dir / "status.json").read_text())["state"] == "INTERRUPTED"


def test_diverged_job_is_listed_and_the_sweep_goes_on(cli, tmp_path):
    result = cli(
        "train", "-m", "optim=sgd", "optim.lr=50,0.01", "dataset=diabetes", "model=linear",
        "cv=holdout", "epochs=3", "progress=false",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "DIVERGED" in result.output and "training loss became" in result.output
    states = sorted(s["state"] for s in _statuses(tmp_path / "outputs").values())
    assert states == ["COMPLETED", "DIVERGED"]
    # Diverging is deterministic: the same command skips it rather than diverge again.
    again = cli(
        "train", "-m", "optim=sgd", "optim.lr=50,0.01", "dataset=diabetes", "model=linear",
        "cv=holdout", "epochs=3", "progress=false",
    )  # fmt: skip
    assert again.exit_code == 1 and "skipped (already DIVERGED)" in again.output
    assert len(_statuses(tmp_path / "outputs")) == 2


@pytest.mark.slow
def test_basic_and_joblib_launchers_give_identical_results(cli, tmp_path):
    args = ["-m", "seed=0,1", "model=mlp", "model.dropout=0.2", "cv.n_splits=2", *FAST]
    assert cli("train", *args).exit_code == 0
    assert cli("train", *args, "hydra/launcher=joblib", "--rerun").exit_code == 0
    frames: dict[str, list[pd.DataFrame]] = {}
    for run_dir, status in _statuses(tmp_path / "outputs").items():
        frame = pd.read_parquet(run_dir / "results.parquet")
        frames.setdefault(status["run_key"], []).append(frame.reset_index(drop=True))
    assert len(frames) == 2 and all(len(pair) == 2 for pair in frames.values())
    for first, second in frames.values():
        pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_dry_run_lists_jobs_keys_and_what_is_done(cli, tmp_path):
    args = ["-m", "seed=0,1", "model=linear", "cv.n_splits=2", *FAST]
    assert cli("train", "-m", "seed=0", "model=linear", "cv.n_splits=2", *FAST).exit_code == 0
    before = sorted(p for p in (tmp_path / "outputs").rglob("*"))
    result = cli("train", *args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert sorted(p for p in (tmp_path / "outputs").rglob("*")) == before  # nothing written
    command, _ = check(args)
    keys = [sweep.run_key(cfg) for _, cfg in command.jobs]
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert any(keys[0] in line and "done (COMPLETED)" in line for line in lines)
    assert any(keys[1] in line and "new" in line for line in lines)
    assert "1 done (would be skipped), 0 partial, 1 new" in result.output
    # the keys --dry-run shows are those the runs record
    (status,) = _statuses(tmp_path / "outputs").values()
    assert status["run_key"] == keys[0]


def test_resume_continues_the_named_sweep_dir(cli, tmp_path):
    args = ["-m", "seed=0,1", "model=linear", "cv.n_splits=2", *FAST]
    assert cli("train", *args).exit_code == 0
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    status_path = sweep_dir / "1" / "status.json"
    status = json.loads(status_path.read_text())
    status_path.write_text(json.dumps({**status, "state": "INTERRUPTED", "folds_completed": [0]}))
    result = cli("train", "--resume", str(sweep_dir))  # the recorded command
    assert result.exit_code == 0, result.output
    assert (
        "skipped (already COMPLETED)" in result.output and "1/2 folds already done" in result.output
    )
    assert json.loads(status_path.read_text())["resumed_folds"] == [0]
    assert len(list((tmp_path / "outputs" / "sweeps").iterdir())) == 1

    other = cli("train", "--resume", str(sweep_dir), "-m", "seed=5", "model=linear")
    assert other.exit_code == 2 and "another sweep" in other.output
    assert cli("train", "--resume", str(tmp_path)).exit_code == 2  # not a sweep dir


def test_single_run_is_skipped_then_rerun(cli, tmp_path):
    args = ["model=linear", "cv.n_splits=2", *FAST]
    assert cli("train", *args).exit_code == 0
    again = cli("train", *args)
    assert again.exit_code == 0 and "skipped (already COMPLETED)" in again.output
    assert len(_statuses(tmp_path / "outputs")) == 1  # no new run dir
    assert cli("train", *args, "--rerun").exit_code == 0
    assert len(_statuses(tmp_path / "outputs")) == 2


def test_a_job_dir_holding_another_run_is_never_overwritten(cli, tmp_path):
    common = ["model=linear", "cv.n_splits=2", "hydra.sweep.dir=outputs/fixed", *FAST]
    assert cli("train", "-m", "seed=0", *common).exit_code == 0
    first = json.loads((tmp_path / "outputs/fixed/0/status.json").read_text())
    # A different sweep into the same dir: refused before anything runs.
    refused = cli("train", "-m", "seed=1", *common)
    assert refused.exit_code == 2 and "already holds another sweep" in refused.output
    # A job landing in a dir that holds another run goes to a fresh sibling dir.
    decision = sweep.decide(tmp_path / "outputs", "another-key", tmp_path / "outputs/fixed/0")
    assert decision.action == "new" and decision.run_dir == tmp_path / "outputs/fixed/0-1"
    assert json.loads((tmp_path / "outputs/fixed/0/status.json").read_text()) == first


def test_joblib_workers_times_threads_fit_the_cores(monkeypatch):
    monkeypatch.setattr(launch, "cores", lambda: 8)
    for extra, workers in [([], 4), (["hydra.launcher.n_jobs=16"], 4), (["seed=0,1"], 2)]:
        args = ["-m", "hydra/launcher=joblib", "threads=2", "seed=0,1,2,3,4", *extra]
        command, problems = check(args)
        assert problems == []
        result = launch.plan(command)
        assert f"hydra.launcher.n_jobs={workers}" in result.overrides, (extra, result.overrides)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(cli, tmp_path):
    args = ["-m", "seed=0,1", "model=linear", "cv.n_splits=2", *FAST]
    result = cli("train", *args, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    assert result.exit_code == 0, result.output
    statuses = _statuses(tmp_path / "outputs")
    assert sorted(s["state"] for s in statuses.values()) == ["COMPLETED", "COMPLETED"]
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert list(sweep_dir.glob(".submitit/*/*_result.pkl"))  # submitit ran the jobs


def test_slurm_example_config_composes(compose):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mlcli.config import packaged_conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(str(packaged_conf_dir()), version_base="1.3"):
        cfg = hydra_compose(
            "config", overrides=["hydra/launcher=slurm", "threads=4"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.cpus_per_task == 4 and launcher.timeout_min > 0
