"""``hydra/sweeper=mlcli_optuna``: search spaces, checks before a study, pruning across folds,
kill and resume, failures, results.

Studies run on wine with a linear model (milliseconds a fold) through the real Hydra sweeper
plug-in and launchers; the kill test pauses a trial at a known fold (``./PAUSE`` armed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.version import Version

from mlcli import sweeps as sweep
from mlcli.sweeps import search_space
from mlcli.sweeps.search_space import SearchSpaceError

FAST = ["dataset=wine", "model=linear", "epochs=3", "cv.n_splits=3", "progress=false"]
LR = "optim.lr=tag(log,interval(1e-3,1e-1))"


def _results_yaml(root: Path) -> dict:
    (path,) = root.rglob("optimization_results.yaml")
    return yaml.safe_load(path.read_text())


def _statuses(root: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in root.rglob("status.json")}


# --------------------------------------------------------------------------------------------------
# Search spaces.


def test_search_space_syntax_of_the_hydra_optuna_plugin():
    space = search_space.parse(
        [
            "dataset=wine",
            LR,
            "model.hidden.0=int(tag(log,interval(16,256)))",
            "optim.momentum=interval(0.5,0.99)",
            "optim=choice(sgd,adam)",
            "model=mlp,linear",
            "batch_size=range(16,80,32)",
            "optim.weight_decay=range(0,0.3,0.1)",
        ],
        {"seed": "choice(0,1)", "epochs": "5"},
    )
    assert space.fixed == ["epochs=5", "dataset=wine"]
    p = space.params
    assert (p["optim.lr"].kind, p["optim.lr"].low, p["optim.lr"].high, p["optim.lr"].log) == (
        "float", 1e-3, 0.1, True)  # fmt: skip
    assert (p["model.hidden.0"].kind, p["model.hidden.0"].log) == ("int", True)
    assert p["optim.momentum"].log is False and p["optim.momentum"].kind == "float"
    assert p["optim"].choices == ("sgd", "adam") and p["model"].choices == ("mlp", "linear")
    assert (p["batch_size"].kind, p["batch_size"].low, p["batch_size"].high) == ("int", 16, 48)
    assert p["optim.weight_decay"].kind == "categorical"  # float steps: Hydra's own values
    assert len(p["optim.weight_decay"].choices) == 3
    assert p["seed"].choices == (0, 1)
    nested = search_space.parse([], {"optim": {"lr": "interval(0.1,1)"}, "model.hidden.0": "8,16"})
    assert set(nested.params) == {"optim.lr", "model.hidden.0"}
    # the command line wins over hydra.sweeper.params
    again = search_space.parse(["seed=3"], {"seed": "choice(0,1)", "optim.lr": "interval(0.1,1)"})
    assert "seed" not in again.params and again.fixed == ["seed=3"]


def test_search_space_distributions_and_grid():
    space = search_space.parse(["optim=sgd,adam", "batch_size=range(16,65,16)"])
    assert search_space.grid(space) == {"optim": ["sgd", "adam"], "batch_size": [16, 32, 48, 64]}
    dist = search_space.distribution(search_space.parse([LR]).params["optim.lr"])
    assert (dist.low, dist.high, dist.log) == (1e-3, 0.1, True)
    with pytest.raises(SearchSpaceError, match="sampler=grid needs a finite list"):
        search_space.grid(search_space.parse([LR]))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("optim.lr=tag(log,interval(0,1))", "needs low > 0"),
        ("optim.lr=interval(1,0.1)", "needs low < high"),
        ("optim.lr=tag(foo,interval(0.1,1))", "unknown tag"),
        ("optim=choice(sgd,sgd)", "lists a value twice"),
        ("seed=shuffle(1,2)", "shuffle"),
    ],
)
def test_bad_search_space_entries_are_named(line, message):
    with pytest.raises(SearchSpaceError, match=message) as error:
        search_space.parse([line])
    assert error.value.key == line.partition("=")[0]


def test_validation_jobs_compose_every_corner_once():
    space = search_space.parse(["dataset=wine", LR, "optim=choice(sgd,adam,rmsprop)"])
    jobs = space.validation_jobs()
    assert jobs == [
        ["dataset=wine", "optim.lr=0.001", "optim=sgd"],
        ["dataset=wine", "optim.lr=0.1", "optim=adam"],
        ["dataset=wine", "optim.lr=0.1", "optim=rmsprop"],
    ]


# --------------------------------------------------------------------------------------------------
# Checks before anything runs: exit 2, one screen, nothing written.


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["optim.lrr=tag(log,interval(1e-3,1e-1))"], "optim.lrr"),
        (["optim.lr=interval(-1.0,0.1)"], "optim.lr"),  # the lower corner fails the schema
        (["optim=choice(sgd,adamm)"], "optim"),
        (["hydra.sweeper.sampler=tpee", LR], "hydra.sweeper.sampler"),
        (["hydra.sweeper.sampler=grid", LR], "optim.lr"),
        (["hydra.sweeper.n_trials=0", LR], "hydra.sweeper.n_trials"),
        (["epochs=3"], "hydra.sweeper.params"),  # nothing to search
        (["metric=val/acc2", LR], "Did you mean 'val/acc'"),  # the objective's metric
        (["hydra.sweeper.max_failures=0", LR], "hydra.sweeper.max_failures"),
        (["hydra.sweeper.direction=[maximize,minimize]", LR], "hydra.sweeper.direction"),
        (["hydra.sweeper.direction=upward", LR], "hydra.sweeper.direction"),
        (["hydra.sweeper.metrics=[val/acc,val/loss]", "hydra.sweeper.pruner=median", LR], "prunes"),
    ],
)
def test_bad_studies_fail_before_anything_runs(cli, tmp_path, args, named):
    result = cli("train", "-m", "hydra/sweeper=mlcli_optuna", *FAST, *args)
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()


def test_dry_run_shows_the_search_space(cli, tmp_path):
    result = cli("train", "-m", "hydra/sweeper=mlcli_optuna", *FAST, LR, "optim=choice(sgd,adam)",
                 "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "float in [0.001, 0.1] (log)" in result.output and "one of sgd, adam" in result.output
    assert "sampler=tpe" in result.output
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------------------------------
# Studies.


def test_study_runs_trials_as_jobs_and_writes_its_results(cli, tmp_path):
    args = ["-m", "hydra/sweeper=mlcli_optuna", *FAST, LR, "hydra.sweeper.n_trials=3",
            "hydra.sweeper.seed=0"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert found["n_trials"] == {"COMPLETE": 3}
    assert (found["metric"], found["direction"]) == ("val/acc", "maximize")
    values = {t["number"]: t["value"] for t in found["trials"]}
    assert found["best_value"] == max(values.values())
    assert found["best_params"] == found["trials"][found["best_trial"]]["params"]
    assert f"best trial {found['best_trial']}: val/acc" in result.output
    # job dir N = trial N, each an ordinary mlcli run whose fold mean is the trial's value
    for trial in found["trials"]:
        run_dir = Path(trial["run_dir"])
        assert run_dir.name == str(trial["number"])
        status = json.loads((run_dir / "status.json").read_text())
        assert status["trial"] == {"study": "mlcli", "number": trial["number"]}
        rows = pd.read_parquet(run_dir / "results.parquet")
        final = rows[(rows.split == "val") & (rows.metric == "acc")]
        final = final[final.epoch == final.epoch.max()]
        assert final["value"].mean() == pytest.approx(trial["value"], rel=1e-6)
        assert f"optim.lr={trial['params']['optim.lr']!r}" in status["overrides"]

    # the identical command finds the finished study: nothing runs again
    again = cli("train", *args)
    assert again.exit_code == 0, again.output
    assert "3 trial(s) finished" in again.output and "trial 3" not in again.output
    # a larger n_trials extends the same study (job numbers go on)
    more = cli("train", *args[:-2], "hydra.sweeper.n_trials=4", "hydra.sweeper.seed=0")
    assert more.exit_code == 0, more.output
    assert _results_yaml(tmp_path / "outputs")["n_trials"] == {"COMPLETE": 4}
    assert len(list((tmp_path / "outputs" / "sweeps").iterdir())) == 1


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def test_a_multi_objective_study_of_runs_writes_its_pareto_front(cli, tmp_path):
    args = ["-m", "hydra/sweeper=mlcli_optuna", *FAST, LR, "hydra.sweeper.n_trials=4",
            "hydra.sweeper.seed=0", "hydra.sweeper.metrics=[val/acc,val/loss]"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert found["direction"] == ["maximize", "minimize"]  # auto, per metric
    assert found["metrics"] == ["val/acc", "val/loss"] and found["n_trials"] == {"COMPLETE": 4}
    for trial in found["trials"]:  # each value: the run's fold mean at the final epoch
        rows = pd.read_parquet(Path(trial["run_dir"]) / "results.parquet")
        val = rows[rows.split == "val"]
        final = val[val.epoch == val.epoch.max()]
        means = [final[final.metric == m]["value"].mean() for m in ("acc", "loss")]
        assert trial["values"] == pytest.approx(means, rel=1e-6)
    # the front: every trial that no other dominates (acc up, loss down)
    signed = {t["number"]: [-t["values"][0], t["values"][1]] for t in found["trials"]}
    front = {n for n, v in signed.items() if not any(_dominates(w, v) for w in signed.values())}
    assert {t["number"] for t in found["best_trials"]} == front
    assert f"Pareto front (val/acc, val/loss): {len(front)} trial(s)" in result.output


def test_sqlite_storage_and_params_from_hydra_sweeper_params(cli, tmp_path):
    args = ["-m", "hydra/sweeper=mlcli_optuna", *FAST,
            "+hydra.sweeper.params.optim.lr='choice(0.01,0.1)'",
            "hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler=grid"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert sorted(t["params"]["optim.lr"] for t in found["trials"]) == [0.01, 0.1]
    assert (tmp_path / "study.db").is_file()
    assert not list((tmp_path / "outputs").rglob("optuna.journal"))


def test_loss_metric_is_minimized_and_failed_trials_do_not_stop_the_study(cli, tmp_path):
    # lr 50 diverges (FAIL with its reason), the other grid points complete
    args = ["-m", "hydra/sweeper=mlcli_optuna", "dataset=diabetes", "model=linear", "cv=holdout",
            "epochs=3", "progress=false", "metric=val/loss", "optim=sgd",
            "optim.lr=choice(50,0.01,0.05)", "hydra.sweeper.sampler=grid",
            "hydra.sweeper.seed=0"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert found["direction"] == "minimize" and found["n_trials"] == {"COMPLETE": 2, "FAIL": 1}
    (failed,) = [t for t in found["trials"] if t["state"] == "FAIL"]
    assert failed["params"] == {"optim.lr": 50} and "Diverged" in failed["reason"]
    complete = [t for t in found["trials"] if t["state"] == "COMPLETE"]
    assert found["best_value"] == min(t["value"] for t in complete)
    assert "trial(s) failed; the study went on" in result.output


@pytest.mark.parametrize(("max_failures", "n_jobs", "stops_after"), [(None, 1, 4), (3, 2, 3)])
def test_a_study_whose_trials_all_fail_stops_after_exactly_max_failures(
    cli, tmp_path, max_failures, n_jobs, stops_after
):
    # every lr diverges; default max_failures = n_trials; n_jobs=2 asks 2, then only 1 more
    args = ["-m", "hydra/sweeper=mlcli_optuna", "dataset=diabetes", "model=linear", "cv=holdout",
            "epochs=3", "progress=false", "optim=sgd", "optim.lr=choice(50,100)",
            "hydra.sweeper.n_trials=4", f"hydra.sweeper.n_jobs={n_jobs}", "hydra.sweeper.seed=0",
            "hydra.sweeper.sampler=random"]  # fmt: skip
    if max_failures is not None:
        args.append(f"hydra.sweeper.max_failures={max_failures}")
    result = cli("train", *args)
    assert result.exit_code == 1, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert found["n_trials"] == {"FAIL": stops_after} and found["best_params"] is None
    assert len(list((tmp_path / "outputs" / "sweeps").glob("*/[0-9]*"))) == stops_after
    output = " ".join(result.output.split())  # the panel wraps lines
    limit = max_failures or 4
    assert output.count("the study stopped") == 1
    assert f"the study stopped: {stops_after} trial(s) failed (max_failures={limit})" in output
    assert "went on" not in output


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "gp", "cmaes"])
def test_every_sampler_runs_a_study(cli, tmp_path, sampler):
    args = ["-m", "hydra/sweeper=mlcli_optuna", *FAST, LR,
            "optim.weight_decay=interval(0.0,0.01)", f"hydra.sweeper.sampler={sampler}",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_startup_trials=2",
            "hydra.sweeper.seed=0"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert found["n_trials"] == {"COMPLETE": 3}
    points = {tuple(sorted(t["params"].items())) for t in found["trials"]}
    assert len(points) == 3  # three different proposals, inside the space
    for trial in found["trials"]:
        assert 1e-3 <= trial["params"]["optim.lr"] <= 0.1
        assert 0.0 <= trial["params"]["optim.weight_decay"] <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruner_stops_hopeless_trials_after_their_first_folds(cli, tmp_path, pruner):
    # most of the log-interval is far too small a learning rate for 10 epochs of Adam
    args = ["-m", "hydra/sweeper=mlcli_optuna", "dataset=wine", "model=linear", "epochs=10",
            "progress=false", "cv.n_splits=4", "optim.lr=tag(log,interval(1e-6,1.0))",
            "hydra.sweeper.n_trials=8", "hydra.sweeper.seed=1", f"hydra.sweeper.pruner={pruner}",
            "hydra.sweeper.pruner_startup_trials=2"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    pruned = [t for t in found["trials"] if t["state"] == "PRUNED"]
    assert pruned and found["n_trials"]["COMPLETE"] + len(pruned) == 8
    assert all(f"pruned by the {pruner} pruner after" in t["reason"] for t in pruned)
    for trial in pruned:
        status = json.loads((Path(trial["run_dir"]) / "status.json").read_text())
        assert status["state"] == "PRUNED" and status["fold_training"] == "sequential"
        done = status["folds_completed"]
        assert 1 <= len(done) < 4 and trial["folds_reported"] == len(done)
        rows = pd.read_parquet(Path(trial["run_dir"]) / "results.parquet")
        assert sorted(rows["fold"].unique()) == done  # the finished folds are kept
    assert any(t["params"]["optim.lr"] < 1e-4 for t in pruned)  # a hopeless one among them
    # the report ranks every trial with its state
    report = cli("report", "outputs", "--format", "json")
    assert report.exit_code == 0, report.output
    rows = json.loads(report.output)["configurations"]
    assert {r["status"] for r in rows} >= {"COMPLETED", "PRUNED"}


@pytest.mark.slow
def test_parallel_trials_through_the_joblib_launcher(cli, tmp_path):
    args = ["-m", "hydra/sweeper=mlcli_optuna", "hydra/launcher=joblib", *FAST, "cv.n_splits=4",
            "optim.lr=tag(log,interval(1e-7,1e-1))", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2", "hydra.sweeper.seed=1", "hydra.sweeper.pruner=median",
            "hydra.sweeper.pruner_startup_trials=1"]  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    found = _results_yaml(tmp_path / "outputs")
    assert sum(found["n_trials"].values()) == 4
    # the workers reported their folds to the study's journal from their own processes
    assert all(t["folds_reported"] >= 1 for t in found["trials"])
    dirs = sorted(int(d.name) for d in next((tmp_path / "outputs" / "sweeps").iterdir()).iterdir()
                  if d.is_dir() and d.name.isdigit())  # fmt: skip
    assert dirs == [0, 1, 2, 3]


PAUSING_MODEL = '''
import json, math, time
from pathlib import Path
from torch import nn

_folds_built = 0


def pausing(in_shape, out_features, pause_after=4):
    """With ./PAUSE: in the second fold of a job, once `pause_after` runs completed, touch
    ./PAUSED and sleep for good (the test kills the sweep then)."""
    global _folds_built
    _folds_built += 1
    done = sum(json.loads(p.read_text()).get("state") == "COMPLETED"
               for p in Path("outputs").rglob("status.json"))
    if Path("PAUSE").exists() and _folds_built >= 2 and done >= pause_after:
        Path("PAUSED").touch()
        time.sleep(600)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), out_features))
'''


@pytest.mark.slow
def test_killed_study_resumes_to_exactly_n_trials(cli, tmp_path, monkeypatch):
    (tmp_path / "study_models.py").write_text(PAUSING_MODEL)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "pausing.yaml").write_text(
        "_target_: study_models.pausing\npause_after: 4\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["-m", "hydra/sweeper=mlcli_optuna", *FAST, "model=pausing", "stack_folds=off",
            "allow_targets=[study_models]", LR, "hydra.sweeper.n_trials=6",
            "hydra.sweeper.seed=0"]  # fmt: skip
    (tmp_path / "PAUSE").touch()
    with open(tmp_path / "first-run.log", "wb") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "mlcli", "train", *args], cwd=tmp_path, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (tmp_path / "PAUSED").exists():
        assert first.poll() is None, (tmp_path / "first-run.log").read_text()
        assert time.monotonic() < deadline, "the study did not reach its 5th trial"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the whole process group, like a crashed machine
    first.wait()
    (tmp_path / "PAUSE").unlink()

    before = _statuses(tmp_path / "outputs")
    assert sorted(s["state"] for s in before.values()) == ["COMPLETED"] * 4 + ["RUNNING"]
    result = cli("train", *args)  # the identical command
    assert result.exit_code == 0, result.output
    assert "trial 4 was left RUNNING by a stopped sweep: marked FAIL" in result.output

    found = _results_yaml(tmp_path / "outputs")
    assert found["n_trials"] == {"COMPLETE": 6, "FAIL": 1}
    stale = found["trials"][4]
    assert stale["state"] == "FAIL" and "stopped while this trial ran" in stale["reason"]
    # its parameters were tried again first, continuing its run (fold 0 kept, not recomputed)
    retry = found["trials"][5]
    assert retry["params"] == stale["params"] and retry["state"] == "COMPLETE"
    after = _statuses(tmp_path / "outputs")
    (killed,) = [d for d, s in before.items() if s["state"] == "RUNNING"]
    assert killed.name == "4" and after[killed]["resumed_folds"] == [0]
    assert Path(retry["run_dir"]) == killed
    # no job dir overwritten: the finished runs are untouched, job numbers went on
    for run_dir, status in before.items():
        if status["state"] == "COMPLETED":
            assert after[run_dir] == status
    sweep_dir = killed.parent
    assert sorted(int(d.name) for d in sweep_dir.iterdir() if d.name.isdigit()) == list(range(7))
    link = json.loads((sweep_dir / "5" / sweep.LINK_FILE).read_text())
    assert link["run_dir"] == str(killed.resolve())
    assert len({s["run_key"] for s in after.values()}) == 6  # no parameter set computed twice


def test_optuna_extra_resolves_without_conflicts():
    """`pip install -e .[optuna]` (which `make` runs) leaves a consistent environment."""
    assert Version(metadata.version("optuna")) >= Version("4")
    assert Version(metadata.version("sqlalchemy")) >= Version("2")
    check = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    requires = metadata.requires("mlcli") or []
    assert any(r.startswith("optuna>=4") and "extra == 'optuna'" in r for r in requires)
