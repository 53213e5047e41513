"""`mlcli --version` and what `mlcli train --help` lists: run settings, launchers, sweepers."""

from __future__ import annotations

from importlib.metadata import version

from mlcli.config import catalog


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"mlcli {version('mlcli')}\n"


def test_train_help_lists_the_run_settings_with_their_defaults(cli):
    result = cli("train", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    settings = catalog.run_settings()
    assert {"epochs", "seed", "batch_size", "metric", "stack_folds"} <= {s.name for s in settings}
    for setting in settings:
        assert f"{setting.name} [{catalog.value_text(setting.default)}]" in text, setting.name
    assert "epochs [20] passes over each fold's training rows (int, ≥ 1)" in text
    assert "device [auto] auto | cpu | cuda" in text


def test_train_help_lists_the_installed_launchers_and_sweepers(cli):
    text = " ".join(cli("train", "--help").output.split())
    launchers = catalog.hydra_options("hydra/launcher")
    assert {"basic", "joblib", "stacked", "submitit_local", "slurm"} <= set(launchers)
    assert f"hydra/launcher {' | '.join(launchers)}" in text
    assert "hydra/sweeper basic | optuna" in text
