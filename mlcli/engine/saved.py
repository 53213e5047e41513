"""A run's saved models put back to work: the fold models (or the refit model) rebuilt from
``models/``, applied to new rows with each model's own fitted preprocessing.

What :func:`predict` returns is the final model's prediction: for classification the class
probabilities averaged over the models (``final=ensemble``, and the fold models of a run without
a final model), for regression the values in the target's units, averaged alike. The runner
scores the test split with it (``final`` rows) and ``mlcli predict`` writes it out, so a run dir's
predictions and the in-memory models' agree by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from mlcli.data.base import BOS, EOS, FIRST_RAW, IGNORE_INDEX, PAD, UNK, Dataset, TextTokens
from mlcli.data.preprocess import apply_preprocess
from mlcli.data.tokenize import SPECIALS, Vocabulary, pack
from mlcli.engine.loop import EVAL_CHUNK, mode_dependent, reads_lengths
from mlcli.models import build_model
from mlcli.rundir.models import (
    MODELS_DIR,
    ModelFilesError,
    final_model_names,
    load_model,
    load_vocabulary_state,
    read_schema,
    vocabulary_name,
)
from mlcli.tasks import metrics as task_metrics


@dataclass
class Predictor:
    """Models that predict together, each with its fitted preprocessing (a fold ensemble, or
    one refit model)."""

    task: str
    models: list[tuple[nn.Module, dict[str, Any]]]

    @torch.no_grad()
    def member_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Each model's prediction on raw feature rows ``x``: class probabilities ``(N, C)``
        or values in the target's units ``(N,)``."""
        outputs = []
        for model, preprocess in self.models:
            rows = torch.from_numpy(apply_preprocess(preprocess, x))
            if mode_dependent(model):
                model.eval()
            chunks = [model(rows[i : i + EVAL_CHUNK]) for i in range(0, len(rows), EVAL_CHUNK)]
            out = torch.cat(chunks) if chunks else torch.zeros(0)
            if self.task == "classification":
                outputs.append(torch.softmax(out.double(), dim=-1).numpy())
            else:
                mean, std = float(preprocess["target_mean"]), float(preprocess["target_std"])
                outputs.append(out.reshape(len(rows)).double().numpy() * std + mean)
        return outputs

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The models' mean prediction on raw feature rows ``x``."""
        return np.mean(self.member_outputs(x), axis=0)


@dataclass
class TextPredictor:
    """Models of a text run that predict together, each with the vocabulary its fold fitted
    (a fold ensemble, or one refit model).

    New text arrives as each row's raw tokens (split and lowercased as the run's file was);
    every model reads them through its own vocabulary, padded to the width its fold's rows had
    (a row longer than that is cut to it, as :attr:`cut` counts). Classification averages the
    class probabilities, tagging each token's tag probabilities; seq2seq decodes greedily with
    the models' next-token probabilities averaged over the tokens they share by name (one model:
    its own greedy decoding, the run's ``val``/``test`` metric)."""

    task: str
    models: list[tuple[nn.Module, Vocabulary, dict[str, Any]]]
    cut: int = 0

    def _inputs(
        self, vocabulary: Vocabulary, preprocess: dict[str, Any], rows: list[list[str]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows as one model's ids ``(N, T)`` and lengths, as its fold's rows were packed."""
        ids = [vocabulary.encode_row(row) for row in rows]
        if self.task != "seq2seq":  # a seq2seq encoder reads any length
            width = int(preprocess["in_shape"][0])
            self.cut = max(self.cut, sum(len(r) > width for r in ids))
            ids = [r[:width] for r in ids]
            packed = pack(ids, width)
        else:
            packed = pack(ids)
        lengths = np.array([len(r) for r in ids], dtype=np.int64)
        return torch.from_numpy(packed), torch.from_numpy(lengths)

    @torch.no_grad()
    def member_outputs(self, rows: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each model's probabilities on ``rows`` (``(N, C)`` per row, ``(N, T, C)`` per token)
        and the tokens it read of each row."""
        outputs = []
        for model, vocabulary, preprocess in self.models:
            x, lengths = self._inputs(vocabulary, preprocess, rows)
            if mode_dependent(model):
                model.eval()
            chunks = []
            for i in range(0, len(x), EVAL_CHUNK):
                x_i, lengths_i = x[i : i + EVAL_CHUNK], lengths[i : i + EVAL_CHUNK]
                chunks.append(model(x_i, lengths_i) if reads_lengths(model) else model(x_i))
            out = torch.cat(chunks)
            outputs.append((torch.softmax(out.double(), dim=-1).numpy(), lengths.numpy()))
        return outputs

    def predict(self, rows: list[list[str]]) -> np.ndarray:
        """The models' prediction on ``rows``: mean class probabilities ``(N, C)``; per-token
        tag probabilities ``(N, T, C)``, NaN past the tokens every model read; or (seq2seq)
        each row's decoded text."""
        if self.task == "seq2seq":
            return self.decode(rows)
        outputs = self.member_outputs(rows)
        if self.task == "classification":
            return np.mean([p for p, _ in outputs], axis=0)
        width = min(p.shape[1] for p, _ in outputs)
        mean = np.mean([p[:, :width] for p, _ in outputs], axis=0)
        read = np.min([n for _, n in outputs], axis=0)
        mean[np.arange(width)[None, :] >= read[:, None]] = np.nan
        return mean

    @torch.no_grad()
    def decode(self, rows: list[list[str]], max_steps: int | None = None) -> np.ndarray:
        """Greedy decoding of every source row: at each step the next token is the most
        probable by the models' mean probability (each model's vocabulary mapped onto the
        tokens of all of them by name; one it lacks is ``<unk>`` to it), until every row has
        written EOS or ``max_steps`` tokens (default: the run's ``max_length`` + 1, the longest
        target it trained on)."""
        vocabularies = [v for _, v, _ in self.models]
        steps = max_steps if max_steps is not None else vocabularies[0].max_length + 1
        if len(self.models) == 1:  # one model: its own greedy decoding
            model, vocabulary, preprocess = self.models[0]
            if mode_dependent(model):
                model.eval()
            x, lengths = self._inputs(vocabulary, preprocess, rows)
            out = cast(Any, model).generate(x, lengths, steps)
            return np.array([vocabulary.decode(row) for row in out.tolist()], dtype=object)
        missing = [type(m).__name__ for m, _, _ in self.models if not hasattr(m, "encode")]
        if missing or not all(hasattr(m, "decode") for m, _, _ in self.models):
            raise ValueError(
                f"decoding with a fold ensemble needs the models' encode() and decode() "
                f"({missing[0] if missing else 'a model'} lacks them): train with final=refit"
            )
        union = [*SPECIALS, *sorted({t for v in vocabularies for t in v.pieces()} - set(SPECIALS))]
        index = {t: i for i, t in enumerate(union)}
        members = []
        for model, vocabulary, preprocess in self.models:
            if mode_dependent(model):
                model.eval()
            x, lengths = self._inputs(vocabulary, preprocess, rows)
            memory, padding = cast(Any, model).encode(x, lengths)
            members.append((cast(Any, model), vocabulary.pieces(), memory, padding))
        n = len(rows)
        tokens = torch.full((n, 1), BOS, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
        maps: list[tuple[torch.Tensor, torch.Tensor]] = []
        for _ in range(steps):
            mean = torch.zeros(n, len(union), dtype=torch.float64)
            for k, (model, pieces, memory, padding) in enumerate(members):
                if len(maps) == k:  # the model's output width, known from its first step
                    width = int(model.decode(tokens, memory, padding).shape[-1])
                    maps.append(_shared_ids(pieces[:width], width, index))
                to_union, from_union = maps[k]
                logits = model.decode(from_union[tokens], memory, padding)[:, -1]
                mean.index_add_(1, to_union, torch.softmax(logits.double(), dim=-1))
            next_token = mean.argmax(dim=-1).masked_fill(done, PAD)
            tokens = torch.cat([tokens, next_token.unsqueeze(1)], dim=1)
            done |= next_token == EOS
            if bool(done.all()):
                break
        decoder = vocabularies[0]
        return np.array(
            [decoder.decode_pieces([union[i] for i in row[1:].tolist()]) for row in tokens],
            dtype=object,
        )


def _shared_ids(
    pieces: list[str], width: int, index: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model id -> shared id, shared id -> model id) for a model of output width ``width``
    whose vocabulary has ``pieces``: an id without a token, or a token the model lacks, is
    ``<unk>``."""
    to_union = np.full(width, UNK, dtype=np.int64)
    to_union[: len(pieces)] = [index[t] for t in pieces]
    own = {t: i for i, t in enumerate(pieces)}
    from_union = np.array([own.get(t, UNK) for t in index], dtype=np.int64)
    return torch.from_numpy(to_union), torch.from_numpy(from_union)


def raw_tokens(text: TextTokens, codes: np.ndarray) -> list[list[str]]:
    """Rows of a text dataset's raw token codes back to their tokens (as a new file's rows are
    read: split and lowercased)."""
    names = text.tokens
    return [[names[c - FIRST_RAW] for c in row.tolist() if c >= FIRST_RAW] for row in codes]


def _dataset_like(schema: dict[str, Any]) -> Dataset:
    """A one-row stand-in with the run's task, shape, classes, vocabulary size and padding:
    what a model builder reads."""
    shape = tuple(int(d) for d in schema["in_shape"])
    task = schema["task"]
    names = schema.get("class_names")
    vocab_size = schema.get("vocab_size")
    return Dataset(
        name=str(schema.get("dataset") or "saved"),
        X=np.zeros((1, *shape), dtype=np.float32),
        y=np.zeros((1, *shape[:1]) if task in ("tagging", "seq2seq") else 1),
        task=task,
        class_names=list(names) if names is not None else None,
        lengths=np.ones(1) if schema.get("variable_length") else None,
        vocab_size=int(vocab_size) if vocab_size is not None else None,
    )


def rebuild(
    schema: dict[str, Any],
    weights: dict[str, np.ndarray],
    preprocess: dict[str, Any],
    allow: Sequence[str] = (),
) -> nn.Module:
    """The network a saved model describes (built by the allowlisted builder its config
    names; ``allow``: the user's modules admitted besides mlcli's builders, as
    ``allow_targets``), with its weights loaded (every name must match)."""
    node = OmegaConf.create(schema["model"])
    in_shape = tuple(int(d) for d in preprocess["in_shape"])
    model = build_model(node, _dataset_like(schema), list(allow), in_shape)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return model


def load_predictor(run_dir: Path, allow: Sequence[str] = ()) -> Predictor | TextPredictor:
    """The final model of the run in ``run_dir``: its refit model when it has one, else the
    ensemble of its fold models (a text run's with their vocabularies);
    :class:`~mlcli.rundir.models.ModelFilesError` when they are missing, or when the model's
    ``_target_`` is neither one of mlcli's builders nor in a module of ``allow`` (a run dir may
    come from anyone: what it names is judged, never trusted)."""
    schema = read_schema(run_dir)
    check_model_targets(run_dir, schema, allow)
    names = final_model_names(run_dir, schema)
    text = schema.get("text")
    models, vocabularies = [], []
    for name in names:
        weights, preprocess = load_model(run_dir, name)
        if text:
            try:
                vocabularies.append(Vocabulary.from_state(load_vocabulary_state(run_dir, name)))
            except ValueError as error:
                raise ModelFilesError(
                    f"{run_dir}/models/{vocabulary_name(name)}: {error}; train the run again "
                    "(--rerun)"
                ) from None
        try:
            models.append((rebuild(schema, weights, preprocess, allow), preprocess))
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise ModelFilesError(
                f"{run_dir}/models/{name}: the model cannot be rebuilt from the run's saved "
                f"config and weights ({type(error).__name__}: {error})"
            ) from None
    if text:
        members = [(m, v, p) for (m, p), v in zip(models, vocabularies, strict=True)]
        return TextPredictor(str(schema["task"]), members)
    return Predictor(str(schema["task"]), models)


def check_model_targets(run_dir: Path, schema: dict[str, Any], allow: Sequence[str]) -> None:
    """Every ``_target_`` of the saved model config judged by the allowlist (mlcli's builders,
    and the modules of ``allow``) before anything is imported or built;
    :class:`~mlcli.rundir.models.ModelFilesError` saying how to admit a module one trusts."""
    from mlcli.config import env
    from mlcli.config.targets import (
        TargetNotAllowedError,
        TargetUnavailableError,
        admit,
        find_targets,
    )

    where = f"{run_dir}/{MODELS_DIR}/schema.json"
    for key, target in find_targets(schema.get("model") or {}, "model"):
        try:
            admit(key, target, list(allow))
        except TargetNotAllowedError:
            module = target.rsplit(".", 1)[0] if "." in target else target
            admitted = ", ".join(allow) if allow else "none"
            raise ModelFilesError(
                f"{where}: {key}._target_ {target!r} is not one of mlcli's builders nor in a "
                f"module you admitted (--allow: {admitted}). A run dir can come from anyone, so "
                f"what it names is built only when you admit it: if you trust {module}, run "
                f"mlcli predict ... --allow {module} (or set {env.ALLOW_TARGETS}={module})"
            ) from None
        except TargetUnavailableError as error:
            raise ModelFilesError(
                f"{where}: {key}._target_: {error}. Run mlcli predict where the module is "
                "importable (the directory the run was trained in, for a ./module.py)"
            ) from None


def score(task: str, prediction: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The test metrics of a final model's prediction (probabilities, or values in the target's
    units) against ``y``: accuracy and the cross-entropy of the mean probabilities, or MSE, MAE
    and R² (the split metrics of :mod:`mlcli.tasks.metrics`, in the target's units)."""
    if task == "classification":
        log_p = torch.from_numpy(np.log(np.clip(prediction, 1e-300, None)))
        values = task_metrics.eval_metrics("classification", log_p, torch.from_numpy(y), 0.0, 1.0)
    else:
        values = task_metrics.regression_metrics(
            torch.from_numpy(prediction), torch.from_numpy(y.astype(np.float64)), 0.0, 1.0
        )
    return {k: float(v) for k, v in values.items()}


def score_text(predictor: TextPredictor, dataset: Dataset, rows: np.ndarray) -> dict[str, float]:
    """The test metrics of a text run's final model on rows ``rows`` of its dataset, read as
    ``mlcli predict`` reads new text: ``acc`` and ``loss`` (classification), ``acc`` over the
    real tokens (tagging), ``exact_match`` of the decoded texts (seq2seq)."""
    assert dataset.text is not None
    tokens = raw_tokens(dataset.text, dataset.X[rows])
    prediction = predictor.predict(tokens)
    y = dataset.y[rows]
    if dataset.task == "classification":
        return score("classification", prediction, y)
    if dataset.task == "tagging":
        width = min(prediction.shape[1], y.shape[1])
        real = y != IGNORE_INDEX
        read = ~np.isnan(prediction[:, :width, 0])
        right = read & (np.nan_to_num(prediction[:, :width]).argmax(-1) == y[:, :width])
        return {"acc": float(right.sum() / max(int(real.sum()), 1))}
    joiner = "" if dataset.text.tokenizer == "char" else " "
    targets = [joiner.join(t) for t in raw_tokens(dataset.text, y)]
    return {
        "exact_match": float(np.mean([p == t for p, t in zip(prediction, targets, strict=True)]))
    }


def schema_of(cfg: Any, dataset: Dataset, n_folds: int) -> dict[str, Any]:
    """What ``models/schema.json`` records of a run: the input columns (names, kinds,
    categories), the columns left out that may be ids, the target (its name and the header's
    base name), the task and classes, and the model config that rebuilds the network."""
    from mlcli.config import enum_name

    node = cfg.dataset
    target = node.get("target")
    categories = dataset.meta.get("categories", {})
    names = dataset.feature_names or []
    features = [
        {"name": name, "kind": "categorical" if name in categories else "numeric"}
        | ({"categories": categories[name]} if name in categories else {})
        for name in names
    ]
    target_name = str(target) if target is not None else "target"
    return {
        "format": 1,
        "dataset": dataset.name,
        "reader": "csv" if str(node.get("_target_")) == "mlcli.data.csv" else "arrays",
        "task": dataset.task,
        "target": target_name,
        "target_base": str(dataset.meta.get("target_base") or target_name),
        "class_names": dataset.class_names,
        "features": features,
        "in_shape": list(dataset.in_shape),
        "id_columns": list(dataset.meta.get("dropped_columns", [])),
        "sep": str(node.get("sep", ",")),
        "na_values": [str(v) for v in node.get("na_values", [])],
        "missing": enum_name(node.get("missing", "error")),
        "variable_length": dataset.lengths is not None,
        "vocab_size": dataset.vocab_size,
        "n_folds": n_folds,
        "final": enum_name(cfg.get("final", "none")),
        "model": OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True),
        "text": text_schema(node, dataset),
    }


TEXT_KINDS = {"classification": "text", "tagging": "tagged", "seq2seq": "pairs"}
"""The text dataset of each task (``dataset=text|tagged|pairs``)."""


def text_schema(node: Any, dataset: Dataset) -> dict[str, Any] | None:
    """What reading new text as the run read its file needs (None: the run's data is not the
    user's text): the dataset kind, the tokenizer's settings and the file's layout (the text,
    source or id column and the separator; the token field of a CoNLL file; for pairs, whether
    the sources were one sentence a line)."""
    tokens = dataset.text
    if tokens is None:
        return None
    kind = TEXT_KINDS[dataset.task]
    record: dict[str, Any] = {
        "kind": kind,
        "tokenizer": tokens.tokenizer,
        "lowercase": bool(tokens.lowercase),
        "max_length": int(tokens.max_length),
        "sep": None if node.get("sep") is None else str(node.get("sep")),
    }
    if kind == "text":
        record["column"] = str(dataset.meta.get("text_column") or node.get("text", "text"))
        record["id_column"] = node.get("id_column")
    elif kind == "tagged":
        record["token_column"] = int(node.get("token_column", 0))
    else:
        record["column"] = str(node.get("source", "source"))
        record["lines"] = node.get("target_path") is not None
    return record
