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


def test_linear_decays_to_zero_closed_form():
    total = 50
    lrs = _lrs(schedules.linear, total)
    for t in (0, 10, 25, 49):
        assert lrs[t] == pytest.approx(BASE * (1 - t / total))
    ratio = _lrs(schedules.linear, total, min_lr_ratio=0.2)
    assert ratio[25] == pytest.approx(BASE * (0.2 + 0.8 * 0.5))


def test_step_closed_form():
    lrs = _lrs(schedules.step, 100, step_size=30, gamma=0.1)
    for t in (0, 29, 30, 59, 60, 99):
        assert lrs[t] == pytest.approx(BASE * 0.1 ** (t // 30))


def test_exponential_closed_form():
    lrs = _lrs(schedules.exponential, 100, gamma=0.97)
    for t in (0, 1, 50, 99):
        assert lrs[t] == pytest.approx(BASE * 0.97**t)


def test_inverse_sqrt_closed_form_without_warmup():
    lrs = _lrs(schedules.inverse_sqrt, 100, timescale=16)
    for t in (0, 16, 48, 99):
        assert lrs[t] == pytest.approx(BASE * math.sqrt(16 / (16 + t)))
    assert _lrs(schedules.inverse_sqrt, 10)[3] == pytest.approx(BASE / 2)  # timescale 1


def test_inverse_sqrt_with_linear_warmup_is_the_transformer_schedule():
    # Vaswani et al.: lrate ∝ min(n^-0.5, n·W^-1.5), n = step + 1; normalized to peak at BASE.
    warmup, total = 20, 200
    lrs = _lrs(schedules.inverse_sqrt, total, warmup="linear", warmup_steps=warmup)
    for s in range(total):
        n = s + 1
        paper = min(n**-0.5, n * warmup**-1.5) / warmup**-0.5
        if s < warmup:
            assert lrs[s] == pytest.approx(BASE * paper)
        else:  # one step later than the paper, so the decay starts exactly at the base lr
            assert lrs[s] == pytest.approx(BASE * math.sqrt(warmup / s))
    assert max(lrs) == pytest.approx(BASE)


DECAYS = {
    "constant": {},
    "cosine": {},
    "linear": {},
    "step": {"step_size": 7, "gamma": 0.5},
    "exponential": {"gamma": 0.99},
    "inverse_sqrt": {"timescale": 10},
}


@pytest.mark.parametrize("name", list(DECAYS))
def test_every_decay_hands_over_from_linear_warmup_without_a_jump(name):
    warmup, total = 10, 60
    builder = getattr(schedules, name)
    lrs = _lrs(builder, total, warmup="linear", warmup_steps=warmup, **DECAYS[name])
    assert lrs[:warmup] == pytest.approx([BASE * (t + 1) / warmup for t in range(warmup)])
    assert lrs[warmup - 1] == pytest.approx(BASE)  # the warmup ends at the base lr ...
    assert lrs[warmup] == pytest.approx(BASE)  # ... and the decay starts there
    # after warmup the lr follows the decay alone, shifted by the warmup
    plain = _lrs(builder, total - warmup, **DECAYS[name])
    assert lrs[warmup:] == pytest.approx(plain)


@pytest.mark.parametrize("name", list(DECAYS))
def test_every_decay_hands_over_from_constant_warmup_with_the_documented_jump(name):
    warmup, total, warmup_lr = 5, 40, 0.003
    builder = getattr(schedules, name)
    lrs = _lrs(builder, total, warmup="constant", warmup_steps=warmup, warmup_lr=warmup_lr,
               **DECAYS[name])  # fmt: skip
    assert lrs[:warmup] == pytest.approx([warmup_lr] * warmup)
    assert lrs[warmup] - lrs[warmup - 1] == pytest.approx(BASE - warmup_lr)  # exactly this jump
    assert lrs[warmup:] == pytest.approx(_lrs(builder, total - warmup, **DECAYS[name]))


def test_every_scheduler_option_has_a_builder_and_a_test():
    from mlcli.config import packaged_conf_dir

    options = {p.stem for p in (packaged_conf_dir() / "scheduler").glob("*.yaml")}
    assert options == set(DECAYS)
