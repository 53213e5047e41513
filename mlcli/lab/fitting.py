"""Demonstrations about what a model can fit and how well it generalizes: sums of sigmoids,
deep vs shallow, model size, random labels, holdout vs N-fold cross-validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlcli.lab import figures
from mlcli.lab.base import INCONCLUSIVE, LabRuns, Verdict, decide


def _depth(hidden: object) -> int:
    return len(hidden) if isinstance(hidden, list | tuple) else 1


def curve_fit(runs: LabRuns, out: Path) -> Verdict:
    """Val MSE vs the number of units, per family (sigmoid_sum, relu_sum)."""
    claim = (
        "A constant plus a sum of N sigmoids (or N ReLU pairs) fits a piecewise-linear curve: "
        "the error falls as N grows, toward the noise floor"
    )
    rule = "for each family, val MSE at the largest N < 0.5 × val MSE at the smallest N"
    table = runs.table(["model", "model.n_units"], ["val/mse", "train/mse"])
    numbers: dict[str, object] = {}
    holds: list[bool] = []
    fig, (ax,) = figures.figure()
    for family, rows in table.groupby("model"):
        rows = rows.sort_values("model.n_units")
        n, mse = rows["model.n_units"].tolist(), rows["val/mse"].to_numpy()
        numbers[f"{family} N"] = n
        numbers[f"{family} val MSE"] = mse.round(5).tolist()
        if len(n) >= 2 and np.isfinite(mse[[0, -1]]).all():
            holds.append(bool(mse[-1] < 0.5 * mse[0]))
        ax.plot(n, mse, marker="o", label=f"{family} (val)")
        ax.plot(n, rows["train/mse"], ls="--", alpha=0.6, label=f"{family} (train)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("N (units)")
    ax.set_ylabel("MSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figures.save(fig, out / "curve_fit.png", "error vs number of sigmoids / ReLU pairs")
    supported = decide(all(holds) if holds else None)
    detail = ", ".join(
        f"{family}: {numbers[f'{family} val MSE'][0]:.4g} at N={numbers[f'{family} N'][0]} → "  # type: ignore[index]
        f"{numbers[f'{family} val MSE'][-1]:.4g} at N={numbers[f'{family} N'][-1]}"  # type: ignore[index]
        for family in table["model"].unique()
    )
    return Verdict(claim, numbers, supported, rule, detail)


def deep_vs_shallow(runs: LabRuns, out: Path) -> Verdict:
    """Val MSE of 1-, 2- and 3-layer MLPs of about the same size."""
    claim = (
        "At the same number of parameters, a deeper network fits a curve of many pieces better "
        "than a shallow, wide one"
    )
    rule = "val MSE of the deepest network < val MSE of the one-hidden-layer network (seed mean)"
    table = runs.table(["model.hidden"], ["val/mse", "train/mse"])
    if table.empty:
        return Verdict(claim, {}, INCONCLUSIVE, rule, "no finished runs")
    table["depth"] = [_depth(h) for h in table["model.hidden"]]
    table["shape"] = [str(h) for h in table["model.hidden"]]
    grouped = table.groupby(["depth", "shape"], as_index=False).agg(
        val=("val/mse", "mean"), train=("train/mse", "mean"), params=("n_params", "max")
    )
    grouped = grouped.sort_values("depth")
    numbers = {
        "hidden": grouped["shape"].tolist(),
        "parameters": grouped["params"].tolist(),
        "val MSE": grouped["val"].round(5).tolist(),
        "train MSE": grouped["train"].round(5).tolist(),
    }
    fig, axes = figures.figure(2)
    labels = [
        f"{s}\n{int(p)} params" for s, p in zip(grouped["shape"], grouped["params"], strict=True)
    ]
    figures.bars(axes[0], labels, grouped["val"].tolist(), "val MSE")
    figures.bars(axes[1], labels, grouped["train"].tolist(), "train MSE")
    figures.save(fig, out / "deep_vs_shallow.png", "deep vs shallow at about equal parameters")
    holds = None
    if len(grouped) >= 2 and np.isfinite(grouped["val"]).all():
        holds = bool(grouped["val"].iloc[-1] < grouped["val"].iloc[0])
    detail = (
        f"{grouped['shape'].iloc[-1]}: val MSE {grouped['val'].iloc[-1]:.4g}; "
        f"{grouped['shape'].iloc[0]}: {grouped['val'].iloc[0]:.4g}"
        if len(grouped)
        else ""
    )
    return Verdict(claim, numbers, decide(holds), rule, detail)


def model_size(runs: LabRuns, out: Path) -> Verdict:
    """Train and val MSE vs the number of parameters, with the report's diagnosis."""
    claim = (
        "A small model has a large training error (model bias); a large one drives the training "
        "error down while the validation error stays up (overfitting): the gap grows with size"
    )
    rule = (
        "train MSE of the largest model < 0.5 × that of the smallest, and its gap (val − train "
        "MSE) is larger than the smallest model's"
    )
    table = runs.table(["model.hidden"], ["val/mse", "train/mse"]).sort_values("n_params")
    if len(table) < 2:
        return Verdict(claim, {}, INCONCLUSIVE, rule, "fewer than two finished runs")
    gap = table["val/mse"] - table["train/mse"]
    numbers = {
        "parameters": table["n_params"].astype(int).tolist(),
        "train MSE": table["train/mse"].round(5).tolist(),
        "val MSE": table["val/mse"].round(5).tolist(),
        "gap": gap.round(5).tolist(),
    }
    fig, (ax,) = figures.figure()
    ax.plot(table["n_params"], table["train/mse"], marker="o", label="train")
    ax.plot(table["n_params"], table["val/mse"], marker="o", label="val")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("MSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figures.save(fig, out / "model_size.png", "model size: bias ↔ overfitting")
    train = table["train/mse"].to_numpy()
    holds = bool(train[-1] < 0.5 * train[0] and gap.iloc[-1] > gap.iloc[0])
    detail = (
        f"train MSE {train[0]:.4g} → {train[-1]:.4g}, gap {gap.iloc[0]:+.4g} → "
        f"{gap.iloc[-1]:+.4g} from {int(table['n_params'].iloc[0])} to "
        f"{int(table['n_params'].iloc[-1])} parameters"
    )
    return Verdict(claim, numbers, decide(holds), rule, detail)


def random_labels(runs: LabRuns, out: Path) -> Verdict:
    """Train and val accuracy with true and with shuffled labels."""
    claim = (
        "A big enough network memorizes random labels: training accuracy near 100% while "
        "validation accuracy stays at chance"
    )
    rule = "with shuffled labels: train acc ≥ 0.9 and val acc ≤ chance + 0.1 (chance = 1/classes)"
    table = runs.table(["dataset.shuffle_labels"], ["train/acc", "val/acc"])
    shuffled = table[table["dataset.shuffle_labels"] == True]  # noqa: E712
    true = table[table["dataset.shuffle_labels"] != True]  # noqa: E712
    classes = 10
    numbers: dict[str, object] = {"chance": 1 / classes}
    for name, rows in (("true labels", true), ("random labels", shuffled)):
        numbers[f"{name} train acc"] = float(rows["train/acc"].mean()) if len(rows) else None
        numbers[f"{name} val acc"] = float(rows["val/acc"].mean()) if len(rows) else None
    fig, axes = figures.figure(2)
    for position, flag in enumerate(table["dataset.shuffle_labels"]):
        name = "random labels" if flag else "true labels"
        for ax, split in zip(axes, ("train", "val"), strict=True):
            curve = runs.curve(position, split, "acc")
            ax.plot(curve.index, curve.to_numpy(), label=name)
    for ax, split in zip(axes, ("train", "val"), strict=True):
        ax.axhline(1 / classes, color="grey", ls=":", label="chance")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figures.save(fig, out / "random_labels.png", "memorizing random labels")
    if shuffled.empty:
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "no finished run with random labels")
    train, val = float(shuffled["train/acc"].mean()), float(shuffled["val/acc"].mean())
    holds = train >= 0.9 and val <= 1 / classes + 0.1
    detail = f"random labels: train acc {train:.3f}, val acc {val:.3f} (chance {1 / classes:.2f})"
    return Verdict(claim, numbers, decide(holds), rule, detail)


def holdout_vs_kfold(runs: LabRuns, out: Path) -> Verdict:
    """The spread over split seeds of the val-accuracy estimate, holdout vs k-fold."""
    claim = (
        "N-fold cross-validation estimates a model's accuracy more reliably than one validation "
        "split: its estimate moves less from one split seed to another"
    )
    rule = "std over split seeds of the k-fold estimate < that of the holdout estimate"
    table = runs.table(["cv", "cv.seed"], ["val/acc"])
    spread = table.groupby("cv")["val/acc"].agg(["mean", "std", "count"])
    numbers = {
        f"{cv} {stat}": float(value) for cv, row in spread.iterrows() for stat, value in row.items()
    }
    fig, (ax,) = figures.figure()
    names = list(spread.index)
    ax.boxplot([table.loc[table["cv"] == n, "val/acc"].to_numpy() for n in names])
    ax.set_xticks(range(1, len(names) + 1), names)
    for i, n in enumerate(names, start=1):
        values = table.loc[table["cv"] == n, "val/acc"].to_numpy()
        ax.scatter(np.full(len(values), i), values, s=12, alpha=0.6)
    ax.set_ylabel("estimated val accuracy (one point per split seed)")
    ax.grid(alpha=0.3)
    figures.save(fig, out / "holdout_vs_kfold.png", "holdout vs k-fold: spread of the estimate")
    if not {"holdout", "kfold"} <= set(spread.index) or (spread["count"] < 2).any():
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "needs ≥ 2 seeds of each")
    holdout, kfold = float(spread["std"]["holdout"]), float(spread["std"]["kfold"])
    detail = (
        f"std over {int(spread['count'].min())} seeds: holdout {holdout:.4f}, k-fold {kfold:.4f}"
    )
    return Verdict(claim, numbers, decide(kfold < holdout), rule, detail)
