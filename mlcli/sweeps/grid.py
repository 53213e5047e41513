"""Stacked grids: the jobs of a sweep that differ only in values that keep the model's shape,
trained together as one stacked model (the ``hydra/launcher=stacked`` launcher).

Jobs whose configs agree on everything but the seed, the optimizer's numbers (``lr``,
``momentum``, ``weight_decay``, ``betas``, ``eps``, ``alpha``, ``lr_decay``,
``initial_accumulator_value``) and the schedule (``scheduler.*``) build models of the same shape
on data of the same shape (:func:`signature`, :func:`groups`): their folds stack like the folds of
one run (:mod:`mlcli.engine.stacked`), every member set up as its fold is alone, with its own
seed, initial weights, batch order and data; what differs is the optimizer
(:class:`~mlcli.engine.member_optim.MemberOptimizer`, each member with its own numbers and
schedule). The results equal those of each job trained alone up to float rounding.

The launcher (``hydra_plugins/mlcli_plugins/stacked_launcher.py``, Hydra glue) starts a
:class:`StackedGroup` before a group's first job runs: it locks the group's run keys, decides
for each job as the job itself will, and trains what the jobs need in a child process
(:func:`train_group`). Each job then runs through the usual job function
(:func:`mlcli.sweeps.app.task`: run dir, status, results, ledger), handed its folds' rows as a
:class:`~mlcli.engine.strategies.Precomputed` object instead of training them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from mlcli import rundir
from mlcli.config import NON_RESULT_KEYS
from mlcli.engine.member_optim import STACKED_OPTIMIZERS, Hyper, LrHolder, MemberOptimizer
from mlcli.sweeps.index import decide
from mlcli.sweeps.locks import key_lock

if TYPE_CHECKING:
    from mlcli.data.base import Task
    from mlcli.engine.stacked import Member, StackedModel
    from mlcli.engine.strategies import Precomputed
    from mlcli.sweeps.ledger import JobSession

log = logging.getLogger("mlcli")

PER_MEMBER_OPTIM_KEYS = (
    "lr",
    "momentum",
    "weight_decay",
    "betas",
    "eps",
    "alpha",
    "lr_decay",
    "initial_accumulator_value",
)
"""Optimizer settings that may differ between the members of one stacked model."""
PER_MEMBER_KEYS = ("seed", "scheduler")
"""Run settings that may differ between the members of one stacked model."""


def signature(cfg: DictConfig) -> str | None:
    """What jobs must share to be stacked together (None: this job is never stacked).

    Everything in the job's config except the per-member values and what does not change
    results; momentum only as "on or off" (SGD and RMSprop keep no momentum buffer without it).
    """
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    if str(container.get("stack_folds", "auto")) == "off":
        return None
    optim = container.get("optim")
    if not isinstance(optim, dict) or optim.get("_target_") not in STACKED_OPTIMIZERS:
        return None
    for key in (*NON_RESULT_KEYS, *PER_MEMBER_KEYS):
        container.pop(key, None)
    momentum = optim.get("momentum")
    for key in PER_MEMBER_OPTIM_KEYS:
        optim.pop(key, None)
    if momentum is not None:
        optim["momentum"] = "on" if float(momentum) > 0 else "off"
    return json.dumps(container, sort_keys=True, default=str)


def groups(signatures: Sequence[str | None], max_jobs: int) -> list[list[int]]:
    """Indices of the jobs that train together (groups of at least two, in job order), from
    each job's :func:`signature`."""
    by_signature: dict[str, list[int]] = {}
    for i, sig in enumerate(signatures):
        if sig is not None:
            by_signature.setdefault(sig, []).append(i)
    out = []
    for members in by_signature.values():
        for start in range(0, len(members), max(1, max_jobs)):
            chunk = members[start : start + max(1, max_jobs)]
            if len(chunk) >= 2:
                out.append(chunk)
    return sorted(out)


def _hyper(cfg: DictConfig, total_steps: int, allow: list[str]) -> Hyper:
    """A member's optimizer numbers and schedule, read from its run's config."""
    from mlcli.config.targets import instantiate

    optim = cfg.optim
    betas = list(optim.get("betas") or [0.9, 0.999])
    hyper = Hyper(
        kind=STACKED_OPTIMIZERS[str(optim._target_)],
        lr=float(optim.lr),
        momentum=float(optim.get("momentum") or 0.0),
        weight_decay=float(optim.get("weight_decay") or 0.0),
        beta1=float(betas[0]),
        beta2=float(betas[1]),
        eps=float(optim.get("eps") if optim.get("eps") is not None else 1e-8),
        alpha=float(optim.get("alpha") if optim.get("alpha") is not None else 0.99),
        lr_decay=float(optim.get("lr_decay") or 0.0),
        initial_accumulator_value=float(optim.get("initial_accumulator_value") or 0.0),
        nesterov=bool(optim.get("nesterov") or False),
        centered=bool(optim.get("centered") or False),
    )
    # The run's own schedule, stepped as it would step the run's optimizer.
    stand_in = LrHolder(hyper.lr)
    hyper.schedule = instantiate(cfg.scheduler, "scheduler", allow)(
        stand_in, total_steps=total_steps
    )
    stand_in.step()  # only marks it stepped (the scheduler checks)
    lambdas = getattr(hyper.schedule, "lr_lambdas", [0])
    hyper.constant = all(getattr(f, "is_constant", False) for f in lambdas)
    return hyper


# --------------------------------------------------------------------------------------------------
# Training a group (in a child process of the launcher's).


@dataclass
class GroupJob:
    """A job of a group: its config, run key and the folds its run already has."""

    cfg: DictConfig
    key: str
    done_folds: set[int] = field(default_factory=set)


def train_group(jobs: list[GroupJob]) -> dict[str, Any]:
    """Train the pending folds of ``jobs`` as one stacked model.

    Returns ``{"results": {run_key: {fold: rows | DivergedError}}, "info": {...}}`` (picklable),
    or ``{"unstackable": reason}`` when the group cannot be stacked.
    """
    from mlcli.engine.setup import set_up_process
    from mlcli.engine.stacked import UnstackableError, common_steps_per_epoch, train_members
    from mlcli.engine.stopping import EarlyStopping
    from mlcli.tasks import selection_metric

    started = time.perf_counter()
    first = jobs[0].cfg
    set_up_process(int(first.threads))
    allow = list(first.get("allow_targets") or [])
    batch_size = int(first.batch_size)
    try:
        stack = _stack(jobs)
        if stack is None:
            return {"results": {}, "info": {}}
        members, stacked, device, task = stack
        steps_per_epoch = common_steps_per_epoch(members, batch_size, stacked.batch_norm)
    except UnstackableError as error:
        return {"unstackable": str(error)}
    total_steps = int(first.epochs) * steps_per_epoch
    by_job = {j: _hyper(job.cfg, total_steps, allow) for j, job in enumerate(jobs)}
    outcome = train_members(
        members,
        stacked,
        MemberOptimizer([stacked.flat], [by_job[m.job] for m in members]),
        task=task,
        epochs=int(first.epochs),
        batch_size=batch_size,
        clip=first.get("clip_grad_norm"),
        device=device,
        diverge_factor=first.get("diverge_factor"),
        stoppers=[
            EarlyStopping.of(jobs[m.job].cfg, selection_metric(str(jobs[m.job].cfg.metric), task))
            for m in members
        ],
    )
    results: dict[str, dict[int, Any]] = {}
    for member, result in zip(members, outcome, strict=True):
        results.setdefault(member.key, {})[member.fold] = result
    info = {
        "runs": len(jobs),
        "models": len(members),
        "train_s": round(time.perf_counter() - started, 3),
    }
    return {"results": results, "info": info}


def _stack(jobs: list[GroupJob]) -> tuple[list[Member], StackedModel, torch.device, Task] | None:
    """Every pending fold of ``jobs``, planned and set up as each run does it
    (:func:`mlcli.runner.plan_folds`, :func:`~mlcli.engine.setup.set_up_fold`), with their models
    as one stack, the device and the task (None: no fold to train); raises
    :class:`~mlcli.engine.stacked.UnstackableError` with the reason the group cannot be stacked."""
    from mlcli import runner
    from mlcli.config import enum_name
    from mlcli.engine.setup import set_up_fold
    from mlcli.engine.stacked import (
        AUTO_MAX_MACS_PER_STEP,
        Member,
        StackedModel,
        UnstackableError,
        config_reason,
    )
    from mlcli.models import model_factory

    members, models = [], []
    device = torch.device("cpu")
    task: Task = "classification"
    for j, job in enumerate(jobs):
        plan = runner.plan_folds(job.cfg, job.key, job.done_folds)
        reason = config_reason(job.cfg, plan.dataset)
        if reason is not None:
            raise UnstackableError(reason)
        # The model factory alone (no torch.optim optimizer is built: see MemberOptimizer).
        build = model_factory(job.cfg.model, plan.dataset, list(job.cfg.get("allow_targets") or []))
        device, task = plan.device, plan.dataset.task
        for fold in plan.pending:
            setup = set_up_fold(plan, fold, build)
            members.append(Member.of(setup, job.key, j))
            models.append(setup.model)
    if not members:
        return None
    stacked = StackedModel(models)
    batch_size = int(jobs[0].cfg.batch_size)
    auto = all(enum_name(job.cfg.get("stack_folds", "auto")) == "auto" for job in jobs)
    if auto and stacked.macs * batch_size > AUTO_MAX_MACS_PER_STEP:
        raise UnstackableError("compute-bound model (stack_folds=auto)")
    if batch_size == 1 and stacked.batch_norm:  # each job fails with the reason on its own
        raise UnstackableError("batch_size=1 with batch norm")
    return members, stacked, device, task


# --------------------------------------------------------------------------------------------------
# A group of a sweep's batch, as the launcher starts and ends it.


@dataclass
class SweepJob:
    """A job of the launcher's batch, as its job function will see it: its config (without
    ``hydra``), its run key and the job dir Hydra gives it."""

    cfg: DictConfig
    key: str
    job_dir: Path


class StackedGroup:
    """Jobs of a sweep trained together: their locks, and the folds trained for each run."""

    def __init__(self, indices: list[int], first_number: int = 0) -> None:
        self.indices = indices
        self.first_number = first_number  # Hydra's number of the batch's first job
        self.locks = contextlib.ExitStack()
        self.keys: dict[int, str] = {}
        self.trained: dict[str, Precomputed] = {}

    def start(self, describe: Callable[[int], SweepJob], session: JobSession) -> None:
        """Lock the group's run keys, decide for each job (``describe(i)``: job ``i`` of the
        batch), and train what the jobs need.

        Whatever goes wrong here (but an interruption) leaves the jobs to train one by one.
        """
        try:
            self._start({i: describe(i) for i in self.indices}, session)
        except Exception as error:
            log.warning(f"stacked training not possible ({error!r}); jobs train one by one")

    def _start(self, jobs: dict[int, SweepJob], session: JobSession) -> None:
        from mlcli import runner
        from mlcli.engine.strategies import Precomputed
        from mlcli.sweeps import procs

        self.keys = {i: job.key for i, job in jobs.items()}
        if session.stop_requested:
            return
        outputs_root = Path(str(jobs[self.indices[0]].cfg.outputs_root))
        for key in sorted({jobs[i].key for i in self.indices}):  # one order: no deadlock
            self.locks.enter_context(key_lock(outputs_root, key))
        group: list[GroupJob] = []
        for i in self.indices:
            job = jobs[i]
            if any(g.key == job.key for g in group):
                continue  # the same run twice: the second job finds the first one's run
            decision = decide(outputs_root, job.key, job.job_dir, session.rerun)
            if decision.action == "skip":
                continue
            continued = decision.action == "continue"  # keeps its finished folds, as its job will
            done = rundir.done_folds(decision.run_dir, job.key) if continued else set()
            group.append(GroupJob(job.cfg, job.key, done))
        if len(group) < 2:
            return
        numbers = ", ".join(f"#{self.first_number + i}" for i in self.indices)
        log.info(f"Training jobs {numbers} as one stacked model ({len(group)} runs)")
        # Imported once here: the training child and every job's inherit it (no torch.optim:
        # the stacked model has its own optimizer, and the jobs find their folds trained).
        runner.preload(optimizers=False)
        result = procs.call_in_child(lambda: train_group(group))
        if not result.returned:
            log.warning(f"stacked training failed ({result.describe()}); jobs train one by one")
            return
        value: dict[str, Any] = result.value
        if "unstackable" in value:
            log.info(f"not stacked: {value['unstackable']}; jobs train one by one")
            return
        for key, folds in value["results"].items():
            self.trained[key] = Precomputed(folds, dict(value["info"]))

    def precomputed(self, index: int) -> Precomputed | None:
        """The folds the group trained for job ``index`` of the batch (None: none)."""
        key = self.keys.get(index)
        return self.trained.get(key) if key is not None else None

    def end(self) -> None:
        """Forget the group's results and release its locks."""
        self.trained.clear()
        self.locks.close()
