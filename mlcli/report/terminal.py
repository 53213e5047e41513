"""The terminal report: one table per dataset that fits the terminal's width.

Every column is laid out here, not by rich's shrinking (which breaks words, ``val/lo/ss``, once
the columns do not fit): a column is never narrower than its longest header word or its widest
number, so headers wrap only at spaces and numbers never wrap. When the columns do not all fit,
the least important go (the test metrics other than the ranking one, then the other val
metrics, ...) and a line says which; ``--wide`` shows every column at its full width. A
diagnosis is its short label in the table; ``--explain`` lists each configuration's reason
below it. Numbers are rounded to what their spread supports: the mean to the decimal of the
second significant digit of its std (``0.975 ± 0.014``), config values to 4 significant digits.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlcli.report.aggregate import Aggregated
from mlcli.report.export import direction, incomplete_runs, rules_text

WIDE = 10_000
"""The console width of ``--wide``: lines as long as their content."""


def number(value: Any, digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits, no trailing noise; blank if missing."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if whole and abs(value) < 1e6:
        return str(int(value))
    if not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def mean_std(mean: float, std: float) -> str:
    """``mean ± std``, the mean to the decimal of the std's second significant digit (at least
    2 and at most 6 significant digits of the mean); the mean alone (4 significant digits)
    when the std is undefined or 0."""
    if pd.isna(mean):
        return ""
    if not math.isfinite(mean):
        return number(mean)
    if pd.isna(std) or std == 0 or not math.isfinite(std):
        return number(mean)
    magnitude = math.floor(math.log10(abs(mean))) if mean else 0
    decimals = 1 - math.floor(math.log10(std))
    decimals = min(max(decimals, 1 - magnitude), 5 - magnitude)
    if abs(mean) >= 1e6 or (mean and abs(mean) < 1e-4):
        return f"{mean:.3g} ± {std:.2g}"
    if round(std, decimals) == 0:  # a spread far below the mean's digits
        return f"{number(mean)} ± {std:.2g}"
    if decimals <= 0:
        return f"{round(mean, decimals):.0f} ± {round(std, decimals):.0f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


@dataclass
class Column:
    """A column to lay out: its cells as text, how it may wrap, how much it matters."""

    header: str
    cells: list[str]
    priority: int
    """0 is always shown; higher numbers go first when the terminal is too narrow."""
    wrap: bool = False
    """Cells may wrap at spaces (config values, labels); numbers never do."""
    right: bool = False
    fold: int = 0
    """Cells longer than this may be folded (paths: no spaces to wrap at); 0: never."""
    width: int = field(default=0, init=False)

    def natural(self) -> int:
        return max([cell_len(self.header), *(cell_len(c) for c in self.cells)])

    def minimum(self) -> int:
        words = [cell_len(w) for w in self.header.split()] or [1]
        for cell in self.cells:
            words += [cell_len(w) for w in cell.split()] if self.wrap else [cell_len(cell)]
        if self.fold:
            words = [min(w, self.fold) for w in words[1:]] + words[:1]
        return max(words)


def _frame_width(columns: list[Column]) -> int:
    """Characters a rich table with heavy head box and padding 1 needs beyond its contents."""
    return 3 * len(columns) + 1


def layout(columns: list[Column], width: int) -> tuple[list[Column], list[Column]]:
    """Pick the columns that fit ``width`` (most important first; a less important one only in
    the room the more important left) and size them; returns (shown, hidden). A column is
    never narrower than its minimum (no word is broken)."""
    order = sorted(range(len(columns)), key=lambda i: columns[i].priority)
    chosen: set[int] = set()
    for i in order:
        trial = [columns[j] for j in sorted(chosen | {i})]
        if columns[i].priority == 0 or (
            sum(c.minimum() for c in trial) + _frame_width(trial) <= width
        ):
            chosen.add(i)
    shown = [columns[i] for i in sorted(chosen)]
    hidden = [columns[i] for i in range(len(columns)) if i not in chosen]
    room = width - _frame_width(shown)
    for column in shown:
        column.width = column.minimum()
    spare = room - sum(c.width for c in shown)
    wants = [c.natural() - c.width for c in shown]
    while spare > 0 and any(wants):
        total = sum(wants)
        given = 0
        for column, want in zip(shown, wants, strict=True):
            share = min(want, max(1, spare * want // total)) if want else 0
            share = min(share, spare - given)
            column.width += share
            given += share
        spare -= given
        wants = [c.natural() - c.width for c in shown]
        if given == 0:
            break
    return shown, hidden


def _rich_table(columns: list[Column], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            width=column.width,
            no_wrap=not column.wrap,
            overflow="fold",
        )
    for row in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*(Text(cell) for cell in row))
    return table


def _config_cells(values: pd.Series) -> list[str]:
    return [
        number(v) if isinstance(v, int | float) else "" if v is None else str(v) for v in values
    ]


def _configuration_columns(agg: Aggregated, rows: pd.DataFrame, wide: bool) -> list[Column]:
    """The columns of one dataset's table, each with its priority."""
    rank = ["" if pd.isna(r) else str(int(r)) for r in rows["rank"]]
    columns = [Column("rank", rank, 0, right=True)]
    shown_data = bool(agg.sections.reindex(rows.index).fillna("").any()) and not wide
    for key in agg.group_columns:
        if shown_data and key.startswith("dataset") and rows[key].nunique(dropna=False) <= 1:
            continue  # the section's title names the dataset
        columns.append(Column(key, _config_cells(rows[key]), 0, wrap=True, fold=24))
    columns.append(Column("status", [str(s) for s in rows["status"]], 3))
    columns.append(Column("folds", [str(int(n)) for n in rows["n_folds"]], 5, right=True))
    best = ["" if pd.isna(e) else str(int(e)) for e in rows["best_epoch"]]
    columns.append(Column("best epoch", best, 5, right=True))
    rank_name = agg.rank_metric.split("/", 1)[-1]
    for name in agg.metric_names:
        if name.startswith("train/"):
            continue
        if name == agg.rank_metric:
            priority = 0
        elif name == f"test/{rank_name}":
            priority = 2
        else:
            priority = 4 if name.startswith("val/") else 6
        cells = [
            mean_std(m, s) for m, s in zip(rows[f"{name}_mean"], rows[f"{name}_std"], strict=True)
        ]
        header = f"{name} {direction(agg)}" if name == agg.rank_metric else name
        columns.append(Column(header, cells, priority, right=True))
    diagnosis = [
        f"{d} (partial)" if p else str(d)
        for d, p in zip(rows["diagnosis"], rows["partial"], strict=True)
    ]
    # A short label, never wrapped: a row on one line matters more than a less important column.
    columns.append(Column("diagnosis", diagnosis, 1))
    if wide:
        columns.append(Column("reason", [str(r) for r in rows["reason"]], 7, wrap=True))
    return columns


def _headline(agg: Aggregated, section: str) -> str:
    groups = agg.table.index[(agg.sections.reindex(agg.table.index).fillna("") == section)]
    runs = agg.runs[agg.runs["group"].isin(groups)]
    states = runs["state"].value_counts()
    counts = ", ".join(
        f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    tasks = sorted({t for t in agg.tasks.reindex(groups).fillna("") if t})
    what = f"{section}" + (f" ({', '.join(tasks)})" if tasks else "") if section else ""
    at = "the final epoch" if agg.at == "final" else "each configuration's best epoch"
    n_runs, n_configs = len(runs), len(groups)
    text = (
        f"{n_runs} run{'s' * (n_runs != 1)} ({counts}) in {n_configs} "
        f"configuration{'s' * (n_configs != 1)}, ranked by {agg.rank_metric} "
        f"{direction(agg)} at {at}"
    )
    return f"{what}: {text}" if what else text


def _explain(console: Console, agg: Aggregated, rows: pd.DataFrame) -> None:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for group, row in rows.iterrows():
        rank = "-" if pd.isna(row["rank"]) else str(int(row["rank"]))
        label = agg.labels.get(group, "")
        diagnosis = f"{row['diagnosis']} (partial)" if row["partial"] else str(row["diagnosis"])
        grid.add_row(rank, Text(f"{label}: {diagnosis}. {row['reason']}"))
    console.print(grid)


def to_table(
    agg: Aggregated, width: int | None = None, *, wide: bool = False, explain: bool = False
) -> str:
    """The terminal report as text: at most ``width`` columns wide (``wide``: no limit)."""
    width = WIDE if wide else max(int(width or 100), 40)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, highlight=False, soft_wrap=False)
    shown = agg.shown
    sections = agg.sections.reindex(shown.index).fillna("")
    for section in dict.fromkeys(sections):
        rows = shown[(sections == section).to_numpy()]
        if agg.compare is not None:
            title = f"{agg.compare_key}: each at its best setting"
            title = f"{section}: {title}" if section else title
        else:
            title = _headline(agg, section)
        console.print(Text(title))
        shown_columns, hidden = layout(_configuration_columns(agg, rows, wide), width)
        console.print(_rich_table(shown_columns))
        if hidden:
            names = ", ".join(c.header for c in hidden)
            console.print(
                Text(
                    f"Not shown at {width} columns: {names} "
                    "(--wide shows every column; --format csv every number)"
                )
            )
        if explain:
            _explain(console, agg, rows)
    _print_incomplete(console, agg, width, wide)
    if explain:
        console.print(Text("Diagnosis: " + "; ".join(rules_text(agg.rules))))
    elif not wide:
        console.print(Text("Why each diagnosis: --explain"))
    for note in agg.notes:  # one line each (a terminal wraps it), to be found with grep
        console.print(Text(note), soft_wrap=True)
    return "".join(f"{line.rstrip()}\n" for line in buffer.getvalue().splitlines())


def _print_incomplete(console: Console, agg: Aggregated, width: int, wide: bool) -> None:
    incomplete = incomplete_runs(agg)
    if not len(incomplete):
        return
    priorities = {"run_dir": 0, "state": 0, "error": 1, "folds": 2}
    config = set(agg.group_columns)
    if not wide:  # the table above shows each configuration; here: where and why
        incomplete = incomplete[[c for c in incomplete.columns if c not in config]]
    columns = [
        Column(
            str(name),
            _config_cells(agg.runs.loc[incomplete.index, name])
            if name in config
            else [str(v) for v in incomplete[name]],
            priorities.get(str(name), 3),
            wrap=name != "folds",
            fold=24 if name != "state" else 0,
        )
        for name in incomplete.columns
    ]
    shown, _ = layout(columns, width if not wide else WIDE)
    console.print(Text("Runs that did not complete"))
    console.print(_rich_table(shown))
