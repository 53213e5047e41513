"""mlcli training speed against a hand-written PyTorch loop, measured in the same run.

The task (issue 9): digits, MLP 64-128-10, batch 64, 20 epochs, 5-fold CV, Adam (lr 1e-2), one
torch thread. The reference is the loop a practitioner writes over pre-built tensors: per fold a
fresh model and optimizer, a seeded permutation per epoch, forward / loss / backward / step, the
validation accuracy after every epoch. mlcli does the same work through its own code paths:

* ``fit (1 fold)``: mlcli's ``fit`` on one fold (tensors built, as in the reference);
* ``run, sequential``: ``runner.run`` end to end, all folds (data, folds, fit, results written);
* ``run, stacked``: the same with ``stack_folds=on`` (the folds trained as one stacked model);
* ``cnn run``: the compute-bound CNN (``model=cnn``), its folds one after another on one core,
  against ``parallel_folds=2`` (two fold processes, one thread each: both cores).

Each code tree is measured in a worker process of its own (``PYTHONPATH`` = the tree): this
checkout, and with ``--baseline DIR`` another one (e.g. ``git worktree add /tmp/base main``), so
that a change's effect on the ratios is measured in one run, on one machine, under one load.
Each case is measured ``--repeats`` times after one warm-up, the cases (and the trees) interleaved
round-robin so that load from other processes hits them alike; the medians, each tree's ratios to
its own reference (median to median, min-to-min: fastest repeat to fastest repeat, and the CPU
seconds of the worker process, median to median: on a shared machine the steadiest of the
three), the load average before and after and, with a baseline, the difference of the ratios
are printed.

    .venv/bin/python bench/speed.py [--repeats 5] [--epochs 20] [--only WORDS] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
CASES = (
    "reference, 1 fold",
    "mlcli fit, 1 fold",
    "reference, 5 folds",
    "mlcli run, sequential",
    "mlcli run, stacked",
    "cnn run, 1 core",
    "cnn run, parallel_folds=2",
)
TARGETS = {
    "mlcli fit, 1 fold": 1.05,
    "mlcli run, sequential": 1.05,
    "mlcli run, stacked": 0.30,
    "cnn run, parallel_folds=2": 0.65,
}
MARK = "@@speed "


# --------------------------------------------------------------------------------------------------
# The worker: one code tree, its cases run on request.


def _mlcli_api() -> dict[str, Any]:
    """The functions the cases call, wherever this code tree keeps them."""
    from mlcli import runner
    from mlcli.cv import hold_out_test, make_folds

    try:  # mlcli's packages (config/, engine/, rundir/)
        from mlcli.config.compose import compose_job
        from mlcli.config.targets import instantiate
        from mlcli.data.preprocess import fold_tensors
        from mlcli.engine.loop import batches_per_epoch, fit
        from mlcli.engine.optim import build_optimizer
        from mlcli.rundir import read_results
    except ImportError:  # the flat layout before them
        from mlcli.build import instantiate  # type: ignore[no-redef]
        from mlcli.optimizers import build_optimizer  # type: ignore[no-redef]
        from mlcli.preflight import compose_job  # type: ignore[no-redef]
        from mlcli.preprocess import fold_tensors  # type: ignore[no-redef]
        from mlcli.results import read_results  # type: ignore[no-redef]
        from mlcli.train import batches_per_epoch, fit  # type: ignore[no-redef]
    return dict(
        runner=runner, hold_out_test=hold_out_test, make_folds=make_folds,
        compose_job=compose_job, instantiate=instantiate, fold_tensors=fold_tensors,
        batches_per_epoch=batches_per_epoch, fit=fit, build_optimizer=build_optimizer,
        read_results=read_results,
    )  # fmt: skip


def reference_fold(data: Any, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """The hand-written loop: returns the final validation accuracy."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    n_in, n_out = data.x_train[0].numel(), int(data.y_train.max()) + 1
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, n_out))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    acc = 0.0
    for _ in range(epochs):
        permutation = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = permutation[start : start + batch_size]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            acc = (model(data.x_val).argmax(-1) == data.y_val).float().mean().item()
    return acc


def _cases(epochs: int) -> dict[str, Callable[[], list[float] | None]]:
    """Each case: a function that runs it once (and returns its validation accuracies)."""
    import torch

    api = _mlcli_api()
    runner, instantiate = api["runner"], api["instantiate"]
    base = [f"epochs={epochs}", "progress=false", "device=cpu", "threads=1"]
    cfg = api["compose_job"](base, None, "config")
    dataset = runner.build_dataset(cfg)
    dev_idx, test_idx = api["hold_out_test"](dataset, float(cfg.dataset.test_fraction), 0)
    folds = api["make_folds"](instantiate(cfg.cv, "cv", []), dataset, dev_idx)
    cpu = torch.device("cpu")
    tensors = api["fold_tensors"]
    fold_data = [tensors(dataset, tr, va, test_idx, cfg.dataset, cpu) for tr, va in folds]
    lr, batch = float(cfg.optim.lr), int(cfg.batch_size)

    def reference_all() -> list[float]:
        return [reference_fold(d, epochs, batch, lr, k) for k, d in enumerate(fold_data)]

    def reference_one() -> None:
        reference_fold(fold_data[0], epochs, batch, lr, 0)

    def mlcli_fit_one() -> None:
        torch.manual_seed(0)
        model = instantiate(
            cfg.model, "model", [], in_shape=dataset.in_shape, out_features=dataset.out_features
        )
        optimizer = api["build_optimizer"](cfg.optim, model.parameters(), [])  # as mlcli does
        steps = epochs * api["batches_per_epoch"](len(fold_data[0].x_train), batch)
        scheduler = instantiate(cfg.scheduler, "scheduler", [])(optimizer, total_steps=steps)
        api["fit"](
            model,
            optimizer,
            scheduler,
            fold_data[0],
            task=dataset.task,
            epochs=epochs,
            batch_size=batch,
            generator=torch.Generator().manual_seed(0),
        )

    def mlcli_run(*overrides: str) -> Callable[[], list[float]]:
        job = api["compose_job"]([*base, *overrides], None, "config")

        def _run() -> list[float]:
            with tempfile.TemporaryDirectory() as tmp:
                outcome = runner.run(job, Path(tmp))
                assert outcome.state == "COMPLETED", outcome
                rows = api["read_results"](Path(tmp) / "results.parquet")
                return [
                    r["value"]
                    for r in rows
                    if r["split"] == "val" and r["metric"] == "acc" and r["epoch"] == epochs
                ]

        return _run

    return {
        "reference, 1 fold": reference_one,
        "mlcli fit, 1 fold": mlcli_fit_one,
        "reference, 5 folds": reference_all,
        "mlcli run, sequential": mlcli_run("stack_folds=off"),
        "mlcli run, stacked": mlcli_run("stack_folds=on"),
        # The compute-bound CNN: one core (sequential folds) against both (2 fold processes).
        "cnn run, 1 core": mlcli_run("model=cnn", "stack_folds=off"),
        "cnn run, parallel_folds=2": mlcli_run("model=cnn", "stack_folds=off", "parallel_folds=2"),
    }


def worker(epochs: int) -> None:
    """Serve the cases of the code tree on ``sys.path``: one JSON request a line on stdin, one
    ``MARK`` + JSON answer a line on stdout (seconds taken, accuracies)."""
    import torch

    torch.set_num_threads(1)
    cases = _cases(epochs)
    print(MARK + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name = json.loads(line)["case"]
        started, cpu = time.perf_counter(), time.process_time()
        accs = cases[name]()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(MARK + json.dumps({"seconds": seconds, "cpu": cpu, "accs": accs}), flush=True)


# --------------------------------------------------------------------------------------------------
# The parent: the trees' workers, interleaved.


class Tree:
    """A code tree's worker process."""

    def __init__(self, label: str, root: Path, epochs: int) -> None:
        self.label, self.root = label, root
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.cwd = tempfile.TemporaryDirectory()  # not the checkout: no ./mlcli shadows the tree
        self.process = subprocess.Popen(
            [sys.executable, str(HERE), "--worker", "--epochs", str(epochs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.cwd.name,
        )
        self._answer()  # set up (imports, data, folds) before any case is timed

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK):
                answer: dict[str, Any] = json.loads(line[len(MARK) :])
                return answer
        raise RuntimeError(f"the {self.label} worker ({self.root}) stopped")

    def run(self, case: str) -> dict[str, Any]:
        """Run ``case`` once in the worker; its seconds and accuracies."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"case": case}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        """End the worker."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.cwd.cleanup()


def _ratios(medians: dict[str, float]) -> dict[str, float]:
    """Each case's median over its reference's (the 1-fold, 5-fold or one-core CNN one)."""
    refs = {
        "1 fold": medians.get("reference, 1 fold", float("nan")),
        "5 folds": medians.get("reference, 5 folds", float("nan")),
        "cnn": medians.get("cnn run, 1 core", float("nan")),
    }
    return {
        name: value / next((refs[k] for k in ("1 fold", "cnn") if k in name), refs["5 folds"])
        for name, value in medians.items()
    }


def main() -> None:
    """Measure, interleaved, and print a markdown table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated words: cases to run")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alongside")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.epochs)
        return
    cases = [c for c in CASES if not args.only or any(w in c for w in args.only.split(","))]
    trees = [Tree("this", HERE.parents[1], args.epochs)]
    if args.baseline is not None:
        trees.append(Tree("baseline", args.baseline.resolve(), args.epochs))
    load_before = os.getloadavg()[0]
    times: dict[str, dict[str, list[float]]] = {t.label: {c: [] for c in cases} for t in trees}
    cpus: dict[str, dict[str, list[float]]] = {t.label: {c: [] for c in cases} for t in trees}
    accs: dict[str, dict[str, list[float]]] = {t.label: {} for t in trees}
    try:
        for repeat in range(args.repeats + 1):
            for case in cases:
                for tree in trees if repeat % 2 == 0 else trees[::-1]:  # neither tree always first
                    answer = tree.run(case)
                    if repeat:  # the first round is the warm-up (imports, allocator, dynamo)
                        times[tree.label][case].append(answer["seconds"])
                        cpus[tree.label][case].append(answer["cpu"])
                    if answer["accs"]:
                        accs[tree.label][case] = answer["accs"]
    finally:
        for tree in trees:
            tree.close()
    _print(args, cases, trees, times, cpus, accs, (load_before, os.getloadavg()[0]))


def _print(
    args: argparse.Namespace,
    cases: list[str],
    trees: list[Tree],
    times: dict[str, dict[str, list[float]]],
    cpus: dict[str, dict[str, list[float]]],
    accs: dict[str, dict[str, list[float]]],
    loads: tuple[float, float],
) -> None:
    import numpy as np
    import torch

    med = {t.label: {c: statistics.median(times[t.label][c]) for c in cases} for t in trees}
    ratio = {t.label: _ratios(med[t.label]) for t in trees}
    # min-to-min: each case's fastest repeat over its reference's fastest (the least disturbed)
    low = {t.label: _ratios({c: min(times[t.label][c]) for c in cases}) for t in trees}
    # CPU seconds of the worker process (all its threads): what the load of other processes
    # changes least; a parallel case's CPU is in its fold processes, not counted (-)
    cpu = {t.label: _ratios({c: statistics.median(cpus[t.label][c]) for c in cases}) for t in trees}
    print(
        f"digits MLP 64-128-10, batch 64, {args.epochs} epochs, 5 folds, Adam, "
        f"torch {torch.__version__}, one thread, median of {args.repeats} interleaved repeats "
        f"after a warm-up, load average {loads[0]:.1f} before, {loads[1]:.1f} after, on "
        f"{os.cpu_count()} cores (cnn rows: ratio to the cnn on one core)"
    )
    base = "baseline" if len(trees) > 1 else None
    header = "| case | median s | ratio | min s | min-to-min | CPU ratio | target |"
    if base:
        header += " baseline median s | baseline ratio | ratio change | baseline CPU ratio |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for case in cases:
        value, r = med["this"][case], ratio["this"][case]
        target = TARGETS.get(case)
        verdict = "" if target is None else f"<= {target}" + (" ok" if r <= target else " MISSED")
        fastest, lowest = min(times["this"][case]), low["this"][case]
        c = "-" if "parallel" in case else f"{cpu['this'][case]:.2f}"
        line = (
            f"| {case} | {value:.3f} | {r:.2f} | {fastest:.3f} | {lowest:.2f} | {c} | {verdict} |"
        )
        if base:
            b = ratio[base][case]
            bc = "-" if "parallel" in case else f"{cpu[base][case]:.2f}"
            line += f" {med[base][case]:.3f} | {b:.2f} | {r - b:+.3f} | {bc} |"
        print(line)
    for tree in trees:
        for case, values in accs[tree.label].items():
            print(f"val acc per fold, {tree.label}, {case}: {np.round(values, 4).tolist()}")


if __name__ == "__main__":
    main()
