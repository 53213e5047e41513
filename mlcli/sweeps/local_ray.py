"""Sweeps on Ray (``hydra/launcher=ray``, Hydra's ``hydra-ray-launcher``): what mlcli adds.

Hydra's Ray launcher calls ``ray.init`` with a hard-coded 75 MB object store and never shuts Ray
down: the local instance's ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` outlive the
command (re-parented to PID 1, deaf to SIGTERM), and Ray writes an authentication token into
``~/.ray`` and its session into ``/tmp/ray``. mlcli's session runs its subclass instead
(:mod:`hydra_plugins.mlcli_plugins.ray_launcher`), which launches the jobs inside
:func:`ray_instance`:

* **Without** ``hydra.launcher.ray.init.address`` (or ``RAY_ADDRESS``) a local Ray is started
  for the launch: Ray's default object store, no dashboard, ``num_cpus`` = the cores this
  process may use, its own temp dir (``$TMPDIR/mlcli-ray-*``, removed after), bound to
  127.0.0.1, its authentication token in the environment of its processes only (nothing in
  ``$HOME``). It is shut down when the launch ends however it ends (jobs done, a job failed,
  Ctrl-C or SIGTERM): ``ray.shutdown()``, then every process it started that is still there is
  stopped (SIGTERM, SIGKILL) and reaped; this process is their subreaper meanwhile, so none is
  re-parented out of reach.
* **With** an address (``auto`` or ``host:port``) the launch connects to that cluster and only
  disconnects at the end: the cluster is the user's.

Light: Ray is imported when a launch starts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("mlcli")

RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
MLCLI_RAY_LAUNCHER = "hydra_plugins.mlcli_plugins.ray_launcher.MlcliRayLauncher"
LOCAL = "local"
"""``ray.init``'s address that starts a new local instance (never joins one found running)."""
_PR_SET_CHILD_SUBREAPER = 36
_AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
STOP_GRACE_S = 2.0
"""How long Ray's processes left after ``ray.shutdown()`` get between SIGTERM and SIGKILL."""


def is_ray(launcher_target: str) -> bool:
    """Whether a launcher's ``_target_`` runs the jobs on Ray (Hydra's or mlcli's launcher)."""
    return launcher_target in (RAY_LAUNCHER, MLCLI_RAY_LAUNCHER)


def init_settings(init: dict[str, Any], cpus: int) -> tuple[dict[str, Any], bool]:
    """``ray.init``'s arguments for the launcher's ``ray.init`` settings, and whether they
    start a local instance (which the launch then owns and shuts down).

    The user's settings win; mlcli only fills in what is unset. ``object_store_memory`` is
    always given (None: Ray's default), so Hydra's launcher does not put its 75 MB in.
    """
    settings = dict(init)
    settings.setdefault("object_store_memory", None)
    address = settings.get("address") or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, LOCAL):
        settings["address"] = address
        return settings, False
    settings["address"] = LOCAL
    settings.setdefault("num_cpus", cpus)
    settings.setdefault("include_dashboard", False)
    settings.setdefault("_node_ip_address", "127.0.0.1")
    return settings, True


def job_cpus(threads: Any, cpus: int | None) -> int:
    """The CPUs Ray reserves for a job of ``threads`` torch threads: as many (so that jobs ×
    threads ≤ cores, as with joblib), at most the local instance's ``cpus`` (or it never runs)."""
    try:
        wanted = max(1, int(threads))
    except (TypeError, ValueError):
        wanted = 1
    return wanted if cpus is None else min(wanted, max(1, cpus))


@contextlib.contextmanager
def ray_instance(init: dict[str, Any], cpus: int) -> Iterator[int | None]:
    """Ray for a launch (the block): a local instance started and shut down with it, or the
    cluster ``init["address"]`` names, joined and left. Yields the local instance's CPUs (None
    for a cluster's)."""
    import ray

    settings, local = init_settings(init, cpus)
    if ray.is_initialized():  # (someone else's Ray in this process: use it, leave it running)
        yield None
        return
    if not local:
        log.info("joining the Ray cluster at %s", settings["address"])
        ray.init(**settings)
        try:
            yield None
        finally:
            ray.shutdown()  # disconnects this driver; the cluster runs on
        return
    from mlcli.sweeps import procs

    before = {p.pid for p in procs.descendants()}
    made = settings.get("_temp_dir") is None
    if made:
        settings["_temp_dir"] = tempfile.mkdtemp(prefix="mlcli-ray-")
    temp_dir = str(settings["_temp_dir"])
    variables = {"RAY_USAGE_STATS_ENABLED": "0"}
    if not any(os.environ.get(name) for name in _AUTH_VARIABLES):
        # Token authentication as Ray's default for a new local instance, with its token in
        # the environment of its processes instead of a file written into ~/.ray.
        variables["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    previous = {name: os.environ.get(name) for name in variables}
    _set_subreaper(True)
    try:
        for name, value in variables.items():
            os.environ.setdefault(name, value)
        log.info("starting a local Ray instance (%s CPUs, temp dir %s)", settings["num_cpus"],
                 temp_dir)  # fmt: skip
        ray.init(**settings)
        yield int(settings["num_cpus"])
    finally:
        try:
            with contextlib.suppress(Exception):
                ray.shutdown()
            stop_leftovers(before, temp_dir)
        finally:
            _set_subreaper(False)
            for name, old in previous.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old
            if made:
                shutil.rmtree(temp_dir, ignore_errors=True)


def leftovers(before: set[int], temp_dir: str) -> list[Any]:
    """Processes of a local Ray instance still there: this process's descendants started since
    (``before``: those there before), and any process whose command line names its temp dir."""
    import psutil

    from mlcli.sweeps import procs

    found = {p.pid: p for p in procs.descendants() if p.pid not in before}
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.pid not in found and temp_dir in " ".join(process.info["cmdline"] or []):
                found[process.pid] = process
    return list(found.values())


def stop_leftovers(before: set[int], temp_dir: str, grace: float = STOP_GRACE_S) -> int:
    """Stop (SIGTERM, then SIGKILL after ``grace`` s) and reap what :func:`leftovers` finds
    (exited ones too, if they are this process's children); how many were still running."""
    from mlcli.sweeps import procs

    found = leftovers(before, temp_dir)
    running = [p for p in found if _running(p)]
    mine = [p for p in found if p not in running and _child_of_this_process(p)]
    if running:
        log.debug("stopping %d process(es) Ray left: %s", len(running), [p.pid for p in running])
    procs.stop_processes(running + mine, grace=grace)
    return len(running)


def _running(process: Any) -> bool:
    import psutil

    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _child_of_this_process(process: Any) -> bool:
    import psutil

    try:
        return bool(process.ppid() == os.getpid())
    except psutil.Error:
        return False


def _set_subreaper(on: bool) -> None:
    """Make this process the subreaper of its descendants (Linux): an orphan of Ray's (its
    parent died first) is re-parented here, where it can be stopped and reaped."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)
