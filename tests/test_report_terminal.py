"""The terminal report fits the terminal: headers whole, nothing cut, one table per dataset.

The runs are synthesized with mlcli's own file format (config.yaml, overrides.yaml,
status.json, results.parquet), as a 40-configuration sweep of Optuna-like learning rates
(full-precision floats) on two datasets would leave them.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from rich.cells import cell_len

from mlcli.report import ReportOptions, build_report
from mlcli.report.terminal import Column, layout, mean_std, number, to_table

FOLDS, EPOCHS = 3, 6
# 40 configurations: 2 optimizers × 10 learning rates (as an Optuna study samples them) × 2
# hidden sizes.
LRS = [float(x) for x in np.geomspace(1.234567891e-4, 0.3141592653589, 10)]
HIDDEN = ([64], [256, 128])


def _write_run(
    root: Path, name: str, dataset: str, optim: str, lr: float, hidden: list[int], seed: int
) -> None:
    # zlib.crc32, not hash(): str hashes change with every process (PYTHONHASHSEED), and the
    # synthesized numbers (hence the column widths) must be the same in every run of the test.
    rng = np.random.default_rng(zlib.crc32(repr((dataset, optim, lr, hidden, seed)).encode()))
    run = root / name
    run.mkdir(parents=True)
    overrides = [f"dataset={dataset}", f"optim={optim}", f"optim.lr={lr}", f"model.hidden={hidden}"]
    config = {
        "dataset": {"_target_": f"mlcli.data.{dataset}", "test_fraction": 0.2, "seed": 0},
        "model": {"_target_": "mlcli.models.mlp", "hidden": hidden},
        "optim": {"_target_": f"torch.optim.{optim.upper()}", "_partial_": True, "lr": lr},
        "seed": seed,
        "epochs": EPOCHS,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    key = f"{zlib.crc32(f'{dataset}/{name}'.encode()):016x}"
    status = {
        "state": "COMPLETED",
        "run_key": key,
        "choices": {"dataset": dataset, "model": "mlp", "optim": optim},
        "overrides": overrides,
        "metric": "val/acc",
        "task": "classification",
        "n_folds": FOLDS,
        "folds_completed": list(range(FOLDS)),
        "error": None,
    }
    (run / "status.json").write_text(json.dumps(status))
    rows: dict[str, list] = {k: [] for k in ("fold", "epoch", "split", "metric", "value")}
    quality = 1.0 / (1.0 + abs(np.log10(lr) + 2.0))
    for fold in range(FOLDS):
        for epoch in range(1, EPOCHS + 1):
            loss = 2.0 * np.exp(-epoch * quality) + rng.normal(0, 0.01)
            for split, metric, value in [
                ("train", "loss", loss),
                ("train", "acc", 1 - loss / 2.2),
                ("train", "lr", lr),
                ("val", "loss", loss + 0.05),
                ("val", "acc", 1 - (loss + 0.05) / 2.2 + rng.normal(0, 0.01)),
            ]:
                for column, item in zip(rows, (fold, epoch, split, metric, value), strict=True):
                    rows[column].append(item)
        for metric, value in [("loss", loss + 0.06), ("acc", 1 - (loss + 0.06) / 2.2)]:
            for column, item in zip(rows, (fold, EPOCHS, "test", metric, value), strict=True):
                rows[column].append(item)
    table = pa.table(
        {
            "run_key": pa.array([key] * len(rows["value"]), pa.string()),
            "fold": pa.array(rows["fold"], pa.int32()),
            "epoch": pa.array(rows["epoch"], pa.int32()),
            "split": pa.array(rows["split"], pa.string()),
            "metric": pa.array(rows["metric"], pa.string()),
            "value": pa.array(rows["value"], pa.float64()),
        }
    )
    pq.write_table(table, run / "results.parquet")


def sweep(root: Path, datasets: tuple[str, ...] = ("wine",)) -> Path:
    """A 40-configuration sweep on each dataset (one seed each)."""
    number_ = 0
    for dataset in datasets:
        for optim in ("sgd", "adam"):
            for lr in LRS:
                for hidden in HIDDEN:
                    _write_run(root, str(number_), dataset, optim, lr, hidden, 0)
                    number_ += 1
    return root


def _cells(line: str, separator: str) -> list[str]:
    return [cell.strip() for cell in line.split(separator)[1:-1]]


def _headers(text: str) -> list[list[str]]:
    """Each table's column headers, the lines of a wrapped header joined with spaces."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("┃"):
            current.append(_cells(line, "┃"))
        elif current:
            tables.append([" ".join(p for p in parts if p) for parts in zip(*current, strict=True)])
            current = []
    return tables


def test_a_40_configuration_sweep_fits_100_columns(tmp_path):
    agg = build_report([sweep(tmp_path / "runs")])
    assert len(agg.table) == 40
    text = to_table(agg, 100)
    lines = text.splitlines()
    assert max(cell_len(line) for line in lines) <= 100
    assert "…" not in text  # nothing cut short
    (headers,) = _headers(text)
    # Every header whole (a header wraps only at a space): "val/loss", never "val/lo" + "ss".
    known = {"rank", "optim", "optim.lr", "model.hidden", "status", "folds", "best epoch",
             "val/acc ↑", "val/loss", "test/acc", "test/loss", "diagnosis"}  # fmt: skip
    assert set(headers) <= known and {"rank", "optim", "optim.lr", "val/acc ↑"} <= set(headers)
    # Every row whole, its numbers on one line: 40 body lines, one a configuration.
    body = [_cells(line, "│") for line in lines if line.startswith("│")]
    assert len(body) == 40
    column = dict(zip(headers, zip(*body, strict=True), strict=True))
    table = agg.table
    assert list(column["val/acc ↑"]) == [
        mean_std(m, s) for m, s in zip(table["val/acc_mean"], table["val/acc_std"], strict=True)
    ]
    # Learning rates as Optuna samples them, rounded to 4 significant digits.
    assert set(column["optim.lr"]) == {f"{lr:.4g}" for lr in LRS}
    assert "0.0001235" in column["optim.lr"] and "0.0001234567891" not in text
    # The columns left out are named, with how to see them.
    note = " ".join(text.split()).split("Not shown at 100 columns: ", 1)[1].split(" (--wide")[0]
    assert set(note.split(", ")) == known - set(headers) != set()
    assert "(--wide shows every column;" in text


def test_wide_shows_every_column_and_the_reasons(tmp_path):
    agg = build_report([sweep(tmp_path / "runs")])
    text = to_table(agg, 100, wide=True)
    (headers,) = _headers(text)
    assert {"status", "folds", "best epoch", "val/loss", "test/acc", "test/loss", "reason"} <= set(
        headers
    )
    assert max(cell_len(line) for line in text.splitlines()) > 100


def test_explain_lists_each_reason_wrapped_at_words(tmp_path):
    agg = build_report([sweep(tmp_path / "runs")])
    text = to_table(agg, 80, explain=True)
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    joined = " ".join(text.split())
    for reason in agg.table["reason"]:
        assert " ".join(reason.split()) in joined  # whole, only wrapped at spaces
    assert "reason" not in _headers(text)[0]


def test_one_table_per_dataset_each_ranked_on_its_own(tmp_path):
    agg = build_report([sweep(tmp_path / "runs", ("iris", "wine"))])
    text = to_table(agg, 100)
    titles = [line for line in text.splitlines() if line.startswith("dataset=")]
    assert [t.split(":")[0] for t in titles] == ["dataset=iris (classification)",
                                                 "dataset=wine (classification)"]  # fmt: skip
    assert len(_headers(text)) == 2
    ranks = agg.table.groupby(agg.table["dataset"])["rank"].apply(list)
    assert ranks["iris"] == list(range(1, 41)) and ranks["wine"] == list(range(1, 41))


def test_by_never_pools_datasets(tmp_path, cli):
    root = sweep(tmp_path / "runs", ("iris", "wine"))
    agg = build_report([root], ReportOptions(by=("optim",)))
    assert list(agg.table["dataset"]) == ["iris", "iris", "wine", "wine"]
    assert (agg.table["n_runs"] == 20).all()
    assert any("never pools datasets" in note for note in agg.notes)
    result = cli("report", str(root), "--by", "optim", "--format", "csv")
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert sorted(zip(frame["dataset"], frame["rank"], strict=True)) == [
        ("iris", 1), ("iris", 2), ("wine", 1), ("wine", 2)
    ]  # fmt: skip


def test_top_keeps_the_best_of_each_dataset(tmp_path):
    agg = build_report([sweep(tmp_path / "runs", ("iris", "wine"))], ReportOptions(top=3))
    assert sorted(agg.shown.groupby("dataset")["rank"].apply(list).items()) == [
        ("iris", [1, 2, 3]), ("wine", [1, 2, 3])
    ]  # fmt: skip


def test_the_command_fits_100_columns_in_a_pipe(cli, tmp_path):
    sweep(tmp_path / "runs")
    result = cli("report", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert max(cell_len(line) for line in result.stdout.splitlines()) <= 100
    explained = cli("report", str(tmp_path / "runs"), "--explain").stdout
    assert "Diagnosis: train error" in explained


@pytest.mark.parametrize(
    ("mean", "std", "text"),
    [
        (0.9754, 0.0135, "0.975 ± 0.013"),
        (356.5982, 18.3054, "357 ± 18"),
        (0.0091, 0.0009, "0.00910 ± 0.00090"),
        (0.0916, 0.1109, "0.092 ± 0.111"),
        (0.98, float("nan"), "0.98"),
        (2e14, 3e13, "2e+14 ± 3e+13"),
        (0.5, 1e-9, "0.5 ± 1e-09"),
    ],
)
def test_mean_std_rounds_to_the_spread(mean, std, text):
    assert mean_std(mean, std) == text


def test_number_rounds_to_four_significant_digits():
    assert [number(x) for x in (0.023712345678, 1000.0, 1e-5, 3, 1e7)] == [
        "0.02371", "1000", "1e-05", "3", "1e+07"
    ]  # fmt: skip


def test_layout_never_makes_a_column_narrower_than_its_longest_word():
    columns = [
        Column("rank", ["1"], 0),
        Column("val/loss", ["0.12 ± 0.01"], 0),
        Column("a long header", ["x"], 1, wrap=True),
        Column("test/loss", ["0.13 ± 0.02"], 2),
    ]
    shown, hidden = layout(columns, 40)
    assert [c.header for c in hidden] == ["test/loss"]
    assert all(c.width >= c.minimum() for c in shown)
    assert sum(c.width for c in shown) + 3 * len(shown) + 1 <= 40
