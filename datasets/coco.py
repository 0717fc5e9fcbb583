"""COCO panoptic format (COCO 2017 or any custom dataset) to prepared format, fully validated.

The prepared JSON keeps the source's category ids (COCO's sparse 1..200) and category order; the
reader derives contiguous train ids from that order, so the order is never changed here. Segment
area and bbox are recomputed from the PNG (sources often carry stale values); everything else that
is inconsistent is rejected with a DatasetError naming the file and what was expected.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cops.datasets.conversion import (
    LINK_MODES,
    Category,
    ConvertedImage,
    ProgressFn,
    SplitPaths,
    SplitSummary,
    convert_split,
    default_color,
    place_file,
)
from cops.datasets.panoptic_io import (
    PNG_PALETTE,
    PNG_RGB,
    PNG_RGBA,
    VOID_ID,
    png_format,
    read_image,
    read_json,
    read_panoptic_png,
    segment_stats,
    write_panoptic_png,
)
from cops.errors import CopsError, DatasetError

_JSON_CANDIDATES = ("annotations/panoptic_{split}2017.json", "panoptic_{split}.json")
_PANOPTIC_CANDIDATES = ("panoptic/{split}",)
_IMAGE_CANDIDATES = ("{split}2017", "images/{split}")


@dataclass(frozen=True)
class CocoSource:
    """Where one split of a COCO-panoptic-format dataset lives."""

    json: Path
    panoptic: Path
    images: Path


@dataclass(frozen=True)
class _Task:
    """One image to convert: its source entries and files."""

    image: dict[str, Any]
    annotation: dict[str, Any]
    image_path: Path
    png_path: Path
    source_json: Path


def _fill(template: Path | str, split: str) -> Path:
    """Substitute ``{split}`` in a path template."""
    return Path(str(template).replace("{split}", split))


def _first_existing(candidates: Sequence[Path], what: str, split: str, option: str) -> Path:
    """The first candidate that exists, or a DatasetError listing every place looked at."""
    for path in candidates:
        if path.exists():
            return path
    looked = ", ".join(str(p) for p in candidates)
    hint = ""
    zipped = [p.with_suffix(".zip") for p in candidates if not p.suffix]
    zipped = [p for p in zipped if p.is_file()]
    if zipped:
        hint = f"; unzip {zipped[0]} first"
    raise DatasetError(
        f"split {split!r}: no {what} found (looked for {looked}){hint}; pass its path with {option}"
    )


def resolve_source(
    root: Path,
    split: str,
    annotations: Path | str | None = None,
    panoptic_dir: Path | str | None = None,
    images_dir: Path | str | None = None,
) -> CocoSource:
    """Find a split's JSON, PNG folder and image folder: explicit overrides first, then the layouts.

    Overrides may contain ``{split}``. Auto-detection tries the COCO 2017 layout
    (``annotations/panoptic_{split}2017.json``, PNGs in the folder named like the JSON,
    images in ``{split}2017/``), then the prepared layout (``panoptic_{split}.json``,
    ``panoptic/{split}/``, ``images/{split}/``).
    """
    root = Path(root)

    def look(override: Path | str | None, defaults: list[Path], what: str, option: str) -> Path:
        candidates = [_fill(override, split)] if override else defaults
        return _first_existing(candidates, what, split, option)

    json_path = look(
        annotations,
        [root / _fill(c, split) for c in _JSON_CANDIDATES],
        "panoptic JSON",
        "--annotations (annotations=)",
    )
    png_defaults = [json_path.with_suffix("")] + [
        root / _fill(c, split) for c in _PANOPTIC_CANDIDATES
    ]
    panoptic = look(
        panoptic_dir, png_defaults, "panoptic PNG folder", "--panoptic-dir (panoptic_dir=)"
    )
    image_defaults = [root / _fill(c, split) for c in _IMAGE_CANDIDATES]
    images = look(images_dir, image_defaults, "image folder", "--images-dir (images_dir=)")
    return CocoSource(json_path, panoptic, images)


def _field(
    entry: dict[str, Any], key: str, kinds: tuple[type, ...], where: str, source: Path
) -> Any:
    """`entry[key]`, type-checked; errors name the JSON file, the entry and the expected type."""
    if key not in entry:
        raise DatasetError(f"{source}: {where} has no {key!r} key")
    value = entry[key]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise DatasetError(f"{source}: {where} {key!r} is {value!r}; expected {names}")
    return value


def _entries(data: dict[str, Any], key: str, source: Path) -> list[dict[str, Any]]:
    """The list `data[key]`, every element a JSON object."""
    entries = _field(data, key, (list,), "the top-level object", source)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(f"{source}: {key}[{i}] is {entry!r}; expected an object")
    return entries


def _relative_name(entry: dict[str, Any], where: str, source: Path) -> str:
    """A `file_name` that stays inside its folder (relative, no '..')."""
    name = _field(entry, "file_name", (str,), where, source)
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise DatasetError(
            f"{source}: {where} file_name {name!r}; expected a relative path inside its folder"
        )
    return name


def _flag(entry: dict[str, Any], key: str, default: int | None, where: str, source: Path) -> int:
    """A 0/1 flag such as isthing or iscrowd (required when `default` is None)."""
    if default is not None and key not in entry:
        return default
    value = _field(entry, key, (int, bool), where, source)
    if value not in (0, 1):
        raise DatasetError(f"{source}: {where} {key!r} is {value!r}; expected 0 or 1")
    return int(value)


def _load_categories(data: dict[str, Any], source: Path) -> list[Category]:
    """Validate the categories, keeping their order (the reader's train ids follow it)."""
    categories: list[Category] = []
    seen: set[int] = set()
    for i, entry in enumerate(_entries(data, "categories", source)):
        where = f"categories[{i}]"
        category_id = _field(entry, "id", (int,), where, source)
        if category_id in seen:
            raise DatasetError(f"{source}: {where} repeats category id {category_id}")
        seen.add(category_id)
        color = entry.get("color")
        if color is None:
            color = default_color(category_id)
        elif not (
            isinstance(color, list)
            and len(color) == 3
            and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        ):
            raise DatasetError(f"{source}: {where} color {color!r}; expected [r, g, b] in 0..255")
        supercategory = entry.get("supercategory", "")
        if not isinstance(supercategory, str):
            raise DatasetError(f"{source}: {where} supercategory {supercategory!r}; expected str")
        categories.append(
            Category(
                id=category_id,
                name=_field(entry, "name", (str,), where, source),
                isthing=bool(_flag(entry, "isthing", None, where, source)),
                color=tuple(color),
                supercategory=supercategory,
            )
        )
    if not categories:
        raise DatasetError(f"{source}: 'categories' is empty; expected at least one category")
    return categories


def _check_segments(
    entry: dict[str, Any], known: set[int], where: str, source: Path
) -> list[dict[str, Any]]:
    """Validate one annotation's segments_info: positive unique ids and known category ids."""
    segments = _field(entry, "segments_info", (list,), where, source)
    seen: set[int] = set()
    for j, segment in enumerate(segments):
        at = f"{where} segments_info[{j}]"
        if not isinstance(segment, dict):
            raise DatasetError(f"{source}: {at} is {segment!r}; expected an object")
        segment_id = _field(segment, "id", (int,), at, source)
        if not VOID_ID < segment_id < 256**3:
            raise DatasetError(
                f"{source}: {at} id {segment_id}; expected 1..{256**3 - 1} (0 is void)"
            )
        if segment_id in seen:
            raise DatasetError(f"{source}: {at} repeats segment id {segment_id}")
        seen.add(segment_id)
        category_id = _field(segment, "category_id", (int,), at, source)
        if category_id not in known:
            raise DatasetError(
                f"{source}: {at} has unknown category id {category_id}; "
                f"expected one of the ids in 'categories'"
            )
        _flag(segment, "iscrowd", 0, at, source)
    return segments


def _load_split(source: CocoSource) -> tuple[list[Category], list[_Task], dict[str, Any]]:
    """Read and validate a split's JSON; return categories, one task per image, and its info."""
    data = read_json(source.json)
    if not isinstance(data, dict):
        raise DatasetError(
            f"{source.json}: expected a JSON object with 'images', 'annotations', 'categories'"
        )
    categories = _load_categories(data, source.json)
    known = {c.id for c in categories}
    images: dict[int | str, dict[str, Any]] = {}
    image_names: set[str] = set()
    for i, entry in enumerate(_entries(data, "images", source.json)):
        where = f"images[{i}]"
        image_id = _field(entry, "id", (int, str), where, source.json)
        name = _relative_name(entry, where, source.json)
        if image_id in images:
            raise DatasetError(f"{source.json}: {where} repeats image id {image_id!r}")
        if name in image_names:
            raise DatasetError(f"{source.json}: {where} repeats file_name {name!r}")
        images[image_id] = entry
        image_names.add(name)
    annotations: dict[int | str, dict[str, Any]] = {}
    png_names: set[str] = set()
    for i, entry in enumerate(_entries(data, "annotations", source.json)):
        image_id = _field(entry, "image_id", (int, str), f"annotations[{i}]", source.json)
        where = f"annotations[{i}] (image_id {image_id!r})"
        if image_id not in images:
            raise DatasetError(f"{source.json}: {where}: no entry with this id in 'images'")
        if image_id in annotations:
            raise DatasetError(f"{source.json}: {where}: a second annotation for this image")
        name = _relative_name(entry, where, source.json)
        if not name.lower().endswith(".png") or name in png_names:
            raise DatasetError(
                f"{source.json}: {where} file_name {name!r}; expected a PNG name used once"
            )
        png_names.add(name)
        _check_segments(entry, known, where, source.json)
        annotations[image_id] = entry
    unlabelled = [image_id for image_id in images if image_id not in annotations]
    if unlabelled:
        raise DatasetError(
            f"{source.json}: image id {unlabelled[0]!r} has no entry in 'annotations' "
            f"({len(unlabelled)} images without one); expected one per image"
        )
    if not images:
        raise DatasetError(f"{source.json}: 'images' is empty; expected at least one image")
    tasks = [
        _Task(
            image=entry,
            annotation=annotations[image_id],
            image_path=source.images / entry["file_name"],
            png_path=source.panoptic / annotations[image_id]["file_name"],
            source_json=source.json,
        )
        for image_id, entry in images.items()
    ]
    _check_present([t.png_path for t in tasks], "panoptic PNG", source.json)
    _check_present([t.image_path for t in tasks], "image", source.json)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return categories, tasks, {**info, "source": str(source.json)}


def _check_present(files: list[Path], kind: str, source: Path) -> None:
    """Fail before writing anything if listed files are missing; name the first, count the rest."""
    missing = [path for path in files if not path.is_file()]
    if missing:
        more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
        raise DatasetError(f"{missing[0]}: {kind} not found (listed in {source}){more}")


def _convert_one(task: _Task, *, paths: SplitPaths, link: str) -> ConvertedImage:
    """Check one image against its PNG and segments_info, then place both in the prepared layout."""
    where = f"(annotation of image {task.image['id']!r} in {task.source_json})"
    bit_depth, color_type = png_format(task.png_path)
    if not (color_type == PNG_PALETTE or (bit_depth == 8 and color_type in (PNG_RGB, PNG_RGBA))):
        raise DatasetError(
            f"{task.png_path}: PNG colour type {color_type}, bit depth {bit_depth}; expected an "
            "8-bit RGB PNG with ids encoded as R + 256·G + 256²·B"
        )
    ids = read_panoptic_png(task.png_path)
    height, width = read_image(task.image_path).shape[:2]
    if ids.shape != (height, width):
        raise DatasetError(
            f"{task.png_path}: panoptic PNG is {ids.shape[1]}×{ids.shape[0]} but image "
            f"{task.image_path.name} is {width}×{height}; expected equal sizes"
        )
    stats = segment_stats(ids)
    listed = {segment["id"] for segment in task.annotation["segments_info"]}
    unlisted = sorted(set(stats) - listed)
    if unlisted:
        raise DatasetError(
            f"{task.png_path}: segment ids {unlisted[:5]} occur in the PNG but are not listed in "
            f"segments_info {where}"
        )
    absent = sorted(listed - set(stats))
    if absent:
        raise DatasetError(
            f"{task.png_path}: segment ids {absent[:5]} listed in segments_info {where} do not "
            "occur in the PNG"
        )
    image_name, png_name = task.image["file_name"], task.annotation["file_name"]
    place_file(task.image_path, paths.images / image_name, link)
    if color_type == PNG_RGB:
        place_file(task.png_path, paths.panoptic / png_name, "copy")
    else:
        write_panoptic_png(paths.panoptic / png_name, ids)
    segments = [
        {
            **segment,
            "area": stats[segment["id"]][0],
            "bbox": stats[segment["id"]][1],
            "iscrowd": int(segment.get("iscrowd", 0)),
        }
        for segment in task.annotation["segments_info"]
    ]
    return ConvertedImage(
        image={**task.image, "width": width, "height": height},
        annotation={**task.annotation, "segments_info": segments},
    )


def _same_path(a: Path, b: Path) -> bool:
    """Whether two paths name the same location (following symlinks)."""
    return a.resolve() == b.resolve()


def prepare_coco(
    root: Path,
    out: Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    workers: int = 1,
    progress: ProgressFn | None = None,
    link: str = "symlink",
    annotations: Path | str | None = None,
    panoptic_dir: Path | str | None = None,
    images_dir: Path | str | None = None,
) -> list[SplitSummary]:
    """Validate and convert COCO-panoptic-format splits under `root` into the prepared format.

    Per split, the JSON, PNG folder and image folder are found by `resolve_source`: the overrides
    `annotations`, `panoptic_dir`, `images_dir` (paths; ``{split}`` is replaced by the split name)
    win, else the COCO 2017 layout, else the prepared layout. Images are placed by `link`
    (symlink by default, `copy` for a self-contained folder, `hardlink`); valid RGB PNGs are
    copied as they are, palette/RGBA PNGs re-encoded as RGB. Every split's JSON and the presence of
    its files are checked before anything is written; decoding checks (sizes, ids) run during
    conversion. Every split must list the same categories in the same order.
    """
    if link not in LINK_MODES:
        raise CopsError(f"link mode {link!r}: expected one of {', '.join(LINK_MODES)}")
    if annotations and len(splits) > 1 and "{split}" not in str(annotations):
        raise CopsError(
            f"annotations={annotations}: several splits need a '{{split}}' placeholder in the path"
        )
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    loaded = []
    for split in splits:
        source = resolve_source(root, split, annotations, panoptic_dir, images_dir)
        paths = SplitPaths(out, split)
        for ours, theirs in [
            (paths.json, source.json),
            (paths.panoptic, source.panoptic),
            (paths.images, source.images),
        ]:
            if _same_path(ours, theirs):
                raise CopsError(f"{out}: output would overwrite the source {theirs}; pick another")
        categories, tasks, info = _load_split(source)
        if loaded and categories != loaded[0][2]:
            raise DatasetError(
                f"{source.json}: categories differ from {loaded[0][1].json}; every split must list "
                "the same categories in the same order"
            )
        loaded.append((paths, source, categories, tasks, info))
    return [
        convert_split(
            paths,
            tasks,
            functools.partial(_convert_one, link=link),
            categories,
            workers=workers,
            progress=progress,
            info=info,
        )
        for paths, _, categories, tasks, info in loaded
    ]
