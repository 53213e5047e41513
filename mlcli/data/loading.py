"""Build a run's dataset from its config (once per process for mlcli's own builders).

No torch import here: the preflight builds every dataset of a command before it runs
(:func:`mlcli.sweeps.preflight.check_data`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import OrderedDict
from typing import Any

from mlcli.data.base import Dataset

RUNNER_DATASET_KEYS = (
    "test_fraction", "normalize", "normalize_target", "seed", "max_rows", "shuffle_labels"
)  # fmt: skip
"""Dataset keys read by the runner (test split, preprocessing) rather than by the builder."""


CACHE_SIZE = 4
_BUILT: OrderedDict[str, Dataset] = OrderedDict()
"""Datasets built by mlcli's own builders in this process, by :func:`_cache_key` (most recent
last). The preflight builds every dataset of a command to check it; the jobs, forked from the
same process by Hydra's basic launcher (or run in it), then find theirs here."""


def _cache_key(node: Any) -> str | None:
    """The identity of a dataset node (None: not cached): its resolved settings, and the size
    and modification time of every file it names, so an edited data file is read again."""
    from omegaconf import OmegaConf

    if not is_own(node, "mlcli.data."):
        return None  # a user's builder may read anything: always call it
    container = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    files = []
    for value in _strings(container):
        with contextlib.suppress(OSError, ValueError):
            stat = os.stat(value)
            files.append([value, stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return json.dumps([container, files], sort_keys=True, default=str)


def is_own(node: Any, package: str) -> bool:
    """Whether ``node`` is built by one of mlcli's own builders in ``package``."""
    from mlcli.config.allowlist import BUILDER_TARGETS

    target = str(node.get("_target_", ""))
    return target in BUILDER_TARGETS and target.startswith(package)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _shared(dataset: Dataset) -> Dataset:
    """A copy of a cached dataset for one run: the same (read-only) arrays, its own lists."""
    for array in (dataset.X, dataset.y, dataset.test_index, dataset.groups, dataset.lengths):
        if array is not None:
            array.flags.writeable = False
    return dataclasses.replace(
        dataset,
        meta=dict(dataset.meta),
        notes=list(dataset.notes),
        class_names=None if dataset.class_names is None else list(dataset.class_names),
        feature_names=None if dataset.feature_names is None else list(dataset.feature_names),
    )


def build_dataset(cfg: Any) -> Dataset:
    """Build ``cfg.dataset`` with its builder (the runner's own keys removed).

    A dataset of mlcli's own builders is built once per process and shared read-only. Then
    ``dataset.max_rows`` keeps a seeded random subset of the rows and ``dataset.shuffle_labels``
    permutes the targets (both seeded by ``dataset.seed``): :func:`reshaped`.
    """
    return reshaped(
        _built(cfg),
        cfg.dataset.get("max_rows"),
        bool(cfg.dataset.get("shuffle_labels", False)),
        int(cfg.dataset.get("seed", 0)),
    )


def reshaped(dataset: Dataset, max_rows: int | None, shuffle_labels: bool, seed: int) -> Dataset:
    """``dataset`` with at most ``max_rows`` rows (a random subset, kept in their order) and,
    with ``shuffle_labels``, its targets randomly permuted over the rows (every label, test rows
    included: the course's "random labels" experiment; a network that fits them has memorized
    them). Both are drawn from ``seed``; ``dataset`` itself is left as it is."""
    import numpy as np

    if (max_rows is None or len(dataset.y) <= int(max_rows)) and not shuffle_labels:
        return dataset
    rng = np.random.default_rng([int(seed), 7919])
    changes: dict[str, Any] = {"notes": list(dataset.notes)}
    n = len(dataset.y)
    if max_rows is not None and n > int(max_rows):
        keep = np.sort(rng.choice(n, size=int(max_rows), replace=False))
        for name in ("X", "y", "groups", "lengths"):
            array = getattr(dataset, name)
            changes[name] = None if array is None else array[keep]
        if dataset.test_index is not None:
            position = np.full(n, -1, dtype=np.int64)
            position[keep] = np.arange(len(keep))
            mapped = position[dataset.test_index]
            changes["test_index"] = mapped[mapped >= 0]
        changes["notes"].append(f"max_rows={max_rows}: a random {len(keep)} of the {n} rows")
    if shuffle_labels:
        y = changes.get("y", dataset.y)
        changes["y"] = y[rng.permutation(len(y))]
        changes["notes"].append("shuffle_labels: the targets are randomly permuted over the rows")
    return dataclasses.replace(dataset, **changes)


def _built(cfg: Any) -> Dataset:
    """``cfg.dataset`` as its builder makes it (cached for mlcli's own builders)."""
    from omegaconf import OmegaConf

    from mlcli.config.targets import instantiate

    node = OmegaConf.masked_copy(
        cfg.dataset, [k for k in cfg.dataset if k not in RUNNER_DATASET_KEYS]
    )
    key = _cache_key(node)
    if key is not None and key in _BUILT:
        _BUILT.move_to_end(key)
        return _shared(_BUILT[key])
    dataset = instantiate(node, "dataset", cfg.get("allow_targets", []))
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset._target_ returned {type(dataset).__name__}, not mlcli Dataset")
    if key is None:
        return dataset
    _BUILT[key] = dataset
    while len(_BUILT) > CACHE_SIZE:
        _BUILT.popitem(last=False)
    return _shared(dataset)


def split_config(cfg: Any) -> tuple[float, int]:
    """The test split's settings: (``dataset.test_fraction``, ``dataset.seed``)."""
    return float(cfg.dataset.get("test_fraction", 0.0)), int(cfg.dataset.get("seed", 0))
