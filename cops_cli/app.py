"""The `cops` command: global options, error reporting and subcommand registration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from cops import __version__
from cops.cli.bench import app as bench_app
from cops.cli.check_data import check_data
from cops.cli.evaluate import evaluate
from cops.cli.export import export
from cops.cli.finetune_pq import finetune_pq
from cops.cli.import_checkpoint import import_checkpoint
from cops.cli.predict import predict
from cops.cli.prepare_data import app as prepare_data_app
from cops.cli.pretrain import pretrain
from cops.cli.recipes import app as recipes_app
from cops.console import activity, configure_logging, err_console, state
from cops.errors import CopsError, user_message

app = typer.Typer(
    name="cops",
    help=(
        "COPS: panoptic segmentation by combinatorial optimisation. A CNN predicts class and "
        "boundary costs, an asymmetric multiway cut solver turns them into a panoptic labelling."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(prepare_data_app, name="prepare-data")
app.command("pretrain")(pretrain)
app.command("finetune-pq")(finetune_pq)
app.command("evaluate")(evaluate)
app.command("predict")(predict)
app.command("export")(export)
app.command("import-checkpoint")(import_checkpoint)
app.command("check-data")(check_data)
app.add_typer(recipes_app, name="recipes")
app.add_typer(bench_app, name="bench")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cops {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks on errors.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress or tables.")
    ] = False,
) -> None:
    """Global options come before the subcommand: `cops -v prepare-data synthetic`."""
    configure_logging(verbose, quiet)


def main() -> None:
    """Console-script entry point: user errors become one red line and exit status 2.

    An ``OSError`` (disk full, permissions) is one line naming the file, exit status 1; Ctrl-C
    (which Typer turns into exit status 130) says what was interrupted and how to continue.
    """
    try:
        app()
    except CopsError as exc:
        if state.verbose:
            raise
        _error(user_message(exc))
        sys.exit(2)
    except OSError as exc:
        if state.verbose:
            raise
        _error(user_message(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        _interrupted()
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            _interrupted()
        raise


INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT)."""


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def _interrupted() -> None:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    what = activity.what or f"cops {command}".strip()
    how = activity.how_to_continue or "run the command again; no partial result looks complete"
    err_console.print(f"[yellow]interrupted:[/] {escape(what)}; {escape(how)}", soft_wrap=True)
