"""On an accelerator the loop checks for divergence once an epoch, not with a host sync per step;
the run must end exactly as with the per-step check (same epoch, step and loss in status.json).

There is no GPU here: the deferred check is switched on for the CPU to exercise it.
"""

from __future__ import annotations

import pytest
import torch

from mlcli import runner
from mlcli.engine import loop as train
from mlcli.engine import stacked
from mlcli.rundir import read_json

DIVERGING = ["dataset=diabetes", "optim=sgd", "optim.lr=1000", "epochs=3", "cv.n_splits=2"]
# A finite loss past diverge_factor × the first loss (the bound is judged once an epoch).
EXPLODING = ["optim.lr=1e6", "epochs=2", "cv.n_splits=2"]
FAST = ["progress=false", "device=cpu"]


@pytest.mark.parametrize("folds", ["stack_folds=off", "stack_folds=on"])
@pytest.mark.parametrize("args", [DIVERGING, EXPLODING], ids=["nan", "bound"])
def test_deferred_check_reports_the_step_the_per_step_check_reports(
    compose, tmp_path, monkeypatch, folds, args
):
    cfg = compose(*args, *FAST, folds)
    assert runner.run(cfg, tmp_path / "per_step").state == "DIVERGED"
    monkeypatch.setattr(train, "defers_divergence_check", lambda device: True)
    monkeypatch.setattr(stacked, "defers_divergence_check", lambda device: True)
    assert runner.run(cfg, tmp_path / "deferred").state == "DIVERGED"
    per_step = read_json(tmp_path / "per_step" / "status.json")
    deferred = read_json(tmp_path / "deferred" / "status.json")
    assert per_step["error"] == deferred["error"]
    assert per_step["error"]["step"] > 0
    assert per_step["folds_completed"] == deferred["folds_completed"]


def test_watch_keeps_the_first_non_finite_step_of_each_model():
    watch = train.DivergenceWatch(3, torch.device("cpu"))
    watch.see(torch.tensor([1.0, 2.0, 3.0]), step=0)
    assert watch.flush(epoch=1) == {}
    watch.see(torch.tensor([1.0, float("inf"), 3.0]), step=1)
    watch.see(torch.tensor([float("nan"), float("nan"), 3.0]), step=2)
    found = watch.flush(epoch=2)
    assert sorted(found) == [0, 1]
    assert (found[1].epoch, found[1].step, found[1].loss) == (2, 1, float("inf"))
    assert (found[0].epoch, found[0].step) == (2, 2)
