"""Saved models and ``mlcli predict``: the run dir alone predicts what the in-memory models
predict; the final model (fold ensemble or refit) is tested once; the homework layout (repeated
header names, an id column, a test file without the target) ends in a submission file; bad
prediction files exit 2 naming the column, and write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlcli import rundir, runner
from mlcli.data.preprocess import apply_preprocess, fold_tensors
from mlcli.data.reading import read_table
from mlcli.engine.fold import fit_fold
from mlcli.engine.saved import Predictor, load_predictor, rebuild
from mlcli.rundir.models import load_model, read_schema
from tests.homework import write_homework

ROOT = Path(__file__).parents[1]
FAST = ["progress=false", "cv.n_splits=3", "epochs=5"]


def _run_dir(root: Path) -> Path:
    (found,) = [p.parent for p in root.rglob("status.json")]
    return found


def _labelled_csv(path: Path, rng_seed: int = 0) -> pd.DataFrame:
    """iris with text labels, an id, a categorical column and a few missing cells."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rng = np.random.default_rng(rng_seed)
    frame = pd.DataFrame(iris.data, columns=["sl", "sw", "pl", "pw"])
    frame.insert(0, "id", np.arange(1000, 1000 + len(frame)))
    frame["soil"] = rng.choice(["clay", "loam", "sand"], len(frame))
    frame.loc[rng.choice(len(frame), 6, replace=False), "sw"] = np.nan
    frame["species"] = np.asarray(iris.target_names)[iris.target]
    frame.to_csv(path, index=False)
    return frame


IRIS_CSV = [
    "dataset=csv", "dataset.path=iris.csv", "dataset.target=species", "dataset.drop=[id]",
    "dataset.missing=mean", "model=mlp", *FAST,
]  # fmt: skip


def test_a_header_that_repeats_names_is_read_as_pandas_reads_it(tmp_path):
    path = tmp_path / "days.csv"
    path.write_text("id,cli,tested_positive,cli,tested_positive,cli.1\n1,2,3,4,5,6\n")
    table = read_table(str(path))
    assert table.columns == list(pd.read_csv(path).columns)
    assert table.columns == ["id", "cli", "tested_positive", "cli.2", "tested_positive.1", "cli.1"]
    assert table.renamed == ["cli.2", "tested_positive.1"]
    rng = np.random.default_rng(0)
    for _ in range(300):  # random headers: always pandas' names
        names = list(rng.choice(["a", "b", "a.1", "a.2", "b.1", "a.1.1"], rng.integers(1, 8)))
        header = ",".join(names) + "\n" + ",".join("1" * len(names)) + "\n"
        path.write_text(header)
        assert read_table(str(path)).columns == list(pd.read_csv(path).columns), names


def test_the_saved_preprocessing_applies_exactly_what_training_applied(compose, tmp_path):
    _labelled_csv(tmp_path / "iris.csv")
    for overrides in (IRIS_CSV, [*IRIS_CSV, "dataset.normalize=minmax"], ["dataset=wine"]):
        cfg = compose(*overrides)
        plan = runner.plan_folds(cfg, "key")
        train_idx, val_idx = plan.folds[1]
        data = fold_tensors(plan.dataset, train_idx, val_idx, plan.test_idx, cfg.dataset,
                            plan.device)  # fmt: skip
        again = apply_preprocess(data.preprocess, plan.dataset.X[plan.test_idx])
        assert data.x_test is not None
        np.testing.assert_array_equal(again, data.x_test.numpy())


def test_predictions_from_the_run_dir_equal_the_in_memory_models(compose, tmp_path):
    _labelled_csv(tmp_path / "iris.csv")
    cfg = compose(*IRIS_CSV, "stack_folds=off")
    run_dir = tmp_path / "run"
    runner.run(cfg, run_dir)
    plan = runner.plan_folds(cfg, "key", run_dir=tmp_path / "memory")
    trained = fit_fold(plan, 2)  # the fold trained again, in this process
    assert trained.model is not None
    schema = read_schema(run_dir)
    model = rebuild(schema, {k: v.numpy() for k, v in trained.model.items()}, trained.preprocess)
    train_idx, val_idx = plan.folds[2]
    data = fold_tensors(plan.dataset, train_idx, val_idx, plan.test_idx, cfg.dataset, plan.device)
    with torch.no_grad():
        in_memory = torch.softmax(model(data.x_test).double(), dim=-1).numpy()
    saved = load_predictor(run_dir).member_outputs(plan.dataset.X[plan.test_idx])[2]
    np.testing.assert_array_equal(saved, in_memory)


def test_the_ensemble_is_the_mean_of_the_fold_models_and_is_tested_once(compose, tmp_path):
    cfg = compose("dataset=wine", "model=mlp", *FAST, "final=ensemble")
    run_dir = tmp_path / "run"
    runner.run(cfg, run_dir)
    plan = runner.plan_folds(cfg, "key")
    x_test, y_test = plan.dataset.X[plan.test_idx], plan.dataset.y[plan.test_idx]
    schema = read_schema(run_dir)
    singles = []
    for fold in range(3):
        weights, preprocess = load_model(run_dir, f"fold-{fold}")
        one = Predictor("classification", [(rebuild(schema, weights, preprocess), preprocess)])
        singles.append(one.predict(x_test))
    ensemble = load_predictor(run_dir).predict(x_test)
    np.testing.assert_allclose(ensemble, np.mean(singles, axis=0), rtol=0, atol=1e-15)
    rows = pd.read_parquet(run_dir / "results.parquet")
    final = rows[rows["split"] == "final"].set_index("metric")["value"]
    assert set(rows[rows["split"] == "final"]["fold"]) == {-1}
    assert final["acc"] == pytest.approx(float(np.mean(ensemble.argmax(1) == y_test)))
    assert len(rows[rows["split"] == "test"]) == 3 * 2  # the fold-mean test metrics stay


def _train_in_process(out: Path, *overrides: str) -> Path:
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    subprocess.run(
        [sys.executable, "-m", "mlcli", "train", f"outputs_root={out}", *overrides],
        check=True, cwd=out.parent, env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    return _run_dir(out)


def test_refit_is_bit_identical_across_two_fresh_processes(tmp_path):
    overrides = ["dataset=diabetes", "model=mlp", *FAST, "epochs=30",
                 "early_stopping.patience=2", "optim.lr=0.03", "final=refit"]  # fmt: skip
    first = _train_in_process(tmp_path / "a", *overrides)
    second = _train_in_process(tmp_path / "b", *overrides)
    a, b = (d / "models/final.safetensors" for d in (first, second))
    assert a.read_bytes() == b.read_bytes()
    status = rundir.read_json(first / "status.json")
    bests = [e["best"] for e in status["fold_epochs"].values()]
    assert status["final_model"] == {"kind": "refit", "epochs": round(np.mean(bests))}
    rows = [pd.read_parquet(d / "results.parquet") for d in (first, second)]
    final = [r[r["split"] == "final"].reset_index(drop=True) for r in rows]
    assert set(final[0]["metric"]) == {"mse", "mae", "r2"}
    pd.testing.assert_frame_equal(final[0], final[1])


@pytest.mark.slow
def test_the_homework_ends_in_a_submission_close_to_least_squares(cli, tmp_path):
    train, test, held = write_homework(tmp_path)
    result = cli(
        "train", "dataset=csv", f"dataset.path={train}", "dataset.target=tested_positive.2",
        "dataset.drop=[id]", "model=mlp", "epochs=300", "early_stopping.patience=10",
        "final=ensemble", "progress=false",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = _run_dir(tmp_path / "outputs")
    status = rundir.read_json(run_dir / "status.json")
    assert all(e["last"] < 300 for e in status["fold_epochs"].values())  # stopped early
    assert any("repeats column names" in note for note in status["data_notes"])
    result = cli("predict", str(run_dir), "--data", str(test), "--out", "sub.csv")
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(tmp_path / "sub.csv")
    assert list(submission.columns) == ["id", "tested_positive"]
    assert submission["id"].tolist() == pd.read_csv(test)["id"].tolist()
    frame = pd.read_csv(train)
    x = frame.drop(columns=["id", "tested_positive.2"]).to_numpy()
    design = np.column_stack([x, np.ones(len(x))])
    w = np.linalg.lstsq(design, frame["tested_positive.2"].to_numpy(), rcond=None)[0]
    x_test = pd.read_csv(test).drop(columns=["id"]).to_numpy()
    ols = np.mean((np.column_stack([x_test, np.ones(len(x_test))]) @ w - held) ** 2)
    mse = np.mean((submission["tested_positive"].to_numpy() - held) ** 2)
    assert mse < 1.5 * ols, (mse, ols)


def test_class_labels_come_back_with_their_names(cli, tmp_path):
    frame = _labelled_csv(tmp_path / "iris.csv")
    frame.drop(columns=["species"]).assign(extra=1).to_csv(tmp_path / "new.csv", index=False)
    assert cli("train", *IRIS_CSV).exit_code == 0
    run_dir = _run_dir(tmp_path / "outputs")
    result = cli("predict", str(run_dir), "--data", "new.csv", "--out", "labels.csv")
    assert result.exit_code == 0, result.output
    assert "extra" in result.output  # the column the model does not use, ignored with a note
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == ["id", "species"]
    assert labels["id"].tolist() == frame["id"].tolist()
    assert set(labels["species"]) <= {"setosa", "versicolor", "virginica"}
    assert (labels["species"] == frame["species"]).mean() > 0.6


def test_digits_probabilities_one_column_per_class_summing_to_one(cli, tmp_path):
    from sklearn.datasets import load_digits

    assert cli("train", "dataset=digits", *FAST, "epochs=2").exit_code == 0
    run_dir = _run_dir(tmp_path / "outputs")
    np.savez(tmp_path / "digits.npz", X=load_digits().images[:50, None])
    for out in ("proba.csv", "proba.parquet"):
        result = cli("predict", str(run_dir), "--data", "digits.npz", "--out", out, "--proba")
        assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "proba.csv")
    assert list(frame.columns) == ["id", *map(str, range(10))]
    np.testing.assert_allclose(frame.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-12)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "proba.parquet"), frame, check_names=False, check_dtype=False
    )


@pytest.mark.parametrize(
    ("edit", "column", "says"),
    [
        (lambda f: f.drop(columns=["pl"]), "pl", "no feature column 'pl'"),
        (lambda f: f.assign(sl=f["sl"].astype(object).where(f.index != 4, "wide")), "sl", "line 6"),
        (lambda f: f.assign(soil=f["soil"].where(f.index != 2, "peat")), "soil", "never saw"),
    ],
    ids=["missing-column", "not-a-number", "unknown-category"],
)
def test_a_bad_prediction_file_exits_2_naming_the_column_and_writes_nothing(
    cli, tmp_path, edit, column, says
):
    frame = _labelled_csv(tmp_path / "iris.csv")
    assert cli("train", *IRIS_CSV, "epochs=1").exit_code == 0
    edit(frame.drop(columns=["species"])).to_csv(tmp_path / "bad.csv", index=False)
    result = cli("predict", str(_run_dir(tmp_path / "outputs")), "--data", "bad.csv")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"'{column}'" in text and says in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "predictions.csv").exists()


def test_predict_on_a_run_without_models_says_how_to_get_them(cli, tmp_path):
    _labelled_csv(tmp_path / "iris.csv")
    assert cli("train", *IRIS_CSV, "epochs=1", "save_models=false").exit_code == 0
    run_dir = _run_dir(tmp_path / "outputs")
    assert not (run_dir / "models").exists()
    result = cli("predict", str(run_dir), "--data", "iris.csv")
    assert result.exit_code == 2
    assert "save_models=true" in " ".join(result.output.split())
    assert not (tmp_path / "predictions.csv").exists()


def test_best_picks_the_top_configuration_of_a_sweep(cli, tmp_path):
    _labelled_csv(tmp_path / "iris.csv")
    result = cli("train", "-m", *IRIS_CSV, "optim.lr=1e-6,0.01", "hydra.sweep.dir=sweep")
    assert result.exit_code == 0, result.output
    result = cli("predict", "sweep", "--best", "--data", "iris.csv", "--out", "best.csv")
    assert result.exit_code == 0, result.output
    assert "optim.lr=0.01" in " ".join(result.output.split())


@pytest.mark.parametrize("damage", ["garbage-weights", "foreign-target", "pickle-in-npz"])
def test_a_damaged_or_hostile_run_dir_exits_2_and_runs_nothing(cli, tmp_path, damage):
    """Run dirs come from other people too: a schema naming a callable outside the allowlist,
    weights that are no safetensors file, an npz holding pickled objects: refused, exit 2."""
    import json

    _labelled_csv(tmp_path / "iris.csv")
    assert cli("train", *IRIS_CSV, "epochs=1").exit_code == 0
    models = _run_dir(tmp_path / "outputs") / "models"
    if damage == "garbage-weights":
        (models / "fold-1.safetensors").write_bytes(b"\x00garbage" * 10)
    elif damage == "foreign-target":
        schema = json.loads((models / "schema.json").read_text())
        schema["model"]["_target_"] = "os.system"
        (models / "schema.json").write_text(json.dumps(schema))
    else:
        np.savez(models / "fold-0.preprocess.npz", shift=np.array([object()], dtype=object))
    result = cli("predict", str(models.parent), "--data", "iris.csv")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "predictions.csv").exists()


def test_report_at_best_takes_each_early_stopped_fold_at_its_own_best_epoch(compose, tmp_path):
    """Folds that stopped at different epochs: ``--at best`` averages each fold's val metric
    at the epoch it restored (status.json's ``best``), every fold counted."""
    from mlcli.report.aggregate import ReportOptions, aggregate
    from mlcli.report.collect import collect

    cfg = compose("dataset=diabetes", "model=mlp", *FAST, "epochs=30",
                  "early_stopping.patience=2", "optim.lr=0.03")  # fmt: skip
    run_dir = tmp_path / "run"
    runner.run(cfg, run_dir)
    status = rundir.read_json(run_dir / "status.json")
    bests = {int(f): e["best"] for f, e in status["fold_epochs"].items()}
    assert len(set(bests.values())) > 1, bests  # the folds' best epochs differ
    agg = aggregate(collect([run_dir]), ReportOptions(at="best"))
    assert agg.rank_metric == f"val/{status['metric'].split('/')[-1]}"  # early stopping's monitor
    rows = pd.read_parquet(run_dir / "results.parquet")
    val = rows[(rows["split"] == "val") & (rows["metric"] == agg.rank_metric.split("/")[1])]
    at_best = [val[(val["fold"] == f) & (val["epoch"] == e)]["value"].item()
               for f, e in bests.items()]  # fmt: skip
    (row,) = agg.table.to_dict("records")
    assert row["n_folds"] == 3
    assert row[f"{agg.rank_metric}_mean"] == pytest.approx(np.mean(at_best), rel=1e-12)
    assert row["best_epoch"] == round(np.mean(list(bests.values())))
    assert any("each fold at its own best epoch" in note for note in agg.notes)


def _user_model(tmp_path: Path) -> None:
    """``./mynets.py`` with a builder, and ``./conf/model/tiny.yaml`` naming it."""
    (tmp_path / "mynets.py").write_text(
        "import math\nfrom torch import nn\n\n\n"
        "def Net(in_shape, out_features, width=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),\n"
        "                         nn.Linear(width, out_features))\n"
    )
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("_target_: mynets.Net\nwidth: 8\n")


def test_a_run_of_a_user_model_is_predicted_with_allow_and_refused_without(cli, tmp_path):
    """A run dir names its model's target; ``predict`` builds it only when the user admits
    its module (``--allow``), never because the run dir's config says ``allow_targets``."""
    frame = _labelled_csv(tmp_path / "iris.csv")
    frame.drop(columns=["species"]).to_csv(tmp_path / "new.csv", index=False)
    _user_model(tmp_path)
    overrides = [o for o in IRIS_CSV if o != "model=mlp"]
    result = cli("train", *overrides, "model=tiny", "allow_targets=[mynets]", "final=ensemble")
    assert result.exit_code == 0, result.output  # the final ensemble is scored with mynets.Net
    run_dir = _run_dir(tmp_path / "outputs")
    assert "mynets" in (run_dir / "config.yaml").read_text()
    result = cli("predict", str(run_dir), "--data", "new.csv", "--out", "labels.csv")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "'mynets.Net'" in text and "--allow mynets" in text
    assert "Traceback" not in result.output and not (tmp_path / "labels.csv").exists()
    result = cli("predict", str(run_dir), "--data", "new.csv", "--out", "labels.csv",
                 "--allow", "mynets")  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert labels["id"].tolist() == frame["id"].tolist()
    assert set(labels["species"]) <= {"setosa", "versicolor", "virginica"}
    result = cli("predict", str(run_dir), "--data", "new.csv", "--allow", "mlcli.predict")
    assert result.exit_code == 2 and "mlcli's own code" in " ".join(result.output.split())


@pytest.mark.parametrize("final", ["ensemble", "refit"])
def test_a_run_whose_model_files_are_gone_says_re_run_with_save_models(cli, tmp_path, final):
    """A run dir with its schema but not its weights (saved by an older mlcli, or its files
    deleted): exit 2 with how to get them, no traceback, nothing written."""
    _labelled_csv(tmp_path / "iris.csv")
    assert cli("train", *IRIS_CSV, "epochs=1", f"final={final}").exit_code == 0
    models = _run_dir(tmp_path / "outputs") / "models"
    gone = "final" if final == "refit" else "fold-1"
    (models / f"{gone}.safetensors").unlink()
    result = cli("predict", str(models.parent), "--data", "iris.csv")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "run without saved models" in text and gone in text and "save_models=true" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "predictions.csv").exists()
