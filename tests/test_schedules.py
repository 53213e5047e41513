"""Each schedule's lr at chosen steps equals its closed form; warmup hands over as documented."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mlcli import schedules

BASE = 0.1


def _lrs(builder, steps: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    scheduler = builder(optimizer, total_steps=steps, **options)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_constant_is_constant():
    assert _lrs(schedules.constant, 20) == pytest.approx([BASE] * 20)


def test_cosine_closed_form():
    total = 100
    lrs = _lrs(schedules.cosine, total, min_lr_ratio=0.1)
    for t in (0, 25, 50, 99):
        expected = BASE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / total)))
        assert lrs[t] == pytest.approx(expected)


def test_linear_warmup_rises_to_base_without_a_jump():
    warmup, total = 10, 100
    lrs = _lrs(schedules.cosine, total, warmup="linear", warmup_steps=warmup)
    assert lrs[:warmup] == pytest.approx([BASE * (t + 1) / warmup for t in range(warmup)])
    assert lrs[warmup] == pytest.approx(BASE)  # the decay starts at the base lr
    steps = [abs(b - a) for a, b in itertools.pairwise(lrs)]
    assert max(steps) <= BASE / warmup + 1e-12  # no step bigger than one warmup increment


def test_constant_warmup_holds_then_jumps_exactly_to_base():
    lrs = _lrs(schedules.constant, 30, warmup="constant", warmup_steps=5, warmup_lr=0.01)
    assert lrs[:5] == pytest.approx([0.01] * 5)
    assert lrs[5:] == pytest.approx([BASE] * 25)
