"""Render a report as a rich table, markdown, csv, json or one self-contained html file.

csv and json are for machines: every column, separate ``_mean``/``_std``/``_n``, no timestamps and
a stable order, so the same runs always give the same bytes. table, markdown and html are for
people: each metric as ``mean ± std``, the diagnosis with its reason, and the runs that did not
complete. The html file embeds its plots (base64 PNG) and styles: it reads offline.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from mlcli.report.aggregate import Aggregated
from mlcli.report.diagnose import Rules

FORMATS = ("table", "markdown", "csv", "json", "html")
NUMERIC_COLUMNS = ("rank", "folds", "best epoch")


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: NA → None, numpy → Python, floats to 10 significant digits."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if not math.isfinite(number) else float(f"{number:.10g}")
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _plain(v) for k, v in zip(frame.columns, row, strict=True)}
        for row in frame.itertuples(index=False)
    ]


def _decimals(value: float) -> int:
    """4 decimals, 1 for large numbers (an MSE in the thousands)."""
    return 4 if abs(value) < 1000 else 1


def _fmt(value: Any) -> str:
    """A number for people (see :func:`_decimals`); missing values are blank."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.{_decimals(float(value))}f}"
    return str(value)


def _mean_std(mean: float, std: float) -> str:
    """'mean ± std' with both at the mean's precision; the mean alone when std is undefined."""
    if pd.isna(mean):
        return ""
    decimals = _decimals(mean)
    if pd.isna(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def direction(agg: Aggregated) -> str:
    """'↑' when higher is better, else '↓'."""
    return "↓" if agg.ascending else "↑"


def headline(agg: Aggregated) -> str:
    """One line: what was read and how it is ranked."""
    states = agg.runs["state"].value_counts()
    counts = ", ".join(
        f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    at = "the final epoch" if agg.at == "final" else "each configuration's best epoch"
    runs, configurations = len(agg.runs), len(agg.table)
    return (
        f"{runs} run{'s' * (runs != 1)} ({counts}) in {configurations} "
        f"configuration{'s' * (configurations != 1)}, ranked by {agg.rank_metric} "
        f"{direction(agg)} at {at}"
    )


def display_frame(agg: Aggregated) -> pd.DataFrame:
    """The shown rows for people: each metric as 'mean ± std' (val and test metrics)."""
    table = agg.shown
    shown = table[["rank", *agg.group_columns, "status", "n_folds"]].copy()
    shown = shown.rename(columns={"n_folds": "folds"})
    if table["n_params"].notna().any():  # runs of earlier mlcli versions did not record it
        shown["params"] = table["n_params"]
    shown["best epoch"] = table["best_epoch"]  # of the fold-mean val curve of the rank metric
    for name in agg.metric_names:
        if name.startswith("train/"):
            continue
        mean, std = table[f"{name}_mean"], table[f"{name}_std"]
        shown[name] = [_mean_std(m, s) for m, s in zip(mean, std, strict=True)]
    shown["diagnosis"] = [
        f"{d} (partial)" if p else d
        for d, p in zip(table["diagnosis"], table["partial"], strict=True)
    ]
    shown["reason"] = table["reason"]
    for column in agg.group_columns:  # config values as written, not as metrics
        shown[column] = ["" if v is None else str(v) for v in shown[column]]
    return shown.map(_fmt)


def incomplete_runs(agg: Aggregated) -> pd.DataFrame:
    """Every run that is not COMPLETED, with its folds and error."""
    runs = agg.runs[agg.runs["state"] != "COMPLETED"]
    columns = ["run_dir", "state", *[c for c in agg.group_columns if c in runs], "folds", "error"]
    runs = runs.assign(
        **{
            c: ["" if v is None else str(v) for v in runs[c]]
            for c in agg.group_columns
            if c in runs
        },
        folds=[
            f"{d}/{n}" if not pd.isna(n) else str(d)
            for d, n in zip(runs["folds_done"], runs["n_folds"], strict=True)
        ],
    )
    return runs[columns].map(_fmt)


def rules_text(rules: Rules) -> list[str]:
    """The diagnosis rules with the thresholds in force."""
    bias = f"train error > best in the set + {rules.bias_margin:g}"
    if rules.bias_threshold is not None:
        bias += f", or > {rules.bias_threshold:g}"
    rise = (
        "val loss lowest at an epoch before the last, then up by more than "
        f"{rules.overfit_tolerance:.0%}"
    )
    return [
        "train error = 1 − acc (classification) or 1 − R² (regression) at the last epoch; "
        "gap = val error − train error; the first rule that holds is the diagnosis",
        f"diverged: a NaN/infinite loss, or the last train loss over {rules.explode_factor:g}× "
        "the first epoch's",
        f"unstable: {rise} while train loss did not fall, or the last train loss more than "
        f"{rules.unstable_tolerance:.0%} above its lowest",
        f"overfitting: {rise} while train loss keeps falling",
        "optimization issue: a model with more parameters (same dataset) ends with a train loss "
        f"more than {rules.optimization_margin:.0%} above a smaller one's",
        "not converged: train and val loss still falling by more than "
        f"{rules.converge_tolerance:.0%} per epoch over the last epochs",
        f"model bias: {bias} (the best is taken over the configurations of the same dataset)",
        "good fit: none of these",
    ]


def to_csv(agg: Aggregated) -> str:
    """Every column of the shown configurations."""
    return agg.shown.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def to_json(agg: Aggregated) -> str:
    """One document: settings, the configurations, the comparison, every run, notes."""
    document = {
        "rank_metric": agg.rank_metric,
        "higher_is_better": not agg.ascending,
        "at": agg.at,
        "group_by": agg.group_columns,
        "diagnosis_rules": rules_text(agg.rules),
        "configurations": _records(agg.table.head(agg.top) if agg.top else agg.table),
        "compare": None if agg.compare is None else _records(agg.compare),
        "compare_key": agg.compare_key,
        "runs": _records(agg.runs.drop(columns="group")),
        "notes": agg.notes,
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# Inline markup of GitHub-flavoured markdown: table cells, code spans, emphasis, links and
# images, raw HTML and entities, strikethrough, math, headings; a backslash makes each literal.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~$#])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_BLOCK_START = re.compile(r"^([-+=]|\d+[.)])")


def markdown_text(value: Any, line_start: bool = False) -> str:
    """``value`` as literal markdown text: one line, every markup character escaped.

    Config values, overrides, paths and error messages come from other people's files; in a
    table cell or a list item they must show as written, never break the table or add HTML,
    links or images. ``line_start``: the text begins a line (a list item), where ``-``, ``+``,
    ``=`` or ``1.`` would start a block.
    """
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)).strip())
    if line_start:
        text = _BLOCK_START.sub(lambda m: m[1][:-1] + "\\" + m[1][-1], text)  # 1\. \-
    return text


def _markdown_table(frame: pd.DataFrame) -> str:
    lines = [
        "| " + " | ".join(markdown_text(c) for c in frame.columns) + " |",
        "|" + "|".join("---:" if c in NUMERIC_COLUMNS else "---" for c in frame.columns) + "|",
    ]
    lines += ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in frame.values]
    return "\n".join(lines) + "\n"


def to_markdown(agg: Aggregated) -> str:
    """A lab-notebook / pull-request section: headline, table, incomplete runs, notes.

    Every text that is not mlcli's own markup is escaped (:func:`markdown_text`).
    """
    title = (
        f"Comparison of {markdown_text(agg.compare_key)}"
        if agg.compare is not None
        else "Configurations"
    )
    parts = [
        f"### {title}\n",
        f"{markdown_text(headline(agg), line_start=True)}.\n",
        _markdown_table(display_frame(agg)),
    ]
    incomplete = incomplete_runs(agg)
    if len(incomplete):
        parts += ["#### Runs that did not complete\n", _markdown_table(incomplete)]
    parts.append("Diagnosis: " + "; ".join(map(markdown_text, rules_text(agg.rules))) + ".\n")
    parts += [f"- {markdown_text(note, line_start=True)}\n" for note in agg.notes]
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
       color: #1d1d1f; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.good { color: #116611; font-weight: 600; } .bias, .over { color: #b25a00; font-weight: 600; }
.bad { color: #b00020; font-weight: 600; }
figure { display: inline-block; margin: 8px 16px 8px 0; }
figure img { max-width: 100%; border: 1px solid #e0e0e0; }
figcaption { font-size: 12px; color: #555; }
"""


def _html_table(frame: pd.DataFrame, numeric: set[str]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            css = ' class="num"' if column in numeric else ""
            if column == "diagnosis":
                kind = (
                    "good"
                    if str(value).startswith("good")
                    else "bias"
                    if "bias" in str(value)
                    else "over"
                    if "overfit" in str(value)
                    else "bad"
                )
                css = f' class="{kind}"'
            cells.append(f"<td{css}>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _captions(agg: Aggregated, plots: dict[str, bytes]) -> list[tuple[str, str, str]]:
    """(section, caption, file name) for each plot."""
    shown = list(agg.shown.index[agg.shown["rank"].notna()])
    items = []
    curve_number = 0
    for name in plots:
        if name.startswith("compare_"):
            items.append((f"Comparison of {agg.compare_key}", name, name))
        elif name.startswith("curves_"):
            group = shown[curve_number]
            curve_number += 1
            items.append(("Learning curves (fold mean ± 1 std)", agg.labels[group], name))
        elif name == "lr.png":
            items.append(("Learning rate per epoch", "lr at each epoch's last step", name))
        else:
            items.append((f"{agg.rank_metric} vs each swept hyperparameter", name, name))
    return items


def to_html(agg: Aggregated, plots: dict[str, bytes]) -> str:
    """One self-contained page: tables, diagnosis rules, notes and every plot embedded."""
    shown = display_frame(agg)
    numeric = {*NUMERIC_COLUMNS, *[c for c in shown.columns if "/" in str(c)]}
    title = f"Comparison of {agg.compare_key}" if agg.compare is not None else "Configurations"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mlcli report: {html.escape(agg.rank_metric)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>mlcli report</h1>",
        f'<p class="meta">{html.escape(headline(agg))}</p>',
        f"<h2>{html.escape(title)}</h2>",
        _html_table(shown, numeric),
    ]
    incomplete = incomplete_runs(agg)
    if len(incomplete):
        parts += ["<h2>Runs that did not complete</h2>", _html_table(incomplete, {"folds"})]
    section = None
    for heading, caption, name in _captions(agg, plots):
        if heading != section:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
            section = heading
        data = base64.b64encode(plots[name]).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("<h2>How to read the diagnosis</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in rules_text(agg.rules)]
    parts.append("</ul>")
    if agg.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(note)}</li>" for note in agg.notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
