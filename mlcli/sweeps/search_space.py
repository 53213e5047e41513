"""Search spaces for the Optuna sweeper, in the syntax of Hydra's sweep overrides.

The same syntax as the Hydra Optuna plug-in, given on the command line or in
``hydra.sweeper.params`` (the two are merged; the command line wins):

* ``optim.lr=tag(log,interval(1e-4,1e-1))``: a float, log-uniform; ``interval(a,b)`` uniform;
* ``model.hidden.0=int(tag(log,interval(16,256)))``: an integer (``int(...)``), log-uniform;
* ``model.hidden.0=range(32,257,32)``: the values Hydra's ``range`` yields (stop excluded; with
  a float step, they become choices);
* ``optim=choice(sgd,adam)`` or ``optim=sgd,adam``: one of the values (config group options
  too).

Overrides without sweep syntax are fixed for every trial. This module stays light (no optuna):
the CLI uses it to check a search space before anything runs; :func:`distribution` builds the
Optuna distribution in the sweeper.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal


class SearchSpaceError(ValueError):
    """A search-space entry that is not valid (``key`` names it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Param:
    """One searched key: a float or int interval (``log`` or not, ``step``) or a list of choices."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        """``float in [0.0001, 0.1] (log)``, ``one of mlp, cnn``."""
        if self.kind == "categorical":
            return "one of " + ", ".join(map(str, self.choices))
        text = f"{self.kind} in [{self.low:g}, {self.high:g}]"
        if self.step is not None:
            text += f" step {self.step:g}"
        return text + (" (log)" if self.log else "")

    def corners(self) -> list[Any]:
        """The values worth composing before a study starts: both ends, every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        return [_number(self.low, self.kind), _number(self.high, self.kind)]


@dataclass
class SearchSpace:
    """Fixed overrides (every trial) and the searched parameters, in the order given."""

    fixed: list[str]
    params: dict[str, Param]

    def key(self) -> str:
        """A canonical text of the space (part of a study's identity)."""
        return json.dumps([asdict(p) for p in self.params.values()], sort_keys=True, default=str)

    def validation_jobs(self) -> list[list[str]]:
        """Override lists that together compose every corner of the space once.

        Job ``i`` takes each parameter's ``i``-th corner (its last once exhausted): the lower
        ends, the upper ends, then the remaining choices.
        """
        corners = {key: p.corners() for key, p in self.params.items()}
        n = max((len(c) for c in corners.values()), default=1)
        return [
            [*self.fixed, *(overrides(key, c[min(i, len(c) - 1)]) for key, c in corners.items())]
            for i in range(n)
        ]


def _number(value: float | None, kind: str) -> int | float:
    assert value is not None
    return int(value) if kind == "int" else float(value)


def overrides(key: str, value: Any) -> str:
    """The Hydra override that sets ``key`` to a sampled ``value``."""
    from hydra.core.override_parser.types import Transformer

    if isinstance(value, str):
        return f"{key}={Transformer.encode(value)}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    if value is None:
        return f"{key}=null"
    return f"{key}={json.dumps(value)}"


def _param(override: Any) -> Param:
    """A :class:`Param` from a parsed Hydra sweep override."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        if value.shuffle:
            raise SearchSpaceError(key, "shuffle(...) has no meaning for a sampler; drop it")
        choices = tuple(override.sweep_iterator())
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(key, f"choice(...) lists a value twice: {list(choices)}")
        return Param(key, "categorical", choices=choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SearchSpaceError(key, f"range({value.start}, {value.stop}) yields no value")
        if value.shuffle:
            raise SearchSpaceError(key, "shuffle(...) has no meaning for a sampler; drop it")
        step = value.step if value.step is not None else 1
        if all(isinstance(v, int) for v in (*values, step)):
            return Param(key, "int", low=values[0], high=values[-1], step=step)
        # Float steps do not divide exactly: the values Hydra's range yields, as choices.
        return Param(key, "categorical", choices=tuple(values))
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        unknown = set(value.tags) - {"log"}
        if unknown:
            raise SearchSpaceError(key, f"unknown tag(s) {sorted(unknown)}; only tag(log, ...)")
        log = "log" in value.tags
        if not (isinstance(low, int | float) and isinstance(high, int | float)) or low >= high:
            raise SearchSpaceError(key, f"interval({low}, {high}) needs low < high")
        if log and low <= 0:
            raise SearchSpaceError(key, f"tag(log, interval({low}, {high})) needs low > 0")
        if any(math.isinf(v) for v in (low, high)):
            raise SearchSpaceError(key, "interval bounds must be finite")
        if isinstance(low, int) and isinstance(high, int):
            return Param(key, "int", low=low, high=high, log=log)
        return Param(key, "float", low=low, high=high, log=log)
    raise SearchSpaceError(key, f"not a search space: {override.input_line}")


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": "..."}}`` (as ``hydra.sweeper.params.optim.lr=...`` makes) → dotted."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse(arguments: list[str], params: Mapping[str, Any] | None = None) -> SearchSpace:
    """The search space of ``arguments`` (the command's overrides) and ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    lines = [f"{key}={value}" for key, value in _flat(params or {}).items()]
    parser = OverridesParser.create()
    space = SearchSpace(fixed=[], params={})
    for line in [*lines, *arguments]:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException as error:
            key = line.partition("=")[0]
            raise SearchSpaceError(key, str(error).strip().splitlines()[0]) from None
        key = override.get_key_element()
        if not override.is_sweep_override():
            space.params.pop(key, None)
            space.fixed = [f for f in space.fixed if not f.startswith(f"{key}=")] + [line]
            continue
        space.fixed = [f for f in space.fixed if not f.startswith(f"{key}=")]
        space.params[key] = _param(override)
    if not space.params:
        raise SearchSpaceError(
            "hydra.sweeper.params",
            "nothing to search: give e.g. 'optim.lr=tag(log,interval(1e-4,1e-1))' on the command "
            "line or a hydra.sweeper.params entry",
        )
    return space


def distribution(param: Param) -> Any:
    """The Optuna distribution of ``param``."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if param.kind == "categorical":
        return CategoricalDistribution(param.choices)
    assert param.low is not None and param.high is not None
    if param.kind == "int":
        step = int(param.step) if param.step is not None else 1
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(float(param.low), float(param.high), log=param.log, step=param.step)


def grid(space: SearchSpace) -> dict[str, list[Any]]:
    """The grid of ``sampler=grid``: every value of each ``choice``/``range`` parameter."""
    values: dict[str, list[Any]] = {}
    for key, p in space.params.items():
        if p.kind == "categorical":
            values[key] = list(p.choices)
        elif p.kind == "int" and p.step is not None and not p.log:
            assert p.low is not None and p.high is not None
            values[key] = list(range(int(p.low), int(p.high) + 1, int(p.step)))
        else:
            raise SearchSpaceError(
                key,
                f"sampler=grid needs a finite list of values, not {p.describe()}: use "
                "choice(...) or range(...)",
            )
    return values
