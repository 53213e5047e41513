"""MLflow runs: one parent run per job, its folds as nested child runs.

The tracking store is ``sqlite:///<outputs_root>/mlflow.db`` unless the user's environment sets
``MLFLOW_TRACKING_URI`` (a config cannot: ``hydra.job.env_set`` is refused); MLflow's file store
is deprecated. Runs go to the experiment ``mlcli``. A job's artifacts are its run dir:
MLflow places a run's artifacts under its experiment's location
(``<outputs_root>/mlflow-artifacts/<experiment>/<run id>/artifacts``, a path it picks and the
client cannot set), so that path is made a symbolic link to the run dir, and MLflow's UI and
client list and download the run dir's own files (``config.yaml``, ``results.parquet``,
``status.json``, ``models/``) without a copy. With a tracking server whose artifacts are not
local files, the job's ``config.yaml`` is uploaded instead. Each run is tagged with its run
dir, ``mlcli.run_dir``.

* parent run: params = the resolved config's values (flattened, cut to MLflow's limits), tags
  ``mlcli.run_key``, ``mlcli.run_dir`` and the group choices; metrics = the fold means per epoch
  (``val/acc`` ..., step = epoch) and, at the end, the final fold means; status FINISHED, or
  FAILED (failed, diverged) / KILLED (interrupted);
* child run per fold (``mlflow.parentRunId``, ``mlcli.fold``): metrics per epoch (step =
  epoch), ``train_step/lr`` per optimizer step (step = step), test metrics at its last epoch.

A job continued in its run dir logs into the parent run it made before (found by its run dir);
a fold trained again from its first epoch replaces its child run.

Every call goes through an :class:`mlflow.MlflowClient` made for this run in this process: no
client state is shared across a fork (jobs are forked children; parallel folds are logged by
the job's own process). Needs the ``mlflow`` package (``pip install 'mlcli[mlflow]'``).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from mlcli.loggers.base import WRITE_SECONDS, Metrics, RunInfo

EXPERIMENT = "mlcli"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlflow-artifacts"
BATCH = 100  # params per log_batch call (MLflow's limit: 100 params, 1000 metrics)
MAX_KEY, MAX_VALUE = 250, 6000
END_STATUS = {"COMPLETED": "FINISHED", "PRUNED": "FINISHED", "INTERRUPTED": "KILLED"}


def tracking_uri(info: RunInfo) -> str:
    """``MLFLOW_TRACKING_URI`` from the user's environment, else the SQLite file under the
    outputs root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{info.outputs_root / DB_FILE}"


class MLflowLogger:
    """A job's parent run and its folds' child runs (see the module)."""

    def __init__(self, info: RunInfo) -> None:
        # MLflow 3 sends usage telemetry to its makers over the network unless told not to: a
        # job does not phone home for the user (who may allow it: MLFLOW_DISABLE_TELEMETRY=false).
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        self.info = info
        info.outputs_root.mkdir(parents=True, exist_ok=True)
        # Jobs of a parallel sweep start together: one at a time creates the store's tables and
        # the experiment (two at once on a fresh SQLite file would both create them).
        with open(info.outputs_root / f"{DB_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.client = MlflowClient(tracking_uri=tracking_uri(info))
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            if experiment is not None:
                self.experiment_id = experiment.experiment_id
            else:
                location = (info.outputs_root / ARTIFACTS_DIR).as_uri()
                self.experiment_id = self.client.create_experiment(EXPERIMENT, location)
            self.parent = self._find_parent() or self._new_parent()
        self.children: dict[int, str] = {}
        self.pending: dict[str, list[tuple[str, float, int]]] = {}  # run id -> metrics to log
        self.written = time.monotonic()

    def _search(self, filters: str) -> list[Any]:
        return list(self.client.search_runs([self.experiment_id], filter_string=filters))

    def _find_parent(self) -> str | None:
        run_dir = str(self.info.run_dir).replace("'", "")
        if run_dir != str(self.info.run_dir):
            return None  # not expressible in a filter: a new parent run
        found = self._search(f"tags.`mlcli.run_dir` = '{run_dir}' and tags.`mlcli.fold` = ''")
        found = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
        return found[0].info.run_id if found else None

    def _new_parent(self) -> str:
        from mlflow.entities import Param

        tags = {
            "mlflow.runName": self.info.run_dir.name,
            "mlcli.run_key": self.info.run_key,
            "mlcli.run_dir": str(self.info.run_dir),
            "mlcli.fold": "",
            **{f"mlcli.choice.{k}": str(v) for k, v in self.info.hparams.items()},
        }
        run = self.client.create_run(self.experiment_id, tags=tags)
        run_id: str = run.info.run_id
        params = [Param(k[:MAX_KEY], v[:MAX_VALUE]) for k, v in self.info.params.items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[i : i + BATCH])
        self._link_artifacts(run.info.artifact_uri)
        return run_id

    def _link_artifacts(self, artifact_uri: str) -> None:
        """The run's local artifact folder made a symbolic link to the run dir (nothing is
        done for a remote artifact store, or when the folder exists already)."""
        path = _local_path(artifact_uri)
        if path is None or path.exists() or path.is_symlink():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(self.info.run_dir.resolve(), target_is_directory=True)

    def fold_start(self, fold: int, fresh: bool) -> None:
        """The fold's child run: the one made before (continued from a checkpoint), or a new
        one (``fresh``: an earlier child of this fold is deleted)."""
        earlier = self._search(
            f"tags.`mlflow.parentRunId` = '{self.parent}' and tags.`mlcli.fold` = '{fold}'"
        )
        if earlier and not fresh:
            self.children[fold] = earlier[0].info.run_id
            return
        for run in earlier:
            self.client.delete_run(run.info.run_id)
        tags = {
            "mlflow.parentRunId": self.parent,
            "mlflow.runName": f"fold{fold}",
            "mlcli.fold": str(fold),
            "mlcli.run_key": self.info.run_key,
            "mlcli.run_dir": str(self.info.run_dir),
        }
        self.children[fold] = self.client.create_run(self.experiment_id, tags=tags).info.run_id

    def _child(self, fold: int) -> str:
        if fold not in self.children:
            self.fold_start(fold, False)
        return self.children[fold]

    def _metrics(self, run_id: str, values: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v, step in values]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def _add(self, fold: int, values: list[tuple[str, float, int]]) -> None:
        """Kept, and logged every :data:`WRITE_SECONDS` and at the fold's end (a store write
        per epoch and fold would cost more than the epoch)."""
        self.pending.setdefault(self._child(fold), []).extend(values)
        if time.monotonic() - self.written > WRITE_SECONDS:
            self._write()

    def _write(self) -> None:
        for run_id, values in self.pending.items():
            self._metrics(run_id, values)
        self.pending.clear()
        self.written = time.monotonic()

    def epoch(self, fold: int, epoch: int, metrics: Metrics) -> None:
        """The epoch's metrics in the fold's child run, step = epoch."""
        self._add(fold, [(k, v, epoch) for k, v in metrics.items()])

    def step_lr(self, fold: int, steps: list[tuple[int, float]]) -> None:
        """``train_step/lr`` in the fold's child run, step = optimizer step."""
        self._add(fold, [("train_step/lr", lr, step) for step, lr in steps])

    def fold_end(self, fold: int, final: Metrics) -> None:
        """The fold's metrics logged, its child run ended (FINISHED)."""
        self._write()
        self.client.set_terminated(self._child(fold), "FINISHED")

    def end_run(self, state: str, means: dict[int, Metrics], final: Metrics) -> None:
        """The fold means per epoch and the final ones in the parent run; unfinished child runs
        and the parent end with the run's state."""
        self._write()  # a fold that did not finish (diverged, interrupted)
        values = [(k, v, epoch) for epoch, ms in sorted(means.items()) for k, v in ms.items()]
        last = max(means, default=0)
        values += [(k, v, last) for k, v in final.items() if k.startswith("test/")]
        self._metrics(self.parent, values)
        status = END_STATUS.get(state, "FAILED")
        for run_id in self.children.values():
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)
        config = self.info.run_dir / "config.yaml"  # on disk by now: the run's writes are done
        linked = _local_path(self.client.get_run(self.parent).info.artifact_uri)
        if config.is_file() and not (linked is not None and linked.is_symlink()):
            self.client.log_artifact(self.parent, str(config))  # a remote artifact store
        self.client.set_tag(self.parent, "mlcli.state", state)
        self.client.set_terminated(self.parent, status)


def _local_path(artifact_uri: str) -> Path | None:
    """The folder of a ``file:`` artifact URI; None for any other store."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parsed.path))
