"""Instantiate config nodes, but only targets on the allowlist.

Hydra's ``instantiate`` will call any importable callable named by ``_target_``, and a target can
come from the command line or a config file copied from the internet. mlcli instantiates only:

* its own builders (``mlcli.*``), ``torch.optim.*`` and ``torch.optim.lr_scheduler.*``;
* modules the user names in ``allow_targets`` (config) or ``MLCLI_ALLOW_TARGETS`` (environment,
  comma-separated), e.g. ``allow_targets=[mypkg]`` for ``_target_: mypkg.MyNet``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

BUILTIN_ALLOWED: tuple[str, ...] = ("mlcli", "torch.optim", "torch.optim.lr_scheduler")
# Never allowed, whatever a config or the environment says: they are not model/data builders.
ALWAYS_DENIED: tuple[str, ...] = ("mlcli.cli", "mlcli.build", "mlcli.results")


class TargetNotAllowedError(ValueError):
    """A ``_target_`` outside the allowlist."""

    def __init__(self, key: str, target: str, allowed: list[str]) -> None:
        module = str(target).rsplit(".", 1)[0]
        super().__init__(
            f"{target!r} is not on the allowlist of what configs may build "
            f"({', '.join(allowed)}). "
            f"If you trust it, add its module: `allow_targets=[{module}]` "
            "or MLCLI_ALLOW_TARGETS."
        )
        self.key = key
        self.target = target


def allowed_prefixes(extra: Iterable[str] = ()) -> list[str]:
    """The module prefixes whose callables may be instantiated."""
    env = [p.strip() for p in os.environ.get("MLCLI_ALLOW_TARGETS", "").split(",") if p.strip()]
    return [*BUILTIN_ALLOWED, *(str(e) for e in extra), *env]


def _under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def allow_reason(target: str, extra: Iterable[str] = ()) -> str | None:
    """Why ``target`` may be built (which allowlist entry admits it), or None if it may not."""
    if any(_under(target, p) for p in ALWAYS_DENIED):
        return None
    for prefix in BUILTIN_ALLOWED:
        if _under(target, prefix):
            return f"built-in allowlist ({prefix})"
    for prefix in extra:
        if _under(target, str(prefix)):
            return f"allow_targets ({prefix})"
    for prefix in allowed_prefixes()[len(BUILTIN_ALLOWED) :]:
        if _under(target, prefix):
            return f"MLCLI_ALLOW_TARGETS ({prefix})"
    return None


def check_target(key: str, target: Any, extra: Iterable[str] = ()) -> str:
    """Return why ``target`` is allowed; raise :class:`TargetNotAllowedError` if it is not."""
    extra = [str(e) for e in extra]
    reason = allow_reason(str(target), extra)
    if reason is None:
        raise TargetNotAllowedError(key, str(target), allowed_prefixes(extra))
    return reason


def find_targets(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every (dotted key, target) pair inside a config tree."""
    from omegaconf import DictConfig, ListConfig

    found: list[tuple[str, str]] = []
    if isinstance(node, DictConfig):
        for key in node:
            child_key = f"{prefix}.{key!s}" if prefix else str(key)
            if key == "_target_":
                found.append((prefix or "<root>", str(node[key])))
            else:
                found.extend(find_targets(node._get_node(key), child_key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            found.extend(find_targets(node._get_node(i), f"{prefix}[{i}]"))
    return found


def root_cause(error: BaseException) -> BaseException:
    """The user's own exception inside Hydra's ``InstantiationException`` wrapper."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def instantiate(node: Any, key: str, extra_allowed: Iterable[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after checking every ``_target_`` in ``node``."""
    from hydra.utils import instantiate as hydra_instantiate

    for sub_key, target in find_targets(node, key):
        check_target(sub_key, target, extra_allowed)
    return hydra_instantiate(node, **kwargs)


def factory(node: Any, key: str, extra_allowed: Iterable[str] = ()) -> Callable[..., Any]:
    """``node``'s target as a callable: ``f(*args, **kwargs)`` calls it with the node's settings
    and these arguments (whether or not the node says ``_partial_: true``), targets checked once.

    Hydra's ``instantiate`` copies and resolves the node at every call; here that happens once,
    so a run that builds a model and an optimizer for each of its folds pays for it once. A node
    with nested ``_target_`` nodes is instantiated anew at every call instead: its nested objects
    (a module, say) must not be shared between the things it builds.
    """
    from hydra.utils import instantiate as hydra_instantiate

    extra_allowed = list(extra_allowed)
    targets = find_targets(node, key)
    for sub_key, target in targets:
        check_target(sub_key, target, extra_allowed)
    if len(targets) > 1:
        return functools.partial(hydra_instantiate, node, _partial_=False)
    built: Callable[..., Any] = hydra_instantiate(node, _partial_=True)
    return built
