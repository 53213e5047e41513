"""The one in-memory dataset type that every builder returns, and the data contract.

Shapes and dtypes by task (N examples):

- ``classification``: ``X`` float32 ``(N, *in_shape)`` (flat features, ``C×H×W`` images,
  ``C×L`` signals, or zero-padded ``T×F`` sequences with ``lengths``); ``y`` int64 ``(N,)``.
- ``regression``: ``X`` float32 ``(N, *in_shape)``; ``y`` float32 ``(N,)``.
- ``tagging`` (one label per sequence element): ``X`` float32 ``(N, T, F)`` zero-padded (or int64
  token ids ``(N, T)`` with ``PAD`` = 0 and ``vocab_size`` set); ``y`` int64 ``(N, T)`` with
  ``IGNORE_INDEX`` (-100) at padded positions; ``lengths`` ``(N,)``.
- ``seq2seq``: ``X`` int64 ``(N, T_in)`` source token ids padded with ``PAD``; ``lengths``;
  ``y`` int64 ``(N, T_out)`` target token ids ending with ``EOS``, padded with ``PAD``;
  ``vocab_size`` counts the special ids ``PAD``, ``BOS``, ``EOS``.

Text datasets (``dataset=text|tagged|pairs``) hold *raw* token codes in ``X`` (and in ``y`` for
pairs): ``FIRST_RAW + k`` is the ``k``-th distinct token of the whole file (``text.tokens``). The
ids a model sees are fitted per fold on the training rows alone (:mod:`mlcli.data.tokenize`), so
``vocab_size`` is only the most ids a fold's vocabulary can have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Task = Literal["classification", "regression", "tagging", "seq2seq"]

# Special token ids shared by every token dataset and sequence model.
PAD, BOS, EOS = 0, 1, 2
# Token datasets of the user's text add an unknown id: a token the fold's training rows lack.
UNK = 3
# X of a text dataset holds FIRST_RAW + k for its k-th distinct raw token (text.tokens[k]).
FIRST_RAW = 4
# Target value of padded positions in a tagging target (PyTorch's cross-entropy ignore_index).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TextTokens:
    """The raw tokens of a text dataset and how each fold turns them into ids.

    ``tokens`` are the distinct raw tokens (words, or characters for ``tokenizer=char``) of every
    row, in first-seen order: ``X`` holds ``FIRST_RAW + k`` for ``tokens[k]``. ``target_tokens``:
    ``y`` holds raw codes too (sentence pairs). The rest are the user's settings (``dataset.*``):
    a fold keeps the tokens seen at least ``min_freq`` times in its training rows, at most
    ``vocab_size`` ids in all (the special ones included); ``bpe``/``wordpiece`` learn subwords
    from the training rows' words.
    """

    tokens: tuple[str, ...]
    tokenizer: str = "word"
    vocab_size: int | None = None
    min_freq: int = 1
    lowercase: bool = True
    max_length: int = 64
    target_tokens: bool = False


@dataclass
class Dataset:
    """Features and targets held in memory, plus what a model needs to know about them.

    ``X`` has shape ``(N, *in_shape)``; ``y`` holds class indices, real values, per-element tags
    or target token ids depending on ``task`` (see the module docstring). ``test_index`` is the
    dataset's own held-out test split, if it has one. ``lengths`` is the valid length of each
    variable-length sequence; ``vocab_size`` is set when ``X`` holds int64 token ids; ``meta``
    holds facts about the data (e.g. ``time_ordered``, ``noise_variance``, ``bayes_accuracy``).

    ``categorical`` lists the columns of a flat ``X`` that hold category codes (one-hot encoded
    per fold, fitted on the training rows); ``X`` may hold NaN where a builder was asked to leave
    missing cells for per-fold imputation (``missing=mean``). ``ordered`` says the rows are in time
    order, so the test split is the last rows. ``notes`` state what a builder inferred or did
    (task, dropped rows...): the runner logs them and writes them to status.json. ``text`` is
    set for a dataset of the user's text: ``X`` holds raw token codes, tokenized per fold.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: Task
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    test_index: np.ndarray | None = None
    groups: np.ndarray | None = None
    source: str = ""
    lengths: np.ndarray | None = None
    vocab_size: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    categorical: tuple[int, ...] = ()
    ordered: bool = False
    notes: list[str] = field(default_factory=list)
    text: TextTokens | None = None

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.X)} feature rows but {len(self.y)} targets")
        # Token ids stay integers (an embedding looks them up); everything else is float32.
        x_dtype = np.int64 if self.vocab_size is not None else np.float32
        self.X = np.ascontiguousarray(self.X, dtype=x_dtype)
        if self.task == "regression":
            self.y = np.asarray(self.y, dtype=np.float32)
        else:
            self.y = np.asarray(self.y, dtype=np.int64)
        if self.lengths is not None:
            self.lengths = np.asarray(self.lengths, dtype=np.int64)
            if self.lengths.shape != (len(self.X),):
                shape = self.lengths.shape
                raise ValueError(
                    f"{self.name}: lengths has shape {shape}, expected ({len(self.X)},)"
                )

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(int(d) for d in self.X.shape[1:])

    @property
    def n_classes(self) -> int:
        """Number of classes (classification) or tags (tagging)."""
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.y.max()) + 1

    @property
    def out_features(self) -> int:
        """Width of the model's output.

        One logit per class (classification) or tag (tagging, per element), one per token of the
        vocabulary (seq2seq, per output step), or one value per target (regression).
        """
        if self.task in ("classification", "tagging"):
            return self.n_classes
        if self.task == "seq2seq":
            if self.vocab_size is None:
                raise ValueError(f"{self.name}: a seq2seq dataset needs vocab_size")
            return self.vocab_size
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])
