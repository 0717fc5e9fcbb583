"""`cops check-data`: validate a prepared dataset before training on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cops.console import console, counts_table, print_table, split_progress, state

if TYPE_CHECKING:
    from cops.evaluation.data_check import DataCheckReport


def check_data(
    data: Annotated[Path, typer.Argument(help="Prepared dataset folder (panoptic_<split>.json).")],
    split: Annotated[
        str | None, typer.Option("--split", help="Split to check (default: every split).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=1, help="Worker processes (default: CPUs, up to 8)."),
    ] = None,
) -> None:
    """Check a prepared dataset before training on it; exit status 1 on errors.

    Lists every problem, ours or another tool's dataset: files, sizes, segment ids, areas,
    boxes, categories, crowd marks, duplicates, unused classes, void, and the ground truth
    scored against itself (PQ 100). Warnings alone exit with 0.
    """
    from cops.evaluation.data_check import check_dataset

    jobs = workers if workers is not None else max(1, min(8, os.cpu_count() or 1))
    with split_progress() as progress:
        report = check_dataset(data, split, workers=jobs, progress=progress, json_out=json_path)
    print_table(_splits_table(report))
    if report.errors or report.warnings:
        print_table(_problems_table(report))
    if not state.quiet:
        verdict = "[red]errors[/red]" if report.errors else "[green]ok[/green]"
        console.print(
            f"{escape(str(data))}: {verdict} ({report.errors} error(s), "
            f"{report.warnings} warning(s))"
        )
    if report.errors:
        raise typer.Exit(1)


def _splits_table(report: DataCheckReport) -> Table:
    """Images, void share and self-PQ per split."""
    rows = [
        [
            s.split,
            s.images,
            "-" if s.void_fraction is None else f"{100 * s.void_fraction:.1f}%",
            "-" if s.self_pq is None else f"{s.self_pq:.2f}",
            s.count("error"),
            s.count("warning"),
        ]
        for s in report.splits
    ]
    columns = ["split", "images", "void", "PQ vs itself", "errors", "warnings"]
    return counts_table(f"Dataset {report.root}", columns, rows)


def _problems_table(report: DataCheckReport) -> Table:
    """Problems by split and kind, with example files and messages."""
    table = Table(title="Problems by kind")
    for name in ("split", "kind", "severity", "count", "examples"):
        table.add_column(name, overflow="fold", justify="right" if name == "count" else "left")
    for split, kind, severity, count, examples in report.by_kind():
        colour = "red" if severity == "error" else "yellow"
        shown = "\n".join(escape(f"{p.file}: {p.message}") for p in examples)
        table.add_row(split, kind, f"[{colour}]{severity}[/{colour}]", str(count), shown)
    return table
