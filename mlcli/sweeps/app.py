"""The Hydra application: ``@hydra.main`` over mlcli's packaged configs, and the job function.

The CLI rewrites ``sys.argv`` and calls :func:`hydra_main`, so every Hydra feature (multirun,
sweepers, launchers, ``--cfg``) works unchanged. Each job runs :func:`task`, which never lets a
job's failure escape (only an interruption of the sweep itself):

1. under the lock of its run key, it decides whether to skip the job (a COMPLETED run exists),
   continue an unfinished run in place, or start a new one (:mod:`mlcli.sweeps`);
2. it trains in a child process (:mod:`mlcli.sweeps.procs`), so an exception, ``sys.exit`` or a
   SIGKILL ends that child only;
3. it records how the job ended (status.json in the run dir and the session's ledger, which the
   CLI reads to print the failed-jobs table) and, with ``on_failure=stop``, asks the session to
   start no more jobs.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mlcli.config import (
    CONFIG_NAME,
    GROUPS,
    enum_name,
    env,
    packaged_conf_dir,
    register_schemas,
)

if TYPE_CHECKING:
    from mlcli.engine.strategies import Precomputed
    from mlcli.sweeps.ledger import JobSession

log = logging.getLogger("mlcli")
__all__ = ["hydra_main", "task"]

register_schemas()


def _gpu_slot(cfg: DictConfig, hydra_cfg: Any, outputs_root: Path) -> Any:
    """The job's GPU slot (:mod:`mlcli.sweeps.gpus`): a context yielding its GPU or None."""
    import contextlib

    from mlcli.sweeps import gpus

    if not gpus.assigned(enum_name(cfg.device)):
        return contextlib.nullcontext(None)
    number = hydra_cfg.job.get("num")
    return gpus.gpu_slot(outputs_root, int(number or 0), int(cfg.get("jobs_per_gpu") or 1))


def _train(
    cfg: DictConfig, run_dir: Path, options: dict[str, Any], gpu: str | None = None
) -> dict[str, Any]:
    """Body of the job's child process: run, and describe how it ended (never raises).

    ``gpu``: the only GPU the child sees (set before torch initializes CUDA)."""
    from mlcli import rundir, runner
    from mlcli.config.targets import root_cause
    from mlcli.display import ProgressReporter
    from mlcli.sweeps import gpus
    from mlcli.sweeps.study import FoldReporter

    gpus.use_gpu(gpu)

    reporter = ProgressReporter(str(cfg.metric)) if cfg.progress else None
    try:
        # In an Optuna sweep: report each fold to the job's trial (its pruner may stop the run).
        fold_hook = FoldReporter.from_env()
        outcome = runner.run(cfg, run_dir, reporter=reporter, fold_hook=fold_hook, **options)
    except KeyboardInterrupt:
        return {"state": "INTERRUPTED", "error": "interrupted"}
    except BaseException as error:  # a job's failure (SystemExit included) must not end the sweep
        # Replaced, never written through: a symbolic link there is not followed.
        rundir.atomic_write_text(run_dir / "error.log", traceback.format_exc())
        cause = root_cause(error)
        return {"state": "FAILED", "error": f"{type(cause).__name__}: {cause}"}
    finally:
        if reporter is not None:
            reporter.stop()
    return {"state": outcome.state, "error": outcome.error, "summary": outcome.summary}


def task(cfg: DictConfig, precomputed: Precomputed | None = None) -> str:
    """Run one job inside Hydra: returns its final state; raises only ``KeyboardInterrupt``.

    ``precomputed``: the job's folds, trained already by the stacked launcher.
    """
    from mlcli import display, rundir, runner  # noqa: F401  (display: every job's child inherits it)
    from mlcli.config import security
    from mlcli.config.identity import run_key
    from mlcli.engine.optim import imports_dynamo
    from mlcli.sweeps import index, locks, procs
    from mlcli.sweeps.ledger import JobSession

    hydra_cfg = HydraConfig.get()
    key = run_key(cfg)
    # Once per process: every job's forked child inherits torch, sklearn & co. (and torch.optim's
    # lazy imports, unless the stacked launcher has trained this job's folds already or the
    # optimizer steps without them).
    runner.preload(optimizers=precomputed is None and imports_dynamo(cfg.optim))
    if os.environ.get(env.OPTUNA_TRIAL):
        import optuna  # noqa: F401  (an Optuna sweep's jobs report to their trial)

    job_dir = Path(hydra_cfg.runtime.output_dir)
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if k in GROUPS}
    overrides = list(hydra_cfg.overrides.task)
    session = JobSession.from_env()
    entry: dict[str, Any] = {"run_dir": str(job_dir), "overrides": overrides, "run_key": key}
    if session.stop_requested:
        log.warning("not run: an earlier job failed and on_failure=stop")
        session.record({**entry, "state": "CANCELLED", "error": "on_failure=stop"})
        return "CANCELLED"

    outputs_root = Path(str(cfg.outputs_root))
    # A job in another process than the session's (a joblib worker) stops if the session dies.
    with (
        procs.interrupt_on_signals(),
        procs.stop_with_session(session.process),
        locks.key_lock(outputs_root, key),
    ):
        decision = index.decide(outputs_root, key, job_dir, rerun=session.rerun)
        run_dir = decision.run_dir
        entry["run_dir"] = str(run_dir)
        if run_dir.resolve() != job_dir.resolve() and decision.previous is not None:
            action = "skipped" if decision.action == "skip" else "continued"
            rundir.write_link(job_dir, action, key, run_dir, decision.previous.state)
        if decision.action == "skip":
            assert decision.previous is not None
            state = decision.previous.state
            print(f"skipped (already {state}): {run_dir}  [--rerun runs it again]")
            session.record({**entry, "state": "SKIPPED" if state == "COMPLETED" else state,
                            "error": "diverged in an earlier run" if state != "COMPLETED" else None,
                            "skipped": True})  # fmt: skip
            return "SKIPPED"
        if decision.action == "continue" and decision.previous is not None:
            refused = security.reuse_problem(run_dir)
            if refused is not None:  # e.g. a symbolic link the run's writes would follow
                log.error("job FAILED: %s", refused)
                session.record({**entry, "state": "FAILED", "error": refused})
                return "FAILED"
            print(f"continuing {run_dir} ({decision.previous.progress} already done)")
        options = dict(choices=choices, overrides=overrides, session=session.id,
                       precomputed=precomputed)  # fmt: skip
        try:
            with _gpu_slot(cfg, hydra_cfg, outputs_root) as gpu:
                result = procs.call_in_child(lambda: _train(cfg, run_dir, options, gpu))
        except KeyboardInterrupt:
            session.record({**entry, "state": "INTERRUPTED", "error": "interrupted"})
            raise
        if result.returned:
            ended: dict[str, Any] = result.value
        else:  # the child died: nobody wrote its final state
            ended = {"state": "FAILED", "error": result.describe()}
            if (run_dir / "status.json").is_file():
                rundir.set_state(run_dir, "FAILED", "ProcessDied", result.describe())

    return _ended(cfg, ended, run_dir, overrides, session, entry)


def _ended(
    cfg: DictConfig,
    ended: dict[str, Any],
    run_dir: Path,
    overrides: list[str],
    session: JobSession,
    entry: dict[str, Any],
) -> str:
    """Record how the job ended (the session's ledger), say so, and with ``on_failure=stop`` a
    failure asks the session to start no more jobs; the final state."""
    state = str(ended["state"])
    session.record({**entry, "state": state, "error": ended.get("error")})
    if state == "COMPLETED":
        _print_summary(ended["summary"], run_dir, overrides)
    elif state == "PRUNED":
        log.warning("job PRUNED: %s (run dir %s)", ended.get("error"), run_dir)
    else:
        log.error("job %s: %s (run dir %s)", state, ended.get("error"), run_dir)
        if state in ("FAILED", "DIVERGED") and enum_name(cfg.on_failure) == "stop":
            session.request_stop()
    return state


def _print_summary(summary: dict[str, Any], run_dir: Path, overrides: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlcli import rundir
    from mlcli.display import summary_table

    status = rundir.read_status(run_dir)
    n_folds = status.n_folds if status is not None and status.n_folds is not None else 0
    stats = {name: (float(m), float(s)) for name, (m, s) in summary.items()}
    console = Console()
    console.print(summary_table(stats, n_folds, escape(" ".join(overrides) or "defaults")))
    console.print(f"results: {run_dir}")


@hydra.main(version_base="1.3", config_path=str(packaged_conf_dir()), config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig, precomputed: Precomputed | None = None) -> str:
    """Hydra's entry point (argv is read by Hydra). Hydra's launchers call it with the job's
    config; the stacked launcher adds the folds it trained (``precomputed``)."""
    return task(cfg, precomputed)
