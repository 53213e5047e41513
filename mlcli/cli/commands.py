"""The ``mlcli`` command: a thin Typer shell over Hydra (``train``) and the report library.

No torch/pandas import at module level: ``mlcli --help`` and config errors stay instant.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from mlcli.config import GROUPS, ConfigProblem, group_options

EXIT_USAGE = 2
ENV_COMPLETION = "_MLCLI_COMPLETION"  # = mlcli.cli.completion.ENV (not imported: --help stays lean)


class _ErrConsole:
    """rich's stderr console, imported at its first use (rich costs ~0.1 s: not for --help)."""

    def print(self, *objects: Any) -> None:
        from rich.console import Console

        # Wide when not a terminal (logs, CI, pipes) so tables do not wrap mid-word.
        Console(stderr=True, width=None if sys.stderr.isatty() else 160).print(*objects)


err_console = _ErrConsole()


class _TrainCommand(TyperCommand):
    """``train --help`` lists the config groups found now (packaged + ./conf), not at import."""

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        from mlcli.config import catalog

        options = group_options()
        with formatter.section("Config groups (choose with GROUP=OPTION)"):
            formatter.write_dl([(group, " | ".join(options[group])) for group in GROUPS])
        with formatter.section("Run settings (KEY=VALUE; default in brackets)"):
            formatter.write_dl(
                [
                    (f"{k.name} [{catalog.value_text(k.default)}]", _setting_help(k))
                    for k in catalog.run_settings()
                ]
            )
        with formatter.section("Launchers and sweepers (installed now)"):
            groups = catalog.HYDRA_GROUPS
            formatter.write_dl([(g, " | ".join(catalog.hydra_options(g))) for g in groups])
        formatter.write_paragraph()
        formatter.write_text(
            "Each option's keys: mlcli train GROUP=OPTION --cfg job. "
            'Completion: eval "$(mlcli --show-completion bash)" (or zsh, fish).'
        )


def _setting_help(key: Any) -> str:
    """A run setting's line in ``train --help``: its comment, type and bounds."""
    kind = " | ".join(key.choices) if key.choices and key.type == "enum" else key.type
    if key.choices and " | ".join(key.choices) in key.comment:
        kind = ""  # the comment lists them
    facts = ", ".join(x for x in (kind, key.bounds) if x)
    return " ".join(x for x in (key.comment, f"({facts})" if facts else "") if x)


app = typer.Typer(
    name="mlcli",
    help="Cross-validated deep-learning experiments from Hydra configs.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,  # mlcli's own (mlcli.cli.completion): Typer's does not handle GROUP=<TAB>
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mlcli {version('mlcli')}")
        raise typer.Exit()


class Shell(enum.StrEnum):
    """Shells whose completion mlcli writes."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def _show_completion(shell: Shell | None) -> None:
    if shell is not None:
        from mlcli.cli.completion import SCRIPTS

        typer.echo(SCRIPTS[shell.value], nl=False)
        raise typer.Exit()


def _install_completion(shell: Shell | None) -> None:
    if shell is not None:
        from mlcli.cli.completion import install

        script, rc = install(shell.value)
        typer.echo(f"wrote {script}" + (f" and a line in {rc} that loads it" if rc else ""))
        typer.echo("Open a new shell (or source the file) to use it.")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print mlcli's version and exit."
        ),
    ] = False,
    show_completion: Annotated[
        Shell | None,
        typer.Option(
            "--show-completion",
            callback=_show_completion,
            is_eager=True,
            metavar="SHELL",
            help="Print the completion script for SHELL (bash, zsh, fish): "
            'eval "$(mlcli --show-completion bash)".',
        ),
    ] = None,
    install_completion: Annotated[
        Shell | None,
        typer.Option(
            "--install-completion",
            callback=_install_completion,
            is_eager=True,
            metavar="SHELL",
            help="Install completion for SHELL (bash, zsh, fish) in your home directory.",
        ),
    ] = None,
) -> None:
    """Cross-validated deep-learning experiments from Hydra configs."""


def print_problems(problems: list[ConfigProblem], what: str = "mlcli train") -> None:
    """One screen: every problem with its key, then how to see the valid settings."""
    from rich.markup import escape

    lines = [f"[bold]{escape(p.key)}[/bold]: {escape(p.message)}" for p in problems[:20]]
    if len(problems) > 20:
        lines.append(f"... and {len(problems) - 20} more")
    lines.append("")
    lines.append("Nothing was run or written. Valid groups and options: `mlcli train --help`;")
    lines.append("the composed config: `mlcli train [OVERRIDES] --cfg job`.")
    from rich.panel import Panel

    err_console.print(
        Panel("\n".join(lines), title=f"{what}: invalid configuration", border_style="red")
    )


DetachOption = Annotated[
    bool,
    typer.Option(
        "--detach",
        help="With a scheduler's launcher (hydra/launcher=submitit_slurm): return once the "
        "jobs are queued; `mlcli status SWEEP_DIR` shows them.",
    ),
]
ZipOption = Annotated[
    list[str] | None,
    typer.Option(
        "--zip",
        metavar="KEY,KEY",
        help="With -m: sweep these keys' values together (the i-th of each), not their "
        "product; repeatable.",
    ),
]


def _command_args(
    typed: list[str], resume: Path | None, rerun: bool, fail_fast: bool, zip_keys: list[str] | None
) -> list[str]:
    """The command's Hydra arguments: those typed (or recorded in ``--resume``'s sweep dir), with
    what ``--fail-fast`` and ``--zip`` stand for; a bad request exits 2."""
    from mlcli.config.pairing import PairingError, zip_overrides
    from mlcli.sweeps.launch import PlanError, resume_args, with_overrides

    args = list(typed)
    try:
        if resume is not None:
            if rerun:
                raise PlanError("--resume", "--resume continues a sweep; --rerun starts anew")
            args = resume_args(resume, args)
        if fail_fast:
            args = with_overrides(args, ["on_failure=stop"])
        if zip_keys:
            problem = _zip_problem(args)
            if problem is not None:
                raise PlanError(problem.key, problem.message)
            args = with_overrides(args, zip_overrides(zip_keys))
    except (PlanError, PairingError) as error:
        print_problems([ConfigProblem(error.key, str(error))])
        raise typer.Exit(EXIT_USAGE) from None
    return args


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Run an experiment: mlcli train [HYDRA FLAGS] [GROUP=OPTION] [KEY=VALUE]...\n\n"
    "All Hydra syntax works: -m/--multirun with comma or range sweeps, hydra/launcher=joblib, "
    "hydra/sweeper=..., --cfg job, --info, +key=value, ~key.",
    cls=_TrainCommand,
)
def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Hydra overrides and flags."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    trust_overrides: Annotated[
        bool,
        typer.Option(
            "--trust-overrides",
            help="Allow Hydra overrides that can run code (hydra.job.env_set, hydra.callbacks...).",
        ),
    ] = False,
    rerun: Annotated[
        bool,
        typer.Option("--rerun", help="Run jobs again even if a COMPLETED run of them exists."),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="SWEEP_DIR",
            help="Continue the sweep in SWEEP_DIR (its recorded command if no overrides given).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="List every job, its run key and whether it is done; run nothing."
        ),
    ] = False,
    fail_fast: Annotated[
        bool,
        typer.Option("--fail-fast", help="Start no more jobs after a failure (on_failure=stop)."),
    ] = False,
    detach: DetachOption = False,
    zip_keys: ZipOption = None,
) -> None:
    """Run an experiment (or a sweep with -m)."""
    _run_train(
        list(overrides or []),
        debug=debug,
        trust_overrides=trust_overrides,
        rerun=rerun,
        resume=resume,
        dry_run=dry_run,
        fail_fast=fail_fast,
        detach=detach,
        zip_keys=zip_keys,
    )


def _run_train(
    args: list[str],
    *,
    debug: bool = False,
    trust_overrides: bool = False,
    rerun: bool = False,
    resume: Path | None = None,
    dry_run: bool = False,
    fail_fast: bool = False,
    detach: bool = False,
    zip_keys: list[str] | None = None,
    on_plan: Callable[[Any], None] | None = None,
) -> None:
    """``mlcli train ARGS``: check, plan and launch (raises ``typer.Exit`` with its code);
    ``on_plan`` sees the session's plan before it is launched."""
    from mlcli.config.compose import use_user_config_dirs
    from mlcli.sweeps.launch import PlanError, check_resume, plan, print_plan
    from mlcli.sweeps.preflight import check

    typed = list(args)  # what the user typed (not what a sweep dir recorded for --resume)
    if debug:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    args = _command_args(typed, resume, rerun, fail_fast, zip_keys)
    command, problems = check(args, trust_overrides=trust_overrides, typed=typed, detach=detach)
    if problems:
        print_problems(problems)
        raise typer.Exit(EXIT_USAGE)
    use_user_config_dirs(command.config_dir)  # ./conf or --config-dir first (search-path plug-in)
    extra: list[str] = []
    with _session_env(command.admitted, trust_overrides):
        if command.info_only:  # --cfg, --info, ...: Hydra prints and runs nothing
            sys.argv = ["mlcli", *args, *extra]
            from mlcli.sweeps.app import hydra_main

            hydra_main()
            return

        try:
            session_plan = plan(command, rerun=rerun, resume=resume)
            if resume is not None:
                check_resume(resume, session_plan)
        except PlanError as error:
            print_problems([ConfigProblem(error.key, str(error))])
            raise typer.Exit(EXIT_USAGE) from None
        if dry_run:
            print_plan(session_plan)
            return
        if on_plan is not None:
            on_plan(session_plan)
        _launch(session_plan, args, extra, rerun, detach)


def _zip_problem(args: list[str]) -> ConfigProblem | None:
    """What is wrong with ``--zip`` in a command: no ``-m``, or another sweeper chosen."""
    from mlcli.config.compose import split_args

    command = split_args(args)
    if not command.multirun:
        return ConfigProblem("--zip", "pairs the values of a sweep: add -m (--multirun)")
    for override in command.overrides:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == "hydra/sweeper" and value != "paired":
            return ConfigProblem(
                "--zip", f"pairs the basic sweeper's values; hydra/sweeper={value} sweeps itself"
            )
    return None


@contextlib.contextmanager
def _session_env(admitted: list[str], trust_overrides: bool) -> Any:
    """For the command's duration, the environment every job reads (whatever process runs it;
    the launch also passes it through ``hydra.job.env_set``): what the user admitted, and
    whether ``--trust-overrides`` was given (recorded in every run's status.json)."""
    from mlcli.config import allowlist, env

    admission = allowlist.Admission(tuple(admitted), trust_overrides, os.getcwd())
    values = {env.ADMITTED_TARGETS: admission.to_env()}
    if trust_overrides:
        values[env.TRUST_OVERRIDES] = "1"
    with env.overridden(values):
        yield


def _launch(
    session_plan: Any, args: list[str], extra: list[str], rerun: bool, detach: bool = False
) -> None:
    from rich.markup import escape

    from mlcli.sweeps.session import EXIT_INTERRUPTED, Session

    for note in session_plan.notes:
        err_console.print(escape(note))
    if session_plan.continuing:
        err_console.print(f"continuing the sweep in {session_plan.sweep_dir}")
    outcome = Session(session_plan, rerun, detach).launch(args, extra)
    if detach and not outcome.interrupted and not outcome.hydra_exit:
        print(f"queued; sweep dir: {session_plan.sweep_dir}")
        print(f"follow it with: mlcli status {session_plan.sweep_dir}")
        return
    # An Optuna study goes on past failed trials (up to max_failures): they are results. One that
    # stopped on max_failures has said so, with the count: its table only lists them.
    study = session_plan.sweeper == "optuna"
    if outcome.failures:
        if not study:
            title = f"{len(outcome.failures)} job(s) did not complete"
        elif outcome.hydra_exit:
            title = "the failed trials"
        else:
            title = f"{len(outcome.failures)} trial(s) failed; the study went on"
        _print_failures(outcome.failures, title)
    if outcome.interrupted:
        err_console.print(
            f"interrupted by {outcome.interrupted}: unfinished runs are marked INTERRUPTED; "
            "run the same command again to continue them"
        )
        raise typer.Exit(EXIT_INTERRUPTED.get(outcome.interrupted, 130))
    if len(outcome.entries) > 1:
        counts = Counter(str(e.get("state")) for e in outcome.entries)
        err_console.print(
            f"{len(outcome.entries)} jobs: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        )
    if outcome.hydra_exit or (outcome.failures and not study):
        raise typer.Exit(1)


def _print_failures(failures: list[dict[str, str]], title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_style="bold red")
    for column in ("overrides", "state", "error", "run dir"):
        table.add_column(column, overflow="fold")
    for f in failures:
        table.add_row(
            escape(" ".join(f.get("overrides") or []) or "(defaults)"),
            str(f.get("state")),
            escape(str(f.get("error") or "")),
            escape(str(f.get("run_dir"))),
        )
    err_console.print(table)


class Format(enum.StrEnum):
    """Output formats of ``mlcli report``."""

    table = "table"
    csv = "csv"
    markdown = "markdown"
    json = "json"
    html = "html"


class At(enum.StrEnum):
    """Which epoch ``mlcli report`` summarizes."""

    final = "final"
    best = "best"


@app.command()
def report(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Run or sweep dirs to read (default: outputs/).")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Rank by this split/metric, e.g. val/loss (default: the runs' metric)."),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated config keys that define a configuration "
            "(default: the keys that vary between the runs)."
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(help="Keep runs with KEY=VALUE[,VALUE...] (repeatable; also state=...)."),
    ] = None,
    at: Annotated[
        At,
        typer.Option(
            help="final: last epoch; best: the epoch of the best fold-mean val curve (each "
            "fold's own best epoch in runs that stopped early)."
        ),
    ] = At.final,
    top: Annotated[int | None, typer.Option(min=1, help="Show the N best configurations.")] = None,
    compare: Annotated[
        str | None,
        typer.Option(help="Config key to compare side by side (e.g. optim), each at its best."),
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Write the plots (PNG) into this directory.")
    ] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
    bias_margin: Annotated[
        float,
        typer.Option(
            min=0.0, help="High bias: train error above the set's best by more than this."
        ),
    ] = 0.05,
    bias_threshold: Annotated[
        float | None, typer.Option(min=0.0, help="High bias: train error above this.")
    ] = None,
    overfit_tolerance: Annotated[
        float,
        typer.Option(
            min=0.0, help="Overfitting: val loss up by more than this fraction of its minimum."
        ),
    ] = 0.05,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="Table: every column at full width (lines longer than the terminal)."
        ),
    ] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Table: each configuration's diagnosis with its reason."),
    ] = False,
) -> None:
    """Summarize runs: one row per configuration, fold mean ± std, ranked and diagnosed."""
    from mlcli.report.command import ReportError, run_report

    try:
        run_report(
            paths or [Path("outputs")], metric=metric, by=by, where=where or [], at=at.value,
            top=top, compare=compare, plots=plots, fmt=format.value, out=out,
            bias_margin=bias_margin, bias_threshold=bias_threshold,
            overfit_tolerance=overfit_tolerance, wide=wide, explain=explain,
        )  # fmt: skip
    except ReportError as error:
        from rich.panel import Panel

        err_console.print(Panel(str(error), title="mlcli report", border_style="red"))
        raise typer.Exit(EXIT_USAGE) from None


class OutFormat(enum.StrEnum):
    """File formats of ``mlcli predict --format``."""

    csv = "csv"
    parquet = "parquet"


@app.command()
def predict(
    run_dir: Annotated[
        Path, typer.Argument(help="A run dir (or, with --best, a sweep dir) with saved models.")
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Rows to predict: a CSV file (or .npz with X; CoNLL for a tagged run; a folder "
            "of pictures for a dataset=images run).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The predictions file (id,<target>).")
    ] = Path("predictions.csv"),
    id_column: Annotated[
        str | None,
        typer.Option(
            help="The data's id column (default: the column the run dropped, else the row number)."
        ),
    ] = None,
    proba: Annotated[
        bool, typer.Option("--proba", help="One probability column per class.")
    ] = False,
    best: Annotated[
        bool, typer.Option("--best", help="RUN_DIR is a sweep dir: use its top configuration.")
    ] = False,
    format: Annotated[
        OutFormat | None,
        typer.Option("--format", "-f", help="csv or parquet (default: from --out's suffix)."),
    ] = None,
    tta: Annotated[
        int,
        typer.Option(
            "--tta",
            help="Pictures: average N views (the plain one and N-1 augmented by the run's "
            "training augmentation).",
        ),
    ] = 1,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            metavar="MODULE",
            help="Admit a module of yours whose model the run names (repeatable; as "
            "allow_targets=[MODULE] for train).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Predict new rows with a run's final model; write id,<target> (a submission file)."""
    from mlcli.data.errors import DataError
    from mlcli.predict import PredictError
    from mlcli.predict import predict as run_predict

    try:
        done = run_predict(
            run_dir,
            data,
            out,
            id_column=id_column,
            proba=proba,
            fmt=format.value if format is not None else None,
            best=best,
            tta=tta,
            allow=allow or [],
        )
    except (PredictError, DataError) as error:
        if debug:
            raise
        from rich.markup import escape
        from rich.panel import Panel

        err_console.print(Panel(escape(str(error)), title="mlcli predict", border_style="red"))
        raise typer.Exit(EXIT_USAGE) from None
    for note in done.notes:
        err_console.print(f"note: {note}")
    typer.echo(f"wrote {done.out}: {done.n_rows} rows, columns {','.join(done.columns[:12])}")


@app.command()
def status(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep dir written by `mlcli train -m`.")],
) -> None:
    """Each job of a sweep: queued, running, completed or failed (its run dir and the scheduler)."""
    from mlcli.sweeps.cluster import print_status, sweep_status

    try:
        jobs = sweep_status(sweep_dir)
    except ValueError as error:
        from rich.panel import Panel

        err_console.print(Panel(str(error), title="mlcli status", border_style="red"))
        raise typer.Exit(EXIT_USAGE) from None
    print_status(sweep_dir, jobs)


lab_app = typer.Typer(
    name="lab",
    help="The course's demonstrations: each an mlcli sweep, a figure and a verdict.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(lab_app)


def _lab_problem(error: Exception) -> typer.Exit:
    from rich.markup import escape
    from rich.panel import Panel

    err_console.print(Panel(escape(str(error)), title="mlcli lab", border_style="red"))
    return typer.Exit(EXIT_USAGE)


@lab_app.command("list")
def lab_list() -> None:
    """Each demonstration with its lecture topic."""
    from rich.console import Console
    from rich.table import Table

    from mlcli.lab import DEMOS

    table = Table(title=f"{len(DEMOS)} demonstrations (mlcli lab run NAME [--quick])")
    for column in ("name", "lecture topic", "what runs"):
        table.add_column(column, overflow="fold")
    for name, demo in DEMOS.items():
        table.add_row(name, demo.topic, demo.what)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _lab_build(
    name: str, args: list[str], quick: bool, seconds: float | None = None, done_before: int = 0
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlcli.lab import session

    try:
        run_dirs, outputs_root, jobs = session.finished_runs(args)
        out = session.lab_dir(outputs_root, name, quick)
        verdict = session.build(name, run_dirs, out)
    except (session.LabError, ValueError) as error:
        raise _lab_problem(error) from None
    if seconds is not None and done_before < jobs:  # all skipped: the time is not the run's
        session.write_timing(out, seconds, jobs, quick, resumed=done_before)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"[bold]{escape(name)}[/bold]: {escape(verdict.claim)}")
    console.print(
        f"supported by this run: [bold]{verdict.supported}[/bold]. {escape(verdict.detail)}"
    )
    console.print(f"rule: {escape(verdict.rule)}")
    console.print(f"figure and verdict: {out}")


_LAB_ARGS = Annotated[
    list[str] | None,
    typer.Argument(help="Extra Hydra overrides for the sweep (e.g. hydra/launcher=joblib)."),
]


@lab_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lab_run(
    name: Annotated[str, typer.Argument(help="The demonstration (mlcli lab list).")],
    overrides: _LAB_ARGS = None,
    quick: Annotated[bool, typer.Option("--quick", help="The shrunk sweep (seconds).")] = False,
    rerun: Annotated[bool, typer.Option("--rerun", help="Run done jobs again.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    """Run a demonstration's sweep (resumable), then write its figure and verdict."""
    import time

    from mlcli.lab import session

    try:
        args = session.command_args(name, quick, list(overrides or []))
    except session.LabError as error:
        raise _lab_problem(error) from None
    done: list[int] = []  # the jobs an earlier invocation finished (skipped now)

    def count_done(planned: Any) -> None:
        done.extend(1 for job in planned.jobs if not rerun and job.status.startswith("done"))

    started = time.perf_counter()
    code = 0
    try:
        _run_train(args, debug=debug, rerun=rerun, on_plan=count_done)
    except typer.Exit as exit_:
        code = exit_.exit_code
        if code == EXIT_USAGE:
            raise
    _lab_build(name, args, quick, time.perf_counter() - started, len(done))
    if code:
        raise typer.Exit(code)


@lab_app.command(
    "report", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def lab_report(
    name: Annotated[str, typer.Argument(help="The demonstration (mlcli lab list).")],
    overrides: _LAB_ARGS = None,
    quick: Annotated[bool, typer.Option("--quick", help="The runs of --quick.")] = False,
) -> None:
    """Rebuild a demonstration's figure and verdict from its run dirs (runs nothing)."""
    from mlcli.lab import session

    try:
        args = session.command_args(name, quick, list(overrides or []))
    except session.LabError as error:
        raise _lab_problem(error) from None
    _lab_build(name, args, quick)


@lab_app.command("gallery")
def lab_gallery(
    target: Annotated[Path, typer.Argument(help="Page to write: TARGET.md, figures in TARGET/.")],
    quick: Annotated[bool, typer.Option("--quick", help="Show the --quick runs.")] = False,
    outputs_root: Annotated[Path, typer.Option(help="Where the lab runs are.")] = Path("outputs"),
    machine: Annotated[str, typer.Option(help="The machine, in words.")] = "this machine",
) -> None:
    """Write the gallery page of every demonstration's figure, verdict and time."""
    from mlcli.lab import session

    page = session.gallery(outputs_root, target, quick, machine)
    err_console.print(f"gallery: {page}")


def main() -> None:
    """Console-script entry point.

    A command that ends normally (any exit code) leaves without the interpreter's teardown:
    with torch, scikit-learn and Hydra loaded, freeing every module and object one by one takes
    0.4-0.7 s, longer than most of a small run. Everything it would do for mlcli is done first:
    the jobs' files are fsynced as they are written, joblib workers and writer threads are shut
    down by the command itself (joblib's temp folders with them), multiprocessing's exit
    handler unlinks the named semaphores loky made (/dev/shm/sem.loky-*), and the streams and
    log handlers are flushed here. An uncaught exception (``--debug``) and Ctrl-C take the
    ordinary way out.
    """
    try:
        if ENV_COMPLETION in os.environ:  # a shell asks for completions (mlcli.cli.completion)
            from mlcli.cli.completion import respond

            respond(typer.main.get_command(app))
            _leave(0)
        app()
    except SystemExit as exit_:
        code = exit_.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        _leave(code or 0)


def _leave(code: int) -> None:
    """Exit now with ``code``, after flushing what a normal exit would flush."""
    import logging

    # multiprocessing's atexit handler (microseconds): the finalizers of what loky built on it,
    # e.g. the semaphores of an executor whose workers were stopped; else loky's resource
    # tracker finds them leaked after we exit (and warns).
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        with contextlib.suppress(Exception):
            util._exit_function()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
