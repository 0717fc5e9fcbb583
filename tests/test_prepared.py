"""Prepared-dataset reader: samples, category metadata, validation errors naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _prepared_fixture import (
    CATEGORIES,
    load_json,
    save_json,
    street_item,
    write_split,
)

from cops.datasets.conversion import SplitPaths
from cops.datasets.panoptic_io import write_image, write_panoptic_png
from cops.datasets.prepared import PanopticDataset
from cops.datasets.transforms import TrainTransform, collate_panoptic
from cops.errors import DatasetError


@pytest.fixture
def split(tmp_path: Path) -> SplitPaths:
    items = [street_item(f"img{i}", seed=i) for i in range(3)]
    return write_split(tmp_path, "train", items)


def test_reads_samples(split: SplitPaths) -> None:
    dataset = PanopticDataset(split.root, "train")
    assert len(dataset) == 3
    item = street_item("img1", seed=1)
    sample = dataset[1]
    assert sample["image"].dtype == np.uint8
    np.testing.assert_array_equal(sample["image"], item.image)
    assert sample["panoptic"].dtype == np.int64
    np.testing.assert_array_equal(sample["panoptic"], item.panoptic)
    assert sample["image_id"] == 2
    assert sample["file_name"] == "img1.png"
    by_id = {s["id"]: s for s in sample["segments"]}
    assert set(by_id) == {50, 60, 7, 8, 9}
    assert by_id[7] == {
        "id": 7,
        "category_id": 3,
        "train_id": 1,
        "isthing": True,
        "iscrowd": 0,
        "area": int((item.panoptic == 7).sum()),
        "bbox": [2, 12, 8, 10],
    }
    assert by_id[9]["iscrowd"] == 1 and by_id[9]["train_id"] == 0
    assert by_id[50]["isthing"] is False and by_id[50]["train_id"] == 3


def test_category_metadata_from_sparse_ids(split: SplitPaths) -> None:
    meta = PanopticDataset(split.root, "train").categories
    np.testing.assert_array_equal(meta.category_ids, [1, 3, 92, 184])
    assert meta.id_to_train == {1: 0, 3: 1, 92: 2, 184: 3}
    assert meta.names == ("person", "car", "road", "sky")
    assert meta.isthing.dtype == bool
    np.testing.assert_array_equal(meta.isthing, [True, True, False, False])
    np.testing.assert_array_equal(meta.colors[3], [70, 130, 180])
    assert meta.num_classes == 4 and meta.ignore_label == 255
    np.testing.assert_array_equal(meta.thing_train_ids, [0, 1])
    np.testing.assert_array_equal(meta.stuff_train_ids, [2, 3])


def test_train_ids_follow_json_order(tmp_path: Path) -> None:
    order = [CATEGORIES[3], CATEGORIES[0], CATEGORIES[2], CATEGORIES[1]]
    paths = write_split(tmp_path, "val", [street_item("a")], categories=order)
    dataset = PanopticDataset(paths.root, "val")
    assert dataset.categories.id_to_train == {184: 0, 1: 1, 92: 2, 3: 3}
    np.testing.assert_array_equal(dataset.categories.isthing, [False, True, False, True])
    cars = [s for s in dataset[0]["segments"] if s["category_id"] == 3]
    assert {s["train_id"] for s in cars} == {3}


def _expect_error(paths: SplitPaths, file: Path, pattern: str) -> None:
    """Opening (and loading every item of) the split fails with a message naming `file`."""
    with pytest.raises(DatasetError) as info:
        dataset = PanopticDataset(paths.root, paths.split)
        for i in range(len(dataset)):
            dataset.load(i)
    message = str(info.value)
    assert str(file) in message
    assert re.search(pattern, message), message


def test_missing_json(tmp_path: Path) -> None:
    _expect_error(SplitPaths(tmp_path, "train"), tmp_path / "panoptic_train.json", "not found")


def test_malformed_json(split: SplitPaths) -> None:
    split.json.write_text('{"images": [')
    _expect_error(split, split.json, "invalid JSON")


def test_json_missing_top_level_key(split: SplitPaths) -> None:
    data = load_json(split)
    del data["annotations"]
    save_json(split, data)
    _expect_error(split, split.json, "'annotations'")


def test_json_missing_image_key(split: SplitPaths) -> None:
    data = load_json(split)
    del data["images"][1]["height"]
    save_json(split, data)
    _expect_error(split, split.json, r"images\[1\] has no key 'height'")


def test_image_without_annotation(split: SplitPaths) -> None:
    data = load_json(split)
    data["annotations"].pop(0)
    save_json(split, data)
    _expect_error(split, split.json, "img0.png.*no annotation")


def test_unknown_category(split: SplitPaths) -> None:
    data = load_json(split)
    data["annotations"][2]["segments_info"][0]["category_id"] = 5
    save_json(split, data)
    _expect_error(split, split.json, "img2.png.*unknown category_id 5")


def test_duplicate_segment_id(split: SplitPaths) -> None:
    data = load_json(split)
    infos = data["annotations"][0]["segments_info"]
    infos.append(dict(infos[0]))
    save_json(split, data)
    _expect_error(split, split.json, "duplicate segment id 50")


def test_missing_png(split: SplitPaths) -> None:
    (split.panoptic / "img1.png").unlink()
    (split.panoptic / "img2.png").unlink()
    _expect_error(split, split.panoptic / "img1.png", "panoptic PNG file not found.*1 more")


def test_missing_image(split: SplitPaths) -> None:
    (split.images / "img2.png").unlink()
    _expect_error(split, split.images / "img2.png", "image file not found")


def test_id_in_png_not_in_json(split: SplitPaths) -> None:
    data = load_json(split)
    infos = data["annotations"][1]["segments_info"]
    infos[:] = [s for s in infos if s["id"] != 8]
    save_json(split, data)
    _expect_error(split, split.panoptic / "img1.png", r"\[8\] are in the PNG but not")


def test_id_in_json_not_in_png(split: SplitPaths) -> None:
    data = load_json(split)
    extra = {"id": 77, "category_id": 1, "iscrowd": 0, "area": 4, "bbox": [0, 0, 2, 2]}
    data["annotations"][2]["segments_info"].append(extra)
    save_json(split, data)
    _expect_error(split, split.panoptic / "img2.png", r"\[77\] are listed .* absent from the PNG")


def test_image_size_differs_from_png(split: SplitPaths) -> None:
    write_image(split.images / "img1.png", np.zeros((24, 30, 3), np.uint8))
    _expect_error(split, split.images / "img1.png", "image size 24x30.*differs")


def test_png_size_differs_from_json(split: SplitPaths) -> None:
    data = load_json(split)
    data["images"][0]["height"] = 25
    save_json(split, data)
    _expect_error(split, split.panoptic / "img0.png", "24x32 .* differs from 25x32")


def test_validate_collects_every_problem(split: SplitPaths) -> None:
    dataset = PanopticDataset(split.root, "train")
    assert dataset.validate() == []
    bad = street_item("img0").panoptic.copy()
    bad[0, 0] = 1234
    write_panoptic_png(split.panoptic / "img0.png", bad)
    write_image(split.images / "img2.png", np.zeros((20, 32, 3), np.uint8))
    for workers in (1, 2):
        problems = dataset.validate(workers=workers)
        assert len(problems) == 2
        assert str(split.panoptic / "img0.png") in problems[0] and "[1234]" in problems[0]
        assert str(split.images / "img2.png") in problems[1]


def test_transformed_items_reproducible_across_workers(split: SplitPaths) -> None:
    transform = TrainTransform((16, 16), scale_range=(0.5, 1.5), flip=True)
    dataset = PanopticDataset(split.root, "train", transform=transform, seed=7)
    first = [dataset[i]["image"] for i in range(3)]
    assert all(torch.equal(a, dataset[i]["image"]) for i, a in enumerate(first))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=3, num_workers=2, collate_fn=collate_panoptic
    )
    (batch,) = list(loader)
    for i in range(3):
        assert torch.equal(batch["image"][i, :, :16, :16], first[i])
    dataset.set_epoch(1)
    assert not all(torch.equal(a, dataset[i]["image"]) for i, a in enumerate(first))
