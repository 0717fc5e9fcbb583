"""Built-in class tables of the recipes' datasets, so a released model runs without its dataset.

Cityscapes' 19 evaluation classes live in :mod:`cops.datasets.cityscapes`, the synthetic scenes'
in :mod:`cops.datasets.street_scene`; COCO panoptic's 133 categories (80 things, 53 stuff: ids,
names, supercategories, thing flags and the standard colours, in id order, which is the order of
the original's contiguous ids) ship as the package data file ``coco_categories.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources

import numpy as np

from cops.datasets.conversion import Category
from cops.datasets.prepared import CategoryInfo
from cops.errors import CopsError

COCO_CATEGORIES_FILE = "coco_categories.json"
BUILTIN_DATASETS = ("cityscapes", "coco", "synthetic")


@cache
def coco_categories() -> tuple[Category, ...]:
    """COCO panoptic's 133 categories in id order, read from the package's data file."""
    text = resources.files("cops.datasets").joinpath(COCO_CATEGORIES_FILE).read_text("utf-8")
    return tuple(
        Category(
            id=entry["id"],
            name=entry["name"],
            isthing=bool(entry["isthing"]),
            color=tuple(entry["color"]),
            supercategory=entry["supercategory"],
        )
        for entry in json.loads(text)
    )


def builtin_categories(dataset: str) -> tuple[Category, ...]:
    """The categories of a recipe dataset (``cityscapes``, ``coco`` or ``synthetic``)."""
    if dataset == "cityscapes":
        from cops.datasets.cityscapes import CATEGORIES

        return CATEGORIES
    if dataset == "coco":
        return coco_categories()
    if dataset == "synthetic":
        from cops.datasets.street_scene import SYNTHETIC_CATEGORIES

        return tuple(SYNTHETIC_CATEGORIES)
    raise CopsError(f"dataset {dataset!r}: no built-in classes; expected one of {BUILTIN_DATASETS}")


def category_info(categories: Sequence[Category]) -> CategoryInfo:
    """The reader's category metadata of `categories` (train ids follow their order)."""
    return CategoryInfo(
        category_ids=np.asarray([c.id for c in categories], dtype=np.int64),
        names=tuple(c.name for c in categories),
        colors=np.asarray([c.color for c in categories], dtype=np.uint8).reshape(-1, 3),
        isthing=np.asarray([c.isthing for c in categories], dtype=bool),
    )
