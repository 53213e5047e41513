"""`hydra/launcher=stacked`: a grid trained as one stacked model ends as under the basic one."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch

from mlcli.schedules import cosine
from mlcli.sweeps import grid

# 2 learning rates × 2 seeds on wine (an MLP, 2 folds, 2 epochs): milliseconds a fold.
GRID = [
    "-m", "optim.lr=0.01,0.03", "seed=0,1", "dataset=wine", "model=mlp", "model.hidden=[16]",
    "epochs=2", "cv.n_splits=2", "progress=false",
]  # fmt: skip


def _jobs(root: Path) -> dict[str, dict]:
    """Per Hydra job number: its files, overrides, status and results."""
    (sweep_dir,) = (root / "sweeps").iterdir()
    jobs = {}
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        status = json.loads((job_dir / "status.json").read_text())
        jobs[job_dir.name] = {
            "files": sorted(str(p.relative_to(job_dir)) for p in job_dir.rglob("*")),
            "overrides": (job_dir / ".hydra" / "overrides.yaml").read_text(),
            "config": (job_dir / "config.yaml").read_text(),
            "status": status,
            "results": pd.read_parquet(job_dir / "results.parquet"),
        }
    return jobs


def _assert_same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    keys = ["run_key", "fold", "epoch", "split", "metric"]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    assert a["value"].to_numpy() == pytest.approx(b["value"].to_numpy(), rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_stacked_grid_equals_the_basic_launcher(cli, tmp_path):
    basic = cli("train", *GRID, "outputs_root=basic")
    assert basic.exit_code == 0, basic.output
    stacked = cli("train", *GRID, "outputs_root=stacked", "hydra/launcher=stacked")
    assert stacked.exit_code == 0, stacked.output
    assert "4 jobs: 4 COMPLETED" in stacked.output
    one, two = _jobs(tmp_path / "basic"), _jobs(tmp_path / "stacked")
    assert list(one) == list(two) == ["0", "1", "2", "3"]
    for number in one:
        a, b = one[number], two[number]
        assert a["files"] == b["files"]  # .hydra/*, config/overrides/status/results
        assert a["overrides"].replace("basic", "stacked") == b["overrides"]
        assert a["status"]["run_key"] == b["status"]["run_key"]
        assert a["status"]["state"] == b["status"]["state"] == "COMPLETED"
        assert b["status"]["fold_training"] == "stacked grid"
        assert b["status"]["stacked_grid"]["models"] == 8  # 4 jobs × 2 folds
        assert a["config"].replace("basic", "stacked") == b["config"]
        _assert_same_results(a["results"], b["results"])


@pytest.mark.slow
def test_rerun_skips_finished_jobs_and_stacks_the_missing_folds(cli, tmp_path):
    args = [*GRID, "hydra/launcher=stacked"]
    assert cli("train", *args).exit_code == 0
    jobs = _jobs(tmp_path / "outputs")
    sweep_dir = next((tmp_path / "outputs" / "sweeps").iterdir())
    for number in ("1", "2"):  # as if killed after fold 0
        job_dir = sweep_dir / number
        status = jobs[number]["status"]
        status.update(state="INTERRUPTED", folds_completed=[0])
        (job_dir / "status.json").write_text(json.dumps(status))
        frame = jobs[number]["results"]
        frame[frame["fold"] == 0].to_parquet(job_dir / "results.parquet")
    finished = {
        p: p.stat().st_mtime_ns
        for n in "03"
        for p in (sweep_dir / n / "status.json", sweep_dir / n / "results.parquet")
    }
    # The same command again: the finished jobs are skipped (nothing trained or written), the
    # two interrupted ones train their missing fold together.
    again = cli("train", *args)
    assert again.exit_code == 0, again.output
    assert "as one stacked model (2 runs)" in again.output
    assert again.output.count("skipped (already COMPLETED)") == 2
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    resumed = _jobs(tmp_path / "outputs")
    for number in ("1", "2"):
        status = resumed[number]["status"]
        assert status["state"] == "COMPLETED" and status["resumed_folds"] == [0]
        assert status["stacked_grid"]["models"] == 2  # fold 1 of each
        _assert_same_results(jobs[number]["results"], resumed[number]["results"])


def test_unstackable_grid_falls_back_to_one_job_at_a_time(cli, tmp_path):
    args = [*GRID, "model.dropout=0.2", "outputs_root=stacked", "hydra/launcher=stacked"]
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    assert "not stacked: dropout" in result.output and "4 jobs: 4 COMPLETED" in result.output
    jobs = _jobs(tmp_path / "stacked")  # the basic launcher's path: one job after another
    assert list(jobs) == ["0", "1", "2", "3"]
    for job in jobs.values():
        assert job["status"]["fold_training"] == "sequential"
        assert "stacked_grid" not in job["status"]
        assert set(job["results"]["fold"]) == {0, 1}


def test_only_shape_preserving_differences_share_a_group(compose):
    base = ["dataset=wine"]
    configs = [
        compose(*base, "optim.lr=0.01"),
        compose(*base, "optim.lr=0.1", "seed=3", "scheduler=cosine", "optim.betas=[0.8,0.99]"),
        compose(*base, "model.hidden=[8]"),  # another shape
        compose(*base, "optim=sgd"),  # another optimizer
        compose(*base, "optim=sgd", "optim.momentum=0.9", "optim.lr=0.2"),  # momentum on
        compose(*base, "optim=sgd", "optim.momentum=0.5"),
        compose(*base, "stack_folds=off"),  # opted out
        compose(*base, "epochs=3"),
    ]
    signatures = [grid.signature(cfg) for cfg in configs]
    assert signatures[6] is None
    assert grid.groups(signatures, max_jobs=32) == [[0, 1], [4, 5]]
    assert grid.groups(signatures, max_jobs=1) == []


def _member_configs(compose, optim: str, options: list[list[str]]) -> list:
    return [compose(f"optim={optim}", "scheduler=cosine", *extra) for extra in options]


@pytest.mark.parametrize(
    ("optim", "options"),
    [
        ("sgd", [["optim.lr=0.1"], ["optim.lr=0.3", "optim.weight_decay=0.01"]]),
        (
            "sgd",
            [
                ["optim.momentum=0.9", "optim.nesterov=true"],
                ["optim.momentum=0.5", "optim.nesterov=true", "optim.weight_decay=0.1"],
            ],
        ),
        ("adam", [["optim.lr=0.01"], ["optim.lr=0.1", "optim.betas=[0.5,0.9]", "optim.eps=1e-3"]]),
        ("adamw", [["optim.weight_decay=0.0"], ["optim.lr=0.02", "optim.weight_decay=0.5"]]),
        ("rmsprop", [["optim.alpha=0.9"], ["optim.lr=0.01", "optim.weight_decay=0.1"]]),
        (
            "rmsprop",
            [
                ["optim.momentum=0.9", "optim.centered=true"],
                ["optim.momentum=0.3", "optim.centered=true", "optim.alpha=0.8"],
            ],
        ),
        (
            "adagrad",
            [["optim.lr_decay=0.1"], ["optim.initial_accumulator_value=0.5", "optim.eps=1e-3"]],
        ),
    ],
)
def test_member_optimizer_matches_torch_optimizers(compose, optim, options):
    """Each member of a stack is updated as its own torch optimizer (foreach) would update it."""
    from mlcli.engine.optim import build_optimizer

    configs = _member_configs(compose, optim, options)
    total = 12
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (5,)]
    stacked = [torch.randn(len(configs), *s, generator=generator) for s in shapes]
    grads = [[torch.randn(len(configs), *s, generator=generator) for s in shapes] for _ in range(6)]
    params = [p.clone().requires_grad_(True) for p in stacked]
    member_optimizer = grid.MemberOptimizer(
        params, [grid._hyper(cfg, total, []) for cfg in configs]
    )
    singles = []
    for m, cfg in enumerate(configs):
        own = [p[m].clone().requires_grad_(True) for p in stacked]
        opt = build_optimizer(cfg.optim, own, [])
        singles.append((own, opt, cosine(opt, total_steps=total)))
    for step_grads in grads:
        assert member_optimizer.lrs() == [s[1].param_groups[0]["lr"] for s in singles]
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        member_optimizer.step()
        for m, (own, opt, schedule) in enumerate(singles):
            for p, g in zip(own, step_grads, strict=True):
                p.grad = g[m].clone()
            opt.step()
            schedule.step()
    for m, (own, _, _) in enumerate(singles):
        for p_stacked, p_own in zip(params, own, strict=True):
            torch.testing.assert_close(p_stacked[m], p_own, rtol=1e-5, atol=1e-6)


def test_readme_stacked_launcher_commands_are_valid():
    """Every docs command with the stacked launcher passes mlcli's checks and selects it."""
    from mlcli.config.compose import compose_job
    from mlcli.sweeps.preflight import check
    from tests import docs

    readme = "\n".join(path.read_text(encoding="utf-8") for path in docs.PAGES)
    commands = [
        shlex.split(line.strip(), comments=True)[2:]
        for line in readme.splitlines()
        if line.strip().startswith("mlcli train ") and "hydra/launcher=stacked" in line
    ]
    assert len(commands) >= 3
    for args in commands:
        command, problems = check(args)
        assert problems == [], (args, problems)
        assert len(command.jobs) >= 2
        cfg = compose_job(command.jobs[0][0] + ["hydra/launcher=stacked"], None, "config", True)
        assert cfg.hydra.launcher._target_.endswith("stacked_launcher.StackedLauncher")
        signatures = [grid.signature(job_cfg) for _, job_cfg in command.jobs]
        assert grid.groups(signatures, 32), args  # the example's jobs do stack together


def test_a_stacked_grid_needs_no_torch_optim_machinery():
    """A stacked group trains with :class:`grid.MemberOptimizer` and steps each run's schedule on
    a stand-in: torch.optim's optimizers, whose first use imports torch._dynamo (about a second
    of every process's start-up), are never built."""
    import subprocess
    import sys

    script = """
import sys
from mlcli import sweeps as sweep
from mlcli.sweeps import grid
from mlcli.config.compose import compose_job
jobs = []
for lr, schedule in (("0.01", "cosine"), ("0.03", "linear")):
    cfg = compose_job(["dataset=wine", "model.hidden=[16]", "epochs=2", "cv.n_splits=2",
                       "progress=false", "device=cpu", f"optim.lr={lr}",
                       f"scheduler={schedule}"], None, "config")
    jobs.append(grid.GroupJob(cfg, sweep.run_key(cfg)))
out = grid.train_group(jobs)
assert out["info"]["models"] == 4, out
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_a_stacked_grid_diverges_where_each_run_alone_diverges(compose, tmp_path):
    """A member whose loss explodes (finite, past diverge_factor × its first loss) ends at the
    epoch and step its run ends at when trained alone; its neighbour in the stack is unaffected."""
    from mlcli import runner
    from mlcli import sweeps as sweep
    from mlcli.engine.loop import DivergedError
    from mlcli.rundir import read_json, read_results

    base = ["epochs=2", "cv.n_splits=2", "progress=false", "device=cpu"]
    configs = [compose(*base, f"optim.lr={lr}") for lr in ("0.01", "1e6")]
    stacked = grid.train_group([grid.GroupJob(cfg, sweep.run_key(cfg)) for cfg in configs])
    assert stacked["info"]["models"] == 4
    states = []
    for n, cfg in enumerate(configs):
        alone = runner.run(compose(*base, f"optim.lr={cfg.optim.lr}", "stack_folds=off"),
                           tmp_path / str(n))  # fmt: skip
        states.append(alone.state)
        status = read_json(tmp_path / str(n) / "status.json")
        folds = stacked["results"][sweep.run_key(cfg)]
        if alone.state == "DIVERGED":
            first = folds[0]
            assert isinstance(first, DivergedError)
            assert {"epoch": first.epoch, "step": first.step, "message": str(first)} == {
                k: status["error"][k] for k in ("epoch", "step", "message")
            }
            assert "mean training loss became" in str(first)
            continue
        rows = read_results(tmp_path / str(n) / "results.parquet")
        mine = [r for fold in (0, 1) for r in folds[fold]]
        assert [r["value"] for r in mine] == pytest.approx([r["value"] for r in rows], rel=1e-4)
    assert states == ["COMPLETED", "DIVERGED"]
    assert [runner.run_key(c) for c in configs] == list(stacked["results"])
