"""Build a run's dataset from its config, and check every dataset of a command before it runs.

No torch import here: the preflight uses :func:`check_data` so that bad data (a missing file, a
bad cell, fewer rows than folds...) is reported as a config problem, with exit code 2 and nothing
written, before any job starts.
"""

from __future__ import annotations

from typing import Any

from mlcli.config import ConfigProblem
from mlcli.data.base import Dataset
from mlcli.data.errors import DataError

RUNNER_DATASET_KEYS = ("test_fraction", "normalize", "normalize_target", "seed")
"""Dataset keys read by the runner (test split, preprocessing) rather than by the builder."""


def build_dataset(cfg: Any) -> Dataset:
    """Build ``cfg.dataset`` with its builder (the runner's own keys removed)."""
    from omegaconf import OmegaConf

    from mlcli.build import instantiate

    node = OmegaConf.masked_copy(
        cfg.dataset, [k for k in cfg.dataset if k not in RUNNER_DATASET_KEYS]
    )
    dataset = instantiate(node, "dataset", cfg.get("allow_targets", []))
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset._target_ returned {type(dataset).__name__}, not mlcli Dataset")
    return dataset


def split_config(cfg: Any) -> tuple[float, int]:
    """The test split's settings: (``dataset.test_fraction``, ``dataset.seed``)."""
    return float(cfg.dataset.get("test_fraction", 0.0)), int(cfg.dataset.get("seed", 0))


def check_data(cfgs: list[Any]) -> list[ConfigProblem]:
    """Build each distinct dataset of ``cfgs`` once and make its folds; report bad data.

    Only mlcli's own builders and splitters run here (a user's code is not run twice, nor
    before the job); a problem other than :class:`DataError` is left for the job to report.
    """
    from omegaconf import OmegaConf

    from mlcli.build import instantiate, root_cause
    from mlcli.cv import plan

    problems: list[ConfigProblem] = []
    built: dict[str, Dataset | None] = {}
    planned: set[str] = set()
    for cfg in cfgs:
        if not str(cfg.dataset.get("_target_", "")).startswith("mlcli.data."):
            continue
        data_key = OmegaConf.to_yaml(cfg.dataset)
        if data_key not in built:
            try:
                built[data_key] = build_dataset(cfg)
            except Exception as error:  # a builder's DataError arrives wrapped by Hydra
                built[data_key] = None
                cause = root_cause(error)
                if isinstance(cause, DataError):
                    problems.append(ConfigProblem(cause.key, str(cause)))
                # anything else is not a data problem: the job records it as its failure
        dataset = built[data_key]
        split_key = data_key + OmegaConf.to_yaml(cfg.cv)
        own_cv = str(cfg.cv.get("_target_", "")).startswith("mlcli.cv.")
        if dataset is None or not own_cv or split_key in planned:
            continue
        planned.add(split_key)
        try:
            splitter = instantiate(cfg.cv, "cv", cfg.get("allow_targets", []))
            plan(dataset, splitter, *split_config(cfg))
        except Exception as error:
            cause = root_cause(error)
            if isinstance(cause, DataError):
                problems.append(ConfigProblem(cause.key, str(cause)))
    return problems
