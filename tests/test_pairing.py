"""Paired sweep values (``--zip``): keys swept together, listed by --dry-run, run by every
launcher, resumed like any sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlcli import sweeps as sweep
from mlcli.config.pairing import PairingError, paired_jobs, zip_overrides
from mlcli.sweeps.preflight import check

FAST = ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"]
PAIRS = ["-m", "optim.lr=0.1,0.01,0.001", "batch_size=256,64,32"]
# A linear model that, while ./PAUSE exists and a run is COMPLETED, touches ./PAUSED and sleeps.
PAUSING = """
import json, math, time
from pathlib import Path
from torch import nn


def pausing(in_shape, out_features):
    done = sum(json.loads(p.read_text()).get("state") == "COMPLETED"
               for p in Path("outputs").rglob("status.json") if "pausing" in p.read_text())
    if Path("PAUSE").exists() and done >= 1:
        Path("PAUSED").touch()
        time.sleep(600)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), out_features))
"""


def _parse(*overrides: str) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def test_paired_keys_take_their_values_together_and_cross_the_others():
    jobs = paired_jobs(_parse("a=1,2,3", "seed=0,1", "b=x,y,z", "c=5"), [["a", "b"]])
    assert jobs == [
        ["a=1", "seed=0", "b=x", "c=5"], ["a=1", "seed=1", "b=x", "c=5"],
        ["a=2", "seed=0", "b=y", "c=5"], ["a=2", "seed=1", "b=y", "c=5"],
        ["a=3", "seed=0", "b=z", "c=5"], ["a=3", "seed=1", "b=z", "c=5"],
    ]  # fmt: skip
    # `+key` and ranges count as the key; two groups pair independently
    jobs = paired_jobs(_parse("+a=range(2)", "b=p,q", "c=1,2", "d=3,4"), [["a", "b"], ["c", "d"]])
    assert jobs == [["+a=0", "b=p", "c=1", "d=3"], ["+a=0", "b=p", "c=2", "d=4"],
                    ["+a=1", "b=q", "c=1", "d=3"], ["+a=1", "b=q", "c=2", "d=4"]]  # fmt: skip


@pytest.mark.parametrize(
    "overrides, groups, key, message",
    [
        (["a=1,2", "b=1,2,3"], [["a", "b"]], "a", "a has 2, b has 3"),
        (["a=1,2", "b=1"], [["a", "b"]], "b", "not swept"),
        (["a=1,2"], [["a", "b"]], "b", "not swept"),
        (["a=1,2"], [["a"]], "--zip", "two or more keys"),
        (["a=1,2", "b=1,2", "c=1,2"], [["a", "b"], ["b", "c"]], "--zip", "b is paired twice"),
    ],
)
def test_pairs_that_cannot_be_made_are_named(overrides, groups, key, message):
    with pytest.raises(PairingError, match=message) as raised:
        paired_jobs(_parse(*overrides), groups)
    assert raised.value.key == key


def test_three_pairs_are_three_jobs_in_the_plan_and_in_the_dry_run(cli, tmp_path):
    command, problems = check([*PAIRS, *FAST, *zip_overrides(["optim.lr,batch_size"])])
    assert problems == []
    pairs = [(float(cfg.optim.lr), int(cfg.batch_size)) for _, cfg in command.jobs]
    assert pairs == [(0.1, 256), (0.01, 64), (0.001, 32)]

    result = cli("train", *PAIRS, *FAST, "--zip", "optim.lr,batch_size", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 job(s), nothing run" in result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    for (_, cfg), (lr, size) in zip(command.jobs, [("0.1", 256), ("0.01", 64), ("0.001", 32)],
                                    strict=True):  # fmt: skip
        assert any(
            f"optim.lr={lr}" in line and f"batch_size={size}" in line and sweep.run_key(cfg) in line
            for line in lines
        ), result.output
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["optim.lr=0.1,0.01", "batch_size=256,64,32"], "optim.lr has 2, batch_size has 3"),
        (["optim.lr=0.1,0.01", "batch_size=256"], "not swept"),
        (["hydra/sweeper=basic", "optim.lr=0.1,0.01", "batch_size=2,4"], "sweeps itself"),
    ],
)
def test_a_bad_zip_is_one_screen_exit_2_and_writes_nothing(cli, tmp_path, args, message):
    result = cli("train", "-m", *args, *FAST, "--zip", "optim.lr,batch_size")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()
    no_multirun = cli("train", "optim.lr=0.1", *FAST, "--zip", "optim.lr,batch_size")
    assert no_multirun.exit_code == 2 and "add -m" in no_multirun.output


def test_resume_with_zip_or_fail_fast_records_their_overrides_once(cli, tmp_path):
    pairs = ["-m", "optim.lr=0.1,0.01", "batch_size=256,64"]
    first = cli("train", *pairs, *FAST, "--zip", "optim.lr,batch_size", "--fail-fast")
    assert first.exit_code == 0, first.output
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    recorded = json.loads((sweep_dir / "sweep.json").read_text())["args"]
    added = [*zip_overrides(["optim.lr,batch_size"]), "on_failure=stop"]
    assert all(recorded.count(o) == 1 for o in added), recorded
    # --resume replays the recorded command: --zip and --fail-fast again add nothing twice
    again = cli("train", "--resume", str(sweep_dir), "--zip", "optim.lr,batch_size", "--fail-fast")
    assert again.exit_code == 0, again.output
    assert "2 jobs: 2 SKIPPED" in again.output
    assert json.loads((sweep_dir / "sweep.json").read_text())["args"] == recorded
    assert len(list((tmp_path / "outputs" / "sweeps").iterdir())) == 1


def _statuses(root: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in root.rglob("status.json")}


@pytest.mark.long
def test_a_paired_sweep_runs_under_joblib_and_a_killed_one_resumes(cli, tmp_path, monkeypatch):
    args = [*PAIRS, *FAST, "stack_folds=off", "--zip", "optim.lr,batch_size"]
    result = cli("train", *args, "hydra/launcher=joblib")
    assert result.exit_code == 0, result.output
    runs = {
        (s["overrides"][0], s["overrides"][1]) for s in _statuses(tmp_path / "outputs").values()
    }
    assert runs == {("optim.lr=0.1", "batch_size=256"), ("optim.lr=0.01", "batch_size=64"),
                    ("optim.lr=0.001", "batch_size=32")}  # fmt: skip

    # A second paired sweep, killed (SIGKILL of its whole process group) while its second job
    # is paused for good: the identical command continues it in its sweep dir, runs the rest.
    (tmp_path / "pausing.py").write_text(PAUSING)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "pausing.yaml").write_text("_target_: pausing.pausing\n")
    other = [*args, "model=pausing", "allow_targets=[pausing]"]
    (tmp_path / "PAUSE").touch()
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "mlcli", "train", *other],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (tmp_path / "PAUSED").exists():
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (tmp_path / "PAUSE").unlink()
    done = [d for d, s in _statuses(tmp_path / "outputs").items()
            if "model=pausing" in s["overrides"] and s["state"] == "COMPLETED"]  # fmt: skip
    assert len(done) == 1
    again = cli("train", *other)
    assert again.exit_code == 0, again.output
    assert "continuing the sweep in" in again.output
    assert f"3 jobs: {3 - len(done)} COMPLETED, {len(done)} SKIPPED" in again.output
    paused = [s for s in _statuses(tmp_path / "outputs").values()
              if "model=pausing" in s["overrides"]]  # fmt: skip
    assert len(paused) == 3 and {s["state"] for s in paused} == {"COMPLETED"}
    assert len(list((tmp_path / "outputs" / "sweeps").iterdir())) == 2  # one per sweep
