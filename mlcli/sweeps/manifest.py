"""Sweep manifests: a multirun writes ``sweep.json`` (its command, and its jobs with their run
keys) into its sweep dir; the identical command finds it again and continues in the same dir, so
job dirs line up with job numbers. Light: no torch, no pandas.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from mlcli import rundir
from mlcli.rundir import STATUS_FILE, write_json

MANIFEST_FILE = "sweep.json"


def sweep_key(job_keys: list[str]) -> str:
    """Identity of a sweep: its jobs' run keys in launch order (job N ↔ job dir N)."""
    return hashlib.sha256("\n".join(job_keys).encode("utf-8")).hexdigest()[:16]


def load_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    """The ``sweep.json`` of ``sweep_dir``, or None when it has none; raises
    :class:`mlcli.rundir.Unreadable` for one that is not mlcli's (fields of other types)."""
    path = Path(sweep_dir) / MANIFEST_FILE
    manifest = rundir.read_json_object(path)
    if manifest is None:
        return None
    for key, kind, name in (
        ("sweep_key", str, "a string"),
        ("created", str, "a string"),
        ("args", list, "a list"),
        ("jobs", list, "a list"),
    ):
        if not isinstance(manifest.get(key), kind):
            raise rundir.Unreadable(path, f"{key} is not {name}")
    if not all(isinstance(arg, str) for arg in manifest["args"]):
        raise rundir.Unreadable(path, "args holds something other than strings")
    return manifest


def read_manifest(sweep_dir: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """The ``sweep.json`` of ``sweep_dir``, or None (a note in ``notes`` if it is garbage)."""
    try:
        return load_manifest(sweep_dir)
    except rundir.Unreadable as error:
        if notes is not None:
            notes.append(f"{error}; not a sweep mlcli can continue")
        return None


def find_sweep(outputs_root: Path, key: str, notes: list[str] | None = None) -> Path | None:
    """The most recent sweep dir below ``outputs_root`` whose manifest has sweep key ``key``
    (a note in ``notes`` for each manifest that is garbage)."""
    found: list[tuple[str, Path]] = []
    root = Path(outputs_root)
    if not root.is_dir():
        return None
    for directory, names in rundir.walk(root, into_runs=False):
        if MANIFEST_FILE in names and STATUS_FILE not in names:
            manifest = read_manifest(directory, notes)
            if manifest and manifest["sweep_key"] == key:
                found.append((manifest["created"], directory))
    return max(found)[1] if found else None


def write_manifest(
    sweep_dir: Path, key: str, args: list[str], jobs: list[tuple[list[str], str]]
) -> None:
    """Record a sweep's command and jobs (overrides, run key) in ``sweep_dir/sweep.json``."""
    previous = read_manifest(sweep_dir) or {}
    write_json(
        Path(sweep_dir) / MANIFEST_FILE,
        {
            "sweep_key": key,
            "created": previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": args,
            "jobs": [
                {"num": n, "overrides": overrides, "run_key": job_key}
                for n, (overrides, job_key) in enumerate(jobs)
            ],
        },
    )
