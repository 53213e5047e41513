# Copyright (c) Facebook, Inc. and its affiliates. All Rights Reserved (the suites, MIT licence)
"""Hydra's own launcher test suites for ``hydra/launcher=stacked``, used as Hydra's joblib
launcher plug-in uses them (plugins/hydra_joblib_launcher/tests/test_joblib_launcher.py).

The suites ship in hydra-core (``hydra.test_utils.launcher_common_tests``); their apps are
foreign Hydra apps, which the stacked launcher must launch exactly as Hydra's basic launcher does.
"""

from __future__ import annotations

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from pytest import mark

from hydra_plugins.mlcli_plugins.stacked_launcher import StackedLauncher


def test_discovery() -> None:
    """Hydra finds the launcher among the installed plug-ins."""
    assert StackedLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@mark.parametrize("launcher_name, overrides", [("stacked", [])])
class TestStackedLauncher(LauncherTestSuite):
    """Hydra's launcher suite (sweeps of 1 and 2 jobs, strict configs, custom resolvers ...)."""


@mark.parametrize("launcher_name, overrides", [("stacked", ["hydra.sweeper.max_batch_size=2"])])
class TestStackedLauncherInBatches(BatchedSweeperTestSuite):
    """Hydra's basic sweeper hands the launcher its jobs in batches: numbering goes on."""


@mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {},
            [
                "-m",
                "hydra/job_logging=hydra_debug",
                "hydra/job_logging=disabled",
                "hydra/launcher=stacked",
            ],
        )
    ],
)
class TestStackedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real apps in subprocesses (task names, work dirs, paths)."""
