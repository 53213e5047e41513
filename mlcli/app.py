"""The Hydra application: ``@hydra.main`` over mlcli's packaged configs, and the job function.

The CLI rewrites ``sys.argv`` and calls :func:`hydra_main`, so every Hydra feature (multirun,
sweepers, launchers, ``--cfg``) works unchanged. Each job runs :func:`task`, which never lets a
job's failure escape (only an interruption of the sweep itself):

1. under the lock of its run key, it decides whether to skip the job (a COMPLETED run exists),
   continue an unfinished run in place, or start a new one (:mod:`mlcli.sweep`);
2. it trains in a child process (:mod:`mlcli.procs`), so an exception, ``sys.exit`` or a SIGKILL
   ends that child only;
3. it records how the job ended (status.json in the run dir and the session's ledger, which the
   CLI reads to print the failed-jobs table) and, with ``on_failure=stop``, asks the session to
   start no more jobs.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mlcli.config import CONFIG_NAME, GROUPS, packaged_conf_dir, register_schemas
from mlcli.optuna_study import TRIAL_ENV
from mlcli.sweep import LEDGER_ENV

log = logging.getLogger("mlcli")
__all__ = ["LEDGER_ENV", "hydra_main", "task"]

register_schemas()


def _train(cfg: DictConfig, run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Body of the job's child process: run, and describe how it ended (never raises)."""
    from mlcli import results, runner
    from mlcli.build import root_cause
    from mlcli.display import ProgressReporter
    from mlcli.optuna_study import FoldReporter

    reporter = ProgressReporter(str(cfg.metric)) if cfg.progress else None
    try:
        # In an Optuna sweep: report each fold to the job's trial (its pruner may stop the run).
        fold_hook = FoldReporter.from_env()
        outcome = runner.run(cfg, run_dir, reporter=reporter, fold_hook=fold_hook, **options)
    except KeyboardInterrupt:
        return {"state": "INTERRUPTED", "error": "interrupted"}
    except BaseException as error:  # a job's failure (SystemExit included) must not end the sweep
        # Replaced, never written through: a symbolic link there is not followed.
        results.atomic_write_text(run_dir / "error.log", traceback.format_exc())
        cause = root_cause(error)
        return {"state": "FAILED", "error": f"{type(cause).__name__}: {cause}"}
    finally:
        if reporter is not None:
            reporter.stop()
    return {"state": outcome.state, "error": outcome.error, "summary": outcome.summary}


def task(cfg: DictConfig) -> str:
    """Run one job inside Hydra: returns its final state; raises only ``KeyboardInterrupt``."""
    from mlcli import display, procs, runner, security, stacked, sweep  # noqa: F401

    hydra_cfg = HydraConfig.get()
    key = sweep.run_key(cfg)
    # Once per process: every job's forked child inherits torch, sklearn & co. (and torch.optim's
    # lazy imports, unless the stacked launcher has trained this job's folds already).
    runner.preload(optimizers=key not in stacked.PRECOMPUTED)
    if os.environ.get(TRIAL_ENV):
        import optuna  # noqa: F401  (an Optuna sweep's jobs report to their trial)

    job_dir = Path(hydra_cfg.runtime.output_dir)
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if k in GROUPS}
    overrides = list(hydra_cfg.overrides.task)
    session = sweep.Session.from_env()
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
        sweep.key_lock(outputs_root, key),
    ):
        decision = sweep.decide(outputs_root, key, job_dir, rerun=session.rerun)
        run_dir = decision.run_dir
        entry["run_dir"] = str(run_dir)
        if run_dir.resolve() != job_dir.resolve() and decision.previous is not None:
            sweep.write_link(job_dir, decision, key)
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
        options = {"choices": choices, "overrides": overrides, "session": session.id}
        try:
            result = procs.call_in_child(lambda: _train(cfg, run_dir, options))
        except KeyboardInterrupt:
            session.record({**entry, "state": "INTERRUPTED", "error": "interrupted"})
            raise
        if result.returned:
            ended: dict[str, Any] = result.value
        else:  # the child died: nobody wrote its final state
            ended = {"state": "FAILED", "error": result.describe()}
            if (run_dir / "status.json").is_file():
                sweep.set_state(run_dir, "FAILED", "ProcessDied", result.describe())

    state = str(ended["state"])
    session.record({**entry, "state": state, "error": ended.get("error")})
    if state == "COMPLETED":
        _print_summary(ended["summary"], run_dir, overrides)
    elif state == "PRUNED":
        log.warning("job PRUNED: %s (run dir %s)", ended.get("error"), run_dir)
    else:
        log.error("job %s: %s (run dir %s)", state, ended.get("error"), run_dir)
        if state in ("FAILED", "DIVERGED") and _name(cfg.on_failure) == "stop":
            session.request_stop()
    return state


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _print_summary(summary: dict[str, Any], run_dir: Path, overrides: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlcli.display import summary_table

    n_folds = json.loads((run_dir / "status.json").read_text())["n_folds"]
    stats = {name: (float(m), float(s)) for name, (m, s) in summary.items()}
    console = Console()
    console.print(summary_table(stats, n_folds, escape(" ".join(overrides) or "defaults")))
    console.print(f"results: {run_dir}")


@hydra.main(version_base="1.3", config_path=str(packaged_conf_dir()), config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> str:
    """Hydra's entry point (argv is read by Hydra)."""
    return task(cfg)
