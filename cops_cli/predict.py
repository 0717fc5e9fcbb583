"""`cops predict`: panoptic segmentation of image files with a checkpoint or an export.

Wiring only: image discovery and reading (:mod:`cops.inference.image_files`), the predictor,
and the COCO panoptic writer with optional overlays (:mod:`cops.inference.outputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cops.cli.options import (
    BackendOpt,
    BatchSizeOpt,
    CheckpointOpt,
    InferDeviceOpt,
    TestSizeOpt,
    check_backend,
    parse_size,
)
from cops.console import console, err_console, make_progress, print_table, set_activity, state
from cops.errors import CopsError, DatasetError


def predict(
    inputs: Annotated[
        Path, typer.Argument(help="An image file or a folder (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("predictions"),
    checkpoint: CheckpointOpt = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="An export from `cops export` (.onnx or .pt)."),
    ] = None,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write colour overlays with a legend.")
    ] = False,
    batch_size: BatchSizeOpt = 1,
    device: InferDeviceOpt = "auto",
    backend: BackendOpt = "auto",
    test_size: TestSizeOpt = None,
) -> None:
    """Predict panoptic segmentations of images (jpg, jpeg, png, bmp, tif) of any size.

    Writes OUT/panoptic/NAME.png (COCO panoptic ids) and OUT/panoptic.json (segments with
    categories, areas, boxes and instance scores), plus OUT/overlay/NAME.png with --overlay.
    Files that cannot be read are reported and skipped; the exit code is 1 if any failed.
    """
    from cops.datasets.panoptic_io import read_image
    from cops.device import resolve_device
    from cops.inference.image_files import find_images
    from cops.inference.outputs import PredictionWriter
    from cops.inference.predictor import Predictor

    if (checkpoint is None) == (model is None):
        raise CopsError("give exactly one of --checkpoint (a training checkpoint) or --model")
    files = find_images(inputs)
    size = parse_size(test_size)
    backend = check_backend(backend)
    if model is not None:
        predictor = Predictor.from_export(model, backend=backend, test_size=size)
    else:
        if not checkpoint.is_file():
            raise CopsError(f"--checkpoint {checkpoint}: file not found")
        predictor = Predictor.from_checkpoint(
            checkpoint, device=resolve_device(device), backend=backend, test_size=size
        )
    failed: list[tuple[Path, str]] = []
    done = 0
    set_activity(
        f"prediction into {out}",
        f"run the command again ({out / 'panoptic.json'} is written only once every image is done)",
    )
    with (
        PredictionWriter(out, predictor.metadata["classes"], overlay=overlay) as writer,
        make_progress(description="predict") as progress,
    ):
        task = progress.add_task("", total=len(files))
        for start in range(0, len(files), batch_size):
            batch, images = [], []
            for path, name in files[start : start + batch_size]:
                try:
                    images.append(read_image(path))
                    batch.append((path, name))
                except DatasetError as exc:
                    failed.append((path, str(exc)))
                    err_console.print(f"[red]skipped[/red] {exc}", soft_wrap=True)
            for (path, name), image, pred in zip(
                batch, images, predictor.predict(images) if images else [], strict=True
            ):
                source = path.relative_to(inputs) if inputs.is_dir() else Path(path.name)
                writer.write(name, pred, image=image, file_name=source.as_posix())
                done += 1
            progress.advance(task, len(files[start : start + batch_size]))
    if not state.quiet:
        console.print(f"Predicted {done} image(s) into {out}")
    if failed:
        print_table(_failures_table(failed))
        raise typer.Exit(1)


def _failures_table(failed: list[tuple[Path, str]]) -> Table:
    """The files that could not be processed, with the reason."""
    from cops.console import counts_table

    return counts_table(f"{len(failed)} file(s) failed", ["file", "problem"], failed)
