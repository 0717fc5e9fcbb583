"""Prediction writer (COCO panoptic PNG + JSON, overlays), image discovery and image reading."""

from __future__ import annotations

import copy
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from panopticapi.evaluation import pq_compute_single_core

from cops.datasets.panoptic_io import read_image, read_panoptic_png
from cops.errors import CopsError, DatasetError
from cops.inference.image_files import IMAGE_SUFFIXES, find_images
from cops.inference.output_claims import RECORD
from cops.inference.outputs import PredictionWriter, render_overlay
from cops.inference.result import PanopticPrediction

CLASSES = {
    "names": ["road", "sky", "car", "person"],
    "category_ids": [7, 23, 26, 24],
    "isthing": [False, False, True, True],
    "colors": [[128, 64, 128], [70, 130, 180], [0, 0, 142], [220, 20, 60]],
}
ROAD, SKY, CAR, PERSON = (tuple(c) for c in CLASSES["colors"])


def _prediction(height: int = 40, width: int = 60) -> PanopticPrediction:
    """Road everywhere, two touching cars, a person, a void strip; one segment not in the map."""
    ids = np.full((height, width), 3, dtype=np.int32)
    ids[10:30, 5:20] = 11
    ids[10:30, 20:32] = 12
    ids[5:35, 40:50] = 20
    ids[-3:, :] = 0
    segments = [
        {"id": 3, "category_id": 7, "isthing": False, "area": 0, "bbox": [], "score": 1.0},
        {"id": 11, "category_id": 26, "isthing": True, "area": 0, "bbox": [], "score": 0.9},
        {"id": 12, "category_id": 26, "isthing": True, "area": 0, "bbox": [], "score": 0.8},
        {"id": 20, "category_id": 24, "isthing": True, "area": 0, "bbox": [], "score": 0.7},
        {"id": 30, "category_id": 23, "isthing": False, "area": 0, "bbox": [], "score": 1.0},
    ]
    semantic = np.zeros((height, width), dtype=np.uint8)
    return PanopticPrediction(ids=ids, segments=segments, semantic=semantic)


def _image(height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _files(root: Path) -> list[str]:
    """The files below `root`, without the writer's record of its own outputs."""
    files = (p for p in root.rglob("*") if p.is_file() and p.name != RECORD)
    return sorted(p.relative_to(root).as_posix() for p in files)


def test_writer_png_json_and_overlay(tmp_path):
    out = tmp_path / "out"
    pred, image = _prediction(), _image()
    with PredictionWriter(out, CLASSES, overlay=True) as writer:
        png = writer.write("sub/dir/img1", pred, image=image, image_id=1, file_name="img1.jpg")
        writer.write("top", _prediction(38, 54), image=_image(38, 54))
        assert png == out / "panoptic" / "sub/dir/img1.png"
        assert not (out / "panoptic.json").exists(), "the JSON appears only at close"
    assert _files(out) == [
        "overlay/sub/dir/img1.png",
        "overlay/top.png",
        "panoptic.json",
        "panoptic/sub/dir/img1.png",
        "panoptic/top.png",
    ]
    data = json.loads((out / "panoptic.json").read_text())
    assert data["images"] == [
        {"id": 1, "file_name": "img1.jpg", "height": 40, "width": 60},
        {"id": "top", "file_name": "top", "height": 38, "width": 54},
    ]
    assert data["categories"] == [
        {"id": c, "name": n, "isthing": int(t), "color": col}
        for n, c, t, col in zip(*CLASSES.values(), strict=True)
    ]
    first = data["annotations"][0]
    assert first["image_id"] == 1 and first["file_name"] == "sub/dir/img1.png"
    for ann in data["annotations"]:
        ids = read_panoptic_png(out / "panoptic" / ann["file_name"])
        values, counts = np.unique(ids[ids != 0], return_counts=True)
        info = {s["id"]: s for s in ann["segments_info"]}
        assert sorted(info) == values.tolist() == [3, 11, 12, 20]
        assert [info[v]["area"] for v in values.tolist()] == counts.tolist()
        assert all(s["iscrowd"] == 0 for s in info.values())
        assert [info[v]["category_id"] for v in (3, 11, 20)] == [7, 26, 24]
        assert info[12]["score"] == pytest.approx(0.8) and info[11]["isthing"] is True
    info = {s["id"]: s for s in first["segments_info"]}
    assert info[11]["bbox"] == [5, 10, 15, 20] and info[20]["bbox"] == [40, 5, 10, 30]
    np.testing.assert_array_equal(read_panoptic_png(png), pred.ids)

    overlay = read_image(out / "overlay/sub/dir/img1.png")
    assert overlay.shape == image.shape and np.mean(overlay != image) > 0.5


def test_written_files_pass_panopticapi(tmp_path):
    """panopticapi checks PNG against JSON (ids both ways, categories); self-match gives PQ 1."""
    with PredictionWriter(tmp_path, CLASSES) as writer:
        writer.write("a/one", _prediction())
        writer.write("two", _prediction(30, 50))
    data = json.loads((tmp_path / "panoptic.json").read_text())
    categories = {c["id"]: c for c in data["categories"]}
    pairs = [(copy.deepcopy(a), copy.deepcopy(a)) for a in data["annotations"]]
    folder = str(tmp_path / "panoptic")
    stat = pq_compute_single_core(0, pairs, folder, folder, categories)
    result, per_class = stat.pq_average(categories, isthing=None)
    assert result["pq"] == pytest.approx(1.0) and result["n"] == 3
    assert per_class[26]["pq"] == pytest.approx(1.0)
    assert (stat[26].tp, stat[26].fp, stat[26].fn) == (4, 0, 0), "two cars per image"


def test_overlay_colours_borders_and_legend():
    pred, image = _prediction(120, 160), _image(120, 160)
    overlay = render_overlay(image, pred, CLASSES)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    # Legend: an exact swatch of every class present in the map, none of the absent sky.
    legend = overlay[:60, :60]
    for color in (ROAD, CAR, PERSON):
        assert np.all(legend == color, axis=-1).sum() >= 9, color
    assert not np.all(overlay == SKY, axis=-1).any()
    # Touching instances of one class get different colours: blank image, no legend rows there.
    blank = np.zeros((200, 300, 3), dtype=np.uint8)
    ids = np.zeros((200, 300), dtype=np.int32)
    ids[100:180, 150:200], ids[100:180, 200:260] = 11, 12
    two = PanopticPrediction(ids=ids, segments=pred.segments[1:3], semantic=ids.astype(np.uint8))
    drawn = render_overlay(blank, two, CLASSES)
    left, right = drawn[120:160, 160:190], drawn[120:160, 210:250]
    assert len(np.unique(left.reshape(-1, 3), axis=0)) == 1
    assert not np.array_equal(left[0, 0], right[0, 0])
    # Instance borders are drawn (white) where the cars meet and around them.
    assert np.all(drawn[140, 199] == 255) and np.all(drawn[140, 200] == 255)
    assert np.all(drawn[99, 170] == 255) or np.all(drawn[100, 170] == 255)


@pytest.mark.parametrize("size", [(64, 128), (1024, 2048)])
def test_legend_scales_with_the_image(size):
    height = size[0]
    ids = np.full(size, 3, dtype=np.int32)
    pred = PanopticPrediction(ids=ids, segments=_prediction().segments[:1], semantic=ids * 0)
    overlay = render_overlay(np.zeros((*size, 3), dtype=np.uint8), pred, CLASSES)
    swatch = np.all(overlay == ROAD, axis=-1)
    rows, cols = np.nonzero(swatch)
    side = rows.max() - rows.min() + 1
    assert cols.max() - cols.min() + 1 == side, "the swatch is a square"
    assert 0.02 * height <= side <= 0.25 * height, side
    assert side >= 9, "legend text stays readable on small images"


def test_writer_atomic_and_no_json_after_error(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"), PredictionWriter(tmp_path, CLASSES) as w:
        w.write("one", _prediction())
        raise RuntimeError("interrupted")
    assert _files(tmp_path) == ["panoptic/one.png"]
    writer = PredictionWriter(tmp_path / "b", CLASSES)
    writer.write("x", _prediction())
    assert not any(p.name.startswith(".") for p in (tmp_path / "b").rglob("*") if p.name != RECORD)
    assert writer.close() == tmp_path / "b" / "panoptic.json"
    assert writer.close() == tmp_path / "b" / "panoptic.json"
    with pytest.raises(ValueError, match="closed"):
        writer.write("y", _prediction())


def test_writer_errors(tmp_path):
    writer = PredictionWriter(tmp_path, CLASSES, overlay=True)
    with pytest.raises(ValueError, match="needs the input image"):
        writer.write("a", _prediction())
    with pytest.raises(ValueError, match="uint8 RGB of the prediction's size"):
        writer.write("a", _prediction(), image=_image(20, 20))
    for bad in ("../up", "a/../b", "/abs", "", "."):
        with pytest.raises(ValueError, match="relative path"):
            writer.write(bad, _prediction(), image=_image())
    unknown = _prediction()
    unknown.segments[0]["category_id"] = 99
    with pytest.raises(ValueError, match="category_id 99 is not one of the classes"):
        writer.write("a", unknown, image=_image())
    orphan = _prediction()
    orphan.segments = orphan.segments[1:]
    with pytest.raises(ValueError, match=r"a: ids \[3\] in the map have no segment"):
        writer.write("a", orphan, image=_image())
    assert _files(tmp_path) == [], "rejected predictions write nothing"
    writer.write("a", _prediction(), image=_image())
    with pytest.raises(ValueError, match="already written"):
        writer.write("a", _prediction(), image=_image())
    with pytest.raises(ValueError, match="one entry per class"):
        PredictionWriter(tmp_path, {**CLASSES, "colors": CLASSES["colors"][:2]})


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_find_images_recursive_sorted_and_filtered(tmp_path):
    png = cv2.imencode(".png", _image(4, 4))[1].tobytes()
    for rel in ["b.jpg", "a.PNG", "sub/c.tiff", "sub/deeper/d.jpeg", "z.bmp", "sub/b.tif"]:
        _touch(tmp_path / rel, png)
    for rel in ["notes.txt", "sub/readme.md", ".hidden/e.png", "sub/.f.png", "nosuffix"]:
        _touch(tmp_path / rel, png)
    (tmp_path / "folder.png").mkdir()
    found = find_images(tmp_path)
    assert [name for _, name in found] == ["a", "b", "sub/b", "sub/c", "sub/deeper/d", "z"]
    assert [p.relative_to(tmp_path).as_posix() for p, _ in found][:3] == [
        "a.PNG",
        "b.jpg",
        "sub/b.tif",
    ]
    assert find_images(tmp_path / "sub/c.tiff") == [(tmp_path / "sub/c.tiff", "c")]
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"} == set(IMAGE_SUFFIXES)


def test_find_images_errors(tmp_path):
    _touch(tmp_path / "empty/notes.txt", b"hi")
    with pytest.raises(CopsError, match=r"empty: no image files found"):
        find_images(tmp_path / "empty")
    with pytest.raises(CopsError, match=r"missing: no such file or folder"):
        find_images(tmp_path / "missing")
    with pytest.raises(CopsError, match=r"notes\.txt: not an image file"):
        find_images(tmp_path / "empty/notes.txt")
    _touch(tmp_path / "twins/x.jpg")
    _touch(tmp_path / "twins/x.png")
    with pytest.raises(CopsError, match=r"x\.jpg and .*x\.png would both be written as 'x'"):
        find_images(tmp_path / "twins")


def test_read_image_converts_and_names_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    grey16 = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    image = read_image(tmp_path / "grey16.png")
    assert image.dtype == np.uint8 and image.shape == (6, 7, 3)
    np.testing.assert_array_equal(image[..., 1], grey16 >> 8)
    rgba = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., 2::-1])

    text = _touch(tmp_path / "notes.png", b"this is text, not a picture")
    good = cv2.imencode(".png", _image(30, 30))[1].tobytes()
    truncated = _touch(tmp_path / "sub/truncated.png", good[: len(good) // 2])
    for bad in (text, truncated, tmp_path / "missing.jpg"):
        with pytest.raises(DatasetError, match=str(bad).replace(".", r"\.")):
            read_image(bad)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(bytes(16)))
    huge = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")
    with pytest.raises(DatasetError, match=r"huge\.png: cannot decode image"):
        read_image(_touch(tmp_path / "huge.png", huge))
