"""Checks of a prepared (COCO panoptic) split, made by us or by other tools, listing every problem.

Two parts: :func:`check_index` reads only the JSON (cheap; training and evaluation run it before
they start), :func:`check_pixels` decodes every image and panoptic PNG (``cops check-data``).
Unlike the reader, which stops at the first problem, both collect all of them, each as a
:class:`Problem` of a named kind, so a report can show them grouped by kind.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cops.datasets.conversion import ProgressFn, SplitPaths
from cops.datasets.panoptic_io import (
    VOID_ID,
    read_image,
    read_json,
    read_panoptic_png,
    segment_stats,
)
from cops.errors import DatasetError
from cops.parallel import fork_pool

ERROR, WARNING = "error", "warning"
KINDS: dict[str, tuple[str, str]] = {
    "json": (ERROR, "the JSON is unreadable or lacks images/annotations/categories"),
    "category": (ERROR, "a category entry is malformed (id, name, isthing, color)"),
    "image-entry": (ERROR, "an image entry is malformed or repeats an id"),
    "duplicate-file": (ERROR, "two entries name the same image or PNG file"),
    "unannotated": (ERROR, "an image without annotation, or an annotation without image"),
    "segment-id": (ERROR, "a segment id is not positive, too large or repeated in its image"),
    "unknown-category": (ERROR, "a segment's category_id is not among the categories"),
    "crowd": (ERROR, "iscrowd is not 0 or 1"),
    "area-box": (ERROR, "a segment's area or bbox is malformed or differs from its PNG"),
    "missing-file": (ERROR, "a listed image or PNG is not on disk"),
    "unreadable": (ERROR, "an image or PNG cannot be decoded (or is not an RGB id PNG)"),
    "size": (ERROR, "image, PNG and JSON sizes differ"),
    "segment-mismatch": (ERROR, "segment ids in the PNG and in segments_info differ"),
    "self-pq": (ERROR, "the ground truth scored against itself is not PQ 100"),
    "crowd-stuff": (WARNING, "a stuff segment is marked crowd (PQ ignores it)"),
    "stuff-split": (WARNING, "a stuff class has several segments in one image"),
    "empty": (WARNING, "an image has no segments at all"),
    "unused-class": (WARNING, "a category is never used in the split"),
    "void": (WARNING, "an image is mostly void (at least VOID_WARNING of its pixels)"),
}
"""Problem kind → (severity, what it means)."""
VOID_WARNING = 0.9
MAX_SEGMENT_ID = 256**3 - 1


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (a key of KINDS), the file it concerns and what is wrong."""

    kind: str
    file: str
    message: str

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]


@dataclass
class IndexCheck:
    """The JSON part's problems and what the pixel part needs: the pairs fit to check."""

    paths: SplitPaths
    problems: list[Problem] = field(default_factory=list)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    images: int = 0
    categories: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, kind: str, file: Path | str, message: str) -> None:
        """Record a problem of `kind` about `file`."""
        self.problems.append(Problem(kind, str(file), message))

    @property
    def errors(self) -> list[Problem]:
        """The problems of error severity."""
        return [p for p in self.problems if p.severity == ERROR]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entries(data: Any, key: str, check: IndexCheck) -> list[dict[str, Any]] | None:
    """``data[key]`` as a list of objects, or None after recording why not."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        check.add("json", check.paths.json, f"'{key}' must be a list of objects")
        return None
    return value


def _check_categories(entries: list[dict[str, Any]], check: IndexCheck) -> None:
    """Ids unique integers, a name, isthing 0/1 and an [r, g, b] colour for every category."""
    source = check.paths.json
    for i, cat in enumerate(entries):
        where = f"categories[{i}]"
        cat_id, color = cat.get("id"), cat.get("color")
        if not _is_int(cat_id) or cat_id in check.categories:
            check.add("category", source, f"{where}: id {cat_id!r}; expected a unique integer")
            continue
        if cat.get("isthing") not in (0, 1) or not isinstance(cat.get("name"), str):
            check.add("category", source, f"{where}: needs a 'name' and 'isthing' 0 or 1")
        if color is not None and not (
            isinstance(color, list)
            and len(color) == 3
            and all(_is_int(v) and 0 <= v <= 255 for v in color)
        ):
            check.add("category", source, f"{where}: color {color!r}; expected [r, g, b] in 0..255")
        check.categories[cat_id] = cat
    if not entries:
        check.add("category", source, "'categories' is empty")


def _index_images(entries: list[dict[str, Any]], check: IndexCheck) -> dict[Any, dict[str, Any]]:
    """Image entries by id; repeated ids, repeated file names and bad sizes are recorded."""
    source, images, names = check.paths.json, {}, Counter()
    for i, img in enumerate(entries):
        image_id, name = img.get("id"), img.get("file_name")
        height, width = img.get("height"), img.get("width")
        if not isinstance(image_id, (int, str)) or image_id in images or not isinstance(name, str):
            check.add("image-entry", source, f"images[{i}]: id {image_id!r} or file_name {name!r}")
            continue
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            check.add("image-entry", source, f"images[{i}] ({name}): height/width {height}x{width}")
            continue
        names[name] += 1
        images[image_id] = img
    for name, count in names.items():
        if count > 1:
            check.add(
                "duplicate-file", check.paths.images / name, f"named by {count} image entries"
            )
    return images


def _check_annotations(
    entries: list[dict[str, Any]], images: dict[Any, dict[str, Any]], check: IndexCheck
) -> None:
    """Pair annotations with images (one each, distinct PNGs) and check their segments."""
    source, seen, pngs = check.paths.json, {}, Counter()
    for i, ann in enumerate(entries):
        image_id, name = ann.get("image_id"), ann.get("file_name")
        if not isinstance(image_id, (int, str)) or image_id not in images or image_id in seen:
            twice = isinstance(image_id, (int, str)) and image_id in seen
            what = "is annotated twice" if twice else "has no image entry"
            check.add("unannotated", source, f"annotations[{i}]: image id {image_id!r} {what}")
            continue
        if not isinstance(name, str) or not isinstance(ann.get("segments_info"), list):
            check.add("json", source, f"annotations[{i}]: needs 'file_name' and 'segments_info'")
            continue
        seen[image_id] = ann
        pngs[name] += 1
    for name, count in pngs.items():
        if count > 1:
            check.add(
                "duplicate-file", check.paths.panoptic / name, f"named by {count} annotations"
            )
    for image_id, img in images.items():
        if image_id not in seen:
            check.add(
                "unannotated", check.paths.images / img["file_name"], "image has no annotation"
            )
            continue
        if _check_segments(img, seen[image_id], check):
            check.pairs.append((img, seen[image_id]))


def _check_segments(img: dict[str, Any], ann: dict[str, Any], check: IndexCheck) -> bool:
    """Check one annotation's segments; True when they are fit for the pixel checks."""
    png = check.paths.panoptic / ann["file_name"]
    before, ids, stuff = len(check.errors), set(), Counter()
    for j, seg in enumerate(ann["segments_info"]):
        where = f"segments_info[{j}]"
        seg_id, cat_id = (
            (seg.get("id"), seg.get("category_id")) if isinstance(seg, dict) else (None, None)
        )
        if not _is_int(seg_id) or not 0 < seg_id <= MAX_SEGMENT_ID or seg_id in ids:
            check.add(
                "segment-id", png, f"{where}: id {seg_id!r}; expected a unique 1..{MAX_SEGMENT_ID}"
            )
            continue
        ids.add(seg_id)
        if not _is_int(cat_id) or cat_id not in check.categories:
            check.add(
                "unknown-category",
                png,
                f"{where} (id {seg_id}): category_id {cat_id!r} is not among the categories",
            )
            continue
        crowd = seg.get("iscrowd", 0)
        isthing = bool(check.categories[cat_id].get("isthing"))
        if crowd not in (0, 1):
            check.add("crowd", png, f"{where} (id {seg_id}): iscrowd {crowd!r}; expected 0 or 1")
        elif crowd and not isthing:
            check.add(
                "crowd-stuff", png, f"{where} (id {seg_id}): stuff class {cat_id} marked crowd"
            )
        elif not isthing:
            stuff[cat_id] += 1
        _check_box(seg, where, img, png, check)
    for cat_id, count in stuff.items():
        if count > 1:
            check.add("stuff-split", png, f"stuff category {cat_id} has {count} segments")
    if not ann["segments_info"]:
        check.add("empty", png, "no segments")
    return len(check.errors) == before


def _check_box(
    seg: dict[str, Any], where: str, img: dict[str, Any], png: Path, check: IndexCheck
) -> None:
    """A segment's area and bbox: numbers, inside the image, the area fits in the box."""
    area, bbox = seg.get("area"), seg.get("bbox")
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    ):
        check.add("area-box", png, f"{where}: bbox {bbox!r}; expected [x, y, w, h]")
        return
    x, y, w, h = bbox
    inside = (
        x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= img["width"] and y + h <= img["height"]
    )
    if not isinstance(area, (int, float)) or not inside or not 0 < area <= w * h:
        check.add(
            "area-box",
            png,
            f"{where}: area {area!r}, bbox {bbox} do not fit a "
            f"{img['width']}x{img['height']} image",
        )


def _check_usage(check: IndexCheck) -> None:
    """Categories that no segment of the split uses."""
    used = Counter(seg["category_id"] for _, ann in check.pairs for seg in ann["segments_info"])
    for cat_id, cat in check.categories.items():
        if not used[cat_id] and check.pairs:
            check.add(
                "unused-class",
                check.paths.json,
                f"category {cat_id} ({cat.get('name')}) has no segment",
            )


def check_index(paths: SplitPaths) -> IndexCheck:
    """The JSON checks of one split (no file is opened but the JSON); all problems, by kind."""
    check = IndexCheck(paths)
    try:
        data = read_json(paths.json)
    except DatasetError as exc:
        check.add("json", paths.json, str(exc).removeprefix(f"{paths.json}: "))
        return check
    categories = _entries(data, "categories", check)
    images = _entries(data, "images", check)
    annotations = _entries(data, "annotations", check)
    if categories is None or images is None or annotations is None:
        return check
    check.images = len(images)
    _check_categories(categories, check)
    _check_annotations(annotations, _index_images(images, check), check)
    if not check.errors:
        _check_usage(check)
    return check


def require_clean_index(paths: SplitPaths) -> None:
    """Stop with the first JSON error of a split (and how many more there are), if any."""
    errors = check_index(paths).errors
    if errors:
        first = errors[0]
        more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise DatasetError(
            f"{first.file}: {first.message}{more}; `cops check-data {paths.root} --split "
            f"{paths.split}` lists them all"
        )


@dataclass
class PixelStats:
    """What the pixel part found: its problems and the void pixel count over all images."""

    problems: list[Problem] = field(default_factory=list)
    void: int = 0
    pixels: int = 0

    def __iadd__(self, other: PixelStats) -> PixelStats:
        self.problems += other.problems
        self.void += other.void
        self.pixels += other.pixels
        return self


def _read(path: Path, reader: Any, stats: PixelStats) -> np.ndarray | None:
    """Decode a file, recording a missing or unreadable one."""
    if not path.is_file():
        stats.problems.append(Problem("missing-file", str(path), "listed in the JSON, not on disk"))
        return None
    try:
        return reader(path)
    except DatasetError as exc:
        stats.problems.append(Problem("unreadable", str(path), str(exc).removeprefix(f"{path}: ")))
        return None


def _check_pair(pair: tuple[dict[str, Any], dict[str, Any]], *, paths: SplitPaths) -> PixelStats:
    """Decode one image and its PNG; compare sizes, segment ids, areas and boxes with the JSON."""
    img, ann = pair
    stats = PixelStats()
    png = paths.panoptic / ann["file_name"]
    image = _read(paths.images / img["file_name"], read_image, stats)
    ids = _read(png, read_panoptic_png, stats)
    if ids is None:
        return stats
    expected = (img["height"], img["width"])
    if ids.shape != expected or (image is not None and image.shape[:2] != expected):
        got = f"image {image.shape[:2] if image is not None else '?'}, PNG {ids.shape}"
        stats.problems.append(Problem("size", str(png), f"{got}; the JSON says {expected} (HxW)"))
        return stats
    measured = segment_stats(ids)
    listed = {seg["id"]: seg for seg in ann["segments_info"]}
    for kind, extra in (
        ("not listed", set(measured) - set(listed)),
        ("absent from the PNG", set(listed) - set(measured)),
    ):
        if extra:
            stats.problems.append(
                Problem("segment-mismatch", str(png), f"segment ids {sorted(extra)[:5]} {kind}")
            )
    for seg_id in sorted(set(measured) & set(listed)):
        area, bbox = measured[seg_id]
        seg = listed[seg_id]
        if seg["area"] != area or [round(v) for v in seg["bbox"]] != bbox:
            stats.problems.append(
                Problem(
                    "area-box",
                    str(png),
                    f"segment {seg_id}: JSON area {seg['area']} bbox {seg['bbox']}; "
                    f"the PNG has {area} {bbox}",
                )
            )
    void = int((ids == VOID_ID).sum())
    if void >= VOID_WARNING * ids.size:
        stats.problems.append(
            Problem("void", str(png), f"{100 * void / ids.size:.0f}% of the pixels are void")
        )
    stats.void, stats.pixels = void, ids.size
    return stats


def _pair_results(index: IndexCheck, workers: int) -> Iterator[PixelStats]:
    """Per-pair results in order, in `workers` processes (inline when workers <= 1)."""
    job = functools.partial(_check_pair, paths=index.paths)
    if workers <= 1 or len(index.pairs) <= 1:
        yield from map(job, index.pairs)
        return
    chunk = max(1, min(16, len(index.pairs) // (workers * 4)))
    with fork_pool(workers) as pool:
        yield from pool.imap(job, index.pairs, chunksize=chunk)


def check_pixels(
    index: IndexCheck, workers: int = 1, progress: ProgressFn | None = None
) -> PixelStats:
    """Decode every image and PNG the JSON part found fit (in `workers` processes);
    `progress(split, done, total)` is called before the first and after every image."""
    total = PixelStats()
    count = len(index.pairs)
    if progress is not None:
        progress(index.paths.split, 0, count)
    for done, stats in enumerate(_pair_results(index, workers), start=1):
        total += stats
        if progress is not None:
            progress(index.paths.split, done, count)
    return total
