"""Whose job is it: mlcli's, or another Hydra app's?

Hydra discovers plug-ins for every app in an environment, so mlcli's launcher and sweeper also
meet other people's Hydra apps. They treat a job as mlcli's only when Hydra's task function *is*
mlcli's job function (:func:`mlcli.sweeps.app.hydra_main` or :func:`mlcli.sweeps.app.task`,
possibly wrapped in :func:`functools.partial`), never because of the keys its config happens to
have: a foreign app cannot pass that test by accident. This module imports nothing (it looks the
app module up in ``sys.modules``: if mlcli's app was never imported, no task can be its).
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

APP_MODULE = "mlcli.sweeps.app"


def is_mlcli_job(task_function: Any) -> bool:
    """Whether ``task_function`` (what Hydra hands a launcher or sweeper) is mlcli's job."""
    app = sys.modules.get(APP_MODULE)
    if app is None or task_function is None:
        return False
    function = task_function
    while isinstance(function, functools.partial):
        function = function.func
    ours = {inspect.unwrap(getattr(app, name)) for name in ("hydra_main", "task")}
    return inspect.unwrap(function) in ours
