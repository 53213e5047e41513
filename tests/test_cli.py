"""The CLI, in-process: training, sweeps through Hydra's launcher, report, and bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlcli.config import group_options
from tests.conftest import TINY


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("status.json")) if root.exists() else []


def test_help_lists_every_group_and_option(cli):
    result = cli("train", "--help")
    assert result.exit_code == 0
    # Long option lists wrap onto several lines: compare with the whitespace collapsed.
    text = " ".join(result.output.split())
    for group, options in group_options().items():
        assert f"{group} {' | '.join(options)}" in text, group


def test_help_does_not_import_torch_or_pandas():
    code = (
        "import sys; from typer.testing import CliRunner; from mlcli.cli import app; "
        "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0; "
        "print(sorted(m for m in ('torch', 'pandas', 'hydra', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "code", "stream", "text"),
    [
        (["train", *TINY], 0, "stdout", "mean ± std over 2 folds"),
        (["train", "model=cnnn"], 2, "stderr", "Did you mean 'cnn'?"),
        (["report", "no/such/dir"], 2, "stderr", "no such file or directory"),
        (["--help"], 0, "stdout", "Usage"),
    ],
    ids=["train", "bad-config", "bad-report-path", "help"],
)
def test_the_console_command_exits_with_its_code_and_flushes_its_output(
    tmp_path, args, code, stream, text
):
    """``python -m mlcli`` leaves without the interpreter's teardown: nothing may be lost."""
    done = subprocess.run(
        [sys.executable, "-m", "mlcli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == code, done.stderr[-2000:]
    assert text in " ".join(getattr(done, stream).split()), getattr(done, stream)[-2000:]
    if args[0] == "train" and code == 0:
        (run_dir,) = _run_dirs(tmp_path / "outputs" / "runs")
        assert json.loads((run_dir / "status.json").read_text())["state"] == "COMPLETED"


def test_train_writes_a_run_dir_and_prints_the_fold_summary(cli, tmp_path):
    result = cli("train", *TINY)
    assert result.exit_code == 0, result.output
    assert "mean ± std over 2 folds" in result.output and "val/acc" in result.output
    (run_dir,) = _run_dirs(tmp_path / "outputs" / "runs")
    assert (run_dir / "results.parquet").is_file()


def test_multirun_grid_then_report_csv(cli, tmp_path, capsys):
    result = cli("train", "-m", "optim=sgd,adam", "optim.lr=1e-3,1e-2", *TINY)
    assert result.exit_code == 0, result.output
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert len(_run_dirs(sweep)) == 4

    result = cli("report", str(sweep), "--format", "csv")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.output))
    assert len(frame) == 4
    assert {"optim", "optim.lr", "val/acc_mean", "val/acc_std", "n_folds"} <= set(frame.columns)
    assert set(zip(frame["optim"], frame["optim.lr"], strict=True)) == {
        ("sgd", 0.001), ("sgd", 0.01), ("adam", 0.001), ("adam", 0.01)
    }  # fmt: skip
    assert (frame["n_folds"] == 2).all()
    # ranked by val/acc, best first
    assert list(frame["val/acc_mean"]) == sorted(frame["val/acc_mean"], reverse=True)

    for fmt in ("table", "markdown", "json"):
        assert cli("report", str(sweep), "--format", fmt).exit_code == 0


def test_same_command_twice_gives_identical_results(cli, tmp_path):
    assert cli("train", *TINY).exit_code == 0
    assert cli("train", *TINY, "--rerun").exit_code == 0  # without --rerun it is skipped
    a, b = (pd.read_parquet(d / "results.parquet") for d in _run_dirs(tmp_path / "outputs"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


BAD_INPUTS = [
    (["model=cnnn"], "model", "linear, mlp"),
    (["modle=mlp"], "modle", "Did you mean 'model'"),
    (["optim.lrr=1"], "optim.lrr", "Did you mean 'lr'"),
    (["+optim.lrr=1"], "optim.lrr", "Did you mean 'lr'"),
    (["optim.lr=abc"], "optim.lr", "could not be converted to Float"),
    (["optim.lr="], "optim.lr", "could not be converted"),
    (["optim.lr=-0.1"], "optim.lr", "must be > 0"),
    (["epochs=0"], "epochs", "must be >= 1"),
    (["cv.n_splits=1"], "cv.n_splits", "must be >= 2"),
    (["device=gpu"], "device", "auto, cpu, cuda"),
    (["-m", "optim.lr=0.1,abc"], "optim.lr", "could not be converted to Float"),
    (["dataset.test_fraction=???"], "dataset.test_fraction", "a value is required"),
    (["model._target_=os.system"], "model._target_", "allowlist"),
    # the selection metric must be one the task records (not found after a whole sweep)
    (["metric=val/acc2"], "metric", "Did you mean 'val/acc'? Valid: auto, train/acc"),
    (["-m", "metric=val/acc,val/accc"], "metric", "Did you mean 'val/acc'"),
    (["dataset=diabetes", "metric=r2"], "metric",
     "a regression run records. Did you mean 'val/r2'"),
    (["dataset=diabetes", "metric=val/acc"], "metric", "val/mse, val/r2"),
    (["dataset._target_=tests.synthetic.vectors", "allow_targets=[tests.synthetic]",
      "metric=val/exact_mach"], "metric", "any task records. Did you mean 'val/exact_match'"),
    (["analysis=hessian", "metric=train/grad_nrm"], "metric", "Did you mean 'train/grad_norm'"),
    (["batch_size=1", "model.batch_norm=true"], "batch_size", "model.batch_norm=false"),
    (["diverge_factor=0.5"], "diverge_factor", "must be >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "key", "hint"), BAD_INPUTS, ids=lambda v: str(v))
def test_bad_input_exits_2_naming_the_key_and_writes_nothing(cli, tmp_path, args, key, hint):
    result = cli("train", *args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # undo rich's line wrapping
    assert key in text and hint in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()


def test_failing_job_is_recorded_and_the_sweep_goes_on_then_exits_1(cli, tmp_path, monkeypatch):
    (tmp_path / "boom.py").write_text(
        "def Exploding(in_shape, out_features, **hparams):\n    raise RuntimeError('boom')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli(
        "train", "-m", "model._target_=boom.Exploding,mlcli.models.mlp", "allow_targets=[boom]",
        *TINY,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "1 job(s) did not complete" in result.output
    assert "RuntimeError: boom" in result.output and "allow_targets=[boom]" in result.output
    statuses = {
        d.name: json.loads((d / "status.json").read_text()) for d in _run_dirs(tmp_path / "outputs")
    }
    assert {s["state"] for s in statuses.values()} == {"COMPLETED", "FAILED"}
    failed = next(s for s in statuses.values() if s["state"] == "FAILED")
    assert failed["error"] == {"type": "RuntimeError", "message": "boom"}


def test_user_conf_dir_adds_a_model_of_their_own(cli, tmp_path, monkeypatch):
    (tmp_path / "mypkg.py").write_text(
        "import math\nfrom torch import nn\n\n"
        "def TinyNet(in_shape, out_features, width=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width),\n"
        "                         nn.ReLU(), nn.Linear(width, out_features))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("_target_: mypkg.TinyNet\nwidth: 4\n")
    assert "tiny" in cli("train", "--help").output
    refused = cli("train", "model=tiny", *TINY)
    assert refused.exit_code == 2 and "allow_targets" in refused.output
    result = cli("train", "model=tiny", "allow_targets=[mypkg]", *TINY)
    assert result.exit_code == 0, result.output
