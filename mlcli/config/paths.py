"""Where configs live: mlcli's packaged conf dir, the user's ``./conf`` or ``--config-dir``, the
config groups and their options, and the run settings that never change what a run computes.

Cheap to import: no Hydra, torch or pandas (the CLI uses it for ``--help`` and completion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUPS: tuple[str, ...] = (
    "dataset", "model", "optim", "scheduler", "cv", "analysis", "augment",
)  # fmt: skip
"""The config groups every experiment is made of, in the order of the defaults list."""

CONFIG_NAME = "config"

NON_RESULT_KEYS: tuple[str, ...] = (
    "outputs_root",
    "progress",
    "allow_targets",
    "stack_folds",  # stacked, parallel and sequential folds compute the same results
    "parallel_folds",
    "jobs_per_gpu",  # which GPU a job ran on changes nothing it computes
    "on_failure",
    "checkpoint_every",
    "logger",  # what is logged where never changes what is computed
    "save_models",  # model files are kept or not; the rows are the same
)
"""Top-level keys that never change what a run computes: not in the run key, not report columns."""


def packaged_conf_dir() -> Path:
    """Return the directory holding mlcli's own configs.

    An installed wheel carries them as ``mlcli/conf``; a source checkout (editable install) keeps
    them in the repository's top-level ``conf/``.
    """
    here = Path(__file__).resolve().parents[1]  # the mlcli package
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mlcli's configs were not found next to {here}")


def user_conf_dir(cwd: Path | None = None) -> Path | None:
    """Return ``./conf`` when the user has one that is not mlcli's own packaged conf dir."""
    candidate = (cwd or Path.cwd()) / "conf"
    if not candidate.is_dir():
        return None
    if candidate.resolve() == packaged_conf_dir():
        return None
    return candidate.resolve()


def search_dirs(config_dir: str | None = None) -> list[Path]:
    """Config directories in search order: ``--config-dir`` or ``./conf`` first, then mlcli's."""
    dirs: list[Path] = []
    if config_dir:
        dirs.append(Path(config_dir).resolve())
    else:
        user = user_conf_dir()
        if user is not None:
            dirs.append(user)
    dirs.append(packaged_conf_dir())
    return dirs


def group_options(config_dir: str | None = None) -> dict[str, list[str]]:
    """List each group's options by reading the config directories (no Hydra import: instant)."""
    options: dict[str, set[str]] = {group: set() for group in GROUPS}
    for directory in search_dirs(config_dir):
        for group in GROUPS:
            group_dir = directory / group
            if group_dir.is_dir():
                options[group].update(p.stem for p in group_dir.glob("*.yaml"))
    return {group: sorted(names) for group, names in options.items()}


_STORED_IN: list[Any] = []
"""The ConfigStore the schemas were stored in (storing converts each dataclass: ~20 ms)."""


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (once per store)."""
    from hydra.core.config_store import ConfigStore

    from mlcli.config.schemas import SCHEMAS

    store = ConfigStore.instance()
    if _STORED_IN and _STORED_IN[0] is store:
        return
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}".rstrip("/"), name=name, node=schema)
    _STORED_IN[:] = [store]


def enum_name(value: Any) -> str:
    """The plain name of a config enum value (``Normalize.standard`` -> ``standard``) or string."""
    return str(getattr(value, "name", value))
