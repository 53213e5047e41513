"""``run_link.json``: the note in a Hydra job dir whose job ran (or was found) elsewhere."""

from __future__ import annotations

import time
from pathlib import Path

from mlcli.rundir.files import LINK_FILE, Unreadable, read_json_object, write_json


def write_link(job_dir: Path, action: str, run_key: str, run_dir: Path, state: str | None) -> None:
    """Leave a note in a Hydra job dir whose job was ``skipped`` or ``continued`` in the run dir
    ``run_dir`` (whose state was ``state``)."""
    write_json(
        Path(job_dir) / LINK_FILE,
        {
            "action": action,
            "run_key": run_key,
            "run_dir": str(Path(run_dir).resolve()),
            "state": state,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def read_link(job_dir: Path) -> Path | None:
    """The run dir that a Hydra job dir's ``run_link.json`` names, or None when it has none
    (raises :class:`mlcli.Unreadable` for a link that is not mlcli's)."""
    path = Path(job_dir) / LINK_FILE
    link = read_json_object(path)
    if link is None:
        return None
    target = link.get("run_dir")
    if not isinstance(target, str) or not target:
        raise Unreadable(path, "run_dir is not a path")
    return Path(target)


def linked_run_dir(job_dir: Path) -> Path:
    """The run dir of a Hydra job dir: itself, or the one its ``run_link.json`` names."""
    try:
        linked = read_link(job_dir)
    except Unreadable:
        linked = None
    return linked or Path(job_dir)
