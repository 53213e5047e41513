"""The Hydra application: ``@hydra.main`` over mlcli's packaged configs, and the job function.

The CLI rewrites ``sys.argv`` and calls :func:`hydra_main`, so every Hydra feature (multirun,
sweepers, launchers, ``--cfg``) works unchanged. Each job runs :func:`task`, which never lets an
exception escape: a failing job is recorded (status.json in its run dir and a line in the
session ledger the CLI reads afterwards) and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
import uuid
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mlcli.config import CONFIG_NAME, GROUPS, packaged_conf_dir, register_schemas

log = logging.getLogger("mlcli")
LEDGER_ENV = "MLCLI_LEDGER_DIR"

register_schemas()


def _ledger(entry: dict[str, Any]) -> None:
    """Record how a job ended for the CLI's end-of-sweep summary (one file per job)."""
    directory = os.environ.get(LEDGER_ENV)
    if not directory:
        return
    from mlcli.results import write_json

    write_json(Path(directory) / f"{uuid.uuid4().hex}.json", entry)


def task(cfg: DictConfig) -> str:
    """Run one job inside Hydra: returns its final state, never raises (but Ctrl-C)."""
    from mlcli import runner
    from mlcli.build import root_cause
    from mlcli.display import ProgressReporter, summary_table

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if k in GROUPS}
    overrides = list(hydra_cfg.overrides.task)
    entry: dict[str, Any] = {"run_dir": str(run_dir), "overrides": overrides}
    reporter = ProgressReporter(str(cfg.metric)) if cfg.progress else None
    try:
        outcome = runner.run(cfg, run_dir, choices=choices, overrides=overrides, reporter=reporter)
    except KeyboardInterrupt:
        _ledger({**entry, "state": "INTERRUPTED", "error": "interrupted"})
        raise
    except BaseException as error:  # a job's failure must not end the sweep
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        cause = root_cause(error)
        message = f"{type(cause).__name__}: {cause}"
        log.error("job failed: %s (traceback in %s)", message, run_dir / "error.log")
        _ledger({**entry, "state": "FAILED", "error": message})
        return "FAILED"
    finally:
        if reporter is not None:
            reporter.stop()
    _ledger({**entry, "state": outcome.state, "error": outcome.error, "run_key": outcome.run_key})
    if outcome.state == "COMPLETED":
        from rich.console import Console
        from rich.markup import escape

        n_folds = json.loads((run_dir / "status.json").read_text())["n_folds"]
        console = reporter.console if reporter is not None else Console()
        title = escape(" ".join(overrides) or "defaults")
        console.print(summary_table(outcome.summary, n_folds, title))
        console.print(f"results: {run_dir}")
    elif outcome.state != "COMPLETED":
        log.warning("run %s: %s", outcome.state, outcome.error)
    return outcome.state


@hydra.main(version_base="1.3", config_path=str(packaged_conf_dir()), config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> str:
    """Hydra's entry point (argv is read by Hydra)."""
    return task(cfg)
