"""A fake SLURM for tests: ``sbatch``, ``srun``, ``squeue``, ``sacct`` and ``scancel`` that run the
submitted job scripts on this machine, the way submitit's own tests fake the cluster.

The shell shims next to this file call ``fake_slurm.py TOOL ARGS``. State lives in
``$FAKE_SLURM_DIR``: ``next_id``, each submitted script (``<id>.sbatch``) and, per array task,
``<id>_<task>.state`` (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, NODE_FAIL) and ``.pgid``.

* ``sbatch SCRIPT`` prints ``Submitted batch job <id>`` and starts a detached scheduler that runs
  the array's tasks (``#SBATCH --array=0-5%64``), at most ``$FAKE_SLURM_PARALLEL`` (default 2) at
  once, each in a process group of its own with SLURM's variables set; the script's output goes
  to ``#SBATCH --output``. While ``$FAKE_SLURM_DIR/hold`` exists, no task starts (PENDING).
* ``$FAKE_SLURM_KILL=TASK:SECONDS`` or ``TASK:FILE`` (at submission): the cluster SIGKILLs array
  task TASK's processes that many seconds after it started, or once FILE exists (state
  NODE_FAIL), as a failing node would.
* ``srun [--output F] [--error F] [options] CMD``: runs CMD with its output appended to F.
* ``sacct -o JobID,State,NodeList --parsable2 -j ID ...``: what submitit parses.
* ``scancel ID|ID_TASK [--signal SIG]``: signals (default: kills) the tasks; CANCELLED.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL")


def state_dir() -> Path:
    path = Path(os.environ.get("FAKE_SLURM_DIR") or Path(__file__).parent / "state")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _next_id() -> int:
    counter = state_dir() / "next_id"
    with open(state_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job_id = int(_read(counter, "1000"))
        _write(counter, str(job_id + 1))
    return job_id


def _directives(script: str) -> dict[str, str]:
    found = {}
    for line in script.splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if match:
            found[match.group(1)] = (match.group(2) or "").strip().strip("'\"")
    return found


def _tasks(directives: dict[str, str]) -> tuple[list[int | None], int]:
    """The array's task ids and how many may run at once (``[None]``: a job, not an array)."""
    array = directives.get("array")
    if not array:
        return [None], 1
    spec, _, limit = array.partition("%")
    first, _, last = spec.partition("-")
    tasks: list[int | None] = list(range(int(first), int(last or first) + 1))
    return tasks, int(limit) if limit else len(tasks)


def _name(job_id: int, task: int | None) -> str:
    """``12_3`` for array task 3 of job 12; ``12`` for job 12 (no array)."""
    return str(job_id) if task is None else f"{job_id}_{task}"


def _expand(pattern: str, job_id: int, task: int) -> str:
    return (
        pattern.replace("%A", str(job_id)).replace("%a", str(task))
        .replace("%j", f"{job_id}_{task}").replace("%t", "0")
    )  # fmt: skip


def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).read_text()
    job_id = _next_id()
    directives = _directives(script)
    tasks, _ = _tasks(directives)
    root = state_dir()
    _write(root / f"{job_id}.sbatch", script)
    _write(root / f"{job_id}.cwd", os.getcwd())
    for task in tasks:
        _write(root / f"{_name(job_id, task)}.state", "PENDING")
    subprocess.Popen(
        [sys.executable, __file__, "_schedule", str(job_id)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"Submitted batch job {job_id}")
    return 0


def _schedule(job_id: int) -> int:
    """The cluster: run the array's tasks, a few at a time, in process groups of their own."""
    root = state_dir()
    script = _read(root / f"{job_id}.sbatch")
    directives = _directives(script)
    tasks, limit = _tasks(directives)
    limit = min(limit, int(os.environ.get("FAKE_SLURM_PARALLEL", "2")))
    kill_task, _, kill_after = os.environ.get("FAKE_SLURM_KILL", "").partition(":")
    cwd = _read(root / f"{job_id}.cwd") or None
    pending = list(tasks)
    running: dict[int | None, tuple[subprocess.Popen[bytes], float]] = {}
    while (pending or running) and root.is_dir():  # a removed state dir ends the cluster
        for task, (process, started) in list(running.items()):
            if process.poll() is not None:
                state_file = root / f"{_name(job_id, task)}.state"
                if _read(state_file) == "RUNNING":
                    _write(state_file, "COMPLETED" if process.returncode == 0 else "FAILED")
                del running[task]
            elif kill_task == str(task) and _kill_due(kill_after, started):
                _write(root / f"{_name(job_id, task)}.state", "NODE_FAIL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        while pending and len(running) < limit and not (root / "hold").exists():
            task = pending.pop(0)
            if _read(root / f"{_name(job_id, task)}.state") != "PENDING":
                continue  # cancelled while pending
            running[task] = (_start(job_id, task, directives, cwd), time.monotonic())
        time.sleep(0.1)
    return 0


def _kill_due(when: str, started: float) -> bool:
    """``SECONDS`` after the task started, or once the file named ``when`` exists."""
    try:
        return time.monotonic() - started > float(when)
    except ValueError:
        return Path(when).exists()


def _start(
    job_id: int, task: int | None, directives: dict[str, str], cwd: str | None
) -> subprocess.Popen[bytes]:
    root = state_dir()
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(job_id if task is None else job_id * 1000 + task),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "FAKE_SLURM_JOB": str(job_id),
        "FAKE_SLURM_TASK": _name(job_id, task),
    }
    if task is not None:
        env.update({"SLURM_ARRAY_JOB_ID": str(job_id), "SLURM_ARRAY_TASK_ID": str(task)})
    env.pop("FAKE_SLURM_KILL", None)
    output = _expand(directives.get("output", f"slurm-{_name(job_id, task)}.out"), job_id, task)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as log:
        process = subprocess.Popen(
            ["bash", str(root / f"{job_id}.sbatch")],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _write(root / f"{_name(job_id, task)}.pgid", str(process.pid))
    _write(root / f"{_name(job_id, task)}.state", "RUNNING")
    return process


def srun(args: list[str]) -> int:
    outputs: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, _, inline = args[i].partition("=")
        if name in ("--output", "--error", "-o", "-e"):
            value = inline or args[i + 1]
            outputs["error" if name in ("--error", "-e") else "output"] = value
            i += 1 if inline else 2
        else:
            i += 1
    command = args[i:]
    job_id = int(os.environ.get("FAKE_SLURM_JOB", "0"))
    array_task = os.environ.get("SLURM_ARRAY_TASK_ID")
    task = int(array_task) if array_task is not None else None
    out_path = _expand(outputs.get("output", "/dev/stdout"), job_id, task)
    err_path = _expand(outputs.get("error", out_path), job_id, task)
    with open(out_path, "ab") as out, open(err_path, "ab") as err:
        return subprocess.call(command, stdout=out, stderr=err)


def _task_files(job: str) -> list[Path]:
    main, _, task = job.partition("_")
    root = state_dir()
    if task:
        return [root / f"{main}_{task}.state"]
    tasks = sorted(root.glob(f"{main}_*.state"), key=lambda p: int(p.stem.split("_")[1]))
    return [root / f"{main}.state", *tasks]


def sacct(args: list[str]) -> int:
    jobs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-j"]
    print("JobID|State|NodeList")
    for job in jobs:
        for path in _task_files(job):
            if path.exists():
                print(f"{path.stem}|{_read(path)}|localhost")
    return 0


def squeue(args: list[str]) -> int:
    print("JOBID|STATE")
    for path in sorted(state_dir().glob("*.state")):
        if _read(path) not in FINISHED:
            print(f"{path.stem}|{_read(path)}")
    return 0


def scancel(args: list[str]) -> int:
    sig = signal.SIGKILL
    jobs = []
    i = 0
    while i < len(args):
        if args[i] == "--signal":
            sig = getattr(signal, args[i + 1] if args[i + 1].startswith("SIG") else
                          "SIG" + args[i + 1])  # fmt: skip
            i += 2
        else:
            jobs.append(args[i])
            i += 1
    for job in jobs:
        for path in _task_files(job):
            state = _read(path)
            if state in FINISHED:
                continue
            if sig == signal.SIGKILL:
                _write(path, "CANCELLED")
            pgid = _read(path.with_suffix(".pgid"))
            if state == "RUNNING" and pgid.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pgid), sig)
    return 0


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "_schedule":
        return _schedule(int(args[0]))
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue,
            "scancel": scancel}[tool](args)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
