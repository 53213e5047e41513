"""``status.json``: what a run is (state, run key, folds done...), read and written here only."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.rundir.files import STATUS_FILE, Unreadable, json_type, read_json_object, write_json

STATES = ("RUNNING", "COMPLETED", "FAILED", "DIVERGED", "INTERRUPTED", "PRUNED", "SKIPPED")

UNKNOWN_STATE = "UNKNOWN"


@dataclass(frozen=True)
class Status:
    """What a run's ``status.json`` says, each field of the type mlcli writes."""

    state: str
    run_key: str | None
    folds_completed: tuple[int, ...]
    n_folds: int | None
    metric: str | None
    task: str | None
    overrides: tuple[str, ...]
    choices: dict[str, str]
    error: str
    """The error in one line (``Type: message``), or ``""``."""
    started: str
    session: str | None
    document: dict[str, Any]
    """The whole document (for a runner that rewrites it)."""


def _field(path: Path, document: dict[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    """``document[key]`` (None when absent) if it is None or of one of ``kinds`` (a boolean is no
    integer here)."""
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise Unreadable(path, f"{key} is {json_type(value)}, not {wanted}")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _ints(path: Path, key: str, value: list[Any] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Unreadable(path, f"{key} holds something other than integers")
    return tuple(value)


def _error_line(path: Path, error: Any) -> str:
    if error is None or error == "":
        return ""
    if isinstance(error, str):
        text = error
    elif isinstance(error, dict):
        kind, message = error.get("type") or "Error", error.get("message") or ""
        if not isinstance(kind, str) or not isinstance(message, str):
            raise Unreadable(path, "error.type and error.message must be strings")
        text = f"{kind}: {message}"
    else:
        raise Unreadable(path, f"error is {json_type(error)}, not an object or a string")
    return " ".join(text.split())


def parse_status(path: Path, document: dict[str, Any]) -> Status:
    """The typed view of a status document read from ``path`` (raises :class:`Unreadable`)."""
    state = _field(path, document, "state", (str,))
    overrides = _field(path, document, "overrides", (list,)) or []
    if not all(isinstance(o, str) for o in overrides):
        raise Unreadable(path, "overrides holds something other than strings")
    choices = _field(path, document, "choices", (dict,)) or {}
    if not all(v is None or isinstance(v, str | int | float) for v in choices.values()):
        raise Unreadable(path, "choices holds something other than option names")
    n_folds = _field(path, document, "n_folds", (int,))
    return Status(
        state=state or UNKNOWN_STATE,
        run_key=_field(path, document, "run_key", (str,)),
        folds_completed=_ints(
            path, "folds_completed", _field(path, document, "folds_completed", (list,))
        ),
        n_folds=n_folds,
        metric=_field(path, document, "metric", (str,)),
        task=_field(path, document, "task", (str,)),
        overrides=tuple(overrides),
        choices={str(k): str(v) for k, v in choices.items()},
        error=_error_line(path, document.get("error")),
        started=_field(path, document, "started", (str,)) or "",
        session=_field(path, document, "session", (str,)),
        document=document,
    )


def read_status(run_dir: Path) -> Status | None:
    """The status of the run in ``run_dir``, or None when it has no status.json."""
    path = Path(run_dir) / STATUS_FILE
    document = read_json_object(path)
    return None if document is None else parse_status(path, document)


def set_state(run_dir: Path, state: str, error_type: str, message: str) -> None:
    """Rewrite a run's state (and error) in its status.json, keeping everything else."""
    path = run_dir / STATUS_FILE
    try:
        status = read_json_object(path) or {}
    except Unreadable:
        status = {}  # garbage in place of the run's status: this write replaces it
    status["state"] = state
    status["ended"] = status.get("ended") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if error_type:
        status["error"] = {"type": error_type, "message": message}
    write_json(path, status)
