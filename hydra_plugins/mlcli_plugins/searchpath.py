"""Put the user's config dirs (``./conf`` or ``--config-dir``) first on Hydra's search path.

Hydra adds ``--config-dir`` and ``hydra.searchpath`` *after* the application's own config dir, so
a user's ``conf/model/mlp.yaml`` could never replace mlcli's. mlcli's CLI names the user's dirs in
``MLCLI_CONFIG_DIRS`` (os.pathsep-separated); this plug-in prepends them. Other Hydra applications
in the same environment are unaffected: without the variable it does nothing.
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from mlcli.config.env import CONFIG_DIRS


class MlcliUserConfigSearchPath(SearchPathPlugin):
    """Prepend ``$MLCLI_CONFIG_DIRS`` to the config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Called by Hydra before composing any config."""
        dirs = [d for d in os.environ.get(CONFIG_DIRS, "").split(os.pathsep) if d]
        for directory in reversed(dirs):
            search_path.prepend(provider="mlcli-user", path=f"file://{directory}")
