"""The per-run and per-job fixed costs of the plain path (issue 24): work that buys nothing."""

from __future__ import annotations

import os
import sys
import traceback

import pytest
import torch

from mlcli.engine import seed_everything


def test_seeding_without_an_accelerator_seeds_the_cpu_generator_alone(monkeypatch):
    """``torch.manual_seed`` queues a seed call (with its Python stack) for every device module
    not initialized; without an accelerator, seeding the CPU generator is the same seed."""
    stacks = []
    real_format_stack = traceback.format_stack
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(
        traceback, "format_stack", lambda *a, **k: stacks.append(1) or real_format_stack(*a, **k)
    )
    seed_everything(1234)
    ours = torch.rand(5)
    assert stacks == []
    torch.manual_seed(1234)
    assert torch.equal(ours, torch.rand(5))
    seed_everything(-7)  # negative seeds are remapped as torch.manual_seed remaps them
    ours = torch.rand(5)
    torch.manual_seed(-7)
    assert torch.equal(ours, torch.rand(5))


@pytest.fixture
def compositions(monkeypatch):
    """Counts of the job configs composed: by Hydra's compose API (the preflight, the launch
    plan) and by Hydra's sweep machinery (``load_sweep_config``: sweeper and launcher)."""
    import hydra
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    counts = {"compose": 0, "sweep": 0}
    compose, load_sweep_config = hydra.compose, ConfigLoaderImpl.load_sweep_config

    def counted_compose(*args, **kwargs):
        counts["compose"] += 1
        return compose(*args, **kwargs)

    def counted_sweep(self, *args, **kwargs):
        counts["sweep"] += 1
        return load_sweep_config(self, *args, **kwargs)

    monkeypatch.setattr(hydra, "compose", counted_compose)
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counted_sweep)
    return counts


FAST = ["dataset=wine", "model=linear", "cv=holdout", "epochs=1", "progress=false"]


def test_a_sweep_composes_each_job_once_for_the_preflight_and_once_to_run_it(cli, compositions):
    result = cli("train", "-m", *FAST, "seed=0,1,2")
    assert result.exit_code == 0, result.output
    assert "3 jobs: 3 COMPLETED" in result.output
    # Hydra's sweeper composed every job once more before its launcher composed it to run it.
    assert compositions["sweep"] == 3
    # The preflight: the sweep's hydra settings, each job; the launch plan: the first job's.
    assert compositions["compose"] == 1 + 3 + 1


def test_a_single_run_is_composed_once_before_hydra_runs_it(cli, compositions):
    result = cli("train", *FAST)
    assert result.exit_code == 0, result.output
    assert compositions["compose"] == 1  # the preflight's (the launch plan needs no hydra node)


def _trained(
    make: object, step: str, shape: tuple[int, ...] = (5, 300)
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """30 steps of ``make(params)`` on random gradients, the lr changed by a schedule at each:
    the weights, the state and the count of ``optimizer.step()`` calls, stepped by
    ``optimizer.step`` (``step="torch"``) or by mlcli's :func:`step_function` (``"mlcli"``)."""
    from unittest import mock

    from mlcli.engine.optim import step_function

    torch.manual_seed(0)
    flat = torch.randn(*shape, requires_grad=True)
    optimizer = make([flat])  # type: ignore[operator]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    with mock.patch.object(optimizer, "step", wraps=optimizer.step) as counted:
        stepper = step_function(optimizer) if step == "mlcli" else optimizer.step
        for _ in range(30):
            flat.grad = torch.randn_like(flat)
            stepper()
            schedule.step()
    return flat.detach().clone(), dict(optimizer.state[flat]), counted.call_count


def _assert_same(ours: tuple, torchs: tuple) -> None:
    assert torch.equal(ours[0], torchs[0])
    assert ours[1].keys() == torchs[1].keys()
    for name, value in ours[1].items():
        assert torch.equal(value, torchs[1][name]), name


ADAMS = [  # (fused=True is refused together with foreach)
    (torch.optim.Adam, {}),
    (torch.optim.AdamW, {"weight_decay": 0.05}),
    (torch.optim.Adam, {"maximize": True}),
    (torch.optim.Adam, {"amsgrad": True}),
    (torch.optim.Adam, {"weight_decay": 0.01, "foreach": True}),
]


@pytest.mark.parametrize(
    ("kind", "options", "fused"),
    [(k, o, f) for k, o in ADAMS for f in (True, False) if not (f and o.get("foreach"))],
)
def test_mlclis_adam_step_is_torch_optims_bit_for_bit(kind, options, fused):
    """Folds step a torch.optim Adam/AdamW by calling what ``Adam.step`` calls (the fused kernel,
    or the body of ``Adam.step``) directly: every weight and every state tensor after 30 steps
    is the one ``optimizer.step()`` gives, and ``optimizer.step()`` never ran (not even the
    first step, which creates the state)."""

    def make(params: list) -> torch.optim.Optimizer:
        return kind(params, lr=0.01, fused=fused, **options)

    ours = _trained(make, "mlcli")
    _assert_same(ours, _trained(make, "torch"))
    assert ours[2] == 0


def test_the_adam_step_leaves_what_it_does_not_cover_to_torch_optim():
    """SGD, RMSprop, an Adam with a step hook: every step is ``optimizer.step()``
    (the hook runs at each), with torch.optim's numbers."""
    hooked: list[int] = []

    def with_hook(params: list) -> torch.optim.Optimizer:
        optimizer = torch.optim.Adam(params, lr=0.1)
        optimizer.register_step_post_hook(lambda *a: hooked.append(1))
        return optimizer

    for make in (
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        lambda params: torch.optim.RMSprop(params, lr=0.01),
        with_hook,
    ):
        ours = _trained(make, "mlcli", (2, 3))
        assert ours[2] == 30
        _assert_same(ours, _trained(make, "torch", (2, 3)))
    assert len(hooked) == 60


@pytest.mark.parametrize(("fused", "private"), [(True, "kernel"), (False, "_adam")])
def test_a_private_torch_call_that_refuses_its_arguments_leaves_the_step_to_torch(fused, private):
    """Another torch whose private fused kernel (stacked folds) or functional ``adam`` (every
    other Adam) takes other arguments: the call is tried once, and that step and every later one
    go the next way (``Adam.step``'s body, then ``optimizer.step()``), with torch.optim's
    numbers."""
    from mlcli.engine.optim import AdamStep, FusedAdamStep

    def run(refusing: bool) -> tuple[torch.Tensor, float]:
        torch.manual_seed(0)
        weight = torch.randn(4, 50, requires_grad=True)
        optimizer = torch.optim.Adam([weight], lr=0.01, fused=fused)
        stepper = (FusedAdamStep if fused else AdamStep)(optimizer)
        calls = []

        def refuse(*args: object, **kwargs: object) -> None:
            calls.append(1)
            raise TypeError(f"{private}() got an unexpected keyword argument")

        if refusing:
            setattr(stepper, private, refuse)
        for _ in range(5):
            weight.grad = torch.randn_like(weight)
            stepper.step()
        assert len(calls) == (1 if refusing else 0)
        return weight.detach().clone(), float(optimizer.state[weight]["step"])

    weights, steps = run(refusing=True)
    expected, expected_steps = run(refusing=False)
    assert steps == expected_steps == 5.0
    assert torch.equal(weights, expected)


DYNAMO_PROBE = """
import sys, tempfile
from pathlib import Path
from mlcli import runner
from mlcli.config.compose import compose_job
job = compose_job([*sys.argv[1:], "progress=false"], None, "config")
with tempfile.TemporaryDirectory() as tmp:
    assert runner.run(job, Path(tmp)).state == "COMPLETED"
print("torch._dynamo" in sys.modules)
"""


@pytest.mark.parametrize(
    ("overrides", "imported"),
    [
        (["dataset=iris", "model=linear", "epochs=1"], False),  # stacked folds, fused Adam
        (["dataset=iris", "model=mlp", "epochs=1", "stack_folds=off"], False),  # per-fold Adam
        (["dataset=iris", "model=linear", "epochs=1", "optim=adamw"], False),
        (["dataset=iris", "model=linear", "epochs=1", "optim=sgd"], True),  # SGD's own step
    ],
)
def test_a_run_with_adam_never_imports_torch_dynamo(overrides, imported):
    """``torch._dynamo`` (1.5 s of a process's start here) is imported by torch.optim only to
    mark methods not to be compiled: a run with Adam/AdamW never imports it; SGD's own step
    does (a run is a fresh process: the test suite imports dynamo elsewhere)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", DYNAMO_PROBE, *overrides],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == str(imported), out.stderr[-2000:]


def test_once_dynamo_is_imported_optimizer_methods_are_dynamo_disabled_again():
    """Before ``torch._dynamo`` is imported the optimizer's marked methods run as they are; once
    it is, each call goes through ``torch._dynamo.disable`` as torch.optim has it."""
    import subprocess
    import sys

    probe = """
import sys, torch
from unittest import mock
from mlcli.engine.optim import defer_dynamo_import, step_function
defer_dynamo_import()
weight = torch.zeros(3, requires_grad=True)
optimizer = torch.optim.Adam([weight], lr=0.1)
weight.grad = torch.ones(3)
step_function(optimizer)()
optimizer.zero_grad()
saved = optimizer.state_dict()
assert "torch._dynamo" not in sys.modules
import torch._dynamo
real = torch._dynamo.disable
with mock.patch.object(torch._dynamo, "disable", wraps=real) as disable:
    optimizer.zero_grad()
    optimizer.load_state_dict(saved)
    optimizer.zero_grad()
print(disable.call_count, [c.args[0].__name__ for c in disable.call_args_list])
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "2 ['zero_grad', 'load_state_dict']", out.stderr[-2000:]


def test_stacked_folds_compose_only_what_they_build(monkeypatch, tmp_path):
    """A stacked run composes its model, its fused optimizer and its schedule once each, and
    neither the per-model optimizer nor the analysis (sequential folds' builders)."""
    from mlcli import runner
    from mlcli.config import targets
    from mlcli.config.compose import compose_job
    from mlcli.engine import optim, setup

    composed: list[str] = []
    real_factory = targets.factory
    monkeypatch.setattr(
        targets,
        "factory",
        lambda node, key, *a: composed.append(key) or real_factory(node, key, *a),
    )
    monkeypatch.setattr(optim, "instantiate_factory", targets.factory)
    monkeypatch.setattr(setup, "factory", targets.factory)
    cfg = compose_job(
        ["epochs=1", "progress=false", "stack_folds=on", "dataset=iris", "model=mlp"],
        None,
        "config",
    )
    outcome = runner.run(cfg, tmp_path / "run")
    assert outcome.state == "COMPLETED"
    assert sorted(composed) == ["model", "optim", "scheduler"]


ALLOCATION_PROBE = """
import os, resource, sys, torch
from mlcli.engine.memory import keep_freed_memory
kept = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(40 * 2**20 // 4)  # 40 MB: above glibc's largest mmap threshold
del x
before = faults()
for _ in range(5):
    x = torch.ones(40 * 2**20 // 4)
    del x
print(kept, faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
@pytest.mark.parametrize("setting", ["", "system"])
def test_a_training_process_reuses_freed_blocks_instead_of_mapping_them_anew(setting):
    """A 40 MB block freed and allocated again five times: with mlcli's allocator setting the
    blocks reuse one stretch of the heap (its 10,240 pages fault once: 20 rounds fault no more
    than 5), with ``MLCLI_MALLOC=system`` (glibc's defaults) each one is a fresh mapping whose
    pages all fault again."""
    import subprocess

    environment = {**os.environ, "MLCLI_MALLOC": setting}
    out = subprocess.run(
        [sys.executable, "-c", ALLOCATION_PROBE], capture_output=True, text=True, check=True,
        timeout=120, env=environment,
    )  # fmt: skip
    kept, faults = out.stdout.split()
    if setting == "system":
        assert kept == "False" and int(faults) >= 5 * 10_000
    else:
        assert kept == "True" and int(faults) <= 11_000
