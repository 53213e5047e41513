"""``hydra/sweeper=mlcli_optuna``: a fold-aware, resumable Optuna sweeper (extra ``[optuna]``).

It serves mlcli's jobs (fold pruning, resume, the run's metric) and any other Hydra app, whose
objective is its task function's return value (as in Hydra's upstream Optuna plug-in). It has a
name of its own, not ``optuna``: its settings are not the upstream plug-in's (``sampler=tpe``, not
the ``hydra/sweeper/sampler`` group), so taking that name would silently change other apps.

Hydra imports every module of ``hydra_plugins`` at start-up, so this one stays light: the
sweeper's config schema (registered in Hydra's ConfigStore) and a thin :class:`OptunaSweeper`
that hands the work to :mod:`mlcli.sweeps.study`, where Optuna is imported. Without Optuna
installed, every other command works; this sweeper says how to install it.
"""

# No `from __future__ import annotations`: Hydra loads plug-in modules without registering them
# in sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional  # noqa: UP035  (OmegaConf reads these annotations)

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SamplerName(Enum):
    """Optuna samplers by name."""

    tpe = "tpe"
    random = "random"
    grid = "grid"
    cmaes = "cmaes"
    gp = "gp"
    nsgaii = "nsgaii"


class DirectionName(Enum):
    """Whether to maximize the objective; ``auto`` infers it from the metric's name."""

    auto = "auto"
    maximize = "maximize"
    minimize = "minimize"


class PrunerName(Enum):
    """Pruners that may stop a trial after one of its folds."""

    none = "none"
    median = "median"
    percentile = "percentile"
    hyperband = "hyperband"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper.*`` of ``hydra/sweeper=mlcli_optuna``."""

    _target_: str = "hydra_plugins.mlcli_plugins.optuna_sweeper.OptunaSweeper"
    n_trials: int = 20
    """Finished (COMPLETE or PRUNED) trials to reach; re-running a study raises it to this."""
    n_jobs: int = 1
    """Trials asked and launched at once (run in parallel by e.g. ``hydra/launcher=joblib``)."""
    sampler: SamplerName = SamplerName.tpe
    seed: Optional[int] = None  # noqa: UP045
    """The sampler's seed (a seeded study proposes the same trials again)."""
    n_startup_trials: int = 10
    """tpe/gp/cmaes: random trials before the model-based proposals start."""
    direction: Any = DirectionName.auto
    """``auto``, ``maximize``, ``minimize``, or a list of them (one per objective: a Pareto
    front). ``auto``: inferred from each metric's name (another app: ``minimize``)."""
    metrics: Optional[List[str]] = None  # noqa: UP045, UP006
    """mlcli jobs: the metrics to optimize (several: a multi-objective study), e.g.
    ``[val/acc,val/loss]``; default: the run's selection metric (``metric``)."""
    pruner: PrunerName = PrunerName.none
    pruner_startup_trials: int = 5
    """median/percentile: finished trials before any trial is pruned."""
    pruner_warmup_folds: int = 0
    """median/percentile: folds every trial finishes before it may be pruned."""
    percentile: float = 25.0
    """percentile pruner: prune below this percentile of the other trials (at the same fold)."""
    max_failures: Optional[int] = None  # noqa: UP045
    """The study stops once this many trials failed (errors, divergence); default n_trials."""
    storage: Optional[str] = None  # noqa: UP045
    """Default: Optuna's journal file ``optuna.journal`` in the sweep dir; or a URL (sqlite:///)."""
    study_name: str = "mlcli"
    params: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    """The search space: ``KEY: tag(log, interval(1e-4, 1e-1))`` etc. (merged with the command
    line's sweep overrides)."""


ConfigStore.instance().store(
    group="hydra/sweeper", name="mlcli_optuna", node=OptunaSweeperConf, provider="mlcli"
)


class OptunaSweeper(Sweeper):
    """Search ``hydra.sweeper.params`` with Optuna's ask/tell interface (see mlcli.sweeps.study)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.mlcli_job = True

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Called by Hydra: keep the context and instantiate the configured launcher."""
        from hydra.core.plugins import Plugins

        from mlcli.sweeps.jobs import is_mlcli_job

        self.mlcli_job = is_mlcli_job(task_function)
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Run the study (resuming the one stored in the sweep dir); return the job returns."""
        from mlcli.sweeps.search_space import SearchSpaceError
        from mlcli.sweeps.study import StudyError, run_study

        assert self.config is not None and self.hydra_context is not None
        try:
            return run_study(self, arguments, self.mlcli_job)
        except (StudyError, SearchSpaceError) as error:
            from rich.console import Console
            from rich.panel import Panel

            Console(stderr=True).print(
                Panel(str(error), title="mlcli: Optuna study", border_style="red")
            )
            raise SystemExit(1) from None
