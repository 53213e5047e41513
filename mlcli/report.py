"""``mlcli report``: collect run dirs into long-form frames, aggregate per configuration, rank.

Reading is columnar (pyarrow) and aggregation vectorized (pandas groupby). Only COMPLETED runs
enter a mean; a configuration whose runs are all FAILED/RUNNING/... is still listed, with its state
and no numbers.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlcli.config import NON_RESULT_KEYS
from mlcli.results import CONFIG_FILE, RESULTS_FILE, STATUS_FILE

LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err")
SHOWN_SPLITS = ("val", "test")


def _state_counts(states: pd.Series) -> str:
    """'COMPLETED' or e.g. 'COMPLETED×3,FAILED' for a configuration's runs."""
    counts = Counter(states)
    return ",".join(f"{k}×{v}" if v > 1 else str(k) for k, v in counts.items())


class ReportError(ValueError):
    """Nothing to report, or a report option that does not fit the runs found."""


@dataclass
class ReportMeta:
    """What the frame's columns mean, for rendering."""

    config_columns: list[str]
    metric_columns: list[str]
    rank_metric: str
    ascending: bool
    n_runs: int
    notes: list[str] = field(default_factory=list)


def higher_is_better(metric: str) -> bool:
    """Direction of a metric from its name: accuracy/R² up, loss/MSE/MAE down."""
    name = metric.split("/")[-1].lower()
    return not any(name == m or name.endswith(m) for m in LOWER_IS_BETTER)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = json.dumps(node) if isinstance(node, list) else node
    return out


def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Every directory below ``roots`` that holds a ``status.json`` (sorted, de-duplicated)."""
    found: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise ReportError(f"{root}: no such file or directory")
        if (root / STATUS_FILE).is_file():
            found.add(root.resolve())
        found.update(p.parent.resolve() for p in root.rglob(STATUS_FILE))
    return sorted(found)


def collect(roots: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every run dir below ``roots``: (runs table, long-form results).

    A run being written while it is read is fine: every file is replaced atomically, and a run
    whose files are not all there yet is listed with the state its status says.
    """
    import pyarrow.parquet as pq

    runs: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    for run_dir in find_run_dirs(roots):
        try:
            status = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
            config = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError):
            continue  # a run dir still being created
        row = {
            "run_dir": str(run_dir),
            "run_key": status.get("run_key"),
            "state": status.get("state"),
            "metric_cfg": status.get("metric", config.get("metric")),
            "overrides": status.get("overrides", []),
        }
        flat = _flatten(config)
        flat.update({group: option for group, option in status.get("choices", {}).items()})
        row["config"] = flat
        runs.append(row)
        results_path = run_dir / RESULTS_FILE
        if results_path.is_file():
            frame = pq.read_table(results_path).to_pandas()
            frame["run_dir"] = str(run_dir)
            frames.append(frame)
    if not runs:
        raise ReportError(
            f"no runs found below {', '.join(map(str, roots))} (a run dir holds status.json); "
            "run `mlcli train` first or pass the sweep dir"
        )
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return pd.DataFrame(runs), results


def _config_columns(runs: pd.DataFrame, by: list[str] | None) -> list[str]:
    if by:
        missing = [k for k in by if not any(k in cfg for cfg in runs["config"])]
        if missing:
            raise ReportError(f"--by {','.join(missing)}: no run has such a config key")
        return by
    keys: list[str] = []
    for overrides in runs["overrides"]:
        for override in overrides:
            key = override.lstrip("+~").split("=", 1)[0]
            if not key.startswith("hydra") and key not in NON_RESULT_KEYS and key not in keys:
                keys.append(key)
    varying = [k for k in keys if runs["config"].map(lambda c, k=k: str(c.get(k))).nunique() > 1]
    return varying or keys


def build_report(
    roots: list[Path], metric: str | None = None, by: list[str] | None = None
) -> tuple[pd.DataFrame, ReportMeta]:
    """One row per configuration: fold mean ± std of the final-epoch metrics, ranked."""
    runs, results = collect(roots)
    columns = _config_columns(runs, by)
    for column in columns:
        runs[column] = runs["config"].map(lambda c, k=column: c.get(k))
    rank_metric = metric or Counter(runs["metric_cfg"].dropna()).most_common(1)[0][0]

    group_columns = columns or ["run_key"]
    runs[group_columns] = runs[group_columns].astype(str)
    completed = runs.loc[runs["state"] == "COMPLETED", "run_dir"]
    frame = (
        runs.groupby(group_columns)
        .agg(status=("state", _state_counts), n_runs=("run_dir", "size"))
        .reset_index()
    )
    if not results.empty:
        # Final epoch of each (run, fold), completed runs only, val/test splits.
        final = results[results["run_dir"].isin(completed) & results["split"].isin(SHOWN_SPLITS)]
        last_epoch = final.groupby(["run_dir", "fold"])["epoch"].transform("max")
        final = final[final["epoch"] == last_epoch]
        final = final.assign(name=final["split"] + "/" + final["metric"]).merge(
            runs[["run_dir", *group_columns]], on="run_dir"
        )
        stats = final.pivot_table(
            index=group_columns, columns="name", values="value", aggfunc=["mean", "std"]
        )
        stats.columns = [f"{pair[1]}_{pair[0]}" for pair in stats.columns.to_flat_index()]
        n_folds = final.groupby(group_columns)[["run_dir", "fold"]].apply(
            lambda f: len(f.drop_duplicates())
        )
        stats["n_folds"] = n_folds
        frame = frame.merge(stats.reset_index(), how="left", on=group_columns)
    frame["n_folds"] = frame.get("n_folds", pd.Series(0, index=frame.index)).fillna(0).astype(int)

    metric_names = sorted(
        {c.rsplit("_", 1)[0] for c in frame.columns if c.endswith("_mean")},
        key=lambda n: (SHOWN_SPLITS.index(n.split("/")[0]), n),
    )
    ascending = not higher_is_better(rank_metric)
    notes: list[str] = []
    if f"{rank_metric}_mean" in frame.columns:
        frame = frame.sort_values(f"{rank_metric}_mean", ascending=ascending, na_position="last")
    elif metric_names:
        raise ReportError(
            f"--metric {rank_metric}: not recorded by these runs; choose one of "
            f"{', '.join(metric_names)}"
        )
    frame = frame.reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    ordered = ["rank", *group_columns, "status", "n_runs", "n_folds"]
    ordered += [f"{n}_{s}" for n in metric_names for s in ("mean", "std")]
    meta = ReportMeta(group_columns, metric_names, rank_metric, ascending, len(runs), notes)
    return frame[ordered], meta


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def display_frame(frame: pd.DataFrame, meta: ReportMeta) -> pd.DataFrame:
    """The frame with each metric as one 'mean ± std' text column (for table/markdown)."""
    shown = frame[["rank", *meta.config_columns, "status", "n_folds"]].copy()
    for name in meta.metric_columns:
        mean, std = frame[f"{name}_mean"], frame[f"{name}_std"].fillna(0.0)
        shown[name] = [
            "" if pd.isna(m) else f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std, strict=True)
        ]
    return shown


def render(frame: pd.DataFrame, meta: ReportMeta, fmt: str) -> None:
    """Print the report in ``fmt`` (table | csv | markdown | json) to stdout."""
    if fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False, float_format="%.6g"))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=2, double_precision=10) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(_markdown(display_frame(frame, meta)))
    else:
        from rich.console import Console
        from rich.table import Table

        direction = "↓" if meta.ascending else "↑"
        table = Table(title=f"{meta.n_runs} runs, ranked by {meta.rank_metric} {direction}")
        shown = display_frame(frame, meta)
        for column in shown.columns:
            table.add_column(str(column), justify="right" if column != "status" else "left")
        for row in shown.itertuples(index=False):
            table.add_row(*("" if pd.isna(v) else str(v) for v in row))
        Console(width=None if sys.stdout.isatty() else 200).print(table)
