"""Ray through Hydra's Ray launcher (``hydra/launcher=ray``) on a real local Ray instance: results
as under the basic launcher, nothing of Ray left running after the sweep ends, after a job fails
and after SIGINT to the ``mlcli`` process, nothing written to ``$HOME`` or ``/tmp/ray``.

Each sweep runs as a user runs it (``python -m mlcli train``, in its own process).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from mlcli.sweeps import local_ray, procs
from tests.conftest import completed_results

FAST = ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"]
FOUR = ["-m", "seed=0,1", "optim.lr=0.01,0.1", *FAST]
# A linear model that raises while ./FAIL exists, and pauses for good (touching ./PAUSED first)
# while ./PAUSE exists: a job of a test's sweep fails, or is running when the test interrupts it.
TROUBLE = """
import math, time
from pathlib import Path
from torch import nn


def trouble(in_shape, out_features):
    if Path("FAIL").exists():
        raise ValueError("this job fails on purpose")
    if Path("PAUSE").exists():
        Path("PAUSED").touch()
        time.sleep(600)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), out_features))
"""
TROUBLED = ["-m", "model=linear,trouble", "allow_targets=[trouble]", *FAST[:1], *FAST[2:]]


def _ray_processes(before: set[int]) -> list[psutil.Process]:
    """Ray's processes (its servers, agents and workers, exited ones too) not in ``before``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.pid in before:
            continue
        command = " ".join(process.info["cmdline"] or [])
        name = process.info["name"] or ""
        if (name.startswith("ray::") or name in ("raylet", "gcs_server")
                or "/ray/" in command or "mlcli-ray-" in command):  # fmt: skip
            found.append(process)
    return found


def _wait_for_no_ray(before: set[int], seconds: float = 10.0) -> list[psutil.Process]:
    """Ray's processes still there ``seconds`` after the sweep ended (none as soon as none is)."""
    deadline = time.monotonic() + seconds
    while (left := _ray_processes(before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def ray_env(tmp_path, monkeypatch):
    """The sweep's environment: its own $HOME (nothing may be written there), no Ray address,
    the test model importable; Ray's processes before the test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    (tmp_path / "trouble.py").write_text(TROUBLE)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "trouble.yaml").write_text("_target_: trouble.trouble\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    temp_dirs = set(Path(tempfile.gettempdir()).glob("mlcli-ray-*"))
    yield {p.pid for p in _ray_processes(set())}
    assert set(Path(tempfile.gettempdir()).glob("mlcli-ray-*")) == temp_dirs  # removed
    assert not (tmp_path / "home").exists()  # Ray wrote nothing into $HOME (~/.ray)


def _mlcli(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlcli", "train", *args], cwd=tmp_path, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def _statuses(root: Path) -> dict[str, dict]:
    """Each run's status.json, by the model it trains."""
    found = {}
    for path in root.rglob("status.json"):
        document = json.loads(path.read_text())
        model = next(o for o in document["overrides"] if o.startswith("model="))
        found[model.partition("=")[2]] = document
    return found


def test_init_settings_fix_the_object_store_and_own_only_a_local_instance(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings, local = local_ray.init_settings({"address": None}, cpus=3)
    assert local and settings == {
        "address": "local", "object_store_memory": None, "num_cpus": 3,
        "include_dashboard": False, "_node_ip_address": "127.0.0.1",
    }  # fmt: skip
    # The user's settings win; a cluster's address is joined, with nothing of a local instance
    settings, local = local_ray.init_settings({"num_cpus": 1, "object_store_memory": 10**9}, 3)
    assert local and settings["num_cpus"] == 1 and settings["object_store_memory"] == 10**9
    settings, local = local_ray.init_settings({"address": "auto"}, cpus=3)
    assert not local and settings == {"address": "auto", "object_store_memory": None}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert local_ray.init_settings({"address": None}, 3) == (
        {"address": "10.0.0.1:6379", "object_store_memory": None},
        False,
    )
    # A job reserves its threads, never more CPUs than a local instance has
    assert [local_ray.job_cpus(t, c) for t, c in [(2, 4), (8, 4), (None, 4), (8, None)]] == [
        2, 4, 1, 8
    ]  # fmt: skip


def test_a_four_job_ray_sweep_equals_the_basic_launchers_and_leaves_no_ray(cli, tmp_path, ray_env):
    basic = cli("train", *FOUR, "outputs_root=basic")
    assert basic.exit_code == 0, basic.output
    expected = completed_results(tmp_path / "basic")
    assert len(expected) == 4

    result = _mlcli(tmp_path, *FOUR, "hydra/launcher=ray")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 jobs: 4 COMPLETED" in result.stderr
    assert _wait_for_no_ray(ray_env) == []
    results = completed_results(tmp_path / "outputs")
    assert results.keys() == expected.keys()
    for key, frame in expected.items():
        pd.testing.assert_frame_equal(results[key], frame, check_exact=True)


@pytest.mark.long
def test_a_failed_job_leaves_no_ray_and_the_identical_command_reruns_it(tmp_path, ray_env):
    (tmp_path / "FAIL").touch()
    result = _mlcli(tmp_path, *TROUBLED, "hydra/launcher=ray")
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    assert "1 job(s) did not complete" in text and "this job fails on purpose" in text
    assert _wait_for_no_ray(ray_env) == []
    runs = _statuses(tmp_path / "outputs")
    assert runs["linear"]["state"] == "COMPLETED" and runs["trouble"]["state"] == "FAILED"

    (tmp_path / "FAIL").unlink()
    again = _mlcli(tmp_path, *TROUBLED, "hydra/launcher=ray")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 jobs: 1 COMPLETED, 1 SKIPPED" in again.stderr
    assert {r["state"] for r in _statuses(tmp_path / "outputs").values()} == {"COMPLETED"}
    assert _wait_for_no_ray(ray_env) == []


@pytest.mark.long
def test_sigint_to_mlcli_stops_its_jobs_and_leaves_no_ray(tmp_path, ray_env):
    (tmp_path / "PAUSE").touch()
    with open(tmp_path / "sweep.log", "wb") as log:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "mlcli", "train", *TROUBLED, "hydra/launcher=ray"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (tmp_path / "PAUSED").exists():
        assert sweep.poll() is None, (tmp_path / "sweep.log").read_text()
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGINT)  # the mlcli process only, as `kill -INT` would
    assert sweep.wait(timeout=120) == 130, (tmp_path / "sweep.log").read_text()
    output = (tmp_path / "sweep.log").read_text()
    assert "interrupted by SIGINT" in output
    assert _wait_for_no_ray(ray_env) == []
    assert _statuses(tmp_path / "outputs")["trouble"]["state"] == "INTERRUPTED"

    (tmp_path / "PAUSE").unlink()
    again = _mlcli(tmp_path, *TROUBLED, "hydra/launcher=ray")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "continuing the sweep in" in again.stderr
    assert {r["state"] for r in _statuses(tmp_path / "outputs").values()} == {"COMPLETED"}
    assert _wait_for_no_ray(ray_env) == []


@pytest.mark.long
def test_a_sweep_on_an_existing_cluster_leaves_it_running(tmp_path, ray_env, monkeypatch):
    # A cluster of the user's (`ray start`), with token authentication as Ray sets it up.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0123456789abcdef" * 4)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ray-test-")
    start = [ray, "start", "--head", "--port", "6391", "--num-cpus", "2", "--temp-dir", temp,
             "--include-dashboard", "false", "--node-ip-address", "127.0.0.1"]  # fmt: skip
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        cluster = _ray_processes(ray_env)
        assert any(p.name() == "raylet" for p in cluster)
        args = [
            *FOUR[:2],
            *FAST,
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.address=127.0.0.1:6391",
        ]
        result = _mlcli(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "joining the Ray cluster at 127.0.0.1:6391" in result.stdout + result.stderr
        assert "2 jobs: 2 COMPLETED" in result.stderr
        assert all(p.is_running() for p in cluster)  # the cluster is the user's: it runs on
    finally:
        # The test's cluster only (not `ray stop`, which stops every Ray on the machine): the
        # Ray processes started since the test began (its agents name no temp dir any more).
        local_ray.stop_leftovers(children, temp)
        procs.stop_processes(_ray_processes(ray_env))
        shutil.rmtree(temp, ignore_errors=True)
