"""`cops export`: a checkpoint's cost network to ONNX or TorchScript, with its metadata JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cops.cli.options import CheckpointOpt, TestSizeOpt, parse_size, require_checkpoint
from cops.console import console, state


def export(
    checkpoint: CheckpointOpt = None,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="onnx (opset 18, dynamic H/W) or torchscript.")
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Model file (default: model.onnx / model.pt beside the checkpoint)."
        ),
    ] = None,
    test_size: TestSizeOpt = None,
) -> None:
    """Export the CNN and its cost scalars for deployment: image → AMWC costs.

    Writes the model and, beside it, OUT.json (e.g. model.onnx.json) with the classes, thing
    flags, colours, edge distances, normalisation, minimum areas, cost scalars and the model
    file's hash. `cops predict --model OUT` runs it
    with the same solver and gives the same panoptic maps as the checkpoint.
    """
    from cops.api.model import load

    written = load(
        require_checkpoint(checkpoint),
        device="cpu",
        test_size=parse_size(test_size),
        kind="checkpoint",
    ).export(out, format_)
    if not state.quiet:
        console.print(f"Wrote {written} and {written}.json")
