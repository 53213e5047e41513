"""``status.json``: what a run is (state, run key, folds done...), read and written here only.

:class:`Status` is the record: the runner fills one in and writes it (:func:`write_status`) as
the run goes (RUNNING, then COMPLETED | FAILED | DIVERGED | INTERRUPTED | PRUNED); the run
index, the report, the Optuna objective, the job's summary and the stacked launcher read it back
(:func:`read_status`); a run whose process died gets its final state here (:func:`set_state`).

Reading is strict where a decision depends on a field (the state, run key, folds done, metric,
task, overrides, choices, error, start time, session: a wrong type makes the file
:class:`~mlcli.rundir.files.Unreadable`) and lenient elsewhere (a versions, timing or note field
of the wrong type reads as absent). Keys this version does not know are kept when a status is
rewritten.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli.rundir.files import STATUS_FILE, Unreadable, json_type, read_json_object, write_json

STATES = ("RUNNING", "COMPLETED", "FAILED", "DIVERGED", "INTERRUPTED", "PRUNED", "SKIPPED")
UNKNOWN_STATE = "UNKNOWN"
"""The state the report gives a run whose status cannot be read."""


@dataclass(frozen=True)
class RunError:
    """How a run failed: the exception's type and message (and, for a divergence, the epoch and
    optimizer step it happened at)."""

    type: str
    message: str
    epoch: int | None = None
    step: int | None = None

    def line(self) -> str:
        """``Type: message`` in one line (or the message alone, when the type is unknown)."""
        text = f"{self.type}: {self.message}" if self.type else self.message
        return " ".join(text.split())

    def document(self) -> dict[str, Any]:
        """As ``status.json`` holds it."""
        out: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.epoch is not None:
            out["epoch"] = self.epoch
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class Status:
    """What a run's ``status.json`` says, each field of the type mlcli writes."""

    state: str = "RUNNING"
    run_key: str | None = None
    started: str = ""
    ended: str | None = None
    duration_s: float | None = None
    pid: int | None = None
    session: str | None = None
    """The ``mlcli train`` command the run belongs to."""
    choices: dict[str, str] = field(default_factory=dict)
    """The group options chosen (``model: mlp``)."""
    overrides: list[str] = field(default_factory=list)
    data_files: dict[str, str] = field(default_factory=dict)
    """The content hashes of the data files the run key covers."""
    device: str | None = None
    gpu: str | None = None
    """The GPU mlcli gave the job (its ``CUDA_VISIBLE_DEVICES``), if it assigned one."""
    threads: int | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    trust_overrides: bool | None = None
    allowed_targets: dict[str, Any] = field(default_factory=dict)
    """Each ``_target_`` of the config, and the allowlist entry that admitted it."""
    folds_completed: list[int] = field(default_factory=list)
    resumed_folds: list[int] = field(default_factory=list)
    """Folds finished before this attempt (not recomputed)."""
    notes: list[str] = field(default_factory=list)
    """What an earlier attempt left that could not be trusted."""
    error: RunError | None = None
    # Known once the run's data and folds are (absent from the file before):
    task: str | None = None
    metric: str | None = None
    """The selection metric (``metric=auto`` resolved for the task)."""
    n_folds: int | None = None
    n_test: int | None = None
    splitter: str | None = None
    data_notes: list[str] | None = None
    fold_training: str | None = None
    """How the folds were trained (the fold strategy's name)."""
    n_params: int | None = None
    """The number of trainable parameters of the run's model (of one fold's)."""
    stacked_grid: dict[str, Any] | None = None
    trial: dict[str, Any] | None = None
    """The Optuna trial the run is (study, number)."""
    fold_epochs: dict[str, Any] | None = None
    """Each fold's last epoch and best epoch (``{"0": {"last": 14, "best": 4}}``): where early
    stopping ended it, and the epoch of its monitored metric's best (the weights it keeps with
    ``early_stopping.restore_best``)."""
    final_model: dict[str, Any] | None = None
    """The final model (``final``): its kind, and the epochs a refit trained."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of the file this version does not know (kept when it is rewritten)."""

    @property
    def error_line(self) -> str:
        """The error in one line (``Type: message``), or ``""``."""
        return self.error.line() if self.error is not None else ""

    def document(self) -> dict[str, Any]:
        """The JSON document of this status (the fields known only later are left out until
        they are)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name in _LATER and value is None):
                continue
            out[f.name] = value.document() if isinstance(value, RunError) else value
        return out


_LATER = frozenset(
    ["task", "metric", "n_folds", "n_test", "splitter", "data_notes", "fold_training",
     "stacked_grid", "trial", "fold_epochs", "final_model", "n_params"]
)  # fmt: skip
_STRICT: dict[str, tuple[type, ...]] = {
    "state": (str,),
    "run_key": (str,),
    "started": (str,),
    "session": (str,),
    "metric": (str,),
    "task": (str,),
    "n_folds": (int,),
}
_LENIENT: dict[str, tuple[type, ...]] = {
    "ended": (str,),
    "duration_s": (int, float),
    "pid": (int,),
    "data_files": (dict,),
    "device": (str,),
    "gpu": (str,),
    "threads": (int,),
    "versions": (dict,),
    "trust_overrides": (bool,),
    "allowed_targets": (dict,),
    "fold_epochs": (dict,),
    "final_model": (dict,),
    "resumed_folds": (list,),
    "notes": (list,),
    "n_test": (int,),
    "splitter": (str,),
    "data_notes": (list,),
    "fold_training": (str,),
    "n_params": (int,),
    "stacked_grid": (dict,),
    "trial": (dict,),
}
_KNOWN = frozenset(f.name for f in dataclasses.fields(Status)) - {"extra"}
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _field(path: Path, document: dict[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    """``document[key]`` (None when absent) if it is None or of one of ``kinds`` (a boolean is no
    integer here)."""
    value = document.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise Unreadable(path, f"{key} is {json_type(value)}, not {wanted}")
    return value


def _ints(path: Path, key: str, value: list[Any] | None) -> list[int]:
    if value is None:
        return []
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Unreadable(path, f"{key} holds something other than integers")
    return list(value)


def _error(path: Path, error: Any) -> RunError | None:
    if error is None or error == "":
        return None
    if isinstance(error, str):
        return RunError("", error)
    if not isinstance(error, dict):
        raise Unreadable(path, f"error is {json_type(error)}, not an object or a string")
    kind, message = error.get("type") or "Error", error.get("message") or ""
    if not isinstance(kind, str) or not isinstance(message, str):
        raise Unreadable(path, "error.type and error.message must be strings")
    epoch, step = error.get("epoch"), error.get("step")
    return RunError(
        kind,
        message,
        epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        step if isinstance(step, int) and not isinstance(step, bool) else None,
    )


def parse_status(path: Path, document: dict[str, Any]) -> Status:
    """The typed view of a status document read from ``path`` (raises :class:`Unreadable`)."""
    values = {key: _field(path, document, key, kinds) for key, kinds in _STRICT.items()}
    for key, kinds in _LENIENT.items():
        try:
            values[key] = _field(path, document, key, kinds)
        except Unreadable:
            values[key] = None  # not what mlcli writes, and nothing depends on it: absent
    overrides = _field(path, document, "overrides", (list,)) or []
    if not all(isinstance(o, str) for o in overrides):
        raise Unreadable(path, "overrides holds something other than strings")
    choices = _field(path, document, "choices", (dict,)) or {}
    if not all(v is None or isinstance(v, str | int | float) for v in choices.values()):
        raise Unreadable(path, "choices holds something other than option names")
    folds = _ints(path, "folds_completed", _field(path, document, "folds_completed", (list,)))
    defaults = Status()
    fields = {
        key: getattr(defaults, key) if value is None else value for key, value in values.items()
    }
    fields.update(
        state=values["state"] or UNKNOWN_STATE,
        overrides=list(overrides),
        choices={str(k): str(v) for k, v in choices.items()},
        folds_completed=folds,
        error=_error(path, document.get("error")),
        extra={k: v for k, v in document.items() if k not in _KNOWN},
    )
    return Status(**fields)


def read_status(run_dir: Path) -> Status | None:
    """The status of the run in ``run_dir``, or None when it has no status.json."""
    path = Path(run_dir) / STATUS_FILE
    document = read_json_object(path)
    return None if document is None else parse_status(path, document)


def write_status(run_dir: Path, status: Status) -> None:
    """Write ``status`` as the ``status.json`` of ``run_dir`` (atomically)."""
    write_json(Path(run_dir) / STATUS_FILE, status.document())


def now() -> str:
    """The time as ``status.json`` records it (local time with its UTC offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def set_state(run_dir: Path, state: str, error_type: str, message: str) -> None:
    """Rewrite a run's state (and error) in its status.json, keeping everything else."""
    try:
        status = read_status(run_dir) or Status()
    except Unreadable:
        status = Status()  # garbage in place of the run's status: this write replaces it
    status.state = state
    status.ended = status.ended or now()
    if error_type:
        status.error = RunError(error_type, message)
    write_status(run_dir, status)
