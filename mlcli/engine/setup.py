"""The set-up every fold strategy shares: seeds, the device, the run's builders, the fold plan,
and one fold set up (its tensors, seed, model and batch order).

A fold depends on its arguments only: its preprocessing is fitted on its own training rows, it is
seeded from ``(seed, fold)`` alone, and its model is built fresh under that seed. So a fold
computed on resume, in a worker process or as a member of a stack is the fold computed alone.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from mlcli.config.targets import factory
from mlcli.cv import Plan as Split
from mlcli.data.augment import augments
from mlcli.data.base import Dataset
from mlcli.data.preprocess import FoldData, fold_tensors
from mlcli.engine.loop import EpochEnd, LrSteps
from mlcli.engine.memory import keep_freed_memory
from mlcli.engine.optim import fused_optimizer_factory, optimizer_factory
from mlcli.models import model_factory
from mlcli.rundir.files import write_json
from mlcli.tasks import selection_metric

VOCABULARY_FILE = "models/fold-{fold}.vocab.json"
"""Where a fold's fitted vocabulary (a text dataset) is saved in its run dir, as JSON."""
FINAL_VOCABULARY_FILE = "models/final.vocab.json"
"""Where the ``final=refit`` model's vocabulary is saved."""

ModelBuilder = Callable[[tuple[int, ...] | None], torch.nn.Module]


def derived_seed(*numbers: int) -> int:
    """A well-mixed 32-bit seed from several integers (e.g. run seed and fold)."""
    return int(np.random.SeedSequence([abs(int(n)) for n in numbers]).generate_state(1)[0])


def set_up_process(threads: int) -> None:
    """A training process's settings: ``threads`` torch threads (pinned, so results are
    bit-identical), and freed memory kept for the next step (:mod:`mlcli.engine.memory`)."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators.

    Without an accelerator only torch's CPU generator exists: it is seeded alone, as
    ``torch.manual_seed`` seeds it. ``torch.manual_seed`` would also queue a seed call for each
    device module not yet initialized (CUDA, XPU, MTIA), recording the Python stack of each
    (about 0.3 ms a call, several calls a run).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if torch.accelerator.is_available():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is available")
    return torch.device(name)


class Builders:
    """What each fold of a run builds afresh, each composed once per run, when first asked for
    (:func:`mlcli.config.targets.factory`): ``model(in_shape)``, ``optimizer(params)``,
    ``fused_optimizer(flat)`` (stacked folds), ``scheduler(optimizer, total_steps=...)``,
    ``analyzer(loss_fn=..., out_dir=..., fold=..., seed=...)``, ``augment`` (None for
    ``augment=none``). A strategy pays only for what it builds: stacked folds compose neither
    the per-model optimizer nor the analysis."""

    def __init__(self, cfg: DictConfig, dataset: Dataset) -> None:
        self.cfg, self.dataset = cfg, dataset
        self.allow = list(cfg.get("allow_targets") or [])

    @classmethod
    def for_run(cls, cfg: DictConfig, dataset: Dataset) -> Builders:
        """The builders of run ``cfg`` on ``dataset`` (targets checked against the allowlist
        as each is composed)."""
        return cls(cfg, dataset)

    @functools.cached_property
    def model(self) -> ModelBuilder:
        """``in_shape -> model``, a fresh model each call."""
        return model_factory(self.cfg.model, self.dataset, self.allow)

    @functools.cached_property
    def optimizer(self) -> Callable[[Any], torch.optim.Optimizer]:
        """``params -> optimizer`` (:func:`mlcli.engine.optim.optimizer_factory`)."""
        return optimizer_factory(self.cfg.optim, self.allow)

    @functools.cached_property
    def fused_optimizer(self) -> Callable[[torch.Tensor], torch.optim.Optimizer]:
        """``flat -> optimizer`` over one contiguous tensor
        (:func:`mlcli.engine.optim.fused_optimizer_factory`)."""
        return fused_optimizer_factory(self.cfg.optim, self.allow)

    @functools.cached_property
    def scheduler(self) -> Callable[..., Any]:
        """``(optimizer, total_steps=...) -> schedule``."""
        return factory(self.cfg.scheduler, "scheduler", self.allow)

    @functools.cached_property
    def analyzer(self) -> Callable[..., Any]:
        """``(loss_fn=..., out_dir=..., fold=..., seed=...) -> analyzer``."""
        return factory(self.cfg.analysis, "analysis", self.allow)

    @functools.cached_property
    def augment(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The run's augmentation of training batches, None for ``augment=none``."""
        return augmentation(self.cfg, self.allow)


def augmentation(
    cfg: DictConfig, allow: list[Any]
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The run's augmentation of training batches (``augment``), None for ``augment=none``."""
    node = cfg.get("augment")
    if not augments(node):
        return None
    built: Callable[[torch.Tensor], torch.Tensor] = factory(node, "augment", allow)()
    return built


@dataclass
class FoldPlan:
    """A run's folds, planned: what every fold strategy reads (:mod:`mlcli.engine.strategies`).

    ``done`` are the folds finished in an earlier attempt (not trained again); ``on_epoch`` is
    called at every epoch's end of a fold trained in this process, after ``on_lr`` with the
    epoch's per-step lr rows (:data:`~mlcli.engine.loop.LrSteps`); ``on_stacked(n)`` when ``n``
    folds start to train together as one stacked model (a display says so); ``settle`` before a
    fold sets up and before worker processes are forked (the run's writes in flight finish: a
    run killed meanwhile keeps every fold before). ``one_at_a_time``: the folds must finish one
    after another (a pruner judges each as it finishes). ``trained_by`` is the name of the strategy
    that trains the folds once one is chosen, ``trained_info`` what it adds for the status."""

    cfg: DictConfig
    key: str
    dataset: Dataset
    split: Split
    device: torch.device
    run_dir: Path | None = None
    done: set[int] = field(default_factory=set)
    on_epoch: EpochEnd | None = None
    on_lr: LrSteps | None = None
    on_stacked: Callable[[int], None] | None = None
    settle: Callable[[], None] = lambda: None
    one_at_a_time: bool = False
    trained_by: str | None = None
    trained_info: dict[str, Any] | None = None
    _builders: list[Builders] = field(default_factory=list, init=False, repr=False)

    @property
    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every fold's (train, val) row indices."""
        return self.split.folds

    @property
    def test_idx(self) -> np.ndarray:
        """The held-out test rows (evaluated once per fold, after its last epoch)."""
        return self.split.test

    @property
    def metric(self) -> str:
        """The run's selection metric (``metric=auto`` resolved for the task)."""
        return selection_metric(str(self.cfg.metric), self.dataset.task)

    @property
    def pending(self) -> list[int]:
        """The folds left to train, in fold order."""
        return [f for f in range(len(self.folds)) if f not in self.done]

    def builders(self) -> Builders:
        """The run's builders, composed when a fold first needs them (once per process)."""
        if not self._builders:
            self._builders.append(Builders.for_run(self.cfg, self.dataset))
        return self._builders[0]


@dataclass
class FoldSetup:
    """One fold set up as every strategy sets it up: its tensors (preprocessing fitted on its
    training rows alone), its seed, its freshly built model and its batch-order generator."""

    fold: int
    data: FoldData
    seed: int
    model: torch.nn.Module
    generator: torch.Generator


def save_vocabulary(plan: FoldPlan, name: str, data: FoldData) -> None:
    """A text dataset's fitted vocabulary, saved in the run dir as ``name`` (so new text is
    tokenized as the model's rows were); nothing for other data."""
    if data.vocabulary is not None and plan.run_dir is not None:
        path = plan.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data.vocabulary.state())


def set_up_fold(
    plan: FoldPlan, fold: int, build_model: ModelBuilder, data: FoldData | None = None
) -> FoldSetup:
    """Fold ``fold`` of ``plan``: its tensors (``data``, when already made; a text dataset's
    fitted vocabulary saved in the run dir), then, seeded from
    ``(seed, fold)`` alone, its model (built after the preprocessing: one-hot columns fitted per
    fold give the input width) and the generator of its batch order."""
    cfg = plan.cfg
    if data is None:
        train_idx, val_idx = plan.folds[fold]
        data = fold_tensors(
            plan.dataset,
            train_idx,
            val_idx,
            plan.test_idx,
            cfg.dataset,
            plan.device,
            augment=plan.builders().augment,
            batch_size=int(cfg.batch_size),
            seed=derived_seed(int(cfg.seed), fold, 2),
        )
        save_vocabulary(plan, VOCABULARY_FILE.format(fold=fold), data)
    seed = derived_seed(int(cfg.seed), fold)
    seed_everything(seed)
    model = build_model(data.in_shape).to(plan.device)
    generator = torch.Generator().manual_seed(derived_seed(int(cfg.seed), fold, 1))
    return FoldSetup(fold, data, seed, model, generator)


def count_parameters(plan: FoldPlan, in_shape: tuple[int, ...] | None = None) -> int:
    """The number of trainable parameters of the model every fold of ``plan`` builds for
    examples of ``in_shape`` (default: the dataset's; a fold's preprocessing may widen it, e.g.
    one-hot columns), built once more here on the CPU; the global random state is left as it
    was."""
    state = torch.random.get_rng_state()
    try:
        model = plan.builders().model(in_shape or plan.dataset.in_shape)
    finally:
        torch.random.set_rng_state(state)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
