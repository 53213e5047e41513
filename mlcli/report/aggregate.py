"""Group runs into configurations, aggregate their folds at the final or best epoch, and rank.

* A **configuration** is a set of runs with equal values of the grouping keys (``--by``, or the
  config keys that vary between the runs: see :mod:`mlcli.report.configs`); runs that differ
  only in their seeds are its replicates (``n_seeds``).
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
  from the name; complete configurations first, then partial ones, then those whose numbers come
  from some of their runs because others DIVERGED (a mean over the survivors must not rank a
  configuration that diverges above one that never does), then those without numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd

from mlcli.config import did_you_mean
from mlcli.report.collect import Collected, ReportError
from mlcli.report.configs import (
    auto_columns,
    check_keys,
    config_keys,
    is_candidate,
    is_replicate_key,
    seed_ids,
    value_key,
    where_mask,
)
from mlcli.report.diagnose import FAILED_LABELS, Rules, diagnose
from mlcli.rundir import STATES
from mlcli.tasks import higher_is_better

SPLIT_ORDER = ("val", "test", "final", "train")
CONFIGURATION = "configuration"
"""The one descriptive column used when nothing varies between the runs."""
DATASET_KEYS = ("dataset", "dataset.path", "dataset.test_path", "dataset.target", "dataset.task")
"""Config keys that make runs of different data: a configuration never pools them, and each
dataset is ranked (and shown) on its own."""


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
    sections: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))
    """Group id → its dataset (``dataset=wine``; ``""`` when the runs are of one dataset):
    each is ranked on its own and shown as a table of its own."""
    tasks: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))
    """Group id → the task its runs recorded (classification, regression ...; ``""``)."""

    @property
    def shown(self) -> pd.DataFrame:
        """The rows to display: the comparison when asked for, else the top-N configurations."""
        if self.compare is not None:
            return self.compare
        if not self.top:
            return self.table
        if self.sections.empty:
            return self.table.head(self.top)
        return self.table.groupby(self.sections.reindex(self.table.index), sort=False).head(
            self.top
        )  # the N best of each dataset


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


def _included_rows(runs: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The result rows that enter the numbers, and which runs count as partial (PRUNED).

    COMPLETED runs count; PRUNED runs (their finished folds only) count where the configuration
    has no COMPLETED run, and then it is marked partial; no other state ever counts.
    """
    completed = runs["state"] == "COMPLETED"
    has_completed = completed.groupby(runs["group"]).transform("any")
    pruned = (runs["state"] == "PRUNED") & ~has_completed
    included = runs.index[completed | pruned]
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
    return rows, pruned


def _metric_order(name: str) -> tuple[int, str]:
    """val metrics first, then test, then train; by name within a split."""
    split = name.split("/", 1)[0]
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), name)


def aggregate(collected: Collected, options: ReportOptions) -> Aggregated:
    """Group, aggregate, diagnose and rank (see the module docstring for the rules)."""
    notes = list(collected.notes)
    all_runs = collected.runs
    runs, configs, keys, columns, data_columns = _configurations(all_runs, options, notes)
    table, labels, display_columns = _table(runs, configs, columns)
    data_shown, sections, tasks = _sections(table, runs, data_columns, columns)

    # The result rows that enter the numbers, and each row's configuration.
    rows, pruned = _included_rows(runs, collected.results)
    group_of_run = np.full(len(all_runs), -1, dtype=np.int64)
    group_of_run[runs.index.to_numpy()] = runs["group"].to_numpy()
    row_group = group_of_run[rows["run"].to_numpy()]
    table["partial"] = pruned.groupby(runs["group"]).any()
    seeds = seed_ids(keys)
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
    test_rows = rows[rows["split"].isin(("test", "final")).to_numpy()]  # final: fold -1
    test_rows.insert(len(test_rows.columns), "group", group_of_run[test_rows["run"].to_numpy()])
    names = _metric_names(curves, test_rows)
    rank_metric = _rank_metric(options.metric, runs, names)
    ascending = not higher_is_better(rank_metric)
    best = _stopped_best(runs, rank_metric, _best_epochs(curves, rank_metric, ascending))
    table["best_epoch"] = best.reindex(table.index).astype("Int64")
    fold_best = _fold_stops(runs, rank_metric)
    _fold_means(table, curve_rows, test_rows, names, rank_metric, options.at, notes, fold_best)

    # Diagnosis from the fold-mean curves; configurations without numbers say why.
    table["n_params"] = _n_params(runs).reindex(table.index).astype("Int64")
    # The training errors compared by the bias rule are those of the same dataset.
    _diagnosis(table, runs, curves, options.rules, sections if data_shown else None)
    diverged = _diverged(table, runs, rank_metric, notes)
    table = _rank(table, keys, runs, columns, rank_metric, ascending, diverged, sections)
    metric_columns = [f"{n}_{s}" for n in names for s in ("mean", "std", "n")]
    ordered = [
        "rank", *display_columns, "status", "n_runs", "n_seeds", "n_folds", "n_params", "partial",
        "best_epoch", "diagnosis", "train_error", "gap", *metric_columns, "reason",
    ]  # fmt: skip
    table = table[ordered]

    compare = None
    if options.compare:
        within = [c for c in data_shown if c != options.compare]
        compare_keys = table[[*within, options.compare]].map(value_key)
        compare = table[~compare_keys.duplicated()]
    if not (runs["state"] == "COMPLETED").all():
        counts = _state_counts(runs["state"])
        notes.append(f"runs by state: {counts}; only COMPLETED runs enter the means")
    return Aggregated(
        table=table,
        runs=_run_table(runs, configs, columns),
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
        sections=sections,
        tasks=tasks,
    )


def _configurations(
    all_runs: pd.DataFrame, options: ReportOptions, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """The runs ``--where`` keeps (with a ``group`` column: their configuration's id, numbered
    in the sorted order of its keys), their flattened configs, their config keys, the columns
    that define a configuration (``--by``, or those that vary; the dataset's always, since a
    configuration never pools datasets) and the dataset columns (:func:`_data_columns`)."""
    configs = pd.DataFrame.from_records(all_runs["config"].tolist(), index=all_runs.index)
    mask = where_mask(all_runs, configs, options.where)
    runs, configs = all_runs[mask].copy(), configs[mask]
    configs = configs.dropna(axis=1, how="all")
    keys = config_keys(configs)
    complete = runs["config_complete"].to_numpy(dtype=bool)
    data_columns = _data_columns(keys[complete] if complete.any() else keys)
    if options.by:
        columns = list(dict.fromkeys(options.by))
        check_keys("--by", columns, sorted(keys.columns))
        added = [c for c in data_columns if c not in columns]
        if added:
            columns = added + columns
            found = sorted({str(v) for v in configs[added[0]].dropna()})
            notes.append(
                f"--by {','.join(options.by)}: the runs are of {len(found)} datasets "
                f"({', '.join(found[:6])}{', ...' if len(found) > 6 else ''}); grouped by "
                f"{', '.join(added)} too, since a configuration never pools datasets"
            )
    else:
        columns = auto_columns(runs, keys)
        columns = [c for c in data_columns if c not in columns] + columns
    if options.compare:
        check_keys("--compare", [options.compare], sorted(keys.columns))
        if keys[options.compare].nunique() < 2:
            value = configs[options.compare].iloc[0]
            raise ReportError(
                f"--compare {options.compare}: every run has {options.compare}={value}; "
                "nothing to compare (check the paths or --where)"
            )
        if options.compare not in columns:
            columns.insert(0, options.compare)
    if columns:
        runs["group"] = keys[columns].groupby(columns, sort=True).ngroup().astype(int)
    else:
        runs["group"] = 0
    return runs, configs, keys, columns, data_columns


def _data_columns(keys: pd.DataFrame) -> list[str]:
    """The fewest of :data:`DATASET_KEYS` that tell the runs' datasets apart (``dataset.path``
    only where it varies within a ``dataset`` option, e.g. two CSV files). Judged on the runs
    whose config is complete, as :func:`~mlcli.report.configs.auto_columns` does."""
    chosen: list[str] = []
    for column in DATASET_KEYS:
        if column not in keys.columns or keys[column].nunique() <= 1:
            continue
        if chosen and keys.groupby(chosen)[column].nunique().max() <= 1:
            continue  # the keys chosen already determine it
        chosen.append(column)
    return chosen


def _sections(
    table: pd.DataFrame, runs: pd.DataFrame, data_columns: list[str], columns: list[str]
) -> tuple[list[str], pd.Series, pd.Series]:
    """The dataset columns shown and, per configuration, its dataset (``dataset=wine``; ``""``
    for runs of one dataset) and the task its runs recorded."""
    data_shown = [c for c in data_columns if c in columns]
    sections = pd.Series(
        [
            ", ".join(f"{c}={v}" for c, v in zip(data_shown, row, strict=True) if v is not None)
            for row in table[data_shown].itertuples(index=False)
        ]
        if data_shown
        else "",
        index=table.index,
        dtype=object,
    )
    tasks = runs.groupby("group")["task"].agg(
        lambda s: ", ".join(sorted({str(t) for t in s.dropna() if t}))
    )
    return data_shown, sections, tasks.reindex(table.index).fillna("")


def _table(
    runs: pd.DataFrame, configs: pd.DataFrame, columns: list[str]
) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """One row per configuration with its key values (or the one ``configuration`` column when
    nothing varies), its runs' states and count; its short labels; the columns shown."""
    n_groups = int(runs["group"].max()) + 1
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
        first = runs.groupby("group").head(1).set_index("group").sort_index()
        shown = [
            o for o in first["overrides"].iloc[0] if is_candidate(o.lstrip("+~").split("=")[0])
        ]
        table[CONFIGURATION] = " ".join(shown) or "(defaults)"
    display_columns = columns or [CONFIGURATION]
    labels = pd.Series(
        [
            ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True) if v is not None)
            if columns
            else str(row[0])
            for row in table[display_columns].itertuples(index=False)
        ],
        index=table.index,
    )
    table["status"] = runs.groupby("group")["state"].agg(_state_counts)
    table["n_runs"] = runs.groupby("group").size()
    return table, labels, display_columns


def _metric_names(curves: pd.DataFrame, test_rows: pd.DataFrame) -> list[str]:
    """Every split/metric recorded (but ``train/lr``), val first, then test, then train."""
    recorded = {(str(s), str(m)) for s, m in curves[["split", "metric"]].drop_duplicates().values}
    recorded |= {
        (str(s), str(m)) for s, m in test_rows[["split", "metric"]].drop_duplicates().values
    }
    return sorted({f"{s}/{m}" for s, m in recorded} - {"train/lr"}, key=_metric_order)


def _best_epochs(curves: pd.DataFrame, rank_metric: str, ascending: bool) -> pd.Series:
    """Per configuration, the epoch whose fold-mean val value of the ranking metric is best
    (the earliest on ties)."""
    val_name = rank_metric.split("/", 1)[1]
    val_curve = curves[(curves["split"] == "val") & (curves["metric"] == val_name)]
    val_curve = val_curve.dropna(subset=["mean"]).sort_values(["group", "epoch"])
    pick = val_curve.groupby("group")["mean"]
    best_index = pick.idxmin() if ascending else pick.idxmax()  # first occurrence: earliest epoch
    best_epoch = val_curve.loc[best_index.to_numpy(), ["group", "epoch"]].set_index("group")
    return best_epoch["epoch"]


def _stopped_best(runs: pd.DataFrame, rank_metric: str, curve_best: pd.Series) -> pd.Series:
    """Each configuration's best epoch: for one whose runs stopped early by the ranking metric
    (their monitor), the mean of their folds' recorded best epochs, rounded (the epochs
    ``final=refit`` trains for), not the best of the fold-mean curve (which averages fewer folds
    after each fold stops); for the others ``curve_best``."""
    if "best_epochs" not in runs:
        return curve_best
    chosen = runs[runs["best_epochs"].map(bool) & (runs["best_by"] == rank_metric)]
    epochs = chosen.groupby("group")["best_epochs"].agg(
        lambda s: [e for run in s for e in run.values()]
    )
    stopped = epochs.map(lambda e: float(max(1, round(float(np.mean(e)))))).astype("float64")
    return stopped.combine_first(curve_best)


def _fold_stops(runs: pd.DataFrame, rank_metric: str) -> dict[tuple[int, int], int]:
    """``(run, fold) -> best epoch`` of every fold that early stopping watched by the ranking
    metric (its restored weights are that epoch's)."""
    if "best_epochs" not in runs:
        return {}
    chosen = runs[runs["best_epochs"].map(bool) & (runs["best_by"] == rank_metric)]
    return {
        (int(cast(int, run)), int(fold)): int(best)
        for run, epochs in chosen["best_epochs"].items()
        for fold, best in epochs.items()
    }


def _fold_means(
    table: pd.DataFrame,
    curve_rows: pd.DataFrame,
    test_rows: pd.DataFrame,
    names: list[str],
    rank_metric: str,
    at: str,
    notes: list[str],
    fold_best: dict[tuple[int, int], int] | None = None,
) -> None:
    """Into ``table``: each configuration's folds counted, and each metric's mean, std and n
    over them, at the final epoch or (``--at best``) at the best epoch: each fold's own where
    early stopping recorded it by the ranking metric (``fold_best``: ``(run, fold) -> epoch``),
    else the configuration's."""
    run_fold = curve_rows["run"].to_numpy(np.int64) * 1_000_000 + curve_rows["fold"].to_numpy()
    last_epoch = curve_rows["epoch"].groupby(run_fold).transform("max")
    if at == "best":
        wanted = table["best_epoch"].reindex(curve_rows["group"]).to_numpy(dtype=np.float64)
        wanted = np.where(np.isnan(wanted), last_epoch.to_numpy(), wanted)
        if fold_best:
            own = pd.Series(
                list(fold_best.values()),
                index=[run * 1_000_000 + fold for run, fold in fold_best],
                dtype="float64",
            )
            fold_epoch = own.reindex(run_fold).to_numpy()
            wanted = np.where(np.isnan(fold_epoch), wanted, fold_epoch)
        chosen = curve_rows[curve_rows["epoch"].to_numpy() == wanted]
        metric = rank_metric.split("/", 1)[1]
        notes.append(
            f"--at best: each configuration at the epoch where its fold-mean val {metric} is "
            "best"
            + (
                f" (a run that stopped early by val {metric}: each fold at its own best epoch, "
                "as status.json records it)"
                if fold_best
                else ""
            )
            + "; test metrics are of the final model (the test split is evaluated once, after "
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


def _diagnosis(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    rules: Rules,
    cohort: pd.Series | None,
) -> None:
    """Into ``table``: each configuration's diagnosis, train error, gap and reason from its
    fold-mean curves (:mod:`mlcli.report.diagnose`, judged against the configurations of the
    same ``cohort``: dataset, and with more or fewer parameters); those without numbers say
    why."""
    verdicts = diagnose(
        curves.rename(columns={"group": "config"}), rules, cohort, table["n_params"].astype(float)
    )
    verdicts = verdicts.reindex(table.index)
    for group in table.index[verdicts["diagnosis"].isna()]:
        label, reason = _not_completed_reason(runs[runs["group"] == group])
        verdicts.loc[group, ["diagnosis", "reason"]] = [label, reason]
    table["diagnosis"] = verdicts["diagnosis"]
    table["train_error"] = verdicts["train_error"].astype(float)
    table["gap"] = verdicts["gap"].astype(float)
    table["reason"] = verdicts["reason"]


def _diverged(
    table: pd.DataFrame, runs: pd.DataFrame, rank_metric: str, notes: list[str]
) -> pd.Series:
    """The configurations that rank after every finite one: with a DIVERGED run, or diagnosed
    as diverged (a NaN/infinite or exploding loss in COMPLETED runs); a note says so."""
    state = (runs["state"] == "DIVERGED").groupby(runs["group"]).any().reindex(table.index)
    state = state.fillna(False).astype(bool)
    ranked_value = table.get(f"{rank_metric}_mean", pd.Series(np.nan, index=table.index))
    if (state & ranked_value.notna()).any():
        notes.append(
            "a configuration with a DIVERGED run ranks after those without (its numbers are of "
            "the runs that did not diverge)"
        )
    exploded = table["diagnosis"].isin(FAILED_LABELS) & ~state
    if (exploded & ranked_value.notna()).any():
        notes.append(
            "a configuration diagnosed as diverged (a NaN/infinite or exploding loss) ranks "
            "after the finite ones"
        )
    return state | exploded


def _n_params(runs: pd.DataFrame) -> pd.Series:
    """Each configuration's number of model parameters (the largest its runs recorded)."""
    if "n_params" not in runs.columns:
        return pd.Series(dtype=np.float64)
    values = pd.to_numeric(runs["n_params"], errors="coerce")
    return values.groupby(runs["group"]).max()


def _run_table(runs: pd.DataFrame, configs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per run: its dir, state, grouping and replicate keys, folds, error, group."""
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
    return run_table.reset_index(drop=True)


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
            f"{', '.join(names)}.{did_you_mean(metric, names)}"
        )
    return metric


def _rank(
    table: pd.DataFrame,
    keys: pd.DataFrame,
    runs: pd.DataFrame,
    columns: list[str],
    rank_metric: str,
    ascending: bool,
    diverged: pd.Series,
    sections: pd.Series,
) -> pd.DataFrame:
    """Sort best first (complete, then partial, then with a DIVERGED run, then without numbers);
    ties by config keys. Each dataset (``sections``) is ranked on its own, in their sorted order."""
    value = table.get(f"{rank_metric}_mean", pd.Series(np.nan, index=table.index))
    has_value = value.notna().to_numpy()
    partial = table["partial"].to_numpy(dtype=bool)
    some_diverged = diverged.reindex(table.index, fill_value=False).to_numpy(dtype=bool)
    tier = np.select(
        [has_value & ~partial & ~some_diverged, has_value & ~some_diverged, has_value], [0, 1, 2], 3
    )
    helper = pd.DataFrame(
        {"_section": sections, "_tier": tier, "_value": value if ascending else -value},
        index=table.index,
    )
    for i, column in enumerate(columns):
        helper[f"_key{i}"] = keys[column].groupby(runs["group"]).first().reindex(table.index)
    order = helper.sort_values(list(helper.columns), kind="mergesort").index
    ranked = table.loc[order]
    in_section = sections.loc[order].groupby(sections.loc[order], sort=False).cumcount()
    ranks = pd.array(in_section.to_numpy() + 1, dtype="Int64")
    ranks[tier[order.to_numpy()] == 3] = pd.NA
    ranked.insert(0, "rank", pd.Series(ranks, index=ranked.index))
    return ranked
