"""Figures of the lab: matplotlib's object API on the Agg canvas (no pyplot, no display), PNGs
without software metadata, so the same runs give the same bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def figure(ncols: int = 1, width: float = 5.0, height: float = 3.6) -> tuple[Any, list[Any]]:
    """A figure with ``ncols`` axes side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100)
    axes = list(fig.subplots(1, ncols, squeeze=False)[0])
    return fig, axes


def save(fig: Any, path: Path, title: str) -> None:
    """Write ``fig`` as a PNG (atomically) with ``title`` above it."""
    import io

    from mlcli.rundir import atomic_write_bytes

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def lines(
    ax: Any,
    x: Sequence[Any],
    series: dict[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
) -> None:
    """One marked line per entry of ``series`` over ``x``."""
    for label, values in series.items():
        ax.plot(list(x), np.asarray(values, dtype=float), marker="o", label=label)
    if log_x:
        ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def bars(ax: Any, labels: Sequence[str], values: Sequence[float], ylabel: str) -> None:
    """A bar per label, its value written on it."""
    positions = np.arange(len(labels))
    heights = np.asarray(values, dtype=float)
    ax.bar(positions, np.nan_to_num(heights), color="#4c72b0")
    ax.set_xticks(positions, list(labels), fontsize=8)
    for p, h in zip(positions, heights, strict=True):
        ax.annotate(f"{h:.3g}", (p, 0 if not np.isfinite(h) else h), ha="center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
