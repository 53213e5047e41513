"""Loggers: a run's metrics in TensorBoard event files and MLflow runs, as it trains.

``logger=[tensorboard]``, ``logger=[mlflow]`` or both (default: none). A :class:`Logger` is a
small Protocol; :class:`RunLogs` holds a run's loggers and is what the runner calls:

* ``epoch(fold, epoch, metrics)`` and ``lr(fold, steps)``: the engine's epoch-end hooks
  (:data:`~mlcli.engine.loop.EpochEnd`, :data:`~mlcli.engine.loop.LrSteps`), called live by the
  sequential and the stacked loop for the folds they train in this process;
* ``fold_done(fold, rows)``: once a fold's rows are on disk. A fold that was not logged live
  (trained by parallel workers, or by the stacked launcher before the job ran) is logged here
  from its rows, so every strategy logs the same values, and no logger state crosses a fork;
  the fold's test metrics and its final values (TensorBoard's hparams) are logged here too;
* ``finish(state, rows)``: the fold mean over every finished fold (kept ones included) per
  epoch, and the end of the run.

The implementations (:mod:`~mlcli.loggers.tensorboard`, :mod:`~mlcli.loggers.mlflow`) are
imported only when configured. A logger that fails is dropped with one warning: logging never
stops or changes a run (``logger`` is not part of the run key).
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from mlcli.config import enum_name
from mlcli.config.paths import NON_RESULT_KEYS
from mlcli.loggers.base import Logger, Metrics, RunInfo
from mlcli.rundir.results import STEP_SPLIT

log = logging.getLogger("mlcli")

__all__ = ["Logger", "Metrics", "RunInfo", "RunLogs"]


def _open(name: str, info: RunInfo) -> Logger:
    if name == "tensorboard":
        from mlcli.loggers.tensorboard import TensorBoardLogger

        return TensorBoardLogger(info)
    from mlcli.loggers.mlflow import MLflowLogger

    return MLflowLogger(info)


class RunLogs:
    """A run's loggers: the engine's hooks in, each logger's calls out (see the module)."""

    def __init__(self, loggers: dict[str, Logger]) -> None:
        self.loggers = loggers
        self.live: set[int] = set()  # folds logged as they trained, in this process

    @classmethod
    def open(
        cls,
        cfg: Any,
        run_dir: Path,
        run_key: str,
        choices: dict[str, str] | None = None,
        overrides: list[str] | None = None,
    ) -> RunLogs | None:
        """The loggers ``cfg.logger`` names, opened for the run in ``run_dir`` (None: none)."""
        names = list(dict.fromkeys(enum_name(n) for n in cfg.get("logger") or []))
        if not names:
            return None
        info = RunInfo(
            run_dir=Path(run_dir).resolve(),
            run_key=run_key,
            outputs_root=Path(str(cfg.outputs_root)).resolve(),
            hparams=chosen_options(cfg, choices or {}, overrides or []),
            params=flat_params(cfg),
        )
        logs = cls({})
        for name in names:
            try:
                logs.loggers[name] = _open(name, info)
            except Exception as error:  # a missing package, an unwritable store: the run goes on
                _warn(name, error)
        return logs

    def _each(self, method: str, *args: Any) -> None:
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, method)(*args)
            except Exception as error:
                _warn(name, error)
                self.loggers.pop(name, None)

    def _begin(self, fold: int, fresh: bool) -> None:
        if fold not in self.live:
            self.live.add(fold)
            self._each("fold_start", fold, fresh)

    def epoch(self, fold: int, epoch: int, metrics: Metrics) -> None:
        """The engine's epoch-end hook: an epoch of a fold trained in this process."""
        self._begin(fold, epoch == 1)
        self._each("epoch", fold, epoch, metrics)

    def lr(self, fold: int, steps: list[tuple[int, float]]) -> None:
        """The engine's per-step lr hook (at an epoch's end, before :meth:`epoch`)."""
        self._begin(fold, bool(steps) and steps[0][0] == 1)
        self._each("step_lr", fold, steps)

    def fold_done(self, fold: int, rows: list[dict[str, Any]]) -> None:
        """A fold's rows are written: log what was not logged live, then end the fold."""
        epochs, steps, test = by_epoch(rows)
        if fold not in self.live:  # trained elsewhere (parallel workers, the stacked launcher)
            self._begin(fold, True)
            self._each("step_lr", fold, steps)
            for epoch, metrics in sorted(epochs.items()):
                self._each("epoch", fold, epoch, metrics)
        last = max(epochs, default=0)
        if test:
            self._each("epoch", fold, last, test)
        self._each("fold_end", fold, {**epochs.get(last, {}), **test})

    def finish(self, state: str, rows: list[dict[str, Any]]) -> None:
        """The run ended as ``state``: fold means over its finished folds' ``rows`` (those of
        earlier attempts included), then close."""
        means, final = fold_means(rows)
        self._each("end_run", state, means, final)


def _warn(name: str, error: Exception) -> None:
    log.warning(
        "logger %s: %s: %s; it logs nothing more for this run (its results are unaffected)",
        name, type(error).__name__, error,
    )  # fmt: skip


def by_epoch(
    rows: list[dict[str, Any]],
) -> tuple[dict[int, Metrics], list[tuple[int, float]], Metrics]:
    """One fold's long-form rows as the loggers take them: per epoch its ``split/metric``
    values, its ``(step, lr)`` pairs, and its test metrics."""
    epochs: dict[int, Metrics] = defaultdict(dict)
    test: Metrics = {}
    steps: list[tuple[int, float]] = []
    for r in rows:
        if r["split"] == STEP_SPLIT:
            steps.append((int(r["epoch"]), float(r["value"])))
        elif r["split"] == "test":
            test[f"test/{r['metric']}"] = float(r["value"])
        elif r["split"] in ("train", "val"):
            epochs[int(r["epoch"])][f"{r['split']}/{r['metric']}"] = float(r["value"])
    return dict(epochs), sorted(steps), test


def fold_means(rows: list[dict[str, Any]]) -> tuple[dict[int, Metrics], Metrics]:
    """Per epoch, the mean over folds of each ``split/metric`` (train and val), and at the end
    the mean of each fold's final values (its last epoch's, and test)."""
    values: dict[tuple[int, str], list[float]] = defaultdict(list)
    last: dict[int, int] = {}
    for r in rows:
        if r["split"] in ("train", "val"):
            values[(int(r["epoch"]), f"{r['split']}/{r['metric']}")].append(float(r["value"]))
            last[r["fold"]] = max(last.get(r["fold"], 0), int(r["epoch"]))
    means: dict[int, Metrics] = defaultdict(dict)
    for (epoch, name), vs in sorted(values.items()):
        means[epoch][name] = sum(vs) / len(vs)
    finals: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        split = r["split"]
        at_last = split in ("train", "val") and int(r["epoch"]) == last.get(r["fold"])
        if split == "test" or at_last:
            finals[f"{split}/{r['metric']}"].append(float(r["value"]))
    return dict(means), {name: sum(vs) / len(vs) for name, vs in finals.items()}


def chosen_options(
    cfg: Any, choices: dict[str, str], overrides: list[str]
) -> dict[str, str | int | float | bool]:
    """What a run chose: each config group's option, then each override's resolved value
    (``optim.lr=0.01`` → ``{"optim.lr": 0.01}``; settings that change no result left out)."""
    from omegaconf import OmegaConf

    chosen: dict[str, str | int | float | bool] = {
        group: str(option) for group, option in choices.items() if not group.startswith("hydra")
    }
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" not in override or key.startswith("hydra") or key.split(".")[0] in NON_RESULT_KEYS:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, enum.Enum):
            chosen[key] = value.name
        elif isinstance(value, bool | int | float | str):
            chosen[key] = value
        elif value is not None:
            chosen[key] = str(
                OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            )
    return chosen


def flat_params(cfg: Any) -> dict[str, str]:
    """The resolved config without ``hydra``, flattened to ``a.b.c: value`` strings."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = str(node)

    walk(container, "")
    return flat
