"""Shared fixtures: every test runs in its own empty directory and composes the real configs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig
from typer.testing import CliRunner

from mlcli.cli import app
from mlcli.config.compose import compose_job

# Like every mlcli run (threads=1): on a loaded 2-core machine more threads only contend.
torch.set_num_threads(1)

# Small enough for CI: two folds, two epochs, no live display.
TINY = ["epochs=2", "cv.n_splits=2", "progress=false"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name in (
        "MLCLI_ALLOW_TARGETS",
        "MLCLI_ADMITTED_TARGETS",
        "MLCLI_TRUST_OVERRIDES",
        "MLCLI_LEDGER_DIR",
        "HYDRA_FULL_ERROR",
    ):
        monkeypatch.delenv(name, raising=False)
    # An in-process CLI run lets Hydra attach log handlers to the CliRunner's (then closed)
    # stdout; drop them afterwards so later tests' log lines do not hit a closed stream.
    handlers = list(logging.root.handlers)
    yield
    for handler in logging.root.handlers[:]:
        if handler not in handlers:
            logging.root.removeHandler(handler)
            handler.close()


@pytest.fixture
def compose() -> Callable[..., DictConfig]:
    """Compose mlcli's real config with overrides, as `mlcli train` would."""

    def _compose(*overrides: str, config_dir: str | None = None) -> DictConfig:
        return compose_job(list(overrides), config_dir, "config")

    return _compose


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke the CLI in-process; returns click's Result (exit_code, output)."""
    runner = CliRunner()

    def _invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return _invoke


def completed_results(root: Path) -> dict[str, pd.DataFrame]:
    """The results of every COMPLETED run under ``root``, by run key (launchers compared)."""
    frames = {}
    for status in root.rglob("status.json"):
        document = json.loads(status.read_text())
        if document["state"] == "COMPLETED":
            frame = pd.read_parquet(status.parent / "results.parquet")
            frames[document["run_key"]] = frame.reset_index(drop=True)
    return frames
