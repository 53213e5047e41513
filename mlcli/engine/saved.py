"""A run's saved models put back to work: the fold models (or the refit model) rebuilt from
``models/``, applied to new rows with each model's own fitted preprocessing.

What :func:`predict` returns is the final model's prediction: for classification the class
probabilities averaged over the models (``final=ensemble``, and the fold models of a run without
a final model), for regression the values in the target's units, averaged alike. The runner
scores the test split with it (``final`` rows) and ``mlcli predict`` writes it out, so a run dir's
predictions and the in-memory models' agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from mlcli.data.base import Dataset
from mlcli.data.preprocess import apply_preprocess
from mlcli.engine.loop import EVAL_CHUNK, mode_dependent
from mlcli.models import build_model
from mlcli.rundir.models import FINAL, ModelFilesError, load_model, model_name, read_schema
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


def _dataset_like(schema: dict[str, Any]) -> Dataset:
    """A one-row stand-in with the run's task, shape and classes: what a model builder reads."""
    shape = tuple(int(d) for d in schema["in_shape"])
    task = schema["task"]
    names = schema.get("class_names")
    return Dataset(
        name=str(schema.get("dataset") or "saved"),
        X=np.zeros((1, *shape), dtype=np.float32),
        y=np.zeros(1),
        task=task,
        class_names=list(names) if names is not None else None,
    )


def rebuild(
    schema: dict[str, Any], weights: dict[str, np.ndarray], preprocess: dict[str, Any]
) -> nn.Module:
    """The network a saved model describes (built by the allowlisted builder its config
    names), with its weights loaded (every name must match)."""
    node = OmegaConf.create(schema["model"])
    in_shape = tuple(int(d) for d in preprocess["in_shape"])
    model = build_model(node, _dataset_like(schema), (), in_shape)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return model


def load_predictor(run_dir: Path) -> Predictor:
    """The final model of the run in ``run_dir``: its refit model when it has one, else the
    ensemble of its fold models; :class:`~mlcli.rundir.models.ModelFilesError` when they are
    missing."""
    schema = read_schema(run_dir)
    if schema.get("final") == "refit":
        names = [FINAL]
    else:
        names = [model_name(f) for f in range(int(schema.get("n_folds") or 0))]
    if not names:
        raise ModelFilesError(f"{run_dir}: its schema lists no fold models")
    models = []
    for name in names:
        weights, preprocess = load_model(run_dir, name)
        try:
            models.append((rebuild(schema, weights, preprocess), preprocess))
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise ModelFilesError(
                f"{run_dir}/models/{name}: the model cannot be rebuilt from the run's saved "
                f"config and weights ({type(error).__name__}: {error})"
            ) from None
    return Predictor(str(schema["task"]), models)


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
    }
