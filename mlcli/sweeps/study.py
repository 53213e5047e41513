"""The Optuna study behind ``hydra/sweeper=optuna``: ask, launch through Hydra, tell; resumable.

* **Trials are jobs.** Each asked trial becomes one Hydra job (job number = trial number, so job
  dirs never collide across resumes) launched through whichever Hydra launcher is configured,
  ``n_jobs`` at a time. The job is an ordinary mlcli job (run key, skip/continue, locks), so a
  parameter set that already has a COMPLETED run anywhere below the outputs root is read, not
  trained again.
* **Objective**: the fold mean of the run's selection metric (status.json ``metric``) at the final
  epoch, read from its results file. The direction is inferred from the metric (acc, r2 ↑; loss,
  mse, mae ↓) unless given.
* **Pruning across folds**: the job reports the running fold mean after every fold to its trial
  (through the study's storage, from whatever process it runs in); the pruner may stop it. The
  run ends PRUNED with its finished folds in its results; the trial is told PRUNED.
* **Storage and resume**: the study lives in the sweep dir (Optuna's journal file by default).
  The identical command finds the sweep dir again (:mod:`mlcli.sweeps.launch`) and loads the
  study: trials left RUNNING by a killed sweep are marked FAIL and their parameters asked again
  first (the new job continues the interrupted run's finished folds), until ``n_trials`` trials
  are COMPLETE or PRUNED. One sweep process at a time holds the study (a lock file).
* **Failures**: a failed or diverged trial is told FAIL with its reason and the study goes on,
  until more than ``max_failures`` trials failed.
* **Results**: the best trial is printed and written to ``optimization_results.yaml`` with every
  trial (number, state, value, parameters, run dir).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlcli import rundir
from mlcli.config import enum_name, env
from mlcli.sweeps import search_space
from mlcli.tasks import higher_is_better, summarize

log = logging.getLogger("mlcli")

SPEC_FILE = "optuna_study.json"
JOURNAL_FILE = "optuna.journal"
RESULTS_FILE = "optimization_results.yaml"
LOCK_FILE = ".optuna.lock"
STALE_ATTR = "stale"


class StudyError(RuntimeError):
    """The study cannot go on (another process holds it, too many failures, ...)."""


@dataclass(frozen=True)
class Spec:
    """What a job needs to report to its trial: storage, study name, pruner settings."""

    storage: str
    study_name: str
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_folds: int
    percentile: float
    direction: str

    @classmethod
    def read(cls, path: Path) -> Spec:
        """The spec a sweep wrote to ``path``."""
        return cls(**rundir.read_json(path))


# --------------------------------------------------------------------------------------------------
# Optuna objects from settings.


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna without its experimental warnings and INFO chatter (mlcli prints its own lines)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def storage(url: str) -> Any:
    """An Optuna storage: a journal file path (``*.journal``/``*.log``) or a database URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    return (
        optuna.storages.RDBStorage(url)
        if url.startswith(("sqlite", "postgresql", "mysql"))
        else url
    )


def pruner(spec: Spec, n_folds: int | None = None) -> Any:
    """The Optuna pruner of ``spec`` (``n_folds``: hyperband's maximum resource)."""
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_folds
        )
    if spec.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            spec.percentile,
            n_startup_trials=spec.pruner_startup_trials,
            n_warmup_steps=spec.pruner_warmup_folds,
        )
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_folds or "auto")
    return optuna.pruners.NopPruner()


def sampler(settings: DictConfig, space: search_space.SearchSpace, offset: int = 0) -> Any:
    """The Optuna sampler named by ``hydra.sweeper.sampler`` (seeded by ``hydra.sweeper.seed``).

    ``offset`` (the trials the study already has) shifts the seed, so that a resumed seeded
    study does not propose its first trials again, and a given history always continues alike.
    """
    import optuna

    name = enum_name(settings.sampler)
    seed = None if settings.seed is None else int(settings.seed) + offset
    startup = int(settings.n_startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(search_space.grid(space), seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def infer_direction(metric: str) -> str:
    """``maximize`` for acc/r2/exact_match (and ``auto``), ``minimize`` for loss/mse/mae."""
    return "maximize" if higher_is_better(metric) else "minimize"


# --------------------------------------------------------------------------------------------------
# The sweep process.


@contextlib.contextmanager
def study_lock(sweep_dir: Path) -> Iterator[None]:
    """Hold the study of ``sweep_dir`` exclusively (a second sweep process fails at once)."""
    fd = os.open(sweep_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StudyError(
                    f"another mlcli process is running the study in {sweep_dir}; wait for it "
                    "or stop it, then run this command again"
                ) from None
            raise
        yield
    finally:
        os.close(fd)


def run_study(sweeper: Any, arguments: list[str]) -> list[Any]:
    """The sweep of :class:`~hydra_plugins.mlcli_plugins.optuna_sweeper.OptunaSweeper`."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise StudyError("hydra/sweeper=optuna needs Optuna: pip install 'mlcli[optuna]'") from None
    config: DictConfig = sweeper.config
    settings = config.hydra.sweeper
    params = OmegaConf.to_container(settings.params)
    assert isinstance(params, dict)
    space = search_space.parse(list(arguments), {str(k): v for k, v in params.items()})
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    with study_lock(sweep_dir), quiet_optuna():
        return _Study(sweeper, settings, space, sweep_dir).run()


class _Study:
    """One sweep process's hold on a study: resume, ask/launch/tell, write the results."""

    def __init__(
        self, sweeper: Any, settings: DictConfig, space: search_space.SearchSpace, sweep_dir: Path
    ) -> None:
        import optuna

        self.sweeper, self.settings, self.space, self.sweep_dir = (
            sweeper,
            settings,
            space,
            sweep_dir,
        )
        base = sweeper.hydra_context.config_loader.load_sweep_config(
            sweeper.config, space.validation_jobs()[0]
        )
        self.metric = str(base.metric)
        direction = enum_name(settings.direction)
        self.direction = infer_direction(self.metric) if direction == "auto" else direction
        url = str(settings.storage or (sweep_dir / JOURNAL_FILE).resolve())
        self.spec = Spec(
            storage=url,
            study_name=str(settings.study_name),
            pruner=enum_name(settings.pruner),
            pruner_startup_trials=int(settings.pruner_startup_trials),
            pruner_warmup_folds=int(settings.pruner_warmup_folds),
            percentile=float(settings.percentile),
            direction=self.direction,
        )
        self.spec_path = (sweep_dir / SPEC_FILE).resolve()
        rundir.write_json(self.spec_path, self.spec.__dict__)
        self.study = optuna.create_study(
            storage=storage(url),
            sampler=sampler(settings, space),
            pruner=pruner(self.spec),
            study_name=self.spec.study_name,
            direction="maximize" if self.direction == "maximize" else "minimize",
            load_if_exists=True,
        )
        if self.study.trials:  # resumed: a seeded sampler must not repeat its first proposals
            self.study.sampler = sampler(settings, space, offset=len(self.study.trials))
        stored = self.study.direction.name.lower()
        if stored != self.direction:
            raise StudyError(
                f"the study {self.spec.study_name!r} in {url} was created to {stored}, this "
                f"command asks to {self.direction}: give another hydra.sweeper.study_name or "
                "sweep dir"
            )
        self.distributions = {k: search_space.distribution(p) for k, p in space.params.items()}
        self.n_trials = int(settings.n_trials)
        if enum_name(settings.sampler) == "grid":
            size = math.prod(len(v) for v in search_space.grid(space).values())
            if size < self.n_trials:
                print(f"sampler=grid: the grid has {size} points; n_trials={size}")
                self.n_trials = size
        failures = settings.max_failures
        self.max_failures = self.n_trials if failures is None else int(failures)

    # -- bookkeeping -------------------------------------------------------------------------

    def _trials(self, *states: Any) -> list[Any]:
        return list(self.study.get_trials(deepcopy=False, states=states or None))

    def _finished(self) -> int:
        """Trials that count towards ``n_trials``: COMPLETE and PRUNED (grid: tried points)."""
        from optuna.trial import TrialState

        finished = len(self._trials(TrialState.COMPLETE, TrialState.PRUNED))
        if enum_name(self.settings.sampler) == "grid":  # a failed grid point is not asked again
            finished += self._failed()
        return finished

    def _failed(self) -> int:
        from optuna.trial import TrialState

        return sum(1 for t in self._trials(TrialState.FAIL) if not t.user_attrs.get(STALE_ATTR))

    def resume(self) -> None:
        """Trials a killed sweep left RUNNING: mark them FAIL and ask their parameters again."""
        from optuna.trial import TrialState

        storage_ = self.study._storage
        for trial in self._trials(TrialState.RUNNING):
            storage_.set_trial_user_attr(trial._trial_id, STALE_ATTR, True)
            storage_.set_trial_user_attr(
                trial._trial_id, "reason", "the sweep was stopped while this trial ran"
            )
            storage_.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            print(
                f"trial {trial.number} was left RUNNING by a stopped sweep: marked FAIL; its "
                "parameters are tried again first"
            )
            if set(trial.params) == set(self.distributions):
                self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> list[Any]:
        """Ask, launch and tell until ``n_trials`` trials are finished; write the results."""
        self.resume()
        done = self._finished()
        if done:
            print(f"study {self.spec.study_name!r} in {self.sweep_dir}: {done} trial(s) finished")
        returns: list[Any] = []
        while (finished := self._finished()) < self.n_trials:
            if (failed := self._failed()) > self.max_failures:
                self.write_results()
                raise StudyError(
                    f"{failed} trials failed (max_failures={self.max_failures}): the "
                    f"study stopped; see {self.sweep_dir / RESULTS_FILE}"
                )
            n = min(int(self.settings.n_jobs), self.n_trials - finished)
            trials = [self.study.ask(self.distributions) for _ in range(n)]
            returns.extend(self.launch(trials))
        self.write_results(announce=True)
        return returns

    def job_overrides(self, trial: Any) -> list[str]:
        """The Hydra overrides of ``trial``'s job (its parameters, and where to report folds)."""
        params = [search_space.overrides(k, trial.params[k]) for k in self.space.params]
        values = {env.OPTUNA_SPEC: str(self.spec_path), env.OPTUNA_TRIAL: str(trial.number)}
        quoted = [f"++hydra.job.env_set.{k}='{v}'" for k, v in values.items()]
        return [*self.space.fixed, *params, *quoted]

    def launch(self, trials: list[Any]) -> list[Any]:
        """Launch ``trials`` (consecutive numbers: one batch, job num = trial number); tell."""
        batches: list[list[Any]] = []
        for trial in trials:
            if batches and batches[-1][-1].number + 1 == trial.number:
                batches[-1].append(trial)
            else:
                batches.append([trial])
        returns = []
        for batch in batches:
            overrides = [self.job_overrides(t) for t in batch]
            for trial in batch:
                shown = " ".join(
                    search_space.overrides(k, trial.params[k]) for k in self.space.params
                )
                print(f"trial {trial.number}: {shown}")
            launched = self.sweeper.launcher.launch(overrides, initial_job_idx=batch[0].number)
            for trial, job in zip(batch, launched, strict=True):
                self.tell(trial, job)
            returns.extend(launched)
        return returns

    def tell(self, trial: Any, job: Any) -> None:
        """Tell the study how ``trial``'s job ended (COMPLETE with its value, PRUNED or FAIL)."""
        from optuna.trial import TrialState

        state = str(job.return_value)  # raises if the job raised (mlcli's task never does)
        job_dir = Path(str(job.hydra_cfg.hydra.runtime.output_dir))
        run_dir = rundir.linked_run_dir(job_dir)
        storage_ = self.study._storage
        storage_.set_trial_user_attr(trial._trial_id, "run_dir", str(run_dir))
        storage_.set_trial_user_attr(trial._trial_id, "job_dir", str(job_dir))
        outcome = objective(run_dir)
        if outcome.metric:
            self.metric = outcome.metric  # resolved by the run (metric=auto → val/acc ...)
        if outcome.state == "COMPLETED" and outcome.value is not None:
            self._tell(trial, outcome.value)
            print(f"trial {trial.number}: {outcome.metric} = {outcome.value:.6g}")
        elif outcome.state == "PRUNED":
            storage_.set_trial_user_attr(trial._trial_id, "reason", str(outcome.error))
            self._tell(trial, state=TrialState.PRUNED)
            print(f"trial {trial.number}: pruned ({outcome.error})")
        else:
            reason = outcome.error or f"the job ended {state}"
            storage_.set_trial_user_attr(trial._trial_id, "reason", reason)
            self._tell(trial, state=TrialState.FAIL)
            print(f"trial {trial.number}: FAIL ({reason})")

    def _tell(self, trial: Any, value: float | None = None, state: Any = None) -> None:
        """``study.tell``; the grid sampler's "grid exhausted" stop request is not an error.

        (GridSampler calls ``study.stop()``, which Optuna allows only inside ``optimize``; the
        trial's state is stored before that, and this loop ends by counting trials anyway.)
        """
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise

    def write_results(self, announce: bool = False) -> None:
        """``optimization_results.yaml``: the best trial and every trial, written atomically."""
        import yaml
        from optuna.trial import TrialState

        trials = self._trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = self.study.best_trial if complete else None
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        document = {
            "name": self.spec.study_name,
            "metric": self.metric,
            "direction": self.direction,
            "best_params": dict(best.params) if best else None,
            "best_value": float(best.value) if best and best.value is not None else None,
            "best_trial": best.number if best else None,
            "best_run_dir": best.user_attrs.get("run_dir") if best else None,
            "n_trials": counts,
            "trials": [
                {
                    "number": t.number,
                    "state": t.state.name,
                    "value": None if t.value is None else float(t.value),
                    "params": dict(t.params),
                    "folds_reported": len(t.intermediate_values),
                    "run_dir": t.user_attrs.get("run_dir"),
                    "reason": t.user_attrs.get("reason"),  # why it was PRUNED or FAIL
                }
                for t in trials
            ],
        }
        text = yaml.safe_dump(document, sort_keys=False)
        rundir.atomic_write_text(self.sweep_dir / RESULTS_FILE, text)
        if announce and best is not None:
            print(f"best trial {best.number}: {self.metric} = {best.value:.6g}  {best.params}")
            print(f"results: {self.sweep_dir / RESULTS_FILE}")


@dataclass(frozen=True)
class Objective:
    """A run's state and, when COMPLETED, its fold-mean selection metric."""

    state: str
    metric: str
    value: float | None
    error: str | None


def objective(run_dir: Path) -> Objective:
    """The fold mean of ``run_dir``'s selection metric at the final epoch (from its results)."""
    try:
        status = rundir.read_status(run_dir)
    except rundir.Unreadable as error:
        return Objective("FAILED", "", None, str(error))
    if status is None:
        return Objective("FAILED", "", None, f"no status.json in {run_dir}")
    state, metric = status.state, status.metric or ""
    if state != "COMPLETED":
        return Objective(state, metric, None, status.error_line or None)
    try:
        rows = rundir.read_result_rows(run_dir, status.run_key or "")
    except rundir.Unreadable as error:
        return Objective("FAILED", metric, None, str(error))
    mean = summarize(rows).get(metric, (math.nan, 0.0))[0]
    if not math.isfinite(mean):
        return Objective("FAILED", metric, None, f"{metric} is {mean} (no finite fold mean)")
    return Objective(state, metric, mean, None)


# --------------------------------------------------------------------------------------------------
# The job side: report folds to the trial; maybe stop.


class FoldReporter:
    """Reports a run's running fold mean to its Optuna trial after each fold (and may prune): the
    run's :class:`~mlcli.runner.FoldHook`, which raises :class:`~mlcli.runner.Pruned`.

    Built in the job's process from the environment its sweep set (:func:`from_env`).
    """

    def __init__(self, spec: Spec, trial_number: int) -> None:
        self.spec = spec
        self.trial_number = trial_number
        self._trial: Any = None

    @classmethod
    def from_env(cls) -> FoldReporter | None:
        """The reporter of this job's trial, or None outside an Optuna sweep."""
        path, number = os.environ.get(env.OPTUNA_SPEC), os.environ.get(env.OPTUNA_TRIAL)
        if not path or number is None or not Path(path).is_file():
            return None
        return cls(Spec.read(Path(path)), int(number))

    @property
    def prunes(self) -> bool:
        """Whether a pruner is configured (then folds are trained one after another)."""
        return self.spec.pruner != "none"

    def info(self) -> dict[str, Any]:
        """What status.json records about the trial."""
        return {"study": self.spec.study_name, "number": self.trial_number}

    def _open(self, n_folds: int) -> Any:
        import optuna

        if self._trial is None:
            study = optuna.load_study(
                study_name=self.spec.study_name,
                storage=storage(self.spec.storage),
                pruner=pruner(self.spec, n_folds),
            )
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(
                study._study_id, self.trial_number
            )
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def __call__(self, rows: list[dict[str, Any]], folds_done: list[int], n_folds: int,
                 metric: str) -> None:  # fmt: skip
        """After a fold: report the fold mean so far (step = folds done); raise if pruned."""
        if not self.prunes or not folds_done:
            return
        value = summarize([r for r in rows if r["fold"] in folds_done]).get(metric, (None,))[0]
        if value is None or not math.isfinite(value):
            return
        with quiet_optuna():
            trial = self._open(n_folds)
            trial.report(float(value), step=len(folds_done))
            if len(folds_done) < n_folds and trial.should_prune():
                from mlcli.runner import Pruned

                raise Pruned(
                    f"pruned by the {self.spec.pruner} pruner after {len(folds_done)} of "
                    f"{n_folds} folds: fold mean {metric} = {value:.4g}"
                )
