"""Cityscapes (gtFine) to prepared panoptic format, equal to the official ``createPanopticImgs``.

Segment ids follow Cityscapes' own encoding: a stuff region keeps its label id (road = 7), a thing
instance keeps its instance id (label id · 1000 + k), and a thing region without an instance id
(pixel value = label id of a thing class) becomes a crowd segment. Labels ignored in evaluation
(unlabeled, ego vehicle, caravan, …) become void (id 0). Image ids are ``<city>_<seq>_<frame>``.

Layout written under OUT (file names already start with the city, so each split is one flat folder):
``images/{split}/<id>_leftImg8bit.png``, ``panoptic/{split}/<id>_gtFine_panoptic.png`` and
``panoptic_{split}.json``.
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
    Category,
    ConvertedImage,
    ProgressFn,
    SplitPaths,
    SplitSummary,
    convert_split,
    place_file,
)
from cops.datasets.panoptic_io import read_image, segment_stats, write_panoptic_png
from cops.errors import CopsError, DatasetError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_instanceIds.png"
PANOPTIC_SUFFIX = "_gtFine_panoptic.png"
NUM_LABEL_IDS = 34
"""Cityscapes label ids run 0..33; those not in CITYSCAPES_CLASSES are ignored in evaluation."""
INSTANCE_DIVISOR = 1000


@dataclass(frozen=True)
class CityscapesClass:
    """One of the 19 Cityscapes evaluation classes, with the dataset's own facts."""

    id: int
    train_id: int
    name: str
    category: str
    isthing: bool
    color: tuple[int, int, int]


CITYSCAPES_CLASSES: tuple[CityscapesClass, ...] = (
    CityscapesClass(7, 0, "road", "flat", False, (128, 64, 128)),
    CityscapesClass(8, 1, "sidewalk", "flat", False, (244, 35, 232)),
    CityscapesClass(11, 2, "building", "construction", False, (70, 70, 70)),
    CityscapesClass(12, 3, "wall", "construction", False, (102, 102, 156)),
    CityscapesClass(13, 4, "fence", "construction", False, (190, 153, 153)),
    CityscapesClass(17, 5, "pole", "object", False, (153, 153, 153)),
    CityscapesClass(19, 6, "traffic light", "object", False, (250, 170, 30)),
    CityscapesClass(20, 7, "traffic sign", "object", False, (220, 220, 0)),
    CityscapesClass(21, 8, "vegetation", "nature", False, (107, 142, 35)),
    CityscapesClass(22, 9, "terrain", "nature", False, (152, 251, 152)),
    CityscapesClass(23, 10, "sky", "sky", False, (70, 130, 180)),
    CityscapesClass(24, 11, "person", "human", True, (220, 20, 60)),
    CityscapesClass(25, 12, "rider", "human", True, (255, 0, 0)),
    CityscapesClass(26, 13, "car", "vehicle", True, (0, 0, 142)),
    CityscapesClass(27, 14, "truck", "vehicle", True, (0, 0, 70)),
    CityscapesClass(28, 15, "bus", "vehicle", True, (0, 60, 100)),
    CityscapesClass(31, 16, "train", "vehicle", True, (0, 80, 100)),
    CityscapesClass(32, 17, "motorcycle", "vehicle", True, (0, 0, 230)),
    CityscapesClass(33, 18, "bicycle", "vehicle", True, (119, 11, 32)),
)
"""Ordered by train id, so contiguous ids derived from the category order are Cityscapes' own."""

CATEGORIES: tuple[Category, ...] = tuple(
    Category(c.id, c.name, c.isthing, c.color, c.category) for c in CITYSCAPES_CLASSES
)
_BY_LABEL_ID = {c.id: c for c in CITYSCAPES_CLASSES}


@dataclass(frozen=True)
class _Item:
    """One image/label pair found in the source tree."""

    image_id: str
    image: Path
    label: Path


def _read_instance_ids(path: Path) -> np.ndarray:
    """Read a ``*_instanceIds.png`` as a 2-D integer array, with errors naming the file."""
    if not path.is_file():
        raise DatasetError(f"{path}: label file not found")
    data = np.fromfile(path, dtype=np.uint8)
    ids = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if ids is None:
        raise DatasetError(f"{path}: not a readable PNG (corrupt or unsupported format)")
    if ids.ndim != 2 or ids.dtype not in (np.uint8, np.uint16):
        raise DatasetError(
            f"{path}: expected a single-channel 8/16-bit instanceIds PNG, "
            f"got shape {ids.shape} dtype {ids.dtype}"
        )
    return ids


def instance_ids_to_panoptic(ids: np.ndarray, source: Path) -> tuple[np.ndarray, list[dict]]:
    """Map a Cityscapes instanceIds array to panoptic segment ids [H, W] and their segments_info."""
    values = np.flatnonzero(np.bincount(ids.ravel()))
    lookup = np.zeros(int(values[-1]) + 1, dtype=np.int64)
    for value in values:
        label_id = int(value) // INSTANCE_DIVISOR if value >= INSTANCE_DIVISOR else int(value)
        if label_id >= NUM_LABEL_IDS:
            raise DatasetError(
                f"{source}: pixel value {value} has label id {label_id}; "
                f"expected Cityscapes label ids 0..{NUM_LABEL_IDS - 1}"
            )
        if label_id in _BY_LABEL_ID:
            lookup[value] = value
    panoptic = lookup[ids]
    segments = []
    for segment_id, (area, bbox) in sorted(segment_stats(panoptic).items()):
        crowd = segment_id < INSTANCE_DIVISOR
        cls = _BY_LABEL_ID[segment_id if crowd else segment_id // INSTANCE_DIVISOR]
        segments.append(
            {
                "id": segment_id,
                "category_id": cls.id,
                "area": area,
                "bbox": bbox,
                "iscrowd": int(crowd and cls.isthing),
            }
        )
    return panoptic, segments


def _convert_one(item: _Item, *, paths: SplitPaths, link: str) -> ConvertedImage:
    """Write one image (linked or copied) and its panoptic PNG; return the JSON entries."""
    ids = _read_instance_ids(item.label)
    height, width = read_image(item.image).shape[:2]
    if (height, width) != ids.shape:
        raise DatasetError(
            f"{item.image}: image is {width}×{height} but its label {item.label.name} is "
            f"{ids.shape[1]}×{ids.shape[0]}; expected equal sizes"
        )
    panoptic, segments = instance_ids_to_panoptic(ids, item.label)
    image_name = item.image_id + IMAGE_SUFFIX
    panoptic_name = item.image_id + PANOPTIC_SUFFIX
    place_file(item.image, paths.images / image_name, link)
    write_panoptic_png(paths.panoptic / panoptic_name, panoptic)
    return ConvertedImage(
        image={"id": item.image_id, "width": width, "height": height, "file_name": image_name},
        annotation={
            "image_id": item.image_id,
            "file_name": panoptic_name,
            "segments_info": segments,
        },
    )


def _index_folder(folder: Path, suffix: str) -> dict[str, Path]:
    """Map image id → file for ``folder/<city>/*<suffix>``, rejecting ids found in two cities."""
    found: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*/*{suffix}")):
        image_id = path.name[: -len(suffix)]
        if image_id in found:
            raise DatasetError(f"{path}: image id {image_id} also found at {found[image_id]}")
        found[image_id] = path
    return found


def _find_pairs(root: Path, split: str) -> list[_Item]:
    """Pair every ``leftImg8bit`` image of a split with its ``gtFine`` instanceIds label."""
    if split == "test":
        raise DatasetError(
            f"{root}: the Cityscapes test split has no public panoptic labels (gtFine/test holds "
            "placeholders); prepare train/val, and run `cops predict` on leftImg8bit/test"
        )
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: folder not found; expected the official Cityscapes layout "
                f"leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX}, "
                f"gtFine/{split}/<city>/*{LABEL_SUFFIX}"
            )
    images = _index_folder(image_dir, IMAGE_SUFFIX)
    labels = _index_folder(label_dir, LABEL_SUFFIX)
    for image_id, path in images.items():
        if image_id not in labels:
            expected = label_dir / path.parent.name / (image_id + LABEL_SUFFIX)
            raise DatasetError(f"{path}: no matching label; expected {expected}")
    for image_id, path in labels.items():
        if image_id not in images:
            expected = image_dir / path.parent.name / (image_id + IMAGE_SUFFIX)
            raise DatasetError(f"{path}: no matching image; expected {expected}")
    if not images:
        raise DatasetError(f"{image_dir}: no *{IMAGE_SUFFIX} files in any city folder")
    return [_Item(image_id, images[image_id], labels[image_id]) for image_id in images]


def prepare_cityscapes(
    root: Path,
    out: Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    workers: int = 1,
    progress: ProgressFn | None = None,
    link: str = "copy",
) -> list[SplitSummary]:
    """Convert Cityscapes gtFine splits under `root` into the prepared format under `out`.

    `link` places images as copies (portable), absolute symlinks or hard links. Every split is
    checked (folders, pairs) before any is written; the `test` split is rejected (no labels).
    """
    if link not in LINK_MODES:
        raise CopsError(f"link mode {link!r}: expected one of {', '.join(LINK_MODES)}")
    root, out = Path(root), Path(out)
    found = {split: _find_pairs(root, split) for split in splits}
    summaries = []
    for split, items in found.items():
        paths = SplitPaths(out, split)
        summaries.append(
            convert_split(
                paths,
                items,
                functools.partial(_convert_one, link=link),
                CATEGORIES,
                workers=workers,
                progress=progress,
                info={"description": f"Cityscapes gtFine {split}, panoptic", "source": str(root)},
            )
        )
    return summaries
