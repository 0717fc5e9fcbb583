"""`cops evaluate`: PQ/SQ/RQ, mIoU and mask AP of a checkpoint on a prepared split.

Wiring only: the options go to :meth:`cops.api.Model.evaluation` (which writes
``metrics.json``); its results are printed as rich tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cops.cli import options as opts
from cops.console import console, print_table, state, work_progress


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def panoptic_table(title: str, metrics: dict[str, Any]) -> Table:
    """PQ, SQ, RQ and category counts for all/things/stuff, then mIoU and mask AP (COCO's, and
    the official Cityscapes AP when the evaluation computed it)."""
    table = Table(title=title)
    for name in ("", "PQ", "SQ", "RQ", "#cat"):
        table.add_column(name, justify="left" if not name else "right")
    for group in ("all", "things", "stuff"):
        row = metrics["panoptic"][group]
        table.add_row(group, _fmt(row["pq"]), _fmt(row["sq"]), _fmt(row["rq"]), str(row["n"]))
    table.add_section()
    table.add_row("mIoU", _fmt(metrics.get("miou")), "", "", "")
    table.add_row("mask AP (COCO)", _fmt(metrics.get("ap")), "", "", "")
    official = metrics.get("cityscapes_ap")
    if official is not None:
        table.add_row("AP (Cityscapes)", _fmt(official.get("ap")), "", "", "")
    return table


def per_class_table(metrics: dict[str, Any], isthing: dict[str, bool]) -> Table:
    """One row per class: kind, PQ, SQ, RQ, TP/FP/FN and semantic IoU."""
    table = Table(title="Per class")
    for name in ("class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU"):
        table.add_column(name, justify="left" if name in ("class", "kind") else "right")
    ious = metrics.get("iou_per_class", {})
    for name, row in metrics["panoptic"]["per_class"].items():
        row = row or {}
        table.add_row(
            name,
            "thing" if isthing.get(name) else "stuff",
            _fmt(row.get("pq")),
            _fmt(row.get("sq")),
            _fmt(row.get("rq")),
            str(row.get("tp", 0)),
            str(row.get("fp", 0)),
            str(row.get("fn", 0)),
            _fmt(ious.get(name)),
        )
    return table


def evaluate(
    checkpoint: opts.CheckpointOpt = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset folder (default: the recipe's data.root)."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split to evaluate (default: eval.split).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output folder (default: eval-SPLIT beside the checkpoint)."
        ),
    ] = None,
    per_image: Annotated[
        bool, typer.Option("--per-image", help="Also write per-image PQ to OUT/per_image.csv.")
    ] = False,
    save_predictions: Annotated[
        bool,
        typer.Option(
            "--save-predictions",
            help="Write COCO panoptic predictions: OUT/predictions/*.png + OUT/predictions.json.",
        ),
    ] = False,
    max_images: Annotated[
        int | None,
        typer.Option("--max-images", min=1, help="Evaluate only the first N images."),
    ] = None,
    batch_size: opts.BatchSizeOpt = 1,
    device: opts.InferDeviceOpt = "auto",
    backend: opts.BackendOpt = "auto",
    test_size: opts.TestSizeOpt = None,
    precision: opts.PrecisionOpt = None,
    runtime: opts.RuntimeOpt = None,
    workers: Annotated[
        int, typer.Option("--workers", "-j", min=0, help="Image-reading worker processes.")
    ] = 2,
    html_report: Annotated[
        bool, typer.Option("--report", help="Also write OUT/report.html (plots, worst images).")
    ] = False,
    report_images: Annotated[
        int, typer.Option("--report-images", min=0, help="Lowest-PQ images in the report.")
    ] = 12,
) -> None:
    """Evaluate a checkpoint: PQ/SQ/RQ (all, things, stuff, per class), mIoU and mask AP.

    Runs the CNN and the AMWC solver on every image of the split, scores the panoptic maps as
    panopticapi does (values in percent) and writes OUT/metrics.json.
    """
    from cops.api.model import load

    with work_progress("evaluate") as progress:
        result = load(
            opts.require_checkpoint(checkpoint),
            **opts.model_options(device, backend, test_size, precision, runtime),
            kind="checkpoint",
        ).evaluation(
            data,
            split,
            out=out,
            per_image=per_image,
            save_predictions=save_predictions,
            max_images=max_images,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            report=html_report,
            report_images=report_images,
        )
    report = result.report
    title = f"{report['checkpoint']} on {report['split']} ({result.images} images)"
    print_table(panoptic_table(title, report))
    print_table(per_class_table(report, result.isthing))
    if not state.quiet:
        seconds = report["seconds_per_image"]
        timing = ", ".join(f"{k} {v:.3f}" for k, v in seconds.items())
        console.print(f"Seconds per image: {timing}. Wrote {result.out / 'metrics.json'}")
        if result.html is not None:
            console.print(f"Report: {result.html}")
