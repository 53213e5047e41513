"""Plots of a report, as PNG bytes: learning curves, lr schedules, metric vs each hyperparameter.

Drawn with matplotlib's object API on the Agg canvas (``matplotlib.figure.Figure``): no pyplot,
no display, no global backend switch, so it works headless and leaves a user's matplotlib state
alone. PNGs carry no software/version metadata, so the same report gives the same bytes.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from mlcli.report.aggregate import CONFIGURATION, Aggregated

MAX_CURVES = 12
"""Learning-curve figures are drawn for at most this many configurations (the best ranked)."""
TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#d62728"
LINE_STYLES = ("-", "--", "-.", ":")  # schedules often coincide: keep each line visible


def _figure(width: float, height: float, ncols: int = 1, bottom: float = 0.16) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # Fixed margins: an automatic layout engine measures every text several times (2× slower).
    figure = Figure(figsize=(width, height), dpi=100)
    figure.subplots_adjust(
        left=0.7 / width, right=1 - 0.15 / width, bottom=bottom, top=0.86, wspace=0.28
    )
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, axes


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _curve(curves: pd.DataFrame, group: int, split: str, metric: str) -> pd.DataFrame:
    chosen = curves[
        (curves["group"] == group) & (curves["split"] == split) & (curves["metric"] == metric)
    ]
    return chosen.sort_values("epoch")


def _band(axis: Any, curve: pd.DataFrame, color: str, label: str, style: str = "-") -> None:
    """The fold mean as a line, ± one std over folds as a shaded band."""
    if curve.empty:
        return
    epochs, mean = curve["epoch"].to_numpy(), curve["mean"].to_numpy(dtype=float)
    std = curve["std"].fillna(0.0).to_numpy(dtype=float)
    axis.plot(epochs, mean, style, color=color, label=label, linewidth=1.6)
    axis.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)


def _metric_names(agg: Aggregated) -> list[str]:
    """The metrics a learning-curve figure shows: the loss, and the ranking metric if different."""
    rank_name = agg.rank_metric.split("/", 1)[1]
    return ["loss"] + ([rank_name] if rank_name != "loss" else [])


def learning_curves(agg: Aggregated, group: int) -> bytes:
    """Train vs val per epoch for one configuration (fold mean, band ± 1 std over folds)."""
    names = _metric_names(agg)
    figure, axes = _figure(4.2 * len(names), 3.2, len(names))
    row = agg.table.loc[group]
    for axis, name in zip(axes, names, strict=True):
        _band(axis, _curve(agg.curves, group, "train", name), TRAIN_COLOR, "train")
        _band(axis, _curve(agg.curves, group, "val", name), VAL_COLOR, "val")
        if name == agg.rank_metric.split("/", 1)[1] and not pd.isna(row["best_epoch"]):
            axis.axvline(int(row["best_epoch"]), color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    rank: str = "" if pd.isna(row["rank"]) else f"#{int(row['rank'])}  "
    figure.suptitle(f"{rank}{agg.labels[group]}  [{row['diagnosis']}]", fontsize=10)
    return _png(figure)


def compare_curves(agg: Aggregated) -> bytes:
    """The compared configurations' val (solid) and train (dashed) curves on shared axes."""
    assert agg.compare is not None
    names = _metric_names(agg)
    figure, axes = _figure(5.2 * len(names), 3.6, len(names))
    colors = [f"C{i % 10}" for i in range(len(agg.compare))]
    for axis, name in zip(axes, names, strict=True):
        for color, group in zip(colors, agg.compare.index, strict=True):
            label = agg.labels[group]
            _band(axis, _curve(agg.curves, group, "val", name), color, f"{label} (val)")
            _band(axis, _curve(agg.curves, group, "train", name), color, "_", style="--")
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(
        f"{agg.compare_key}: each at its best setting (val solid, train dashed)", fontsize=10
    )
    return _png(figure)


def lr_schedules(agg: Aggregated, groups: list[int]) -> bytes | None:
    """The learning rate the last step of each epoch used, per configuration."""
    figure, (axis,) = _figure(6.4, 3.4)
    drawn: list[float] = []
    for i, group in enumerate(groups):
        curve = _curve(agg.curves, group, "train", "lr")
        if not curve.empty:
            axis.plot(
                curve["epoch"], curve["mean"], color=f"C{i % 10}", label=agg.labels[group],
                linestyle=LINE_STYLES[i % len(LINE_STYLES)], linewidth=2.2 - 0.1 * i,
            )  # fmt: skip
            drawn.extend(curve["mean"].to_numpy(dtype=float))
    if not drawn:
        return None
    positive = [v for v in drawn if v > 0]
    if positive and max(positive) / min(positive) >= 10:
        axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("learning rate")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    axis.set_title("lr schedule (value at each epoch's last step)", fontsize=10)
    return _png(figure)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def metric_vs(agg: Aggregated, column: str) -> bytes | None:
    """The ranking metric (fold mean ± std) against one swept hyperparameter."""
    mean_column, std_column = f"{agg.rank_metric}_mean", f"{agg.rank_metric}_std"
    if mean_column not in agg.table:
        return None
    table = agg.table[agg.table[mean_column].notna() & ~agg.table["partial"]]
    values = [v for v in table[column] if v is not None]
    if len(set(map(str, values))) < 2:
        return None
    numeric = all(_is_number(v) for v in values)
    if numeric:
        position = {v: float(v) for v in values}
    else:
        ordered = sorted(set(map(str, values)))
        position = {v: float(ordered.index(str(v))) for v in values}
    others = [c for c in agg.group_columns if c != column and 1 < table[c].map(str).nunique() <= 8]
    hue = others[0] if others else None
    figure, (axis,) = _figure(5.6, 3.6, bottom=0.2)
    series = table.groupby(table[hue].map(str), sort=True) if hue else [("", table)]
    for i, (name, part) in enumerate(series):
        part = part[part[column].map(lambda v: v is not None)]
        x = np.array([position[v] for v in part[column]])
        order = np.argsort(x, kind="stable")
        y = part[mean_column].to_numpy(dtype=float)[order]
        err = part[std_column].fillna(0.0).to_numpy(dtype=float)[order]
        label = f"{hue}={name}" if hue else None
        axis.errorbar(
            x[order], y, yerr=err, marker="o", capsize=3, color=f"C{i % 10}", label=label,
            linestyle="-" if hue else "none",
        )  # fmt: skip
    if numeric:
        low, high = min(position.values()), max(position.values())
        if low > 0 and high / low >= 10:
            axis.set_xscale("log")
    else:
        axis.set_xticks(range(len(ordered)), ordered, rotation=20)
        axis.set_xlim(-0.5, len(ordered) - 0.5)
    axis.set_xlabel(column)
    axis.set_ylabel(f"{agg.rank_metric} ({agg.at})")
    axis.grid(alpha=0.3)
    if hue:
        axis.legend(fontsize=8)
    axis.set_title(f"{agg.rank_metric} vs {column} (fold mean ± std)", fontsize=10)
    return _png(figure)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)


def render_plots(agg: Aggregated, max_curves: int = MAX_CURVES) -> dict[str, bytes]:
    """Every figure of the report, in display order: file name → PNG bytes."""
    plots: dict[str, bytes] = {}
    if agg.compare is not None:
        plots[f"compare_{_file_name(agg.compare_key or '')}.png"] = compare_curves(agg)
    shown = agg.shown
    groups = list(shown.index[shown["rank"].notna()])[:max_curves]
    width = max(2, math.ceil(math.log10(len(groups) + 1)))
    for position, group in enumerate(groups, start=1):
        plots[f"curves_{position:0{width}d}.png"] = learning_curves(agg, group)
    lr = lr_schedules(agg, groups)
    if lr is not None:
        plots["lr.png"] = lr
    for column in agg.group_columns:
        if column == CONFIGURATION:
            continue
        png = metric_vs(agg, column)
        if png is not None:
            name = _file_name(f"{agg.rank_metric.replace('/', '_')}_vs_{column}")
            plots[f"{name}.png"] = png
    return plots
