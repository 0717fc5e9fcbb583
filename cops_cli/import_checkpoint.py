"""`cops import-checkpoint`: the authors' released COPS weights as a `cops` checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cops.cli.options import DataOpt, SetOpt
from cops.console import console, state


def import_checkpoint(
    source: Annotated[
        Path, typer.Argument(help="Released COPS checkpoint (.pth) or ImageNet backbone (.pkl).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The cops file to write.")],
    recipe: Annotated[
        str | None,
        typer.Option("--recipe", "-r", help="Recipe of the model, e.g. cityscapes-r50."),
    ] = None,
    backbone_only: Annotated[
        bool,
        typer.Option(
            "--backbone-only", help="SOURCE is an ImageNet backbone: write weights for --weights."
        ),
    ] = False,
    data: DataOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Convert released COPS weights; nothing in SOURCE is executed while reading it.

    Every key of SOURCE is renamed to the paper network's, or the import fails listing the keys
    that do not fit. The written checkpoint works with predict, evaluate, export and finetune-pq.
    """
    from cops.api.released import import_checkpoint as convert

    result = convert(
        source, out, recipe, backbone_only=backbone_only, overrides=overrides, data=data
    )
    if not state.quiet:
        console.print(f"Wrote {result.out} ({result.tensors} tensors)")
        for key, reason in result.dropped.items():
            console.print(f"  not carried over: {key}: {reason}")
