"""The `cops` command: global options, error reporting and subcommand registration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from cops import __version__
from cops.cli.bench import app as bench_app
from cops.cli.evaluate import evaluate
from cops.cli.export import export
from cops.cli.finetune_pq import finetune_pq
from cops.cli.predict import predict
from cops.cli.prepare_data import app as prepare_data_app
from cops.cli.pretrain import pretrain
from cops.cli.recipes import app as recipes_app
from cops.console import configure_logging, err_console, state
from cops.errors import CopsError

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
    """Console-script entry point: user errors become one red line and exit status 2."""
    try:
        app()
    except CopsError as exc:
        if state.verbose:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        if state.verbose:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
