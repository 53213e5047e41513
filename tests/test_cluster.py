"""SLURM through Hydra's submitit launcher, against a fake SLURM (tests/fake_slurm: shell shims
for sbatch, srun, squeue, sacct and scancel that run the job scripts on this machine): the job
script, results as under the basic launcher, a job the cluster kills, --detach and `mlcli status`,
Ctrl-C cancelling the sweep's jobs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from mlcli.sweeps import cluster
from tests.conftest import completed_results

SHIMS = Path(__file__).parent / "fake_slurm"
FAST = ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"]
SLURM = [
    "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
    "hydra.launcher.timeout_min=7", "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=1",
]  # fmt: skip
# A linear model that pauses for good in the job that the fake cluster runs as array task 3,
# while ./PAUSE exists (touching ./PAUSED first), so a test can have the cluster kill it mid-run.
PAUSING = """
import math, os, time
from pathlib import Path
from torch import nn


def pausing(in_shape, out_features):
    if Path("PAUSE").exists() and os.environ.get("FAKE_SLURM_TASK", "").endswith("_3"):
        Path("PAUSED").touch()
        time.sleep(600)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), out_features))
"""
SIX = ["-m", "seed=0,1,2", "optim.lr=0.01,0.1", "model=pausing", "allow_targets=[pausing]",
       *FAST[:1], *FAST[2:]]  # fmt: skip


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """The fake SLURM's tools first on PATH, its state in ./slurm; the test model importable."""
    monkeypatch.setenv("PATH", f"{SHIMS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "slurm"))
    monkeypatch.setenv("FAKE_SLURM_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    (tmp_path / "pausing.py").write_text(PAUSING)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "pausing.yaml").write_text("_target_: pausing.pausing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "slurm"
    # The cluster stops: its schedulers end once their state dir is gone (their jobs with them).
    for job in _submissions(tmp_path / "slurm"):
        subprocess.run(["scancel", str(job)], check=False)
    shutil.rmtree(tmp_path / "slurm", ignore_errors=True)


def _states(slurm: Path, job_id: int) -> dict[int, str]:
    return {
        int(p.stem.split("_")[1]): p.read_text().strip() for p in slurm.glob(f"{job_id}_*.state")
    }


def _plain_state(slurm: Path, job_id: int) -> str:
    path = slurm / f"{job_id}.state"
    return path.read_text().strip() if path.exists() else ""


def _submissions(slurm: Path) -> list[int]:
    return sorted(int(p.stem) for p in slurm.glob("*.sbatch"))


def _wait(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_submitit_slurm_without_sbatch_is_one_screen_exit_2(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli("train", "-m", "seed=0,1", *FAST, "hydra/launcher=submitit_slurm")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "sbatch and srun not found on PATH" in text and "hydra/launcher=joblib" in text
    assert "Traceback" not in result.output and not (tmp_path / "outputs").exists()
    detach = cli("train", "-m", "seed=0,1", *FAST, "--detach")  # the basic launcher
    assert detach.exit_code == 2 and "submitit_slurm" in detach.output


def test_status_of_a_dir_that_is_no_sweep_is_exit_2(cli, tmp_path):
    result = cli("status", str(tmp_path))
    assert result.exit_code == 2 and "no sweep manifest" in result.output
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("[1, 2]")  # garbage crashes nothing
    assert cli("status", str(tmp_path / "sweep")).exit_code == 2
    assert cluster.read_submissions(tmp_path) == {}


@pytest.mark.long
def test_a_six_job_sweep_through_the_fake_slurm(cli, fake_slurm, tmp_path, monkeypatch):
    # The reference: the same six jobs under the basic launcher, in another outputs root.
    basic = cli("train", *SIX, "outputs_root=basic")
    assert basic.exit_code == 0, basic.output
    expected = completed_results(tmp_path / "basic")
    assert len(expected) == 6

    (tmp_path / "PAUSE").touch()
    monkeypatch.setenv("FAKE_SLURM_KILL", f"3:{tmp_path / 'PAUSED'}")  # the cluster kills task 3
    result = cli("train", *SIX, *SLURM)
    assert result.exit_code == 1, result.output
    (first,) = _submissions(fake_slurm)
    script = (fake_slurm / f"{first}.sbatch").read_text()
    for line in ["#SBATCH --partition=debug", "#SBATCH --time=7", "#SBATCH --cpus-per-task=1",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-5%6"]:  # fmt: skip
        assert line in script.splitlines(), script
    assert re.search(r"^srun .* -u -m submitit.core._submit .*/\.submitit/%j$", script, re.M)
    ended = {n: "COMPLETED" for n in (0, 1, 2, 4, 5)} | {3: "NODE_FAIL"}
    # (a job's result is there a moment before the fake cluster has seen its process exit)
    _wait(lambda: _states(fake_slurm, first) == ended, f"states {ended}", timeout=30)
    # The killed job is FAILED, in the failure table and in its run dir.
    text = " ".join(result.output.split())
    assert "1 job(s) did not complete" in text and "NODE_FAIL" in text
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    killed = json.loads((sweep_dir / "3" / "status.json").read_text())
    assert killed["state"] == "FAILED" and "NODE_FAIL" in killed["error"]["message"]
    assert killed["gpu"] is None  # SLURM gives the job its GPU; mlcli assigns none

    # The identical command submits only the killed job, which completes.
    (tmp_path / "PAUSE").unlink()
    monkeypatch.delenv("FAKE_SLURM_KILL")
    again = cli("train", *SIX, *SLURM)
    assert again.exit_code == 0, again.output
    assert "6 jobs: 1 COMPLETED, 5 SKIPPED" in again.output
    second = _submissions(fake_slurm)[-1]  # one job: submitit submits it as a plain job
    assert second != first and "--array" not in (fake_slurm / f"{second}.sbatch").read_text()
    _wait(lambda: _plain_state(fake_slurm, second) == "COMPLETED", "the resubmitted job")
    assert json.loads((sweep_dir / "3" / "status.json").read_text())["state"] == "COMPLETED"
    results = completed_results(tmp_path / "outputs")
    assert results.keys() == expected.keys()
    for key, frame in expected.items():
        pd.testing.assert_frame_equal(results[key], frame, check_exact=True)


@pytest.mark.long
def test_detach_returns_once_queued_and_status_follows_the_jobs(cli, fake_slurm, tmp_path):
    fake_slurm.mkdir()
    (fake_slurm / "hold").touch()  # the cluster starts nothing yet
    result = cli("train", *SIX, *SLURM, "--detach")
    assert result.exit_code == 0, result.output
    (first,) = _submissions(fake_slurm)
    assert set(_states(fake_slurm, first).values()) == {"PENDING"}  # returned before any ran
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert f"mlcli status {sweep_dir.relative_to(tmp_path)}" in result.output

    queued = cli("status", str(sweep_dir))
    assert queued.exit_code == 0, queued.output
    assert "6 queued" in queued.output and f"{first}_5 PENDING" in queued.output

    # Job 3 pauses mid-run; the others complete.
    (tmp_path / "PAUSE").touch()
    (fake_slurm / "hold").unlink()
    _wait(lambda: list(_states(fake_slurm, first).values()).count("COMPLETED") == 5
          and (tmp_path / "PAUSED").exists(), "5 jobs completed, job 3 paused")  # fmt: skip
    running = cli("status", str(sweep_dir))
    assert "5 completed, 1 running" in running.output, running.output
    report = cli("report", str(sweep_dir), "--format", "csv")
    assert report.exit_code == 0, report.output  # what has finished

    # The cluster cancels job 3; the identical command resubmits only it.
    assert os.system(f"scancel {first}_3") == 0
    _wait(lambda: "failed" in cli("status", str(sweep_dir)).output, "job 3 seen as failed")
    (tmp_path / "PAUSE").unlink()
    again = cli("train", *SIX, *SLURM, "--detach")
    assert again.exit_code == 0, again.output
    assert again.output.count("not submitted: done") == 5
    second = _submissions(fake_slurm)[-1]
    assert second != first and "--array" not in (fake_slurm / f"{second}.sbatch").read_text()
    _wait(lambda: _plain_state(fake_slurm, second) == "COMPLETED", "job 3 rerun")
    done = cli("status", str(sweep_dir))
    assert "6 completed" in done.output, done.output


def _interrupt(tmp_path: Path, args: list[str], ready) -> subprocess.Popen:
    """``mlcli train ARGS`` in a process of its own, sent SIGINT once ``ready()``; its exit."""
    log_path = tmp_path / "sweep.log"
    with open(log_path, "wb") as log:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "mlcli", "train", *args], cwd=tmp_path, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 240
    while not ready():
        assert sweep.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    sweep.send_signal(signal.SIGINT)  # the mlcli process only, as Ctrl-C reaches it
    assert sweep.wait(timeout=120) == 130, log_path.read_text()
    return sweep


def test_ctrl_c_on_a_slurm_sweep_cancels_its_queued_jobs(fake_slurm, tmp_path):
    fake_slurm.mkdir()
    (fake_slurm / "hold").touch()  # the cluster starts nothing: every job stays PENDING
    args = ["-m", "seed=0,1,2", *FAST, *SLURM]
    _interrupt(tmp_path, args, lambda: set(_states(fake_slurm, 1000).values()) == {"PENDING"})
    (job,) = _submissions(fake_slurm)
    assert _states(fake_slurm, job) == {0: "CANCELLED", 1: "CANCELLED", 2: "CANCELLED"}
    output = (tmp_path / "sweep.log").read_text()
    assert "cancelling 3 job(s) of the sweep" in output and "interrupted by SIGINT" in output


@pytest.mark.long
def test_ctrl_c_on_a_slurm_sweep_cancels_its_running_job(fake_slurm, tmp_path):
    (tmp_path / "PAUSE").touch()  # array task 3 pauses mid-run
    _interrupt(tmp_path, [*SIX, *SLURM], lambda: (tmp_path / "PAUSED").exists())
    (job,) = _submissions(fake_slurm)
    states = _states(fake_slurm, job)
    assert states[3] == "CANCELLED" and not {"PENDING", "RUNNING"} & set(states.values())
    pgid = int((fake_slurm / f"{job}_3.pgid").read_text())
    _wait(lambda: not any(_in_group(p, pgid) for p in psutil.process_iter()), "job 3 gone", 10)
    # The runs of the cancelled jobs are INTERRUPTED; the identical command runs only those.
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert json.loads((sweep_dir / "3" / "status.json").read_text())["state"] == "INTERRUPTED"
    (tmp_path / "PAUSE").unlink()
    runs = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("status.json")]
    done = sum(run["state"] == "COMPLETED" for run in runs)  # (one may end as it is cancelled)
    assert 0 < done < 6
    cli_again = subprocess.run(
        [sys.executable, "-m", "mlcli", "train", *SIX, *SLURM], cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli_again.returncode == 0, cli_again.stdout + cli_again.stderr
    assert f"6 jobs: {6 - done} COMPLETED, {done} SKIPPED" in cli_again.stderr


def _in_group(process: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(process.pid) == pgid
    except OSError:
        return False
