"""Reader for prepared (COCO panoptic) datasets: validated index, category metadata and samples.

The JSON and the file list are checked when a split is opened; pixel content is checked per item as
it loads, or for every item at once with `PanopticDataset.validate`. The index is kept in numpy
arrays (DataLoader workers share it copy-on-write) and no file handle outlives a call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from torch.utils.data import Dataset

from cops.datasets.class_list import ClassList
from cops.datasets.conversion import SplitPaths
from cops.datasets.panoptic_io import VOID_ID, read_image, read_json, read_panoptic_png
from cops.errors import DatasetError
from cops.parallel import fork_pool

IGNORE_LABEL = 255

Transform = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]
"""A sample transform: ``transform(sample, rng)`` with the item's own random generator."""


@dataclass(eq=False)
class CategoryInfo:
    """Categories of a prepared split; train ids are contiguous, 0..K-1, in the JSON's order."""

    category_ids: np.ndarray
    names: tuple[str, ...]
    colors: np.ndarray
    isthing: np.ndarray
    ignore_label: int = IGNORE_LABEL
    id_to_train: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.id_to_train = {int(c): t for t, c in enumerate(self.category_ids)}

    @classmethod
    def from_json(cls, categories: Any, source: Path) -> CategoryInfo:
        """Parse COCO panoptic category entries; errors name `source` and the bad entry."""
        parse = _JsonParser(source)
        if not isinstance(categories, list) or not categories:
            parse.fail("'categories' must be a non-empty list")
        ids, names, colors, isthing = [], [], [], []
        for i, entry in enumerate(categories):
            where = f"categories[{i}]"
            cat_id = parse.get(entry, "id", int, where)
            if cat_id in ids:
                parse.fail(f"{where}: duplicate category id {cat_id}")
            color = parse.get(entry, "color", list, where)
            if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
                parse.fail(f"{where}: 'color' must be three integers in 0..255, got {color}")
            ids.append(cat_id)
            names.append(parse.get(entry, "name", str, where))
            colors.append(color)
            isthing.append(bool(parse.get(entry, "isthing", (int, bool), where)))
        if len(ids) > IGNORE_LABEL:
            parse.fail(f"{len(ids)} categories; at most {IGNORE_LABEL} fit below the ignore label")
        return cls(
            category_ids=np.asarray(ids, dtype=np.int64),
            names=tuple(names),
            colors=np.asarray(colors, dtype=np.uint8).reshape(-1, 3),
            isthing=np.asarray(isthing, dtype=bool),
        )

    @property
    def num_classes(self) -> int:
        """Number of categories K."""
        return len(self.names)

    @property
    def thing_train_ids(self) -> np.ndarray:
        """Train ids of the thing (partitionable) classes."""
        return np.flatnonzero(self.isthing)

    @property
    def stuff_train_ids(self) -> np.ndarray:
        """Train ids of the stuff classes."""
        return np.flatnonzero(~self.isthing)

    @property
    def classes(self) -> ClassList:
        """The class table (names, category ids, thing flags, colours) in train-id order."""
        return ClassList(
            names=list(self.names),
            category_ids=[int(c) for c in self.category_ids],
            isthing=[bool(t) for t in self.isthing],
            colors=[[int(v) for v in c] for c in self.colors],
        )


class _JsonParser:
    """Typed field access whose errors name the JSON file and the entry."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(f"{self.source}: {message}")

    def get(self, entry: Any, key: str, kinds: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(entry, dict):
            self.fail(f"{where} must be an object, got {type(entry).__name__}")
        if key not in entry:
            self.fail(f"{where} has no key '{key}'")
        value = entry[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(f"{where}: '{key}' must be {names}, got {value!r}")
        return value


@dataclass
class _Index:
    """Per-image records and all segments, flat; image i owns segments offsets[i]:offsets[i + 1]."""

    image_ids: list[int | str]
    file_names: list[str]
    png_names: list[str]
    sizes: np.ndarray
    offsets: np.ndarray
    seg_ids: np.ndarray
    seg_categories: np.ndarray
    seg_crowd: np.ndarray
    seg_areas: np.ndarray
    seg_bboxes: np.ndarray


def _annotations_by_image(
    parse: _JsonParser, annotations: list[Any]
) -> dict[int | str, dict[str, Any]]:
    """The split's annotations by image id; a second annotation for one image fails."""
    by_image: dict[int | str, dict[str, Any]] = {}
    for i, ann in enumerate(annotations):
        image_id = parse.get(ann, "image_id", (int, str), f"annotations[{i}]")
        if image_id in by_image:
            parse.fail(f"annotations[{i}]: second annotation for image id {image_id!r}")
        by_image[image_id] = ann
    return by_image


def _parse_segments(
    parse: _JsonParser, segments: list[Any], where: str, meta: CategoryInfo
) -> list[tuple[int, int, int | float, list, bool]]:
    """(id, category_id, area, bbox, iscrowd) of one annotation's checked segments_info."""
    rows = []
    ids_here: set[int] = set()
    for j, seg in enumerate(segments):
        seg_where = f"{where}, segments_info[{j}]"
        seg_id = parse.get(seg, "id", int, seg_where)
        if seg_id <= VOID_ID:
            parse.fail(f"{seg_where}: segment id must be positive, got {seg_id}")
        if seg_id in ids_here:
            parse.fail(f"{seg_where}: duplicate segment id {seg_id}")
        ids_here.add(seg_id)
        category = parse.get(seg, "category_id", int, seg_where)
        if category not in meta.id_to_train:
            known = ", ".join(str(c) for c in meta.category_ids)
            parse.fail(f"{seg_where}: unknown category_id {category} (known: {known})")
        bbox = parse.get(seg, "bbox", list, seg_where)
        if len(bbox) != 4:
            parse.fail(f"{seg_where}: 'bbox' must have 4 numbers, got {bbox}")
        area = parse.get(seg, "area", (int, float), seg_where)
        rows.append((seg_id, category, area, bbox, bool(seg.get("iscrowd", 0))))
    return rows


def _parse_index(paths: SplitPaths) -> tuple[CategoryInfo, _Index]:
    """Read and check the split's JSON: keys, types, image/annotation pairing, segment ids."""
    data = read_json(paths.json)
    parse = _JsonParser(paths.json)
    if not isinstance(data, dict):
        parse.fail("expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            parse.fail(f"missing top-level key '{key}'")
        if not isinstance(data[key], list):
            parse.fail(f"'{key}' must be a list")
    meta = CategoryInfo.from_json(data["categories"], paths.json)

    annotations = _annotations_by_image(parse, data["annotations"])
    image_ids, file_names, png_names, sizes, offsets = [], [], [], [], [0]
    seg_ids, seg_cats, seg_crowd, seg_areas, seg_bboxes = [], [], [], [], []
    seen_images: set[int | str] = set()
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        image_id = parse.get(img, "id", (int, str), where)
        if image_id in seen_images:
            parse.fail(f"{where}: duplicate image id {image_id!r}")
        seen_images.add(image_id)
        file_name = parse.get(img, "file_name", str, where)
        height = parse.get(img, "height", int, where)
        width = parse.get(img, "width", int, where)
        if height <= 0 or width <= 0:
            parse.fail(f"{where}: height and width must be positive, got {height}x{width}")
        ann = annotations.pop(image_id, None)
        if ann is None:
            parse.fail(f"image {image_id!r} ({file_name}) has no annotation")
        where = f"annotation of image {image_id!r}"
        png_name = parse.get(ann, "file_name", str, where)
        for seg_id, category, area, bbox, crowd in _parse_segments(
            parse, parse.get(ann, "segments_info", list, where), f"{where} ({png_name})", meta
        ):
            seg_ids.append(seg_id)
            seg_cats.append(category)
            seg_areas.append(area)
            seg_bboxes.append(bbox)
            seg_crowd.append(crowd)
        image_ids.append(image_id)
        file_names.append(file_name)
        png_names.append(png_name)
        sizes.append((height, width))
        offsets.append(len(seg_ids))
    if annotations:
        orphan = next(iter(annotations))
        parse.fail(f"annotation for image id {orphan!r} has no entry in 'images'")
    index = _Index(
        image_ids=image_ids,
        file_names=file_names,
        png_names=png_names,
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        offsets=np.asarray(offsets, dtype=np.int64),
        seg_ids=np.asarray(seg_ids, dtype=np.int64),
        seg_categories=np.asarray(seg_cats, dtype=np.int64),
        seg_crowd=np.asarray(seg_crowd, dtype=bool),
        seg_areas=np.asarray(seg_areas),
        seg_bboxes=np.asarray(seg_bboxes).reshape(-1, 4),
    )
    return meta, index


def _files_under(folder: Path) -> set[str]:
    """Relative POSIX paths of all files below `folder` (empty when it does not exist)."""
    found: set[str] = set()
    for dirpath, _, files in os.walk(folder):
        rel = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if rel == "." else rel + "/"
        found.update(prefix + name for name in files)
    return found


def _check_files(folder: Path, names: list[str], kind: str, source: Path) -> None:
    """Fail naming the first listed file that is not on disk, with a count of the others."""
    present = _files_under(folder)
    missing = [name for name in names if name not in present]
    if missing:
        more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
        raise DatasetError(
            f"{folder / missing[0]}: {kind} file not found (listed in {source}){more}"
        )


def present_segment_ids(panoptic: np.ndarray) -> np.ndarray:
    """Sorted non-void ids in a panoptic map; only run starts are sorted, so it stays cheap."""
    flat = panoptic.ravel()
    starts = np.empty(flat.size, dtype=bool)
    starts[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=starts[1:])
    ids = np.unique(flat[starts])
    return ids[ids != VOID_ID]


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]} (HxW)"


_POOL_DATASET: PanopticDataset | None = None


def _pool_init(dataset: PanopticDataset) -> None:
    global _POOL_DATASET
    _POOL_DATASET = dataset


def _pool_check(index: int) -> str | None:
    assert _POOL_DATASET is not None
    return _POOL_DATASET.check(index)


class PanopticDataset(Dataset):
    """One split of a prepared dataset as a torch Dataset of sample dicts.

    Raw samples hold ``image`` (uint8 HWC RGB), ``panoptic`` (int64 ids, 0 = void), ``segments``,
    ``image_id`` and ``file_name``. A transform gets the sample and a generator seeded by
    (seed, epoch, index), so augmentation is reproducible in any worker and after a resume.
    """

    def __init__(
        self, root: Path, split: str, transform: Transform | None = None, seed: int = 0
    ) -> None:
        self.paths = SplitPaths(Path(root), split)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.categories, self._index = _parse_index(self.paths)
        _check_files(self.paths.images, self._index.file_names, "image", self.paths.json)
        _check_files(self.paths.panoptic, self._index.png_names, "panoptic PNG", self.paths.json)
        self._seg_train = np.asarray(
            [self.categories.id_to_train[int(c)] for c in self._index.seg_categories],
            dtype=np.int64,
        )

    def __len__(self) -> int:
        return len(self._index.file_names)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds augmentation, before the epoch's DataLoader iterator starts.

        Workers copy the dataset when they start, so persistent workers keep their first epoch.
        """
        self.epoch = epoch

    def item_rng(self, index: int) -> np.random.Generator:
        """The random generator for item `index` in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def image_path(self, index: int) -> Path:
        """Path of item `index`'s image."""
        return self.paths.images / self._index.file_names[index]

    def panoptic_path(self, index: int) -> Path:
        """Path of item `index`'s panoptic PNG."""
        return self.paths.panoptic / self._index.png_names[index]

    def segments(self, index: int) -> list[dict[str, Any]]:
        """The annotation's segments of item `index`, with their train id and thing flag added."""
        idx = self._index
        start, stop = idx.offsets[index], idx.offsets[index + 1]
        isthing = self.categories.isthing
        return [
            {
                "id": int(idx.seg_ids[k]),
                "category_id": int(idx.seg_categories[k]),
                "train_id": int(self._seg_train[k]),
                "isthing": bool(isthing[self._seg_train[k]]),
                "iscrowd": int(idx.seg_crowd[k]),
                "area": idx.seg_areas[k].item(),
                "bbox": idx.seg_bboxes[k].tolist(),
            }
            for k in range(start, stop)
        ]

    def load(self, index: int) -> dict[str, Any]:
        """Read and check item `index` without transforming it."""
        index = range(len(self))[index]
        image_path, png_path = self.image_path(index), self.panoptic_path(index)
        image = read_image(image_path)
        panoptic = read_panoptic_png(png_path)
        expected = tuple(int(v) for v in self._index.sizes[index])
        if panoptic.shape != expected:
            raise DatasetError(
                f"{png_path}: size {_hw(panoptic.shape)} differs from {_hw(expected)} "
                f"given in {self.paths.json}"
            )
        if image.shape[:2] != panoptic.shape:
            raise DatasetError(
                f"{image_path}: image size {_hw(image.shape)} differs from its panoptic PNG "
                f"{png_path} ({_hw(panoptic.shape)})"
            )
        segments = self.segments(index)
        listed = np.asarray(sorted(s["id"] for s in segments), dtype=np.int64)
        present = present_segment_ids(panoptic)
        extra = np.setdiff1d(present, listed)
        if extra.size:
            raise DatasetError(
                f"{png_path}: segment ids {extra[:5].tolist()} are in the PNG but not in the "
                f"segments_info of {self.paths.json}"
            )
        absent = np.setdiff1d(listed, present)
        if absent.size:
            raise DatasetError(
                f"{png_path}: segment ids {absent[:5].tolist()} are listed in {self.paths.json} "
                "but absent from the PNG"
            )
        return {
            "image": image,
            "panoptic": panoptic,
            "segments": segments,
            "image_id": self._index.image_ids[index],
            "file_name": self._index.file_names[index],
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.transform is None:
            return sample
        return self.transform(sample, self.item_rng(index))

    def check(self, index: int) -> str | None:
        """Load item `index`; return its problem as a message, or None when it is fine."""
        try:
            self.load(index)
        except DatasetError as exc:
            return str(exc)
        return None

    def validate(self, workers: int = 1) -> list[str]:
        """Check every item's image and PNG (in `workers` processes); return all problems found."""
        if workers <= 1 or len(self) <= 1:
            results = [self.check(i) for i in range(len(self))]
        else:
            chunk = max(1, min(16, len(self) // (workers * 4)))
            with fork_pool(workers, _pool_init, (self,)) as pool:
                results = list(pool.imap(_pool_check, range(len(self)), chunksize=chunk))
        return [message for message in results if message is not None]


def available_splits(root: Path) -> list[str]:
    """Names of the splits prepared under `root` (those with a ``panoptic_<split>.json``)."""
    prefix, suffix = "panoptic_", ".json"
    return sorted(
        p.name[len(prefix) : -len(suffix)]
        for p in Path(root).glob(f"{prefix}*{suffix}")
        if p.is_file()
    )
