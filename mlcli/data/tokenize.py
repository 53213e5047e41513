"""Tokenization of the user's text, fitted per fold on the training rows alone.

A text dataset (:mod:`mlcli.data.text`) holds raw token codes: ``FIRST_RAW + k`` for the ``k``-th
distinct word (or character) of the file. Each fold then fits its own :class:`Vocabulary` on its
training rows — the tokens seen at least ``min_freq`` times there, the most frequent first, at
most ``vocab_size`` ids with the special ones — and maps every row through it: a token its
training rows lack becomes ``UNK`` in val and test. ``tokenizer=bpe|wordpiece`` trains a
Hugging Face ``tokenizers`` subword model on the training rows' words instead (offline; nothing is
downloaded) and splits each word into its pieces.

A fitted vocabulary is a JSON document (:meth:`Vocabulary.state`, never pickle), saved with the
run, so new text is tokenized exactly as the fold's rows were (:meth:`Vocabulary.encode`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlcli.data.base import EOS, FIRST_RAW, PAD, UNK, TextTokens

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""The special tokens, at ids PAD, BOS, EOS, UNK of every vocabulary."""
TOKENIZERS = ("word", "char", "bpe", "wordpiece")
SUBWORD = ("bpe", "wordpiece")
STATE_FORMAT = 1
_WORD = re.compile(r"\w+|[^\w\s]")


def split(text: str, tokenizer: str, lowercase: bool) -> list[str]:
    """The raw tokens of one text: its characters (``char``; runs of spaces become one space)
    or its words and punctuation marks (every other tokenizer; subwords split words later)."""
    if lowercase:
        text = text.lower()
    if tokenizer == "char":
        return list(" ".join(text.split()))
    return _WORD.findall(text)


@dataclass
class RawCodes:
    """Raw token codes in first-seen order (``FIRST_RAW + k`` for ``tokens[k]``)."""

    index: dict[str, int] = field(default_factory=dict)

    def codes(self, tokens: Sequence[str]) -> list[int]:
        """The codes of ``tokens``, giving each new one the next code."""
        index = self.index
        return [FIRST_RAW + index.setdefault(token, len(index)) for token in tokens]

    @property
    def tokens(self) -> tuple[str, ...]:
        """The distinct tokens by code."""
        return tuple(self.index)


def pack(rows: Sequence[Sequence[int]], width: int | None = None, end: bool = False) -> np.ndarray:
    """Rows of ids as one int64 array padded with PAD (``end``: each row followed by EOS)."""
    extra = 1 if end else 0
    if width is None:
        width = max((len(r) for r in rows), default=0) + extra
    out = np.full((len(rows), max(width, 1)), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
        if end:
            out[i, len(row)] = EOS
    return out


def _row_codes(codes: np.ndarray) -> list[np.ndarray]:
    """Each row's codes up to its first PAD or EOS (raw rows hold no other special id)."""
    return [row[row >= FIRST_RAW] for row in codes]


def _subword_model(kind: str, vocab_size: int, min_freq: int) -> tuple[Any, Any]:
    """An untrained Hugging Face tokenizer and its trainer (special tokens first, at 0-3)."""
    # Forked fold workers would otherwise print a warning and turn it off themselves.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = list(SPECIALS)
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer: Any = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_freq,
            special_tokens=specials,
            end_of_word_suffix="</w>",
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="<unk>"))
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_freq,
            special_tokens=specials,
            show_progress=False,
        )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer, trainer


def _canonical(model: Any) -> Any:
    """The trained subword model with its ids in a fixed order: the special tokens, then the
    others sorted. tokenizers learns the same pieces (and merges) from the same words every
    time, but numbers some in hash order, which differs from one training to the next."""
    from tokenizers import Tokenizer

    state = json.loads(model.to_str())
    pieces = state["model"]["vocab"]
    order = [*SPECIALS, *sorted(set(pieces) - set(SPECIALS))]
    state["model"]["vocab"] = {piece: i for i, piece in enumerate(order)}
    return Tokenizer.from_str(json.dumps(state))


@dataclass
class Vocabulary:
    """One fold's fitted tokenization: the settings, the tokens by id (``word``/``char``) or the
    trained subword model (``bpe``/``wordpiece``)."""

    tokenizer: str
    lowercase: bool
    max_length: int
    vocab_size: int
    tokens: list[str] = field(default_factory=list)
    model: Any = None
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.model is None:
            self._index = {token: i for i, token in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        """How many ids it has, the special ones included."""
        return len(self.tokens) if self.model is None else int(self.model.get_vocab_size())

    def ids_of(self, words: Sequence[str]) -> list[list[int]]:
        """The ids of each raw token (one id, or a word's subword pieces); ``UNK`` if unknown."""
        if self.model is None:
            return [[self._index.get(word, UNK)] for word in words]
        if not words:
            return []
        encoded = self.model.encode_batch(list(words), is_pretokenized=False)
        # An id past vocab_size (an alphabet larger than asked for) is read as unknown.
        return [[i if i < self.vocab_size else UNK for i in e.ids] or [UNK] for e in encoded]

    def encode_row(self, words: Sequence[str]) -> list[int]:
        """One row's raw tokens as ids, at most ``max_length``."""
        ids = [i for pieces in self.ids_of(words[: self.max_length]) for i in pieces]
        return ids[: self.max_length]

    def encode(self, texts: Sequence[str], end: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """New texts as ``(ids (N, T) padded with PAD, lengths)``, tokenized as in training
        (``end``: each row followed by EOS, as a pair's target; not counted in ``lengths``)."""
        rows = [self.encode_row(split(t, self.tokenizer, self.lowercase)) for t in texts]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        return pack(rows, end=end), lengths

    def encode_tokens(self, rows: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Rows already split into tokens (a tagged file's sentences) as ``(ids, lengths)``,
        lowercased as in training; one id a token (``tokenizer=word``)."""
        ids = [
            self.encode_row([t.lower() for t in row] if self.lowercase else list(row))
            for row in rows
        ]
        return pack(ids), np.array([len(r) for r in ids], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text up to the first EOS (special ids left out)."""
        kept: list[int] = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                kept.append(int(i))
        if self.model is not None:
            return str(self.model.decode(kept))
        return ("" if self.tokenizer == "char" else " ").join(self.tokens[i] for i in kept)

    def pieces(self) -> list[str]:
        """The token (or subword piece) of every id, the special ones first."""
        if self.model is None:
            return list(self.tokens)
        vocab = self.model.get_vocab()
        return [piece for piece, _ in sorted(vocab.items(), key=lambda item: item[1])]

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        """Tokens (or pieces) back to text up to the first ``<eos>`` (special ones left out),
        as :meth:`decode` turns ids into text."""
        kept: list[str] = []
        for piece in pieces:
            if piece == SPECIALS[EOS]:
                break
            if piece not in SPECIALS:
                kept.append(piece)
        if self.model is not None:
            return str(self.model.decoder.decode(kept)) if kept else ""
        return ("" if self.tokenizer == "char" else " ").join(kept)

    def state(self) -> dict[str, Any]:
        """A JSON document that :meth:`from_state` turns back into this vocabulary."""
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "tokenizer": self.tokenizer,
            "lowercase": self.lowercase,
            "max_length": self.max_length,
            "vocab_size": self.vocab_size,
        }
        if self.model is None:
            state["tokens"] = list(self.tokens)
        else:
            state["model"] = json.loads(self.model.to_str())
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Vocabulary:
        """The vocabulary :meth:`state` wrote (a ``ValueError`` for any other document)."""
        try:
            if state["format"] != STATE_FORMAT or state["tokenizer"] not in TOKENIZERS:
                raise ValueError(f"format {state['format']!r}, tokenizer {state['tokenizer']!r}")
            settings = (
                str(state["tokenizer"]),
                bool(state["lowercase"]),
                int(state["max_length"]),
                int(state["vocab_size"]),
            )
            if "model" in state:
                from tokenizers import Tokenizer

                model = Tokenizer.from_str(json.dumps(state["model"]))
                return cls(*settings, model=model)
            tokens = [str(t) for t in state["tokens"]]
        except Exception as error:  # a missing key, a wrong type, tokenizers' own errors
            raise ValueError(f"not a vocabulary mlcli saved: {error}") from None
        return cls(*settings, tokens=tokens)


def fit_vocabulary(text: TextTokens, codes: np.ndarray) -> Vocabulary:
    """The vocabulary of one fold, fitted on ``codes``: its training rows' raw token codes (the
    sources and, for pairs, the targets too)."""
    settings = (text.tokenizer, text.lowercase, text.max_length)
    if text.tokenizer in SUBWORD:
        if text.vocab_size is None:
            raise ValueError(f"tokenizer={text.tokenizer} needs dataset.vocab_size")
        model, trainer = _subword_model(text.tokenizer, text.vocab_size, text.min_freq)
        words = np.array(text.tokens, dtype=object)
        lines = (" ".join(words[row - FIRST_RAW]) for row in _row_codes(codes))
        model.train_from_iterator(lines, trainer=trainer)
        return Vocabulary(*settings, vocab_size=text.vocab_size, model=_canonical(model))
    counts = np.bincount(codes.ravel(), minlength=FIRST_RAW + len(text.tokens))[FIRST_RAW:]
    seen = np.flatnonzero(counts >= max(text.min_freq, 1))
    # The most frequent first; among equals, the first seen in the file (a stable sort).
    kept = seen[np.argsort(-counts[seen], kind="stable")]
    if text.vocab_size is not None:
        kept = kept[: max(text.vocab_size - len(SPECIALS), 0)]
    tokens = [*SPECIALS, *(text.tokens[k] for k in kept)]
    return Vocabulary(*settings, vocab_size=max_ids(text), tokens=tokens)


def max_ids(text: TextTokens) -> int:
    """The most ids a fold's vocabulary of ``text`` can have (a model's embedding size)."""
    if text.tokenizer in SUBWORD:
        return int(text.vocab_size or 0)
    n = len(SPECIALS) + len(text.tokens)
    return n if text.vocab_size is None else min(n, text.vocab_size)


@dataclass
class FoldTokens:
    """Every row of a text dataset tokenized by one fold's vocabulary."""

    vocabulary: Vocabulary
    X: np.ndarray
    lengths: np.ndarray
    y: np.ndarray


def tokenize_fold(
    text: TextTokens, X: np.ndarray, y: np.ndarray, train_idx: np.ndarray
) -> FoldTokens:
    """Fit a fold's vocabulary on rows ``train_idx`` of ``X`` (and of ``y`` when it holds
    tokens), then map every row through it."""
    train = X[train_idx]
    if text.target_tokens:
        train = np.concatenate([train.ravel(), y[train_idx].ravel()])
    vocabulary = fit_vocabulary(text, train)
    if vocabulary.model is None:
        # One id per raw token: a lookup table from raw code to the fold's id.
        table = np.array(
            [*range(FIRST_RAW), *(p[0] for p in vocabulary.ids_of(text.tokens))], dtype=np.int64
        )
        lengths = (X >= FIRST_RAW).sum(axis=1)
        return FoldTokens(vocabulary, table[X], lengths, table[y] if text.target_tokens else y)
    pieces = vocabulary.ids_of(text.tokens)

    def rows(codes: np.ndarray) -> list[list[int]]:
        return [
            [i for c in row for i in pieces[c - FIRST_RAW]][: text.max_length]
            for row in _row_codes(codes)
        ]

    sources = rows(X)
    lengths = np.array([len(r) for r in sources], dtype=np.int64)
    target = pack(rows(y), end=True) if text.target_tokens else y
    return FoldTokens(vocabulary, pack(sources), lengths, target)
