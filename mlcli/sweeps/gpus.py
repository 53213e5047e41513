"""One job per GPU: jobs that run at once on one machine (joblib, submitit_local, Ray on one
machine, or several ``mlcli train`` commands) each get their own GPU.

A job takes a **slot** before its child process starts: ``jobs_per_gpu`` slots per visible GPU,
each an exclusive ``flock`` on ``<outputs_root>/.mlcli/gpus/<host>/<gpu>-<n>.lock`` held until the
job ends (it dies with its process: a killed job frees its GPU). Job number ``k`` tries slot
``k mod slots`` first, in round-robin order (GPU 0, GPU 1, ..., GPU 0's second slot, ...), so 4
jobs started together on 2 GPUs with ``jobs_per_gpu=2`` get GPUs 0, 1, 0, 1; when every slot is
held the job waits for one. The job's child then sees only that GPU (``CUDA_VISIBLE_DEVICES``,
set before torch initializes CUDA) and its status.json records it (``gpu``).

The GPUs are those of ``CUDA_VISIBLE_DEVICES`` when it is set (the ones the user or a scheduler
gave the command), else every device torch counts. Nothing is assigned with ``device=cpu``, on
a machine without GPUs, or under a scheduler that gives each job its GPUs itself (SLURM). Light:
torch only to count the GPUs when CUDA_VISIBLE_DEVICES is unset.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mlcli.sweeps.locks import state_dir

log = logging.getLogger("mlcli")

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
SCHEDULER_VARIABLES = ("SLURM_JOB_ID",)
"""Set in a job a scheduler started: it has given the job its GPUs already."""
POLL_S = 0.1


def visible_gpus() -> list[str]:
    """The GPUs this process may give its jobs: ``CUDA_VISIBLE_DEVICES``'s entries if it is
    set (ids or UUIDs; ``""`` or ``-1``: none), else ``0..n-1`` for the devices torch counts."""
    value = os.environ.get(CUDA_VISIBLE_DEVICES)
    if value is not None:
        devices = [d.strip() for d in value.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; "-1" (or any negative id) hides every GPU.
        ids: list[str] = []
        for device in devices:
            if device.lstrip("-").isdigit() and int(device) < 0:
                break
            ids.append(device)
        return ids
    import torch  # imported already in a job's process (mlcli's preload)

    try:
        # NVML-based where available: counting does not initialize CUDA in this process, whose
        # forked children may then still use it.
        return [str(n) for n in range(torch.cuda.device_count())]
    except Exception:  # a broken driver: the job finds out (and says so) when it asks for cuda
        return []


def slots(gpus: list[str], jobs_per_gpu: int) -> list[tuple[str, int]]:
    """The slots in round-robin order: every GPU's first slot, then every GPU's second..."""
    return [(gpu, n) for n in range(max(1, jobs_per_gpu)) for gpu in gpus]


def _slot_path(outputs_root: Path, gpu: str, n: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return state_dir(outputs_root) / "gpus" / (host or "host") / f"{safe}-{n}.lock"


def assigned(device: str) -> bool:
    """Whether a job on ``device`` (``auto``, ``cuda``, ``cpu``) gets a GPU slot here."""
    return not (device == "cpu" or any(os.environ.get(name) for name in SCHEDULER_VARIABLES))


@contextlib.contextmanager
def gpu_slot(
    outputs_root: Path,
    job_number: int,
    jobs_per_gpu: int = 1,
    gpus: list[str] | None = None,
) -> Iterator[str | None]:
    """Hold a free GPU slot for the block; yields the GPU (None: no GPU to assign).

    Tries slot ``job_number mod n_slots`` first, then the next ones; waits while all are held.
    """
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        yield None
        return
    order = slots(gpus, jobs_per_gpu)
    first = job_number % len(order)
    order = order[first:] + order[:first]
    paths = [_slot_path(outputs_root, gpu, n) for gpu, n in order]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for (gpu, _), path in zip(order, paths, strict=True):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                continue
            try:
                yield gpu
            finally:
                os.close(fd)  # frees the slot
            return
        if not waited:
            log.info("waiting for a free GPU slot (%d GPUs × jobs_per_gpu=%d)", len(gpus),
                     jobs_per_gpu)  # fmt: skip
            waited = True
        time.sleep(POLL_S)


def use_gpu(gpu: str | None) -> None:
    """In a job's child, before torch initializes CUDA: see only ``gpu`` (None: unchanged)."""
    from mlcli.config import env

    if gpu is not None:
        os.environ[CUDA_VISIBLE_DEVICES] = gpu
        os.environ[env.ASSIGNED_GPU] = gpu
