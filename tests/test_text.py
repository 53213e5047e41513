"""The user's text: ``dataset=text|tagged|pairs``, tokenized per fold, end to end.

The vocabulary is fitted on each fold's training rows alone (a word seen only in val rows is
unknown there), saved with the run as JSON and, read back, tokenizes text exactly as the fold's
rows were; bad files exit 2 naming the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlcli import runner
from mlcli.data import pairs, tagged, text
from mlcli.data.base import EOS, FIRST_RAW, UNK
from mlcli.data.errors import DataError
from mlcli.data.preprocess import fold_tensors
from mlcli.data.textsamples import reversed_pairs, reviews, write
from mlcli.data.tokenize import SPECIALS, Vocabulary, split, tokenize_fold

CPU = torch.device("cpu")
SMALL_ATTENTION = ["model=attention", "model.d_model=32", "model.d_ff=64", "model.n_layers=1"]


def _reviews_file(tmp_path: Path, rows: int, seed: int = 0) -> Path:
    path = tmp_path / "reviews.csv"
    write("reviews", path, rows, seed)
    return path


def test_review_set_defeats_bags_of_words_but_not_order():
    # The figures the generator promises, with scikit-learn's logistic regression (5-fold CV).
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    texts, labels = zip(*reviews(3000, seed=0), strict=True)

    def accuracy(ngrams: tuple[int, int]) -> float:
        model = make_pipeline(
            CountVectorizer(ngram_range=ngrams, token_pattern=r"\S+"),
            LogisticRegression(max_iter=2000),
        )
        return float(cross_val_score(model, list(texts), list(labels), cv=5).mean())

    assert accuracy((1, 1)) == pytest.approx(0.56, abs=0.03)
    assert accuracy((1, 2)) == pytest.approx(0.78, abs=0.03)


def _tiny_texts(tmp_path: Path) -> tuple[Path, list[str]]:
    rows = [
        ("a good film", "pos"),
        ("a bad film", "neg"),
        ("good good plot", "pos"),
        ("a bad plot", "neg"),
        ("zebra quixotic film", "pos"),  # words of its own: val only below
        ("bad zebra", "neg"),
    ]
    path = tmp_path / "tiny.csv"
    path.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    return path, [t for t, _ in rows]


@pytest.mark.parametrize("tokenizer", ["word", "char", "bpe", "wordpiece"])
def test_vocabulary_never_holds_a_token_of_the_val_rows_only(tmp_path, tokenizer):
    path, texts = _tiny_texts(tmp_path)
    size = {"bpe": 40, "wordpiece": 40}.get(tokenizer)
    dataset = text(str(path), tokenizer=tokenizer, vocab_size=size)
    train, val = np.arange(4), np.arange(4, 6)
    data = fold_tensors(dataset, train, val, train[:0], {"normalize": "none"}, CPU)
    assert data.vocabulary is not None
    unit = "char" if tokenizer == "char" else "word"
    train_units = {u for t in texts[:4] for u in split(t, unit, True)}
    train_chars = set("".join(texts[:4]))
    vocabulary = data.vocabulary.state()
    if tokenizer in ("word", "char"):
        learned = set(vocabulary["tokens"][len(SPECIALS) :])
        assert learned == train_units  # every training token, and nothing else
    else:
        pieces = vocabulary["model"]["model"]["vocab"]
        learned = {p.removesuffix("</w>").removeprefix("##") for p in pieces} - set(SPECIALS)
        assert {c for p in learned for c in p} <= train_chars  # 'z', 'q', 'x' are val only
        assert learned & train_units  # it learned whole training words
    # A val-only token is unknown in the val rows.
    assert "z" not in train_chars and "q" not in train_chars
    assert (data.x_val == UNK).any()
    assert not (data.x_train == UNK).any()


def test_ids_are_the_most_frequent_training_tokens_then_unknown(tmp_path):
    path, _ = _tiny_texts(tmp_path)
    dataset = text(str(path), vocab_size=6, min_freq=2)
    fold = tokenize_fold(dataset.text, dataset.X, dataset.y, np.arange(4))
    # Training rows: a x3, good x3, bad x2, film x2, plot x2: min_freq=2 keeps all five, the
    # cap of 6 ids (4 special) keeps 'a' and 'good' (first seen among the equally frequent).
    assert fold.vocabulary.tokens == [*SPECIALS, "a", "good"]
    assert fold.X[0].tolist()[:3] == [4, 5, UNK]
    assert fold.lengths.tolist() == [3, 3, 3, 3, 3, 2]


@pytest.mark.parametrize("tokenizer", ["word", "char", "bpe", "wordpiece"])
def test_a_saved_vocabulary_tokenizes_new_text_as_the_fold(tmp_path, tokenizer):
    path = _reviews_file(tmp_path, 120)
    size = 60 if tokenizer in ("bpe", "wordpiece") else None
    dataset = text(str(path), tokenizer=tokenizer, vocab_size=size, min_freq=2)
    fold = tokenize_fold(dataset.text, dataset.X, dataset.y, np.arange(80))
    saved = Vocabulary.from_state(json.loads(json.dumps(fold.vocabulary.state())))
    texts = [t for t, _ in reviews(120, seed=0)]
    ids, lengths = saved.encode(texts)
    assert lengths.tolist() == fold.lengths.tolist()
    width = fold.X.shape[1]
    assert ids.shape[1] <= width and not fold.X[:, ids.shape[1] :].any()
    assert np.array_equal(ids, fold.X[:, : ids.shape[1]])
    assert (ids[80:] == UNK).any() or tokenizer != "word"  # val words unseen in training


def test_a_run_saves_each_folds_vocabulary_and_it_reads_the_file_back(compose, tmp_path):
    path = _reviews_file(tmp_path, 200)
    cfg = compose("dataset=text", f"dataset.path={path}", "dataset.min_freq=3",
                  *SMALL_ATTENTION, "epochs=1", "cv.n_splits=2", "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    dataset = text(str(path), min_freq=3)
    texts = [t for t, _ in reviews(200, seed=0)]
    from mlcli.runner import plan_folds

    plan = plan_folds(cfg, "key")
    for fold, (train_idx, val_idx) in enumerate(plan.folds):
        state = json.loads((tmp_path / "run" / "models" / f"fold-{fold}.vocab.json").read_text())
        saved = Vocabulary.from_state(state)
        data = fold_tensors(dataset, train_idx, val_idx, plan.test_idx, cfg.dataset, CPU)
        ids, _ = saved.encode([texts[i] for i in val_idx])
        assert torch.equal(torch.from_numpy(ids), data.x_val[:, : ids.shape[1]])
        assert saved.tokens == data.vocabulary.tokens


@pytest.mark.parametrize("tokenizer", ["bpe", "wordpiece"])
def test_subword_vocabularies_are_the_same_every_time(tmp_path, tokenizer):
    # tokenizers numbers some pieces in hash order: the fold's vocabulary must not depend on it
    # (a resumed or parallel fold is the fold computed alone).
    dataset = text(str(_reviews_file(tmp_path, 200)), tokenizer=tokenizer, vocab_size=80)
    folds = [tokenize_fold(dataset.text, dataset.X, dataset.y, np.arange(150)) for _ in range(4)]
    assert len({json.dumps(f.vocabulary.state(), sort_keys=True) for f in folds}) == 1
    assert all(np.array_equal(f.X, folds[0].X) for f in folds)


def test_tagged_file_reads_tokens_and_tags_by_column(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- O\n\nThe x DET\ndog x NOUN\n\n\nruns x VERB\n.\tx PUNCT\n")
    dataset = tagged(str(path), tag_column=2)
    assert dataset.task == "tagging" and dataset.class_names == ["DET", "NOUN", "PUNCT", "VERB"]
    assert dataset.text.tokens == ("the", "dog", "runs", ".")
    assert dataset.X.tolist() == [[4, 5], [6, 7]]
    assert dataset.y.tolist() == [[0, 1], [3, 2]] and dataset.meta["lines"] == [3, 7]
    fold = tokenize_fold(dataset.text, dataset.X, dataset.y, np.array([0]))
    saved = Vocabulary.from_state(fold.vocabulary.state())
    ids, lengths = saved.encode_tokens([["The", "dog"], ["runs", "."]])
    assert ids.tolist() == fold.X.tolist() == [[4, 5], [UNK, UNK]] and lengths.tolist() == [2, 2]


def test_pairs_from_two_aligned_files_share_one_vocabulary(tmp_path):
    (tmp_path / "src.txt").write_text("red cat\nbig dog runs\n")
    (tmp_path / "tgt.txt").write_text("cat red\nruns dog big\n")
    dataset = pairs(str(tmp_path / "src.txt"), target_path=str(tmp_path / "tgt.txt"))
    assert dataset.task == "seq2seq" and dataset.text.target_tokens
    assert dataset.X.tolist() == [[4, 5, 0], [6, 7, 8]]
    assert dataset.y.tolist() == [[5, 4, EOS, 0], [8, 7, 6, EOS]]
    fold = tokenize_fold(dataset.text, dataset.X, dataset.y, np.array([0]))
    # Fitted on pair 0 (both sides): pair 1's words are unknown, EOS and PAD stay.
    assert fold.y.tolist() == [[5, 4, EOS, 0], [UNK, UNK, UNK, EOS]]
    assert fold.vocabulary.decode(fold.y[0].tolist()) == "cat red"
    assert int(dataset.X.min()) == 0 and int(dataset.X[dataset.X > 0].min()) == FIRST_RAW


BAD_FILES = [
    ("text", "text,label\ngood film,pos\n  ,neg\nbad,neg\n", [], ["an empty text", "line 3"]),
    ("text", "text,label\ngood,pos\nbad,pos\n", [], ["one class", "'pos'", "line 2"]),
    ("text", "text,label\ngood,pos\n,neg\n", ["dataset.tokenizer=bpe"], ["dataset.vocab_size"]),
    ("tagged", "the DET\ndog NOUN\n\nruns VERB extra\n", [], ["line 4 has 3 fields", "line 1"]),
    ("tagged", "the DET\ndog DET\n", [], ["one class", "line 1"]),
    ("tagged", "\nthe\ndog\n", [], ["line 2 has one field", "no tag"]),
    ("pairs", "source,target\na b,b a\nc d,\n", [], ["an empty text", "line 3", "'target'"]),
]


@pytest.mark.parametrize(("kind", "content", "extra", "expected"), BAD_FILES)
def test_bad_text_files_exit_2_naming_the_file_and_line(cli, tmp_path, kind, content, extra,
                                                        expected):  # fmt: skip
    path = tmp_path / f"bad.{'conll' if kind == 'tagged' else 'csv'}"
    path.write_text(content)
    model = ["model=attention", "model.head=token"] if kind == "tagged" else ["model=attention"]
    if kind == "pairs":
        model = ["model=transformer"]
    result = cli("train", f"dataset={kind}", f"dataset.path={path}", *model, *extra,
                 "epochs=1", "cv.n_splits=2", "progress=false")  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.replace("│", " ").split())
    for part in [path.name, *expected]:
        assert part in message, (part, message)
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()


def test_misaligned_pair_files_are_refused(tmp_path):
    (tmp_path / "src.txt").write_text("a b\nc d\ne f\n")
    (tmp_path / "tgt.txt").write_text("b a\nd c\n")
    with pytest.raises(DataError, match=r"tgt.txt: has 2 lines but .*src.txt has 3"):
        pairs(str(tmp_path / "src.txt"), target_path=str(tmp_path / "tgt.txt"))


def _fold_mean(outcome, metric: str) -> float:
    return float(outcome.summary[metric][0])


@pytest.mark.long
def test_attention_reads_the_negation_a_bag_of_words_misses(compose, tmp_path):
    # A bag of words gets 0.55 of these reviews right, bigrams 0.76 (the test above).
    path = _reviews_file(tmp_path, 1000)
    cfg = compose("dataset=text", f"dataset.path={path}", "dataset.id_column=id",
                  *SMALL_ATTENTION, "model.n_layers=2", "batch_size=32", "epochs=10",
                  "cv.n_splits=2", "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert _fold_mean(outcome, "val/acc") >= 0.8


@pytest.mark.long
def test_attention_tags_a_grammar_whose_words_need_context(compose, tmp_path):
    write("conll", tmp_path / "train.conll", 400)
    cfg = compose("dataset=tagged", f"dataset.path={tmp_path / 'train.conll'}", *SMALL_ATTENTION,
                  "model.head=token", "batch_size=16", "epochs=10", "cv.n_splits=2",
                  "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert _fold_mean(outcome, "val/acc") >= 0.95


@pytest.mark.long
def test_transformer_reverses_sentence_pairs(compose, tmp_path):
    rows = reversed_pairs(1000, seed=0, max_words=5)  # shorter than the docs' pairs: quicker
    (tmp_path / "pairs.csv").write_text("source,target\n" + "".join(f"{s},{t}\n" for s, t in rows))
    cfg = compose("dataset=pairs", f"dataset.path={tmp_path / 'pairs.csv'}", "model=transformer",
                  "model.d_model=32", "model.d_ff=64", "model.n_layers=1", "model.dropout=0",
                  "optim.lr=3e-3", "batch_size=32", "epochs=25", "cv=holdout",
                  "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert _fold_mean(outcome, "val/exact_match") >= 0.9


def _page_commands() -> list[list[str]]:
    """The ``mlcli`` commands of docs/guide/text.md's bash blocks."""
    import shlex

    page = (Path(__file__).parents[1] / "docs" / "guide" / "text.md").read_text()
    blocks = [b.split("```", 1)[0] for b in page.split("```bash\n")[1:]]
    lines = [line for b in blocks for line in b.splitlines() if line.strip()]
    return [shlex.split(line, comments=True)[1:] for line in lines]


def test_every_command_of_the_text_page_runs(cli, tmp_path):
    # Each command of guide/text.md on small files of the page's kinds, one epoch, two folds;
    # each prediction then writes its file.
    commands = _page_commands()
    assert len(commands) >= 5 and {c[0] for c in commands} == {"train", "predict"}
    write("reviews", tmp_path / "reviews.csv", 60)
    write("conll", tmp_path / "train.conll", 40)
    write("pairs", tmp_path / "pairs.csv", 60)
    write("reviews", tmp_path / "new_reviews.csv", 20, seed=1, labels=False)
    write("conll", tmp_path / "new.conll", 10, seed=1, labels=False)
    write("pairs", tmp_path / "new_pairs.csv", 20, seed=1, labels=False)
    for args in commands:
        if args[0] == "predict":
            result = cli(*args)
            assert result.exit_code == 0, (args, " ".join(result.output.replace("│", " ").split()))
            assert (tmp_path / args[args.index("--out") + 1]).is_file()
            continue
        shrunk = [a for a in args if not a.startswith(("epochs=", "cv.n_splits="))]
        result = cli(*shrunk, "epochs=1", "cv.n_splits=2", "progress=false")
        assert result.exit_code == 0, (args, result.output[-2000:])
