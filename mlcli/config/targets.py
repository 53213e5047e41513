"""Instantiate config nodes, but only objects the allowlist admits
(:mod:`mlcli.config.allowlist`).

Hydra's ``instantiate`` calls whatever its ``_locate`` finds for a ``_target_`` string, and a
target can come from the command line or a config file copied from the internet. Here every
``_target_`` of a node (nested ones too) is resolved and judged by
:func:`mlcli.config.allowlist.admit` first, and Hydra is handed the admitted *objects*: what was
checked is what is called (Hydra never resolves a name itself, so its own blocklist is not relied
on).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from mlcli.config.allowlist import (
    Admitted,
    TargetNotAllowedError,
    TargetUnavailableError,
    admit,
)

__all__ = [
    "Admitted",
    "TargetNotAllowedError",
    "TargetUnavailableError",
    "admit",
    "check_target",
    "factory",
    "find_targets",
    "instantiate",
    "prepare",
    "root_cause",
]


def check_target(key: str, target: Any, extra: Iterable[Any] = ()) -> str:
    """Why ``target`` may be built (which allowlist entry admits it); raises
    :class:`TargetNotAllowedError` (or :class:`TargetUnavailableError`) if it may not."""
    return admit(key, target, extra).reason


def find_targets(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every (dotted key, target) pair inside a config tree (a DictConfig or a plain container)."""
    from omegaconf import DictConfig, ListConfig

    found: list[tuple[str, str]] = []
    if isinstance(node, DictConfig | dict):
        for key in node:
            child_key = f"{prefix}.{key!s}" if prefix else str(key)
            if key == "_target_":
                found.append((prefix or "<root>", str(node[key])))
            else:
                child = node._get_node(key) if isinstance(node, DictConfig) else node[key]
                found.extend(find_targets(child, child_key))
    elif isinstance(node, ListConfig | list):
        for i in range(len(node)):
            child = node._get_node(i) if isinstance(node, ListConfig) else node[i]
            found.extend(find_targets(child, f"{prefix}[{i}]"))
    return found


def resolved_targets(cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every (dotted key, target) of ``cfg`` with its interpolations resolved (a node that
    an interpolation brings in is built too); the unresolved tree if it does not resolve."""
    from omegaconf import OmegaConf

    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # a broken interpolation: validation reports it
        return find_targets(cfg, prefix)
    return find_targets(container, prefix)


def _calling(obj: Any) -> Callable[..., Any]:
    """A function that calls ``obj`` (and looks like it to ``inspect``): OmegaConf holds any
    function as a plain value, but would read a class such as ``dict`` or a dataclass as a
    config type."""

    @functools.wraps(obj, updated=())
    def call(*args: Any, **kwargs: Any) -> Any:
        return obj(*args, **kwargs)

    return call


def _admit_all(node: Any, key: str, allow: list[Any]) -> Any:
    """A resolved copy of ``node`` (plain containers) whose ``_target_``s are admitted objects."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "_target_":
                out[k] = _calling(admit(key or "<root>", v, allow).obj)
            else:
                out[k] = _admit_all(v, f"{key}.{k}" if key else str(k), allow)
        return out
    if isinstance(node, list):
        return [_admit_all(v, f"{key}[{i}]", allow) for i, v in enumerate(node)]
    return node


def prepare(node: Any, key: str, allow: Iterable[Any] = ()) -> Any:
    """``node`` resolved, with every ``_target_`` replaced by the object the allowlist admitted:
    a config Hydra's ``instantiate`` builds without resolving any name."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if container is None:
        return None
    prepared = _admit_all(container, key, list(allow))
    return OmegaConf.create(prepared, flags={"allow_objects": True})


def root_cause(error: BaseException) -> BaseException:
    """The user's own exception inside Hydra's ``InstantiationException`` wrapper."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def instantiate(node: Any, key: str, extra_allowed: Iterable[Any] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of ``node``, every ``_target_`` admitted first."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(prepare(node, key, extra_allowed), **kwargs)


def factory(node: Any, key: str, extra_allowed: Iterable[Any] = ()) -> Callable[..., Any]:
    """``node``'s target as a callable: ``f(*args, **kwargs)`` calls it with the node's settings
    and these arguments (whether or not the node says ``_partial_: true``), targets checked once.

    Hydra's ``instantiate`` copies and resolves the node at every call; here that happens once,
    so a run that builds a model and an optimizer for each of its folds pays for it once. A node
    with nested ``_target_`` nodes is instantiated anew at every call instead: its nested objects
    (a module, say) must not be shared between the things it builds.
    """
    from hydra.utils import instantiate as hydra_instantiate

    prepared = prepare(node, key, extra_allowed)
    if len(find_targets(prepared)) > 1:
        return functools.partial(hydra_instantiate, prepared, _partial_=False)
    built: Callable[..., Any] = hydra_instantiate(prepared, _partial_=True)
    return built
