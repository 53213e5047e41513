"""Processes: each job in a child process of its own, signals, and no process left behind.

A job runs in a forked child (Linux), so whatever happens to it (an exception, ``sys.exit``,
``os._exit``, a segfault, SIGKILL from the out-of-memory killer) ends that child only: the
process that launched it (the ``mlcli`` process under Hydra's basic launcher, a joblib worker, a
submitit job) records the failure and goes on with the next job. Forking copies the parent's
memory lazily and needs no re-import, so it costs milliseconds. Elsewhere than Linux the job runs
in-process.

Signals: SIGTERM becomes ``KeyboardInterrupt`` like Ctrl-C, once (a second signal does not
interrupt the clean-up of the first), so a run can mark itself INTERRUPTED.

The session's death: a job may run in another process than the ``mlcli`` command that started
it (a joblib worker, a submitit job). Such a process watches the command's process
(:func:`stop_with_session`) and, when it has died (``kill -9``), interrupts its job as SIGTERM
would (the run records INTERRUPTED and stays resumable) and exits: no worker outlives its
session, none finishes jobs nobody waits for.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

ISOLATE = sys.platform == "linux"
GRACE_S = 5.0
"""How long an interrupted job may take to record its state before it is killed."""

_PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5
"""How often a job's process checks that its session's process is alive."""

log = logging.getLogger("mlcli")


@dataclass
class ChildResult:
    """How a child process ended: its return value, or why there is none."""

    value: Any = None
    returned: bool = False
    exit_code: int | None = None
    signal_name: str | None = None

    def describe(self) -> str:
        """Why the child returned nothing, in words."""
        if self.signal_name:
            hint = " (killed: out of memory, or by a user)" if self.signal_name == "SIGKILL" else ""
            return f"the job's process was terminated by {self.signal_name}{hint}"
        return f"the job's process exited with code {self.exit_code} without a result"


class _Interrupted:
    """SIGTERM/SIGINT → one ``KeyboardInterrupt``; later signals are remembered, not raised."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[_Interrupted]:
    """Within the block, SIGTERM and SIGINT raise ``KeyboardInterrupt`` once (main thread only)."""
    handler = _Interrupted()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (no orphaned job)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child(write_fd: int, fn: Callable[[], Any], parent: int) -> None:
    """Body of the forked child: run ``fn``, send its pickled value, exit without clean-up."""
    code = 0
    try:
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        handler = _Interrupted()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        payload = pickle.dumps(fn())
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
    except BaseException:  # fn handles its own errors; anything here is a bug or a signal
        code = 70
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def call_in_child(fn: Callable[[], Any], grace: float = GRACE_S) -> ChildResult:
    """Run ``fn()`` in a forked child and return its (picklable) value or how the child died.

    ``fn`` should catch its own exceptions and return a description of them. If this process
    is interrupted meanwhile (Ctrl-C, SIGTERM), the child gets SIGTERM and ``grace`` seconds to
    record its state before it is killed; then the ``KeyboardInterrupt`` propagates.
    """
    if not ISOLATE:
        return ChildResult(value=fn(), returned=True)
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = 0
    chunks: list[bytes] = []
    try:  # from the fork on: an interrupt at any point stops the child it may have made
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns from here
            os.close(read_fd)
            _child(write_fd, fn, parent)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    except KeyboardInterrupt:
        if os.getpid() != parent:  # pragma: no cover - the child, before its own handlers
            os._exit(70)
        if pid:
            _stop_child(pid, grace)
        raise
    if os.WIFSIGNALED(status):
        return ChildResult(signal_name=signal.Signals(os.WTERMSIG(status)).name)
    if chunks and os.WEXITSTATUS(status) == 0:
        return ChildResult(value=pickle.loads(b"".join(chunks)), returned=True)
    return ChildResult(exit_code=os.WEXITSTATUS(status))


def _stop_child(pid: int, grace: float) -> None:
    """SIGTERM the child, wait up to ``grace`` seconds for it to exit, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyboardInterrupt):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def descendants() -> list[Any]:
    """This process's descendants (psutil.Process objects, safe against pid reuse)."""
    import psutil

    try:
        return list(psutil.Process().children(recursive=True))
    except psutil.Error:
        return []


def stop_processes(processes: list[Any], grace: float = 3.0) -> None:
    """SIGTERM ``processes``, wait up to ``grace`` seconds, SIGKILL the rest; reap them all."""
    import psutil

    alive = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
            alive.append(process)
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace)


# --------------------------------------------------------------------------------------------------
# The session's process: jobs in other processes stop when it dies.


def _stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) of process ``pid``; None if none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()  # after "pid (command name)"
        return fields[0].decode("ascii"), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""  # not Linux: processes are not watched


def identity() -> str:
    """This process as ``boot id:pid:start time``: on this machine, it names this process only
    (a pid is reused, its start time is not; another machine has another boot id)."""
    stat = _stat(os.getpid())
    return f"{_boot_id()}:{os.getpid()}:{stat[1] if stat else 0}"


class _SessionWatch:
    """A daemon thread: once the watched process is gone, stop this process's job and exit."""

    def __init__(self, pid: int, started: int) -> None:
        self.pid, self.started = pid, started
        self.idle = threading.Event()  # no job of the session running in this process
        self.idle.set()
        self.retired = False  # replaced by the watch of another session
        threading.Thread(target=self._run, name="mlcli-session-watch", daemon=True).start()

    def alive(self) -> bool:
        """Whether the session's process is still running (a zombie has ended)."""
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.started and stat[0] not in "ZXx"

    def _run(self) -> None:
        while self.alive():
            time.sleep(WATCH_INTERVAL_S)
            if self.retired:
                return
        if not self.idle.is_set():
            with contextlib.suppress(Exception):  # (a stream may lead to the dead one's pipe)
                log.warning(
                    "the mlcli process (pid %d) is gone: interrupting this job (its run stays "
                    "resumable: run the same command again)",
                    self.pid,
                )
            # As `kill` would: the job's child records INTERRUPTED (and is killed after GRACE_S).
            os.kill(os.getpid(), signal.SIGTERM)
            self.idle.wait(GRACE_S + 5.0)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(1)


_WATCH: _SessionWatch | None = None


@contextlib.contextmanager
def stop_with_session(session_process: str | None) -> Iterator[None]:
    """Run a job (the block) that stops when the session's process dies.

    ``session_process`` is the :func:`identity` of the ``mlcli`` process that started the job.
    In that process itself (Hydra's basic launcher), or on another machine (a cluster job), this
    does nothing. Elsewhere one thread per process checks every ``WATCH_INTERVAL_S`` that the
    session's process is alive; when it is gone, the job running in the block is interrupted
    (SIGTERM to this process: the handler of :func:`interrupt_on_signals`) and the process
    exits, at once if no job is running.
    """
    global _WATCH
    boot, pid, started = [*(session_process or "").split(":"), "", "", ""][:3]
    watched = pid.isdigit() and started.isdigit() and int(started) > 0
    if not watched or not boot or boot != _boot_id() or int(pid) == os.getpid():
        yield
        return
    watch = _WATCH
    if watch is None or (watch.pid, watch.started) != (int(pid), int(started)):
        if watch is not None:
            watch.retired = True
        watch = _WATCH = _SessionWatch(int(pid), int(started))
    watch.idle.clear()
    try:
        yield
    finally:
        watch.idle.set()
