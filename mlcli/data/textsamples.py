"""Seeded text files to try the text datasets on (and to test them with).

- ``reviews``: one-sentence reviews labelled ``pos``/``neg`` where a negation flips the sentiment
  word and an intensifier may stand between them ("the plot was not very good ."). A bag of words
  cannot see which word a negation applies to (logistic regression ~0.56, the share of the
  majority polarity); bigrams see "not good" but not "not very good" (~0.78); a model that reads
  the order can be right on every row.
- ``conll``: sentences of a small grammar in CoNLL form (``token TAG``), with words that are a
  noun or a verb depending on where they stand.
- ``pairs``: random sentences and the same words reversed (seq2seq).

Write one with ``python -m mlcli.data.textsamples reviews reviews.csv --rows 2000``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

POSITIVE = ("good", "great", "excellent", "wonderful", "fine", "nice", "superb", "lovely")
NEGATIVE = ("bad", "awful", "terrible", "poor", "boring", "dull", "horrible", "weak")
SUBJECTS = ("plot", "acting", "film", "story", "cast", "ending", "music", "script")
NEGATIONS = ("not", "never")
INTENSIFIERS = ("very", "really", "so", "truly")
TAILS = ("", "", "overall", "to me", "i think", "honestly")
NEGATED_SHARE = 0.44
"""Reviews with a negation: a bag of words gets the other 0.56 right."""
INTENSIFIED_SHARE = 0.5
"""Reviews with an intensifier before the sentiment word: half of what bigrams can read."""


def reviews(n_rows: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n_rows`` (text, label) reviews; the label is the sentiment word's polarity, flipped
    by a negation."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_rows):
        positive = bool(rng.random() < 0.5)
        negated = bool(rng.random() < NEGATED_SHARE)
        words = ["the", str(rng.choice(SUBJECTS)), str(rng.choice(("was", "is")))]
        if negated:
            words.append(str(rng.choice(NEGATIONS)))
        if rng.random() < INTENSIFIED_SHARE:
            words.append(str(rng.choice(INTENSIFIERS)))
        words.append(str(rng.choice(POSITIVE if positive else NEGATIVE)))
        tail = str(rng.choice(TAILS))
        text = " ".join(words) + (f" , {tail}" if tail else "") + " ."
        rows.append((text, "pos" if positive != negated else "neg"))
    return rows


DETERMINERS = ("the", "a", "every", "some")
ADJECTIVES = ("small", "old", "red", "quiet", "happy", "tall")
NOUNS = ("dog", "cat", "man", "girl", "bird", "child")
VERBS = ("sees", "likes", "finds", "keeps", "calls")
AMBIGUOUS = ("watch", "walk", "run", "book", "fish")
"""Nouns after a determiner, verbs after a noun: only the context tells."""
ADVERBS = ("today", "again", "slowly", "often")


def tagged_sentences(n_sentences: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """``n_sentences`` of ``DET ADJ* NOUN VERB DET ADJ* NOUN (ADV)`` as (token, tag) pairs."""
    rng = np.random.default_rng(seed)

    def pick(words: tuple[str, ...]) -> str:
        return str(rng.choice(words))

    def noun_phrase() -> list[tuple[str, str]]:
        phrase = [(pick(DETERMINERS), "DET")]
        phrase += [(pick(ADJECTIVES), "ADJ") for _ in range(int(rng.integers(0, 3)))]
        noun = pick(AMBIGUOUS) if rng.random() < 0.4 else pick(NOUNS)
        return [*phrase, (noun, "NOUN")]

    sentences = []
    for _ in range(n_sentences):
        verb = pick(AMBIGUOUS) if rng.random() < 0.4 else pick(VERBS)
        sentence = [*noun_phrase(), (verb, "VERB"), *noun_phrase()]
        if rng.random() < 0.3:
            sentence.append((pick(ADVERBS), "ADV"))
        sentences.append([*sentence, (".", "PUNCT")])
    return sentences


PAIR_WORDS = (
    "red", "blue", "green", "cat", "dog", "bird", "runs", "sleeps", "eats", "big", "small", "sun",
)  # fmt: skip


def reversed_pairs(
    n_rows: int, seed: int = 0, min_words: int = 3, max_words: int = 7
) -> list[tuple[str, str]]:
    """``n_rows`` distinct (sentence, its words reversed) pairs of ``PAIR_WORDS``."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    while len(rows) < n_rows:
        length = int(rng.integers(min_words, max_words + 1))
        words = [str(w) for w in rng.choice(PAIR_WORDS, length)]
        source = " ".join(words)
        if source in seen:
            continue
        seen.add(source)
        rows.append((source, " ".join(reversed(words))))
    return rows


def write(kind: str, path: Path, rows: int, seed: int = 0, labels: bool = True) -> None:
    """Write ``rows`` examples of ``kind`` (reviews | conll | pairs) to ``path``
    (``labels=False``: what a model predicts left out, a file to predict: reviews without their
    label column, sentences without their tags, sources without their targets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "conll":
        lines = [
            "\n".join(f"{token} {tag}" if labels else token for token, tag in sentence) + "\n"
            for sentence in tagged_sentences(rows, seed)
        ]
        path.write_text("\n".join(lines), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        if kind == "pairs":
            out.writerow(["source", "target"] if labels else ["source"])
            out.writerows(pair[: 2 if labels else 1] for pair in reversed_pairs(rows, seed))
        elif labels:
            out.writerow(["id", "text", "label"])
            out.writerows((i, text, label) for i, (text, label) in enumerate(reviews(rows, seed)))
        else:
            out.writerow(["id", "text"])
            out.writerows((i, text) for i, (text, _) in enumerate(reviews(rows, seed)))


def main(argv: list[str] | None = None) -> None:
    """``python -m mlcli.data.textsamples KIND FILE [--rows N] [--seed S] [--no-labels]``."""
    parser = argparse.ArgumentParser(prog="python -m mlcli.data.textsamples", description=__doc__)
    parser.add_argument("kind", choices=("reviews", "conll", "pairs"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-labels", action="store_true", help="without labels, tags or targets (to predict)"
    )
    args = parser.parse_args(argv)
    write(args.kind, args.path, args.rows, args.seed, labels=not args.no_labels)


if __name__ == "__main__":
    main()
