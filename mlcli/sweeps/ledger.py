"""A session's ledger, as its jobs see it: what a job reads of its ``mlcli train`` command from the
environment (:class:`JobSession`), the file it records how it ended in (one per job), and the stop
request of ``on_failure=stop``. The CLI's side of the session reads the ledger afterwards
(:mod:`mlcli.sweeps.session`). Light: no torch, no pandas.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.config import env
from mlcli.rundir import read_json, write_json

STOP_FILE = "STOP"


@dataclass(frozen=True)
class JobSession:
    """Settings the CLI hands to every job of one command (through the environment)."""

    id: str | None
    ledger: Path | None
    rerun: bool
    process: str | None = None
    """The :func:`mlcli.sweeps.procs.identity` of the session's ``mlcli`` process."""

    @classmethod
    def from_env(cls) -> JobSession:
        """The session this process's job belongs to (empty outside ``mlcli train``)."""
        ledger = os.environ.get(env.LEDGER_DIR)
        return cls(
            id=os.environ.get(env.SESSION) or None,
            ledger=Path(ledger) if ledger else None,
            rerun=os.environ.get(env.RERUN, "0") == "1",
            process=os.environ.get(env.SESSION_PROCESS) or None,
        )

    def record(self, entry: dict[str, Any]) -> None:
        """Add how a job ended to the ledger the CLI reads afterwards (one file per job)."""
        if self.ledger is None:
            return
        entry = {**entry, "time": time.time()}
        write_json(self.ledger / f"{uuid.uuid4().hex}.json", entry)

    def request_stop(self) -> None:
        """``on_failure=stop``: jobs that have not started yet will not run."""
        if self.ledger is not None:
            (self.ledger / STOP_FILE).touch()

    @property
    def stop_requested(self) -> bool:
        """Whether an earlier job of this session failed under ``on_failure=stop``."""
        return self.ledger is not None and (self.ledger / STOP_FILE).exists()


def read_ledger(ledger: Path) -> list[dict[str, Any]]:
    """Every entry jobs recorded in ``ledger``, in the order they were recorded."""
    entries = []
    for path in Path(ledger).glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            entries.append(read_json(path))
    return sorted(entries, key=lambda e: float(e.get("time", 0.0)))
