"""``hydra/sweeper=paired``: Hydra's basic sweeper, with some keys swept together instead of
crossed (``hydra.sweeper.paired=[[optim.lr,batch_size]]``; ``mlcli train --zip`` sets both).

The jobs come from :func:`mlcli.config.pairing.paired_jobs`, the function mlcli's preflight and
``--dry-run`` use, so the launcher runs the jobs the plan listed; batches, job numbers and the
sweep dir are the basic sweeper's. Works with every launcher.
"""

# No `from __future__ import annotations`: Hydra's plug-in scan executes this module without
# registering it in sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

from mlcli.config.pairing import paired_jobs


@dataclass
class PairedSweeperConf:
    """Settings of ``hydra/sweeper=paired``: the basic sweeper's and the paired key groups."""

    _target_: str = "hydra_plugins.mlcli_plugins.paired_sweeper.PairedSweeper"
    max_batch_size: Any = None  # as the basic sweeper's: at most this many jobs per launch
    params: Any = None  # as the basic sweeper's: sweep overrides given in a config
    paired: Any = field(default_factory=list)  # groups of keys swept together, [[a, b], ...]


ConfigStore.instance().store(
    group="hydra/sweeper", name="paired", node=PairedSweeperConf, provider="mlcli"
)


class PairedSweeper(BasicSweeper):
    """The basic sweeper whose jobs pair the values of ``paired`` key groups."""

    def __init__(
        self, max_batch_size: int | None = None, params: Any = None, paired: Any = ()
    ) -> None:
        super().__init__(max_batch_size, params)
        self.paired = [[str(k) for k in group] for group in paired or []]

    def split_arguments(  # type: ignore[override]  # Hydra's is static; this one reads `paired`
        self, overrides: list[Any], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """The jobs, in batches of at most ``max_batch_size`` (all at once by default)."""
        jobs = paired_jobs(overrides, self.paired)
        size = len(jobs) if max_batch_size in (None, -1) else int(max_batch_size or 1)
        return [jobs[i : i + size] for i in range(0, len(jobs), max(size, 1))] or [[]]
