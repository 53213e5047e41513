"""``mlcli predict`` without torch and pandas: mlcli's plain models applied in numpy agree with
the torch models, a clean CSV file read by pyarrow gives exactly what the careful reader gives,
and predicting an MLP run imports neither torch nor pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlcli import models, runner
from mlcli.engine.saved import load_predictor
from mlcli.inference import load_array_predictor, plain_layers
from mlcli.predict import _careful_csv_rows, _clean_csv_rows, _write
from mlcli.rundir.models import read_schema
from tests.homework import write_homework
from tests.test_predict import IRIS_CSV, _labelled_csv, _run_dir

ROOT = Path(__file__).parents[1]

PLAIN = [
    {"_target_": "mlcli.models.linear"},
    {"_target_": "mlcli.models.mlp", "hidden": [16, 8], "activation": "relu"},
    {
        "_target_": "mlcli.models.mlp",
        "hidden": [12],
        "activation": "tanh",
        "batch_norm": True,
        "dropout": 0.3,
    },
    {"_target_": "mlcli.models.mlp", "hidden": [6, 5], "activation": "sigmoid", "dropout": 0.1},
    {"_target_": "mlcli.models.sigmoid_sum", "n_units": 7},
    {"_target_": "mlcli.models.relu_sum", "n_units": 4},
]


def _torch_model(config: dict, in_shape: tuple[int, ...], out: int) -> torch.nn.Module:
    builder = getattr(models, config["_target_"].rsplit(".", 1)[1])
    torch.manual_seed(0)
    model = builder(in_shape, out, **{k: v for k, v in config.items() if k != "_target_"})
    for module in model.modules():  # running statistics other than the initial 0 and 1
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("config", PLAIN, ids=lambda c: f"{c['_target_'][13:]}-{len(c)}")
def test_numpy_layers_agree_with_the_torch_model(config):
    in_shape, out = (2, 5), 3
    model = _torch_model(config, in_shape, out)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    layers = plain_layers(config, weights, in_shape)
    assert layers is not None
    x = np.random.default_rng(1).normal(size=(300, *in_shape)).astype(np.float32) * 3
    ours = x
    for layer in layers:
        ours = layer(ours)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_other_models_and_other_state_dicts_are_left_to_torch():
    config = PLAIN[1]
    weights = {k: v.numpy() for k, v in _torch_model(config, (10,), 2).state_dict().items()}
    assert plain_layers(config, weights, (10,)) is not None
    assert plain_layers({**config, "activation": "gelu"}, weights, (10,)) is None
    assert plain_layers({**config, "hidden": [16]}, weights, (10,)) is None
    assert plain_layers({**config, "width": 3}, weights, (10,)) is None
    assert plain_layers(config, weights, (11,)) is None  # another input width
    assert plain_layers(config, {**weights, "9.weight": weights["1.weight"]}, (10,)) is None
    assert plain_layers({"_target_": "mlcli.models.cnn"}, weights, (10,)) is None


@pytest.mark.parametrize("data", ["iris", "diabetes"])
def test_a_run_dir_predicts_in_numpy_what_its_torch_models_predict(compose, tmp_path, data):
    """The classification probabilities and regression values of the fold ensemble, numpy
    against torch on the same saved models: equal to float32 rounding, the same labels."""
    if data == "iris":
        _labelled_csv(tmp_path / "iris.csv")
        cfg = compose(*IRIS_CSV, "final=ensemble")
    else:
        cfg = compose("dataset=diabetes", "model=mlp", "cv.n_splits=3", "epochs=3",
                      "progress=false", "model.batch_norm=true", "final=refit")  # fmt: skip
    run_dir = tmp_path / "run"
    runner.run(cfg, run_dir)
    plan = runner.plan_folds(cfg, "key")
    x = plan.dataset.X
    fast = load_array_predictor(run_dir)
    assert fast is not None and len(fast.models) == (3 if data == "iris" else 1)
    ours, theirs = fast.predict(x), load_predictor(run_dir).predict(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    if data == "iris":
        np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def _same_rows(path: Path, schema: dict, id_column: str | None = None) -> None:
    fast = _clean_csv_rows(path, schema, id_column)
    assert fast is not None, "the clean reader gave up on a clean file"
    careful = _careful_csv_rows(path, schema, id_column)
    np.testing.assert_array_equal(fast.X, careful.X)
    # the same ids as written (the careful reader keeps a quoted file's cells as text)
    assert list(map(str, fast.ids.tolist())) == list(map(str, careful.ids.tolist()))
    assert (fast.id_name, fast.notes) == (careful.id_name, careful.notes)


def test_the_clean_reader_reads_a_homework_file_exactly_as_the_careful_one(cli, tmp_path):
    train, test, _ = write_homework(tmp_path, n_train=200, n_test=500)
    result = cli("train", "dataset=csv", f"dataset.path={train}", "dataset.drop=[id]",
                 "dataset.target=tested_positive.2", "model=mlp", "epochs=1", "cv.n_splits=2",
                 "progress=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    schema = read_schema(_run_dir(tmp_path / "outputs"))
    _same_rows(test, schema)
    _same_rows(train, schema)  # the target and an unused column: ignored with a note
    _same_rows(test, schema, id_column="cli.1")


def test_the_clean_reader_reads_categories_and_missing_cells_exactly_as_the_careful_one(
    cli, tmp_path
):
    frame = _labelled_csv(tmp_path / "iris.csv")
    assert cli("train", *IRIS_CSV, "epochs=1").exit_code == 0
    schema = read_schema(_run_dir(tmp_path / "outputs"))
    new = frame.drop(columns=["species"])
    new.loc[3, "soil"] = None  # a missing category, imputed (dataset.missing=mean)
    new.to_csv(tmp_path / "new.csv", index=False)
    _same_rows(tmp_path / "new.csv", schema)
    header, body = new.to_csv(index=False, quoting=2).split("\n", 1)  # text cells quoted
    (tmp_path / "quoted.csv").write_text(header.replace('"', "") + "\n" + body)
    _same_rows(tmp_path / "quoted.csv", schema)


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace("\n1003,", "\n1003 ,", 1),  # spaces: read as stripped
        lambda text: text.replace(",clay", ", clay", 1),
        lambda text: text.replace(",loam", ",peat", 1),  # a category the run never saw
        lambda text: text.replace("\n", "\n\n", 3),  # blank lines
        lambda text: text.replace(",sand", ",NA", 1),
        lambda text: text.replace(",", ",nope,", 1),  # a row of another width
        lambda text: "\ufeff" + text,
    ],
    ids=[
        "spaces-in-numbers",
        "spaces-in-categories",
        "unknown-category",
        "blank-lines",
        "na-marker",
        "wider-row",
        "byte-order-mark",
    ],
)
def test_whatever_the_clean_reader_accepts_the_careful_one_reads_the_same(cli, tmp_path, edit):
    """Cells the clean reader cannot vouch for send the file to the careful reader (which reads
    or refuses it); what the clean reader does accept is what the careful one reads."""
    from mlcli.data.errors import DataError

    frame = _labelled_csv(tmp_path / "iris.csv")
    assert cli("train", *IRIS_CSV, "epochs=1").exit_code == 0
    schema = read_schema(_run_dir(tmp_path / "outputs"))
    path = tmp_path / "edited.csv"
    path.write_text(edit(frame.drop(columns=["species"]).to_csv(index=False)), encoding="utf-8")
    fast = _clean_csv_rows(path, schema, None)
    try:
        careful = _careful_csv_rows(path, schema, None)
    except DataError:
        assert fast is None  # the clean reader never accepts what the careful one refuses
        return
    if fast is not None:
        np.testing.assert_array_equal(fast.X, careful.X)
        assert list(map(str, fast.ids.tolist())) == list(map(str, careful.ids.tolist()))
        assert fast.notes == careful.notes


def test_the_csv_writer_round_trips_names_quotes_and_floats(tmp_path):
    values = np.random.default_rng(0).normal(size=5) * 10.0 ** np.arange(-6, 4, 2)
    names = np.asarray(["a", "b,c", 'say "hi"', "d", "e"], dtype=object)
    _write(tmp_path / "out.csv", {"id": np.arange(5), "label": names, "value": values}, "csv")
    back = pd.read_csv(tmp_path / "out.csv")
    assert back["label"].tolist() == names.tolist()
    assert back["value"].tolist() == values.tolist()  # shortest round-trip repr, exact
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[:2] == ["id,label,value", f"0,a,{float(values[0])!r}"]
    assert lines[2] == f'1,"b,c",{float(values[1])!r}'  # quoted only where needed


def test_predicting_an_mlp_run_imports_neither_torch_nor_pandas(cli, tmp_path):
    frame = _labelled_csv(tmp_path / "iris.csv")
    frame.drop(columns=["species"]).to_csv(tmp_path / "new.csv", index=False)
    assert cli("train", *IRIS_CSV, "epochs=1").exit_code == 0
    run_dir = _run_dir(tmp_path / "outputs")
    script = (
        "import sys\n"
        "from mlcli.cli import app\n"
        "try:\n"
        f"    app(['predict', {str(run_dir)!r}, '--data', 'new.csv', '--out', 'labels.csv'])\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        "print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'hydra', 'matplotlib')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert labels["id"].tolist() == frame["id"].tolist()
