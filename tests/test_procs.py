"""A job's process stops when its session's ``mlcli`` process dies, whatever process it runs in.

A "session" here is a bare Python process that names itself (:func:`mlcli.procs.identity`) and
sleeps; a "job" process runs a job as ``mlcli.app.task`` does (signals → interrupt, the work in
a forked child). The job process is not the session's child, as a submitit job is not.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from mlcli.sweeps import procs

SESSION = """
import time
from mlcli.sweeps import procs
print(procs.identity(), flush=True)
time.sleep(99)
"""

JOB = """
import os, sys, time
from pathlib import Path
from mlcli.sweeps import procs

def train():  # the job's child: on SIGTERM it records INTERRUPTED, as a run does
    try:
        Path("child.tmp").write_text(str(os.getpid()))
        os.replace("child.tmp", "child.pid")
        time.sleep(120)
    except KeyboardInterrupt:
        Path("interrupted").touch()
        return "INTERRUPTED"
    return "COMPLETED"

with procs.interrupt_on_signals(), procs.stop_with_session(sys.argv[1]):
    if sys.argv[2] == "idle":
        pass
    else:
        procs.call_in_child(train)
Path("idle").touch()
time.sleep(120)  # between jobs: nothing to interrupt
Path("went on").touch()
"""


def _session() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", SESSION], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with process.stdout:
        return process, process.stdout.readline().strip()


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.02)


@pytest.mark.parametrize("when", ["job running", "idle", "gone before the job"])
def test_a_job_process_stops_when_its_session_process_dies(tmp_path, when):
    session, identity = _session()
    if when == "gone before the job":
        session.kill()
        session.wait()
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, identity, "idle" if when == "idle" else "train"],
        cwd=tmp_path,
    )
    if when != "gone before the job":
        _wait_for(tmp_path / ("idle" if when == "idle" else "child.pid"), job)
        session.kill()  # SIGKILL: the session cannot tell anyone
        session.wait()
    killed = time.monotonic()
    assert job.wait(timeout=30) != 0
    if when != "gone before the job":  # (else the job's start-up counts too)
        assert time.monotonic() - killed < procs.GRACE_S  # its child was not killed for hanging
    assert not (tmp_path / "went on").exists()
    if when == "idle":
        return
    assert not (tmp_path / "idle").exists()  # the job did not run to its end
    if when == "job running" or (tmp_path / "child.pid").exists():
        # The job was interrupted as by `kill`: its child recorded it, then exited.
        child = int((tmp_path / "child.pid").read_text())
        if when == "job running":
            assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
            assert (tmp_path / "interrupted").exists()
        else:  # interrupted as it forked: the child may still be on its way out, and may have
            # been stopped before its own handler was installed (then it records nothing)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(child).wait(timeout=procs.GRACE_S)
            assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


@pytest.mark.parametrize(
    "identity",
    [None, "", "garbage", "other-boot-id:1:123", "self"],
)
def test_no_watch_in_the_session_process_itself_or_for_another_machine(identity):
    if identity == "self":
        identity = procs.identity()  # Hydra's basic launcher: the job runs in the session
    with procs.stop_with_session(identity):
        watching = [t for t in threading.enumerate() if t.name == "mlcli-session-watch"]
    assert watching == []


def test_identity_names_this_process_on_this_machine():
    boot, pid, started = procs.identity().split(":")
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert int(pid) == psutil.Process().pid
    other, identity = _session()
    try:
        assert identity.split(":")[0] == boot and identity != procs.identity()
        assert int(identity.split(":")[2]) >= int(started)  # started after this process
    finally:
        other.kill()
        other.wait()
