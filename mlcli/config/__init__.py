"""Configs before any work: where they live, their schemas, composing and validating them, what
they may build, and every ``MLCLI_*`` environment variable.

The bottom layer of mlcli: it imports nothing else of mlcli, and this package stays cheap to
import (the CLI uses it for ``--help``, completion and errors: no torch, pandas or Hydra at import
time; Hydra is imported by the functions that need it). Its modules:

* :mod:`~mlcli.config.paths`: the packaged conf dir and the user's, groups and their options;
* :mod:`~mlcli.config.schemas`: the structured-config schemas, one module per group;
* :mod:`~mlcli.config.validate`: :class:`ConfigProblem` and the checks beyond OmegaConf's;
* :mod:`~mlcli.config.compose`: a command line split and composed into jobs with Hydra's API;
* :mod:`~mlcli.config.allowlist` and :mod:`~mlcli.config.targets`: what a config may build, and
  building it; :mod:`~mlcli.config.security`: dangerous Hydra settings and writes;
* :mod:`~mlcli.config.identity`: the run key (a hash of the resolved config and of the data files
  it names); :mod:`~mlcli.config.env`: the environment variables.
"""

from __future__ import annotations

from mlcli.config.paths import (
    CONFIG_NAME,
    GROUPS,
    NON_RESULT_KEYS,
    enum_name,
    group_options,
    packaged_conf_dir,
    register_schemas,
    search_dirs,
    user_conf_dir,
)
from mlcli.config.validate import ConfigProblem, did_you_mean, validate

__all__ = [
    "CONFIG_NAME",
    "GROUPS",
    "NON_RESULT_KEYS",
    "ConfigProblem",
    "did_you_mean",
    "enum_name",
    "group_options",
    "packaged_conf_dir",
    "register_schemas",
    "search_dirs",
    "user_conf_dir",
    "validate",
]
