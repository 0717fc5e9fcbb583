"""`cops prepare-data`: convert a source dataset into the prepared COCO-panoptic layout."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from cops.console import (
    console,
    counts_table,
    print_table,
    set_activity,
    split_progress,
    state,
)
from cops.datasets.conversion import SplitSummary
from cops.errors import CopsError

app = typer.Typer(
    help=(
        "Convert a dataset into the prepared format (COCO panoptic PNG + JSON) that every "
        "training and evaluation command reads."
    ),
    no_args_is_help=True,
)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder of the prepared dataset.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", "-j", min=1, help="Worker processes (default: CPU count, up to 8)."),
]
SplitsOpt = Annotated[
    str, typer.Option("--splits", help="Comma-separated splits to convert, e.g. train,val.")
]
LinkOpt = Annotated[
    str,
    typer.Option("--link", help="How source images enter the output: copy, symlink or hardlink."),
]


def _workers(value: int | None) -> int:
    return value if value is not None else max(1, min(8, os.cpu_count() or 1))


def _splits(value: str) -> list[str]:
    splits = [s.strip() for s in value.split(",") if s.strip()]
    if not splits:
        raise CopsError(f"--splits '{value}': expected comma-separated split names, e.g. train,val")
    return splits


def _check_link(value: str) -> str:
    if value not in ("copy", "symlink", "hardlink"):
        raise CopsError(f"--link '{value}': expected one of copy, symlink, hardlink")
    return value


def _convert(
    out: Path,
    convert: Callable[..., list[SplitSummary]],
    *args: object,
    splits: str,
    workers: int | None,
    **options: object,
) -> None:
    """Run a converter on the checked options with a progress bar, then show its summary."""
    set_activity(
        f"prepare-data into {out}",
        "run the same command again (finished splits are in place; the interrupted one keeps "
        "its previous version)",
    )
    with split_progress() as progress:
        summaries = convert(
            *args, splits=_splits(splits), workers=_workers(workers), progress=progress, **options
        )
    report_summary(out, summaries)


def report_summary(out: Path, summaries: Sequence[SplitSummary]) -> None:
    """Show images and segments per class for each split (as recorded in summary.json)."""
    names = sorted({name for s in summaries for name in s.segments})
    rows = [["images", *(s.images for s in summaries)]]
    rows += [[name, *(s.segments.get(name, 0) for s in summaries)] for name in names]
    rows.append(["(crowd segments)", *(s.crowd for s in summaries)])
    print_table(counts_table(f"Prepared dataset {out}", ["", *(s.split for s in summaries)], rows))
    if not state.quiet:
        console.print(f"Wrote {', '.join(f'panoptic_{s.split}.json' for s in summaries)} in {out}")


@app.command("synthetic")
def synthetic(
    out: OutOpt = Path("data/synthetic"),
    preset: Annotated[
        str, typer.Option(help="Size preset: 'default' (256×512) or 'tiny' (for tests).")
    ] = "default",
    num_train: Annotated[
        int | None, typer.Option(min=1, help="Training images (default: from the preset).")
    ] = None,
    num_val: Annotated[
        int | None, typer.Option(min=1, help="Validation images (default: from the preset).")
    ] = None,
    height: Annotated[
        int | None, typer.Option(min=8, help="Image height (default: from the preset).")
    ] = None,
    width: Annotated[
        int | None, typer.Option(min=8, help="Image width (default: from the preset).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    splits: SplitsOpt = "train,val",
    workers: WorkersOpt = None,
) -> None:
    """Generate the embedded synthetic street-scene dataset (no download needed)."""
    from cops.datasets.synthetic import prepare_synthetic

    _convert(
        out,
        prepare_synthetic,
        out,
        splits=splits,
        workers=workers,
        preset=preset,
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        height=height,
        width=width,
    )


@app.command("cityscapes")
def cityscapes(
    root: Annotated[Path, typer.Argument(help="Cityscapes root holding leftImg8bit/ and gtFine/.")],
    out: OutOpt = Path("data/cityscapes"),
    splits: SplitsOpt = "train,val",
    workers: WorkersOpt = None,
    link: LinkOpt = "copy",
) -> None:
    """Convert Cityscapes (19 evaluation classes) as the official createPanopticImgs does."""
    from cops.datasets.cityscapes import prepare_cityscapes

    _convert(
        out, prepare_cityscapes, root, out, splits=splits, workers=workers, link=_check_link(link)
    )


@app.command("coco")
def coco(
    root: Annotated[
        Path,
        typer.Argument(
            help="COCO 2017 root (annotations/, train2017/, val2017/) or any COCO-panoptic dataset."
        ),
    ],
    out: OutOpt = Path("data/coco"),
    splits: SplitsOpt = "train,val",
    workers: WorkersOpt = None,
    link: LinkOpt = "symlink",
    annotations: Annotated[
        str | None,
        typer.Option(help="Panoptic JSON of a custom dataset; '{split}' stands for the split."),
    ] = None,
    panoptic_dir: Annotated[
        str | None, typer.Option(help="Folder of its panoptic PNGs ('{split}' allowed).")
    ] = None,
    images_dir: Annotated[
        str | None, typer.Option(help="Folder of its images ('{split}' allowed).")
    ] = None,
) -> None:
    """Validate and index a COCO-panoptic dataset (COCO 2017 or custom categories).

    Each split's files are where --annotations, --panoptic-dir and --images-dir point, else in
    the COCO 2017 layout (annotations/panoptic_{split}2017.json and its PNG folder, {split}2017/),
    else in the prepared layout. Category ids are kept; contiguous training ids follow the order
    of the JSON's categories.
    """
    from cops.datasets.coco import prepare_coco

    _convert(
        out,
        prepare_coco,
        root,
        out,
        splits=splits,
        workers=workers,
        link=_check_link(link),
        annotations=annotations,
        panoptic_dir=panoptic_dir,
        images_dir=images_dir,
    )


@app.command("masks")
def masks(
    root: Annotated[
        Path,
        typer.Argument(help="Folder with images/{split}/, semantic/{split}/, instance/{split}/."),
    ],
    classes: Annotated[
        Path,
        typer.Option(
            "--classes",
            help="YAML: 'ignore: 255' (void value), then 'classes:' a list of "
            "{id, name, isthing, color}; id = the class value in the semantic PNGs.",
        ),
    ],
    out: OutOpt = Path("data/masks"),
    splits: SplitsOpt = "train,val",
    workers: WorkersOpt = None,
    link: LinkOpt = "copy",
    images: Annotated[str, typer.Option(help="Name of the image folder under ROOT.")] = "images",
    semantic: Annotated[
        str, typer.Option(help="Name of the semantic mask folder under ROOT.")
    ] = "semantic",
    instance: Annotated[
        str, typer.Option(help="Name of the instance mask folder under ROOT.")
    ] = "instance",
    crowd_id: Annotated[
        int | None,
        typer.Option(
            help="Instance value that marks crowd regions (besides 0 on thing pixels, which "
            "always does)."
        ),
    ] = None,
) -> None:
    """Convert images with a semantic and an instance mask PNG each (matched by name).

    Semantic PNGs hold a class value per pixel, instance PNGs an instance id per pixel (8- or
    16-bit greyscale, 0 = none). Stuff pixels' instance ids are ignored; each (thing class,
    instance id) is a segment; thing pixels with instance 0 (or --crowd-id) become one crowd
    segment per class; pixels with the ignore value are void.
    """
    from cops.datasets.masks import MaskFolders, prepare_masks

    _convert(
        out,
        prepare_masks,
        root,
        out,
        classes,
        splits=splits,
        workers=workers,
        link=_check_link(link),
        folders=MaskFolders(images, semantic, instance),
        crowd_id=crowd_id,
    )
