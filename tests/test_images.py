"""Picture folders (dataset=images), streaming from disk, augmentation and the ResNet.

The pictures are drawn shapes (bench/shapes.py), kept small for CI: 4 classes × 8 pictures of
16×16 pixels, 1-2 epochs. The full figure (11 classes × 110 pictures of 64×64, 25 epochs) is in
docs/guide/images.md.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.shapes import make_folder
from mlcli import runner
from mlcli.data import DataError
from mlcli.data.augment import Augment
from mlcli.data.images import images
from mlcli.data.preprocess import fold_tensors
from mlcli.engine.loop import evaluate, fit
from mlcli.models import resnet

CPU = torch.device("cpu")
SMALL = ["dataset.size=16", "progress=false", "cv.n_splits=2", "epochs=2", "batch_size=8"]
SMALL += ["model=cnn", "model.channels=[4]", "model.hidden=[8]"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_folder(tmp_path / "shapes", per_class=8, size=20, n_classes=4)
    return tmp_path / "shapes"


def _run(compose, *overrides: str) -> pd.DataFrame:
    cfg = compose("dataset=images", *SMALL, *overrides)
    outcome = runner.run(cfg, Path(f"out-{len(list(Path().glob('out-*')))}"))
    assert outcome.state == "COMPLETED", outcome.error
    return pd.read_parquet(outcome.run_dir / "results.parquet")


def test_prefix_and_folder_layouts_give_the_same_classes(tmp_path, folder):
    make_folder(tmp_path / "nested", per_class=8, size=20, n_classes=4, layout="folder")
    by_prefix = images(str(folder), size=16)
    by_folder = images(str(tmp_path / "nested"), size=16)
    assert by_prefix.class_names == by_folder.class_names == ["0", "1", "2", "3"]
    assert by_prefix.X.shape == by_folder.X.shape == (32, 3, 16, 16)
    np.testing.assert_array_equal(np.bincount(by_prefix.y), [8, 8, 8, 8])
    np.testing.assert_array_equal(by_prefix.X, by_folder.X)  # same seed: the same pictures
    assert "labels by prefix" in by_prefix.notes[0] and "labels by folder" in by_folder.notes[0]
    assert by_prefix.notes[1] == "classes: 0 (8), 1 (8), 2 (8), 3 (8)"
    assert by_prefix.X.min() >= 0.0 and by_prefix.X.max() <= 1.0
    grey = images(str(folder), size=[12, 16], channels=1)
    assert grey.X.shape == (32, 1, 12, 16)


def test_the_same_pictures_in_class_folders_train_to_the_same_numbers(compose, tmp_path, folder):
    """The must-show's second layout: the pictures of ``folder`` (names ``<class>_<n>.png``)
    as class folders (``<class>/<n>.png``) train, fold by fold, to the same numbers."""
    make_folder(tmp_path / "nested", per_class=8, size=20, n_classes=4, layout="folder")
    by_prefix = _run(compose, f"dataset.path={folder}")
    by_folder = _run(compose, f"dataset.path={tmp_path / 'nested'}")
    columns = ["fold", "epoch", "split", "metric", "value"]
    assert len(by_folder) > 0 and set(by_folder["split"]) >= {"train", "val", "test"}
    pd.testing.assert_frame_equal(by_prefix[columns], by_folder[columns])


def test_numeric_class_names_sort_as_numbers(tmp_path):
    make_folder(tmp_path / "many", per_class=1, size=8, n_classes=11)
    dataset = images(str(tmp_path / "many"), size=8)
    assert dataset.class_names == [str(k) for k in range(11)]
    prefixes = [int(Path(f).name.split("_")[0]) for f in dataset.meta["files"]]
    assert sorted(prefixes) == list(range(11))
    np.testing.assert_array_equal(dataset.y, prefixes)  # 3_0.png is class index 3


def test_a_corrupt_picture_stops_the_command_before_training(cli, folder):
    (folder / "2_99.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    result = cli("train", "dataset=images", f"dataset.path={folder}", *SMALL)
    assert result.exit_code == 2, result.output
    assert "2_99.png" in result.output and "not a readable picture" in result.output
    assert "dataset.skip_bad=true" in result.output
    assert not Path("outputs").exists()  # nothing written
    # Streaming checks every file up front too.
    result = cli("train", "dataset=images", f"dataset.path={folder}", "dataset.cache=none", *SMALL)
    assert result.exit_code == 2 and "2_99.png" in result.output, result.output


def test_skip_bad_skips_and_lists_the_file(folder):
    (folder / "1_99.jpg").write_bytes(b"garbage")
    dataset = images(str(folder), size=16, skip_bad=True)
    assert len(dataset.y) == 32
    assert any("skipped 1 unreadable" in n and "1_99.jpg" in n for n in dataset.notes)
    with pytest.raises(DataError, match=r"1_99\.jpg"):
        images(str(folder), size=16)


def test_files_without_a_prefix_are_named(tmp_path):
    (tmp_path / "pics").mkdir()
    make_folder(tmp_path / "pics", per_class=2, size=8, n_classes=2)
    (tmp_path / "pics" / "nolabel.png").write_bytes((tmp_path / "pics" / "0_0.png").read_bytes())
    with pytest.raises(DataError, match=r"nolabel\.png"):
        images(str(tmp_path / "pics"), labels="prefix")


def test_a_labelled_test_folder_is_the_test_split(compose, tmp_path, folder):
    make_folder(tmp_path / "held", per_class=3, size=20, n_classes=4, seed=1)
    cfg = compose("dataset=images", f"dataset.path={folder}", f"dataset.test_path={tmp_path}/held")
    dataset = runner.build_dataset(cfg)
    assert len(dataset.y) == 44 and list(dataset.test_index) == list(range(32, 44))


def test_streaming_runs_are_identical_for_any_number_of_workers(compose, folder):
    path = f"dataset.path={folder}"
    streamed = ["dataset.cache=none", "augment=flip_crop", path]
    two = _run(compose, *streamed, "dataset.num_workers=2")
    again = _run(compose, *streamed, "dataset.num_workers=2")
    none = _run(compose, *streamed, "dataset.num_workers=0")
    pd.testing.assert_series_equal(two["value"], again["value"])
    pd.testing.assert_series_equal(two["value"], none["value"])
    # The in-memory path trains on the same batches: equal up to the statistics' rounding.
    memory = _run(compose, "dataset.cache=memory", "augment=flip_crop", path)
    val = (memory.split == "val") & (memory.metric == "loss")
    np.testing.assert_allclose(memory[val]["value"], two[val]["value"], rtol=1e-3)


def test_streaming_refuses_stacked_folds_with_the_reason(compose, folder):
    cfg = compose("dataset=images", f"dataset.path={folder}", "dataset.cache=none", *SMALL)
    cfg.model = compose("model=mlp").model
    cfg.stack_folds = "on"
    with pytest.raises(ValueError, match="read from disk per batch"):
        runner.run(cfg, Path("stacked"))


class Recorder:
    """An augmentation that blanks every picture it sees, and keeps what it saw."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.seen.append(batch.clone())
        return torch.zeros_like(batch)


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_augmentation_never_touches_val_or_test_rows(folder, compose, cache):
    dataset = images(str(folder), size=16, cache=cache)
    cfg = compose("dataset=images", f"dataset.path={folder}")
    index = np.arange(32)
    train, val, test = index[::2], index[1::4], index[3::4]
    recorder = Recorder()
    data = fold_tensors(dataset, train, val, test, cfg.dataset, CPU, augment=recorder, batch_size=4)
    torch.manual_seed(0)
    model = resnet((3, 16, 16), 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    rows = fit(model, optimizer, scheduler, data, task="classification", epochs=2, batch_size=4,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    # It saw each training picture once per epoch, raw (before normalization), nothing else.
    seen = torch.cat(recorder.seen)
    assert len(seen) == 2 * len(train)
    raw = torch.from_numpy(images(str(folder), size=16).X)
    assert all(any(torch.equal(s, raw[i]) for i in train) for s in seen)
    assert not any(torch.equal(s, raw[i]) for s in seen for i in [*val, *test])
    # The recorded val and test metrics are those of the real (un-blanked) pictures.
    memory = fold_tensors(images(str(folder), size=16), train, val, test, cfg.dataset, CPU)
    recorded = {(s, m): v for e, s, m, v in rows if e == 2 and s != "train"}
    for split, x, y in (
        ("val", memory.x_val, memory.y_val),
        ("test", memory.x_test, memory.y_test),
    ):
        expected = evaluate(model, x, y, "classification", 0.0, 1.0)
        assert recorded[(split, "acc")] == pytest.approx(float(expected["acc"]))
        assert recorded[(split, "loss")] == pytest.approx(float(expected["loss"]), rel=1e-4)


@pytest.mark.parametrize("option", ["flip_crop", "standard", "randaugment"])
def test_each_augmentation_changes_training_pictures_and_repeats_under_a_seed(compose, option):
    from mlcli.config.targets import factory

    augment = factory(compose(f"augment={option}").augment, "augment")()
    assert isinstance(augment, Augment)
    batch = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    out = augment(batch)
    torch.manual_seed(1)
    assert torch.equal(out, augment(batch))
    assert out.shape == batch.shape and not torch.equal(out, batch)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_resnet_builds_for_11_classes_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for depth, shape in ((18, (3, 64, 64)), (34, (1, 128, 96))):
        model = resnet(shape, 11, depth=depth)
        assert model(torch.rand(2, *shape)).shape == (2, 11)
    small = resnet((3, 32, 32), 11, batch_norm=False, dropout=0.5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in small.modules())
    assert isinstance(small.fc[0], torch.nn.Dropout)


def test_a_run_writes_class_names_and_counts_in_its_status(compose, folder):
    cfg = compose("dataset=images", f"dataset.path={folder}", *SMALL)
    outcome = runner.run(cfg, Path("run"))
    status = json.loads((outcome.run_dir / "status.json").read_text())
    assert "classes: 0 (8), 1 (8), 2 (8), 3 (8)" in json.dumps(status)


def test_the_run_key_changes_when_a_picture_is_added_or_edited(compose, folder):
    from mlcli.config.identity import run_key

    cfg = compose("dataset=images", f"dataset.path={folder}")
    before = run_key(cfg)
    assert run_key(cfg) == before
    (folder / "3_99.png").write_bytes((folder / "3_0.png").read_bytes())
    added = run_key(cfg)
    assert added != before
    (folder / "3_99.png").write_bytes((folder / "2_0.png").read_bytes() + b"\0" * 7)
    assert run_key(cfg) not in (before, added)


# --- mlcli predict on a folder of pictures ----------------------------------------------------


def _trained(cli, folder: Path, *overrides: str) -> Path:
    """Train through the CLI; the run dir."""
    result = cli("train", "dataset=images", f"dataset.path={folder}", *SMALL, *overrides)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p.parent for p in Path("outputs").rglob("status.json")]
    return run_dir


@pytest.fixture
def unlabelled(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A folder of 12 pictures named 00000.png..., and their true classes (labels.csv)."""
    make_folder(tmp_path / "new" / "test", per_class=3, size=20, n_classes=4, seed=5,
                layout="unlabelled")  # fmt: skip
    labels = pd.read_csv(tmp_path / "new" / "labels.csv", dtype={"Id": str})
    return tmp_path / "new" / "test", labels


def test_predict_a_folder_writes_id_category_for_every_picture(cli, folder, unlabelled):
    from mlcli.engine.saved import load_predictor
    from mlcli.predict import read_picture_rows
    from mlcli.rundir.models import read_schema

    run_dir = _trained(cli, folder, "final=ensemble")
    test, labels = unlabelled
    result = cli("predict", str(run_dir), "--data", str(test), "--out", "sub.csv")
    assert result.exit_code == 0, result.output
    sub = pd.read_csv("sub.csv", dtype={"Id": str, "Category": str})
    assert list(sub.columns) == ["Id", "Category"]
    assert sorted(sub["Id"]) == sorted(labels["Id"])  # file stems, every picture once
    assert set(sub["Category"]) <= {"0", "1", "2", "3"}  # the training class names
    # The categories are the fold ensemble's argmax on the pictures decoded as in training.
    schema = read_schema(run_dir)
    rows = read_picture_rows(test, schema, None)
    assert rows.X.shape == (12, 3, 16, 16)
    expected = load_predictor(run_dir).predict(rows.X).argmax(1)
    np.testing.assert_array_equal(sub["Category"].astype(int), expected)
    proba = cli("predict", str(run_dir), "--data", str(test), "--out", "p.csv", "--proba")
    assert proba.exit_code == 0, proba.output
    table = pd.read_csv("p.csv", dtype={"Id": str})
    assert list(table.columns) == ["Id", "0", "1", "2", "3"]
    np.testing.assert_allclose(table[["0", "1", "2", "3"]].sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_array_equal(table[["0", "1", "2", "3"]].to_numpy().argmax(1), expected)


def test_predict_uses_the_refit_model_and_matches_the_runs_final_score(cli, tmp_path, folder):
    make_folder(tmp_path / "held", per_class=3, size=20, n_classes=4, seed=1)
    held = tmp_path / "held"
    run_dir = _trained(cli, folder, "final=refit", f"dataset.test_path={held}")
    assert (run_dir / "models" / "final.safetensors").is_file()
    result = cli("predict", str(run_dir), "--data", str(held), "--out", "sub.csv")
    assert result.exit_code == 0, result.output
    sub = pd.read_csv("sub.csv", dtype={"Id": str, "Category": str})
    assert len(sub) == 12
    # The run scored its refit model on the same pictures: predict gives that accuracy.
    results = pd.read_parquet(run_dir / "results.parquet")
    (final_acc,) = results[(results.split == "final") & (results.metric == "acc")]["value"]
    truth = sub["Id"].str.split("_").str[0]  # held/3_1.png is class 3
    assert np.mean(sub["Category"] == truth) == pytest.approx(final_acc)


def test_tta_1_is_the_plain_prediction_and_more_views_repeat(cli, folder, unlabelled):
    run_dir = _trained(cli, folder, "augment=flip_crop")
    test, _ = unlabelled
    outputs = {}
    for name, extra in (("plain", []), ("one", ["--tta", "1"]), ("four", ["--tta", "4"]),
                        ("again", ["--tta", "4"])):  # fmt: skip
        result = cli("predict", str(run_dir), "--data", str(test), "--out", f"{name}.csv",
                     "--proba", *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[name] = pd.read_csv(f"{name}.csv", dtype={"Id": str})
    pd.testing.assert_frame_equal(outputs["plain"], outputs["one"])
    pd.testing.assert_frame_equal(outputs["four"], outputs["again"])  # seeded views
    plain, four = outputs["plain"].iloc[:, 1:].to_numpy(), outputs["four"].iloc[:, 1:].to_numpy()
    assert not np.allclose(plain, four)  # the augmented views change the average
    np.testing.assert_allclose(four.sum(axis=1), 1.0, rtol=1e-9)


def test_tta_views_are_the_plain_one_and_augmented_ones():
    from mlcli.predict import picture_views

    class Mean:
        """A 'model' whose probabilities are a picture's mean pixel and its complement."""

        def predict(self, x: np.ndarray) -> np.ndarray:
            m = x.reshape(len(x), -1).mean(1)
            return np.stack([m, 1 - m], axis=1)

    x = np.zeros((2, 1, 4, 4), np.float32)
    x[:, :, :, :1] = 1.0  # a bright left column: a flip moves it, a crop may shift it out
    schema = {"pictures": {"augment": {"_target_": "mlcli.data.augment.flip_crop",
                                       "flip": 1.0, "padding": 0}}}  # fmt: skip
    # Flipped pictures have the same mean: 3 views average to the plain prediction exactly.
    np.testing.assert_allclose(picture_views(Mean(), x, schema, 3), Mean().predict(x))
    state = torch.get_rng_state()
    picture_views(Mean(), x, schema, 3)
    assert torch.equal(state, torch.get_rng_state())  # torch's generator is left as it was


def test_predict_refuses_bad_folders_and_tta_without_augmentation(cli, tmp_path, folder):
    run_dir = _trained(cli, folder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    result = cli("predict", str(run_dir), "--data", str(tmp_path / "empty"), "--out", "a.csv")
    assert result.exit_code == 2 and "holds no pictures" in result.output, result.output
    assert "empty" in result.output and "Traceback" not in result.output
    make_folder(tmp_path / "bad", per_class=2, size=20, n_classes=2, layout="unlabelled")
    (tmp_path / "bad" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = cli("predict", str(run_dir), "--data", str(tmp_path / "bad"), "--out", "b.csv")
    assert result.exit_code == 2, result.output
    assert "00002.png" in result.output and "not a readable picture" in result.output
    result = cli("predict", str(run_dir), "--data", str(folder), "--out", "c.csv", "--tta", "3")
    assert result.exit_code == 2 and "augment=none" in result.output, result.output
    result = cli("predict", str(run_dir), "--data", str(folder), "--out", "d.csv", "--tta", "0")
    assert result.exit_code == 2 and "--tta 0" in result.output, result.output
    assert not any(Path(name).exists() for name in ("a.csv", "b.csv", "c.csv", "d.csv"))


def test_a_streamed_run_predicts_as_the_in_memory_run(cli, folder, unlabelled):
    test, _ = unlabelled
    streamed = _trained(cli, folder, "dataset.cache=none", "final=ensemble")
    result = cli("predict", str(streamed), "--data", str(test), "--out", "streamed.csv", "--proba")
    assert result.exit_code == 0, result.output
    import shutil

    shutil.rmtree("outputs")
    memory = _trained(cli, folder, "dataset.cache=memory", "final=ensemble")
    result = cli("predict", str(memory), "--data", str(test), "--out", "memory.csv", "--proba")
    assert result.exit_code == 0, result.output
    a, b = pd.read_csv("streamed.csv"), pd.read_csv("memory.csv")
    np.testing.assert_allclose(a.iloc[:, 1:], b.iloc[:, 1:], rtol=1e-3, atol=1e-5)


def test_cnn_sizes_itself_for_the_picture():
    from mlcli.models import cnn

    def layout(model: torch.nn.Module) -> tuple[list[int], bool]:
        convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        pooled = any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
        return convs, pooled

    # 64×64: one more block (maps of 8 px) and global average pooling; the head is small.
    big = cnn((3, 64, 64), 11)
    assert layout(big) == ([32, 64, 128], True)
    assert big(torch.rand(2, 3, 64, 64)).shape == (2, 11)
    assert next(m for m in big.modules() if isinstance(m, torch.nn.Linear)).in_features == 128
    assert layout(cnn((3, 128, 96), 5)) == ([32, 64, 128, 256], True)
    # 8×8 digits and 28×28 keep the blocks asked for and flatten their small maps, as before.
    assert layout(cnn((1, 8, 8), 10)) == ([32, 64], False)
    assert layout(cnn((3, 28, 28), 10, channels=[4, 4, 4])) == ([4, 4, 4], False)
    # The old layout on request; pooling on request.
    assert layout(cnn((3, 64, 64), 11, max_map_px=0, global_pool="off")) == ([32, 64], False)
    assert layout(cnn((1, 8, 8), 10, global_pool="on")) == ([32, 64], True)
    with pytest.raises(ValueError, match="global_pool"):
        cnn((1, 8, 8), 10, global_pool="sometimes")


def test_flip_crop_crops_each_picture_from_its_padded_copy():
    from mlcli.data.augment import flip_crop

    batch = torch.rand(5, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    out = flip_crop(flip=0.5, padding=3)(batch)
    torch.manual_seed(1)  # the same draws, applied one picture at a time
    flipped = torch.rand(5) < 0.5
    dy, dx = torch.randint(0, 7, (5,)), torch.randint(0, 7, (5,))
    for i in range(5):
        picture = batch[i].flip(-1) if flipped[i] else batch[i]
        padded = torch.nn.functional.pad(picture[None], (3, 3, 3, 3), mode="reflect")[0]
        expected = padded[:, int(dy[i]) : int(dy[i]) + 10, int(dx[i]) : int(dx[i]) + 12]
        assert torch.equal(out[i], expected)
    assert flipped.any() and not flipped.all()  # both branches were taken


def _accuracy(submission: Path, labels: Path) -> float:
    sub = pd.read_csv(submission, dtype=str)
    truth = pd.read_csv(labels, dtype=str)
    assert sorted(sub["Id"]) == sorted(truth["Id"])  # a prediction for every picture
    joined = sub.merge(truth, on="Id", suffixes=("", "_true"))
    return float((joined["Category"] == joined["Category_true"]).mean())


def test_shapes_are_learned_then_predicted_quick(cli, tmp_path):
    """The must-show's steps on a small set: 3 classes × 40 pictures of 32 px, 20 epochs, then
    predict 30 other shapes (measured: 0.60; chance is 0.33)."""
    make_folder(tmp_path / "shapes", per_class=40, size=32, n_classes=3)
    make_folder(tmp_path / "new" / "test", per_class=10, size=32, n_classes=3, seed=1,
                layout="unlabelled")  # fmt: skip
    result = cli("train", "dataset=images", f"dataset.path={tmp_path}/shapes", "dataset.size=32",
                 "model=cnn", "epochs=20", "batch_size=16", "optim.lr=0.003", "cv.n_splits=3",
                 "progress=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = [p.parent for p in Path("outputs").rglob("status.json")]
    result = cli("predict", str(run_dir), "--data", str(tmp_path / "new" / "test"), "--out",
                 "sub.csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _accuracy(Path("sub.csv"), tmp_path / "new" / "labels.csv") >= 0.5


@pytest.mark.parametrize(
    ("overrides", "target", "lr"),
    [
        (["model=cnn"], "torch.optim.Adam", 0.001),  # conf/tuned/images_cnn_adam.yaml
        (["model=resnet"], "torch.optim.Adam", 0.001),  # conf/tuned/images_resnet_adam.yaml
        (["model=cnn", "optim.lr=0.02"], "torch.optim.Adam", 0.02),  # the command line wins
        (["model=cnn", "optim=sgd"], "torch.optim.SGD", 0.05),  # only Adam is tuned here
        (["model=mlp"], "torch.optim.Adam", 0.01),
    ],
)
def test_adam_on_pictures_with_a_cnn_starts_at_lr_1e_3(tmp_path, overrides, target, lr):
    """Hydra's specialization (``optional tuned: ${dataset}_${model}_${optim}``) gives Adam lr
    1e-3 for a picture CNN or ResNet; the user's own ``optim.lr`` and other optimizers keep
    theirs, and the tabular default is untouched."""
    from mlcli.config.compose import compose_job

    make_folder(tmp_path / "shapes", per_class=2, size=16, n_classes=2)
    cfg = compose_job(["dataset=images", f"dataset.path={tmp_path}/shapes", *overrides], None,
                      "config")  # fmt: skip
    assert (cfg.optim._target_, cfg.optim.lr) == (target, lr)
    default = compose_job(["model=cnn"], None, "config")  # digits: Adam's own default
    assert default.optim.lr == 0.01 and "tuned" not in default


@pytest.mark.long
def test_shapes_are_learned_then_predicted_full(cli, tmp_path):
    """The must-show: 11 classes × 110 drawn shapes of 64×64 (prefix names), the command as it
    is written (Adam at lr 1e-3 from conf/tuned/images_cnn_adam.yaml: at Adam's default 0.01
    folds stay near chance, docs/guide/images.md), then predict an unlabelled folder of 330
    other shapes: accuracy >= 0.6."""
    make_folder(tmp_path / "shapes", per_class=110, size=64)
    make_folder(tmp_path / "new" / "test", per_class=30, size=64, seed=1, layout="unlabelled")
    result = cli("train", "dataset=images", f"dataset.path={tmp_path}/shapes", "model=cnn",
                 "epochs=25", "cv.n_splits=3", "progress=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = [p.parent for p in Path("outputs").rglob("status.json")]
    result = cli("predict", str(run_dir), "--data", str(tmp_path / "new" / "test"), "--out",
                 "sub.csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _accuracy(Path("sub.csv"), tmp_path / "new" / "labels.csv") >= 0.6
