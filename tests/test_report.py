"""``mlcli report`` on checked-in run dirs from a real seeded sweep (tests/data/make_runs.py).

tests/data/runs: wine, 2 folds, 6 epochs; optim=sgd,adam × optim.lr=0.01,0.1 × seed=0,1 (8
COMPLETED runs), one DIVERGED run (sgd, lr=1000) and one FAILED run (sgd, nesterov without
momentum).
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests import docs

DATA = Path(__file__).parent / "data"
EXPECTED = DATA / "expected"


@pytest.fixture
def in_data(monkeypatch):
    """Run from tests/data so run dirs read as runs/... (as in the golden files)."""
    monkeypatch.chdir(DATA)


def csv_of(result) -> pd.DataFrame:
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def final_values(run_dirs: list[Path], split: str, metric: str, at: int | None = None) -> list:
    """Per (run, fold) value at the last epoch (or at epoch ``at``), read independently."""
    values = []
    for run_dir in run_dirs:
        rows = pq.read_table(run_dir / "results.parquet").to_pandas()
        rows = rows[(rows["split"] == split) & (rows["metric"] == metric)]
        for _, fold in rows.groupby("fold"):
            epoch = fold["epoch"].max() if at is None else at
            values.extend(fold.loc[fold["epoch"] == epoch, "value"])
    return values


def sweep_runs(**config: str) -> list[Path]:
    """The sweep's run dirs whose overrides include every key=value given."""
    found = []
    for run_dir in sorted((DATA / "runs" / "sweep").iterdir()):
        if run_dir.is_dir():
            overrides = json.loads((run_dir / "status.json").read_text())["overrides"]
            if all(f"{k}={v}" in overrides for k, v in config.items()):
                found.append(run_dir)
    return found


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("report.csv", ["--format", "csv"]),
        ("report.json", ["--format", "json"]),
        ("report_best.csv", ["--format", "csv", "--at", "best"]),
    ],
)
def test_golden_summaries_and_byte_identical_reruns(cli, in_data, name, args):
    first = cli("report", "runs", *args)
    second = cli("report", "runs", *args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    assert first.stdout == (EXPECTED / name).read_text(encoding="utf-8")


def test_means_come_from_completed_runs_only_and_match_the_raw_rows(cli, in_data):
    frame = csv_of(cli("report", "runs", "--format", "csv"))
    assert list(frame["status"]) == ["COMPLETED×2"] * 4 + ["FAILED", "DIVERGED"]
    adam = frame[(frame["optim"] == "adam") & (frame["optim.lr"] == 0.01)].iloc[0]
    values = pd.Series(final_values(sweep_runs(optim="adam", **{"optim.lr": "0.01"}), "val", "acc"))
    assert adam["n_folds"] == len(values) == 4 and adam["n_seeds"] == 2
    assert adam["val/acc_mean"] == pytest.approx(values.mean(), rel=1e-5)
    assert adam["val/acc_std"] == pytest.approx(values.std(ddof=1), rel=1e-5)
    # Ranked best first by the runs' selection metric (val/acc ↑); failures last, unranked.
    assert list(frame["rank"].iloc[:4]) == [1, 2, 3, 4]
    assert frame["val/acc_mean"].iloc[:4].is_monotonic_decreasing
    failed, diverged = frame.iloc[4], frame.iloc[5]
    assert pd.isna(failed["rank"]) and pd.isna(failed["val/acc_mean"]) and failed["n_folds"] == 0
    assert failed["reason"].startswith("ValueError: Nesterov momentum requires a momentum")
    assert diverged["diagnosis"] == "diverged" and "loss became nan" in diverged["reason"]


def test_a_failed_run_in_a_configuration_with_completed_ones_stays_out_of_its_mean(cli, in_data):
    frame = csv_of(cli("report", "runs", "--by", "optim", "--format", "csv"))
    sgd = frame.set_index("optim").loc["sgd"]
    assert sgd["status"] == "COMPLETED×4,FAILED,DIVERGED" and sgd["n_runs"] == 6
    values = final_values(sweep_runs(optim="sgd"), "val", "acc")
    assert sgd["n_folds"] == len(values) == 8
    assert sgd["val/acc_mean"] == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_diagnosis_of_the_real_sweep(cli, in_data):
    frame = csv_of(cli("report", "runs", "--format", "csv")).set_index(["optim", "optim.lr"])
    # 6 epochs with both losses still falling: not converged (train longer), not model bias.
    assert frame.loc[("sgd", 0.01), "diagnosis"] == "not converged"
    assert "still falling at epoch 6" in frame.loc[("sgd", 0.01), "reason"]
    # Adam at lr 0.1: its train loss ends far above its lowest (0.0734 → 0.2128): unstable.
    assert frame.loc[("adam", 0.1), "diagnosis"] == "unstable"
    assert "+190% above its lowest 0.0734" in frame.loc[("adam", 0.1), "reason"]
    assert frame.loc[("adam", 0.01), "diagnosis"] == "not converged"
    assert frame.loc[("sgd", 0.01), "train_error"] > frame["train_error"].min() + 0.05


def test_at_best_takes_the_best_epoch_of_the_fold_mean_val_curve(cli, in_data):
    frame = csv_of(cli("report", "runs", "--at", "best", "--format", "csv"))
    row = frame[(frame["optim"] == "adam") & (frame["optim.lr"] == 0.1)].iloc[0]
    runs = sweep_runs(optim="adam", **{"optim.lr": "0.1"})
    curve = {e: pd.Series(final_values(runs, "val", "acc", at=e)).mean() for e in range(1, 7)}
    best = max(curve, key=lambda e: (curve[e], -e))  # highest, earliest on ties
    assert row["best_epoch"] == best
    assert row["val/acc_mean"] == pytest.approx(curve[best], rel=1e-5)
    # the test split is evaluated once, after the last epoch
    final = csv_of(cli("report", "runs", "--format", "csv"))
    assert row["test/acc_mean"] == final.set_index("rank").loc[row["rank"], "test/acc_mean"]


def test_where_top_metric_and_by(cli, in_data):
    adam = csv_of(cli("report", "runs", "--where", "optim=adam", "--format", "csv"))
    assert list(adam.columns[:3]) == ["rank", "optim.lr", "status"]  # optim no longer varies
    assert sorted(adam["optim.lr"]) == [0.01, 0.1]
    lrs = csv_of(cli("report", "runs", "--where", "optim.lr=1e-2,1000", "--format", "csv"))
    assert set(lrs["optim.lr"]) == {0.01, 1000.0}
    top = csv_of(cli("report", "runs", "--top", "2", "--format", "csv"))
    assert list(top["rank"]) == [1, 2]
    by_loss = csv_of(cli("report", "runs", "--metric", "val/loss", "--format", "csv"))
    assert by_loss["val/loss_mean"].iloc[:4].is_monotonic_increasing  # loss: lower is better
    short = csv_of(cli("report", "runs", "--metric", "loss", "--format", "csv"))
    pd.testing.assert_frame_equal(short, by_loss)
    completed = csv_of(cli("report", "runs", "--where", "state=COMPLETED", "--format", "csv"))
    assert set(completed["status"]) == {"COMPLETED×2"}


def test_compare_puts_each_option_at_its_best_setting_side_by_side_with_plots(
    cli, in_data, tmp_path
):
    plots = tmp_path / "plots"
    result = cli("report", "runs", "--compare", "optim", "--format", "csv", "--plots", str(plots))
    frame = csv_of(result)
    assert list(frame["optim"]) == ["adam", "sgd"]
    assert list(frame["optim.lr"]) == [0.01, 0.1]  # each optimizer's best learning rate
    names = sorted(p.name for p in plots.iterdir())
    assert names == [
        "compare_optim.png", "curves_01.png", "curves_02.png", "lr.png",
        "val_acc_vs_optim.lr.png", "val_acc_vs_optim.png",
    ]  # fmt: skip
    # optim.nesterov has a value other than False only in the FAILED run: nothing to plot.
    for name in names:
        data = (plots / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
    table = cli("report", "runs", "--compare", "optim")
    assert "optim: each at its best setting" in table.stdout


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.cells = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes["src"])
        if tag == "td":
            self.cells += 1
        for key in ("src", "href"):
            if attributes.get(key) and not attributes[key].startswith("data:"):
                self.external.append(attributes[key])


def test_html_is_one_self_contained_file_and_deterministic(cli, in_data, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", "runs", "--format", "html", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    text = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert page.external == []  # nothing to fetch: readable offline
    assert len(page.images) == 7
    for src in page.images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,"))[:4] == b"\x89PNG"
    assert "Runs that did not complete" in text and "runs/diverged" in text
    assert "Nesterov momentum requires a momentum" in text
    # Same runs, same bytes: the PNGs carry no timestamp or version.
    from mlcli.report import build_report
    from mlcli.report.plots import learning_curves

    agg = build_report([Path("runs")])
    assert learning_curves(agg, agg.table.index[0]) == learning_curves(agg, agg.table.index[0])


def test_markdown_and_table_show_every_state(cli, in_data):
    markdown = cli("report", "runs", "--format", "markdown").stdout
    lines = markdown.splitlines()
    assert lines[0] == "### Configurations"
    header = next(line for line in lines if line.startswith("| rank"))
    assert header.startswith("| rank | optim | optim.lr | optim.nesterov | status | folds | best")
    assert "| 1 | adam | 0.01 |  | COMPLETED×2 | 4 | 6 | 0.9754 ± 0.0135 |" in markdown
    assert "| runs/failed | FAILED | sgd | 0.05 | True | 0/2 | ValueError" in markdown
    table = cli("report", "runs").stdout
    # The terminal rounds a mean to its spread (the second significant digit of the std).
    for text in ("DIVERGED", "FAILED", "not converged", "unstable", "0.975 ± 0.013"):
        assert text in table


# A config value and an error message from someone else's run dir, out to break the table and
# to add HTML, a link, an image, code, emphasis, strikethrough and math to a pull request.
HOSTILE = (
    "a | b\nc `code` <script>alert(1)</script> <img src=x onerror=alert(1)> &amp; *bold* "
    "__strong__ _it_ [link](http://evil.example) ![img](http://evil.example/i.png) ~~s~~ $x^2$ "
    "\\| #h"
)


class _Rendered(html.parser.HTMLParser):
    """The HTML a markdown renderer makes of a report: its tags and its tables' cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.tables: list[list[list[str]]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag):
        self.in_cell = self.in_cell and tag not in ("td", "th")

    def handle_data(self, data):
        if self.in_cell:
            self.tables[-1][-1][-1] += data


def test_markdown_shows_hostile_config_values_and_errors_as_written(cli, tmp_path):
    import shutil

    import yaml
    from markdown_it import MarkdownIt

    shutil.copytree(DATA / "runs", tmp_path / "runs")
    failed = tmp_path / "runs" / "fail_ed *x*"
    (tmp_path / "runs" / "failed").rename(failed)
    config = yaml.safe_load((failed / "config.yaml").read_text())
    config["model"]["activation"] = HOSTILE
    (failed / "config.yaml").write_text(yaml.safe_dump(config))
    status = json.loads((failed / "status.json").read_text())
    status["error"]["message"] = HOSTILE
    (failed / "status.json").write_text(json.dumps(status))

    result = cli("report", "runs", "--format", "markdown")
    assert result.exit_code == 0, result.output
    # Rendered as GitHub would (raw HTML allowed): only the report's own structure comes out.
    page = _Rendered()
    page.feed(MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(
        result.stdout
    ))  # fmt: skip
    assert page.tags <= {"h3", "h4", "p", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}
    configurations, incomplete = page.tables
    for table in page.tables:  # no cell split or row broken by a value
        assert {len(row) for row in table} == {len(table[0])}
    shown = " ".join(HOSTILE.split("\n"))
    header = configurations[0]
    (row,) = [r for r in configurations if r[header.index("model.activation")] == shown]
    assert row[header.index("reason")] == f"ValueError: {shown}"
    header = incomplete[0]
    (row,) = [r for r in incomplete if r[header.index("run_dir")] == "runs/fail_ed *x*"]
    assert row[header.index("error")] == f"ValueError: {shown}"


BAD = [
    (["--by", "optim.lrr"], "--by optim.lrr: no run has this config key. Did you mean 'optim.lr'"),
    (["--where", "optimm=adam"], "--where optimm: no run has this config key"),
    (["--where", "optim"], "expected KEY=VALUE"),
    (["--where", "optim=rmsprop"], "no run matches"),
    (["--metric", "val/f1"], "--metric val/f1: not recorded by these runs; choose one of val/acc"),
    (
        ["--metric", "val/acc2"],
        "choose one of val/acc, val/loss, test/acc, test/loss, train/acc, "
        "train/loss. Did you mean 'val/acc'?",
    ),
    (["--compare", "epochs"], "--compare epochs: every run has epochs=6"),
    (["nowhere"], "nowhere: no such file or directory"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=lambda v: str(v))
def test_bad_input_exits_2_and_writes_nothing(cli, in_data, tmp_path, args, message):
    out = tmp_path / "out.csv"
    result = cli("report", "runs", *args, "--format", "csv", "--out", str(out))
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output
    assert not out.exists()


def test_no_runs_and_out_as_a_directory_are_usage_errors(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("report", str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no runs found" in result.output
    result = cli("report", str(DATA / "runs"), "--out", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.output


def test_report_help_does_not_import_pandas_or_matplotlib():
    code = (
        "import sys; from typer.testing import CliRunner; from mlcli.cli import app; "
        "r = CliRunner().invoke(app, ['report', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _readme_report_section() -> str:
    return docs.page("guide/report.md").split("\n## Configurations and numbers\n", 1)[0]


def test_every_readme_report_example_runs(cli, tmp_path):
    """Each `mlcli report` line of the report page, on a copy of tests/data/runs (its
    `<sweep dir>` is that copy)."""
    import shlex
    import shutil

    shutil.copytree(DATA / "runs" / "sweep", tmp_path / "outputs/sweeps/2026-11-25_10-00-00-000000")
    for name in ("failed", "diverged"):
        shutil.copytree(DATA / "runs" / name, tmp_path / "outputs" / "runs" / name)
    shutil.copytree(DATA / "runs", tmp_path / "tests" / "data" / "runs")
    section = _readme_report_section()
    commands = [
        line.split("#")[0].replace("<sweep dir>", "2026-11-25_10-00-00-000000")
        for line in section.splitlines()
        if line.startswith("mlcli ")
    ]
    assert len(commands) == 9
    outputs = {}
    for command in commands:
        result = cli(*shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output)
        outputs[command.strip()] = result.stdout
    assert (tmp_path / "plots" / "compare_optim.png").is_file()
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # The sample output on the page is what the command prints.
    sample = section.split("```text\n", 1)[1].split("```", 1)[0]
    assert sample == outputs["mlcli report tests/data/runs"]
