"""``models/``: what predicting needs, kept in the run dir in safe formats (never pickle).

* ``fold-<k>.safetensors``: fold k's weights (best or final, as restored), a state dict;
* ``fold-<k>.preprocess.json`` + ``.npz``: its fitted preprocessing (scaling, imputation values,
  one-hot categories, the target's scaling): numbers and names in the JSON, arrays in the npz
  (read with ``allow_pickle=False``);
* ``final.safetensors`` (+ ``final.preprocess.*``): the model ``final=refit`` trained on every
  non-test row;
* ``fold-<k>.vocab.json`` (``final.vocab.json``): a text run's fitted vocabulary, JSON;
* ``schema.json``: the input schema (feature names and kinds, categories, the id column), the
  target (its name and the header's base name), the task, class names, and the model config
  that rebuilds the network.

Every file is written atomically (temp file, fsync, rename); a fold's files are written before
the status lists the fold. Light: safetensors' numpy API, no torch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from mlcli.rundir.files import (
    Unreadable,
    atomic_write_files,
    json_bytes,
    read_bytes,
    write_json,
)

MODELS_DIR = "models"
SCHEMA_FILE = "schema.json"
FINAL = "final"


class ModelFilesError(ValueError):
    """A run dir whose model files are missing or unreadable (the message says how to get
    them)."""


def models_dir(run_dir: Path) -> Path:
    """Where the run in ``run_dir`` keeps its models."""
    return Path(run_dir) / MODELS_DIR


def model_name(fold: int) -> str:
    """The file stem of fold ``fold``'s model."""
    return f"fold-{fold}"


def save_model(
    run_dir: Path, name: str, weights: dict[str, np.ndarray], preprocess: dict[str, Any]
) -> None:
    """Write one model (``fold-<k>`` or ``final``): its weights, then its preprocessing."""
    from safetensors.numpy import save

    folder = models_dir(run_dir)
    folder.mkdir(exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    arrays = {k: np.asarray(v) for k, v in preprocess.items() if isinstance(v, np.ndarray)}
    plain = {k: v for k, v in preprocess.items() if k not in arrays}
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    listing = {**plain, "arrays": sorted(arrays)}
    atomic_write_files(
        {
            folder / f"{name}.safetensors": save(tensors),
            folder / f"{name}.preprocess.npz": buffer.getvalue(),
            folder / f"{name}.preprocess.json": json_bytes(listing),
        }
    )


def write_schema(run_dir: Path, schema: dict[str, Any]) -> None:
    """Write ``models/schema.json``."""
    folder = models_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SCHEMA_FILE, schema)


def _read(path: Path) -> bytes:
    try:
        data = read_bytes(path, limit=None)
    except Unreadable as error:
        raise ModelFilesError(str(error)) from None
    if data is None:
        raise ModelFilesError(f"{path}: no such file")
    return data


def read_schema(run_dir: Path) -> dict[str, Any]:
    """``models/schema.json`` of ``run_dir``, or :class:`ModelFilesError` saying how to get it."""
    path = models_dir(run_dir) / SCHEMA_FILE
    try:
        data = read_bytes(path)
    except Unreadable as error:
        raise ModelFilesError(str(error)) from None
    if data is None:
        raise ModelFilesError(
            f"{run_dir} has no saved models ({MODELS_DIR}/{SCHEMA_FILE} is missing). Train the "
            "run again with save_models=true (the default since models were introduced): "
            "mlcli train <the same overrides> save_models=true --rerun"
        )
    try:
        schema = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFilesError(f"{path}: not a schema ({error})") from None
    if not isinstance(schema, dict):
        raise ModelFilesError(f"{path}: not a schema (a {type(schema).__name__})")
    return schema


def final_model_names(run_dir: Path, schema: dict[str, Any]) -> list[str]:
    """The models that make the run's final model (``final``: the refit model; else every fold
    model), each with its weights on disk; :class:`ModelFilesError` saying how to get them."""
    if schema.get("final") == "refit":
        names = [FINAL]
    else:
        names = [model_name(f) for f in range(int(schema.get("n_folds") or 0))]
    if not names:
        raise ModelFilesError(f"{run_dir}: its schema lists no fold models")
    missing = [n for n in names if not (models_dir(run_dir) / f"{n}.safetensors").is_file()]
    if missing:
        raise ModelFilesError(
            f"{run_dir}: a run without saved models for {', '.join(missing)} (no "
            f"{MODELS_DIR}/{missing[0]}.safetensors: trained with save_models=false, before "
            "mlcli saved models, or interrupted before they were written). Re-run with "
            "save_models=true: mlcli train <the same overrides> save_models=true --rerun"
        )
    return names


def load_model(run_dir: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One saved model's weights (numpy arrays by state-dict name) and its preprocessing."""
    from safetensors.numpy import load

    folder = models_dir(run_dir)
    try:
        weights = load(_read(folder / f"{name}.safetensors"))
        plain = json.loads(_read(folder / f"{name}.preprocess.json").decode("utf-8"))
        with np.load(io.BytesIO(_read(folder / f"{name}.preprocess.npz")), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ModelFilesError:
        raise
    except Exception as error:  # safetensors, json and numpy each raise their own for garbage
        raise ModelFilesError(
            f"{folder}/{name}.*: unreadable model files ({type(error).__name__}: {error}); "
            "train the run again (--rerun) to write them anew"
        ) from None
    if not isinstance(plain, dict):
        raise ModelFilesError(f"{folder}/{name}.preprocess.json: not a preprocessing record")
    plain.pop("arrays", None)
    return weights, {**plain, **arrays}


def vocabulary_name(name: str) -> str:
    """The file name of model ``name``'s fitted vocabulary (a text run)."""
    return f"{name}.vocab.json"


def load_vocabulary_state(run_dir: Path, name: str) -> dict[str, Any]:
    """The vocabulary model ``name`` was trained with, as the JSON document it was saved as."""
    path = models_dir(run_dir) / vocabulary_name(name)
    try:
        state = json.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFilesError(
            f"{path}: not a vocabulary ({error}); train the run again (--rerun)"
        ) from None
    if not isinstance(state, dict):
        raise ModelFilesError(f"{path}: not a vocabulary (a {type(state).__name__})")
    return state


def model_bytes(run_dir: Path) -> int:
    """The size of a run's ``models/`` folder in bytes."""
    folder = models_dir(run_dir)
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
