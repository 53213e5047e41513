"""Per-run-key locks: one process at a time computes a run, and a RUNNING status whose lock is free
belongs to a process that died.

Each lock is an exclusive ``flock`` on ``<outputs_root>/.mlcli/locks/<key>.lock``, held by the job
until it ends; ``flock`` locks die with their process, so a SIGKILLed job never leaves a stale
lock. Light: no torch, no pandas.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

STATE_DIR = ".mlcli"


def state_dir(outputs_root: Path) -> Path:
    """mlcli's bookkeeping below the outputs root (locks, sessions); never a run dir."""
    return Path(outputs_root) / STATE_DIR


def _lock_path(outputs_root: Path, key: str) -> Path:
    return state_dir(outputs_root) / "locks" / f"{key}.lock"


_HELD: dict[str, int] = {}
"""Lock files this process holds (path → pid): taking one again within it is a no-op."""


@contextlib.contextmanager
def key_lock(outputs_root: Path, key: str) -> Iterator[None]:
    """Hold the exclusive lock of run ``key`` (waits while another process computes it).

    ``flock`` locks die with their process, so a SIGKILLed job never leaves a stale lock.
    """
    path = _lock_path(outputs_root, key)
    held = str(path.resolve())
    if _HELD.get(held) == os.getpid():  # this process holds it already (the stacked launcher)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[held] = os.getpid()
        yield
    finally:
        _HELD.pop(held, None)
        os.close(fd)  # releases the lock (children forked meanwhile have exited)


def is_locked(outputs_root: Path, key: str) -> bool:
    """Whether a live process holds run ``key``'s lock right now."""
    with lock_within(outputs_root, key, 0.0) as held:
        return not held


@contextlib.contextmanager
def lock_within(outputs_root: Path, key: str, timeout: float) -> Iterator[bool]:
    """Hold run ``key``'s lock if it is free within ``timeout`` seconds: yields whether it is."""
    path = _lock_path(outputs_root, key)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield True  # never locked: nobody holds it
        return
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
        yield True
    finally:
        os.close(fd)
