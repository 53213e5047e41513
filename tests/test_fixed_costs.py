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
