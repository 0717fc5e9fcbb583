"""`cops recipes`: list the built-in recipes and show a fully resolved one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.syntax import Syntax

from cops.console import console
from cops.recipes.schema import builtin_recipes, load_recipe

app = typer.Typer(help="List built-in recipes or print a resolved recipe.", no_args_is_help=True)

RecipeArg = Annotated[str, typer.Argument(help="Built-in recipe name or path to a YAML file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a key, e.g. --set model.backbone=resnet18 (repeatable)."),
]


@app.command("list")
def list_recipes() -> None:
    """Print the names of the built-in recipes."""
    for name in builtin_recipes():
        console.print(name)


@app.command("show")
def show(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Print a recipe with inheritance and overrides resolved, as YAML.

    Highlighted on a terminal; written as plain text otherwise, never wrapped, so that
    ``cops recipes show NAME > my.yaml`` gives a recipe that loads.
    """
    text = load_recipe(recipe, set_ or []).to_yaml()
    if console.is_terminal:
        console.print(Syntax(text, "yaml", background_color="default"))
    else:
        typer.echo(text, nl=not text.endswith("\n"))
