"""Which runs form a configuration: config keys, ``--where`` filters, the keys that vary.

* A **configuration** is a set of runs with equal values of the grouping keys: ``--by`` or, by
  default, every config key whose value differs between the runs found, in the order the
  overrides name them, except seeds (runs that differ only in ``seed``/``*.seed`` are replicates),
  keys that do not change results (``outputs_root``, ``progress``, ``allow_targets``, ``device``,
  ``threads``, ``metric``) and sub-keys that the group option already determines
  (``optim.betas`` or ``optim._target_`` when they only change with ``optim``).
* Values are compared through :func:`value_key`, a canonical text, so lists, numbers, booleans
  and missing values group and sort the same way every time.
"""

from __future__ import annotations

import difflib
import json
import math
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from mlcli.config import NON_RESULT_KEYS
from mlcli.report.collect import ReportError

EXCLUDED_KEYS = (*NON_RESULT_KEYS, "device", "threads", "metric")


def is_replicate_key(key: str) -> bool:
    """Seeds make replicates of one configuration, not configurations of their own."""
    return key == "seed" or key.endswith(".seed")


def is_candidate(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return not (
        key.startswith("hydra")
        or key in EXCLUDED_KEYS
        or last == "_partial_"
        or is_replicate_key(key)
    )


def value_key(value: Any) -> str:
    """A canonical text for grouping and sorting (None and NaN are both ``null``)."""
    if isinstance(value, str):  # the common case first: option names, JSON text of lists
        return json.dumps(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return json.dumps(value, sort_keys=True, default=str)


def config_keys(configs: pd.DataFrame) -> pd.DataFrame:
    """:func:`value_key` of every config value, computed once per distinct value of a column."""
    keys = {}
    for column in configs.columns:
        values = configs[column]
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        keys[column] = np.asarray([value_key(v) for v in uniques], dtype=object)[codes]
    return pd.DataFrame(keys, index=configs.index, dtype=object)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_keys(option: str, wanted: list[str], known: list[str]) -> None:
    for key in wanted:
        if key not in known:
            raise ReportError(
                f"{option} {key}: no run has this config key.{_suggest(key, known)} "
                f"Keys that vary here: {', '.join(known[:12]) or '(none)'}"
            )


def _matches(value: Any, wanted: str) -> bool:
    """Does a config value equal the text of a ``--where`` value (numbers compared as numbers)?"""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return wanted.lower() in ("null", "none", "")
    if isinstance(value, bool):
        return wanted.lower() in (("true", "yes", "1") if value else ("false", "no", "0"))
    if isinstance(value, int | float):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(value) == wanted


def where_mask(runs: pd.DataFrame, configs: pd.DataFrame, where: tuple[str, ...]) -> pd.Series:
    """Runs that satisfy every ``key=value[,value...]`` (a value list means any of them)."""
    mask = pd.Series(True, index=runs.index)
    known = sorted(configs.columns)
    for item in where:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ReportError(
                f"--where {item}: expected KEY=VALUE (e.g. --where optim=adam, "
                "--where optim.lr=0.01,0.1, --where state=COMPLETED)"
            )
        wanted = [v.strip() for v in values.split(",")]
        if key == "state":
            column = runs["state"]
        else:
            check_keys("--where", [key], known)
            column = configs[key]
        mask &= column.map(lambda v, w=wanted: any(_matches(v, x) for x in w))
    if not mask.any():
        raise ReportError(f"--where {' '.join(where)}: no run matches")
    return mask


def auto_columns(runs: pd.DataFrame, keys: pd.DataFrame) -> list[str]:
    """The config keys that vary between the runs, in the order the user's overrides name them.

    Runs whose config was rebuilt from overrides (no readable config.yaml) lack most keys, and
    runs without a readable status.json lack the group choices, so they do not take part in
    deciding what varies (unless no run has a complete config).
    """
    order: list[str] = []
    for overrides in runs["overrides"]:
        for override in overrides:
            key = override.lstrip("+~").split("=", 1)[0]
            if key in keys.columns and key not in order:
                order.append(key)
    order += [k for k in keys.columns if k not in order]
    complete = runs["config_complete"].to_numpy(dtype=bool)
    judged = keys[complete] if complete.any() else keys
    varying = [k for k in order if is_candidate(k) and judged[k].nunique() > 1]
    chosen = []
    for key in varying:
        group = key.split(".", 1)[0]
        # optim.betas exists only for adam: the option already says it.
        if key != group and group in varying and judged.groupby(group)[key].nunique().max() <= 1:
            continue
        chosen.append(key)
    return chosen


def seed_ids(keys: pd.DataFrame) -> pd.Series:
    columns = [c for c in keys.columns if is_replicate_key(c)]
    if not columns:
        return pd.Series("", index=keys.index)
    return reduce(lambda a, b: a + "|" + b, (keys[c] for c in columns))
