"""Checkpoints of a fold in training, so a long run resumes where it stopped, bit for bit.

With ``checkpoint_every=N`` a fold saves ``<run dir>/checkpoints/fold-<k>.pt`` every N epochs:
model, optimizer and scheduler state, the epoch, the fold's metric rows so far, its loss at
initialization (the reference of its divergence bound), and every random state the rest of the
fold draws from: torch's CPU generator (and the CUDA one on a GPU), NumPy's and Python's global
generators, and the generator that orders the mini-batches. Resuming restores all of them, so the
resumed fold computes exactly what the uninterrupted one would have (without the random states
the batch order and dropout masks would differ).

Everything is stored as tensors, numbers, strings, lists and dicts, so a checkpoint loads with
``torch.load(..., weights_only=True)``, which unpickles no code. It is passed explicitly because
the environment variable ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` would otherwise turn the default
off. Files are written to a temporary name, fsynced and renamed (never torn); a fold's checkpoint
is deleted once the fold's results are on disk.
"""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlcli import rundir
from mlcli.rundir import atomic_write_bytes

log = logging.getLogger("mlcli")

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1


def fold_path(run_dir: Path, fold: int) -> Path:
    """Where fold ``fold`` of the run in ``run_dir`` keeps its checkpoint."""
    return Path(run_dir) / CHECKPOINT_DIR / f"fold-{fold}.pt"


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random state training draws from, as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "batch_order": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Put back the random states :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    )
    generator.set_state(state["batch_order"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class CheckpointRefusedError(ValueError):
    """A checkpoint that only full unpickling could read (it could run code): never loaded."""


class CheckpointUnreadableError(ValueError):
    """A checkpoint file that is not one (not a regular file, truncated, garbage): the fold
    starts again from its first epoch."""


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code is unpickled), onto the CPU.

    ``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn
    it off; a file that needs more than tensors and plain containers is refused. Only a regular
    file is opened (a FIFO would block); one that is no checkpoint raises
    :class:`CheckpointUnreadableError`, a missing one ``FileNotFoundError``.
    """
    import pickle

    try:
        data = rundir.read_bytes(path, limit=None)
    except rundir.Unreadable as error:
        raise CheckpointUnreadableError(str(error)) from None
    if data is None:
        raise FileNotFoundError(path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointRefusedError(
            f"{path}: this checkpoint holds objects that only full unpickling could load, which "
            "can run arbitrary code; mlcli refuses it whatever the environment says. mlcli's own "
            "checkpoints never need it: delete the file to recompute the fold."
        ) from error
    except Exception as error:  # torch raises EOFError, KeyError, RuntimeError... for garbage
        raise CheckpointUnreadableError(
            f"{path}: not a checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointUnreadableError(f"{path}: not a checkpoint (a {type(state).__name__})")
    return state


def capture(
    *,
    run_key: str,
    fold: int,
    epoch: int,
    rows: list[tuple[int, str, str, float]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
    loss_initial: float | None = None,
) -> dict[str, Any]:
    """A fold's full training state after ``epoch`` (its rows so far included; ``loss_initial``:
    its loss at initialization, which its divergence bound is taken from)."""
    return {
        "run_key": run_key,
        "loss_initial": loss_initial,
        "fold": fold,
        "epoch": epoch,
        "rows": [list(row) for row in rows],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(generator, device),
    }


def resume(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[int, list[tuple[int, str, str, float]]]:
    """Load a checkpoint into freshly built objects; return (next epoch, rows so far)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"], generator, device)
    rows = [(int(e), str(s), str(m), float(v)) for e, s, m, v in state["rows"]]
    return int(state["epoch"]) + 1, rows


def fold_state(path: Path | None, key: str, fold: int) -> dict[str, Any] | None:
    """The checkpoint fold ``fold`` of run ``key`` left at ``path``, or None (none, another
    run's, or one that is no checkpoint: then with a warning, and the fold starts afresh)."""
    if path is None or not os.path.lexists(path):
        return None
    try:
        state = load(path)
    except (FileNotFoundError, CheckpointUnreadableError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("%s; fold %d starts from its first epoch", error, fold)
        return None
    return state if state.get("run_key") == key and state.get("fold") == fold else None
