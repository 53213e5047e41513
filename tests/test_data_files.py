"""``dataset=csv`` and ``dataset=npz``: your own files end to end, every bad file refused early."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcli import runner
from mlcli.data import DataError, csv, npz
from tests import docs
from tests.conftest import TINY

HOMEWORK = Path(__file__).parent / "data" / "homework.csv"
GOOD = "id,feature_1,feature_2,target\n" + "".join(
    f"{i},{i * 0.5:.1f},{(i * 7) % 5},{i % 2}\n" for i in range(1, 13)
)  # 12 rows, lines 2-13


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("status.json")) if root.exists() else []


def test_homework_csv_runs_end_to_end_with_only_path_target_and_drop(cli, tmp_path):
    result = cli(
        "train", "dataset=csv", f"dataset.path={HOMEWORK}", "dataset.target=target",
        "dataset.drop=[id]", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = _run_dirs(tmp_path / "outputs")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "COMPLETED" and status["task"] == "classification"
    # the inferred task is stated in status.json and in the log
    inferred = "task: classification (inferred: target 'target' holds 3 distinct integer values"
    assert any(note.startswith(inferred) for note in status["data_notes"])
    assert inferred in (run_dir / "app.log").read_text()  # Hydra's job log
    assert status["n_test"] == 30 and status["n_folds"] == 2
    frame = pd.read_parquet(run_dir / "results.parquet")
    # (train_step: the lr at each epoch's first optimizer step and wherever it changes)
    assert set(frame["split"]) == {"train", "train_step", "val", "test"}
    assert {"acc", "loss"} <= set(frame["metric"])


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _edit(line_no: int, new: str) -> str:
    """GOOD with its line ``line_no`` (1 = header) replaced by ``new``."""
    lines = _lines(GOOD)
    lines[line_no - 1] = new + "\n"
    return "".join(lines)


# (case, file text or None for no file, extra overrides, texts the message must contain)
BAD_DATA = [
    ("missing-file", None, [], ["nope.csv", "no such file", "dataset.path"]),
    ("missing-target", GOOD, ["dataset.target=targt"],
     ["data.csv", "'targt'", "line 1", "Did you mean 'target'"]),
    ("unknown-feature", GOOD, ["dataset.features=[feature_1,feature_9]"],
     ["data.csv", "'feature_9'", "line 1", "dataset.features"]),
    ("non-numeric", _edit(4, "3,abc,1,1").replace("6,3.0,2,0", "6,x1,2,0"), [],
     ["data.csv", "column 'feature_1'", "2 rows", "not a (finite) number", "line 4", "'abc'"]),
    ("infinite", _edit(9, "8,inf,1,0"), [],
     ["data.csv", "column 'feature_1'", "1 row ", "line 9", "'inf'"]),
    ("empty-cell", _edit(3, "2,1.0,,0"), [],
     ["data.csv", "column 'feature_2'", "1 row ", "empty or NA cell", "line 3", "dataset.missing"]),
    ("na-cell", _edit(6, "5,NA,2,1"), [],
     ["data.csv", "column 'feature_1'", "line 6", "'NA'"]),
    ("short-row", _edit(5, "4,2.0,3"), [],
     ["data.csv", "column 'target'", "1 row has", "line 5", "3 fields", "4"]),
    ("long-row", _edit(7, "6,3.0,2,0,9"), [],
     ["data.csv", "1 row has", "line 7", "5 fields", "extra field after the last column 'target'"]),
    ("one-class", "x,target\n" + "".join(f"{i},1\n" for i in range(10)), [],
     ["data.csv", "column 'target'", "all 10 rows", "same class '1'", "line 2"]),
    ("fewer-rows-than-folds", "x,target\n1,0\n2,1\n3,0\n4,1\n", ["dataset.test_fraction=0",
                                                                  "cv.n_splits=5"],
     ["data.csv", "4 rows are left", "fewer than the 5 folds", "cv.n_splits"]),
    ("fewer-rows-after-test-split", GOOD, ["cv.n_splits=10"],
     ["data.csv", "9 rows are left", "setting aside 3 test rows", "fewer than the 10 folds"]),
    ("regression-target-text", _edit(8, "7,3.5,4,high"), ["dataset.task=regression"],
     ["data.csv", "column 'target'", "1 row ", "line 8", "'high'"]),
    ("class-with-one-row", "x,target\n1,a\n2,a\n3,b\n4,a\n5,c\n6,b\n7,a\n8,b\n", [],
     ["data.csv", "1 class(es) have a single row ('c')", "dataset.test_fraction=0"]),
    ("group-without-column", GOOD, ["cv=group"], ["data.csv", "no group column", "dataset.group"]),
    ("not-utf8", "x,target\n1,0\n", [], ["data.csv", "not UTF-8", "line 3"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "extra", "expected"), BAD_DATA, ids=[c[0] for c in BAD_DATA]
)
def test_bad_data_exits_2_before_training_naming_file_column_and_line(
    cli, tmp_path, case, text, extra, expected
):
    path = tmp_path / ("nope.csv" if text is None else "data.csv")
    if text is not None:
        path.write_text(text)
    if case == "not-utf8":
        path.write_bytes(path.read_bytes() + b"2,\xff\n")
    result = cli(
        "train", "dataset=csv", f"dataset.path={path}", "dataset.target=target",
        "dataset.drop=[id]" if "id," in (text or "") else "dataset.drop=[]", *TINY, *extra,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.replace("│", " ").split())  # undo the panel's wrapping
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()  # nothing written, nothing trained


def test_missing_drop_and_mean(tmp_path):
    text = "a,b,target\n1,2,0\n,3,1\n4,5,0\n6,,1\n7,8,\n9,10,1\n11,12,0\n"
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as error:
        csv(str(path), "target")
    assert error.value.line == 3 and error.value.column == "a"
    assert "Columns b, target have missing cells too" in str(error.value)

    dropped = csv(str(path), "target", missing="drop")
    np.testing.assert_array_equal(dropped.X[:, 0], [1, 4, 9, 11])
    assert any("dropped 3 of 7 rows" in n and "first at line 3" in n for n in dropped.notes)

    imputed = csv(str(path), "target", missing="mean")
    # the row without a target is dropped; feature gaps stay NaN for per-fold imputation
    assert len(imputed.y) == 6 and int(np.isnan(imputed.X).sum()) == 2
    assert any("2 missing feature cells" in n for n in imputed.notes)


def test_a_numeric_missing_marker_counts_as_missing(tmp_path):
    path = _write(tmp_path, "a,b,target\n1,2,0\n-999,3,1\n4,5,0\n6,7,1\n")
    with pytest.raises(
        DataError, match=r"column 'a': an empty or NA cell in 1 row \(first at line 3"
    ):
        csv(str(path), "target", na_values=["", "-999"])
    imputed = csv(str(path), "target", na_values=["-999"], missing="mean")
    assert np.isnan(imputed.X[1, 0]) and imputed.X[0, 0] == 1


def test_categorical_columns_are_inferred_and_one_hot_per_fold(compose, tmp_path):
    rng = np.random.default_rng(0)
    colors = rng.choice(["red", "green", "blue"], size=60)
    frame = pd.DataFrame(
        {"size": rng.normal(size=60).round(3), "color": colors, "target": colors == "red"}
    )
    path = tmp_path / "shop.csv"
    frame.to_csv(path, index=False)
    dataset = csv(str(path), "target")
    assert dataset.categorical == (1,) and dataset.task == "classification"
    assert dataset.class_names == ["False", "True"]
    assert any("1 categorical, one-hot per fold (color, inferred" in n for n in dataset.notes)
    cfg = compose("dataset=csv", f"dataset.path={path}", "dataset.target=target", "epochs=1",
                  "cv.n_splits=2", "progress=false")  # fmt: skip
    assert runner.run(cfg, tmp_path / "run").state == "COMPLETED"  # the model sees 1 + 3 columns


def test_a_mostly_numeric_column_with_a_typo_is_an_error_not_a_category(tmp_path):
    path = _write(tmp_path, _edit(4, "3,1.5,oops,1"))
    with pytest.raises(
        DataError, match=r"column 'feature_2': a value that is not a \(finite\) number in 1 row"
    ) as error:
        csv(str(path), "target", drop=["id"])
    assert error.value.line == 4 and "dataset.categorical=[feature_2]" in str(error.value)
    forced = csv(str(path), "target", drop=["id"], categorical=["feature_2"])
    assert forced.categorical == (1,)


@pytest.mark.parametrize(
    ("target_values", "task", "reason"),
    [
        ([0.5, 1.25, 3.0, 2.5], "regression", "distinct real-valued values"),
        ([100 + i for i in range(30)] * 1, "regression", "30 distinct integer values"),
        (["cat", "dog", "cat", "dog"], "classification", "holds text labels"),
        ([1, 2, 3, 1], "classification", "3 distinct integer values"),
    ],
)
def test_task_is_inferred_from_the_target_and_stated(tmp_path, target_values, task, reason):
    n = len(target_values)
    rows = "".join(f"{i},{v}\n" for i, v in zip(range(n), target_values, strict=True))
    dataset = csv(str(_write(tmp_path, "x,target\n" + rows)), "target")
    assert dataset.task == task
    assert any(n.startswith(f"task: {task} (inferred:") and reason in n for n in dataset.notes)
    explicit = csv(str(_write(tmp_path, "x,target\n" + rows, "b.csv")), "target", task=task)
    assert not any(n.startswith("task:") for n in explicit.notes)


def test_a_separate_test_file_is_the_test_split(compose, tmp_path):
    train = _write(tmp_path, GOOD, "train.csv")
    test = _write(tmp_path, "id,feature_1,feature_2,target\n1,0.5,2,1\n2,9.0,3,0\n", "test.csv")
    cfg = compose("dataset=csv", f"dataset.path={train}", f"dataset.test_path={test}",
                  "dataset.target=target", "dataset.drop=[id]", "epochs=1", "cv.n_splits=2",
                  "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert outcome.state == "COMPLETED" and status["n_test"] == 2  # test_fraction not used
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(frame[(frame["split"] == "test") & (frame["metric"] == "acc")]) == 2

    bad = _write(tmp_path, "id,feature_1,feature_2,target\n1,0.5,x,1\n", "bad_test.csv")
    with pytest.raises(
        DataError, match=r"bad_test\.csv, column 'feature_2': .* in 1 row \(first at line 2"
    ):
        csv(str(train), "target", drop=["id"], test_path=str(bad))


def test_window_turns_a_series_into_previous_values_to_next_value_rows(tmp_path):
    path = _write(tmp_path, "day,value\n" + "".join(f"{d},{d * d}\n" for d in range(8)))
    dataset = csv(str(path), "value", window=3)
    assert dataset.X.shape == (5, 3, 1) and dataset.ordered and dataset.task == "regression"
    np.testing.assert_array_equal(dataset.X[0, :, 0], [0, 1, 4])
    np.testing.assert_array_equal(dataset.y, [9, 16, 25, 36, 49])
    with pytest.raises(DataError, match=r"8 rows, but dataset\.window=8 needs at least 9"):
        csv(str(path), "value", window=8)
    gap = _write(tmp_path, "value\n1\n2\n3\n\n4\n5\n\n", "gap.csv")  # a blank line: a gap
    with pytest.raises(DataError, match=r"gap\.csv, column 'value'.* in 1 row \(first at line 5"):
        csv(str(gap), "value", window=2)


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path):
    text = '\ufeffname,x,target\n"two\nlines",1,0\n\nb,2,1\nc,zz,0\nd,4,1\ne,5,0\n'
    with pytest.raises(DataError) as error:
        csv(str(_write(tmp_path, text)), "target", drop=["name"])
    assert error.value.column == "x" and error.value.line == 6 and error.value.n_bad == 1


def test_npz_images_sequences_and_its_own_test_split(compose, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "images.npz",
        X=rng.normal(size=(40, 1, 4, 4)),
        y=np.arange(40) % 3,
        X_test=rng.normal(size=(6, 1, 4, 4)),
        y_test=np.arange(6) % 3,
    )
    cfg = compose("dataset=npz", "dataset.path=images.npz", "epochs=1", "cv.n_splits=2",
                  "progress=false")  # fmt: skip
    assert runner.run(cfg, tmp_path / "run").state == "COMPLETED"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["task"] == "classification" and status["n_test"] == 6

    lengths = rng.integers(1, 6, size=20)
    np.savez(tmp_path / "seq.npz", X=rng.normal(size=(20, 5, 2)), y=rng.normal(size=20),
             lengths=lengths)  # fmt: skip
    sequences = npz(str(tmp_path / "seq.npz"))
    assert sequences.task == "regression" and sequences.in_shape == (5, 2)
    np.testing.assert_array_equal(sequences.lengths, lengths)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"X": np.zeros((4, 2))}, "has no array 'y' (arrays: X)"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, "column 'y': has shape (3,)"),
        (
            {"X": np.array([[0.0, 1], [np.nan, 1], [2, 2], [np.inf, 0]]), "y": np.arange(4)},
            "column 'X': NaN or infinite values in 2 rows (first at index 1)",
        ),
        (
            {"X": np.zeros((4, 3, 2)), "y": np.arange(4), "lengths": np.array([1, 2, 3, 4])},
            "column 'lengths': a length outside 1..3 (the padded length T) in 1 row",
        ),
        ({"X": np.zeros((4, 2)), "y": np.ones(4, dtype=int)}, "all 4 rows have the same class"),
    ],
)
def test_bad_npz_is_a_data_error(tmp_path, arrays, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as error:
        npz(str(tmp_path / "bad.npz"))
    assert expected in str(error.value) and "bad.npz" in str(error.value)


def _readme_commands(*pages: str) -> list[list[str]]:
    """The ``mlcli train`` commands in the bash blocks of the docs ``pages``."""
    commands = []
    for name in pages:
        section = docs.page(name)
        for block in section.split("```bash\n")[1:]:
            for line in block.split("```", 1)[0].splitlines():
                if line.startswith("mlcli train "):
                    commands.append(shlex.split(line, comments=True)[2:])
    return commands


def test_readme_data_and_cv_examples_run(cli, tmp_path):
    commands = _readme_commands("guide/data.md", "guide/cross-validation.md")
    assert len(commands) == 8
    docs.write_example_files(tmp_path)
    for args in commands:
        result = cli("train", *args, "epochs=1", "cv.n_splits=2", "progress=false")
        assert result.exit_code == 0, (args, result.output)
    states = [json.loads(p.read_text())["state"] for p in tmp_path.rglob("status.json")]
    assert states == ["COMPLETED"] * len(commands)


def _quoted_header(text: str) -> str:
    """The same file with its header's names quoted: read by Python's csv module, not pandas."""
    header, rest = text.split("\n", 1)
    return ",".join(f'"{name}"' for name in header.split(",")) + "\n" + rest


@pytest.mark.parametrize(
    "text",
    [GOOD, GOOD.replace("\n", "\r\n"), "value\n1\n2\n\n3\n\n"]
    + [case[1] for case in BAD_DATA if case[1] is not None and case[0] != "not-utf8"],
)
def test_files_with_and_without_quotes_read_the_same(tmp_path, text):
    """Unquoted files are parsed by pandas' C parser, quoted ones by Python's csv module."""
    results = []
    for name, content in (("plain.csv", text), ("quoted.csv", _quoted_header(text))):
        path = _write(tmp_path, content, name)
        target = "target" if "target" in text else "value"
        try:
            dataset = csv(str(path), target, missing="error")
            results.append((dataset.X.tolist(), dataset.y.tolist(), dataset.task))
        except DataError as error:
            results.append((error.column, error.n_bad, error.line, error.problem))
    assert results[0] == results[1]


def test_a_dataset_is_built_once_per_process_and_read_again_when_its_file_changes(
    compose, tmp_path, monkeypatch
):
    from mlcli.data import loading

    monkeypatch.setattr(loading, "_BUILT", type(loading._BUILT)())
    path = tmp_path / "points.csv"
    pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "target": [0.0, 1.0, 2.0, 3.0]}).to_csv(
        path, index=False
    )
    cfg = compose("dataset=csv", f"dataset.path={path}", "dataset.target=target")
    first = loading.build_dataset(cfg)
    again = loading.build_dataset(cfg)
    assert again.X is first.X  # the same arrays, not read again...
    assert again.notes is not first.notes  # ...but each run's own lists
    with pytest.raises(ValueError, match="read-only"):
        again.X[0, 0] = 99.0  # shared between runs: nobody may change them
    pd.DataFrame({"x": [5.0, 6.0, 7.0], "target": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    os.utime(path, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    edited = loading.build_dataset(cfg)
    assert edited.X[:, 0].tolist() == [5.0, 6.0, 7.0]


def test_a_users_dataset_builder_runs_every_time(compose, monkeypatch):
    import importlib

    from mlcli.data import loading

    builders = importlib.import_module("tests.test_data_files")  # as Hydra imports the target
    monkeypatch.setattr(loading, "_BUILT", type(loading._BUILT)())
    monkeypatch.setenv("MLCLI_ALLOW_TARGETS", "tests.test_data_files")
    cfg = compose("dataset=digits")
    cfg.dataset._target_ = "tests.test_data_files.counted_dataset"
    before = len(builders._CALLS)
    loading.build_dataset(cfg)
    loading.build_dataset(cfg)
    assert len(builders._CALLS) == before + 2


def counted_dataset():
    """A user's builder (see the test above)."""
    from mlcli.data.base import Dataset

    _CALLS.append(1)
    return Dataset(name="tiny", X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), task="classification")


_CALLS: list[int] = []
