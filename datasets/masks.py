"""Images with a semantic and an instance mask PNG each (as annotation tools export them) to the
prepared panoptic format (``cops prepare-data masks``).

Layout read, files matched by their path below the split folder without the suffix:
``SRC/images/{split}/NAME.(jpg|jpeg|png)``, ``SRC/semantic/{split}/NAME.png`` (a class value per
pixel, 8- or 16-bit greyscale), ``SRC/instance/{split}/NAME.png`` (an instance id per pixel, 8- or
16-bit greyscale, 0 = no instance). The classes file (:mod:`cops.datasets.mask_classes`) gives the
class values, names and thing flags.

Segments: one per stuff class present (instance ids of stuff pixels are ignored); one per
(thing class, instance id); thing pixels with instance 0, or with the instance value `crowd_id`,
form one crowd segment per class (``iscrowd`` 1, ignored by PQ as in COCO and Cityscapes).
Pixels with the ignore value are void. Segment ids count up from 1 in the order (class value,
instance id); image ids are the NAMEs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cops.datasets.conversion import (
    LINK_MODES,
    ConvertedImage,
    ProgressFn,
    SplitPaths,
    SplitSummary,
    convert_split,
    place_file,
)
from cops.datasets.mask_classes import MAX_VALUE, MaskClasses, read_mask_classes
from cops.datasets.panoptic_io import (
    PNG_GREY,
    PNG_PALETTE,
    png_format,
    read_image,
    segment_stats,
    write_panoptic_png,
)
from cops.errors import CopsError, DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_KEY = MAX_VALUE + 2
"""Segment key = class value · _KEY + (instance id + 1 for thing instances, else 0)."""
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}


@dataclass(frozen=True)
class MaskFolders:
    """Names of the three folders under SRC that hold one sub-folder per split."""

    images: str = "images"
    semantic: str = "semantic"
    instance: str = "instance"


@dataclass(frozen=True)
class _Item:
    """One image and its two masks."""

    name: str
    image: Path
    semantic: Path
    instance: Path


def read_label_png(path: Path, kind: str) -> np.ndarray:
    """A single-channel 8- or 16-bit PNG of integer labels; any other format is named."""
    depth, colour = png_format(path)
    if colour != PNG_GREY or depth not in (8, 16):
        hint = (
            " (a palette PNG stores colours; save the palette indices as a greyscale PNG)"
            if colour == PNG_PALETTE
            else ""
        )
        raise DatasetError(
            f"{path}: {kind} PNG is {depth}-bit {_COLOUR_TYPES.get(colour, colour)}; expected "
            f"a single-channel 8- or 16-bit greyscale PNG of {kind} values{hint}"
        )
    labels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetError(f"{path}: not a readable PNG (corrupt or truncated)")
    return labels


def masks_to_panoptic(
    semantic: np.ndarray,
    instance: np.ndarray,
    classes: MaskClasses,
    crowd_id: int | None,
    source: Path,
) -> tuple[np.ndarray, list[dict]]:
    """Segment ids [H, W] and segments_info of one image's semantic and instance masks."""
    by_value = classes.by_value()
    sem = semantic.astype(np.int64)
    values = np.flatnonzero(np.bincount(sem.ravel()))
    unknown = [int(v) for v in values if v != classes.ignore and v not in by_value]
    if unknown:
        raise DatasetError(
            f"{source}: class value(s) {unknown[:5]} not in the classes file (known: "
            f"{sorted(by_value)}, void: {classes.ignore})"
        )
    thing = np.zeros(int(values[-1]) + 1, dtype=bool)
    thing[[v for v, c in by_value.items() if c.isthing and v < thing.size]] = True
    inst = instance.astype(np.int64)
    crowd = inst == 0 if crowd_id is None else (inst == 0) | (inst == crowd_id)
    part = np.where(thing[sem] & ~crowd, inst + 1, 0)
    labelled = sem != classes.ignore
    keys, inverse = np.unique((sem * _KEY + part)[labelled], return_inverse=True)
    ids = np.zeros(sem.shape, dtype=np.int64)
    ids[labelled] = inverse.ravel() + 1
    stats = segment_stats(ids)
    segments = []
    for segment_id, key in enumerate(keys.tolist(), start=1):
        category = by_value[key // _KEY]
        area, bbox = stats[segment_id]
        crowded = category.isthing and key % _KEY == 0
        segments.append(
            {
                "id": segment_id,
                "category_id": category.id,
                "area": area,
                "bbox": bbox,
                "iscrowd": int(crowded),
            }
        )
    return ids, segments


def _convert_one(
    item: _Item, *, paths: SplitPaths, classes: MaskClasses, crowd_id: int | None, link: str
) -> ConvertedImage:
    """Check one image against its masks, write its panoptic PNG and place the image."""
    semantic = read_label_png(item.semantic, "semantic")
    instance = read_label_png(item.instance, "instance")
    height, width = read_image(item.image).shape[:2]
    for path, mask in ((item.semantic, semantic), (item.instance, instance)):
        if mask.shape != (height, width):
            raise DatasetError(
                f"{path}: mask is {mask.shape[1]}×{mask.shape[0]} but image {item.image.name} is "
                f"{width}×{height}; expected equal sizes"
            )
    ids, segments = masks_to_panoptic(semantic, instance, classes, crowd_id, item.semantic)
    image_name = item.name + item.image.suffix
    panoptic_name = item.name + ".png"
    place_file(item.image, paths.images / image_name, link)
    write_panoptic_png(paths.panoptic / panoptic_name, ids)
    return ConvertedImage(
        image={"id": item.name, "width": width, "height": height, "file_name": image_name},
        annotation={"image_id": item.name, "file_name": panoptic_name, "segments_info": segments},
    )


def _index(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """NAME (path below `folder` without suffix) → file, for files with one of `suffixes`."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        name = path.relative_to(folder).with_suffix("").as_posix()
        if name in found:
            raise DatasetError(f"{path}: {found[name].name} has the same name; expected one file")
        found[name] = path
    if not found:
        raise DatasetError(f"{folder}: no {'/'.join(suffixes)} files")
    return found


def find_mask_items(src: Path, split: str, folders: MaskFolders) -> list[_Item]:
    """Pair every image of a split with its two masks; any file without partners is named."""
    dirs = {
        kind: Path(src) / getattr(folders, kind) / split
        for kind in ("images", "semantic", "instance")
    }
    images = _index(dirs["images"], IMAGE_SUFFIXES)
    masks = {kind: _index(dirs[kind], (".png",)) for kind in ("semantic", "instance")}
    problems = []
    for name, path in images.items():
        problems += [
            f"{path}: no {kind} mask; expected {dirs[kind] / name}.png"
            for kind, found in masks.items()
            if name not in found
        ]
    for kind, found in masks.items():
        problems += [
            f"{path}: {kind} mask without an image; expected {dirs['images'] / name}.(jpg|png)"
            for name, path in found.items()
            if name not in images
        ]
    if problems:
        more = f" ({len(problems) - 1} more unpaired file(s))" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    return [_Item(n, p, masks["semantic"][n], masks["instance"][n]) for n, p in images.items()]


def _check_out(src: Path, out: Path) -> None:
    """Refuse an output folder that is the source, inside it, or holds it."""
    src, out = src.resolve(), out.resolve()
    if src == out or src in out.parents or out in src.parents:
        raise CopsError(f"{out}: output folder overlaps the source {src}; pick a separate folder")


def prepare_masks(
    src: Path,
    out: Path,
    classes_file: Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    workers: int = 1,
    progress: ProgressFn | None = None,
    link: str = "copy",
    folders: MaskFolders = MaskFolders(),
    crowd_id: int | None = None,
) -> list[SplitSummary]:
    """Convert semantic + instance mask splits under `src` into the prepared format under `out`.

    The classes file and every split's file pairing are checked before anything is written;
    decoding checks (formats, sizes, class values) run per image during conversion.
    """
    if link not in LINK_MODES:
        raise CopsError(f"link mode {link!r}: expected one of {', '.join(LINK_MODES)}")
    if crowd_id is not None and not 0 < crowd_id <= MAX_VALUE:
        raise CopsError(f"crowd id {crowd_id}: expected an instance value in 1..{MAX_VALUE}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetError(f"{src}: dataset folder not found")
    _check_out(src, out)
    classes = read_mask_classes(classes_file)
    found = {split: find_mask_items(src, split, folders) for split in splits}
    job = functools.partial(_convert_one, classes=classes, crowd_id=crowd_id, link=link)
    return [
        convert_split(
            SplitPaths(out, split),
            items,
            job,
            classes.categories,
            workers=workers,
            progress=progress,
            info={"description": f"semantic + instance masks, split {split}", "source": str(src)},
        )
        for split, items in found.items()
    ]
