"""Hydra's submitit SLURM launcher as ``mlcli train`` runs it (``hydra/launcher=submitit_slurm``:
mlcli's session puts this class in its place; every setting stays submitit's).

It submits the jobs as one job array exactly as Hydra's launcher does, then:

* records each job's scheduler id in the sweep dir (``mlcli status`` asks the scheduler later);
* with ``--detach``, returns once the array is queued (the jobs record themselves as they end);
* otherwise waits for every job (Ctrl-C or SIGTERM meanwhile cancels the sweep's jobs that
  are still queued or running: ``scancel``), and a job the scheduler ended (killed, out of
  time, node failure) is recorded as FAILED (run dir and the session's ledger) instead of ending
  the sweep with submitit's traceback: the other jobs' results count, and the identical command
  runs it again (:mod:`mlcli.sweeps.cluster`).
"""

# No `from __future__ import annotations`: Hydra's plug-in scan executes this module without
# registering it in sys.modules.
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # mlcli[submitit] not installed: no SLURM launcher to stand in for
    SlurmLauncher = None


if SlurmLauncher is not None:

    class MlcliSlurmLauncher(SlurmLauncher):
        """Hydra's SLURM launcher that can return once queued and survives killed jobs."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            """Submit the jobs not done yet as one array; wait for them unless ``--detach``."""
            from mlcli.sweeps import cluster

            assert self.config is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
            numbered = [(n, list(o)) for n, o in enumerate(job_overrides, start=initial_job_idx)]
            detach = cluster.detached()
            left = cluster.left_out(sweep_dir, [n for n, _ in numbered], detach)
            to_submit = [(n, o) for n, o in numbered if n not in left]
            params = []
            for idx, overrides in to_submit:
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                params.append(
                    (overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                     Singleton.get_state())
                )  # fmt: skip
            jobs: dict[int, Any] = {}
            returns = []
            try:
                if params:
                    # An interrupt while submitting waits until the jobs' ids are known.
                    with cluster.deferred_interrupts():
                        submitted = self._executor().map_array(self, *zip(*params, strict=True))
                        jobs.update(
                            {n: job for (n, _), job in zip(to_submit, submitted, strict=True)}
                        )
                        cluster.record_submission(
                            sweep_dir, [(n, jobs[n].job_id, o) for n, o in to_submit]
                        )
                for n, overrides in numbered:
                    if n in left:
                        returns.append(self._left_out(overrides, n, left[n]))
                    elif detach:
                        returns.append(_returned(overrides, "QUEUED"))
                    else:
                        returns.append(self._wait(jobs[n], overrides, n))
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM while waiting: the sweep's jobs stop
                if not detach:
                    cluster.cancel([str(job.job_id) for job in jobs.values()])
                raise
            return returns

        def _left_out(self, overrides: list[str], number: int, why: str) -> JobReturn:
            """A job not submitted again: say so (and, done, count it as the job would)."""
            from mlcli.sweeps.ledger import JobSession

            print(f"job #{number} not submitted: {why}  [--rerun runs it again]")
            if why == "done":
                key, job_dir, _ = self._job_key(overrides, number)
                JobSession.from_env().record(
                    {"run_dir": str(job_dir), "overrides": overrides, "run_key": key,
                     "state": "SKIPPED", "error": None, "skipped": True}
                )  # fmt: skip
            return _returned(overrides, "SKIPPED")

        def _executor(self) -> Any:
            """submitit's executor with this launcher's settings (as Hydra's launcher builds it)."""
            import submitit

            init = {"folder": self.params["submitit_folder"]}
            if "max_num_timeout" in self.params:
                init["slurm_max_num_timeout"] = self.params["max_num_timeout"]
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    k if k in base else f"{self._EXECUTOR}_{k}": v
                    for k, v in self.params.items()
                    if k not in ("max_num_timeout", "submitit_folder")
                }
            )
            return executor

        def _wait(self, job: Any, overrides: list[str], number: int) -> JobReturn:
            """The job's result; a job the scheduler ended is recorded FAILED (no exception)."""
            try:
                result: JobReturn = job.results()[0]
                return result
            except Exception as error:  # submitit's UncompletedJobError / FailedJobError
                state = _state(job)
                message = (
                    f"the scheduler ended job {job.job_id} ({state}) before it finished; "
                    f"its log: {job.paths.stderr}"
                )
                log.error("job #%d: %s (%s)", number, message, type(error).__name__)
                self._record_failure(overrides, number, message)
                return _returned(overrides, "FAILED")

        def _job_key(self, overrides: list[str], number: int) -> tuple[str, Path, Path]:
            """A job's run key, job dir and outputs root, from its composed config."""
            from mlcli.config.identity import run_key

            assert self.hydra_context is not None and self.config is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg):
                cfg.hydra.job.num = number
                job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                del cfg["hydra"]
            return run_key(cfg), job_dir, Path(str(cfg.outputs_root))

        def _record_failure(self, overrides: list[str], number: int, message: str) -> None:
            from mlcli.sweeps import cluster
            from mlcli.sweeps.ledger import JobSession

            key, job_dir, outputs_root = self._job_key(overrides, number)
            session = JobSession.from_env()
            cluster.scheduler_ended(outputs_root, key, session.id, message)
            session.record(
                {"run_dir": str(job_dir), "overrides": overrides, "run_key": key,
                 "state": "FAILED", "error": message}
            )  # fmt: skip


def _returned(overrides: list[str], value: str) -> JobReturn:
    """A job's return to Hydra's sweeper (COMPLETED: how the job ended is mlcli's to say)."""
    ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret


def _state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:
        return "UNKNOWN"
