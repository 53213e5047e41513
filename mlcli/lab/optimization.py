"""Demonstrations about optimization: an optimization issue vs bias, critical points, batch size,
momentum, adaptive learning rates, warmup, batch normalization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlcli.lab import figures, flatness
from mlcli.lab.base import INCONCLUSIVE, LabRuns, Verdict, as_list, decide


def _train_curves(runs: LabRuns, ax: object, labels: list[str], metric: str = "loss") -> None:
    for position, label in enumerate(labels):
        curve = runs.curve(position, "train", metric)
        ax.plot(curve.index, curve.to_numpy(), label=label)  # type: ignore[attr-defined]
    ax.set_xlabel("epoch")  # type: ignore[attr-defined]
    ax.set_ylabel(f"train {metric}")  # type: ignore[attr-defined]
    ax.set_yscale("log")  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    ax.legend(fontsize=8)  # type: ignore[attr-defined]


def optimization_issue(runs: LabRuns, out: Path) -> Verdict:
    """Deep plain vs shallow (and both with batch norm), with the report's diagnosis."""
    from mlcli.report import ReportOptions
    from mlcli.report.aggregate import aggregate
    from mlcli.report.collect import collect

    claim = (
        "A deeper plain network can end with a higher training loss than a shallow one: an "
        "optimization problem, not model bias; batch normalization removes it"
    )
    rule = (
        "the plain deep network's final train loss > 1.1 × the plain shallow one's, the report "
        "diagnoses it 'optimization issue', and with batch norm its train loss is lower"
    )
    table = runs.table(["model.hidden", "model.batch_norm"], ["train/loss", "val/acc"])
    table["depth"] = [len(h) if isinstance(h, list) else 1 for h in table["model.hidden"]]
    table["label"] = [
        f"{d} layer{'s' * (d > 1)}{' + BN' if bn else ''}"
        for d, bn in zip(table["depth"], table["model.batch_norm"], strict=True)
    ]
    numbers = {
        f"{label} train loss": float(loss)
        for label, loss in zip(table["label"], table["train/loss"], strict=True)
    }
    diagnosis = {}
    if runs.run_dirs:
        agg = aggregate(
            collect(runs.run_dirs), ReportOptions(by=("model.hidden", "model.batch_norm"))
        )
        for _, row in agg.table.iterrows():
            hidden = as_list(row["model.hidden"])
            depth = len(hidden) if isinstance(hidden, list) else 1
            key = f"{depth} layer{'s' * (depth > 1)}{' + BN' if row['model.batch_norm'] else ''}"
            diagnosis[key] = row["diagnosis"]
    numbers.update({f"{k} diagnosis": v for k, v in diagnosis.items()})
    fig, (ax,) = figures.figure()
    _train_curves(runs, ax, table["label"].tolist())
    figures.save(fig, out / "optimization_issue.png", "deep plain vs shallow, then batch norm")
    plain = table[table["model.batch_norm"] != True]  # noqa: E712
    normed = table[table["model.batch_norm"] == True]  # noqa: E712
    if plain["depth"].nunique() < 2 or normed.empty:
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "needs plain deep, shallow and BN runs")
    deep = plain.iloc[int(np.argmax(plain["depth"]))]
    shallow = plain.iloc[int(np.argmin(plain["depth"]))]
    deep_bn = normed.iloc[int(np.argmax(normed["depth"]))]
    label = diagnosis.get(str(deep["label"]), "")
    holds = (
        deep["train/loss"] > 1.1 * shallow["train/loss"]
        and label == "optimization issue"
        and deep_bn["train/loss"] < deep["train/loss"]
    )
    detail = (
        f"train loss: {deep['label']} {deep['train/loss']:.4g} (diagnosis: {label or 'n/a'}), "
        f"{shallow['label']} {shallow['train/loss']:.4g}, {deep_bn['label']} "
        f"{deep_bn['train/loss']:.4g}"
    )
    return Verdict(claim, numbers, decide(bool(holds)), rule, detail)


def critical_points(runs: LabRuns, out: Path) -> Verdict:
    """Gradient norm, minimum ratio and the Hessian's verdict at the end of each seed's run."""
    claim = (
        "Where training stops the gradient is small, but the point is a saddle (some negative "
        "curvature, minimum ratio < 1) at least as often as a local minimum"
    )
    rule = (
        "among runs ending at a critical point (‖∇L‖ ≤ grad_tol), saddle points ≥ local minima; "
        "inconclusive when no run ends at one"
    )
    table = runs.table(["seed"], ["train/grad_norm", "train/min_ratio", "train/at_saddle",
                                  "train/at_minimum", "train/loss"])  # fmt: skip
    if table.empty:
        return Verdict(claim, {}, INCONCLUSIVE, rule, "no finished runs")
    saddle = int((table["train/at_saddle"] > 0.5).sum())
    minimum = int((table["train/at_minimum"] > 0.5).sum())
    numbers = {
        "runs": len(table),
        "saddle points": saddle,
        "local minima": minimum,
        "not critical": len(table) - saddle - minimum,
        "min ratio (median)": float(np.nanmedian(table["train/min_ratio"])),
        "gradient norm (median)": float(np.nanmedian(table["train/grad_norm"])),
    }
    fig, axes = figures.figure(2)
    colors = np.where(table["train/at_saddle"] > 0.5, "#d62728",
                      np.where(table["train/at_minimum"] > 0.5, "#2ca02c", "#7f7f7f"))  # fmt: skip
    axes[0].scatter(table["train/min_ratio"], table["train/loss"], c=colors)
    axes[0].set_xlabel("minimum ratio (share of positive eigenvalues)")
    axes[0].set_ylabel("train loss")
    axes[0].grid(alpha=0.3)
    axes[1].scatter(table["train/grad_norm"], table["train/min_ratio"], c=colors)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("gradient norm")
    axes[1].set_ylabel("minimum ratio")
    axes[1].grid(alpha=0.3)
    figures.save(
        fig, out / "critical_points.png", "critical points: red saddle, green minimum, grey neither"
    )
    holds = None if saddle + minimum == 0 else saddle >= minimum
    detail = (
        f"{saddle} saddle point(s), {minimum} local minim(a/um), "
        f"{len(table) - saddle - minimum} not critical of {len(table)} runs; median minimum "
        f"ratio {numbers['min ratio (median)']:.3f}"
    )
    return Verdict(claim, numbers, decide(holds), rule, detail)


def batch_size(runs: LabRuns, out: Path) -> Verdict:
    """Time per epoch, noise of the training loss and val accuracy vs the batch size, and the
    loss on the line between the smallest- and the largest-batch solution (fold 0)."""
    claim = (
        "Small batches take longer per epoch and give noisier updates, yet reach a validation "
        "accuracy at least as good as large batches after the same number of epochs, in a "
        "flatter minimum: stepping past the small-batch solution raises the loss less than "
        "stepping past the large-batch one"
    )
    rule = (
        "time per epoch at the smallest batch > at the largest, val acc at the smallest batch ≥ "
        "at the largest, and on the line θ(a) = (1−a) θ_small + a θ_large the train loss rises "
        f"less from a = 0 to a = −{STEP} than from a = 1 to a = 1 + {STEP}"
    )
    table = runs.table(["batch_size", "epochs"], ["val/acc", "train/loss"])
    table = table.reset_index(drop=True)
    if len(table) < 2:
        return Verdict(claim, {}, INCONCLUSIVE, rule, "fewer than two finished runs")
    folds = np.array([len(runs.fold_values(i, "val", "acc")) for i in range(len(table))])
    table["s/epoch"] = table["duration_s"] / (table["epochs"].astype(float) * np.maximum(folds, 1))
    table["noise"] = [_noise(runs, position) for position in range(len(table))]
    table = table.sort_values("batch_size")
    small, large = table.iloc[0], table.iloc[-1]
    line, why_not = _line(runs, int(small.name), int(large.name))  # type: ignore[call-overload]
    numbers: dict[str, object] = {
        "batch size": table["batch_size"].astype(int).tolist(),
        "seconds per epoch": table["s/epoch"].round(4).tolist(),
        "epoch-to-epoch |Δ log train loss|": table["noise"].round(4).tolist(),
        "val acc": table["val/acc"].round(4).tolist(),
    }
    fig, axes = figures.figure(4, width=4.0)
    sizes = table["batch_size"].tolist()
    panels = (("s/epoch", "seconds per epoch"), ("noise", "mean |Δ log train loss|"),
              ("val/acc", "val accuracy"))  # fmt: skip
    for ax, (column, label) in zip(axes[:3], panels, strict=True):
        figures.lines(ax, sizes, {column: table[column].tolist()}, "batch size", label, log_x=True)
    flatter = None
    if line is not None:
        alphas = list(flatness.ALPHAS)
        past_small = flatness.rise(alphas, line["train"], 0.0, -STEP)
        past_large = flatness.rise(alphas, line["train"], 1.0, STEP)
        val_small = flatness.rise(alphas, line["val"], 0.0, -STEP)
        val_large = flatness.rise(alphas, line["val"], 1.0, STEP)
        numbers |= {
            "line a": alphas,
            "train loss on the line": [float(f"{v:.4g}") for v in line["train"]],
            "val loss on the line": [float(f"{v:.4g}") for v in line["val"]],
            f"train loss rise past the small-batch solution (a 0 → −{STEP})": past_small,
            f"train loss rise past the large-batch solution (a 1 → {1 + STEP})": past_large,
            f"val loss rise past the small-batch solution (a 0 → −{STEP})": val_small,
            f"val loss rise past the large-batch solution (a 1 → {1 + STEP})": val_large,
        }
        if np.isfinite([past_small, past_large]).all():
            flatter = bool(past_small < past_large)
        _line_panel(axes[3], alphas, line, int(small["batch_size"]), int(large["batch_size"]))
    else:
        numbers["loss between the small- and large-batch solutions"] = f"not measured: {why_not}"
        axes[3].text(0.5, 0.5, f"no line:\n{why_not}", ha="center", va="center", fontsize=8,
                     wrap=True, transform=axes[3].transAxes)  # fmt: skip
        axes[3].set_axis_off()
    figures.save(fig, out / "batch_size.png", "small vs large batch")
    faster = bool(small["s/epoch"] > large["s/epoch"] and small["val/acc"] >= large["val/acc"])
    detail = (
        f"batch {int(small['batch_size'])}: {small['s/epoch']:.3g} s/epoch, val acc "
        f"{small['val/acc']:.3f}; batch {int(large['batch_size'])}: {large['s/epoch']:.3g} "
        f"s/epoch, val acc {large['val/acc']:.3f}"
    )
    if flatter is None:
        detail += f"; the line between the two was not measured ({why_not})"
        return Verdict(claim, numbers, INCONCLUSIVE if faster else decide(False), rule, detail)
    detail += (
        f"; train loss rise {past_small:.3g} past the small-batch solution vs {past_large:.3g} "
        f"past the large-batch one (val: {val_small:.3g} vs {val_large:.3g}): the small-batch "
        f"minimum is {'flatter' if flatter else 'not flatter'} along the line"
    )
    return Verdict(claim, numbers, decide(faster and flatter), rule, detail)


def _noise(runs: LabRuns, position: int) -> float:
    """The mean epoch-to-epoch ``|Δ log train loss|`` of a run."""
    curve = runs.curve(position, "train", "loss").to_numpy()
    steps = np.abs(np.diff(np.log(curve))) if len(curve) > 1 else np.array([np.nan])
    return float(np.mean(steps))


def _line_panel(ax: Any, alphas: list[float], line: dict[str, Any], small: int, large: int) -> None:
    """The train and val loss on the line between the two solutions, each end marked."""
    ax.plot(alphas, line["train"], marker=".", label="train")
    ax.plot(alphas, line["val"], marker=".", label="val")
    for a, name in ((0.0, f"batch {small}"), (1.0, f"batch {large}")):
        ax.axvline(a, color="#7f7f7f", lw=0.8, ls="--")
        ax.annotate(name, (a, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                    ha="center", va="bottom")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("a in (1−a) θ_small + a θ_large (fold 0)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


STEP = 0.5
"""How far past each solution the flatness is read (a share of the distance between them)."""


def _line(runs: LabRuns, small: int, large: int) -> tuple[dict[str, np.ndarray] | None, str]:
    """The losses on the line from run ``small``'s fold-0 model to run ``large``'s, or (None,
    why it cannot be measured)."""
    from mlcli.rundir.models import ModelFilesError

    dirs = runs.saved_models(small), runs.saved_models(large)
    if dirs[0] is None or dirs[1] is None:
        return None, "the runs kept no models (save_models=false?)"
    try:
        return flatness.between_runs(dirs[0], dirs[1], fold=0), ""
    except (ModelFilesError, ValueError) as error:
        return None, str(error)


def momentum(runs: LabRuns, out: Path) -> Verdict:
    """Train loss curves of SGD with momentum 0, 0.5, 0.9 on a deep sigmoid network."""
    claim = (
        "Momentum carries SGD off the plateau around a saddle point where plain SGD stays: a "
        "lower training loss after the same number of epochs"
    )
    rule = "final train loss with the largest momentum < 0.9 × with momentum 0"
    table = runs.table(["optim.momentum"], ["train/loss", "val/acc"]).reset_index(drop=True)
    labels = [f"momentum {m}" for m in table["optim.momentum"]]
    numbers = {
        f"{label} train loss": float(v)
        for label, v in zip(labels, table["train/loss"], strict=True)
    }
    fig, (ax,) = figures.figure()
    _train_curves(runs, ax, labels)
    figures.save(fig, out / "momentum.png", "SGD with and without momentum near a saddle")
    if table["optim.momentum"].nunique() < 2 or 0.0 not in set(table["optim.momentum"]):
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "needs momentum 0 and another value")
    plain = table.loc[table["optim.momentum"] == 0.0, "train/loss"].mean()
    best = table.iloc[int(np.argmax(table["optim.momentum"]))]
    holds = best["train/loss"] < 0.9 * plain
    detail = (
        f"train loss {plain:.4g} without momentum, {best['train/loss']:.4g} with momentum "
        f"{best['optim.momentum']}"
    )
    return Verdict(claim, numbers, decide(bool(holds)), rule, detail)


def optimizers(runs: LabRuns, out: Path) -> Verdict:
    """Trajectories of SGD, Adagrad, RMSProp and Adam on the contours of the surface."""
    claim = (
        "On an ill-conditioned error surface, adaptive learning rates (RMSProp, Adam) get much "
        "closer to the minimum than plain gradient descent at the same learning rate"
    )
    rule = "the best final train loss of RMSProp/Adam < 0.5 × that of SGD"
    table = runs.table(["optim"], ["train/loss"]).reset_index(drop=True)
    numbers = {f"{o} train loss": float(v) for o, v in zip(table["optim"], table["train/loss"],
                                                           strict=True)}  # fmt: skip
    fig, (ax,) = figures.figure(width=6.0, height=5.0)
    surface = None
    for run_dir in runs.run_dirs:
        found = sorted((run_dir / "analysis").glob("surface_fold*.npz"))
        if found:
            with np.load(found[0]) as data:
                candidate = {k: data[k] for k in ("w0", "w1", "loss")}
            if surface is None or np.ptp(candidate["w0"]) > np.ptp(surface["w0"]):
                surface = candidate
    if surface is not None:
        levels = np.geomspace(max(surface["loss"].min(), 1e-6), surface["loss"].max(), 15)
        ax.contour(surface["w0"], surface["w1"], surface["loss"], levels=levels, cmap="viridis",
                   linewidths=0.7)  # fmt: skip
    for position, name in enumerate(table["optim"]):
        w0, w1 = runs.curve(position, "train", "w0"), runs.curve(position, "train", "w1")
        ax.plot(w0.to_numpy(), w1.to_numpy(), marker=".", ms=3, label=str(name))
    ax.set_xlabel("w0")
    ax.set_ylabel("w1")
    ax.legend(fontsize=8)
    figures.save(fig, out / "optimizers.png", "optimizers on an ill-conditioned surface")
    losses = dict(zip(table["optim"], table["train/loss"], strict=True))
    adaptive = [losses[o] for o in ("rmsprop", "adam") if o in losses]
    if "sgd" not in losses or not adaptive:
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "needs sgd and rmsprop or adam runs")
    holds = min(adaptive) < 0.5 * losses["sgd"]
    detail = ", ".join(f"{o} {v:.3g}" for o, v in losses.items()) + " (final train loss)"
    return Verdict(claim, numbers, decide(bool(holds)), rule, detail)


def warmup(runs: LabRuns, out: Path) -> Verdict:
    """A post-LN Transformer at a high learning rate, with and without warmup."""
    claim = (
        "At a high learning rate a post-LN Transformer trains better with a learning-rate "
        "warmup: lower training loss, better validation accuracy"
    )
    rule = "with warmup: final train loss < without, and val token accuracy ≥ without"
    table = runs.table(["scheduler.warmup"], ["train/loss", "val/token_acc"]).reset_index(drop=True)
    labels = [f"warmup={w}" for w in table["scheduler.warmup"]]
    numbers = {}
    for label, loss, acc in zip(labels, table["train/loss"], table["val/token_acc"], strict=True):
        numbers[f"{label} train loss"] = float(loss)
        numbers[f"{label} val token acc"] = float(acc)
    fig, axes = figures.figure(2)
    _train_curves(runs, axes[0], labels)
    for position, label in enumerate(labels):
        curve = runs.curve(position, "train", "lr")
        axes[1].plot(curve.index, curve.to_numpy(), label=label)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("lr at the epoch's last step")
    axes[1].legend(fontsize=8)
    figures.save(fig, out / "warmup.png", "warmup on a post-LN Transformer at a high lr")
    by = {str(w): row for w, (_, row) in zip(table["scheduler.warmup"], table.iterrows(),
                                             strict=True)}  # fmt: skip
    if "none" not in by or len(by) < 2:
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "needs runs with and without warmup")
    without = by["none"]
    with_ = next(row for name, row in by.items() if name != "none")
    holds = (
        with_["train/loss"] < without["train/loss"]
        and with_["val/token_acc"] >= without["val/token_acc"]
    )
    detail = (
        f"train loss {with_['train/loss']:.4g} with warmup vs {without['train/loss']:.4g} "
        f"without; val token acc {with_['val/token_acc']:.3f} vs "
        f"{without['val/token_acc']:.3f}"
    )
    return Verdict(claim, numbers, decide(bool(holds)), rule, detail)


def batchnorm(runs: LabRuns, out: Path) -> Verdict:
    """Final train loss vs learning rate, with and without batch norm."""
    claim = (
        "Batch normalization makes the error surface easier: the network trains well over a "
        "wider range of learning rates"
    )
    rule = "with batch norm the final train loss is lower at a majority of the learning rates"
    table = runs.table(["optim.lr", "model.batch_norm"], ["train/loss", "val/acc"])
    pivot = table.pivot_table(index="optim.lr", columns="model.batch_norm", values="train/loss")
    numbers = {
        f"lr {lr} {'BN' if bn else 'plain'} train loss": float(pivot.loc[lr, bn])
        for lr in pivot.index
        for bn in pivot.columns
    }
    fig, (ax,) = figures.figure()
    for bn in pivot.columns:
        ax.plot(pivot.index, pivot[bn], marker="o", label="batch norm" if bn else "plain")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final train loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figures.save(fig, out / "batchnorm.png", "batch normalization at several learning rates")
    if set(pivot.columns) != {False, True}:
        return Verdict(claim, numbers, INCONCLUSIVE, rule, "needs runs with and without BN")
    better = pivot[True] < pivot[False]
    holds = int(better.sum()) > len(better) / 2
    detail = f"batch norm lower at {int(better.sum())} of {len(better)} learning rates"
    return Verdict(claim, numbers, decide(holds), rule, detail)
