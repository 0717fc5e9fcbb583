"""COCO panoptic converter: round trips, custom datasets, layouts and validation errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cops.datasets.coco import prepare_coco
from cops.datasets.panoptic_io import id2rgb, read_panoptic_png
from cops.errors import CopsError, DatasetError

COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "car", "supercategory": "vehicle", "isthing": 1, "color": [0, 0, 142]},
    {"id": 92, "name": "banner", "supercategory": "textile", "isthing": 0, "color": [255, 0, 0]},
    {"id": 184, "name": "tree-merged", "supercategory": "plant", "isthing": 0, "color": [0, 99, 0]},
]
SIZES = [(24, 40), (30, 20), (16, 48)]


def _scene(seed: int, height: int, width: int, categories: list[int]) -> tuple[np.ndarray, list]:
    """Segment ids [H, W] with two stuff regions, void, touching instances and a crowd region."""
    rng = np.random.default_rng(seed)
    stuff_a, stuff_b, thing_a, thing_b = categories
    ids = np.zeros((height, width), dtype=np.int64)
    colours = rng.choice(256**3 - 1, size=6, replace=False) + 1  # COCO-style random ids
    layout = [
        ((slice(0, height // 2), slice(2, None)), stuff_a, 0),
        ((slice(height // 2, None), slice(2, None)), stuff_b, 0),
        ((slice(3, 9), slice(4, 10)), thing_a, 0),
        ((slice(3, 9), slice(10, 14)), thing_a, 0),  # touches the previous instance
        ((slice(height - 6, height - 2), slice(5, 15)), thing_b, 0),
        ((slice(10, 13), slice(15, 19)), thing_a, 1),  # crowd
    ]
    segments = []
    for (region, category, crowd), segment_id in zip(layout, colours, strict=True):
        ids[region] = segment_id
        segments.append({"id": int(segment_id), "category_id": category, "iscrowd": crowd})
    for segment in segments:
        ys, xs = np.nonzero(ids == segment["id"])
        segment["area"] = int(ys.size)
        segment["bbox"] = [
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        ]
    return ids, segments


def _write_split(
    json_path: Path,
    png_dir: Path,
    image_dir: Path,
    split: str,
    categories: list[dict[str, Any]],
    count: int,
) -> dict[str, Any]:
    """Write images (JPEG), RGB-encoded PNGs and the panoptic JSON of one split."""
    png_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    stuff = [c["id"] for c in categories if not c["isthing"]]
    things = [c["id"] for c in categories if c["isthing"]]
    images, annotations = [], []
    for i in range(count):
        seed = 100 * len(split) + i
        image_id = seed * 7 + 1
        height, width = SIZES[i % len(SIZES)]
        ids, segments = _scene(seed, height, width, stuff + things)
        name = f"{image_id:012d}"
        rng = np.random.default_rng(seed)
        cv2.imwrite(
            str(image_dir / f"{name}.jpg"), rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        )
        cv2.imwrite(str(png_dir / f"{name}.png"), id2rgb(ids)[..., ::-1])
        images.append(
            {"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width}
        )
        annotations.append(
            {"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments}
        )
    data = {"images": images, "annotations": annotations, "categories": categories}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    return data


def _coco_tree(root: Path, count: int = 3) -> dict[str, dict[str, Any]]:
    """A COCO 2017 layout with train and val."""
    return {
        split: _write_split(
            root / "annotations" / f"panoptic_{split}2017.json",
            root / "annotations" / f"panoptic_{split}2017",
            root / f"{split}2017",
            split,
            COCO_CATEGORIES,
            count,
        )
        for split in ("train", "val")
    }


def _assert_round_trip(source: dict[str, Any], out: Path, split: str, png_dir: Path) -> None:
    """The prepared split equals the source: JSON entries, category order and PNG ids."""
    prepared = json.loads((out / f"panoptic_{split}.json").read_text())
    assert prepared["categories"] == source["categories"]
    assert prepared["images"] == source["images"]
    assert prepared["annotations"] == source["annotations"]
    for annotation in source["annotations"]:
        ours = read_panoptic_png(out / "panoptic" / split / annotation["file_name"])
        np.testing.assert_array_equal(ours, read_panoptic_png(png_dir / annotation["file_name"]))


def test_coco_layout_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    sources = _coco_tree(root)
    stale = sources["val"]["annotations"][0]["segments_info"][0]
    data = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    data["annotations"][0]["segments_info"][0]["area"] = stale["area"] + 5  # recomputed on output
    del data["annotations"][0]["segments_info"][1]["bbox"]
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    summaries = prepare_coco(root, tmp_path / "out")
    assert [(s.split, s.images, s.crowd) for s in summaries] == [("train", 3, 3), ("val", 3, 3)]
    assert summaries[1].segments == {"person": 9, "car": 3, "banner": 3, "tree-merged": 3}
    for split, source in sources.items():
        _assert_round_trip(
            source, tmp_path / "out", split, root / "annotations" / f"panoptic_{split}2017"
        )
    image = tmp_path / "out" / "images" / "val" / sources["val"]["images"][0]["file_name"]
    assert image.is_symlink()
    assert image.resolve() == (root / "val2017" / image.name).resolve()
    png = tmp_path / "out" / "panoptic" / "val" / sources["val"]["annotations"][0]["file_name"]
    assert not png.is_symlink()
    assert png.read_bytes() == (root / "annotations" / "panoptic_val2017" / png.name).read_bytes()


def test_custom_dataset_overrides_and_prepared_layout(tmp_path: Path) -> None:
    categories = [
        {"id": 30, "name": "pallet", "isthing": 0},
        {"id": 10, "name": "floor", "isthing": 0},
        {"id": 20, "name": "box", "isthing": 1},
        {"id": 40, "name": "forklift", "isthing": 1},
    ]
    src = tmp_path / "warehouse"
    sources = {
        split: _write_split(
            src / "ann" / f"{split}.json",
            src / "labels" / split,
            src / "pics",
            split,
            categories,
            2,
        )
        for split in ("train", "val")
    }
    first = tmp_path / "first"
    prepare_coco(
        src,
        first,
        workers=2,
        link="copy",
        annotations=src / "ann" / "{split}.json",
        panoptic_dir=src / "labels" / "{split}",
        images_dir=src / "pics",
    )
    prepared = json.loads((first / "panoptic_train.json").read_text())
    assert [c["id"] for c in prepared["categories"]] == [30, 10, 20, 40]  # order kept
    assert all(len(c["color"]) == 3 for c in prepared["categories"])
    for split, source in sources.items():
        source["categories"] = prepared["categories"]
        _assert_round_trip(source, first, split, src / "labels" / split)
    image = first / "images" / "val" / sources["val"]["images"][0]["file_name"]
    assert not image.is_symlink() and image.read_bytes() == (src / "pics" / image.name).read_bytes()
    second = tmp_path / "second"  # a prepared dataset is itself a valid source
    prepare_coco(first, second, splits=["val"], link="hardlink")
    again = json.loads((second / "panoptic_val.json").read_text())
    before = json.loads((first / "panoptic_val.json").read_text())
    assert again["info"]["source"] == str(first / "panoptic_val.json")
    assert {**again, "info": None} == {**before, "info": None}
    with pytest.raises(CopsError, match="would overwrite the source"):
        prepare_coco(first, first, splits=["val"])


def test_rgba_png_is_reencoded_as_rgb(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    sources = _coco_tree(root, count=1)
    name = sources["val"]["annotations"][0]["file_name"]
    png = root / "annotations" / "panoptic_val2017" / name
    bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
    cv2.imwrite(str(png), np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
    prepare_coco(root, tmp_path / "out", splits=["val"])
    out = tmp_path / "out" / "panoptic" / "val" / name
    assert out.read_bytes()[25] == 2  # PNG colour type RGB
    np.testing.assert_array_equal(read_panoptic_png(out), read_panoptic_png(png))


def _edit_json(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _first_png(root: Path) -> Path:
    return sorted((root / "annotations" / "panoptic_val2017").glob("*.png"))[0]


def _first_image(root: Path) -> Path:
    return sorted((root / "val2017").glob("*.jpg"))[0]


def _resize_image(root: Path) -> None:
    cv2.imwrite(str(_first_image(root)), np.zeros((10, 10, 3), np.uint8))


def _grey_png(root: Path) -> None:
    cv2.imwrite(str(_first_png(root)), np.zeros((24, 40), np.uint8))


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing png": (
        lambda r: _first_png(r).unlink(),
        r"000000002101\.png: panoptic PNG not found \(listed in .*panoptic_val2017\.json\)",
    ),
    "missing image": (
        lambda r: _first_image(r).unlink(),
        r"000000002101\.jpg: image not found \(listed in .*panoptic_val2017\.json\)",
    ),
    "png id not in json": (
        lambda r: _edit_json(r, lambda d: d["annotations"][0]["segments_info"].pop(2)),
        r"000000002101\.png: segment ids \[\d+\] occur in the PNG but are not listed",
    ),
    "json id not in png": (
        lambda r: _edit_json(
            r,
            lambda d: d["annotations"][0]["segments_info"].append({"id": 5, "category_id": 1}),
        ),
        r"000000002101\.png: segment ids \[5\] listed in segments_info .* do not occur",
    ),
    "unknown category": (
        lambda r: _edit_json(
            r, lambda d: d["annotations"][1]["segments_info"][0].update(category_id=7)
        ),
        r"panoptic_val2017\.json: annotations\[1\] .* unknown category id 7",
    ),
    "size mismatch": (
        _resize_image,
        r"000000002101\.png: panoptic PNG is 40×24 but image 000000002101\.jpg is 10×10",
    ),
    "malformed json": (
        lambda r: (r / "annotations" / "panoptic_val2017.json").write_text('{"images": ['),
        r"panoptic_val2017\.json: invalid JSON",
    ),
    "missing key": (
        lambda r: _edit_json(r, lambda d: d["annotations"][0].pop("segments_info")),
        r"panoptic_val2017\.json: annotations\[0\] .* has no 'segments_info' key",
    ),
    "wrong type": (
        lambda r: _edit_json(r, lambda d: d["categories"][0].update(isthing="yes")),
        r"panoptic_val2017\.json: categories\[0\] 'isthing' is 'yes'; expected int",
    ),
    "duplicate image id": (
        lambda r: _edit_json(r, lambda d: d["images"][1].update(id=d["images"][0]["id"])),
        r"panoptic_val2017\.json: images\[1\] repeats image id 2101",
    ),
    "image without annotation": (
        lambda r: _edit_json(r, lambda d: d["annotations"].pop()),
        r"panoptic_val2017\.json: image id 2108 has no entry in 'annotations'",
    ),
    "grey png": (_grey_png, r"000000002101\.png: PNG colour type 0, bit depth 8; expected"),
    "categories differ": (
        lambda r: _edit_json(r, lambda d: d["categories"].reverse()),
        r"panoptic_val2017\.json: categories differ from .*panoptic_train2017\.json",
    ),
    "no json": (
        lambda r: (r / "annotations" / "panoptic_val2017.json").unlink(),
        r"split 'val': no panoptic JSON found \(looked for .*panoptic_val2017\.json",
    ),
}

DECODING_CASES = {"png id not in json", "json id not in png", "size mismatch", "grey png"}
"""Found while converting (the train split is written by then); the rest are found up front."""


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_validation_errors_name_the_file(tmp_path: Path, case: str) -> None:
    root = tmp_path / "coco"
    _coco_tree(root, count=2)
    out = tmp_path / "out"
    breakage, message = BREAKAGES[case]
    breakage(root)
    with pytest.raises(DatasetError, match=message):
        prepare_coco(root, out)
    assert not (out / "panoptic_val.json").exists()  # never left looking complete
    if case not in DECODING_CASES:
        assert not out.exists()  # found before anything is written
