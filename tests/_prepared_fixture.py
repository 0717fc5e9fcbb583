"""Writes tiny prepared datasets through the shared panoptic I/O, for the reader tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cops.datasets.conversion import Category, SplitPaths
from cops.datasets.panoptic_io import write_image, write_panoptic_png
from cops.files import atomic_write_json

CATEGORIES = [
    Category(1, "person", True, (220, 20, 60)),
    Category(3, "car", True, (0, 0, 142)),
    Category(92, "road", False, (128, 64, 128)),
    Category(184, "sky", False, (70, 130, 180)),
]


@dataclass
class Item:
    """One image: its pixels, its segment id map and each segment's category (and crowd flag)."""

    name: str
    image: np.ndarray
    panoptic: np.ndarray
    category_of: dict[int, int]
    crowd: set[int] = field(default_factory=set)


def street_item(name: str, height: int = 24, width: int = 32, seed: int = 0) -> Item:
    """Sky on top, road below, two touching cars and a crowd of people on the road."""
    panoptic = np.zeros((height, width), dtype=np.int64)
    panoptic[: height // 3] = 50
    panoptic[height // 3 :] = 60
    panoptic[height // 2 :, 2:10] = 7
    panoptic[height // 2 :, 10:16] = 8
    panoptic[height // 2 :, width - 6 :] = 9
    panoptic[-2:, :] = 0
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Item(name, image, panoptic, {50: 184, 60: 92, 7: 3, 8: 3, 9: 1}, crowd={9})


def segments_info(item: Item) -> list[dict[str, Any]]:
    """COCO segments_info for an item, areas and boxes measured on its map."""
    info = []
    for seg_id, category in item.category_of.items():
        ys, xs = np.nonzero(item.panoptic == seg_id)
        box = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        info.append(
            {
                "id": seg_id,
                "category_id": category,
                "iscrowd": int(seg_id in item.crowd),
                "area": int(ys.size),
                "bbox": box,
            }
        )
    return info


def write_split(
    root: Path, split: str, items: list[Item], categories: list[Category] = CATEGORIES
) -> SplitPaths:
    """Write images (PNG, lossless), panoptic PNGs and the split JSON under `root`."""
    paths = SplitPaths(root, split)
    images, annotations = [], []
    for image_id, item in enumerate(items, start=1):
        write_image(paths.images / f"{item.name}.png", item.image)
        write_panoptic_png(paths.panoptic / f"{item.name}.png", item.panoptic)
        height, width = item.panoptic.shape
        images.append(
            {"id": image_id, "file_name": f"{item.name}.png", "height": height, "width": width}
        )
        annotations.append(
            {
                "image_id": image_id,
                "file_name": f"{item.name}.png",
                "segments_info": segments_info(item),
            }
        )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [c.to_json() for c in categories],
    }
    atomic_write_json(paths.json, data)
    return paths


def load_json(paths: SplitPaths) -> dict[str, Any]:
    """The split's JSON, for tests that corrupt it."""
    return json.loads(paths.json.read_text())


def save_json(paths: SplitPaths, data: Any) -> None:
    """Overwrite the split's JSON."""
    paths.json.write_text(json.dumps(data))
