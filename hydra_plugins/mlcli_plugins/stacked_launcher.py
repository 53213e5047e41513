"""``hydra/launcher=stacked``: a sweep's jobs that differ only in values that keep the model's
shape (seed, optimizer numbers, schedule) train together as one stacked model
(:mod:`mlcli.sweeps.grid`).

Each job still ends exactly as under Hydra's basic launcher: its job dir (numbered as Hydra
numbers it, with ``.hydra/``), run key, skip/continue decision, status, results, ledger entry and
``JobReturn``, in job order, because every job runs through the usual job function
(:func:`mlcli.sweeps.job.task`), which finds its folds already trained. Before the first job of a
group runs, the launcher takes the locks of the group's run keys (held until its last job ended),
decides for each job as the job itself will (skip, continue with its missing folds, or new) and
trains what is left of the group in a child process. Jobs in no group (a group of one, another
model, ``stack_folds=off``), and groups that turn out not to stack, run exactly as under the basic
launcher.
"""

# No `from __future__ import annotations`: Hydra's plug-in scan executes this module without
# registering it in sys.modules, and dataclasses then cannot resolve string annotations.
import contextlib
import copy
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


class _Group:
    """Jobs trained together: their locks, and what the child process trained for them."""

    def __init__(self, indices: list[int], first_number: int = 0) -> None:
        self.indices = indices
        self.first_number = first_number  # Hydra's number of the batch's first job
        self.locks = contextlib.ExitStack()
        self.keys: list[str] = []

    def start(self, configs: list[DictConfig], task_configs: list[DictConfig]) -> None:
        """Lock the group's run keys, decide for each job, and train what the jobs need.

        Whatever goes wrong here (but an interruption) leaves the jobs to train one by one.
        """
        try:
            self._start(configs, task_configs)
        except Exception as error:
            log.warning(f"stacked training not possible ({error!r}); jobs train one by one")

    def _start(self, configs: list[DictConfig], task_configs: list[DictConfig]) -> None:
        from mlcli import runner
        from mlcli.config.identity import run_key
        from mlcli.engine import stacked
        from mlcli.sweeps import grid, index, locks, procs
        from mlcli.sweeps.session import JobSession

        first = configs[self.indices[0]]
        with env_override(first.hydra.job.env_set):
            session = JobSession.from_env()
        if session.stop_requested:
            return
        outputs_root = Path(str(task_configs[self.indices[0]].outputs_root))
        keys = {}
        for i in self.indices:
            with _as_job(configs[i]):
                keys[i] = run_key(task_configs[i])
        for key in sorted(set(keys.values())):  # one order for every process: no deadlock
            self.locks.enter_context(locks.key_lock(outputs_root, key))
        self.keys = sorted(set(keys.values()))
        jobs: list[grid.GroupJob] = []
        seen: set[str] = set()
        for i in self.indices:
            if keys[i] in seen:
                continue  # the same run twice: the second job finds the first one's run
            seen.add(keys[i])
            decision = index.decide(outputs_root, keys[i], _job_dir(configs[i]), session.rerun)
            if decision.action == "skip":
                continue
            done = (
                _done_folds(decision.run_dir, keys[i]) if decision.action == "continue" else set()
            )
            jobs.append(grid.GroupJob(task_configs[i], keys[i], done))
        if len(jobs) < 2:
            return
        numbers = ", ".join(f"#{self.first_number + i}" for i in self.indices)
        log.info(f"Training jobs {numbers} as one stacked model ({len(jobs)} runs)")
        # Imported once here: the training child and every job's inherit it (no torch.optim:
        # the stacked model has its own optimizer, and the jobs find their folds trained).
        runner.preload(optimizers=False)
        result = procs.call_in_child(lambda: grid.train_group(jobs))
        if not result.returned:
            log.warning(f"stacked training failed ({result.describe()}); jobs train one by one")
            return
        value: dict[str, Any] = result.value
        if "unstackable" in value:
            log.info(f"not stacked: {value['unstackable']}; jobs train one by one")
            return
        for key, folds in value["results"].items():
            stacked.PRECOMPUTED[key] = {"results": folds, "info": value["info"]}

    def end(self) -> None:
        """Forget the group's results and release its locks."""
        from mlcli.engine import stacked

        for key in self.keys:
            stacked.PRECOMPUTED.pop(key, None)
        self.locks.close()


def _done_folds(run_dir: Path, key: str) -> set[int]:
    """The folds an unfinished run kept (as :func:`mlcli.runner.run` reads them)."""
    from mlcli import rundir

    return rundir.kept_folds(run_dir, key).folds


class StackedLauncher(Launcher):
    """Hydra's basic launcher, with the stackable jobs of each batch trained together."""

    def __init__(self, max_jobs: int = 32) -> None:
        super().__init__()
        self.max_jobs = max_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Called by Hydra once per sweep."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run a batch of jobs; their ``JobReturn`` in job order."""
        from mlcli.sweeps import grid

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
        group_of: dict[int, _Group] = {}
        signatures = []
        for config, task_config in zip(configs, task_configs, strict=True):
            with _as_job(config):
                signatures.append(grid.signature(task_config))
        for indices in grid.groups(signatures, self.max_jobs):
            new_group = _Group(indices, initial_job_idx)
            for i in indices:
                group_of[i] = new_group

        runs: list[JobReturn] = []
        started: set[int] = set()
        try:
            for n, sweep_config in enumerate(configs):
                group = group_of.get(n)
                if group is not None and id(group) not in started:
                    started.add(id(group))
                    group.start(configs, task_configs)
                lst = " ".join(filter_overrides(job_overrides[n]))
                log.info(f"\t#{initial_job_idx + n} : {lst}")
                runs.append(
                    run_job(
                        hydra_context=self.hydra_context,
                        task_function=self.task_function,
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
