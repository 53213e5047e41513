"""A saved feed-forward model applied in numpy: how ``mlcli predict`` serves the runs of
mlcli's plain builders (``linear``, ``mlp``, ``sigmoid_sum``, ``relu_sum``) without importing
torch, whose import alone takes longer (about 2 s on a 2-core machine) than reading, predicting
and writing 100,000 CSV rows.

The layers are those the builder makes from the run's model config (flatten; per hidden width
Linear, BatchNorm in eval mode, the activation, Dropout as the identity; the output Linear),
checked against the saved state dict: every name and shape must match, or
:func:`load_array_predictor` returns None and the caller rebuilds the network with torch
(:func:`mlcli.engine.saved.load_predictor`; also for ``gelu``, which numpy cannot compute as
torch does). The arithmetic is torch's in float32 (``x @ W.T + b``, the same softmax in float64
and target scaling), so the predictions agree with the torch model's to float32 rounding (a
matrix product sums in another order: about 1e-6 relative), not bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcli.data.preprocess import apply_preprocess
from mlcli.rundir.models import final_model_names, load_model, read_schema

Layer = Callable[[np.ndarray], np.ndarray]

CHUNK = 16384
"""Rows a forward pass takes at once (the hidden activations of a chunk stay in cache)."""

BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default, which mlcli.models.mlp keeps


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float32 (exp overflows to inf for very negative x: 0)."""
    with np.errstate(over="ignore"):
        return np.float32(1) / (np.float32(1) + np.exp(-x))


ACTIVATIONS: dict[str, Layer] = {
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
}
"""The activations numpy computes as torch does (``gelu`` is left to torch)."""


def _linear(weights: dict[str, np.ndarray], name: str, width: int) -> tuple[Layer, int] | None:
    """Linear layer ``name`` (its ``weight`` (out, in) and ``bias``) reading ``width`` inputs."""
    weight, bias = weights.get(f"{name}.weight"), weights.get(f"{name}.bias")
    if weight is None or bias is None or weight.ndim != 2 or weight.shape[1] != width:
        return None
    if bias.shape != (weight.shape[0],):
        return None
    w_t = np.ascontiguousarray(weight.T, dtype=np.float32)
    b = bias.astype(np.float32)
    return (lambda x: x @ w_t + b), int(weight.shape[0])


def _batch_norm(weights: dict[str, np.ndarray], name: str, width: int) -> Layer | None:
    """BatchNorm1d ``name`` in eval mode: the running statistics, then the affine map."""
    parts = [weights.get(f"{name}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
    if any(p is None or p.shape != (width,) for p in parts):
        return None
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float32) for p in parts)
    scale = gamma / np.sqrt(var + np.float32(BATCH_NORM_EPS))
    return lambda x: (x - mean) * scale + beta


def plain_layers(
    model: dict[str, Any], weights: dict[str, np.ndarray], in_shape: tuple[int, ...]
) -> list[Layer] | None:
    """The layers of a model of mlcli's plain builders, from its config (``model``, as saved in
    ``schema.json``) and state dict; None when it is another model, or when the state dict is
    not exactly the one that builder makes."""
    target = str(model.get("_target_"))
    keys = set(model) - {"_target_"}
    if target == "mlcli.models.linear" and not keys:
        hidden: list[int] = []
        activation, batch_norm, dropout = "relu", False, 0.0
    elif target == "mlcli.models.mlp" and keys <= {"hidden", "activation", "batch_norm", "dropout"}:
        hidden = [int(h) for h in model.get("hidden", (128,))]
        activation = str(model.get("activation", "relu"))
        batch_norm, dropout = bool(model.get("batch_norm", False)), float(model.get("dropout", 0))
    elif target in ("mlcli.models.sigmoid_sum", "mlcli.models.relu_sum") and keys <= {"n_units"}:
        units = int(model.get("n_units", 10))
        hidden = [units if target.endswith("sigmoid_sum") else 2 * units]
        activation = "sigmoid" if target.endswith("sigmoid_sum") else "relu"
        batch_norm, dropout = False, 0.0
    else:
        return None
    if activation not in ACTIVATIONS:
        return None
    width = math.prod(in_shape)
    layers: list[Layer] = [lambda x: x.reshape(len(x), -1)]
    used: set[str] = set()
    index = 1  # the Sequential's index 0 is the Flatten
    for size in [*hidden, None]:
        found = _linear(weights, str(index), width)
        if found is None or (size is not None and found[1] != size):
            return None
        layers.append(found[0])
        used |= {f"{index}.weight", f"{index}.bias"}
        width, index = found[1], index + 1
        if size is None:
            break
        if batch_norm:
            norm = _batch_norm(weights, str(index), width)
            if norm is None:
                return None
            layers.append(norm)
            used |= {f"{index}.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                                               "num_batches_tracked")}  # fmt: skip
            index += 1
        layers.append(ACTIVATIONS[activation])
        index += 1 + (dropout > 0)  # the activation, and Dropout (the identity in eval mode)
    return layers if set(weights) == used else None


def _forward(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    """The layers applied to ``x`` in chunks of :data:`CHUNK` rows."""
    chunks = []
    for start in range(0, len(x), CHUNK):
        out = x[start : start + CHUNK]
        for layer in layers:
            out = layer(out)
        chunks.append(out)
    return np.concatenate(chunks) if chunks else np.zeros((0, 1), dtype=np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (as torch's on ``logits.double()``)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True))


@dataclass
class ArrayPredictor:
    """A run's final model in numpy: each model's layers with its fitted preprocessing (a fold
    ensemble, or one refit model); the same outputs as :class:`mlcli.engine.saved.Predictor`."""

    task: str
    models: list[tuple[list[Layer], dict[str, Any]]]

    def member_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Each model's prediction on raw feature rows ``x``: class probabilities ``(N, C)``
        or values in the target's units ``(N,)``."""
        outputs = []
        for layers, preprocess in self.models:
            out = _forward(layers, apply_preprocess(preprocess, x))
            if self.task == "classification":
                outputs.append(_softmax(out))
            else:
                mean, std = float(preprocess["target_mean"]), float(preprocess["target_std"])
                outputs.append(out.reshape(len(x)).astype(np.float64) * std + mean)
        return outputs

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The models' mean prediction on raw feature rows ``x``."""
        return np.mean(self.member_outputs(x), axis=0)


def load_array_predictor(run_dir: Path) -> ArrayPredictor | None:
    """The final model of the run in ``run_dir`` in numpy, when every model of it is one of
    mlcli's plain builders on fixed-size rows (classification or regression); else None.
    :class:`~mlcli.rundir.models.ModelFilesError` when its files are missing or unreadable."""
    schema = read_schema(run_dir)
    if schema.get("text") or schema.get("variable_length") or schema.get("vocab_size") is not None:
        return None
    if schema.get("task") not in ("classification", "regression"):
        return None
    model = schema.get("model")
    if not isinstance(model, dict):
        return None
    models = []
    for name in final_model_names(run_dir, schema):
        weights, preprocess = load_model(run_dir, name)
        in_shape = tuple(int(d) for d in preprocess.get("in_shape") or schema["in_shape"])
        layers = plain_layers(model, weights, in_shape)
        if layers is None:
            return None
        models.append((layers, preprocess))
    return ArrayPredictor(str(schema["task"]), models)
