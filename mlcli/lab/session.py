"""From a demonstration's name to its sweep's command line, its finished runs, its figure and
verdict files, and the gallery page that shows them all.

``mlcli lab run NAME`` runs ``mlcli train -m +experiment=NAME [quick overrides] [OVERRIDES]``
(an ordinary sweep: resumable, in ``outputs/``, any launcher), then :func:`build`. The runs of a
demonstration are found by planning the same command again (:func:`finished_runs`): each job's
run key leads to its COMPLETED run, wherever it ran, so ``mlcli lab report NAME`` rebuilds the
figure and verdict from the run dirs alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlcli.lab import DEMOS
from mlcli.lab.base import Demo, LabRuns, Verdict

VERDICT_FILE = "verdict.json"
TIMING_FILE = "timing.json"


class LabError(ValueError):
    """An unknown demonstration, or one whose runs are not there yet."""


def demo(name: str) -> Demo:
    """The demonstration called ``name`` (raises :class:`LabError` naming the valid ones)."""
    from mlcli.config.validate import did_you_mean

    if name not in DEMOS:
        raise LabError(
            f"no demonstration {name!r}.{did_you_mean(name, list(DEMOS))} "
            f"Choose one of: {', '.join(DEMOS)} (`mlcli lab list`)"
        )
    return DEMOS[name]


def command_args(name: str, quick: bool, overrides: Sequence[str]) -> list[str]:
    """The ``mlcli train`` arguments of the demonstration's sweep."""
    chosen = demo(name)
    return ["-m", f"+experiment={name}", *(chosen.quick if quick else ()), *overrides]


def lab_dir(outputs_root: Path, name: str, quick: bool) -> Path:
    """Where the figure and verdict of a demonstration go (``outputs/lab/NAME[-quick]``)."""
    return Path(outputs_root) / "lab" / (f"{name}-quick" if quick else name)


def finished_runs(args: list[str]) -> tuple[list[Path], Path, int]:
    """(the COMPLETED run dirs of the jobs of ``mlcli train ARGS``, the outputs root, the number
    of jobs); raises :class:`LabError` with the config problems when the command is invalid."""
    from mlcli.config.compose import use_user_config_dirs
    from mlcli.sweeps.launch import plan
    from mlcli.sweeps.preflight import check

    command, problems = check(args)
    if problems:
        raise LabError("; ".join(f"{p.key}: {p.message}" for p in problems))
    use_user_config_dirs(command.config_dir)
    planned = plan(command)
    dirs = [
        job.previous.run_dir
        for job in planned.jobs
        if job.previous is not None and job.previous.state == "COMPLETED"
    ]
    return dirs, planned.outputs_root, len(planned.jobs)


def build(name: str, run_dirs: Sequence[Path], out: Path) -> Verdict:
    """Read the runs, draw the figure(s) into ``out``, write ``verdict.json`` and
    ``verdict.md`` there, and return the verdict."""
    from mlcli.rundir import atomic_write_text, write_json

    chosen = demo(name)
    if not run_dirs:
        raise LabError(f"{name}: no finished runs yet; run `mlcli lab run {name}` first")
    verdict = chosen.analyze(LabRuns.read(run_dirs), out)
    document = verdict.document() | {
        "demo": name,
        "topic": chosen.topic,
        "runs": len(run_dirs),
        "figures": list(chosen.figures),
    }
    write_json(out / VERDICT_FILE, document)
    atomic_write_text(out / "verdict.md", verdict.markdown())
    return verdict


def write_timing(out: Path, seconds: float, jobs: int, quick: bool, resumed: int = 0) -> None:
    """Record how long ``mlcli lab run`` took (the gallery shows it): ``seconds`` of wall-clock
    time and the CPU seconds of this process and its finished children (jobs run in child
    processes), which a loaded machine inflates less; ``resumed``: the jobs an earlier
    invocation had finished (the time is then that of the rest only)."""
    from mlcli.rundir import write_json

    document = {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds(), 1),
        "jobs": jobs,
        "quick": quick,
        "resumed": resumed,
    }
    write_json(out / TIMING_FILE, document)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def gallery(outputs_root: Path, target: Path, quick: bool, machine: str) -> Path:
    """Write the page ``target`` + ``.md`` showing every demonstration's figure, verdict and
    time from ``outputs_root/lab``, the figures copied into the folder ``target``; returns the
    page."""
    from mlcli.rundir import atomic_write_text

    target.mkdir(parents=True, exist_ok=True)
    mode = "quick (`--quick`)" if quick else "full"
    parts = [
        "# The lab: the course's demonstrations",
        "",
        "Each section is one `mlcli lab run NAME` "
        f"({mode} runs), produced on {machine}: the figure and the verdict as the lab wrote "
        "them (`make gallery` regenerates this page). The verdict is computed from the "
        "measured numbers by the rule it states; *no* or *inconclusive* is reported as such.",
        "",
    ]
    for name, chosen in DEMOS.items():
        out = lab_dir(outputs_root, name, quick)
        verdict, timing = _read(out / VERDICT_FILE), _read(out / TIMING_FILE)
        parts.append(f"## {name}: {chosen.topic}")
        parts.append("")
        command = f"mlcli lab run {name}{' --quick' if quick else ''}"
        if not verdict:
            parts += [f"`{command}`: not run yet.", ""]
            continue
        took = _took(timing)
        if not quick and (quick_timing := _read(lab_dir(outputs_root, name, True) / TIMING_FILE)):
            took += f"; its `--quick` run: {_took(quick_timing)}"
        parts += [f"`{command}` ({chosen.what}; took {took}).", ""]
        for figure in chosen.figures:
            if (out / figure).is_file():
                shutil.copyfile(out / figure, target / figure)
                parts += [f"![{name}]({target.name}/{figure})", ""]
        markdown = (out / "verdict.md").read_text(encoding="utf-8") if verdict else ""
        parts += [markdown, ""]
    page = target.with_suffix(".md")
    atomic_write_text(page, "\n".join(parts).rstrip() + "\n")
    return page


def _took(timing: dict[str, Any]) -> str:
    """How long a demonstration's sweep took, from its timing file."""
    seconds = timing.get("seconds")
    took = f"{seconds:.0f} s, {timing.get('jobs')} jobs" if seconds is not None else "n/a"
    if timing.get("cpu_seconds") is not None:
        took = took.replace(" s,", f" s wall ({timing['cpu_seconds']:.0f} s CPU),", 1)
    if timing.get("resumed"):
        took += f" (resumed: {timing['resumed']} jobs were done before)"
    return took
