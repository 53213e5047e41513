"""Datasets of the user's own text: ``dataset=text`` (a label per sentence), ``dataset=tagged``
(a tag per token, CoNLL-style files) and ``dataset=pairs`` (sentence pairs, seq2seq).

Each builder reads and checks its file (bad input is a :class:`DataError` naming the file and
line), splits every text into raw tokens (:func:`mlcli.data.tokenize.split`) and holds their raw
codes; the ids a model sees come from a vocabulary fitted on each fold's training rows
(:func:`mlcli.data.tokenize.tokenize_fold`, called by the per-fold preprocessing).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlcli.data.base import IGNORE_INDEX, Dataset, TextTokens
from mlcli.data.errors import DataError, bad_rows
from mlcli.data.labels import encode_labels
from mlcli.data.reading import Table, as_text, existing_file, plain, read_table
from mlcli.data.tokenize import SUBWORD, TOKENIZERS, RawCodes, max_ids, pack, split


def _settings(
    where: str, tokenizer: Any, vocab_size: int | None, min_freq: int, max_length: int
) -> str:
    """The tokenizer's name, once its settings are checked."""
    kind = plain(tokenizer)
    if kind not in TOKENIZERS:
        raise DataError(
            where,
            f"unknown tokenizer {kind!r}",
            fix=f"Use dataset.tokenizer={'|'.join(TOKENIZERS)}",
            key="dataset.tokenizer",
        )
    if kind in SUBWORD and vocab_size is None:
        raise DataError(
            where,
            f"dataset.tokenizer={kind} learns a vocabulary of a given size",
            fix="Set dataset.vocab_size (e.g. dataset.vocab_size=1000)",
            key="dataset.vocab_size",
        )
    if kind in SUBWORD and importlib.util.find_spec("tokenizers") is None:
        raise DataError(
            where,
            f"dataset.tokenizer={kind} trains Hugging Face tokenizers, which is not installed",
            fix="Install it with: pip install 'mlcli[text]' (or use dataset.tokenizer=word)",
            key="dataset.tokenizer",
        )
    if max_length < 1 or min_freq < 1 or (vocab_size is not None and vocab_size < 5):
        raise DataError(
            where,
            f"max_length={max_length}, min_freq={min_freq}, vocab_size={vocab_size}",
            fix="max_length and min_freq are at least 1, vocab_size at least 5 (4 special ids)",
            key="dataset.max_length",
        )
    return kind


def tokenized(
    where: str,
    column: str | None,
    texts: Sequence[str],
    lines: Sequence[int] | np.ndarray,
    tokenizer: str,
    lowercase: bool,
    key: str = "dataset.path",
) -> list[list[str]]:
    """Each text's raw tokens; a text without any is an error naming its line (``key``: the
    setting that named the file)."""
    rows = [split(t, tokenizer, lowercase) for t in texts]
    empty = [i for i, row in enumerate(rows) if not row]
    if empty:
        raise bad_rows(
            where,
            column,
            "an empty text",
            [int(lines[i]) for i in empty],
            [texts[i] for i in empty],
            fix="Give every row some text, or remove those rows",
            key=key,
        )
    return rows


def _truncated(rows: list[list[str]], max_length: int, what: str) -> tuple[list[list[str]], str]:
    """The rows cut to ``max_length`` tokens, and a note saying how many were cut."""
    cut = sum(len(r) > max_length for r in rows)
    note = (
        f"{cut} {what} longer than dataset.max_length={max_length} tokens were cut to it"
        if cut
        else ""
    )
    return [r[:max_length] for r in rows], note


def _labels(table: Table, column: str, key: str) -> tuple[np.ndarray, list[str]]:
    """Class indices of a label column (empty cells and a single class refused)."""
    cells = table[column]
    text = as_text(cells)
    empty = np.flatnonzero(np.strings.str_len(text) == 0)
    if empty.size:
        raise bad_rows(
            table.where, column, "an empty label", table.lines[empty], fix="Label every row"
        )
    y, names = encode_labels(cells, numeric=cells.dtype.kind in "iuf")
    if len(names) < 2:
        raise DataError(
            table.where,
            f"every one of the {len(y)} rows has the label {names[0]!r} (one class, from line "
            f"{int(table.lines[0])} on)",
            column=column,
            line=int(table.lines[0]),
            fix="A classifier needs at least two classes: check dataset.target",
            key=key,
        )
    return y, names


def _text_tokens(
    codes: RawCodes, kind: str, vocab_size: int | None, min_freq: int, lowercase: bool, **more: Any
) -> TextTokens:
    return TextTokens(
        codes.tokens,
        tokenizer=kind,
        vocab_size=vocab_size,
        min_freq=min_freq,
        lowercase=lowercase,
        **more,
    )


def text(
    path: str = "???",
    text: str = "text",
    target: str = "label",
    id_column: str | None = None,
    sep: str = ",",
    tokenizer: str = "word",
    vocab_size: int | None = None,
    min_freq: int = 1,
    lowercase: bool = True,
    max_length: int = 64,
) -> Dataset:
    """One label per text: column ``text`` of a CSV/TSV file, labelled by column ``target``.

    ``X`` holds each text's raw token codes (at most ``max_length``), ``lengths`` their number;
    ``y`` the class indices (labels sorted). ``id_column`` names a column of row ids, kept in
    ``meta["ids"]`` for predictions (default: the row numbers).
    """
    kind = _settings(path, tokenizer, vocab_size, min_freq, max_length)
    table = read_table(path, sep)
    text_column = table.column(text, "text ", "dataset.text")
    label_column = table.column(target, "label ", "dataset.target")
    texts = [str(t) for t in as_text(table[text_column]).tolist()]
    rows, note = _truncated(
        tokenized(path, text_column, texts, table.lines, kind, lowercase), max_length, "texts"
    )
    y, class_names = _labels(table, label_column, "dataset.target")
    ids = (
        [str(v) for v in as_text(table[table.column(id_column, "id ", "dataset.id_column")])]
        if id_column
        else [str(i) for i in range(len(rows))]
    )
    codes = RawCodes()
    X = pack([codes.codes(r) for r in rows])
    tokens = _text_tokens(codes, kind, vocab_size, min_freq, lowercase, max_length=max_length)
    return Dataset(
        name=Path(path).stem,
        X=X,
        y=y,
        task="classification",
        class_names=class_names,
        source=f"text file {path} (column {text_column!r}, labels {label_column!r})",
        lengths=np.array([len(r) for r in rows]),
        vocab_size=max_ids(tokens),
        meta={"ids": ids, "text_column": text_column, "target_column": label_column},
        notes=[note] if note else [],
        text=tokens,
    )


def conll_sentences(
    path: str,
    sep: str | None,
    first_line: Callable[[list[str], int, str], None] = lambda fields, number, line: None,
    key: str = "dataset.path",
) -> tuple[list[list[list[str]]], list[int]]:
    """(the fields of each token line, first line) of each sentence of a CoNLL-style file: one
    token a line, its fields split by ``sep`` (None: any whitespace), a blank line between
    sentences, every token line with the fields of the first (``first_line(fields, number,
    line)`` checks that one; ``key``: the setting that named the file)."""
    file = existing_file(path, key)
    try:
        lines = file.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text", fix="Save it as UTF-8", key=key) from None
    sentences: list[list[list[str]]] = [[]]
    starts: list[int] = [0]
    width: tuple[int, int] | None = None  # (fields, line) of the first token line
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if sentences[-1]:  # a new sentence starts at the next token line
                sentences.append([])
                starts.append(0)
            continue
        fields = line.split(sep) if sep else line.split()
        if width is None:
            width = (len(fields), number)
            first_line(fields, number, line)
        elif len(fields) != width[0]:
            raise DataError(
                path,
                f"line {number} has {len(fields)} fields, but line {width[1]} (the first token "
                f"line) has {width[0]}: {line!r}",
                line=number,
                fix="Write one token a line with the same fields on every line (token TAG), "
                "and a blank line between sentences",
                key=key,
            )
        if not starts[-1]:
            starts[-1] = number
        sentences[-1].append(fields)
    if not sentences[-1]:
        sentences.pop()
        starts.pop()
    if not sentences:
        raise DataError(
            path, "has no token lines", fix="Write one 'token TAG' pair a line", key=key
        )
    return sentences, starts


def _conll_sentences(
    path: str, token_column: int, tag_column: int, sep: str | None
) -> tuple[list[list[str]], list[list[str]], list[int]]:
    """(tokens, tags, first line) of each sentence of a CoNLL-style training file."""

    def first_line(fields: list[str], number: int, line: str) -> None:
        if len(fields) < 2:
            raise DataError(
                path,
                f"line {number} has one field ({line!r}): no tag",
                line=number,
                fix="Write a token and its tag on each line (token TAG), or set dataset.sep",
            )
        for name, column in (("token", token_column), ("tag", tag_column)):
            if not -len(fields) <= column < len(fields):
                raise DataError(
                    path,
                    f"line {number} has {len(fields)} fields, no {name} column {column}",
                    line=number,
                    fix=f"Set dataset.{name}_column to a field index (0 is the first, -1 the last)",
                    key=f"dataset.{name}_column",
                )

    sentences, starts = conll_sentences(path, sep, first_line)
    tokens = [[fields[token_column] for fields in sentence] for sentence in sentences]
    tags = [[fields[tag_column] for fields in sentence] for sentence in sentences]
    return tokens, tags, starts


def tagged(
    path: str = "???",
    token_column: int = 0,
    tag_column: int = -1,
    sep: str | None = None,
    tokenizer: str = "word",
    vocab_size: int | None = None,
    min_freq: int = 1,
    lowercase: bool = True,
    max_length: int = 128,
) -> Dataset:
    """One tag per token: a CoNLL-style file (``token TAG`` a line, a blank line between
    sentences; ``token_column``/``tag_column`` pick the fields, ``sep`` splits them, None = any
    whitespace).

    ``X`` holds each sentence's raw token codes (at most ``max_length``), ``y`` the tag indices
    (tags sorted), ``IGNORE_INDEX`` at padding; tokens are whole (``tokenizer=word``).
    """
    kind = _settings(path, tokenizer, vocab_size, min_freq, max_length)
    if kind != "word":
        raise DataError(
            path,
            f"dataset=tagged tags whole tokens, not {kind} pieces",
            fix="Use dataset.tokenizer=word",
            key="dataset.tokenizer",
        )
    sep = None if sep is None else {"tab": "\t", "\\t": "\t"}.get(sep, sep)
    tokens, tags, starts = _conll_sentences(path, token_column, tag_column, sep)
    if lowercase:
        tokens = [[t.lower() for t in sentence] for sentence in tokens]
    tokens, note = _truncated(tokens, max_length, "sentences")
    all_tags = np.array([t for sentence in tags for t in sentence], dtype=str)
    index, tag_names = encode_labels(all_tags, numeric=False)
    if len(tag_names) < 2:
        raise DataError(
            path,
            f"every token has the tag {tag_names[0]!r} (one class, from line {starts[0]} on)",
            line=starts[0],
            fix="A tagger needs at least two tags: check dataset.tag_column",
            key="dataset.tag_column",
        )
    codes = RawCodes()
    X = pack([codes.codes(sentence) for sentence in tokens])
    y = np.full(X.shape, IGNORE_INDEX, dtype=np.int64)
    offset = 0
    for i, sentence in enumerate(tags):
        y[i, : len(tokens[i])] = index[offset : offset + len(tokens[i])]
        offset += len(sentence)
    text_tokens = _text_tokens(codes, kind, vocab_size, min_freq, lowercase, max_length=max_length)
    return Dataset(
        name=Path(path).stem,
        X=X,
        y=y,
        task="tagging",
        class_names=tag_names,
        source=f"tagged file {path}",
        lengths=np.array([len(s) for s in tokens]),
        vocab_size=max_ids(text_tokens),
        meta={"ids": [str(i) for i in range(len(tokens))], "lines": starts},
        notes=[note] if note else [],
        text=text_tokens,
    )


def _pair_texts(
    path: str, source: str, target: str, target_path: str | None, sep: str
) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(sources, targets, line of each pair, where the targets are) from two columns of one
    file, or from two files of one sentence a line."""
    if target_path is None:
        table = read_table(path, sep)
        columns = (
            table.column(source, "source ", "dataset.source"),
            table.column(target, "target ", "dataset.target"),
        )
        sources, targets = ([str(t) for t in as_text(table[c]).tolist()] for c in columns)
        return sources, targets, table.lines, [path, columns[1]]
    files = [existing_file(p, k) for p, k in ((path, "dataset.path"), (target_path, "target"))]
    texts = [f.read_text(encoding="utf-8-sig").removesuffix("\n").split("\n") for f in files]
    if len(texts[0]) != len(texts[1]):
        raise DataError(
            target_path,
            f"has {len(texts[1])} lines but {path} has {len(texts[0])}: the files are not aligned",
            line=min(len(texts[0]), len(texts[1])) + 1,
            fix="Write line i's translation on line i of dataset.target_path",
            key="dataset.target_path",
        )
    lines = np.arange(1, len(texts[0]) + 1)
    return texts[0], texts[1], lines, [target_path, ""]


def pairs(
    path: str = "???",
    source: str = "source",
    target: str = "target",
    target_path: str | None = None,
    sep: str = ",",
    tokenizer: str = "word",
    vocab_size: int | None = None,
    min_freq: int = 1,
    lowercase: bool = True,
    max_length: int = 64,
) -> Dataset:
    """Sentence pairs, seq2seq: columns ``source`` and ``target`` of a CSV/TSV file, or line i
    of ``path`` and line i of ``target_path`` (two aligned files of one sentence a line).

    Source and target share one vocabulary (fitted per fold on both sides of the training
    pairs). ``X`` holds the sources' raw token codes, ``y`` the targets' followed by EOS.
    """
    kind = _settings(path, tokenizer, vocab_size, min_freq, max_length)
    sources, targets, lines, (target_where, target_column) = _pair_texts(
        path, source, target, target_path, sep
    )
    source_rows, note = _truncated(
        tokenized(path, source if target_path is None else None, sources, lines, kind, lowercase),
        max_length,
        "sources",
    )
    target_rows, target_note = _truncated(
        tokenized(target_where, target_column or None, targets, lines, kind, lowercase),
        max_length,
        "targets",
    )
    codes = RawCodes()
    X = pack([codes.codes(r) for r in source_rows])
    y = pack([codes.codes(r) for r in target_rows], end=True)
    tokens = _text_tokens(
        codes, kind, vocab_size, min_freq, lowercase, max_length=max_length, target_tokens=True
    )
    return Dataset(
        name=Path(path).stem,
        X=X,
        y=y,
        task="seq2seq",
        source=f"sentence pairs {path}" + (f" and {target_path}" if target_path else ""),
        lengths=np.array([len(r) for r in source_rows]),
        vocab_size=max_ids(tokens),
        meta={"ids": [str(i) for i in range(len(source_rows))]},
        notes=[n for n in (note, target_note) if n],
        text=tokens,
    )
