# Copyright (c) Facebook, Inc. and its affiliates. All Rights Reserved (the suites, MIT licence)
"""Hydra's own launcher test suites for ``hydra/launcher=stacked``, used as Hydra's joblib
launcher plug-in uses them (plugins/hydra_joblib_launcher/tests/test_joblib_launcher.py).

The suites ship in hydra-core (``hydra.test_utils.launcher_common_tests``); their apps are
foreign Hydra apps, which the stacked launcher must launch exactly as Hydra's basic launcher does.
"""

from __future__ import annotations

from collections.abc import Iterator

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from hydra.version import VersionBase, __compat_version__
from pytest import fixture, mark

from hydra_plugins.mlcli_plugins.stacked_launcher import StackedLauncher


@fixture(autouse=True)
def _the_suites_version_base() -> Iterator[None]:
    """The suites' apps give no ``version_base``: Hydra's 1.1 defaults (a job runs in its dir),
    as in the fresh process Hydra runs them in. An mlcli command run earlier in this process set
    1.3 (``@hydra.main(version_base="1.3")``); the suites get the default, the rest gets it back."""
    previous = VersionBase.instance().getbase()
    VersionBase.instance().setbase(__compat_version__)
    yield
    VersionBase.instance().version_base = previous


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
