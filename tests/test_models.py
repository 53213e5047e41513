"""Models: output shapes, a few steps reduce the loss, padding never reaches real positions,
greedy decoding stops at EOS."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mlcli.data.base import EOS, PAD
from mlcli.models import attention, cnn, cnn1d, linear, mlp, relu_sum, sigmoid_sum, transformer
from mlcli.models.selfattention import Seq2SeqTransformer
from mlcli.models.sequence import MaskedBatchNorm1d, valid_mask

N, T, F_IN, VOCAB, CLASSES = 6, 9, 3, 11, 4
LENGTHS = torch.tensor([9, 7, 5, 3, 2, 1])


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _vectors(seed: int = 0) -> torch.Tensor:
    x = torch.randn(N, T, F_IN, generator=torch.Generator().manual_seed(seed))
    return x * valid_mask(LENGTHS, T).unsqueeze(-1)  # zero-padded, as datasets provide them


def _tokens(seed: int = 0) -> torch.Tensor:
    x = torch.randint(3, VOCAB, (N, T), generator=torch.Generator().manual_seed(seed))
    return x.masked_fill(~valid_mask(LENGTHS, T), PAD)


# (name, model, inputs, target): every model on data it is built for.
CASES = {
    "linear": (lambda: linear((1, 8, 8), CLASSES), (_randn(N, 1, 8, 8),), "class"),
    "mlp": (lambda: mlp((5,), 1, hidden=[8], batch_norm=True), (_randn(N, 5),), "reg"),
    "sigmoid_sum": (lambda: sigmoid_sum((1,), 1, n_units=5), (_randn(N, 1),), "reg"),
    "relu_sum": (lambda: relu_sum((1,), 1, n_units=5), (_randn(N, 1),), "reg"),
    "cnn-8x8": (lambda: cnn((1, 8, 8), CLASSES), (_randn(N, 1, 8, 8),), "class"),
    "cnn-28x28": (
        lambda: cnn((3, 28, 28), CLASSES, channels=[4, 4, 4], hidden=[]),
        (_randn(N, 3, 28, 28),),
        "class",
    ),
    "cnn1d-signal": (lambda: cnn1d((1, 40), CLASSES), (_randn(N, 1, 40),), "class"),
    "cnn1d-sequence": (
        lambda: cnn1d((T, F_IN), CLASSES, variable_length=True, channels=[8, 8]),
        (_vectors(), LENGTHS),
        "class",
    ),
    "cnn1d-token-head": (
        lambda: cnn1d((T,), CLASSES, vocab_size=VOCAB, variable_length=True, head="token"),
        (_tokens(), LENGTHS),
        "tag",
    ),
    "attention-sequence": (
        lambda: attention((T, F_IN), CLASSES, variable_length=True, d_model=16, dropout=0.0),
        (_vectors(), LENGTHS),
        "class",
    ),
    "attention-token-head": (
        lambda: attention((T,), CLASSES, vocab_size=VOCAB, head="token", d_model=16, dropout=0.0),
        (_tokens(), LENGTHS),
        "tag",
    ),
    "attention-set": (
        lambda: attention((T, F_IN), CLASSES, positions="none", d_model=16, dropout=0.0),
        (_randn(N, T, F_IN),),
        "class",
    ),
}


def _target(kind: str, out: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if kind == "reg":
        return torch.randn(out.shape, generator=generator)
    if kind == "class":
        return torch.randint(0, CLASSES, (N,), generator=generator)
    labels = torch.randint(0, CLASSES, (N, T), generator=generator)
    return labels.masked_fill(~valid_mask(LENGTHS, T), -100)


def _loss(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "reg":
        return F.mse_loss(out, target)
    if kind == "class":
        return F.cross_entropy(out, target)
    return F.cross_entropy(out.flatten(0, 1), target.flatten(), ignore_index=-100)


@pytest.mark.parametrize("name", list(CASES))
def test_model_output_shape_and_loss_decreases(name):
    torch.manual_seed(0)
    build, inputs, kind = CASES[name]
    model = build()
    out = model(*inputs)
    expected = {"reg": (N, 1), "class": (N, CLASSES), "tag": (N, T, CLASSES)}[kind]
    assert out.shape == expected
    target = _target(kind, out)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = _loss(kind, model(*inputs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():  # still in train mode: the same function as the first loss
        final = _loss(kind, model(*inputs), target).item()
    assert final < losses[0], (name, losses, final)


def _padding_changed(x: torch.Tensor, extra: int, tokens: bool) -> torch.Tensor:
    """The same sequences with ``extra`` more padded steps and garbage in all padded steps."""
    longer = F.pad(x, (0, extra) if tokens else (0, 0, 0, extra))
    padded = ~valid_mask(LENGTHS, x.shape[1] + extra)
    if tokens:
        return longer.masked_fill(padded, PAD)
    garbage = 100 * torch.randn(longer.shape, generator=torch.Generator().manual_seed(5))
    return torch.where(padded.unsqueeze(-1), garbage, longer)


@pytest.mark.parametrize(
    ("build", "tokens"),
    [
        (lambda: attention((T, F_IN), CLASSES, head="token", d_model=16), False),
        (lambda: attention((T,), CLASSES, vocab_size=VOCAB, head="token", d_model=16), True),
        (lambda: attention((T, F_IN), CLASSES, d_model=16), False),
        (lambda: cnn1d((T, F_IN), CLASSES, variable_length=True, head="token"), False),
        (lambda: cnn1d((T,), CLASSES, vocab_size=VOCAB, variable_length=True), True),
    ],
    ids=["attention-token", "attention-token-ids", "attention-pooled", "cnn1d-token", "cnn1d"],
)
def test_padding_never_changes_outputs_at_real_positions(build, tokens):
    torch.manual_seed(0)
    model = build()
    # A training step first, so batch norm's running statistics are not the trivial ones.
    x = _tokens() if tokens else _vectors()
    model(x, LENGTHS).sum().backward()
    model.eval()
    with torch.no_grad():
        reference = model(x, LENGTHS)
        changed = model(_padding_changed(x, 4, tokens), LENGTHS)
    if reference.dim() == 3:  # per token: compare the real positions only
        real = valid_mask(LENGTHS, T)
        reference, changed = reference[real], changed[:, :T][real]
    torch.testing.assert_close(changed, reference, rtol=1e-4, atol=1e-5)


def test_transformer_ignores_source_padding_and_future_targets():
    torch.manual_seed(0)
    model = transformer((T,), VOCAB, vocab_size=VOCAB, d_model=16, d_ff=32).eval()
    source, target_in = _tokens(0), _tokens(1)
    with torch.no_grad():
        reference = model(source, LENGTHS, target_in)
        longer = model(_padding_changed(source, 3, tokens=True), LENGTHS, target_in)
        # Changing the last target token must not change predictions at earlier positions.
        future = target_in.clone()
        future[:, -1] = 3
        causal = model(source, LENGTHS, future)
    torch.testing.assert_close(longer, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(causal[:, :-1], reference[:, :-1], rtol=1e-4, atol=1e-5)


class _Scripted(Seq2SeqTransformer):
    """Decoder replaced by a script: row i emits tokens 5, 6, ... and EOS at step ``eos_at[i]``."""

    def __init__(self, eos_at: list[int]) -> None:
        super().__init__(VOCAB, 8, 2, 1, 16, 0.0, True)
        self.eos_at = torch.tensor(eos_at)
        self.calls = 0

    def decode(self, target_in, memory, memory_padding):
        self.calls += 1
        step = target_in.shape[1] - 1  # tokens produced so far
        logits = torch.zeros(len(target_in), target_in.shape[1], VOCAB)
        token = torch.where(self.eos_at == step, EOS, 5 + step % 4)
        logits[torch.arange(len(target_in)), -1, token] = 1.0
        return logits


def test_greedy_decoding_stops_at_eos_and_pads_after_it():
    model = _Scripted(eos_at=[0, 2, 3])
    out = model.generate(torch.ones(3, 4, dtype=torch.long), None, max_length=8)
    assert out.tolist() == [
        [EOS, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
        [5, 6, EOS, PAD, PAD, PAD, PAD, PAD],
        [5, 6, 7, EOS, PAD, PAD, PAD, PAD],
    ]
    assert model.calls == 4  # stopped once every row had emitted EOS, not after max_length


def test_greedy_decoding_stops_at_max_length_without_eos():
    model = _Scripted(eos_at=[99])
    out = model.generate(torch.ones(1, 4, dtype=torch.long), None, max_length=5)
    assert out.tolist() == [[5, 6, 7, 8, 5]] and model.calls == 5


def test_masked_batch_norm_uses_valid_positions_only():
    torch.manual_seed(0)
    norm, reference = MaskedBatchNorm1d(3), nn.BatchNorm1d(3)
    x = torch.randn(N, 3, T)
    mask = valid_mask(LENGTHS, T)
    out = norm(x, mask)
    valid = x.transpose(1, 2)[mask]  # (valid positions, channels)
    torch.testing.assert_close(out.transpose(1, 2)[mask], reference(valid))
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    assert out.transpose(1, 2)[~mask].abs().max() == 0


def test_relu_sum_fits_a_piecewise_linear_curve_that_linear_cannot():
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 200).unsqueeze(1)
    y = torch.clamp(x, -0.5, 0.5) - 0.5 * torch.relu(x - 1)  # two kinks and a ramp down

    def fitted_mse(model: nn.Module) -> float:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(300):
            loss = F.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return F.mse_loss(model(x), y).item()

    assert fitted_mse(relu_sum((1,), 1, n_units=6)) < 2e-3
    assert fitted_mse(linear((1,), 1)) > 2e-2


def test_builders_reject_inputs_they_cannot_read():
    with pytest.raises(ValueError, match="cnn needs image inputs"):
        cnn((40,), CLASSES)
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(T, F\)"):
        attention((1, 8, 8), CLASSES)
    with pytest.raises(ValueError, match="seq2seq dataset"):
        transformer((T,), CLASSES, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        cnn1d((1, 40), CLASSES, kernel_size=4)
