"""How ``mlcli report`` scales: a synthetic outputs tree of 100 and 1,000 runs.

    .venv/bin/python bench/report_scale.py [--runs 100,1000] [--dir DIR] [--keep]

Each run dir looks like one mlcli writes (config.yaml, overrides.yaml, status.json,
results.parquet) with 5 folds × 50 epochs × 6 metrics (train loss/acc/lr, val loss/acc/top5)
plus the test metrics: 1,000 runs are 1.5 M result rows. The runs form a grid
optim {sgd, adam} × optim.lr (10 values) × model.hidden (5 values) × seeds, so 1,000 runs are
100 configurations × 10 seeds and 100 runs are 100 configurations × 1 seed.

Every measurement runs in a fresh process and prints its wall time per stage and its peak
resident memory (``resource.getrusage``). The reference, measured the same way, is the floor of
any reader: the same parquet files read by ``pandas.read_parquet`` in a loop and concatenated.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

FOLDS, EPOCHS = 5, 50
OPTIMS = ("sgd", "adam")
LRS = tuple(float(f"{x:.4g}") for x in np.geomspace(1e-4, 1.0, 10))
HIDDEN = ([32], [64], [128], [256], [128, 64])


def _config(optim: str, lr: float, hidden: list[int], seed: int) -> dict:
    optim_cfg = {
        "_target_": f"torch.optim.{'SGD' if optim == 'sgd' else 'Adam'}",
        "_partial_": True,
        "lr": lr,
        "weight_decay": 0.0,
    }
    if optim == "sgd":
        optim_cfg.update(momentum=0.9, nesterov=False)
    else:
        optim_cfg.update(betas=[0.9, 0.999], eps=1e-8)
    return {
        "dataset": {
            "_target_": "mlcli.data.digits",
            "test_fraction": 0.2,
            "normalize": "standard",
            "seed": 0,
        },
        "model": {
            "_target_": "mlcli.models.mlp",
            "hidden": hidden,
            "activation": "relu",
            "batch_norm": False,
            "dropout": 0.0,
        },
        "optim": optim_cfg,
        "scheduler": {"_target_": "mlcli.schedules.constant", "warmup": "none", "warmup_steps": 0},
        "cv": {
            "_target_": "sklearn.model_selection.KFold",
            "n_splits": FOLDS,
            "shuffle": True,
            "seed": 0,
        },
        "seed": seed,
        "epochs": EPOCHS,
        "batch_size": 64,
        "device": "cpu",
        "threads": 1,
        "metric": "auto",
        "clip_grad_norm": None,
        "outputs_root": "outputs",
        "progress": False,
        "allow_targets": [],
    }


def _results(rng: np.random.Generator, key: str, lr: float, quality: float) -> object:
    """One run's long-form table: curves that fall (and, for large lr, overfit) with noise."""
    import pyarrow as pa

    epochs = np.arange(1, EPOCHS + 1)
    rows: dict[str, list] = {k: [] for k in ("fold", "epoch", "split", "metric", "value")}

    def add(fold: int, epoch: np.ndarray, split: str, metric: str, value: np.ndarray) -> None:
        rows["fold"].append(np.full(len(epoch), fold, np.int32))
        rows["epoch"].append(epoch.astype(np.int32))
        rows["split"].append(np.full(len(epoch), split, object))
        rows["metric"].append(np.full(len(epoch), metric, object))
        rows["value"].append(value.astype(np.float64))

    for fold in range(FOLDS):
        noise = rng.normal(0, 0.01, (5, EPOCHS))
        train_loss = 2.3 * np.exp(-epochs * quality / 10) + 0.02 + noise[0]
        val_loss = train_loss + 0.1 + 0.002 * lr * epochs + noise[1]
        add(fold, epochs, "train", "loss", train_loss)
        add(fold, epochs, "train", "acc", np.clip(1 - train_loss / 2.4 + noise[2], 0, 1))
        add(fold, epochs, "train", "lr", np.full(EPOCHS, lr))
        add(fold, epochs, "val", "loss", val_loss)
        add(fold, epochs, "val", "acc", np.clip(1 - val_loss / 2.4 + noise[3], 0, 1))
        add(fold, epochs, "val", "top5", np.clip(1.2 - val_loss / 2.4 + noise[4], 0, 1))
        last = np.array([EPOCHS])
        add(fold, last, "test", "loss", val_loss[-1:] + 0.01)
        add(fold, last, "test", "acc", np.clip(1 - val_loss[-1:] / 2.4, 0, 1))
    columns = {k: np.concatenate(v) for k, v in rows.items()}
    return pa.table(
        {
            "run_key": pa.array([key] * len(columns["value"]), pa.string()),
            "fold": pa.array(columns["fold"], pa.int32()),
            "epoch": pa.array(columns["epoch"], pa.int32()),
            "split": pa.array(columns["split"].tolist(), pa.string()),
            "metric": pa.array(columns["metric"].tolist(), pa.string()),
            "value": pa.array(columns["value"], pa.float64()),
        }
    )


def make_tree(root: Path, n_runs: int) -> int:
    """Write ``n_runs`` run dirs below ``root``; return the number of result rows."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    grid = [(o, lr, h) for o in OPTIMS for lr in LRS for h in HIDDEN]
    total = 0
    for i in range(n_runs):
        optim, lr, hidden = grid[i % len(grid)]
        seed = i // len(grid)
        overrides = [f"optim={optim}", f"optim.lr={lr}", f"model.hidden={hidden}", f"seed={seed}"]
        run = root / f"{i}"
        run.mkdir(parents=True)
        key = f"{i:016x}"
        (run / "config.yaml").write_text(
            yaml.safe_dump(_config(optim, lr, hidden, seed), sort_keys=False)
        )
        (run / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        status = {
            "state": "COMPLETED",
            "run_key": key,
            "choices": {
                "dataset": "digits",
                "model": "mlp",
                "optim": optim,
                "scheduler": "constant",
                "cv": "kfold",
            },
            "overrides": overrides,
            "metric": "val/acc",
            "task": "classification",
            "n_folds": FOLDS,
            "folds_completed": list(range(FOLDS)),
            "error": None,
        }
        (run / "status.json").write_text(json.dumps(status, indent=2))
        quality = 0.3 + 3 * (1 - abs(np.log10(lr) + 2) / 2.5) * (1.2 if optim == "adam" else 1)
        table = _results(rng, key, lr, max(quality, 0.05))
        pq.write_table(table, run / "results.parquet")
        total += table.num_rows
    return total


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(root: Path, mode: str) -> None:
    """Measure one thing in this fresh process and print it as JSON."""
    import pandas as pd

    from mlcli.report.aggregate import ReportOptions, aggregate
    from mlcli.report.collect import collect
    from mlcli.report.export import to_csv, to_html

    after_imports = _rss_mb()
    times: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if mode == "reference":
        files = sorted(root.rglob("results.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        times["read"] = time.perf_counter() - start
        rows = len(frame)
    else:
        collected = collect([root])
        times["collect"] = time.perf_counter() - start
        agg = aggregate(collected, ReportOptions())
        times["aggregate"] = time.perf_counter() - times["collect"] - start
        if mode == "html":
            from mlcli.report.plots import render_plots

            text = to_html(agg, render_plots(agg))
        else:
            text = to_csv(agg)
        times["render"] = time.perf_counter() - sum(times.values()) - start
        rows = len(collected.results)
        assert len(agg.table) == 100 and text
    times["total"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    times["cpu"] = usage.ru_utime + usage.ru_stime - cpu_start
    print(
        json.dumps(
            {"times": times, "rows": rows, "peak_mb": _rss_mb(), "imports_mb": after_imports}
        )
    )


def measure(root: Path, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", str(root), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="100,1000")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1])
        return

    base = args.dir or Path(tempfile.mkdtemp(prefix="mlcli-report-scale-"))
    results = {}
    try:
        for n in (int(x) for x in args.runs.split(",")):
            root = base / f"runs{n}"
            if not root.exists():
                started = time.perf_counter()
                rows = make_tree(root, n)
                print(f"generated {n} runs, {rows:,} rows in {time.perf_counter() - started:.1f} s")
            results[n] = {mode: measure(root, mode) for mode in ("reference", "csv", "html")}
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print(
        f"{'runs':>6} {'rows':>10} {'stage':>10} {'wall s':>8} {'cpu s':>6} {'peak MB':>8}  detail"
    )
    for n, by_mode in results.items():
        for mode, m in by_mode.items():
            detail = ", ".join(
                f"{k} {v:.2f}" for k, v in m["times"].items() if k not in ("total", "cpu")
            )
            print(
                f"{n:>6} {m['rows']:>10,} {mode:>10} {m['times']['total']:>8.2f} "
                f"{m['times']['cpu']:>6.2f} "
                f"{m['peak_mb']:>8.0f}  {detail} (after imports {m['imports_mb']:.0f} MB)"
            )
    if len(results) >= 2:
        items = list(results.items())
        (small, a), (large, b) = items[0], items[-1]
        print()
        for mode in ("reference", "csv", "html"):
            wall = b[mode]["times"]["total"] / a[mode]["times"]["total"]
            cpu = b[mode]["times"]["cpu"] / a[mode]["times"]["cpu"]
            print(
                f"{mode:>10}: {large} runs / {small} runs = {wall:.1f}× the wall time, "
                f"{cpu:.1f}× the cpu time for {large / small:.0f}× the runs"
            )
        for n, by_mode in results.items():
            ratio = by_mode["csv"]["times"]["cpu"] / by_mode["reference"]["times"]["cpu"]
            print(f"{n:>6} runs: report (csv) / plain read_parquet loop = {ratio:.2f} (cpu time)")


if __name__ == "__main__":
    main()
