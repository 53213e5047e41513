"""Group runs into configurations, aggregate their folds at the final or best epoch, and rank.

* A **configuration** is a set of runs with equal values of the grouping keys: ``--by`` or, by
  default, every config key whose value differs between the runs found, except seeds (runs that
  differ only in ``seed``/``*.seed`` are replicates, counted in ``n_seeds``), keys that do not
  change results (``outputs_root``, ``progress``, ``allow_targets``, ``device``, ``threads``,
  ``metric``) and sub-keys that the group option already determines (``optim.betas`` or
  ``optim._target_`` when they only change with ``optim``).
* **Only COMPLETED runs enter the numbers.** A configuration without a COMPLETED run but with
  PRUNED runs (trials stopped early by a sweeper) is summarized from their finished folds and
  marked ``partial``; every other state (RUNNING, FAILED, DIVERGED, INTERRUPTED, ...) is listed
  with its state and reason and never enters a mean. A non-finite value in a mean makes the mean
  NaN rather than being skipped.
* **At** ``final``: each (run, fold)'s last epoch. At ``best``: one epoch per configuration, the
  epoch where the fold-mean val curve of the ranking metric is best (earliest on ties): the
  number of epochs a practitioner would pick by early stopping on cross-validation. The val
  numbers at that epoch are slightly optimistic, since the epoch was chosen on them. Test metrics
  are always those of the final model: the test split is evaluated once, after the last epoch.
* **Rank** by ``--metric`` (default: the runs' selection metric), best first, direction inferred
  from the name; complete configurations first, then partial ones, then those without numbers.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from mlcli.config import NON_RESULT_KEYS
from mlcli.report.collect import Collected, ReportError
from mlcli.report.diagnose import Rules, diagnose
from mlcli.results import STATES

SPLIT_ORDER = ("val", "test", "train")
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err")
EXCLUDED_KEYS = (*NON_RESULT_KEYS, "device", "threads", "metric")
CONFIGURATION = "configuration"
"""The one descriptive column used when nothing varies between the runs."""


@dataclass(frozen=True)
class ReportOptions:
    """Everything ``mlcli report`` can be asked (see the CLI's ``--help``)."""

    metric: str | None = None
    by: tuple[str, ...] | None = None
    where: tuple[str, ...] = ()
    at: str = "final"
    top: int | None = None
    compare: str | None = None
    rules: Rules = field(default_factory=Rules)


@dataclass
class Aggregated:
    """The report's content before it is rendered."""

    table: pd.DataFrame
    """One row per configuration, ranked (all of them; ``top`` is applied when rendering)."""
    runs: pd.DataFrame
    """One row per run: run_dir, state, the grouping columns, folds, error, group."""
    curves: pd.DataFrame
    """Fold-mean curves: group, split, metric, epoch, mean, std, n (train and val, lr too)."""
    group_columns: list[str]
    metric_names: list[str]
    rank_metric: str
    ascending: bool
    at: str
    labels: pd.Series
    """Group id → a short label such as ``optim=adam, optim.lr=0.01``."""
    compare: pd.DataFrame | None = None
    compare_key: str | None = None
    top: int | None = None
    rules: Rules = field(default_factory=Rules)
    notes: list[str] = field(default_factory=list)

    @property
    def shown(self) -> pd.DataFrame:
        """The rows to display: the comparison when asked for, else the top-N configurations."""
        if self.compare is not None:
            return self.compare
        return self.table.head(self.top) if self.top else self.table


def higher_is_better(metric: str) -> bool:
    """Direction of a metric from its name: accuracy/R² up, loss/MSE/MAE down."""
    name = metric.split("/")[-1].lower()
    return not any(name == m or name.endswith(m) for m in LOWER_IS_BETTER)


def is_replicate_key(key: str) -> bool:
    """Seeds make replicates of one configuration, not configurations of their own."""
    return key == "seed" or key.endswith(".seed")


def _is_candidate(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return not (
        key.startswith("hydra")
        or key in EXCLUDED_KEYS
        or last == "_partial_"
        or is_replicate_key(key)
    )


def value_key(value: Any) -> str:
    """A canonical text for grouping and sorting (None and NaN are both ``null``)."""
    if isinstance(value, str):  # the common case first: option names, JSON text of lists
        return json.dumps(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return json.dumps(value, sort_keys=True, default=str)


def _keys(configs: pd.DataFrame) -> pd.DataFrame:
    """:func:`value_key` of every config value, computed once per distinct value of a column."""
    keys = {}
    for column in configs.columns:
        values = configs[column]
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        keys[column] = np.asarray([value_key(v) for v in uniques], dtype=object)[codes]
    return pd.DataFrame(keys, index=configs.index, dtype=object)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _check_keys(option: str, wanted: list[str], known: list[str]) -> None:
    for key in wanted:
        if key not in known:
            raise ReportError(
                f"{option} {key}: no run has this config key.{_suggest(key, known)} "
                f"Keys that vary here: {', '.join(known[:12]) or '(none)'}"
            )


def _matches(value: Any, wanted: str) -> bool:
    """Does a config value equal the text of a ``--where`` value (numbers compared as numbers)?"""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return wanted.lower() in ("null", "none", "")
    if isinstance(value, bool):
        return wanted.lower() in (("true", "yes", "1") if value else ("false", "no", "0"))
    if isinstance(value, int | float):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(value) == wanted


def _where_mask(runs: pd.DataFrame, configs: pd.DataFrame, where: tuple[str, ...]) -> pd.Series:
    """Runs that satisfy every ``key=value[,value...]`` (a value list means any of them)."""
    mask = pd.Series(True, index=runs.index)
    known = sorted(configs.columns)
    for item in where:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ReportError(
                f"--where {item}: expected KEY=VALUE (e.g. --where optim=adam, "
                "--where optim.lr=0.01,0.1, --where state=COMPLETED)"
            )
        wanted = [v.strip() for v in values.split(",")]
        if key == "state":
            column = runs["state"]
        else:
            _check_keys("--where", [key], known)
            column = configs[key]
        mask &= column.map(lambda v, w=wanted: any(_matches(v, x) for x in w))
    if not mask.any():
        raise ReportError(f"--where {' '.join(where)}: no run matches")
    return mask


def _auto_columns(runs: pd.DataFrame, keys: pd.DataFrame) -> list[str]:
    """The config keys that vary between the runs, in the order the user's overrides name them.

    Runs whose config was rebuilt from overrides (no readable config.yaml) lack most keys, so
    they do not take part in deciding what varies (unless no run has a config.yaml).
    """
    order: list[str] = []
    for overrides in runs["overrides"]:
        for override in overrides:
            key = override.lstrip("+~").split("=", 1)[0]
            if key in keys.columns and key not in order:
                order.append(key)
    order += [k for k in keys.columns if k not in order]
    complete = runs["config_complete"].to_numpy(dtype=bool)
    judged = keys[complete] if complete.any() else keys
    varying = [k for k in order if _is_candidate(k) and judged[k].nunique() > 1]
    chosen = []
    for key in varying:
        group = key.split(".", 1)[0]
        # optim.betas exists only for adam: the option already says it.
        if key != group and group in varying and judged.groupby(group)[key].nunique().max() <= 1:
            continue
        chosen.append(key)
    return chosen


def _state_counts(states: pd.Series) -> str:
    """'COMPLETED' or e.g. 'COMPLETED×3,FAILED' for a configuration's runs."""
    counts = Counter(states)
    order = [s for s in STATES if s in counts] + sorted(s for s in counts if s not in STATES)
    return ",".join(f"{s}×{counts[s]}" if counts[s] > 1 else s for s in order)


def _not_completed_reason(group_runs: pd.DataFrame) -> tuple[str, str]:
    """(label, reason) of a configuration none of whose runs can be summarized."""
    run = group_runs.iloc[0]
    state = str(run["state"])
    done, total = len(run["folds_completed"]), run["n_folds"]
    progress = f"{done} of {total} folds done" if total else f"{done} folds done"
    reason = run["error"] or {
        "RUNNING": f"running: {progress}",
        "INTERRUPTED": f"interrupted: {progress}",
        "PRUNED": "pruned before any fold finished",
    }.get(state, "no results")
    return state.lower(), reason


def _seed_ids(keys: pd.DataFrame) -> pd.Series:
    columns = [c for c in keys.columns if is_replicate_key(c)]
    if not columns:
        return pd.Series("", index=keys.index)
    return reduce(lambda a, b: a + "|" + b, (keys[c] for c in columns))


def _stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """mean, sample std and n of ``value`` per ``by`` group, sorted by ``by``.

    A non-finite value makes its group's mean and std NaN (never silently skipped). One integer
    key and ``np.bincount`` (two passes, so the std does not cancel) do the work: ~4× faster than
    a pandas groupby on four keys at a million rows.
    """
    codes, levels = [], []
    for column in by:
        code, uniques = pd.factorize(frame[column], sort=True)
        codes.append(code)
        levels.append(np.asarray(uniques))
    shape = tuple(max(len(u), 1) for u in levels)
    key = np.ravel_multi_index(codes, shape) if len(frame) else np.zeros(0, dtype=np.int64)
    space = math.prod(shape)
    if space <= max(4 * len(frame), 1 << 20):
        inverse, bins = key, space  # small key space: count straight into it, no sort
    else:
        unique, inverse = np.unique(key, return_inverse=True)
        bins = len(unique)
    values = frame["value"].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    size = np.bincount(inverse, minlength=bins)
    n = np.bincount(inverse, weights=finite, minlength=bins).astype(np.int64)
    clean = np.where(finite, values, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(inverse, weights=clean, minlength=bins) / n
        deviation = np.where(finite, clean - mean[inverse], 0.0)
        variance = np.bincount(inverse, weights=deviation**2, minlength=bins) / (n - 1)
    std = np.where(n > 1, np.sqrt(variance), np.nan)
    broken = n < size
    mean[broken], std[broken] = np.nan, np.nan
    if bins == space:
        unique = np.flatnonzero(size)
        size, n, mean, std = size[unique], n[unique], mean[unique], std[unique]
    positions = np.unravel_index(unique, shape)
    stats = pd.DataFrame({c: level[i] for c, level, i in zip(by, levels, positions, strict=True)})
    for column in ("split", "metric"):
        if column in stats:
            stats[column] = stats[column].astype(str)
    stats["mean"], stats["std"], stats["n"] = mean, std, n
    return stats


def aggregate(collected: Collected, options: ReportOptions) -> Aggregated:
    """Group, aggregate, diagnose and rank (see the module docstring for the rules)."""
    notes = list(collected.notes)
    all_runs = collected.runs
    configs = pd.DataFrame.from_records(all_runs["config"].tolist(), index=all_runs.index)
    mask = _where_mask(all_runs, configs, options.where)
    runs, configs = all_runs[mask].copy(), configs[mask]
    configs = configs.dropna(axis=1, how="all")
    keys = _keys(configs)

    if options.by:
        columns = list(dict.fromkeys(options.by))
        _check_keys("--by", columns, sorted(keys.columns))
    else:
        columns = _auto_columns(runs, keys)
    if options.compare:
        _check_keys("--compare", [options.compare], sorted(keys.columns))
        if keys[options.compare].nunique() < 2:
            value = configs[options.compare].iloc[0]
            raise ReportError(
                f"--compare {options.compare}: every run has {options.compare}={value}; "
                "nothing to compare (check the paths or --where)"
            )
        if options.compare not in columns:
            columns.insert(0, options.compare)

    # One group id per configuration, numbered in the sorted order of its keys.
    if columns:
        runs["group"] = keys[columns].groupby(columns, sort=True).ngroup().astype(int)
    else:
        runs["group"] = 0
    n_groups = int(runs["group"].max()) + 1
    first = runs.groupby("group").head(1).set_index("group").sort_index()
    table = pd.DataFrame(index=pd.RangeIndex(n_groups, name="group"))
    if columns:
        for column in columns:
            table[column] = (
                configs[column].groupby(runs["group"]).first().reindex(table.index).astype(object)
            )
            table[column] = [
                None if isinstance(v, float) and math.isnan(v) else v for v in table[column]
            ]
    else:
        shown = [
            o for o in first["overrides"].iloc[0] if _is_candidate(o.lstrip("+~").split("=")[0])
        ]
        table[CONFIGURATION] = " ".join(shown) or "(defaults)"
    display_columns = columns or [CONFIGURATION]
    labels = pd.Series(
        [
            ", ".join(
                f"{c}={v}" for c, v in zip(display_columns, row, strict=True) if v is not None
            )
            if columns
            else str(row[0])
            for row in table[display_columns].itertuples(index=False)
        ],
        index=table.index,
    )
    table["status"] = runs.groupby("group")["state"].agg(_state_counts)
    table["n_runs"] = runs.groupby("group").size()

    # Which runs enter the numbers: COMPLETED ones; PRUNED ones (finished folds) only where
    # the configuration has no COMPLETED run, and then the row is marked partial.
    completed = runs["state"] == "COMPLETED"
    has_completed = completed.groupby(runs["group"]).transform("any")
    pruned = (runs["state"] == "PRUNED") & ~has_completed
    included = runs.index[completed | pruned]
    group_of_run = np.full(len(all_runs), -1, dtype=np.int64)
    group_of_run[runs.index.to_numpy()] = runs["group"].to_numpy()
    results = collected.results
    keep = np.isin(results["run"].to_numpy(), included.to_numpy())
    rows = results if keep.all() else results[keep]  # no copy of a million rows when not needed
    if pruned.any():
        pruned_folds = runs.loc[pruned, "folds_completed"]
        finished = {
            int(run) * 1_000_000 + int(fold)
            for run, folds in zip(pruned_folds.index.to_numpy(), pruned_folds, strict=True)
            for fold in folds
        }
        is_pruned = np.isin(rows["run"].to_numpy(), runs.index[pruned].to_numpy())
        pair = rows["run"].to_numpy(np.int64) * 1_000_000 + rows["fold"].to_numpy(np.int64)
        rows = rows[~is_pruned | np.isin(pair, list(finished))]
    row_group = group_of_run[rows["run"].to_numpy()]
    table["partial"] = pruned.groupby(runs["group"]).any()
    seeds = _seed_ids(keys)
    table["n_seeds"] = (
        seeds[runs.index.isin(rows["run"].unique())]
        .groupby(runs["group"])
        .nunique()
        .reindex(table.index, fill_value=0)
    )

    # Fold-mean curves (train and val, lr included) for the best epoch, diagnosis and plots.
    is_curve = rows["split"].isin(("train", "val")).to_numpy()
    curve_rows = rows[is_curve]
    curve_rows.insert(len(curve_rows.columns), "group", row_group[is_curve])
    curves = _stats(curve_rows, ["group", "split", "metric", "epoch"])
    test_rows = rows[(rows["split"] == "test").to_numpy()]
    test_rows.insert(len(test_rows.columns), "group", group_of_run[test_rows["run"].to_numpy()])
    recorded = {(str(s), str(m)) for s, m in curves[["split", "metric"]].drop_duplicates().values}
    recorded |= {
        (str(s), str(m)) for s, m in test_rows[["split", "metric"]].drop_duplicates().values
    }
    names = sorted(
        {f"{s}/{m}" for s, m in recorded} - {"train/lr"},
        key=lambda n: (SPLIT_ORDER.index(n.split("/")[0]) if n.split("/")[0] in SPLIT_ORDER
                       else len(SPLIT_ORDER), n),
    )  # fmt: skip
    rank_metric = _rank_metric(options.metric, runs, names)
    ascending = not higher_is_better(rank_metric)

    val_name = rank_metric.split("/", 1)[1]
    val_curve = curves[(curves["split"] == "val") & (curves["metric"] == val_name)]
    val_curve = val_curve.dropna(subset=["mean"]).sort_values(["group", "epoch"])
    pick = val_curve.groupby("group")["mean"]
    best_index = pick.idxmin() if ascending else pick.idxmax()  # first occurrence: earliest epoch
    best_epoch = val_curve.loc[best_index.to_numpy(), ["group", "epoch"]].set_index("group")
    table["best_epoch"] = best_epoch["epoch"].reindex(table.index).astype("Int64")

    run_fold = curve_rows["run"].to_numpy(np.int64) * 1_000_000 + curve_rows["fold"].to_numpy()
    last_epoch = curve_rows["epoch"].groupby(run_fold).transform("max")
    if options.at == "best":
        wanted = table["best_epoch"].reindex(curve_rows["group"]).to_numpy(dtype=np.float64)
        wanted = np.where(np.isnan(wanted), last_epoch.to_numpy(), wanted)
        chosen = curve_rows[curve_rows["epoch"].to_numpy() == wanted]
        notes.append(
            f"--at best: each configuration at the epoch where its fold-mean val {val_name} is "
            "best; test metrics are of the final model (the test split is evaluated once, after "
            "the last epoch)"
        )
    else:
        chosen = curve_rows[curve_rows["epoch"].to_numpy() == last_epoch.to_numpy()]
    table["n_folds"] = (
        chosen[["group", "run", "fold"]]
        .drop_duplicates()
        .groupby("group")
        .size()
        .reindex(table.index, fill_value=0)
    )
    at_rows = pd.concat([chosen, test_rows])
    stats = _stats(at_rows[at_rows["metric"] != "lr"], ["group", "split", "metric"])
    stats["name"] = stats["split"] + "/" + stats["metric"]
    for name in names:
        one = stats[stats["name"] == name].set_index("group")
        for stat in ("mean", "std", "n"):
            values = one[stat].reindex(table.index)
            table[f"{name}_{stat}"] = values.astype("Int64") if stat == "n" else values
        table[f"{name}_n"] = table[f"{name}_n"].fillna(0)
    if stats[["mean"]].isna().any().any():
        notes.append("a non-finite value in a COMPLETED run makes its configuration's mean NaN")

    # Diagnosis from the fold-mean curves; configurations without numbers say why.
    cohort = None
    if "dataset" in configs.columns:
        datasets = configs["dataset"].astype(str).groupby(runs["group"])
        cohort = datasets.agg(lambda s: s.iloc[0] if s.nunique() == 1 else "mixed")
    verdicts = diagnose(curves.rename(columns={"group": "config"}), options.rules, cohort)
    verdicts = verdicts.reindex(table.index)
    for group in table.index[verdicts["diagnosis"].isna()]:
        label, reason = _not_completed_reason(runs[runs["group"] == group])
        verdicts.loc[group, ["diagnosis", "reason"]] = [label, reason]
    table["diagnosis"] = verdicts["diagnosis"]
    table["train_error"] = verdicts["train_error"].astype(float)
    table["gap"] = verdicts["gap"].astype(float)
    table["reason"] = verdicts["reason"]

    table = _rank(table, keys, runs, columns, rank_metric, ascending)
    metric_columns = [f"{n}_{s}" for n in names for s in ("mean", "std", "n")]
    ordered = [
        "rank", *display_columns, "status", "n_runs", "n_seeds", "n_folds", "partial",
        "best_epoch", "diagnosis", "train_error", "gap", *metric_columns, "reason",
    ]  # fmt: skip
    table = table[ordered]

    compare = None
    if options.compare:
        within = [c for c in ("dataset",) if c in columns and c != options.compare]
        compare_keys = table[[*within, options.compare]].map(value_key)
        compare = table[~compare_keys.duplicated()]
    run_table = runs[["run_dir", "state"]].copy()
    replicates = [c for c in configs.columns if is_replicate_key(c) and c not in columns]
    for column in [*columns, *replicates]:
        run_table[column] = [
            None if isinstance(v, float) and math.isnan(v) else v for v in configs[column]
        ]
    run_table["folds_done"] = runs["folds_completed"].map(len)
    run_table["n_folds"] = runs["n_folds"].astype("Int64")
    run_table["error"] = runs["error"]
    run_table["group"] = runs["group"]
    if not completed.all():
        counts = _state_counts(runs["state"])
        notes.append(f"runs by state: {counts}; only COMPLETED runs enter the means")
    return Aggregated(
        table=table,
        runs=run_table.reset_index(drop=True),
        curves=curves,
        group_columns=display_columns,
        metric_names=names,
        rank_metric=rank_metric,
        ascending=ascending,
        at=options.at,
        labels=labels,
        compare=compare,
        compare_key=options.compare,
        top=options.top,
        rules=options.rules,
        notes=notes,
    )


def _rank_metric(wanted: str | None, runs: pd.DataFrame, names: list[str]) -> str:
    """The ranking metric: ``--metric`` (``acc`` means ``val/acc``) or the runs' own."""
    if wanted:
        metric = wanted if "/" in wanted else f"val/{wanted}"
    else:
        recorded = Counter(runs["metric"].dropna())
        metric = recorded.most_common(1)[0][0] if recorded else ""
        if not metric:
            metric = next((n for n in ("val/acc", "val/r2") if n in names), "val/loss")
    if names and metric not in names:
        raise ReportError(
            f"--metric {wanted or metric}: not recorded by these runs; choose one of "
            f"{', '.join(names)}"
        )
    return metric


def _rank(
    table: pd.DataFrame,
    keys: pd.DataFrame,
    runs: pd.DataFrame,
    columns: list[str],
    rank_metric: str,
    ascending: bool,
) -> pd.DataFrame:
    """Sort best first (complete, then partial, then without numbers); ties by config keys."""
    value = table.get(f"{rank_metric}_mean", pd.Series(np.nan, index=table.index))
    has_value = value.notna().to_numpy()
    partial = table["partial"].to_numpy(dtype=bool)
    tier = np.where(has_value & ~partial, 0, np.where(has_value, 1, 2))
    helper = pd.DataFrame(
        {"_tier": tier, "_value": value if ascending else -value}, index=table.index
    )
    for i, column in enumerate(columns):
        helper[f"_key{i}"] = keys[column].groupby(runs["group"]).first().reindex(table.index)
    order = helper.sort_values(list(helper.columns), kind="mergesort").index
    ranked = table.loc[order]
    ranks = pd.array(np.arange(1, len(ranked) + 1), dtype="Int64")
    ranks[tier[order.to_numpy()] == 2] = pd.NA
    ranked.insert(0, "rank", pd.Series(ranks, index=ranked.index))
    return ranked
