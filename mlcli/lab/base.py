"""What a demonstration is (:class:`Demo`), what its analysis reads (:class:`LabRuns`: the
sweep's run dirs through the report's collect library) and what it returns (:class:`Verdict`
and a figure).

A verdict is computed from the measured numbers by a rule written next to it: ``supported`` is
``yes`` when the numbers satisfy the claim's rule, ``no`` when they contradict it, and
``inconclusive`` when the runs do not hold what the rule needs (too few finished runs, a metric
missing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcli.report.collect import Collected, collect

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"


@dataclass
class Verdict:
    """The claim, the numbers measured, whether they support it, and the rule that decided."""

    claim: str
    numbers: dict[str, Any]
    supported: str
    rule: str
    detail: str = ""
    """What the numbers say, in one or two sentences built from them."""

    def document(self) -> dict[str, Any]:
        """As ``verdict.json`` holds it."""
        return {
            "claim": self.claim,
            "supported": self.supported,
            "rule": self.rule,
            "detail": self.detail,
            "numbers": _plain(self.numbers),
        }

    def markdown(self) -> str:
        """A short markdown block: claim, verdict with the rule, the numbers."""
        lines = [
            f"**Claim.** {self.claim}",
            "",
            f"**Supported by this run: {self.supported}.** {self.detail}",
            "",
            f"*Rule:* {self.rule}",
            "",
            "| measured | value |",
            "|---|---|",
        ]
        for key, value in _plain(self.numbers).items():
            lines.append(f"| {key} | {_fmt(value)} |")
        return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return None if not np.isfinite(number) else number
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def as_list(value: Any) -> Any:
    """A config value the report flattened (a list as JSON text) back as a list."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def decide(holds: bool | None) -> str:
    """``yes`` / ``no`` from a rule's outcome (``None``: the runs cannot decide)."""
    if holds is None:
        return INCONCLUSIVE
    return YES if holds else NO


class LabRuns:
    """A demonstration's finished runs: each run's config values and final fold-mean metrics,
    and the fold-mean curves, read from its run dirs by :func:`mlcli.report.collect.collect`."""

    def __init__(self, collected: Collected, run_dirs: Sequence[Path] = ()) -> None:
        runs = collected.runs
        self.run_dirs = [Path(d) for d in run_dirs]
        done = runs.index[runs["state"] == "COMPLETED"]
        self.runs = runs.loc[done].reset_index().rename(columns={"index": "run"})
        self.results = collected.results[collected.results["run"].isin(done)]
        self.notes = list(collected.notes)

    @classmethod
    def read(cls, run_dirs: Sequence[Path]) -> LabRuns:
        """Collect ``run_dirs`` (raises :class:`mlcli.report.ReportError` when there are none)."""
        return cls(collect(list(run_dirs)), run_dirs)

    def __len__(self) -> int:
        return len(self.runs)

    def value(self, key: str) -> list[Any]:
        """Each finished run's config value at dotted ``key`` (or group choice); a list (which
        the report keeps as JSON text) as a list."""
        return [as_list(config.get(key)) for config in self.runs["config"]]

    def final(self, split: str, metric: str) -> np.ndarray:
        """Each finished run's fold mean of ``split/metric`` at each fold's last epoch."""
        rows = self.results[(self.results["split"] == split) & (self.results["metric"] == metric)]
        if rows.empty:
            return np.full(len(self.runs), np.nan)
        last = rows.sort_values("epoch").groupby(["run", "fold"], observed=True).tail(1)
        means = last.groupby("run", observed=True)["value"].mean()
        return means.reindex(self.runs["run"]).to_numpy(dtype=np.float64)

    def curve(self, position: int, split: str, metric: str) -> pd.Series:
        """Run ``position``'s fold-mean curve of ``split/metric`` (index: epoch)."""
        run = self.runs["run"].iloc[position]
        rows = self.results[
            (self.results["run"] == run)
            & (self.results["split"] == split)
            & (self.results["metric"] == metric)
        ]
        return rows.groupby("epoch")["value"].mean().sort_index()

    def fold_values(self, position: int, split: str, metric: str) -> np.ndarray:
        """Run ``position``'s per-fold values of ``split/metric`` at each fold's last epoch."""
        run = self.runs["run"].iloc[position]
        rows = self.results[
            (self.results["run"] == run)
            & (self.results["split"] == split)
            & (self.results["metric"] == metric)
        ]
        last = rows.sort_values("epoch").groupby("fold", observed=True).tail(1)
        return last["value"].to_numpy(dtype=np.float64)

    def saved_models(self, position: int) -> Path | None:
        """Run ``position``'s run dir when it kept its models (``models/schema.json``), else
        None."""
        shown = Path(str(self.runs["run_dir"].iloc[position]))
        candidates = [shown, *(d for d in self.run_dirs if d.name == shown.name)]
        for candidate in candidates:
            if (candidate / "models" / "schema.json").is_file():
                return candidate
        return None

    def table(self, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
        """One row per finished run: the config ``keys`` and the final ``split/metric`` values,
        with ``n_params`` and ``duration_s``."""
        frame = pd.DataFrame({key: self.value(key) for key in keys})
        for name in metrics:
            split, metric = name.split("/", 1)
            frame[name] = self.final(split, metric)
        for column in ("n_params", "duration_s"):
            values = (
                self.runs[column] if column in self.runs else pd.Series(np.nan, self.runs.index)
            )
            frame[column] = pd.to_numeric(values, errors="coerce").to_numpy()
        return frame


Analysis = Callable[[LabRuns, Path], Verdict]
"""A demonstration's analysis: the runs and the folder for its figure → the verdict."""


@dataclass(frozen=True)
class Demo:
    """One lecture's demonstration: its sweep is the ``experiment=`` preset of the same name;
    ``quick`` overrides shrink it (epochs, seeds, data); ``analyze`` reads the finished runs,
    draws the figure(s) into the folder it is given and returns the verdict."""

    name: str
    topic: str
    what: str
    """What is run, in a few words."""
    quick: tuple[str, ...]
    analyze: Analysis
    figures: tuple[str, ...] = field(default=())
    """The PNG files ``analyze`` writes (names inside the folder)."""
