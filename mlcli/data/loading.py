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

RUNNER_DATASET_KEYS = ("test_fraction", "normalize", "normalize_target", "seed")
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

    A dataset of mlcli's own builders is built once per process and shared read-only.
    """
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
