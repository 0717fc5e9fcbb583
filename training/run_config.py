"""The resolved form of a training command's options, as worker processes receive it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cops.recipes.schema import Recipe


@dataclass
class RunConfig:
    """A fully resolved training run: picklable, so it travels to spawned worker processes."""

    recipe: Recipe
    name: str
    out: Path
    device: str
    nproc: int
    resume: bool = False
    weights: Path | None = None
    reinit_head: bool = False
    own_data: bool = True
    """Whether ``recipe.data.root`` is the recipe's own (not a --data folder): only then may the
    synthetic dataset be generated into it."""
    verbose: bool = False
    quiet: bool = False
