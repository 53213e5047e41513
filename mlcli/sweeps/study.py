"""The Optuna study behind ``hydra/sweeper=mlcli_optuna``: ask, launch through Hydra, tell;
resumable. It serves mlcli's jobs and any other Hydra app (:func:`mlcli.sweeps.jobs.is_mlcli_job`).

* **Trials are jobs.** Each asked trial becomes one Hydra job (job number = trial number, so job
  dirs never collide across resumes) launched through whichever Hydra launcher is configured,
  ``n_jobs`` at a time. The job is an ordinary mlcli job (run key, skip/continue, locks), so a
  parameter set that already has a COMPLETED run anywhere below the outputs root is read, not
  trained again.
* **Objective** of an mlcli job: the fold mean of the run's selection metric (status.json
  ``metric``) at the final epoch, read from its results file, or of each of ``metrics`` (a
  multi-objective study). The direction is inferred from the metric (acc, r2 ↑; loss, mse, mae ↓)
  unless given. **Another app's** objective is its task function's return value, as Hydra's
  upstream Optuna plug-in defines it: a float, or one float per ``direction`` given as a list.
* **Pruning across folds**: the job reports the running fold mean after every fold to its trial
  (through the study's storage, from whatever process it runs in); the pruner may stop it. The
  run ends PRUNED with its finished folds in its results; the trial is told PRUNED.
* **Storage and resume**: the study lives in the sweep dir (Optuna's journal file by default).
  The identical command finds the sweep dir again (:mod:`mlcli.sweeps.launch`) and loads the
  study: trials left RUNNING by a killed sweep are marked FAIL and their parameters asked again
  first (the new job continues the interrupted run's finished folds), until ``n_trials`` trials
  are COMPLETE or PRUNED. One sweep process at a time holds the study (a lock file).
* **Failures**: a failed or diverged trial is told FAIL with its reason and the study goes on;
  once ``max_failures`` trials failed it stops (no trial is asked that the limit could forbid).
* **Results**: the best trial (a multi-objective study: its Pareto front, ``best_trials``) is
  printed and written to ``optimization_results.yaml`` with every trial (number, state, values,
  parameters, run dir).
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

from omegaconf import DictConfig, ListConfig, OmegaConf

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


class StudyStopped(StudyError):
    """``max_failures`` trials failed: the study stopped (its results are written)."""


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
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def infer_direction(metric: str) -> str:
    """``maximize`` for acc/r2/exact_match (and ``auto``), ``minimize`` for loss/mse/mae."""
    return "maximize" if higher_is_better(metric) else "minimize"


def directions(direction: Any, metrics: list[str], mlcli_job: bool) -> list[str]:
    """One direction per objective, from ``hydra.sweeper.direction`` (a name or a list).

    ``auto`` is inferred from each metric for mlcli's jobs (one ``auto`` serves every metric);
    another app has no metric names, so there ``auto`` means ``minimize`` (the upstream default).
    """
    given = [enum_name(d) for d in direction] if _is_list(direction) else [enum_name(direction)]
    unknown = [d for d in given if d not in ("auto", "maximize", "minimize")]
    if unknown:
        raise StudyError(
            f"hydra.sweeper.direction={given}: {unknown} is not a direction; give maximize, "
            "minimize or auto (a list of them for a multi-objective study)"
        )
    if not mlcli_job:
        return ["minimize" if d == "auto" else d for d in given]
    if given == ["auto"]:
        given = given * len(metrics)
    if len(given) != len(metrics):
        raise StudyError(
            f"hydra.sweeper.direction={given} gives {len(given)} direction(s) for "
            f"{len(metrics)} metric(s) {metrics}: give one per metric, e.g. "
            "hydra.sweeper.metrics=[val/acc,val/loss] hydra.sweeper.direction=[maximize,minimize]"
        )
    return [infer_direction(m) if d == "auto" else d for d, m in zip(given, metrics, strict=True)]


def _is_list(value: Any) -> bool:
    return not isinstance(value, str) and isinstance(value, list | tuple | ListConfig)


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


def run_study(sweeper: Any, arguments: list[str], mlcli_job: bool = True) -> list[Any]:
    """The sweep of :class:`~hydra_plugins.mlcli_plugins.optuna_sweeper.OptunaSweeper`
    (``mlcli_job``: whether its task function is mlcli's job, else another Hydra app's)."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise StudyError(
            "hydra/sweeper=mlcli_optuna needs Optuna: pip install 'mlcli[optuna]'"
        ) from None
    config: DictConfig = sweeper.config
    settings = config.hydra.sweeper
    params = OmegaConf.to_container(settings.params)
    assert isinstance(params, dict)
    space = search_space.parse(list(arguments), {str(k): v for k, v in params.items()})
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    with study_lock(sweep_dir), quiet_optuna():
        return _Study(sweeper, settings, space, sweep_dir, mlcli_job).run()


class _Study:
    """One sweep process's hold on a study: resume, ask/launch/tell, write the results."""

    def __init__(
        self,
        sweeper: Any,
        settings: DictConfig,
        space: search_space.SearchSpace,
        sweep_dir: Path,
        mlcli_job: bool = True,
    ) -> None:
        import optuna

        self.sweeper, self.settings, self.space, self.sweep_dir = (
            sweeper,
            settings,
            space,
            sweep_dir,
        )
        self.mlcli_job = mlcli_job
        self.metrics = self._metrics()
        self.directions = directions(settings.direction, self.metrics, mlcli_job)
        url = str(settings.storage or (sweep_dir / JOURNAL_FILE).resolve())
        self.spec = Spec(
            storage=url,
            study_name=str(settings.study_name),
            pruner=enum_name(settings.pruner),
            pruner_startup_trials=int(settings.pruner_startup_trials),
            pruner_warmup_folds=int(settings.pruner_warmup_folds),
            percentile=float(settings.percentile),
            direction=self.directions[0],
        )
        if self.spec.pruner != "none" and (len(self.directions) > 1 or not mlcli_job):
            raise StudyError(
                f"hydra.sweeper.pruner={self.spec.pruner} prunes an mlcli run after a fold of a "
                "single-objective study; "
                + ("this study has several objectives" if mlcli_job else "this app has no folds")
                + ": drop the pruner (hydra.sweeper.pruner=none)"
            )
        self.spec_path = (sweep_dir / SPEC_FILE).resolve()
        if mlcli_job:  # what its jobs read to report their folds to their trials
            rundir.write_json(self.spec_path, self.spec.__dict__)
        self.study = optuna.create_study(
            storage=storage(url),
            sampler=sampler(settings, space),
            pruner=pruner(self.spec),
            study_name=self.spec.study_name,
            directions=[optuna.study.StudyDirection[d.upper()] for d in self.directions],
            load_if_exists=True,
        )
        if self.study.trials:  # resumed: a seeded sampler must not repeat its first proposals
            self.study.sampler = sampler(settings, space, offset=len(self.study.trials))
        stored = [d.name.lower() for d in self.study.directions]
        if stored != self.directions:
            raise StudyError(
                f"the study {self.spec.study_name!r} in {url} was created to {stored}, this "
                f"command asks to {self.directions}: give another hydra.sweeper.study_name or "
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
        if self.max_failures < 1:
            raise StudyError(
                f"hydra.sweeper.max_failures={self.max_failures}: the study stops once this many "
                "trials failed; give 1 or more"
            )

    def _metrics(self) -> list[str]:
        """The metrics an mlcli job's trial is told: ``hydra.sweeper.metrics``, or the run's own
        selection metric (composed from the first trial's overrides); none for another app."""
        given = [str(m) for m in (self.settings.get("metrics") or [])]
        if not self.mlcli_job:
            if given:
                raise StudyError(
                    f"hydra.sweeper.metrics={given} names metrics of mlcli's runs; this app's "
                    "objective is what its task function returns: drop hydra.sweeper.metrics"
                )
            return []
        if given:
            return given
        base = self.sweeper.hydra_context.config_loader.load_sweep_config(
            self.sweeper.config, self.space.validation_jobs()[0]
        )
        return [str(base.metric)]

    @property
    def metric(self) -> str:
        """The objectives' names as printed (``val/acc``; ``val/acc, val/loss``; ``objective``)."""
        return ", ".join(self.metrics) or "objective"

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
        """Ask, launch and tell until ``n_trials`` trials are finished, or stop once
        ``max_failures`` trials failed; write the results."""
        self.resume()
        done = self._finished()
        if done:
            print(f"study {self.spec.study_name!r} in {self.sweep_dir}: {done} trial(s) finished")
        returns: list[Any] = []
        while (finished := self._finished()) < self.n_trials:
            if (failed := self._failed()) >= self.max_failures:
                self.write_results()
                raise StudyStopped(
                    f"the study stopped: {failed} trial(s) failed (max_failures="
                    f"{self.max_failures}); see {self.sweep_dir / RESULTS_FILE}"
                )
            # No more trials than could still be needed, nor than the failure limit allows.
            n = min(int(self.settings.n_jobs), self.n_trials - finished, self.max_failures - failed)
            trials = [self.study.ask(self.distributions) for _ in range(n)]
            returns.extend(self.launch(trials))
        self.write_results(announce=True)
        return returns

    def job_overrides(self, trial: Any) -> list[str]:
        """The Hydra overrides of ``trial``'s job (its parameters; an mlcli job also learns where
        to report its folds)."""
        params = [search_space.overrides(k, trial.params[k]) for k in self.space.params]
        if not self.mlcli_job:
            return [*self.space.fixed, *params]
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
        """Tell the study how ``trial``'s job ended (COMPLETE with its values, PRUNED or FAIL)."""
        from optuna.trial import TrialState

        job_dir = Path(str(job.hydra_cfg.hydra.runtime.output_dir))
        storage_ = self.study._storage
        storage_.set_trial_user_attr(trial._trial_id, "job_dir", str(job_dir))
        if self.mlcli_job:
            run_dir = rundir.linked_run_dir(job_dir)
            storage_.set_trial_user_attr(trial._trial_id, "run_dir", str(run_dir))
            explicit = self.settings.get("metrics")
            outcome = objective(run_dir, list(self.metrics) if explicit else None)
            if outcome.metric and not explicit:
                self.metrics = [outcome.metric]  # resolved by the run (metric=auto → val/acc ...)
        else:
            outcome = returned(job, len(self.directions))
        if outcome.state == "COMPLETED" and outcome.values is not None:
            self._tell(trial, outcome.values)
            shown = ", ".join(f"{v:.6g}" for v in outcome.values)
            print(f"trial {trial.number}: {self.metric} = {shown}")
        elif outcome.state == "PRUNED":
            storage_.set_trial_user_attr(trial._trial_id, "reason", str(outcome.error))
            self._tell(trial, state=TrialState.PRUNED)
            print(f"trial {trial.number}: pruned ({outcome.error})")
        else:
            reason = outcome.error or f"the job ended {outcome.state}"
            storage_.set_trial_user_attr(trial._trial_id, "reason", reason)
            self._tell(trial, state=TrialState.FAIL)
            print(f"trial {trial.number}: FAIL ({reason})")

    def _tell(self, trial: Any, values: list[float] | None = None, state: Any = None) -> None:
        """``study.tell``; the grid sampler's "grid exhausted" stop request is not an error.

        (GridSampler calls ``study.stop()``, which Optuna allows only inside ``optimize``; the
        trial's state is stored before that, and this loop ends by counting trials anyway.)
        """
        try:
            self.study.tell(trial, values, state=state)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise

    def write_results(self, announce: bool = False) -> None:
        """``optimization_results.yaml``: the best trial (several objectives: the Pareto front,
        ``best_trials``) and every trial, written atomically."""
        import yaml
        from optuna.trial import TrialState

        trials = self._trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        single = len(self.directions) == 1
        best = self.study.best_trial if complete and single else None
        front = self.study.best_trials if complete else []
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        document: dict[str, Any] = {
            "name": self.spec.study_name,
            "metric": self.metric,
            "direction": self.directions[0] if single else list(self.directions),
        }
        if single:
            document |= {
                "best_params": dict(best.params) if best else None,
                "best_value": float(best.value) if best and best.value is not None else None,
                "best_trial": best.number if best else None,
                "best_run_dir": best.user_attrs.get("run_dir") if best else None,
            }
        else:
            document["metrics"] = list(self.metrics) or None
            document["best_trials"] = [_described(t) for t in front]
        document["n_trials"] = counts
        document["trials"] = [
            {
                **_described(t),
                "state": t.state.name,
                "folds_reported": len(t.intermediate_values),
                "reason": t.user_attrs.get("reason"),  # why it was PRUNED or FAIL
            }
            for t in trials
        ]
        text = yaml.safe_dump(document, sort_keys=False)
        rundir.atomic_write_text(self.sweep_dir / RESULTS_FILE, text)
        if announce and best is not None:
            print(f"best trial {best.number}: {self.metric} = {best.value:.6g}  {best.params}")
        elif announce and front:
            print(f"Pareto front ({self.metric}): {len(front)} trial(s)")
            for t in front:
                print(f"  trial {t.number}: {', '.join(f'{v:.6g}' for v in t.values)}  {t.params}")
        if announce:
            print(f"results: {self.sweep_dir / RESULTS_FILE}")


def _described(trial: Any) -> dict[str, Any]:
    """A trial as ``optimization_results.yaml`` lists it: number, value(s), parameters, dirs."""
    values = None if trial.values is None else [float(v) for v in trial.values]
    return {
        "number": trial.number,
        "value": values[0] if values is not None and len(values) == 1 else None,
        "values": values,
        "params": dict(trial.params),
        "run_dir": trial.user_attrs.get("run_dir"),
        "job_dir": trial.user_attrs.get("job_dir"),
    }


@dataclass(frozen=True)
class Objective:
    """A trial's state and, when COMPLETED, its objective values (one per direction)."""

    state: str
    metric: str
    values: list[float] | None
    error: str | None


def objective(run_dir: Path, metrics: list[str] | None = None) -> Objective:
    """The fold means of ``run_dir``'s ``metrics`` (default: its selection metric) at the final
    epoch (from its results)."""
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
    summary = summarize(rows)
    values = []
    for name in metrics or [metric]:
        if name not in summary:
            known = ", ".join(sorted(summary)) or "none"
            return Objective("FAILED", metric, None, f"the run has no {name} (it has: {known})")
        mean = summary[name][0]
        if not math.isfinite(mean):
            return Objective("FAILED", metric, None, f"{name} is {mean} (no finite fold mean)")
        values.append(float(mean))
    return Objective(state, metric, values, None)


def returned(job: Any, n_objectives: int) -> Objective:
    """Another app's objective: what its task function returned (a float, or ``n_objectives``
    floats), as Hydra's upstream Optuna plug-in reads it; an exception or any other value fails."""
    try:
        value = job.return_value  # raises the task's exception
    except Exception as error:
        return Objective("FAILED", "", None, f"{type(error).__name__}: {error}")
    try:
        values = [float(value)] if n_objectives == 1 else [float(v) for v in value]
    except (TypeError, ValueError):
        expected = "a float" if n_objectives == 1 else f"a list of {n_objectives} floats"
        return Objective(
            "FAILED", "", None, f"the task function returned {value!r}; expected {expected}"
        )
    if len(values) != n_objectives:
        return Objective(
            "FAILED", "", None,
            f"the task function returned {len(values)} values for {n_objectives} directions",
        )  # fmt: skip
    if not all(math.isfinite(v) for v in values):
        return Objective("FAILED", "", None, f"the task function returned {value!r}")
    return Objective("COMPLETED", "", values, None)


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
