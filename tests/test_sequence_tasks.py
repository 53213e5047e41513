"""Sequence tasks end to end: preprocessing of padded sequences, token-level loss and metrics,
greedy-decoding metrics, and the runner on tagging, sequence classification and seq2seq data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mlcli import runner
from mlcli.config.targets import root_cause
from mlcli.data.base import EOS, PAD
from mlcli.data.preprocess import fold_tensors, valid_steps
from mlcli.engine.loop import evaluate, fit
from mlcli.models import build_model
from tests import synthetic


def _synthetic(name: str) -> list[str]:
    return [f"dataset._target_=tests.synthetic.{name}", "allow_targets=[tests.synthetic]"]


SMALL_ATTENTION = ["model=attention", "model.d_model=16", "model.d_ff=32", "model.n_layers=1"]


def _metrics(run_dir) -> dict[str, set[str]]:
    frame = pd.read_parquet(run_dir / "results.parquet")
    return {s: set(frame.loc[frame["split"] == s, "metric"]) for s in ("train", "val", "test")}


def test_sequences_are_scaled_with_valid_steps_only_and_padding_stays_zero():
    dataset = synthetic.vectors()
    index = np.arange(len(dataset.y))
    train, val = index[:64], index[64:]
    data = fold_tensors(dataset, train, val, np.array([], np.int64), {}, torch.device("cpu"))
    mask = torch.from_numpy(valid_steps(dataset.lengths[train], dataset.X.shape[1]))
    valid = data.x_train[mask]  # (valid steps, features)
    torch.testing.assert_close(valid.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    assert data.x_train[~mask].abs().max() == 0 and data.x_val[data.x_val.sum(-1) == 0].sum() == 0
    val_mask = torch.from_numpy(valid_steps(dataset.lengths[val], dataset.X.shape[1]))
    assert data.x_val[~val_mask].abs().max() == 0
    assert data.lengths_train.tolist() == dataset.lengths[train].tolist()


def test_token_ids_are_never_scaled():
    dataset = synthetic.tagging()
    index = np.arange(len(dataset.y))
    data = fold_tensors(dataset, index[:64], index[64:], index[:0], {}, torch.device("cpu"))
    assert data.x_train.dtype == torch.int64
    assert torch.equal(data.x_train, torch.from_numpy(dataset.X[:64]))


class _ConstantTagger(nn.Module):
    def forward(self, x, lengths):
        out = torch.zeros(*x.shape, 2)
        out[..., 0] = 1.0
        return out


def test_tagging_accuracy_and_loss_count_real_tokens_only():
    dataset = synthetic.tagging()
    x, y = torch.from_numpy(dataset.X), torch.from_numpy(dataset.y)
    lengths = torch.from_numpy(dataset.lengths)
    metrics = evaluate(_ConstantTagger(), x, y, "tagging", 0.0, 1.0, lengths)
    real = y != -100
    assert metrics["acc"].item() == pytest.approx(
        ((y == 0) & real).sum().item() / real.sum().item()
    )
    labels = y[real]  # the loss averages over real tokens only
    logits = torch.tensor([1.0, 0.0]).expand(len(labels), 2)
    expected = torch.nn.functional.cross_entropy(logits, labels).item()
    assert metrics["loss"].item() == pytest.approx(expected)


class _Scripted(nn.Module):
    """Teacher forcing predicts the target exactly; greedy decoding returns ``predictions``."""

    def __init__(self, vocab: int, predictions: torch.Tensor) -> None:
        super().__init__()
        self.vocab, self.predictions = vocab, predictions

    def forward(self, source, lengths, target_in):
        next_tokens = torch.cat([target_in[:, 1:], torch.full_like(target_in[:, :1], EOS)], 1)
        return torch.nn.functional.one_hot(next_tokens, self.vocab).float() * 10

    def generate(self, source, lengths, max_length):
        assert max_length == self.predictions.shape[1]
        return self.predictions


def test_seq2seq_metrics_come_from_greedy_decoding():
    y = torch.tensor([[5, 4, 3, EOS, PAD], [7, 6, EOS, PAD, PAD], [3, EOS, PAD, PAD, PAD]])
    decoded = torch.tensor(
        [[5, 4, 3, EOS, PAD], [7, 5, EOS, PAD, PAD], [3, 3, 3, 3, 3]]  # exact, 1 wrong, no EOS
    )
    source = torch.ones(3, 4, dtype=torch.long)
    metrics = evaluate(_Scripted(8, decoded), source, y, "seq2seq", 0.0, 1.0, None)
    assert metrics["exact_match"].item() == pytest.approx(1 / 3)
    assert metrics["token_acc"].item() == pytest.approx((4 + 2 + 1) / 9)  # 9 real target tokens
    assert metrics["tf_acc"].item() == pytest.approx(1.0)


def test_train_loss_is_the_token_weighted_mean(tmp_path):
    # With lr=0 the weights never move, so the epoch's train loss (accumulated over batches of
    # different token counts) must equal the loss of the whole training split at once.
    torch.manual_seed(0)
    dataset = synthetic.tagging()
    index = np.arange(len(dataset.y))
    data = fold_tensors(dataset, index[:80], index[80:], index[:0], {}, torch.device("cpu"))
    model = build_model(_node("attention", head="token", d_model=8, d_ff=8, dropout=0.0), dataset)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rows = fit(model, optimizer, scheduler, data, task="tagging", epochs=1, batch_size=16,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    train = {m: v for _, s, m, v in rows if s == "train"}
    whole = evaluate(model, data.x_train, data.y_train, "tagging", 0, 1, data.lengths_train)
    assert train["loss"] == pytest.approx(whole["loss"].item(), rel=1e-5)
    assert train["acc"] == pytest.approx(whole["acc"].item(), rel=1e-5)


def _node(name: str, **hparams):
    from omegaconf import OmegaConf

    return OmegaConf.create({"_target_": f"mlcli.models.{name}", **hparams})


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        ("mlp", "tagging", "holds token ids"),
        ("mlp", "reverse", "embeds tokens: transformer"),
        ("attention", "reverse", "needs a model that decodes"),
        ("transformer", "tagging", "use it on a seq2seq dataset"),
    ],
)
def test_models_say_which_data_they_cannot_read(model, dataset, message):
    with pytest.raises(Exception) as error:  # Hydra wraps the builder's error
        build_model(_node(model), getattr(synthetic, dataset)())
    cause = root_cause(error.value)
    assert isinstance(cause, ValueError) and message in str(cause)


def test_tagging_run_learns_and_records_token_metrics(compose, tmp_path):
    cfg = compose(*_synthetic("tagging"), *SMALL_ATTENTION, "model.head=token", "cv=holdout",
                  "epochs=5", "batch_size=16", "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert _metrics(tmp_path / "run") == {
        "train": {"loss", "acc", "lr"},
        "val": {"loss", "acc"},
        "test": {"loss", "acc"},
    }
    assert outcome.summary["val/acc"][0] > 0.9  # it learns (the tag is the token's parity)
    status = pd.read_json(tmp_path / "run" / "status.json", typ="series")
    assert status["metric"] == "val/acc" and status["task"] == "tagging"


@pytest.mark.parametrize("model", ["cnn1d", "mlp"])
def test_variable_length_classification_run(compose, tmp_path, model):
    # cnn1d masks the padding; an mlp reads the zero-padded sequences as fixed-size inputs.
    cfg = compose(*_synthetic("vectors"), f"model={model}", "cv=holdout", "epochs=3",
                  "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert _metrics(tmp_path / "run")["val"] == {"loss", "acc"}
    assert outcome.summary["val/acc"][0] > 0.8  # chance: 0.5


def test_seq2seq_run_records_decoding_metrics(compose, tmp_path):
    cfg = compose(*_synthetic("reverse"), "model=transformer", "model.d_model=16",
                  "model.d_ff=32", "model.n_layers=1", "cv=holdout", "epochs=2",
                  "progress=false")  # fmt: skip
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert _metrics(tmp_path / "run") == {
        "train": {"loss", "tf_acc", "lr"},
        "val": {"loss", "tf_acc", "token_acc", "exact_match"},
        "test": {"loss", "tf_acc", "token_acc", "exact_match"},
    }
    status = pd.read_json(tmp_path / "run" / "status.json", typ="series")
    assert status["metric"] == "val/exact_match"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.head=sequence", *_synthetic("tagging")], "one prediction per token"),
        (["model.head=token", *_synthetic("vectors")], "one prediction per example"),
    ],
)
def test_a_head_that_does_not_fit_the_task_fails_with_the_fix(
    compose, tmp_path, overrides, message
):
    cfg = compose(*SMALL_ATTENTION, *overrides, "cv=holdout", "epochs=1", "progress=false")
    with pytest.raises(ValueError, match=message):
        runner.run(cfg, tmp_path / "run")
    status = pd.read_json(tmp_path / "run" / "status.json", typ="series")
    assert status["state"] == "FAILED" and "model.head=" in status["error"]["message"]
