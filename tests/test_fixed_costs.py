"""The per-run and per-job fixed costs of the plain path (issue 24): work that buys nothing."""

from __future__ import annotations

import traceback

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
