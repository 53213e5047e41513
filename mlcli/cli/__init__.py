"""mlcli's command line: the Typer commands (:mod:`mlcli.cli.commands`: options, then one library
call each, problems mapped to one screen and exit 2) and shell completion
(:mod:`mlcli.cli.completion`)."""

from mlcli.cli.commands import app, main

__all__ = ["app", "main"]
