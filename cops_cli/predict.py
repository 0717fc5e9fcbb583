"""`cops predict`: panoptic segmentation of image files with a checkpoint or an export.

Wiring only: the options go to :meth:`cops.api.Model.predict_folder`; skipped
files are reported as they come and listed at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cops.cli import options as opts
from cops.console import console, err_console, print_table, set_activity, state, work_progress


def predict(
    inputs: Annotated[
        Path,
        typer.Argument(
            help="An image file, a folder (searched recursively), a video file "
            "(mp4, avi, mov, mkv…) or, with --sequence, a folder of video frames."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("predictions"),
    checkpoint: opts.CheckpointOpt = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="An export from `cops export` (.onnx or .pt)."),
    ] = None,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write colour overlays with a legend.")
    ] = False,
    batch_size: opts.BatchSizeOpt = 1,
    device: opts.InferDeviceOpt = "auto",
    backend: opts.BackendOpt = "auto",
    test_size: opts.TestSizeOpt = None,
    precision: opts.PrecisionOpt = None,
    runtime: opts.RuntimeOpt = None,
    sequence: Annotated[
        bool,
        typer.Option("--sequence", help="Read a folder of images as the frames of one video."),
    ] = False,
    every: Annotated[
        int, typer.Option("--every", min=1, help="Videos: predict every N-th frame.")
    ] = 1,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Videos: stop after N frames.")
    ] = None,
    track_iou: Annotated[
        float,
        typer.Option(
            "--track-iou",
            min=0.01,
            max=1.0,
            help="Videos: mask IoU with the previous frame below which a thing gets a new id.",
        ),
    ] = 0.5,
) -> None:
    """Predict panoptic segmentations of images (jpg, jpeg, png, bmp, tif) or videos.

    Writes OUT/panoptic/NAME.png (COCO panoptic ids) and OUT/panoptic.json (segments with
    categories, areas, boxes and instance scores), plus OUT/overlay/NAME.png with --overlay.
    Files that cannot be read are reported and skipped; the exit code is 1 if any failed. A
    video gives a PNG per frame, thing ids kept by mask overlap, and OUT/overlay.mp4.
    """
    from cops.api.model import load_either
    from cops.inference.video import VIDEO_SUFFIXES

    if sequence or inputs.suffix.lower() in VIDEO_SUFFIXES:
        video = dict(sequence=sequence, every=every, max_frames=max_frames, track_iou=track_iou)
        model_options = opts.model_options(device, backend, test_size, precision, runtime)
        video.update(overlay=overlay, batch_size=batch_size)
        return _predict_video(inputs, out, checkpoint, model, model_options, video)

    set_activity(
        f"prediction into {out}",
        f"run the command again ({out / 'panoptic.json'} is written only once every image is done)",
    )
    with work_progress("predict") as progress:
        result = load_either(
            checkpoint, model, **opts.model_options(device, backend, test_size, precision, runtime)
        ).predict_folder(
            inputs,
            out,
            overlay=overlay,
            batch_size=batch_size,
            progress=progress,
            skipped=lambda _, why: err_console.print(f"[red]skipped[/red] {why}", soft_wrap=True),
        )
    if not state.quiet:
        console.print(f"Predicted {result.written} image(s) into {out}")
    if result.failed:
        print_table(_failures_table(result.failed))
        raise typer.Exit(1)


def _predict_video(
    inputs: Path,
    out: Path,
    checkpoint: Path | None,
    model: Path | None,
    model_options: dict,
    options: dict,
) -> None:
    """`cops predict` on a video file or a sequence of frames."""
    from cops.api.model import load_either

    set_activity(
        f"video prediction into {out}",
        f"run the command again ({out / 'panoptic.json'} is written only once every frame is done)",
    )
    with work_progress("predict", rate="frames") as progress:
        result = load_either(checkpoint, model, **model_options).predict_video(
            inputs, out, **options, progress=progress
        )
    if not state.quiet:
        shown = f", overlay {result.overlay}" if result.overlay else ""
        console.print(
            f"Predicted {result.frames} frame(s) into {out} ({result.tracks} thing tracks{shown})"
        )


def _failures_table(failed: list[tuple[Path, str]]) -> Table:
    """The files that could not be processed, with the reason."""
    from cops.console import counts_table

    return counts_table(f"{len(failed)} file(s) failed", ["file", "problem"], failed)
