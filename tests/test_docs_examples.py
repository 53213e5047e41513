"""Every shell example of the README and the docs runs, or says why it cannot run here.

Each page's ``bash`` blocks run in order in a fresh directory (a sweep, then its report), with the
files they name made first (tests/docs.py); ``python my_app.py ...`` runs the Hydra app a page
writes (``# ./my_app.py``). Training is shrunk where only "it works" matters: one
epoch, two folds, at most two values of each swept key, two Optuna trials, small generated
sequence sets, no live display. A command
must exit 0, or the code its comment names (``# exit code 2: ...``). A block marked
``<!-- not run: why -->`` is not run; the markers are counted, and may only hide what cannot run
here (a cluster, a web server such as TensorBoard's or MLflow's, installing packages, the set-up
commands, long benchmarks).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import docs

BIN = Path(sys.executable).parent
CANNOT_RUN_HERE = re.compile(
    r"hydra/launcher=(slurm|submitit_slurm|ray\w*)\b|\bdevice=cuda\b|^pip |^make |"
    r"^optuna-dashboard |^\.venv/bin/python bench/|^tensorboard --logdir |^mlflow ui "
)
SMALL_DATA = {
    "seq_reverse": {"dataset.n_samples": "200"},
    "hmm_tagging": {"dataset.n_samples": "200"},
}
FOLDED_CV = ("kfold", "stratified", "group", "timeseries", "repeated")
PLACEHOLDER = re.compile(r"<[^<>]+>")
# Pages each of whose examples a test of its own runs, with more to check about each run.
COVERED = {
    "docs/guide/models.md": "tests/test_toolbox_docs.py",
    "docs/guide/datasets.md": "tests/test_datasets.py",
    "docs/guide/data.md": "tests/test_data_files.py",
    "docs/guide/cross-validation.md": "tests/test_data_files.py",
    "docs/guide/report.md": "tests/test_report.py",
    "docs/guide/text.md": "tests/test_text.py",
}
RUN_HERE = [p for p in docs.PAGES if str(p.relative_to(docs.ROOT)) not in COVERED]


def _set(args: list[str], key: str, value: str) -> None:
    """Set ``key=value`` among the overrides (replacing the page's value)."""
    for i, arg in enumerate(args):
        if arg.lstrip("+~").split("=", 1)[0] == key:
            args[i] = f"{arg.split('=', 1)[0]}={value}"
            return
    args.append(f"{key}={value}")


def _value(args: list[str], key: str, default: str = "") -> str:
    found = [a.split("=", 1)[1] for a in args if a.lstrip("+~").split("=", 1)[0] == key]
    return found[-1] if found else default


def shrink(args: list[str]) -> list[str]:
    """``mlcli train`` arguments made quick: what they run stays the same kind of run."""
    if args[:1] != ["train"] or {"--help", "--resume"} & set(args):
        return args  # --resume re-runs the command its sweep dir recorded (already shrunk)
    args = list(args)
    if {"-m", "--multirun"} & set(args):  # a sweep stays a sweep over each key, of 2 values
        for i, arg in enumerate(args):
            key, sep, value = arg.partition("=")
            if sep and "," in value and not set("([{") & set(value):
                args[i] = f"{key}={','.join(value.split(',')[:2])}"
    _set(args, "epochs", "1")
    _set(args, "progress", "false")
    if _value(args, "cv", "kfold") in FOLDED_CV:
        _set(args, "cv.n_splits", "2")
    if _value(args, "cv") == "repeated":
        _set(args, "cv.n_repeats", "2")
    for key, value in SMALL_DATA.get(_value(args, "dataset"), {}).items():
        _set(args, key, value)
    if _value(args, "hydra/sweeper") == "mlcli_optuna":
        _set(args, "hydra.sweeper.n_trials", "2")
    analysis = _value(args, "analysis")
    if "hessian" in analysis:
        _set(args, "analysis.hessian.max_samples", "64")
    if "landscape" in analysis:
        for key, value in (("max_samples", "64"), ("points_1d", "5"), ("points_2d", "3")):
            _set(args, f"analysis.landscape.{key}", value)
    return args


def shrink_app(args: list[str]) -> list[str]:
    """A Hydra app's Optuna sweep made quick: two trials."""
    return [*args, "hydra.sweeper.n_trials=2"] if {"-m", "--multirun"} & set(args) else args


def _latest_sweep(directory: Path) -> str:
    sweeps = sorted((directory / "outputs" / "sweeps").iterdir())
    return str(sweeps[-1].relative_to(directory))


def _placeholders(text: str, directory: Path) -> str:
    """``outputs/sweeps/<sweep dir>`` stands for the page's latest sweep."""
    return PLACEHOLDER.sub(lambda _: Path(_latest_sweep(directory)).name, text)


@pytest.mark.parametrize("path", RUN_HERE, ids=lambda p: str(p.relative_to(docs.ROOT)))
def test_every_example_of_the_page_runs(path, cli, tmp_path, monkeypatch):
    examples = [c for c in docs.commands(path) if c.not_run is None]
    if not examples:  # nothing to run on this page: it must then have no bash example at all
        assert all(c.not_run for c in docs.commands(path))
        return
    monkeypatch.setenv("HOME", str(tmp_path))  # --install-completion writes below $HOME
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    docs.write_example_files(tmp_path)
    docs.write_example_config(tmp_path)
    docs.write_example_runs(tmp_path)
    for example in examples:
        text = _placeholders(example.text, tmp_path)
        where = f"{example.page}:{example.line}: {example.text}"
        started = time.perf_counter()
        args = shlex.split(text, comments=True)
        if args[0] == "mlcli":
            result = cli(*shrink(args[1:]))
            code, output = result.exit_code, result.output
        elif args[0] == "python":  # another Hydra app (its file written from the page)
            done = subprocess.run(
                [sys.executable, *shrink_app(args[1:])],
                cwd=tmp_path, capture_output=True, text=True, check=False,
            )  # fmt: skip
            code, output = done.returncode, done.stdout + done.stderr
        elif args[0] == "eval":  # a line for the user's shell: run it in bash
            done = subprocess.run(
                ["bash", "-c", text], cwd=tmp_path, capture_output=True, text=True, check=False
            )
            code, output = done.returncode, done.stdout + done.stderr
        else:
            pytest.fail(f"{where}: cannot run this here; mark its block <!-- not run: why -->")
        assert code == example.exit_code, f"{where}\n{output[-3000:]}"
        if os.environ.get("MLCLI_DOCS_TIMES"):
            print(f"{time.perf_counter() - started:6.1f}s {where}", file=sys.__stderr__)


def test_only_what_cannot_run_here_is_marked_not_run():
    marked = [c for path in docs.PAGES for c in docs.commands(path) if c.not_run is not None]
    run = [c for path in docs.PAGES for c in docs.commands(path) if c.not_run is None]
    for command in marked:
        where = f"{command.page}:{command.line}: {command.text}"
        assert command.not_run, f"{where}: a not-run marker needs its reason"
        assert CANNOT_RUN_HERE.search(command.text), f"{where}: this can run here; unmark it"
    for command in run:
        assert not CANNOT_RUN_HERE.search(command.text), f"{command.page}:{command.line}: mark it"
    # The count, so that a marker added by mistake shows in review.
    assert len(marked) <= 33 and len(run) >= 85, (len(marked), len(run))


@pytest.mark.parametrize(("page", "test_file"), COVERED.items())
def test_a_covered_page_is_run_by_its_own_test(page, test_file):
    commands = docs.commands(docs.ROOT / page)
    assert commands and all(c.not_run is None for c in commands)
    covered = (["mlcli", "train"], ["mlcli", "report"], ["mlcli", "predict"])
    assert all(c.args[:2] in covered for c in commands)
    assert page.removeprefix("docs/") in (docs.ROOT / test_file).read_text(encoding="utf-8")


def test_shrink_keeps_the_kind_of_run():
    assert shrink(["train", "cv=holdout", "epochs=200"]) == [
        "train", "cv=holdout", "epochs=1", "progress=false"
    ]  # fmt: skip
    assert shrink(["train", "-m", "hydra/sweeper=mlcli_optuna", "hydra.sweeper.n_trials=20"]) == [
        "train", "-m", "hydra/sweeper=mlcli_optuna", "hydra.sweeper.n_trials=2", "epochs=1",
        "progress=false", "cv.n_splits=2",
    ]  # fmt: skip
    assert shrink(["train", "-m", "seed=0,1,2", "optim=choice(sgd,adam)", "a=[1,2,3]"])[:5] == [
        "train", "-m", "seed=0,1", "optim=choice(sgd,adam)", "a=[1,2,3]"
    ]  # fmt: skip
    resume = ["train", "--resume", "outputs/sweeps/x"]
    assert shrink(resume) == resume
