"""Hydra's Ray launcher as ``mlcli train`` runs it (``hydra/launcher=ray``: mlcli's session puts
this class in its place; every setting stays the Ray launcher's, ``hydra.launcher.ray.init.*``
and ``hydra.launcher.ray.remote.*``).

It runs each job as one Ray task exactly as Hydra's launcher does, inside
:func:`mlcli.sweeps.local_ray.ray_instance`: a local Ray started for the launch and shut down
after it however it ends, nothing of it left running (or the cluster ``ray.init.address``
names, joined and left). Each task reserves ``threads`` CPUs unless
``hydra.launcher.ray.remote.num_cpus`` says otherwise. A task Ray could not run to its end (its
worker died) is recorded as FAILED in the session's ledger instead of ending the sweep with
Ray's traceback: the other jobs' results count, and the identical command runs it again.
"""

# No `from __future__ import annotations`: Hydra's plug-in scan executes this module without
# registering it in sys.modules.
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

    INSTALLED = True
except ImportError:  # mlcli[ray] not installed: no Ray launcher to stand in for
    INSTALLED = False


if INSTALLED:

    class MlcliRayLauncher(RayLauncher):
        """Hydra's Ray launcher that starts and stops its local Ray and survives dead tasks."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            """Run every job as a Ray task and wait for them all; Ray stops afterwards."""
            from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray

            from mlcli.sweeps import local_ray
            from mlcli.sweeps.jobs import is_mlcli_job
            from mlcli.sweeps.launch import cores

            setup_globals()
            assert self.config is not None
            assert self.hydra_context is not None
            assert self.task_function is not None
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            log.info(
                f"Ray Launcher is launching {len(job_overrides)} jobs, "
                f"sweep output dir: {sweep_dir}"
            )
            init = OmegaConf.to_container(self.ray_cfg.init, resolve=True)
            assert isinstance(init, dict)
            with local_ray.ray_instance({str(k): v for k, v in init.items()}, cores()) as cpus:
                runs = []
                for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                    log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                    sweep_config = self.hydra_context.config_loader.load_sweep_config(
                        self.config, list(overrides)
                    )
                    with open_dict(sweep_config):
                        sweep_config.hydra.job.id = f"job_id_for_{idx}"
                        sweep_config.hydra.job.num = idx
                    remote = OmegaConf.to_container(self.ray_cfg.remote, resolve=True)
                    assert isinstance(remote, dict)
                    if "num_cpus" not in remote and is_mlcli_job(self.task_function):
                        threads = OmegaConf.select(sweep_config, "threads", default=1)
                        remote["num_cpus"] = local_ray.job_cpus(threads, cpus)
                    with open_dict(sweep_config):
                        ref = launch_job_on_ray(
                            self.hydra_context, OmegaConf.create(remote), sweep_config,
                            self.task_function, Singleton.get_state(),
                        )  # fmt: skip
                    runs.append((ref, list(overrides), idx))
                return [self._result(ref, overrides, idx) for ref, overrides, idx in runs]

        def _result(self, ref: Any, overrides: list[str], number: int) -> JobReturn:
            """The job's return; a task Ray could not finish is recorded FAILED (no exception)."""
            import ray

            try:
                result: JobReturn = ray.get(ref)
                return result
            except ray.exceptions.RayError as error:  # its worker died, Ray failed it
                message = f"Ray could not run the job to its end: {type(error).__name__}"
                log.error("job #%d: %s", number, message)
                self._record_failure(overrides, number, message)
                ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
                ret.return_value = "FAILED"
                return ret

        def _record_failure(self, overrides: list[str], number: int, message: str) -> None:
            from mlcli.config.identity import run_key
            from mlcli.sweeps.jobs import is_mlcli_job
            from mlcli.sweeps.ledger import JobSession

            assert self.hydra_context is not None and self.config is not None
            if not is_mlcli_job(self.task_function):
                return  # another Hydra app's job: no ledger to record it in
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg):
                cfg.hydra.job.num = number
                job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                del cfg["hydra"]
            JobSession.from_env().record(
                {"run_dir": str(job_dir), "overrides": overrides, "run_key": run_key(cfg),
                 "state": "FAILED", "error": message}
            )  # fmt: skip
