"""Paired sweep values: keys swept together (the i-th value of each), not as their product.

``mlcli train -m optim.lr=0.1,0.01,0.001 batch_size=256,64,32 --zip optim.lr,batch_size`` is
three jobs, ``(0.1, 256) (0.01, 64) (0.001, 32)``, where Hydra's basic sweeper would make nine.
The CLI turns ``--zip`` into ``hydra/sweeper=paired hydra.sweeper.paired=[[optim.lr,batch_size]]``
(a config can set the same two things): the paired sweeper (``hydra_plugins.mlcli_plugins``) is
Hydra's basic sweeper with :func:`paired_jobs` in place of its product, and the CLI's preflight,
``--dry-run`` and sweep plan expand a command with the same function, so every launcher runs
the jobs the plan listed. Light: Hydra's override parser only.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

PAIRED_SWEEPER = "paired"
"""The sweeper option (``hydra/sweeper=paired``) that sweeps paired keys together."""


class PairingError(ValueError):
    """Paired keys that cannot be swept together (not swept, unequal numbers of values)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def bare_key(key: str) -> str:
    """``optim.lr`` for ``+optim.lr``, ``++optim.lr`` or ``optim.lr``."""
    return key.lstrip("+~")


def check_groups(groups: Any) -> list[list[str]]:
    """The paired groups as lists of bare keys, each with two or more keys, no key twice."""
    found: list[list[str]] = []
    seen: set[str] = set()
    for group in groups or []:
        keys = [bare_key(str(k).strip()) for k in group]
        if len(keys) < 2 or any(not k for k in keys):
            raise PairingError(
                "--zip", f"{','.join(keys) or '(empty)'}: pair two or more keys, e.g. --zip a,b"
            )
        for key in keys:
            if key in seen:
                raise PairingError("--zip", f"{key} is paired twice: name each key in one --zip")
            seen.add(key)
        found.append(keys)
    return found


def paired_jobs(overrides: list[Any], groups: Any) -> list[list[str]]:
    """The jobs of parsed Hydra ``overrides`` (hydra's ``Override`` objects): each paired group
    takes its keys' values together (the i-th of each), every other key is crossed as in
    Hydra's basic sweeper. Each job lists its overrides in the command's order.

    Raises :class:`PairingError` for a paired key that is not swept or whose number of values
    differs from the others' in its group.
    """
    paired = check_groups(groups)
    values: OrderedDict[str, list[str]] = OrderedDict()
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise PairingError(
                    bare_key(key), f"{key}: only a list of values can be swept (a, b, ...)"
                )
            values[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
    by_bare = {bare_key(k): k for k in values}
    group_axes: dict[str, list[tuple[str, ...]]] = {}  # by the group's first key in the command
    grouped: set[str] = set()
    for keys in paired:
        lists = []
        for key in keys:
            typed = by_bare.get(key)
            if typed is None or len(values[typed]) < 2:
                others = ", ".join(k for k in keys if k != key)
                raise PairingError(
                    key,
                    f"paired with --zip but not swept: give it as many values as {others}, "
                    f"e.g. {key}=A,B",
                )
            lists.append(values[typed])
            grouped.add(typed)
        lengths = {k: len(v) for k, v in zip(keys, lists, strict=True)}
        if len(set(lengths.values())) > 1:
            counts = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise PairingError(keys[0], f"paired keys need the same number of values: {counts}")
        first = min((by_bare[k] for k in keys), key=list(values).index)
        group_axes[first] = list(zip(*lists, strict=True))
    # One axis per unpaired key and per group (where its first key stands), crossed in the
    # command's order as Hydra's basic sweeper crosses keys (the last one varies fastest).
    axes: list[list[tuple[str, ...]]] = []
    for key, options in values.items():
        if key in group_axes:
            axes.append(group_axes[key])
        elif key not in grouped:
            axes.append([(option,) for option in options])
    order = {key: n for n, key in enumerate(values)}
    jobs = []
    for combination in itertools.product(*axes):
        job = [override for part in combination for override in part]
        jobs.append(sorted(job, key=lambda o: order[o.partition("=")[0]]))
    return jobs


def zip_overrides(zipped: list[str]) -> list[str]:
    """The Hydra overrides for ``--zip a,b --zip c,d``: the paired sweeper and its groups."""
    groups = check_groups([z.split(",") for z in zipped])
    text = ",".join("[" + ",".join(_quote(k) for k in keys) + "]" for keys in groups)
    return [f"hydra/sweeper={PAIRED_SWEEPER}", f"hydra.sweeper.paired=[{text}]"]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
