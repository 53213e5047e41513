"""``mlcli report``: from run dirs to a ranked, diagnosed summary, with plots and exports.

The pipeline, one module each:

* :mod:`~mlcli.report.collect`: find run dirs, read status, config and results (pyarrow).
* :mod:`~mlcli.report.aggregate`: group into configurations, fold mean ± std at the final or best
  epoch, rank (only COMPLETED runs enter the numbers).
* :mod:`~mlcli.report.diagnose`: high bias / overfitting / good fit from the learning curves.
* :mod:`~mlcli.report.plots`: learning curves, lr schedules, metric vs hyperparameter (PNG).
* :mod:`~mlcli.report.export`: table, markdown, csv, json and self-contained html.
"""

from __future__ import annotations

from pathlib import Path

# Only names that are not also submodule names (``mlcli.report.collect`` stays the module).
from mlcli.report import aggregate as _aggregate
from mlcli.report import collect as _collect
from mlcli.report.aggregate import Aggregated, ReportOptions
from mlcli.report.collect import ReportError
from mlcli.report.diagnose import Rules
from mlcli.tasks import higher_is_better

__all__ = [
    "Aggregated",
    "ReportError",
    "ReportOptions",
    "Rules",
    "build_report",
    "higher_is_better",
]


def build_report(roots: list[Path], options: ReportOptions | None = None) -> Aggregated:
    """Collect every run dir below ``roots`` and aggregate it (raises :class:`ReportError`)."""
    return _aggregate.aggregate(_collect.collect(roots), options or ReportOptions())
