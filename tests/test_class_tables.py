"""Built-in class tables: COCO panoptic's 133 categories as published, chosen by the recipe, so a
released COCO model imports and predicts with no prepared dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cops_reference import original_state_dict, save_as_original_checkpoint
from _prepared_fixture import CATEGORIES, street_item, write_split

from cops.datasets.class_tables import builtin_categories, coco_categories
from cops.datasets.panoptic_io import read_image, read_json, read_panoptic_png, write_image
from cops.errors import CopsError
from cops.inference.outputs import render_overlay
from cops.inference.released import recipe_classes
from cops.inference.result import PanopticPrediction
from cops.recipes.schema import load_recipe

COCO_TABLE_SHA256 = "dd2ffcc9ef5d4fa6a5d78c1ca81a816de79585d8cdb02942fd4788713e734fcc"
"""SHA-256 of ``[[id, name, isthing, color], …]`` (compact JSON) of panopticapi's
``panoptic_coco_categories.json``; detectron2's ``COCO_CATEGORIES`` gives the same digest."""


def test_coco_table_is_the_published_one():
    cats = coco_categories()
    canonical = [[c.id, c.name, int(c.isthing), list(c.color)] for c in cats]
    digest = hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()
    assert digest == COCO_TABLE_SHA256
    assert len(cats) == 133 and sum(c.isthing for c in cats) == 80
    ids = [c.id for c in cats]
    assert ids == sorted(set(ids)) and ids[0] == 1 and ids[-1] == 200
    assert len({c.name for c in cats}) == 133 and len({c.color for c in cats}) == 133
    assert cats[0].name == "person" and cats[0].color == (220, 20, 60) and cats[0].isthing
    assert cats[-1].name == "rug-merged" and not cats[-1].isthing
    assert all(c.supercategory for c in cats)


def _plain(classes: Any) -> dict[str, list]:
    """The class table as plain lists, whether it comes as a dict or as a ClassList (issue 18)."""
    return classes if isinstance(classes, dict) else classes.to_dict()


@pytest.mark.parametrize(("recipe", "count"), [("coco-r50", 133), ("cityscapes-r50", 19)])
def test_recipe_classes_are_built_in(recipe: str, count: int):
    classes = _plain(recipe_classes(load_recipe(recipe, ["data.root=/nonexistent"])))
    dataset = load_recipe(recipe).data.dataset
    assert classes["names"] == [c.name for c in builtin_categories(dataset)]
    assert classes["category_ids"] == [c.id for c in builtin_categories(dataset)]
    assert len(classes["names"]) == len(classes["colors"]) == len(classes["isthing"]) == count


def test_a_prepared_dataset_given_wins_and_a_missing_one_is_named(tmp_path: Path):
    write_split(tmp_path / "data", "val", [street_item("a")])
    classes = _plain(recipe_classes(load_recipe("coco-r50"), tmp_path / "data"))
    assert classes["names"] == [c.name for c in CATEGORIES]
    with pytest.raises(CopsError, match=r"empty/panoptic_val\.json: not found"):
        recipe_classes(load_recipe("coco-r50"), tmp_path / "empty")


@pytest.mark.slow
def test_released_coco_model_predicts_with_no_dataset(cops, tmp_path: Path):
    """import-checkpoint --recipe coco-r50 and predict --overlay, in a folder with no data/."""
    source = save_as_original_checkpoint(original_state_dict("coco"), tmp_path / "coco.pth")
    done = cops("import-checkpoint", str(source), "--recipe", "coco-r50", "--out", "m.pt",
                cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    write_image(photos / "a.png", rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    done = cops("predict", "--checkpoint", "m.pt", "photos", "--out", "p", "--overlay",
                "--device", "cpu", "--backend", "cpu", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "data").exists()
    written = read_json(tmp_path / "p/panoptic.json")
    names = [c.name for c in coco_categories()]
    assert [c["name"] for c in written["categories"]] == names
    (ann,) = written["annotations"]
    assert ann["segments_info"], "the random network predicted nothing"
    prediction = PanopticPrediction(
        ids=read_panoptic_png(tmp_path / "p/panoptic" / ann["file_name"]),
        segments=ann["segments_info"],
        semantic=np.zeros((120, 160), dtype=np.uint8),
    )
    image = read_image(photos / "a.png")
    overlay = read_image(tmp_path / "p/overlay/a.png")
    coco = {k: [c[k] for c in written["categories"]] for k in ("name", "isthing", "color")}
    classes = {
        "names": coco["name"],
        "category_ids": [c["id"] for c in written["categories"]],
        "isthing": [bool(t) for t in coco["isthing"]],
        "colors": coco["color"],
    }
    assert np.array_equal(overlay, render_overlay(image, prediction, classes))
    renamed = {**classes, "names": [f"class {i}" for i in range(133)]}
    assert not np.array_equal(overlay, render_overlay(image, prediction, renamed))
