"""``mlcli report`` as a function: options in, the report on stdout or in files.

Everything that can fail on bad input (paths, keys, metric names) fails before anything is
written; files are then written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mlcli.report.aggregate import Aggregated, ReportOptions, aggregate
from mlcli.report.collect import ReportError, collect
from mlcli.report.diagnose import Rules
from mlcli.report.export import to_csv, to_html, to_json, to_markdown
from mlcli.report.terminal import to_table
from mlcli.rundir import atomic_write_bytes

__all__ = ["ReportError", "render", "run_report"]


def render(
    agg: Aggregated,
    fmt: str,
    plots: dict[str, bytes],
    width: int | None = None,
    *,
    wide: bool = False,
    explain: bool = False,
) -> str:
    """The report as text in ``fmt`` (table | markdown | csv | json | html); ``width``,
    ``wide`` and ``explain`` shape the terminal table (see :mod:`mlcli.report.terminal`)."""
    if fmt == "csv":
        return to_csv(agg)
    if fmt == "json":
        return to_json(agg)
    if fmt == "markdown":
        return to_markdown(agg)
    if fmt == "html":
        return to_html(agg, plots)
    return to_table(agg, width, wide=wide, explain=explain)


def run_report(
    roots: list[Path],
    *,
    metric: str | None = None,
    by: str | None = None,
    where: list[str] | None = None,
    at: str = "final",
    top: int | None = None,
    compare: str | None = None,
    plots: Path | None = None,
    fmt: str = "table",
    out: Path | None = None,
    bias_margin: float = 0.05,
    bias_threshold: float | None = None,
    overfit_tolerance: float = 0.05,
    wide: bool = False,
    explain: bool = False,
) -> Aggregated:
    """Build the report, write it to ``out`` (or stdout) and its plots to ``plots``."""
    keys = None
    if by is not None:
        keys = tuple(k.strip() for k in by.split(",") if k.strip())
        if not keys:
            raise ReportError("--by: give comma-separated config keys, e.g. --by optim,optim.lr")
    if out is not None and out.is_dir():
        raise ReportError(f"--out {out}: is a directory; give a file name (e.g. report.{fmt})")
    if plots is not None and plots.exists() and not plots.is_dir():
        raise ReportError(f"--plots {plots}: exists and is not a directory")
    options = ReportOptions(
        metric=metric,
        by=keys,
        where=tuple(where or ()),
        at=at,
        top=top,
        compare=compare,
        rules=Rules(bias_margin, bias_threshold, overfit_tolerance),
    )
    agg = aggregate(collect(roots), options)

    figures: dict[str, bytes] = {}
    if plots is not None or fmt == "html":
        from mlcli.report.plots import render_plots

        figures = render_plots(agg)
    # A terminal's own width; a pipe or file gets 100 columns (wider with --wide).
    width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100
    text = render(agg, fmt, figures, width, wide=wide, explain=explain)

    if plots is not None:
        for name, data in figures.items():
            atomic_write_bytes(plots / name, data)
        print(f"wrote {len(figures)} plots to {plots}", file=sys.stderr)
    if out is not None:
        atomic_write_bytes(out, text.encode("utf-8"))
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return agg
