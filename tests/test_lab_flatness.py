"""The loss on the line between two solutions (``mlcli.lab.flatness``): the endpoints are the two
models themselves, a point between is the model of the mixed weights, and on real run dirs the
endpoint's loss is the validation loss the run recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mlcli.lab import flatness
from mlcli.lab.flatness import Split


def _tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4))
    model.train()
    with torch.no_grad():  # running statistics of its own, so they are interpolated too
        model(torch.randn(64, 3) * (seed + 1) + seed)
    return model.eval()


def _splits() -> dict[str, Split]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(40, 3, generator=generator)
    y = torch.randint(0, 4, (40,), generator=generator)
    return {"train": Split(x[:30], y[:30]), "val": Split(x[30:], y[30:])}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_endpoints_are_each_models_own_loss_and_a_midpoint_its_mixed_weights():
    a, b, splits = _tiny(0), _tiny(1), _splits()
    alphas = (-0.5, 0.0, 0.5, 1.0, 1.5)
    losses = flatness.line_losses(_tiny(2), _state(a), _state(b), splits, "classification", alphas)
    with torch.no_grad():
        for name, split in splits.items():
            own_a = nn.functional.cross_entropy(a(split.x), split.y).item()
            own_b = nn.functional.cross_entropy(b(split.x), split.y).item()
            assert losses[name][1] == own_a  # exactly: the endpoint is model a itself
            assert losses[name][3] == own_b
            assert own_a != own_b
    # Halfway: every weight and running statistic is the mean of the two models'.
    mixed = _tiny(3)
    with torch.no_grad():
        for p, pa, pb in zip(
            mixed.state_dict().values(),
            a.state_dict().values(),
            b.state_dict().values(),
            strict=True,
        ):
            if p.is_floating_point():
                p.copy_((pa + pb) / 2)
        half = nn.functional.cross_entropy(mixed(splits["val"].x), splits["val"].y).item()
    assert losses["val"][2] == pytest.approx(half, rel=1e-6)
    # Past an endpoint: extrapolated, a - 0.5 (b - a).
    assert np.isfinite(losses["train"]).all() and losses["train"][0] != losses["train"][1]


def test_two_different_architectures_have_no_line_between_them():
    wider = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4))
    with pytest.raises(ValueError, match="shapes"):
        flatness.interpolate(_state(_tiny(0)), _state(wider), 0.5)


def test_the_rise_past_a_point_is_read_off_the_line():
    alphas = flatness.ALPHAS
    values = np.array([(a - 0.2) ** 2 for a in alphas])
    assert flatness.rise(alphas, values, 1.0, 0.5) == pytest.approx(1.3**2 - 0.8**2)
    assert flatness.rise(alphas, values, 0.0, -0.5) == pytest.approx(0.7**2 - 0.2**2)
    assert np.isnan(flatness.rise(alphas, values, 1.0, 2.0))  # not on the line


def test_on_real_runs_the_line_starts_at_the_saved_models_recorded_val_loss(cli):
    common = ["+experiment=batch_size", "epochs=2", "dataset.max_rows=200", "progress=false"]
    result = cli("train", "-m", *common, "batch_size=8,64")
    assert result.exit_code == 0, result.output
    dirs = {}
    for status in Path("outputs").rglob("status.json"):
        config = (status.parent / "config.yaml").read_text()
        batch = next(line for line in config.splitlines() if line.startswith("batch_size:"))
        dirs[int(batch.split(":")[1])] = status.parent
        assert json.loads(status.read_text())["state"] == "COMPLETED"
    losses = flatness.between_runs(dirs[8], dirs[64], fold=0)
    for batch, a in ((8, 0.0), (64, 1.0)):
        results = pd.read_parquet(dirs[batch] / "results.parquet")
        recorded = (
            results[
                (results["fold"] == 0) & (results["split"] == "val") & (results["metric"] == "loss")
            ]
            .sort_values("epoch")["value"]
            .iloc[-1]
        )
        on_line = losses["val"][flatness.ALPHAS.index(a)]
        assert on_line == pytest.approx(recorded, rel=1e-5)
    assert losses["train"].shape == (len(flatness.ALPHAS),)


def test_without_saved_models_the_batch_size_verdict_does_not_claim_flatness(tmp_path):
    from mlcli.lab import optimization
    from tests.test_lab import lab_runs

    runs = lab_runs(
        [
            {"batch_size": 8, "epochs": 2, "_duration_s": 4.0},
            {"batch_size": 1024, "epochs": 2, "_duration_s": 1.0},
        ],
        [
            {"val/acc": [0.5, 0.9], "train/loss": [1.0, 0.2]},
            {"val/acc": [0.5, 0.6], "train/loss": [1.0, 0.8]},
        ],
    )
    verdict = optimization.batch_size(runs, tmp_path)
    assert verdict.supported == "inconclusive"  # the first two parts hold, flatness unmeasured
    assert "not measured" in verdict.numbers["loss between the small- and large-batch solutions"]
    assert (tmp_path / "batch_size.png").stat().st_size > 5_000
