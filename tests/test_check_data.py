"""`cops check-data`: each planted defect is found (one test per kind), clean synthetic and
Cityscapes splits pass with the ground truth scoring PQ 100 against itself, and training and
evaluation stop on the JSON errors before they start."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cityscapes import _write_fixture

from cops.datasets.cityscapes import prepare_cityscapes
from cops.datasets.conversion import SplitPaths
from cops.datasets.data_check import ERROR, WARNING, check_index
from cops.datasets.panoptic_io import (
    read_panoptic_png,
    segment_stats,
    write_image,
    write_panoptic_png,
)
from cops.datasets.recipe_data import ensure_dataset, open_split
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, prepare_synthetic
from cops.errors import DatasetError
from cops.evaluation.data_check import check_dataset
from cops.recipes.schema import load_recipe

Data = dict[str, Any]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "data"
    prepare_synthetic(root, preset="tiny", num_train=2, num_val=4)
    return root


@pytest.fixture
def split(clean: Path, tmp_path: Path) -> SplitPaths:
    """A private copy of the clean val split, to plant a defect in."""
    shutil.copytree(clean, tmp_path / "data")
    return SplitPaths(tmp_path / "data", "val")


def _json(paths: SplitPaths, change: Callable[[Data], None]) -> None:
    data = json.loads(paths.json.read_text())
    change(data)
    paths.json.write_text(json.dumps(data))


def _thing(data: Data, stuff: bool = False) -> dict[str, Any]:
    """The first segment of image 0 whose class is a thing (or stuff)."""
    flags = {c["id"]: c["isthing"] for c in data["categories"]}
    return next(
        s for s in data["annotations"][0]["segments_info"] if flags[s["category_id"]] != stuff
    )


def _repaint(paths: SplitPaths, paint: Callable[[np.ndarray, Data], None]) -> None:
    """Change image 0's PNG and list its segments as the PNG now has them (a consistent edit)."""
    data = json.loads(paths.json.read_text())
    ann = data["annotations"][0]
    ids = read_panoptic_png(paths.panoptic / ann["file_name"])
    category = {s["id"]: s["category_id"] for s in ann["segments_info"]}
    paint(ids, category)
    write_panoptic_png(paths.panoptic / ann["file_name"], ids)
    ann["segments_info"] = [
        {"id": i, "category_id": category[i], "area": a, "bbox": b, "iscrowd": 0}
        for i, (a, b) in segment_stats(ids).items()
    ]
    paths.json.write_text(json.dumps(data))


def _split_stuff(ids: np.ndarray, category: dict[int, int]) -> None:
    """The largest stuff segment's right half becomes a second segment of its class."""
    stuff = {c.id for c in SYNTHETIC_CATEGORIES if not c.isthing}
    largest = max((i for i, c in category.items() if c in stuff), key=lambda i: (ids == i).sum())
    half = (ids == largest) & (np.arange(ids.shape[1]) >= ids.shape[1] // 2)
    assert 0 < half.sum() < (ids == largest).sum()
    ids[half] = 999
    category[999] = category[largest]


def _mostly_void(ids: np.ndarray, category: dict[int, int]) -> None:
    ids[3:] = 0


def _first(paths: SplitPaths, key: str) -> str:
    data = json.loads(paths.json.read_text())
    folder = paths.images if key == "images" else paths.panoptic
    return str(folder / data[key][0]["file_name"])


DEFECTS: dict[str, tuple[Callable[[SplitPaths], None], Callable[[SplitPaths], str]]] = {
    "json": (
        lambda p: _json(p, lambda d: d.pop("annotations")),
        lambda p: str(p.json),
    ),
    "category": (
        lambda p: _json(p, lambda d: d["categories"].append(dict(d["categories"][0]))),
        lambda p: str(p.json),
    ),
    "duplicate-file": (
        lambda p: _json(p, lambda d: d["images"][1].update(file_name=d["images"][0]["file_name"])),
        lambda p: _first(p, "images"),
    ),
    "unannotated": (
        lambda p: _json(p, lambda d: d["annotations"].pop(0)),
        lambda p: _first(p, "images"),
    ),
    "segment-id": (
        lambda p: _json(
            p,
            lambda d: d["annotations"][0]["segments_info"][1].update(
                id=d["annotations"][0]["segments_info"][0]["id"]
            ),
        ),
        lambda p: _first(p, "annotations"),
    ),
    "unknown-category": (
        lambda p: _json(p, lambda d: _thing(d).update(category_id=4242)),
        lambda p: _first(p, "annotations"),
    ),
    "crowd": (
        lambda p: _json(p, lambda d: _thing(d).update(iscrowd=2)),
        lambda p: _first(p, "annotations"),
    ),
    "area-box": (
        lambda p: _json(p, lambda d: _thing(d).update(area=_thing(d)["area"] + 1)),
        lambda p: _first(p, "annotations"),
    ),
    "missing-file": (
        lambda p: Path(_first(p, "images")).unlink(),
        lambda p: _first(p, "images"),
    ),
    "unreadable": (
        lambda p: Path(_first(p, "annotations")).write_bytes(b"\x89PNG not really"),
        lambda p: _first(p, "annotations"),
    ),
    "size": (
        lambda p: write_image(Path(_first(p, "images")), np.zeros((8, 8, 3), dtype=np.uint8)),
        lambda p: _first(p, "annotations"),
    ),
    "segment-mismatch": (
        lambda p: write_panoptic_png(
            Path(_first(p, "annotations")),
            np.where(
                np.eye(*read_panoptic_png(Path(_first(p, "annotations"))).shape, dtype=bool),
                777,
                read_panoptic_png(Path(_first(p, "annotations"))),
            ),
        ),
        lambda p: _first(p, "annotations"),
    ),
    "crowd-stuff": (
        lambda p: _json(p, lambda d: _thing(d, stuff=True).update(iscrowd=1)),
        lambda p: _first(p, "annotations"),
    ),
    "stuff-split": (lambda p: _repaint(p, _split_stuff), lambda p: _first(p, "annotations")),
    "void": (lambda p: _repaint(p, _mostly_void), lambda p: _first(p, "annotations")),
    "empty": (
        lambda p: _repaint(p, lambda ids, _: ids.fill(0)),
        lambda p: _first(p, "annotations"),
    ),
    "unused-class": (
        lambda p: _json(
            p,
            lambda d: d["categories"].append(
                {"id": 77, "name": "kite", "isthing": 1, "color": [1, 2, 3]}
            ),
        ),
        lambda p: str(p.json),
    ),
}


@pytest.mark.parametrize("kind", list(DEFECTS))
def test_each_planted_defect_is_found(split: SplitPaths, kind: str):
    plant, where = DEFECTS[kind]
    expected_file = where(split)
    plant(split)
    report = check_dataset(split.root, "val")
    found = [p for p in report.splits[0].problems if p.kind == kind]
    assert found, [(p.kind, p.message) for p in report.splits[0].problems]
    assert any(p.file == expected_file for p in found), [p.file for p in found]
    if found[0].severity == WARNING:
        assert report.errors == 0, [p.message for p in report.splits[0].problems]
        assert report.splits[0].self_pq == pytest.approx(100.0)
    else:
        assert found[0].severity == ERROR and report.errors >= 1


def test_clean_synthetic_split_passes_with_pq_100(clean: Path):
    report = check_dataset(clean, workers=2)
    assert [s.split for s in report.splits] == ["train", "val"]
    assert report.errors == 0, [p.message for s in report.splits for p in s.problems]
    for s in report.splits:
        assert s.self_pq == pytest.approx(100.0) and 0 <= s.void_fraction < 0.5
        assert s.images == (2 if s.split == "train" else 4)


def test_converted_cityscapes_passes(tmp_path: Path):
    _write_fixture(tmp_path / "cityscapes")
    prepare_cityscapes(tmp_path / "cityscapes", tmp_path / "prepared")
    report = check_dataset(tmp_path / "prepared")
    assert report.errors == 0, [p.message for s in report.splits for p in s.problems]
    assert all(s.self_pq == pytest.approx(100.0) for s in report.splits)
    kinds = {p.kind for s in report.splits for p in s.problems}
    assert kinds <= {"unused-class", "stuff-split"}  # Cityscapes keeps stuff instance ids apart


def test_cli_exit_status_table_and_json(cops, clean: Path, split: SplitPaths, tmp_path: Path):
    done = cops("check-data", str(clean), "--json", str(tmp_path / "ok.json"))
    assert done.returncode == 0, done.stderr
    assert "PQ vs itself" in done.stdout and "100.00" in done.stdout
    assert json.loads((tmp_path / "ok.json").read_text())["ok"] is True
    DEFECTS["crowd-stuff"][0](split)
    done = cops("check-data", str(split.root), "--split", "val")
    assert done.returncode == 0 and "crowd-stuff" in done.stdout, done.stdout  # warnings only
    DEFECTS["unknown-category"][0](split)
    done = cops(
        "check-data", str(split.root), "--split", "val", "--json", str(tmp_path / "bad.json")
    )
    assert done.returncode == 1, done.stderr
    assert "unknown-category" in done.stdout and "crowd-stuff" in done.stdout
    saved = json.loads((tmp_path / "bad.json").read_text())
    assert saved["ok"] is False and saved["splits"]["val"]["errors"] == 1
    assert {p["kind"] for p in saved["splits"]["val"]["problems"]} == {
        "unknown-category",
        "crowd-stuff",
    }
    done = cops("check-data", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "folder not found" in done.stderr


def test_training_and_evaluation_stop_on_json_errors(split: SplitPaths):
    DEFECTS["unknown-category"][0](split)
    recipe = load_recipe("synthetic-tiny", [f"data.root={split.root}", "data.train_split=val"])
    with pytest.raises(DatasetError, match=r"category_id 4242.*cops check-data .* --split val"):
        ensure_dataset(recipe, may_generate=False)
    with pytest.raises(DatasetError, match=r"category_id 4242"):  # what evaluate opens
        open_split(load_recipe("synthetic-tiny"), split.root, "val")
    assert check_index(SplitPaths(split.root, "train")).errors == []


def test_pretrain_command_stops_with_the_message(cops, split: SplitPaths, tmp_path: Path):
    DEFECTS["duplicate-file"][0](split)
    shutil.copyfile(split.json, SplitPaths(split.root, "train").json)
    done = cops("pretrain", "--recipe", "synthetic-tiny", "--data", str(split.root),
                "--out", str(tmp_path / "run"), "--device", "cpu")  # fmt: skip
    assert done.returncode == 2
    assert "named by 2 image entries" in done.stderr and "cops check-data" in done.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_malformed_entries_are_reported_not_raised(tmp_path: Path):
    paths = SplitPaths(tmp_path, "val")
    image = {"id": 1, "file_name": "a.png", "height": 4, "width": 4}
    segments = [{"id": 1, "category_id": [1]}, "x", {"id": 2, "category_id": 1, "bbox": "no"}]
    data = {
        "categories": [{"id": 1, "name": "a", "isthing": 1}],
        "images": [image],
        "annotations": [
            {"image_id": [1], "file_name": "a.png", "segments_info": []},
            {"image_id": 1, "file_name": "a.png", "segments_info": segments},
        ],
    }
    paths.json.write_text(json.dumps(data))
    kinds = [p.kind for p in check_index(paths).problems]
    assert kinds == ["unannotated", "unknown-category", "segment-id", "area-box"]
    paths.json.write_text("{bad")
    (problem,) = check_index(paths).problems
    assert problem.kind == "json" and "invalid JSON" in problem.message
