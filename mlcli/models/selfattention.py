"""Self-attention: an encoder over a set or sequence (``attention``) and an encoder-decoder
``transformer`` for sequence-to-sequence tasks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mlcli.data.base import BOS, EOS
from mlcli.models.basic import choice
from mlcli.models.sequence import (
    PAD,
    SequenceInput,
    input_mask,
    masked_mean,
    sinusoidal_positions,
    valid_mask,
)

POSITIONS = ("sinusoidal", "learned", "none")


def _encoder(
    d_model: int, n_heads: int, n_layers: int, d_ff: int, dropout: float, norm_first: bool
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=norm_first
    )
    # A final LayerNorm is part of the pre-LN design; nested tensors are off so padded
    # positions are computed like the others (and no warning is raised for pre-LN).
    norm = nn.LayerNorm(d_model) if norm_first else None
    return nn.TransformerEncoder(layer, n_layers, norm=norm, enable_nested_tensor=False)


class Positions(nn.Module):
    """Adds position information: fixed sinusoids, learned embeddings, or nothing (a set)."""

    def __init__(self, kind: str, d_model: int, max_length: int) -> None:
        super().__init__()
        kind = choice(kind)
        if kind not in POSITIONS:
            raise ValueError(f"unknown positions {kind!r}; choose one of {', '.join(POSITIONS)}")
        self.kind = kind
        self.learned = nn.Embedding(max_length, d_model) if kind == "learned" else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        length = h.shape[1]
        if self.learned is not None:
            return h + self.learned(torch.arange(length, device=h.device))
        if self.kind == "sinusoidal":
            return h + sinusoidal_positions(length, h.shape[2], h.device)
        return h


def _no_empty_rows(padding: torch.Tensor) -> torch.Tensor:
    # A row with no valid position would make every attention weight NaN: let it see position 0.
    empty = padding.all(dim=1)
    if bool(empty.any()):
        padding = padding.clone()
        padding[empty, 0] = False
    return padding


class AttentionEncoder(nn.Module):
    """Self-attention over a set/sequence with padding masks (see :func:`attention`)."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        vocab_size: int | None,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        dropout: float,
        head: str,
        positions: str,
        norm_first: bool,
    ) -> None:
        super().__init__()
        head = choice(head)
        if head not in ("sequence", "token"):
            raise ValueError(f"unknown head {head!r}; choose sequence or token")
        self.head = head
        self.input = SequenceInput(in_shape, d_model, vocab_size)
        self.positions = Positions(positions, d_model, int(in_shape[0]))
        self.dropout = nn.Dropout(dropout)
        self.encoder = _encoder(d_model, n_heads, n_layers, d_ff, dropout, norm_first)
        self.out = nn.Linear(d_model, out_features)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = input_mask(x, lengths, self.input.tokens)
        h = self.dropout(self.positions(self.input(x)))
        padding = _no_empty_rows(~mask) if mask is not None else None
        h = self.encoder(h, src_key_padding_mask=padding)
        if self.head == "token":
            return self.out(h)  # (N, T, out): one prediction per element
        return self.out(masked_mean(h, mask, dim=1))  # (N, out): mean over valid elements


def attention(
    in_shape: Sequence[int],
    out_features: int,
    vocab_size: int | None = None,
    variable_length: bool = False,
    d_model: int = 64,
    n_heads: int = 4,
    n_layers: int = 2,
    d_ff: int = 128,
    dropout: float = 0.1,
    head: str = "sequence",
    positions: str = "sinusoidal",
    norm_first: bool = True,
) -> AttentionEncoder:
    """A self-attention encoder over a set or sequence of vectors or tokens.

    The input — token ids ``(T,)`` (``vocab_size``; id 0 is padding), scalars ``(T,)`` or vectors
    ``(T, F)``, variable-length ones zero-padded with their ``lengths`` — is embedded to
    ``d_model``, given ``positions`` (``sinusoidal``, ``learned`` or ``none`` for a set), and
    passes ``n_layers`` Transformer encoder layers (``n_heads`` heads, feed-forward width ``d_ff``,
    pre-LN when ``norm_first``) whose attention never looks at padded positions. ``head=token``
    predicts per element (sequence labelling, output ``(N, T, out_features)``), ``head=sequence``
    predicts per sequence from the mean over valid elements.
    """
    del variable_length  # lengths arrive with each batch; the layout is (T, F) either way
    return AttentionEncoder(
        in_shape,
        out_features,
        vocab_size,
        d_model,
        n_heads,
        n_layers,
        d_ff,
        dropout,
        head,
        positions,
        norm_first,
    )


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer over one shared token vocabulary (see :func:`transformer`)."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        dropout: float,
        norm_first: bool,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.encoder = _encoder(d_model, n_heads, n_layers, d_ff, dropout, norm_first)
        layer = nn.TransformerDecoderLayer(
            d_model,
            n_heads,
            d_ff,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=norm_first,
        )
        self.decoder = nn.TransformerDecoder(
            layer, n_layers, norm=nn.LayerNorm(d_model) if norm_first else None
        )
        self.out = nn.Linear(d_model, vocab_size)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        # No sqrt(d_model) scaling: nn.Embedding starts at unit variance, the positions' scale.
        h = self.embed(tokens)
        return self.dropout(h + sinusoidal_positions(tokens.shape[1], self.d_model, h.device))

    def encode(
        self, source: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states of the source and its padding mask (True = padding)."""
        mask = valid_mask(lengths, source.shape[1]) if lengths is not None else source != PAD
        padding = _no_empty_rows(~mask)
        return self.encoder(self._embed(source), src_key_padding_mask=padding), padding

    def decode(
        self, target_in: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits at every target position; position j sees target_in[:, : j + 1]."""
        length = target_in.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=target_in.device).triu(1)
        h = self.decoder(
            self._embed(target_in),
            memory,
            tgt_mask=causal,
            memory_key_padding_mask=memory_padding,
        )
        return self.out(h)

    def forward(
        self, source: torch.Tensor, lengths: torch.Tensor | None, target_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher forcing: logits ``(N, T_out, vocab)`` given the shifted target ``target_in``."""
        memory, padding = self.encode(source, lengths)
        return self.decode(target_in, memory, padding)

    @torch.no_grad()
    def generate(
        self, source: torch.Tensor, lengths: torch.Tensor | None, max_length: int
    ) -> torch.Tensor:
        """Greedy decoding: ``(N, max_length)`` tokens, each row ending at its first EOS and
        padded with PAD after it; decoding stops as soon as every row has produced EOS."""
        memory, padding = self.encode(source, lengths)
        n = len(source)
        tokens = torch.full((n, 1), BOS, dtype=torch.long, device=source.device)
        done = torch.zeros(n, dtype=torch.bool, device=source.device)
        for _ in range(max_length):
            next_token = self.decode(tokens, memory, padding)[:, -1].argmax(dim=-1)
            next_token = next_token.masked_fill(done, PAD)
            tokens = torch.cat([tokens, next_token.unsqueeze(1)], dim=1)
            done |= next_token == EOS
            if bool(done.all()):
                break
        out = torch.full((n, max_length), PAD, dtype=torch.long, device=source.device)
        out[:, : tokens.shape[1] - 1] = tokens[:, 1:]
        return out


def transformer(
    in_shape: Sequence[int],
    out_features: int,
    vocab_size: int,
    variable_length: bool = False,
    d_model: int = 64,
    n_heads: int = 4,
    n_layers: int = 2,
    d_ff: int = 256,
    dropout: float = 0.1,
    norm_first: bool = True,
) -> Seq2SeqTransformer:
    """An encoder-decoder Transformer for sequence-to-sequence tasks over token ids.

    ``n_layers`` encoder and ``n_layers`` decoder layers (``n_heads`` heads, feed-forward width
    ``d_ff``, sinusoidal positions, pre-LN when ``norm_first``; ``norm_first=false`` is the
    original post-LN Transformer). Training uses teacher forcing (``forward(source, lengths,
    target_in)``); evaluation decodes greedily from BOS until the model emits EOS
    (``generate``), so the model decides the output length. Source and target share the
    vocabulary (``out_features`` must equal ``vocab_size``).
    """
    del in_shape, variable_length  # any source length works; lengths arrive with each batch
    if out_features != vocab_size:
        raise ValueError(
            f"transformer predicts tokens of the source vocabulary ({vocab_size}), but the task "
            f"has {out_features} outputs; use it on a seq2seq dataset"
        )
    return Seq2SeqTransformer(vocab_size, d_model, n_heads, n_layers, d_ff, dropout, norm_first)
