"""Synthetic street scenes: determinism, presets, COCO panoptic consistency, touching things."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cops.datasets.panoptic_io import read_image, read_panoptic_png
from cops.datasets.street_scene import THING_BASE, min_thing_area
from cops.datasets.synthetic import (
    PRESETS,
    SYNTHETIC_CATEGORIES,
    generate_scene,
    prepare_synthetic,
    scene_seed,
)
from cops.errors import DatasetError

CATEGORIES = {c.id: c for c in SYNTHETIC_CATEGORIES}


def check_segments(ids: np.ndarray, segments: list[dict]) -> None:
    """Every segment matches its pixels (area, bbox) and every non-void pixel is listed."""
    listed = [s["id"] for s in segments]
    assert len(set(listed)) == len(listed)
    assert set(np.unique(ids).tolist()) - {0} == set(listed)
    stuff_seen = set()
    for seg in segments:
        assert set(seg) == {"id", "category_id", "area", "bbox", "iscrowd"}
        cat = CATEGORIES[seg["category_id"]]
        ys, xs = np.nonzero(ids == seg["id"])
        assert seg["area"] == ys.size > 0
        x0, y0 = int(xs.min()), int(ys.min())
        assert seg["bbox"] == [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        assert seg["iscrowd"] == 0
        if cat.isthing:
            assert seg["id"] // THING_BASE == cat.id
            assert seg["area"] >= min_thing_area(*ids.shape)
        else:
            assert seg["id"] == cat.id not in stuff_seen  # one segment per stuff class
            stuff_seen.add(cat.id)


def touching_same_class(ids: np.ndarray, segments: list[dict], category: int) -> bool:
    """Whether two different segments of a thing `category` are 4-adjacent somewhere."""
    members = {s["id"] for s in segments if s["category_id"] == category}
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])):
        differ = a != b
        if (np.isin(a[differ], list(members)) & np.isin(b[differ], list(members))).any():
            return True
    return False


def test_categories_are_stable_and_distinct() -> None:
    ids = [c.id for c in SYNTHETIC_CATEGORIES]
    assert len(set(ids)) == len(ids) and 0 not in ids
    assert len({c.color for c in SYNTHETIC_CATEGORIES}) == len(ids)
    assert {c.name for c in SYNTHETIC_CATEGORIES if c.isthing} == {"car", "person", "truck"}
    assert sum(not c.isthing for c in SYNTHETIC_CATEGORIES) == 6
    assert CATEGORIES[26].name == "car" and CATEGORIES[7].name == "road"


def test_generate_scene_is_deterministic() -> None:
    a = generate_scene(scene_seed(3, "train", 5), 64, 128)
    b = generate_scene(scene_seed(3, "train", 5), 64, 128)
    assert a[0].dtype == np.uint8 and a[0].shape == (64, 128, 3)
    assert a[1].shape == (64, 128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    c = generate_scene(scene_seed(3, "val", 5), 64, 128)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(("height", "width"), [(256, 512), (64, 128), (8, 8), (40, 16), (97, 61)])
def test_segments_match_pixels(height: int, width: int) -> None:
    for index in range(4):
        image, ids, segments = generate_scene(scene_seed(0, "train", index), height, width)
        assert image.shape == (height, width, 3)
        check_segments(ids, segments)


def test_scenes_have_things_stuff_void_and_touching_instances() -> None:
    scenes = [generate_scene(scene_seed(0, "train", i), 128, 256) for i in range(12)]
    cats = [{s["category_id"] for s in segs} for _, _, segs in scenes]
    assert all({26, 24} & c for c in cats)  # every scene has cars or people
    assert all({7, 23} <= c for c in cats)  # road and sky
    assert sum(24 in c for c in cats) >= 6 and sum(26 in c for c in cats) >= 6
    assert any((ids == 0).any() for _, ids, _ in scenes)  # some void (poles, hood, remnants)
    assert all((ids == 0).mean() < 0.2 for _, ids, _ in scenes)
    # Parked rows occlude each other; queued cars and groups of people stand edge to edge.
    assert sum(touching_same_class(ids, segs, 26) for _, ids, segs in scenes) >= 8
    assert sum(touching_same_class(ids, segs, 24) for _, ids, segs in scenes) >= 6


def read_split(root: Path, split: str) -> dict:
    return json.loads((root / f"panoptic_{split}.json").read_text())


def test_prepare_tiny_is_valid_coco_panoptic(tmp_path: Path) -> None:
    calls = []
    summaries = prepare_synthetic(
        tmp_path, preset="tiny", progress=lambda *a: calls.append(a), seed=7
    )
    tiny = PRESETS["tiny"]
    assert [(s.split, s.images) for s in summaries] == [
        ("train", tiny.num_train),
        ("val", tiny.num_val),
    ]
    assert calls[0] == ("train", 0, tiny.num_train) and calls[-1] == ("val", 8, 8)
    for split, count in (("train", tiny.num_train), ("val", tiny.num_val)):
        data = read_split(tmp_path, split)
        assert data["categories"] == [c.to_json() for c in SYNTHETIC_CATEGORIES]
        assert data["info"]["generator"]["seed"] == 7
        assert len(data["images"]) == len(data["annotations"]) == count
        assert len({im["id"] for im in data["images"]}) == count
        things = 0
        for index, (im, ann) in enumerate(zip(data["images"], data["annotations"], strict=True)):
            assert ann["image_id"] == im["id"]
            assert (im["height"], im["width"]) == (tiny.height, tiny.width)
            ids = read_panoptic_png(tmp_path / "panoptic" / split / ann["file_name"])
            check_segments(ids, ann["segments_info"])
            things += sum(CATEGORIES[s["category_id"]].isthing for s in ann["segments_info"])
            image = read_image(tmp_path / "images" / split / im["file_name"])
            image_ref, ids_ref, segs_ref = generate_scene(
                scene_seed(7, split, index), tiny.height, tiny.width
            )
            assert np.array_equal(image, image_ref) and np.array_equal(ids, ids_ref)
            assert ann["segments_info"] == segs_ref
        assert things >= count
        assert sum(summaries[split == "val"].segments.values()) == sum(
            len(a["segments_info"]) for a in data["annotations"]
        )


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_outputs_identical_across_runs_and_workers(tmp_path: Path) -> None:
    options = {"preset": "tiny", "num_train": 6, "num_val": 3, "seed": 11}
    prepare_synthetic(tmp_path / "a", workers=1, **options)
    prepare_synthetic(tmp_path / "b", workers=2, **options)
    prepare_synthetic(tmp_path / "c", workers=1, **options)
    a = tree_bytes(tmp_path / "a")
    assert len(a) == 3 + 2 * 9  # two split JSONs, summary.json, 9 images and 9 panoptic PNGs
    assert a == tree_bytes(tmp_path / "b") == tree_bytes(tmp_path / "c")
    prepare_synthetic(tmp_path / "d", workers=1, **{**options, "seed": 12})
    d = tree_bytes(tmp_path / "d")
    assert (
        d.keys() == a.keys()
        and d["images/train/train_000000.png"] != a["images/train/train_000000.png"]
    )


def test_presets_and_overrides(tmp_path: Path) -> None:
    assert (PRESETS["default"].height, PRESETS["default"].width) == (256, 512)
    assert (PRESETS["tiny"].height, PRESETS["tiny"].width) == (64, 128)
    prepare_synthetic(tmp_path / "d", num_train=1, num_val=1)
    image = read_split(tmp_path / "d", "val")["images"][0]
    assert (image["height"], image["width"]) == (256, 512)
    assert read_image(tmp_path / "d" / "images" / "val" / image["file_name"]).shape == (256, 512, 3)
    summaries = prepare_synthetic(
        tmp_path / "o", preset="tiny", num_train=3, height=48, width=80, splits=["train"]
    )
    assert [s.images for s in summaries] == [3]
    assert not (tmp_path / "o" / "panoptic_val.json").exists()
    data = read_split(tmp_path / "o", "train")
    assert {(im["height"], im["width"]) for im in data["images"]} == {(48, 80)}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"preset": "huge"}, "preset"),
        ({"height": 0}, "height"),
        ({"width": -5}, "width"),
        ({"height": 4}, "height"),
        ({"num_train": 0}, "num_train"),
        ({"num_val": -1}, "num_val"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"splits": ("train", "test")}, "splits"),
        ({"splits": ()}, "splits"),
        ({"splits": ("val", "val")}, "splits"),
    ],
)
def test_bad_options_raise_dataset_error(tmp_path: Path, options: dict, named: str) -> None:
    with pytest.raises(DatasetError, match=named):
        prepare_synthetic(tmp_path, **{"preset": "tiny", **options})
    assert not list(tmp_path.iterdir())  # nothing written
