"""The per-run and per-job fixed costs of the plain path (issue 24): work that buys nothing."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"weight_decay": 0.01, "betas": (0.8, 0.95), "eps": 1e-6}),
        (torch.optim.AdamW, {"weight_decay": 0.05}),
        (torch.optim.Adam, {"maximize": True}),
    ],
)
def test_the_direct_fused_adam_step_is_torch_optims_bit_for_bit(kind, options):
    """Stacked folds step their fused Adam/AdamW by calling its kernel directly: every weight
    and every state tensor after 30 steps (a schedule changing the lr at each) is the one
    ``optimizer.step()`` gives, and after the first step (which creates the state) the direct
    call is what ran."""
    from unittest import mock

    from mlcli.engine.optim import FusedAdamStep

    def run(direct: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        torch.manual_seed(0)
        flat = torch.randn(5, 300, requires_grad=True)
        optimizer = kind([flat], lr=0.01, fused=True, **options)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
        stepper = FusedAdamStep(optimizer)
        with mock.patch.object(optimizer, "step", wraps=optimizer.step) as step:
            for _ in range(30):
                flat.grad = torch.randn_like(flat)
                stepper.step() if direct else optimizer.step()
                schedule.step()
        return flat.detach().clone(), dict(optimizer.state[flat]), step.call_count

    weights, state, calls = run(direct=True)
    expected_weights, expected_state, _ = run(direct=False)
    assert calls == 1  # the first step only: the state is torch.optim's own
    assert torch.equal(weights, expected_weights)
    assert state.keys() == expected_state.keys()
    for name, value in state.items():
        assert torch.equal(value, expected_state[name]), name


def test_the_direct_step_leaves_what_it_does_not_cover_to_torch_optim():
    """Not fused, amsgrad, SGD: every step is ``optimizer.step()``."""
    from unittest import mock

    from mlcli.engine.optim import FusedAdamStep

    flat = torch.zeros(2, 3, requires_grad=True)
    for optimizer in (
        torch.optim.Adam([flat], lr=0.1),
        torch.optim.Adam([flat], lr=0.1, fused=True, amsgrad=True),
        torch.optim.SGD([flat], lr=0.1, fused=True),
    ):
        stepper = FusedAdamStep(optimizer)
        with mock.patch.object(optimizer, "step", wraps=optimizer.step) as step:
            for _ in range(3):
                flat.grad = torch.ones_like(flat)
                stepper.step()
        assert step.call_count == 3


def test_a_kernel_that_refuses_its_arguments_leaves_the_step_to_torch_optim():
    """Another torch whose private fused kernel takes other arguments: the step is torch.optim's
    own, counted once, and later steps never try the kernel again."""
    from mlcli.engine.optim import FusedAdamStep

    def run(refusing: bool) -> tuple[torch.Tensor, float]:
        torch.manual_seed(0)
        flat = torch.randn(4, 50, requires_grad=True)
        optimizer = torch.optim.Adam([flat], lr=0.01, fused=True)
        stepper = FusedAdamStep(optimizer)
        calls = []

        def refuse(*args: object, **kwargs: object) -> None:
            calls.append(1)
            raise TypeError("_fused_adam_() got an unexpected keyword argument")

        if refusing:
            stepper.kernel = refuse
        for _ in range(5):
            flat.grad = torch.randn_like(flat)
            stepper.step()
        assert len(calls) == (1 if refusing else 0)
        return flat.detach().clone(), float(optimizer.state[flat]["step"])

    weights, steps = run(refusing=True)
    expected, expected_steps = run(refusing=False)
    assert steps == expected_steps == 5.0
    assert torch.equal(weights, expected)


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
