"""Cityscapes converter: equal to cityscapesscripts' createPanopticImgs on a generated fixture."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cops.datasets.cityscapes import CITYSCAPES_CLASSES, NUM_LABEL_IDS, prepare_cityscapes
from cops.datasets.panoptic_io import read_panoptic_png, rgb2id
from cops.errors import DatasetError

HEIGHT, WIDTH = 32, 64
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}


def _instance_ids(seed: int) -> np.ndarray:
    """A street-like label map: stuff bands, void, ignored classes, instances and crowd regions."""
    rng = np.random.default_rng(seed)
    ids = np.full((HEIGHT, WIDTH), 23, dtype=np.uint16)  # sky
    ids[8:16] = 11  # building
    ids[8:16, 40:] = 21  # vegetation
    ids[16:] = 7  # road
    ids[24:, :10] = 8  # sidewalk
    ids[-2:] = 1  # ego vehicle (void)
    ids[:2, :4] = 0  # unlabeled (void)
    ids[:3, -5:] = 3  # out of roi (void)
    ids[12:16, 20:24] = 9  # parking: ignored in evaluation
    ids[18:22, 50:60] = 29001  # caravan instance: ignored in evaluation
    for k in range(1, 4):  # cars, some touching each other
        y, x = int(rng.integers(14, 24)), int(rng.integers(0, 40))
        ids[y : y + 6, x : x + 8] = 26000 + k
    ids[10:20, 30:33] = 24000  # person instance 0
    ids[10:20, 33:36] = 24001  # touching person instance
    ids[26:28, 40:44] = 24001  # same person, second disconnected part
    ids[20:24, 12:18] = 26  # car crowd region
    ids[4:6, 50:56] = 33  # bicycle crowd region
    if seed % 3 == 0:
        ids[2:4, 10:14] = 21005  # stuff class carrying an instance id
        ids[28:30, 20:24] = 31001  # train instance
    return ids


def _write_fixture(root: Path) -> list[str]:
    """Write a small Cityscapes tree (two cities per split); returns the image ids."""
    image_ids = []
    seed = 0
    for split, cities in CITIES.items():
        for city in cities:
            for frame in range(2 if split == "train" else 1):
                seed += 1
                image_id = f"{city}_{seed:06d}_{frame:06d}"
                image_ids.append(image_id)
                image_dir = root / "leftImg8bit" / split / city
                label_dir = root / "gtFine" / split / city
                image_dir.mkdir(parents=True, exist_ok=True)
                label_dir.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng(seed)
                image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
                cv2.imwrite(str(image_dir / f"{image_id}_leftImg8bit.png"), image)
                ids = _instance_ids(seed)
                cv2.imwrite(str(label_dir / f"{image_id}_gtFine_instanceIds.png"), ids)
    return image_ids


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    _write_fixture(root)
    return root


@pytest.fixture(scope="module")
def oracle(cityscapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cityscapesscripts' own conversion of the fixture (label ids, not train ids)."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    out = tmp_path_factory.mktemp("oracle")
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(cityscapes / "gtFine"), str(out), False, ["train", "val"])
    return out


@pytest.fixture(scope="module")
def prepared(cityscapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_cityscapes(cityscapes, out)
    return out


def test_label_table_matches_cityscapesscripts() -> None:
    from cityscapesscripts.helpers.labels import labels

    official = [label for label in labels if label.id >= 0]
    assert max(label.id for label in official) == NUM_LABEL_IDS - 1
    evaluated = [label for label in official if not label.ignoreInEval]
    ours = [(c.id, c.train_id, c.name, c.category, c.isthing, c.color) for c in CITYSCAPES_CLASSES]
    theirs = [
        (lb.id, lb.trainId, lb.name, lb.category, lb.hasInstances, lb.color) for lb in evaluated
    ]
    assert ours == theirs
    assert [c.train_id for c in CITYSCAPES_CLASSES] == list(range(19))


@pytest.mark.parametrize("split", ["train", "val"])
def test_equals_create_panoptic_imgs(
    cityscapes: Path, prepared: Path, oracle: Path, split: str
) -> None:
    ours = json.loads((prepared / f"panoptic_{split}.json").read_text())
    theirs = json.loads((oracle / f"cityscapes_panoptic_{split}.json").read_text())
    assert ours["categories"] == theirs["categories"]
    # cityscapesscripts names the image "<id>_gtFine_leftImg8bit.png", a file that does not exist;
    # ours names the image actually written: "<id>_leftImg8bit.png".
    renamed = [{**i, "file_name": i["file_name"].replace("_gtFine", "")} for i in theirs["images"]]
    assert ours["images"] == renamed
    assert ours["annotations"] == theirs["annotations"]
    assert len(ours["images"]) == (4 if split == "train" else 2)
    segments = [s for a in ours["annotations"] for s in a["segments_info"]]
    assert any(s["iscrowd"] for s in segments)
    assert {26001, 24000, 24001, 7, 26}.issubset({s["id"] for s in segments})
    for annotation in ours["annotations"]:
        mine = read_panoptic_png(prepared / "panoptic" / split / annotation["file_name"])
        official = rgb2id(
            np.array(Image.open(oracle / f"cityscapes_panoptic_{split}" / annotation["file_name"]))
        )
        np.testing.assert_array_equal(mine, official)
        assert not np.isin(mine, [1, 3, 9, 29001]).any()
    for image in ours["images"]:  # default link mode: byte-identical copies
        city = image["id"].split("_")[0]
        source = cityscapes / "leftImg8bit" / split / city / image["file_name"]
        copied = prepared / "images" / split / image["file_name"]
        assert not copied.is_symlink() and copied.read_bytes() == source.read_bytes()


def test_parallel_and_link_modes(cityscapes: Path, prepared: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    summaries = prepare_cityscapes(
        cityscapes,
        tmp_path / "sym",
        splits=["val"],
        workers=2,
        link="symlink",
        progress=lambda *a: calls.append(a),
    )
    assert summaries[0].images == 2 and summaries[0].crowd == 4
    assert calls[0] == ("val", 0, 2) and calls[-1] == ("val", 2, 2)
    assert (tmp_path / "sym" / "panoptic_val.json").read_text() == (
        prepared / "panoptic_val.json"
    ).read_text()
    image = tmp_path / "sym" / "images" / "val" / "lindau_000006_000000_leftImg8bit.png"
    source = cityscapes / "leftImg8bit" / "val" / "lindau" / image.name
    assert image.is_symlink() and image.resolve() == source.resolve()
    prepare_cityscapes(cityscapes, tmp_path / "hard", splits=["val"], link="hardlink")
    assert os.path.samefile(tmp_path / "hard" / "images" / "val" / image.name, source)


def _copy_tree(src: Path, dst: Path) -> Path:
    """A writable copy of the fixture, for tests that break it."""
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dst


def _first(root: Path, kind: str, split: str = "val") -> Path:
    folder = "leftImg8bit" if kind == "image" else "gtFine"
    pattern = "*_leftImg8bit.png" if kind == "image" else "*_instanceIds.png"
    return sorted((root / folder / split).glob(f"*/{pattern}"))[0]


def test_missing_label_names_file(cityscapes: Path, tmp_path: Path) -> None:
    root = _copy_tree(cityscapes, tmp_path / "src")
    label = _first(root, "label")
    label.unlink()
    with pytest.raises(DatasetError, match=label.name.replace("_gtFine_instanceIds.png", "")):
        prepare_cityscapes(root, tmp_path / "out", splits=["val"])


def test_missing_image_names_file(cityscapes: Path, tmp_path: Path) -> None:
    root = _copy_tree(cityscapes, tmp_path / "src")
    _first(root, "image").unlink()
    with pytest.raises(DatasetError, match=r"instanceIds\.png: no matching image"):
        prepare_cityscapes(root, tmp_path / "out", splits=["val"])


def test_missing_folder(cityscapes: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"leftImg8bit[/\\]nosuch: folder not found"):
        prepare_cityscapes(cityscapes, tmp_path / "out", splits=["nosuch"])
    root = _copy_tree(cityscapes, tmp_path / "src")
    for path in sorted((root / "gtFine" / "train").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "gtFine" / "train").rmdir()
    with pytest.raises(DatasetError, match=r"gtFine[/\\]train: folder not found"):
        prepare_cityscapes(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # every split is checked before anything is written


def test_size_mismatch(cityscapes: Path, tmp_path: Path) -> None:
    root = _copy_tree(cityscapes, tmp_path / "src")
    image = _first(root, "image")
    cv2.imwrite(str(image), np.zeros((HEIGHT, WIDTH - 4, 3), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "panoptic_val.json").write_text("{}")
    with pytest.raises(DatasetError, match=rf"{image.name}: image is 60×32 but .* is 64×32"):
        prepare_cityscapes(root, out, splits=["val"])
    assert (out / "panoptic_val.json").read_text() == "{}", "a failed run keeps the old split"
    assert not (out / "images").exists(), "nothing of the failed run is left"


def test_unknown_label_id_and_corrupt_label(cityscapes: Path, tmp_path: Path) -> None:
    root = _copy_tree(cityscapes, tmp_path / "src")
    label = _first(root, "label")
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    ids[0, 0] = 40
    cv2.imwrite(str(label), ids)
    with pytest.raises(DatasetError, match=rf"{label.name}: pixel value 40 has label id 40"):
        prepare_cityscapes(root, tmp_path / "out", splits=["val"])
    label.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=rf"{label.name}: not a readable PNG"):
        prepare_cityscapes(root, tmp_path / "out", splits=["val"])


def test_test_split_rejected(cityscapes: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="test split has no public panoptic labels"):
        prepare_cityscapes(cityscapes, tmp_path / "out", splits=["test"])
