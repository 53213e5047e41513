"""``hydra/launcher=stacked``: a sweep's jobs that differ only in values that keep the model's
shape (seed, optimizer numbers, schedule) train together as one stacked model
(:mod:`mlcli.sweeps.grid`).

Each job still ends exactly as under Hydra's basic launcher: its job dir (numbered as Hydra
numbers it, with ``.hydra/``), run key, skip/continue decision, status, results, ledger entry and
``JobReturn``, in job order, because every job runs through the usual job function
(:func:`mlcli.sweeps.app.task`), which finds its folds already trained. Before the first job of a
group runs, the launcher takes the locks of the group's run keys (held until its last job ended),
decides for each job as the job itself will (skip, continue with its missing folds, or new) and
trains what is left of the group in a child process. Jobs in no group (a group of one, another
model, ``stack_folds=off``), and groups that turn out not to stack, run exactly as under the basic
launcher.

Another Hydra app's jobs (:func:`mlcli.sweeps.jobs.is_mlcli_job`: the task function is not mlcli's)
are launched by Hydra's basic launcher itself: mlcli writes nothing of its own for them.
"""

# No `from __future__ import annotations`: Hydra's plug-in scan executes this module without
# registering it in sys.modules, and dataclasses then cannot resolve string annotations.
import contextlib
import copy
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    """Settings of ``hydra/launcher=stacked`` (``hydra.launcher.max_jobs=...``)."""

    _target_: str = "hydra_plugins.mlcli_plugins.stacked_launcher.StackedLauncher"
    max_jobs: int = 32  # at most this many jobs (each with all its folds) in one stacked model


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="mlcli"
)


@contextlib.contextmanager
def _as_job(config: DictConfig) -> Iterator[None]:
    """Within the block, ``HydraConfig`` is the job's (``${hydra:...}`` resolves as in the job)."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = previous


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config as ``run_job`` hands it to the task (without ``hydra``)."""
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def _job_dir(config: DictConfig) -> Path:
    """The dir ``run_job`` will give the job (``hydra.sweep.dir``/``hydra.sweep.subdir``)."""
    with _as_job(config):
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
        subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
    return Path(os.path.abspath(os.path.join(sweep_dir, subdir)))


class StackedLauncher(Launcher):
    """Hydra's basic launcher, with the stackable jobs of each batch trained together."""

    def __init__(self, max_jobs: int = 32) -> None:
        super().__init__()
        self.max_jobs = max_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.basic: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Called by Hydra once per sweep (another app's sweep goes to Hydra's basic launcher)."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from mlcli.sweeps.jobs import is_mlcli_job

        self.basic = None
        if not is_mlcli_job(task_function):
            self.basic = BasicLauncher()
            self.basic.setup(
                hydra_context=hydra_context, task_function=task_function, config=config
            )
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run a batch of jobs; their ``JobReturn`` in job order."""
        if self.basic is not None:
            return self.basic.launch(job_overrides, initial_job_idx)
        from mlcli.config.identity import run_key
        from mlcli.sweeps import grid
        from mlcli.sweeps.ledger import JobSession

        setup_globals()
        assert self.hydra_context is not None
        assert self.config is not None
        assert self.task_function is not None

        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally (stacked launcher)")
        configs: list[DictConfig] = []
        for n, overrides in enumerate(job_overrides):
            idx = initial_job_idx + n
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        task_configs = [_task_config(c) for c in configs]
        group_of: dict[int, grid.StackedGroup] = {}
        signatures = []
        for config, task_config in zip(configs, task_configs, strict=True):
            with _as_job(config):
                signatures.append(grid.signature(task_config))
        for indices in grid.groups(signatures, self.max_jobs):
            new_group = grid.StackedGroup(indices, initial_job_idx)
            for i in indices:
                group_of[i] = new_group

        def describe(i: int) -> Any:
            """Job ``i`` as its job function will see it (``${hydra:...}`` resolved as there)."""
            with _as_job(configs[i]):
                key = run_key(task_configs[i])
            return grid.SweepJob(task_configs[i], key, _job_dir(configs[i]))

        runs: list[JobReturn] = []
        started: set[int] = set()
        try:
            for n, sweep_config in enumerate(configs):
                group = group_of.get(n)
                if group is not None and id(group) not in started:
                    started.add(id(group))
                    with env_override(configs[group.indices[0]].hydra.job.env_set):
                        session = JobSession.from_env()
                    group.start(describe, session)
                lst = " ".join(filter_overrides(job_overrides[n]))
                log.info(f"\t#{initial_job_idx + n} : {lst}")
                # A job whose folds the group trained gets them with its task (no global state).
                task_function: Any = self.task_function
                precomputed = group.precomputed(n) if group is not None else None
                if precomputed is not None:
                    task_function = functools.partial(task_function, precomputed=precomputed)
                runs.append(
                    run_job(
                        hydra_context=self.hydra_context,
                        task_function=task_function,
                        config=sweep_config,
                        job_dir_key="hydra.sweep.dir",
                        job_subdir_key="hydra.sweep.subdir",
                    )
                )
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                if group is not None and n == group.indices[-1]:
                    group.end()
        finally:
            for group in {id(g): g for g in group_of.values()}.values():
                group.end()
        return runs
