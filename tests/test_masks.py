"""`cops prepare-data masks`: semantic + instance PNGs to the prepared format, round trip against
panopticapi, and one named error per kind of bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from panopticapi.evaluation import pq_compute

from cops.datasets.conversion import SplitPaths
from cops.datasets.masks import MaskFolders, prepare_masks
from cops.datasets.panoptic_io import read_panoptic_png, write_image
from cops.datasets.synthetic import prepare_synthetic
from cops.errors import CopsError, DatasetError

IGNORE = 255


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _export_masks(prepared: SplitPaths, src: Path) -> None:
    """Write a prepared split as images + 8-bit semantic + 16-bit instance PNGs (crowd → 0)."""
    data = json.loads(prepared.json.read_text())
    for ann in data["annotations"]:
        ids = read_panoptic_png(prepared.panoptic / ann["file_name"])
        semantic = np.full(ids.shape, IGNORE, dtype=np.uint8)
        instance = np.zeros(ids.shape, dtype=np.uint16)
        for k, seg in enumerate(ann["segments_info"], start=300):  # ids above 8 bits
            semantic[ids == seg["id"]] = seg["category_id"]
            thing = next(c for c in data["categories"] if c["id"] == seg["category_id"])["isthing"]
            if thing and not seg["iscrowd"]:
                instance[ids == seg["id"]] = k
        stem = Path(ann["file_name"]).stem
        _write_png(src / "semantic" / prepared.split / f"{stem}.png", semantic)
        _write_png(src / "instance" / prepared.split / f"{stem}.png", instance)
    for image in data["images"]:
        target = src / "images" / prepared.split / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(prepared.images / image["file_name"], target)
    classes = {
        "ignore": IGNORE,
        "classes": [
            {"id": c["id"], "name": c["name"], "isthing": bool(c["isthing"]), "color": c["color"]}
            for c in data["categories"]
        ],
    }
    (src / "classes.yaml").write_text(yaml.safe_dump(classes))


@pytest.fixture(scope="module")
def synthetic_masks(tmp_path_factory) -> tuple[SplitPaths, Path]:
    """A prepared synthetic split with one thing segment marked crowd, and its mask export."""
    root = tmp_path_factory.mktemp("masks")
    prepare_synthetic(root / "prepared", preset="tiny", num_val=4, splits=("val",))
    paths = SplitPaths(root / "prepared", "val")
    data = json.loads(paths.json.read_text())
    thing_ids = {c["id"] for c in data["categories"] if c["isthing"]}
    first = next(
        s for s in data["annotations"][0]["segments_info"] if s["category_id"] in thing_ids
    )
    first["iscrowd"] = 1
    paths.json.write_text(json.dumps(data))
    _export_masks(paths, root / "src")
    return paths, root / "src"


def test_masks_round_trip_gives_pq_100_in_panopticapi(cops, synthetic_masks, tmp_path: Path):
    original, src = synthetic_masks
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    done = cops("prepare-data", "masks", str(src), "--classes", str(src / "classes.yaml"),
                "--out", str(tmp_path / "out"), "--splits", "val", "-j", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Prepared dataset" in done.stdout and "(crowd segments)" in done.stdout
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # input untouched
    converted = SplitPaths(tmp_path / "out", "val")
    ours, theirs = json.loads(converted.json.read_text()), json.loads(original.json.read_text())
    by_stem = {Path(a["file_name"]).stem: a for a in theirs["annotations"]}
    for ann in ours["annotations"]:  # the original's image ids, to pair the two files
        ann["image_id"] = by_stem[ann["image_id"]]["image_id"]
        ref = by_stem[Path(ann["file_name"]).stem]
        key = sorted(
            (s["category_id"], s["area"], s["bbox"], s["iscrowd"]) for s in ann["segments_info"]
        )
        assert key == sorted(
            (s["category_id"], s["area"], s["bbox"], s["iscrowd"]) for s in ref["segments_info"]
        )
    assert sum(s["iscrowd"] for a in ours["annotations"] for s in a["segments_info"]) == 1
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps(ours))
    with contextlib.redirect_stdout(io.StringIO()):
        result = pq_compute(str(original.json), str(pred_json), str(original.panoptic),
                            str(converted.panoptic))  # fmt: skip
    assert result["All"]["pq"] == pytest.approx(1.0) and result["All"]["n"] > 3


def _tiny_source(root: Path, semantic: np.ndarray | None = None) -> Path:
    """One 8x10 image with a road (class 1) and two cars (class 2), and a classes file."""
    semantic = semantic if semantic is not None else np.ones((8, 10), dtype=np.uint8)
    semantic[4:, :5] = 2
    instance = np.zeros((8, 10), dtype=np.uint8)
    instance[4:, :3], instance[4:, 3:5] = 1, 2
    write_image(root / "images/val/a.png", np.zeros((8, 10, 3), dtype=np.uint8))
    _write_png(root / "semantic/val/a.png", semantic)
    _write_png(root / "instance/val/a.png", instance)
    classes = {"classes": [{"id": 1, "name": "road", "isthing": False},
                           {"id": 2, "name": "car", "isthing": True}]}  # fmt: skip
    (root / "classes.yaml").write_text(yaml.safe_dump(classes))
    return root


def _convert(src: Path, out: Path, **options) -> list:
    return prepare_masks(src, out, src / "classes.yaml", splits=("val",), **options)


def test_instances_crowd_and_void(tmp_path: Path):
    src = _tiny_source(tmp_path / "src")
    semantic = cv2.imread(str(src / "semantic/val/a.png"), cv2.IMREAD_UNCHANGED)
    semantic[0, :] = IGNORE
    semantic[1, 0] = 2  # a thing pixel with instance 0: crowd
    _write_png(src / "semantic/val/a.png", semantic)
    _convert(src, tmp_path / "out")
    data = json.loads((tmp_path / "out/panoptic_val.json").read_text())
    segs = data["annotations"][0]["segments_info"]
    assert [(s["category_id"], s["area"], s["iscrowd"]) for s in segs] == [
        (1, 49, 0), (2, 1, 1), (2, 12, 0), (2, 8, 0)
    ]  # fmt: skip
    ids = read_panoptic_png(tmp_path / "out/panoptic/val/a.png")
    assert (ids[0] == 0).all() and len(np.unique(ids)) == 5
    assert [c["name"] for c in data["categories"]] == ["road", "car"]


def _defect(kind: str, src: Path) -> None:
    """Plant one kind of bad input into a tiny source."""
    if kind == "size":
        _write_png(src / "instance/val/a.png", np.zeros((8, 9), dtype=np.uint8))
    elif kind == "partner":
        write_image(src / "images/val/b.jpg", np.zeros((8, 10, 3), dtype=np.uint8))
        _write_png(src / "semantic/val/b.png", np.ones((8, 10), dtype=np.uint8))
    elif kind == "orphan":
        _write_png(src / "semantic/val/b.png", np.ones((8, 10), dtype=np.uint8))
    elif kind == "unknown":
        _write_png(src / "semantic/val/a.png", np.full((8, 10), 7, dtype=np.uint8))
    elif kind == "rgb":
        _write_png(src / "instance/val/a.png", np.zeros((8, 10, 3), dtype=np.uint8))
    elif kind == "palette":
        from PIL import Image

        Image.fromarray(np.ones((8, 10), dtype=np.uint8)).convert("P").save(
            src / "semantic/val/a.png"
        )
    elif kind == "classes":
        (src / "classes.yaml").write_text("classes:\n  - {id: 1, name: road}\n")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("size", r"instance/val/a\.png: mask is 9×8 but image a\.png is 10×8"),
        ("partner", r"images/val/b\.jpg: no instance mask; expected .*instance/val/b\.png"),
        ("orphan", r"semantic/val/b\.png: semantic mask without an image"),
        ("unknown", r"semantic/val/a\.png: class value\(s\) \[7\] not in the classes file"),
        ("rgb", r"instance/val/a\.png: instance PNG is 8-bit RGB; expected a single-channel"),
        ("palette", r"semantic/val/a\.png: semantic PNG is 8-bit palette.*palette indices"),
        ("classes", r"classes\.yaml: classes\[0\] has no 'isthing'"),
    ],
)
def test_bad_input_is_named_per_file(tmp_path: Path, kind: str, message: str):
    src = _tiny_source(tmp_path / "src")
    _defect(kind, src)
    with pytest.raises(DatasetError, match=message):
        _convert(src, tmp_path / "out")
    assert not (tmp_path / "out/panoptic_val.json").exists()


def test_output_inside_the_source_is_refused(tmp_path: Path):
    src = _tiny_source(tmp_path / "src")
    with pytest.raises(CopsError, match="overlaps the source"):
        _convert(src, src / "prepared")
    with pytest.raises(CopsError, match="overlaps the source"):
        _convert(src, src)
    assert not (src / "prepared").exists() and not (src / "panoptic").exists()


def test_renamed_folders_and_crowd_id(tmp_path: Path):
    src = _tiny_source(tmp_path / "src")
    instance = np.zeros((8, 10), dtype=np.uint8)
    instance[4:, :3], instance[4:, 3:5] = 1, 9
    _write_png(src / "instance/val/a.png", instance)
    for old, new in (("images", "rgb"), ("semantic", "sem"), ("instance", "inst")):
        (src / old).rename(src / new)
    _convert(src, tmp_path / "out", folders=MaskFolders("rgb", "sem", "inst"), crowd_id=9)
    segs = json.loads((tmp_path / "out/panoptic_val.json").read_text())["annotations"][0]
    assert [(s["area"], s["iscrowd"]) for s in segs["segments_info"]] == [(60, 0), (8, 1), (12, 0)]
