"""``mlcli predict`` on the user's text: a label per sentence (``dataset=text``), a tag per token
(``dataset=tagged``), a decoded text per source (``dataset=pairs``).

New text is tokenized with each fold's saved vocabulary, as that fold's rows were: the run dir's
predictions equal the in-memory models' on the same rows. Bad prediction files exit 2 naming the
file and the line, and write nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlcli import runner
from mlcli.data.preprocess import fold_tensors
from mlcli.data.textsamples import reviews, tagged_sentences, write
from mlcli.engine.fold import fit_fold
from mlcli.engine.saved import TextPredictor, load_predictor, raw_tokens, rebuild
from mlcli.rundir.models import read_schema

SMALL = ["model.d_model=32", "model.d_ff=64", "model.n_layers=1", "progress=false"]


def _reviews(path: Path, rows: int, seed: int, labels: bool = True) -> None:
    write("reviews", path, rows, seed, labels=labels)


def _train(cli, *overrides: str) -> None:
    result = cli("train", *overrides, "hydra.run.dir=run")
    assert result.exit_code == 0, result.output[-3000:]


@pytest.mark.long
def test_attention_labels_new_reviews_as_their_held_labels(cli, tmp_path):
    _reviews(tmp_path / "reviews.csv", 1000, seed=0)
    _reviews(tmp_path / "new.csv", 300, seed=1, labels=False)
    _train(cli, "dataset=text", "dataset.path=reviews.csv", "dataset.text=text",
           "dataset.target=label", "model=attention", *SMALL, "model.n_layers=2",
           "batch_size=32", "epochs=10", "cv.n_splits=2")  # fmt: skip
    result = cli("predict", "run", "--data", "new.csv", "--out", "labels.csv")
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == ["id", "label"]
    assert labels["id"].tolist() == list(range(300))
    held = [label for _, label in reviews(300, seed=1)]
    accuracy = float(np.mean(labels["label"].to_numpy() == np.asarray(held)))
    assert accuracy >= 0.8, accuracy


def test_predict_reads_text_as_each_fold_did_and_equals_the_in_memory_models(
    cli, compose, tmp_path
):
    _reviews(tmp_path / "reviews.csv", 160, seed=0)
    overrides = ["dataset=text", f"dataset.path={tmp_path / 'reviews.csv'}",
                 "dataset.id_column=id", "dataset.min_freq=2", "model=attention", *SMALL,
                 "epochs=2", "cv.n_splits=2", "final=ensemble"]  # fmt: skip
    _train(cli, *overrides)
    cfg = compose(*overrides)
    plan = runner.plan_folds(cfg, "key", run_dir=tmp_path / "memory")
    test = plan.test_idx
    frame = pd.read_csv(tmp_path / "reviews.csv")
    frame.iloc[test].drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    result = cli("predict", "run", "--data", "new.csv", "--out", "proba.parquet", "--proba")
    assert result.exit_code == 0, result.output
    assert "ids from column 'id' (the run's dataset.id_column)" in result.output
    written = pd.read_parquet(tmp_path / "proba.parquet")
    assert written["id"].tolist() == [str(i) for i in frame["id"].iloc[test]]  # as in the file
    schema = read_schema(tmp_path / "run")
    in_memory = []
    for fold, (train_idx, val_idx) in enumerate(plan.folds):
        trained = fit_fold(plan, fold)  # the fold trained again, in this process
        assert trained.model is not None
        weights = {k: v.numpy() for k, v in trained.model.items()}
        model = rebuild(schema, weights, trained.preprocess).eval()
        data = fold_tensors(plan.dataset, train_idx, val_idx, test, cfg.dataset, plan.device)
        assert data.x_test is not None
        with torch.no_grad():
            out = model(data.x_test, data.lengths_test)
        in_memory.append(torch.softmax(out.double(), dim=-1).numpy())
    np.testing.assert_array_equal(written[["neg", "pos"]].to_numpy(), np.mean(in_memory, axis=0))
    # The run's final rows are the same prediction, scored once.
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    final = rows[rows["split"] == "final"].set_index("metric")["value"]
    y = plan.dataset.y[test]
    assert final["acc"] == pytest.approx(float(np.mean(np.mean(in_memory, 0).argmax(1) == y)))


def test_tags_come_back_per_token_with_or_without_the_files_tags(cli, tmp_path):
    write("conll", tmp_path / "train.conll", 200)
    write("conll", tmp_path / "held.conll", 30, seed=1)
    write("conll", tmp_path / "new.conll", 30, seed=1, labels=False)  # one token a line
    _train(cli, "dataset=tagged", "dataset.path=train.conll", "model=attention",
           "model.head=token", *SMALL, "epochs=3", "cv.n_splits=2", "final=refit")  # fmt: skip
    for data, out in (("new.conll", "tags.csv"), ("held.conll", "again.csv")):
        result = cli("predict", "run", "--data", data, "--out", out)
        assert result.exit_code == 0, result.output
    tags = pd.read_csv(tmp_path / "tags.csv")
    pd.testing.assert_frame_equal(tags, pd.read_csv(tmp_path / "again.csv"))
    assert list(tags.columns) == ["id", "token_index", "tag"]
    sentences = tagged_sentences(30, seed=1)
    expected_ids = [i for i, s in enumerate(sentences) for _ in s]
    assert tags["id"].tolist() == expected_ids
    assert tags["token_index"].tolist() == [j for s in sentences for j in range(len(s))]
    held = [tag for s in sentences for _, tag in s]
    assert float(np.mean(tags["tag"].to_numpy() == np.asarray(held))) >= 0.6
    # --proba: one column per tag, each token's summing to 1
    assert cli("predict", "run", "--data", "new.conll", "--out", "p.csv", "--proba").exit_code == 0
    proba = pd.read_csv(tmp_path / "p.csv")
    names = ["ADJ", "ADV", "DET", "NOUN", "PUNCT", "VERB"]
    assert list(proba.columns) == ["id", "token_index", *names]
    np.testing.assert_allclose(proba[names].sum(axis=1), 1.0, atol=1e-12)
    assert (np.asarray(names)[proba[names].to_numpy().argmax(1)] == tags["tag"]).all()


def test_pairs_decode_greedily_as_the_runs_val_metric_does(cli, compose, tmp_path):
    write("pairs", tmp_path / "pairs.csv", 300)
    overrides = ["dataset=pairs", f"dataset.path={tmp_path / 'pairs.csv'}", "model=transformer",
                 *SMALL, "model.dropout=0", "optim.lr=3e-3", "epochs=4", "cv=holdout"]  # fmt: skip
    _train(cli, *overrides)
    result = cli("predict", "run", "--data", "pairs.csv", "--out", "decoded.csv")
    assert result.exit_code == 0, result.output
    decoded = pd.read_csv(tmp_path / "decoded.csv", keep_default_na=False)
    assert list(decoded.columns) == ["id", "target"]
    frame = pd.read_csv(tmp_path / "pairs.csv")
    cfg = compose(*overrides)
    plan = runner.plan_folds(cfg, "key")
    ((_, val_idx),) = plan.folds
    right = decoded["target"].to_numpy()[val_idx] == frame["target"].to_numpy()[val_idx]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    val = rows[(rows["split"] == "val") & (rows["metric"] == "exact_match")]
    assert float(right.mean()) == pytest.approx(float(val.iloc[-1]["value"]), abs=1e-12)
    # An ensemble decodes with the members' mean next-token probabilities over the tokens they
    # share by name: one model twice is that model's own greedy decoding.
    predictor = load_predictor(tmp_path / "run")
    assert isinstance(predictor, TextPredictor)
    sources = raw_tokens(plan.dataset.text, plan.dataset.X[val_idx])
    twice = TextPredictor("seq2seq", predictor.models * 2)
    assert twice.decode(sources).tolist() == predictor.decode(sources).tolist()
    assert predictor.models[0][1].pieces() != sorted(predictor.models[0][1].pieces())


def test_bad_prediction_files_exit_2_naming_the_file_and_line(cli, tmp_path):
    _reviews(tmp_path / "reviews.csv", 60, seed=0)
    _train(cli, "dataset=text", "dataset.path=reviews.csv", "model=attention", *SMALL,
           "epochs=1", "cv.n_splits=2")  # fmt: skip
    bad = [
        ("empty.csv", "id,text\n0,a good film\n1,  \n2,bad\n", ["empty.csv", "an empty text",
                                                                "line 3"]),
        ("header.csv", "id,text\n", ["header.csv", "no data rows"]),
        ("nocolumn.csv", "id,review\n0,a good film\n", ["nocolumn.csv", "no text column 'text'",
                                                         "line 1"]),
    ]  # fmt: skip
    write("conll", tmp_path / "train.conll", 40)
    tagged_bad = [
        ("fields.conll", "the\ndog\n\nruns VERB\n", ["fields.conll", "line 4 has 2 fields",
                                                     "line 1"]),
        ("empty.conll", "\n\n", ["empty.conll", "has no token lines"]),
    ]  # fmt: skip

    def check(run: str, cases: list[tuple[str, str, list[str]]]) -> None:
        for name, content, expected in cases:
            (tmp_path / name).write_text(content)
            result = cli("predict", run, "--data", name, "--out", "out.csv")
            assert result.exit_code == 2, (name, result.output)
            message = " ".join(result.output.replace("│", " ").split())
            for part in expected:
                assert part in message, (name, part, message)
            assert "Traceback" not in result.output
            assert not (tmp_path / "out.csv").exists()

    check("run", bad)
    result = cli("train", "dataset=tagged", "dataset.path=train.conll", "model=attention",
                 "model.head=token", *SMALL, "epochs=1", "cv.n_splits=2",
                 "hydra.run.dir=tagged")  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    check("tagged", tagged_bad)


@pytest.mark.parametrize("tokenizer", ["word", "char", "bpe", "wordpiece"])
def test_pieces_decode_as_their_ids_do(tmp_path, tokenizer):
    # Ensemble decoding works on tokens by name: they must read back as the ids would.
    from mlcli.data import pairs
    from mlcli.data.tokenize import tokenize_fold

    write("pairs", tmp_path / "pairs.csv", 80)
    size = 40 if tokenizer in ("bpe", "wordpiece") else None
    dataset = pairs(str(tmp_path / "pairs.csv"), tokenizer=tokenizer, vocab_size=size)
    vocabulary = tokenize_fold(dataset.text, dataset.X, dataset.y, np.arange(60)).vocabulary
    pieces = vocabulary.pieces()
    assert pieces[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and len(set(pieces)) == len(pieces)
    rng = np.random.default_rng(0)
    texts = set()
    for _ in range(200):
        ids = rng.integers(0, min(len(pieces), vocabulary.size), rng.integers(0, 9)).tolist()
        text = vocabulary.decode(ids)
        assert vocabulary.decode_pieces([pieces[i] for i in ids]) == text, ids
        texts.add(text)
    assert len(texts) > 100
